//! Full-batch training, as the seed notebook's loop: each epoch one AdamW step on
//! the whole training set, the train loss taken before the step and the test loss
//! after it, both in float64 at the last position; a checkpoint every
//! `checkpoint_every` epochs (after epochs 99, 199, … as the seed counts them).

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use tch::{Device, Kind, Tensor};

use crate::adamw::{AdamW, AdamWState};
use crate::config::{ModelConfig, RunConfig};
use crate::cuda_graph::{Graph, SideStream};
use crate::error::{Error, Result};
use crate::gradient::{logit_gradient, weight_gradients};
use crate::heap;
use crate::model::{is_weight_name, HookedTransformer};
use crate::task::Split;
use crate::token_tables::{pieces, wide_tables, Lookup, Read, Tables};

/// The seed's `loss_fn`: mean cross-entropy of last-position logits, in float64.
pub fn loss_fn(last_logits: &Tensor, labels: &Tensor) -> Tensor {
    let log_probs = last_logits.to_kind(Kind::Double).log_softmax(-1, Kind::Double);
    -log_probs.gather(-1, &labels.unsqueeze(-1), false).squeeze_dim(-1).mean(Kind::Double)
}

/// Train and test inputs and labels of N runs on the training device, each run's
/// training rows then its test rows, each set padded to the longest run's:
/// `[model, train + test, pos]` and `[model, train + test]`.
struct Batches {
    /// Positions per input.
    n_pos: i64,
    labels: Tensor,
    /// Rows of the (padded) training set; the test set follows.
    n_train: i64,
    /// What each row weighs in each run's train and test loss: 1/(the run's set size)
    /// for its real rows, 0 for padding and for the other set: `[model, rows, 2]` float64.
    loss_weights: Tensor,
    /// The training part of `labels` and of the train-loss weights: `[model, n_train]`.
    train_labels: Tensor,
    train_weights: Tensor,
    /// The pieces a forward pass reads the rows in (the training rows first, with
    /// resid_mid for the backward pass): (first row, rows, with resid_mid, lookup).
    pieces: Vec<(i64, i64, bool, Lookup)>,
}

impl Batches {
    fn new(runs: &[(&RunConfig, &Split)], device: Device) -> Self {
        let longest = |indices: &dyn Fn(&Split) -> &Vec<i64>| {
            runs.iter().map(|(_, s)| indices(s).len()).max().unwrap_or(0) as i64
        };
        let (n_train, n_test) = (longest(&|s| &s.train), longest(&|s| &s.test));
        let (mut data, mut labels, mut weights) = (vec![], vec![], vec![]);
        for (cfg, split) in runs {
            let (dataset, all_labels) = (cfg.task.dataset(), cfg.task.labels());
            let mut rows = vec![0i64; (n_train + n_test) as usize];
            let mut w = vec![0f64; 2 * rows.len()];
            for (set, indices, offset) in [(0, &split.train, 0), (1, &split.test, n_train as usize)] {
                // In pair order: neighbouring inputs share their first token, and the
                // table rows they read stay in cache.
                let mut indices = indices.clone();
                indices.sort_unstable();
                for (i, &row) in indices.iter().enumerate() {
                    rows[offset + i] = row;
                    w[2 * (offset + i) + set] = 1.0 / indices.len() as f64;
                }
            }
            let rows = Tensor::from_slice(&rows);
            data.push(dataset.index_select(0, &rows));
            labels.push(all_labels.index_select(0, &rows));
            weights.push(Tensor::from_slice(&w).view([-1, 2]));
        }
        let stack = |t: &[Tensor]| Tensor::stack(t, 0).to_device(device);
        let (data, labels, loss_weights) = (stack(&data), stack(&labels), stack(&weights));
        let train_labels = labels.narrow(1, 0, n_train);
        let train_weights = loss_weights.narrow(1, 0, n_train).select(2, 0);
        // On the CPU the test rows in pieces after the training rows; elsewhere all
        // rows in one piece (fewer kernel launches).
        let rows = n_train + n_test;
        let cuts: Vec<(i64, i64, bool)> = if device == Device::Cpu {
            std::iter::once((0, n_train, true))
                .chain(pieces(n_test, device).into_iter().map(|(start, len)| (n_train + start, len, false)))
                .collect()
        } else {
            vec![(0, rows, true)]
        };
        let model_cfg = &runs[0].0.model;
        let pieces = cuts
            .into_iter()
            .map(|(start, len, with_resid_mid)| {
                (start, len, with_resid_mid, Lookup::new(model_cfg, &data.narrow(1, start, len)))
            })
            .collect();
        let n_pos = data.size()[2];
        Batches { n_pos, labels, n_train, loss_weights, train_labels, train_weights, pieces }
    }
}

/// One forward pass of every run over all its rows, with what the backward pass needs.
struct Pass {
    tables: Tables,
    /// What the training rows read from the tables, with resid_mid.
    train: Read,
    /// Their float64 log-probabilities.
    train_log_probs: Tensor,
    /// Each run's train and test loss: `[model, 2]` float64.
    losses: Tensor,
}

/// N one-layer models trained together as one stacked computation (N may be 1):
/// their weights stacked on a leading model axis, their optimizer and their data.
/// Each model's losses and updates are its own; only the arithmetic is shared.
///
/// An epoch is one forward pass over the training and test rows together, a
/// hand-written backward pass ([`crate::gradient`]) and one AdamW step over a single
/// flat tensor holding every trainable weight: a fixed number of kernels, and no wait
/// for the device.
pub struct Trainer {
    /// The stack, its weights `W_*` views into `weights`.
    stack: HookedTransformer,
    /// Every trainable weight of every model: `[model, Σ weight sizes]`.
    weights: Tensor,
    /// Each trainable weight's name and one model's shape, in the order of `weights`' columns.
    layout: Vec<(String, Vec<i64>)>,
    optimizer: AdamW,
    batches: Batches,
    /// On a GPU: the stream epochs run on and how they run.
    gpu: Option<Gpu>,
}

/// Epochs run eagerly for a few warm-up epochs (libtorch and cuBLAS set up what they
/// need, outside any capture), then one epoch is captured as a CUDA graph and every
/// later epoch replays it: one launch per epoch instead of a few hundred. The graph
/// reads and updates the weights and optimizer state in place and writes the losses
/// into one tensor; `GROKLENS_CUDA_GRAPHS=0` keeps every epoch eager.
struct Gpu {
    epochs: GpuEpochs,
    /// Dropped last: the graph goes before the default stream comes back.
    _stream: SideStream,
}

enum GpuEpochs {
    Eager,
    WarmingUp(u32),
    Replaying(Graph, Tensor),
}

/// Eager epochs on a GPU before the capture.
const WARM_UP_EPOCHS: u32 = 3;

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
        if first_model.device() == Device::Cpu {
            heap::keep_freed_blocks();
        }
        let gpu = match first_model.device() {
            Device::Cuda(index) => {
                let graphs = std::env::var("GROKLENS_CUDA_GRAPHS").map_or(true, |v| v != "0");
                let epochs = if graphs { GpuEpochs::WarmingUp(0) } else { GpuEpochs::Eager };
                Some(Gpu { epochs, _stream: SideStream::new(index)? })
            }
            _ => None,
        };
        let models: Vec<&HookedTransformer> = runs.iter().map(|(_, m, _)| *m).collect();
        let stack = HookedTransformer::stack(&models);
        let n = runs.len() as i64;
        let weights = flat_per_model(stack.trainable_parameters(), n).detach();
        let layout = (stack.named_parameters().into_iter())
            .filter(|(name, _)| is_weight_name(name))
            .map(|(name, t)| (name, t.size()[1..].to_vec()))
            .collect();
        let mut offset = 0;
        let stack = stack.map_parameters(|name, t| {
            if !is_weight_name(name) {
                return t.detach();
            }
            let size = t.numel() as i64 / n;
            offset += size;
            weights.narrow(1, offset - size, size).view(t.size().as_slice())
        });
        let lr: Vec<f64> = runs.iter().map(|(c, _, _)| c.train.lr).collect();
        let wd: Vec<f64> = runs.iter().map(|(c, _, _)| c.train.weight_decay).collect();
        let optimizer = AdamW::new(vec![weights.shallow_clone()], &lr, &wd, first.train.betas);
        let data: Vec<(&RunConfig, &Split)> = runs.iter().map(|(c, _, s)| (*c, *s)).collect();
        let batches = Batches::new(&data, stack.device());
        Ok(Trainer { stack, weights, layout, optimizer, batches, gpu })
    }

    /// One epoch of every model: the forward pass, then one AdamW step. Returns the
    /// losses of the weights before the step, `[model, 2]` float64 (train, test), on the
    /// training device: reading them waits for the device.
    pub fn step(&mut self) -> Result<Tensor> {
        let Some(gpu) = &mut self.gpu else {
            return Ok(self.eager_step());
        };
        match std::mem::replace(&mut gpu.epochs, GpuEpochs::Eager) {
            GpuEpochs::Eager => Ok(self.eager_step()),
            GpuEpochs::WarmingUp(done) if done < WARM_UP_EPOCHS => {
                gpu.epochs = GpuEpochs::WarmingUp(done + 1);
                Ok(self.eager_step())
            }
            GpuEpochs::WarmingUp(_) => {
                let (graph, losses) = Graph::capture(|| self.eager_step())?;
                self.replay(graph, losses)
            }
            GpuEpochs::Replaying(graph, losses) => self.replay(graph, losses),
        }
    }

    /// One epoch by the captured graph; its losses copied out before the next replay.
    fn replay(&mut self, graph: Graph, losses: Tensor) -> Result<Tensor> {
        graph.replay()?;
        let out = losses.copy();
        if let Some(gpu) = &mut self.gpu {
            gpu.epochs = GpuEpochs::Replaying(graph, losses);
        }
        Ok(out)
    }

    /// [`Trainer::step`], each kernel launched as it comes.
    fn eager_step(&mut self) -> Tensor {
        let b = &self.batches;
        let pass = forward(&self.stack, b);
        let d_logits = logit_gradient(&pass.train_log_probs, &b.train_labels, &b.train_weights);
        let grads = weight_gradients(&self.stack, &pass.tables, &pass.train, &d_logits);
        let n = self.weights.size()[0];
        self.optimizer.step(&[flat_per_model(grads.iter().map(|(_, g)| g), n)]);
        pass.losses
    }

    /// The losses of the weights as they are now, `[model, 2]` (train, test).
    pub fn losses(&self) -> Tensor {
        forward(&self.stack, &self.batches).losses
    }

    /// `epochs` epochs of every model, with their losses as the seed records them:
    /// per epoch and model, the train loss before the step and the test loss after it.
    pub fn train_epochs(&mut self, epochs: i64) -> Result<Vec<Vec<(f64, f64)>>> {
        let mut records = Vec::new();
        let mut train_before: Option<Tensor> = None;
        for _ in 0..epochs {
            let losses = self.step()?;
            if let Some(train) = train_before.take() {
                records.push(Tensor::stack(&[train, losses.select(1, 1)], 1));
            }
            train_before = Some(losses.select(1, 0));
        }
        if let Some(train) = train_before {
            records.push(Tensor::stack(&[train, self.losses().select(1, 1)], 1));
        }
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let n = self.weights.size()[0] as usize;
        let values = Vec::<f64>::try_from(&Tensor::stack(&records, 0).to_device(Device::Cpu).flatten(0, -1))?;
        Ok(values.chunks_exact(2 * n).map(|epoch| epoch.chunks_exact(2).map(|l| (l[0], l[1])).collect()).collect())
    }

    /// Model i as it is now (a copy of its weights, on the training device).
    pub fn model(&self, i: usize) -> HookedTransformer {
        self.stack.map_parameters(|_, t| t.get(i as i64).copy())
    }

    /// Model i's optimizer state as it is now (copies, on the CPU).
    pub fn optimizer_state(&self, i: usize) -> AdamWState {
        let (exp_avg, exp_avg_sq) = self.optimizer.moments();
        let (exp_avg, exp_avg_sq) = (exp_avg[0].get(i as i64), exp_avg_sq[0].get(i as i64));
        let mut offset = 0;
        let moments = (self.layout.iter())
            .map(|(name, shape)| {
                let (start, size) = (offset, shape.iter().product::<i64>());
                offset += size;
                let part = |t: &Tensor| t.narrow(0, start, size).view(shape.as_slice()).to_device(Device::Cpu).copy();
                (name.clone(), part(&exp_avg), part(&exp_avg_sq))
            })
            .collect();
        AdamWState { step: self.optimizer.steps(), moments }
    }

    /// Continues from each model's optimizer state (one per model, all at one step
    /// count), as [`Trainer::optimizer_state`] gives them or a run folder keeps them.
    pub fn set_optimizer_state(&mut self, states: &[&AdamWState]) -> Result<()> {
        let n = self.weights.size()[0];
        if states.len() as i64 != n {
            return Err(Error::config(format!("{} optimizer states for {n} models", states.len())));
        }
        let step = states[0].step;
        if let Some(other) = states.iter().find(|s| s.step != step) {
            return Err(Error::config(format!(
                "models trained together must be at one step, got {step} and {}",
                other.step
            )));
        }
        let device = self.weights.device();
        let mut flat = [vec![], vec![]];
        for state in states {
            if let Some((extra, _, _)) = state.moments.iter().find(|(n, _, _)| !self.layout.iter().any(|(m, _)| m == n))
            {
                return Err(Error::format(format!("optimizer state has moments of `{extra}`, not a trainable weight")));
            }
            for (name, shape) in &self.layout {
                let (_, avg, avg_sq) = (state.moments.iter().find(|(n, _, _)| n == name))
                    .ok_or_else(|| Error::format(format!("optimizer state has no moments of `{name}`")))?;
                for (moments, t) in flat.iter_mut().zip([avg, avg_sq]) {
                    if t.size() != *shape || t.kind() != Kind::Float {
                        return Err(Error::format(format!(
                            "optimizer moment of `{name}` is {:?} {:?}, expected {shape:?} Float",
                            t.kind(),
                            t.size()
                        )));
                    }
                    moments.push(t.reshape([-1]));
                }
            }
        }
        let [avg, avg_sq] = flat.map(|parts| Tensor::cat(&parts, 0).view([n, -1]).to_device(device));
        self.optimizer.set_state(vec![avg], vec![avg_sq], step);
        Ok(())
    }
}

/// Tensors `[model, …]` of `n` models as one `[model, Σ sizes]`: each model's row its
/// tensors flattened, in order (the layout of [`Trainer`]'s `weights`).
fn flat_per_model<'a>(tensors: impl IntoIterator<Item = &'a Tensor>, n: i64) -> Tensor {
    Tensor::cat(&tensors.into_iter().map(|t| t.reshape([n, -1])).collect::<Vec<_>>(), 1)
}

/// The forward pass of `stack` over all of `batches`, piece by piece.
fn forward(stack: &HookedTransformer, batches: &Batches) -> Pass {
    let n_train = batches.n_train;
    let tables = stack.tables(batches.n_pos, wide_tables(stack.device()));
    let mut nll = vec![];
    let mut train = None;
    for (start, len, with_resid_mid, lookup) in &batches.pieces {
        let (start, len) = (*start, *len);
        let read = stack.read_tables(&tables, lookup, *with_resid_mid);
        let log_probs = read.logits.to_kind(Kind::Double).log_softmax(-1, Kind::Double);
        let labels = batches.labels.narrow(1, start, len).unsqueeze(-1);
        nll.push(-log_probs.gather(-1, &labels, false).squeeze_dim(-1));
        if start == 0 {
            train = Some((read.first(n_train), log_probs.narrow(1, 0, n_train)));
        }
    }
    let (train, train_log_probs) = train.expect("the training rows come first");
    let losses = Tensor::cat(&nll, 1).unsqueeze(1).bmm(&batches.loss_weights).squeeze_dim(1);
    Pass { tables, train, train_log_probs, losses }
}

/// A checkpoint of one run: everything the next epoch depends on, and the losses so far.
pub struct Checkpoint<'a> {
    /// The epoch just finished (0-based, as the seed counts).
    pub epoch: i64,
    pub model: &'a HookedTransformer,
    pub optimizer: &'a AdamWState,
    pub train_losses: &'a [f64],
    pub test_losses: &'a [f64],
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
}

impl Resume {
    /// The start of a run: its initial model, no steps taken.
    pub fn start(model: HookedTransformer) -> Self {
        let optimizer = AdamWState::initial(&model);
        Resume { model, optimizer, train_losses: Vec::new(), test_losses: Vec::new() }
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

/// Trains several runs as one stacked computation ([`Trainer::stacked`]), each from
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
    let mut losses: Vec<_> = runs.iter().map(|(_, _, r)| (r.train_losses.clone(), r.test_losses.clone())).collect();
    let progress = Progress::new(t.num_epochs as u64, done as u64);
    // Between checkpoints the losses stay on the device: no wait per epoch.
    while done < t.num_epochs {
        let epochs = (t.checkpoint_every - done % t.checkpoint_every).min(t.num_epochs - done);
        for epoch in trainer.train_epochs(epochs)? {
            for ((train, test), (tr, te)) in losses.iter_mut().zip(epoch) {
                train.push(tr);
                test.push(te);
            }
        }
        done += epochs;
        progress.tick(done);
        let now: Vec<(f64, f64)> = losses.iter().map(|(tr, te)| (tr[tr.len() - 1], te[te.len() - 1])).collect();
        progress.checkpoint(done - 1, &now);
        for (i, (observer, (train, test))) in observers.iter_mut().zip(&losses).enumerate() {
            let (model, optimizer) = (trainer.model(i), trainer.optimizer_state(i));
            let checkpoint = Checkpoint {
                epoch: done - 1,
                model: &model,
                optimizer: &optimizer,
                train_losses: train,
                test_losses: test,
            };
            observer.checkpoint(&checkpoint)?;
        }
        for observer in observers.iter_mut() {
            observer.all_checkpointed(done - 1)?;
        }
    }
    progress.finish();
    Ok(losses.into_iter().enumerate().map(|(i, (train, test))| (trainer.model(i), train, test)).collect())
}

/// A bar on a terminal, or the seed's checkpoint lines where output is a log or a notebook.
struct Progress(Option<ProgressBar>);

impl Progress {
    fn new(epochs: u64, done: u64) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = ProgressBar::new(epochs);
        bar.set_position(done);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} epochs [{elapsed_precise}<{eta_precise}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Progress(Some(bar))
    }

    fn tick(&self, epochs_done: i64) {
        if let Some(bar) = &self.0 {
            bar.set_position(epochs_done as u64);
        }
    }

    fn checkpoint(&self, epoch: i64, losses: &[(f64, f64)]) {
        match (losses, &self.0) {
            ([(train, test)], None) => eprintln!("Epoch {epoch} Train Loss {train:?} Test Loss {test:?}"),
            (_, None) => eprintln!("Epoch {epoch} {}", describe(losses)),
            (_, Some(bar)) => bar.set_message(describe(losses)),
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
