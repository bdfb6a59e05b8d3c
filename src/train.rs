//! Full-batch training, as the seed notebook's loop: each epoch one AdamW step on
//! the whole training set, the train loss taken before the step and the test loss
//! after it, both in float64 at the last position; a checkpoint every
//! `checkpoint_every` epochs (after epochs 99, 199, … as the seed counts them).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use tch::{Device, Kind, Tensor};

use crate::adamw::AdamW;
use crate::config::RunConfig;
use crate::error::Result;
use crate::model::HookedTransformer;
use crate::task::Split;

/// The seed's `loss_fn`: mean cross-entropy of last-position logits, in float64.
pub fn loss_fn(last_logits: &Tensor, labels: &Tensor) -> Tensor {
    let log_probs = last_logits.to_kind(Kind::Double).log_softmax(-1, Kind::Double);
    -log_probs.gather(-1, &labels.unsqueeze(-1), false).squeeze_dim(-1).mean(Kind::Double)
}

/// Train and test inputs and labels, on the training device.
pub struct Batches {
    pub train_data: Tensor,
    pub train_labels: Tensor,
    pub test_data: Tensor,
    pub test_labels: Tensor,
}

impl Batches {
    pub fn new(cfg: &RunConfig, split: &Split, device: Device) -> Self {
        let (dataset, labels) = (cfg.task.dataset(), cfg.task.labels());
        let (train, test) = (split.train_tensor(), split.test_tensor());
        Batches {
            train_data: dataset.index_select(0, &train).to_device(device),
            train_labels: labels.index_select(0, &train).to_device(device),
            test_data: dataset.index_select(0, &test).to_device(device),
            test_labels: labels.index_select(0, &test).to_device(device),
        }
    }
}

/// One model being trained: its weights, its optimizer and its data.
pub struct Trainer {
    model: HookedTransformer,
    optimizer: AdamW,
    batches: Batches,
    epoch: i64,
}

impl Trainer {
    pub fn new(cfg: &RunConfig, model: &HookedTransformer, split: &Split) -> Self {
        let model = model.trainable_copy();
        let t = &cfg.train;
        let params = model.trainable_parameters().into_iter().map(Tensor::shallow_clone).collect();
        let optimizer = AdamW::new(params, t.lr, t.weight_decay, t.betas);
        let batches = Batches::new(cfg, split, model.device());
        Trainer { model, optimizer, batches, epoch: 0 }
    }

    /// One epoch; returns its (train loss, test loss).
    pub fn step(&mut self) -> (f64, f64) {
        let b = &self.batches;
        let train_loss = loss_fn(&self.model.last_logits(&b.train_data), &b.train_labels);
        train_loss.backward();
        self.optimizer.step();
        let test_loss = tch::no_grad(|| loss_fn(&self.model.last_logits(&b.test_data), &b.test_labels));
        self.epoch += 1;
        (train_loss.double_value(&[]), test_loss.double_value(&[]))
    }

    /// Epochs done so far.
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    pub fn model(&self) -> &HookedTransformer {
        &self.model
    }

    /// The optimizer, its state over `model().trainable_parameters()` in that order.
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

/// Trains `model` for `cfg.train.num_epochs` epochs, handing each checkpoint to
/// `observer`, with a progress bar on a terminal (a line per checkpoint elsewhere,
/// as the seed prints). Returns the trained model and the per-epoch losses.
pub fn train(
    cfg: &RunConfig,
    model: &HookedTransformer,
    split: &Split,
    observer: &mut dyn Observer,
) -> Result<(HookedTransformer, Vec<f64>, Vec<f64>)> {
    cfg.validate()?;
    let t = &cfg.train;
    let mut trainer = Trainer::new(cfg, model, split);
    let (mut train_losses, mut test_losses) = (Vec::new(), Vec::new());
    let progress = Progress::new(t.num_epochs as u64);
    for epoch in 0..t.num_epochs {
        let (train_loss, test_loss) = trainer.step();
        train_losses.push(train_loss);
        test_losses.push(test_loss);
        progress.tick(epoch, train_loss, test_loss);
        if (epoch + 1) % t.checkpoint_every == 0 {
            progress.checkpoint(epoch, train_loss, test_loss);
            observer.checkpoint(epoch, trainer.model(), &train_losses, &test_losses)?;
        }
    }
    progress.finish();
    Ok((trainer.model.with_grad_off(), train_losses, test_losses))
}

impl HookedTransformer {
    fn with_grad_off(&self) -> Self {
        self.map_parameters(|_, t| t.detach())
    }
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

    fn tick(&self, epoch: i64, train_loss: f64, test_loss: f64) {
        if let Some(bar) = &self.0 {
            bar.set_position(epoch as u64 + 1);
            if epoch % 10 == 0 {
                bar.set_message(format!("train {train_loss:.3e} test {test_loss:.3e}"));
            }
        }
    }

    fn checkpoint(&self, epoch: i64, train_loss: f64, test_loss: f64) {
        if self.0.is_none() {
            eprintln!("Epoch {epoch} Train Loss {train_loss:?} Test Loss {test_loss:?}");
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish();
        }
    }
}
