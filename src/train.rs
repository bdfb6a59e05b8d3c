//! Full-batch training, as the seed notebook's loop: each epoch one AdamW step on
//! the whole training set, the train loss taken before the step and the test loss
//! after it, both in float64 at the last position; a checkpoint every
//! `checkpoint_every` epochs (after epochs 99, 199, … as the seed counts them).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use tch::{Device, Kind, Tensor};

use crate::adamw::AdamW;
use crate::config::{ModelConfig, RunConfig};
use crate::error::{Error, Result};
use crate::model::HookedTransformer;
use crate::task::Split;

/// The seed's `loss_fn`: mean cross-entropy of last-position logits, in float64.
pub fn loss_fn(last_logits: &Tensor, labels: &Tensor) -> Tensor {
    let log_probs = last_logits.to_kind(Kind::Double).log_softmax(-1, Kind::Double);
    -log_probs.gather(-1, &labels.unsqueeze(-1), false).squeeze_dim(-1).mean(Kind::Double)
}

/// Train and test inputs and labels of N runs, on the training device, each set padded
/// to the longest run's length: `[model, batch, 3]` and `[model, batch]`, with a mask
/// (1 for a real row, 0 for padding) that the loss weighs rows by.
pub struct Batches {
    pub train_data: Tensor,
    pub train_labels: Tensor,
    pub train_mask: Tensor,
    pub test_data: Tensor,
    pub test_labels: Tensor,
    pub test_mask: Tensor,
}

impl Batches {
    pub fn new(runs: &[(&RunConfig, &Split)], device: Device) -> Self {
        // Each run's p² inputs and labels, built once for both sets.
        let all: Vec<(Tensor, Tensor)> = runs.iter().map(|(cfg, _)| (cfg.task.dataset(), cfg.task.labels())).collect();
        let pick = |indices: &dyn Fn(&Split) -> &Vec<i64>| {
            let longest = runs.iter().map(|(_, s)| indices(s).len()).max().unwrap_or(0) as i64;
            let (mut data, mut labels, mut mask) = (vec![], vec![], vec![]);
            for ((_, split), (dataset, all_labels)) in runs.iter().zip(&all) {
                let rows = Tensor::from_slice(indices(split));
                let pad = longest - indices(split).len() as i64;
                let padded = Tensor::cat(&[rows, Tensor::zeros([pad], (Kind::Int64, Device::Cpu))], 0);
                data.push(dataset.index_select(0, &padded));
                labels.push(all_labels.index_select(0, &padded));
                mask.push(Tensor::cat(
                    &[
                        Tensor::ones([longest - pad], (Kind::Double, Device::Cpu)),
                        Tensor::zeros([pad], (Kind::Double, Device::Cpu)),
                    ],
                    0,
                ));
            }
            (
                Tensor::stack(&data, 0).to_device(device),
                Tensor::stack(&labels, 0).to_device(device),
                Tensor::stack(&mask, 0).to_device(device),
            )
        };
        let (train_data, train_labels, train_mask) = pick(&|s| &s.train);
        let (test_data, test_labels, test_mask) = pick(&|s| &s.test);
        Batches { train_data, train_labels, train_mask, test_data, test_labels, test_mask }
    }
}

/// [`loss_fn`] of each model over its own real rows: `[model]` float64.
fn stacked_loss(logits: &Tensor, labels: &Tensor, mask: &Tensor) -> Tensor {
    let log_probs = logits.to_kind(Kind::Double).log_softmax(-1, Kind::Double);
    let correct = log_probs.gather(-1, &labels.unsqueeze(-1), false).squeeze_dim(-1); // [model, batch]
    -(correct * mask).sum_dim_intlist(1, false, Kind::Double) / mask.sum_dim_intlist(1, false, Kind::Double)
}

/// N one-layer models trained together as one stacked computation (N may be 1):
/// their weights stacked on a leading model axis, their optimizer and their data.
/// Each model's losses and updates are its own; only the arithmetic is shared.
pub struct Trainer {
    stack: HookedTransformer,
    optimizer: AdamW,
    batches: Batches,
}

impl Trainer {
    /// One run.
    pub fn new(cfg: &RunConfig, model: &HookedTransformer, split: &Split) -> Result<Self> {
        Self::stacked(&[(cfg, model, split)])
    }

    /// Several runs of one model shape, number of epochs, betas and p, each with its
    /// own initial weights, task terms, split, lr and weight decay.
    pub fn stacked(runs: &[(&RunConfig, &HookedTransformer, &Split)]) -> Result<Self> {
        let (first, first_model, _) = runs.first().ok_or_else(|| Error::config("no runs to train"))?;
        for (cfg, model, _) in runs {
            cfg.validate()?;
            let shape = |c: &RunConfig| {
                (
                    ModelConfig { seed: 0, ..c.model.clone() },
                    c.task.p,
                    c.train.num_epochs,
                    c.train.checkpoint_every,
                    c.train.betas,
                )
            };
            if shape(cfg) != shape(first) {
                return Err(Error::config(
                    "runs trained together must share the model shape, p, epochs, checkpoint interval and betas",
                ));
            }
            if model.cfg.n_layers != 1 || model.device() != first_model.device() {
                return Err(Error::config("runs trained together must be one-layer models on one device"));
            }
        }
        let models: Vec<&HookedTransformer> = runs.iter().map(|(_, m, _)| *m).collect();
        let stack = HookedTransformer::stack(&models).trainable_copy();
        let params = stack.trainable_parameters().into_iter().map(Tensor::shallow_clone).collect();
        let lr: Vec<f64> = runs.iter().map(|(c, _, _)| c.train.lr).collect();
        let wd: Vec<f64> = runs.iter().map(|(c, _, _)| c.train.weight_decay).collect();
        let optimizer = AdamW::new(params, &lr, &wd, first.train.betas);
        let data: Vec<(&RunConfig, &Split)> = runs.iter().map(|(c, _, s)| (*c, *s)).collect();
        let batches = Batches::new(&data, stack.device());
        Ok(Trainer { stack, optimizer, batches })
    }

    /// One epoch of every model; returns each model's (train loss, test loss).
    pub fn step(&mut self) -> Vec<(f64, f64)> {
        let b = &self.batches;
        let train_logits = self.stack.stacked_last_position(&b.train_data, false).0;
        let train_loss = stacked_loss(&train_logits, &b.train_labels, &b.train_mask);
        train_loss.sum(Kind::Double).backward();
        self.optimizer.step();
        let test_loss = tch::no_grad(|| {
            stacked_loss(&self.stack.stacked_last_position(&b.test_data, false).0, &b.test_labels, &b.test_mask)
        });
        let (train, test) = (Vec::<f64>::try_from(&train_loss.detach()), Vec::<f64>::try_from(&test_loss));
        train.unwrap_or_default().into_iter().zip(test.unwrap_or_default()).collect()
    }

    /// Model i as it is now (its weights, detached, still on the training device).
    pub fn model(&self, i: usize) -> HookedTransformer {
        self.stack.map_parameters(|_, t| t.get(i as i64).detach())
    }

    /// The optimizer, its state over the stack's trainable weights in
    /// `named_parameters` order, each `[model, …]`.
    pub fn optimizer_mut(&mut self) -> &mut AdamW {
        &mut self.optimizer
    }
}

/// What a training run reports as it goes.
pub trait Observer {
    /// After epoch `epoch` (0-based, as the seed counts) when it is a checkpoint epoch.
    fn checkpoint(
        &mut self,
        epoch: i64,
        model: &HookedTransformer,
        train_losses: &[f64],
        test_losses: &[f64],
    ) -> Result<()>;
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
    Ok(train_stacked(&[(cfg, model, split)], &mut [observer])?.remove(0))
}

/// Trains several runs as one stacked computation ([`Trainer::stacked`]), handing
/// each run's checkpoints to its own observer as they come (nothing piles up in
/// memory). Returns each run's trained model and per-epoch losses.
pub fn train_stacked(
    runs: &[(&RunConfig, &HookedTransformer, &Split)],
    observers: &mut [&mut dyn Observer],
) -> Result<Vec<Trained>> {
    if observers.len() != runs.len() {
        return Err(Error::config("one observer per run"));
    }
    let mut trainer = Trainer::stacked(runs)?;
    let t = &runs[0].0.train;
    let mut losses = vec![(Vec::new(), Vec::new()); runs.len()];
    let progress = Progress::new(t.num_epochs as u64);
    for epoch in 0..t.num_epochs {
        let step = trainer.step();
        for ((train, test), (tr, te)) in losses.iter_mut().zip(&step) {
            train.push(*tr);
            test.push(*te);
        }
        progress.tick(epoch, &step);
        if (epoch + 1) % t.checkpoint_every == 0 {
            progress.checkpoint(epoch, &step);
            for (i, (observer, (train, test))) in observers.iter_mut().zip(&losses).enumerate() {
                observer.checkpoint(epoch, &trainer.model(i), train, test)?;
            }
        }
    }
    progress.finish();
    Ok(losses.into_iter().enumerate().map(|(i, (train, test))| (trainer.model(i), train, test)).collect())
}

/// A bar on a terminal, or the seed's checkpoint lines where output is a log or a notebook.
struct Progress(Option<ProgressBar>);

impl Progress {
    fn new(epochs: u64) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = ProgressBar::new(epochs);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} epochs [{elapsed_precise}<{eta_precise}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Progress(Some(bar))
    }

    fn tick(&self, epoch: i64, losses: &[(f64, f64)]) {
        if let Some(bar) = &self.0 {
            bar.set_position(epoch as u64 + 1);
            if epoch % 10 == 0 {
                bar.set_message(describe(losses));
            }
        }
    }

    fn checkpoint(&self, epoch: i64, losses: &[(f64, f64)]) {
        match (losses, &self.0) {
            ([(train, test)], None) => eprintln!("Epoch {epoch} Train Loss {train:?} Test Loss {test:?}"),
            (_, None) => eprintln!("Epoch {epoch} {}", describe(losses)),
            _ => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish();
        }
    }
}

/// "train 1.2e-3 test 4.5e-2", or the range over several runs.
fn describe(losses: &[(f64, f64)]) -> String {
    let range = |f: fn(&(f64, f64)) -> f64| {
        let (lo, hi) =
            losses.iter().map(f).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
        if losses.len() == 1 {
            format!("{lo:.3e}")
        } else {
            format!("{lo:.3e}..{hi:.3e}")
        }
    };
    format!("train {} test {}", range(|l| l.0), range(|l| l.1))
}
