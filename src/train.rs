//! Full-batch training, as the seed notebook's loop: each epoch one AdamW step on
//! the whole training set, the train loss taken before the step and the test loss
//! after it, both in float64 at the last position; a checkpoint every
//! `checkpoint_every` epochs (after epochs 99, 199, … as the seed counts them) and
//! after the last, each handed to an [`Observer`] (a run folder's writer, say).

use crate::adamw::AdamWState;
use crate::config::RunConfig;
use crate::coverage::CellCurves;
use crate::error::{Error, Result};
use crate::model::HookedTransformer;
use crate::progress::Progress;
use crate::task::Split;
use crate::trainer::Trainer;

/// A checkpoint of one run: everything the next epoch depends on, and the losses so far.
pub struct Checkpoint<'a> {
    /// The epoch just finished (0-based, as the seed counts).
    pub epoch: i64,
    pub model: &'a HookedTransformer,
    pub optimizer: &'a AdamWState,
    pub train_losses: &'a [f64],
    pub test_losses: &'a [f64],
    pub by_cell: &'a CellCurves,
}

/// What a training run reports as it goes.
pub trait Observer {
    /// After every `checkpoint_every`-th epoch and after the last.
    fn checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<()>;

    /// Once every run trained together has its checkpoint of `epoch`: the runs can all
    /// continue from there, so what an older resume needed may go.
    fn all_checkpointed(&mut self, _epoch: i64) -> Result<()> {
        Ok(())
    }
}

/// Where a run continues from: its model and optimizer after some epochs, and the
/// losses of those epochs.
pub struct Resume {
    pub model: HookedTransformer,
    pub optimizer: AdamWState,
    pub train_losses: Vec<f64>,
    pub test_losses: Vec<f64>,
    pub by_cell: CellCurves,
}

impl Resume {
    /// The start of a run: its initial model, no steps taken.
    pub fn start(model: HookedTransformer) -> Self {
        let optimizer = AdamWState::initial(&model);
        Resume { model, optimizer, train_losses: Vec::new(), test_losses: Vec::new(), by_cell: CellCurves::default() }
    }

    /// Epochs done.
    pub fn epochs(&self) -> i64 {
        self.train_losses.len() as i64
    }
}

/// A trained model and its per-epoch train and test losses.
pub type Trained = (HookedTransformer, Vec<f64>, Vec<f64>);

/// Trains `model` for `cfg.train.num_epochs` epochs, handing each checkpoint to
/// `observer`, with a progress bar on a terminal (a line per checkpoint elsewhere,
/// as the seed prints). Returns the trained model and the per-epoch losses.
pub fn train(
    cfg: &RunConfig,
    model: &HookedTransformer,
    split: &Split,
    observer: &mut dyn Observer,
) -> Result<Trained> {
    let start = Resume::start(model.shallow_clone());
    Ok(train_stacked(&[(cfg, split, &start)], &mut [observer])?.remove(0))
}

/// Trains several runs together ([`Trainer::stacked`]), each from
/// where its [`Resume`] stands (all at one epoch), to its config's last epoch, handing
/// each run's checkpoints to its own observer as they come (nothing piles up in
/// memory). Returns each run's trained model and per-epoch losses.
pub fn train_stacked(
    runs: &[(&RunConfig, &Split, &Resume)],
    observers: &mut [&mut dyn Observer],
) -> Result<Vec<Trained>> {
    if observers.len() != runs.len() {
        return Err(Error::config("one observer per run"));
    }
    let Some((first, _, first_start)) = runs.first() else {
        return Err(Error::config("no runs to train"));
    };
    let mut done = first_start.epochs();
    if let Some((_, _, other)) = runs.iter().find(|(_, _, r)| r.epochs() != done) {
        return Err(Error::config(format!(
            "runs trained together must continue from one epoch, got {done} and {}",
            other.epochs()
        )));
    }
    let stack: Vec<_> = runs.iter().map(|(c, s, r)| (*c, &r.model, *s)).collect();
    let mut trainer = Trainer::stacked(&stack)?;
    trainer.set_optimizer_state(&runs.iter().map(|(_, _, r)| &r.optimizer).collect::<Vec<_>>())?;
    let t = &first.train;
    let mut losses: Vec<_> =
        runs.iter().map(|(_, _, r)| (r.train_losses.clone(), r.test_losses.clone(), r.by_cell.clone())).collect();
    let progress = Progress::new(t.num_epochs as u64, done as u64);
    // Between checkpoints the losses stay on the device: no wait per epoch.
    while done < t.num_epochs {
        let epochs = (t.checkpoint_every - done % t.checkpoint_every).min(t.num_epochs - done);
        for epoch in trainer.train_epochs(epochs)? {
            for ((train, test, by_cell), e) in losses.iter_mut().zip(epoch) {
                train.push(e.train_loss);
                test.push(e.test_loss);
                by_cell.push(e.by_cell);
            }
        }
        done += epochs;
        progress.tick(done);
        let now: Vec<(f64, f64)> = losses.iter().map(|(tr, te, _)| (tr[tr.len() - 1], te[te.len() - 1])).collect();
        progress.checkpoint(done - 1, &now);
        for (i, (observer, (train, test, by_cell))) in observers.iter_mut().zip(&losses).enumerate() {
            let (model, optimizer) = (trainer.model(i), trainer.optimizer_state(i));
            let checkpoint = Checkpoint {
                epoch: done - 1,
                model: &model,
                optimizer: &optimizer,
                train_losses: train,
                test_losses: test,
                by_cell,
            };
            observer.checkpoint(&checkpoint)?;
        }
        for observer in observers.iter_mut() {
            observer.all_checkpointed(done - 1)?;
        }
    }
    progress.finish();
    Ok(losses.into_iter().enumerate().map(|(i, (train, test, _))| (trainer.model(i), train, test)).collect())
}
