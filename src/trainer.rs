//! N one-layer runs trained together, one epoch at a time: the seed's full-batch
//! AdamW step, computed over the per-token tables with a hand-written backward pass.

use tch::{Device, Kind, Tensor};

use crate::adamw::{AdamW, AdamWState};
use crate::batches::Batches;
use crate::config::{ModelConfig, RunConfig};
use crate::cuda_graph::GpuEpochs;
use crate::error::{Error, Result};
use crate::gradient::weight_gradients;
use crate::heap;
use crate::model::{is_weight_name, HookedTransformer};
use crate::one_layer::{wide_tables, Read, Stack, Tables};
use crate::row_loss::row_losses;
use crate::task::Split;

/// N one-layer runs trained together (N may be 1), in stacks that each step as one
/// computation: their weights stacked on a leading model axis, one optimizer and one
/// set of data per stack. Each run's losses and updates are its own; only the
/// arithmetic is shared.
///
/// Process-wide effects: on the CPU a trainer makes the C heap keep freed blocks for
/// the rest of the process ([`crate::heap`]); on a GPU it makes a side stream current
/// for the creating thread while it lives ([`crate::cuda_graph`]).
pub struct Trainer {
    /// The stacks, in the order of the runs: each one's runs follow the last one's.
    stacks: Vec<StackTrainer>,
}

/// Runs per stack on `device` that train fastest per run: on a GPU as many as there
/// are (one kernel launch serves them all); on the CPU one, since one run keeps every
/// core busy and a larger stack's tables and activations outgrow the caches
/// (BENCHMARKS.md, "Many runs at once").
fn stack_size(device: Device, runs: usize) -> usize {
    if device == Device::Cpu {
        1
    } else {
        runs.max(1)
    }
}

impl Trainer {
    /// One run.
    pub fn new(cfg: &RunConfig, model: &HookedTransformer, split: &Split) -> Result<Self> {
        Self::stacked(&[(cfg, model, split)])
    }

    /// Several runs of one model shape, number of epochs, betas and p, each with its
    /// own initial weights, task terms, split, lr and weight decay, in the stacks that
    /// train fastest per run on their device.
    pub fn stacked(runs: &[(&RunConfig, &HookedTransformer, &Split)]) -> Result<Self> {
        let device = runs.first().map_or(Device::Cpu, |(_, m, _)| m.device());
        Self::in_stacks_of(runs, stack_size(device, runs.len()))
    }

    /// [`Trainer::stacked`] in stacks of at most `size` runs, in order.
    pub fn in_stacks_of(runs: &[(&RunConfig, &HookedTransformer, &Split)], size: usize) -> Result<Self> {
        let (first, _, _) = runs.first().ok_or_else(|| Error::config("no runs to train"))?;
        if size == 0 {
            return Err(Error::config("a stack holds at least one run"));
        }
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
            if model.cfg != cfg.model {
                return Err(Error::config("each run's model must be of its config"));
            }
        }
        Ok(Trainer { stacks: runs.chunks(size).map(StackTrainer::new).collect::<Result<_>>()? })
    }

    /// Runs trained.
    fn runs(&self) -> usize {
        self.stacks.iter().map(|s| s.stack.n as usize).sum()
    }

    /// The stack that trains run `i`, and the run's place in it.
    fn find(&self, mut i: usize) -> (&StackTrainer, i64) {
        for stack in &self.stacks {
            if i < stack.stack.n as usize {
                return (stack, i as i64);
            }
            i -= stack.stack.n as usize;
        }
        panic!("run {i} past the {} runs trained", self.runs())
    }

    /// One epoch of every model: the forward pass, then one AdamW step. Returns the
    /// measures of the weights before the step, `[model, 6]` float64 (train loss, test
    /// loss, then the test loss on seen and on unseen cells and the accuracy on each), on
    /// the training device: reading them waits for the device.
    pub fn step(&mut self) -> Result<Tensor> {
        let measures = self.stacks.iter_mut().map(StackTrainer::step).collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&measures, 0))
    }

    /// The measures of the weights as they are now, `[model, 6]` as [`Trainer::step`]'s.
    pub fn losses(&self) -> Tensor {
        Tensor::cat(&self.stacks.iter().map(|s| forward(&s.stack, &s.batches).measures).collect::<Vec<_>>(), 0)
    }

    /// `epochs` epochs of every model, recorded as the seed records them: per epoch and
    /// model, the train loss before the step and the test measures after it.
    pub fn train_epochs(&mut self, epochs: i64) -> Result<Vec<Vec<Epoch>>> {
        let mut records = Vec::new();
        let mut train_before: Option<Tensor> = None;
        for _ in 0..epochs {
            let measures = self.step()?;
            if let Some(train) = train_before.take() {
                records.push(Tensor::cat(&[train, measures.narrow(1, 1, 5)], 1));
            }
            train_before = Some(measures.narrow(1, 0, 1));
        }
        if let Some(train) = train_before {
            records.push(Tensor::cat(&[train, self.losses().narrow(1, 1, 5)], 1));
        }
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let n = self.runs();
        let values = Vec::<f64>::try_from(&Tensor::stack(&records, 0).to_device(Device::Cpu).flatten(0, -1))?;
        let epoch = |v: &[f64]| Epoch { train_loss: v[0], test_loss: v[1], by_cell: [v[2], v[3], v[4], v[5]] };
        Ok(values.chunks_exact(6 * n).map(|models| models.chunks_exact(6).map(epoch).collect()).collect())
    }

    /// Model i as it is now (a copy of its weights, on the training device).
    pub fn model(&self, i: usize) -> HookedTransformer {
        let (stack, i) = self.find(i);
        stack.stack.model(i)
    }

    /// Model i's optimizer state as it is now (copies, on the CPU).
    pub fn optimizer_state(&self, i: usize) -> AdamWState {
        let (stack, i) = self.find(i);
        let (exp_avg, exp_avg_sq) = stack.optimizer.moments();
        let (exp_avg, exp_avg_sq) = (exp_avg[0].get(i), exp_avg_sq[0].get(i));
        let mut offset = 0;
        let moments = (stack.layout.iter())
            .map(|(name, shape)| {
                let (start, size) = (offset, shape.iter().product::<i64>());
                offset += size;
                let part = |t: &Tensor| t.narrow(0, start, size).view(shape.as_slice()).to_device(Device::Cpu).copy();
                (name.clone(), part(&exp_avg), part(&exp_avg_sq))
            })
            .collect();
        AdamWState { step: stack.optimizer.steps(), moments }
    }

    /// Continues from each model's optimizer state (one per model, all at one step
    /// count), as [`Trainer::optimizer_state`] gives them or a run folder keeps them.
    pub fn set_optimizer_state(&mut self, states: &[&AdamWState]) -> Result<()> {
        if states.len() != self.runs() {
            return Err(Error::config(format!("{} optimizer states for {} models", states.len(), self.runs())));
        }
        let step = states[0].step;
        if let Some(other) = states.iter().find(|s| s.step != step) {
            return Err(Error::config(format!(
                "models trained together must be at one step, got {step} and {}",
                other.step
            )));
        }
        let mut rest = states;
        for stack in &mut self.stacks {
            let (these, others) = rest.split_at(stack.stack.n as usize);
            stack.set_optimizer_state(these, step)?;
            rest = others;
        }
        Ok(())
    }
}

/// Runs trained as one stacked computation: an epoch is one forward pass over the
/// training and test rows together, a hand-written backward pass ([`crate::gradient`])
/// and one AdamW step over a single flat tensor holding every trainable weight: a fixed
/// number of kernels, and no wait for the device.
struct StackTrainer {
    /// The stack; its weights `W_*` are views into `weights`.
    stack: Stack,
    /// Every trainable weight of every model: `[model, Σ weight sizes]`.
    weights: Tensor,
    /// Each trainable weight's name and one model's shape, in the order of `weights`' columns.
    layout: Vec<(String, Vec<i64>)>,
    optimizer: AdamW,
    batches: Batches,
    /// On a GPU: how epochs run there.
    gpu: Option<GpuEpochs>,
}

impl StackTrainer {
    /// Runs already checked to share what a stack shares.
    fn new(runs: &[(&RunConfig, &HookedTransformer, &Split)]) -> Result<Self> {
        let (first, _, _) = runs[0];
        let stack = Stack::new(&runs.iter().map(|(_, m, _)| *m).collect::<Vec<_>>())?;
        let device = stack.device();
        if device == Device::Cpu {
            heap::keep_freed_blocks();
        }
        let gpu = match device {
            Device::Cuda(index) => Some(GpuEpochs::new(index)?),
            _ => None,
        };
        let n = stack.n;
        let trainable: Vec<(&str, &Tensor)> =
            stack.named_parameters().filter(|(name, _)| is_weight_name(name)).collect();
        let weights = flat_per_model(trainable.iter().map(|(_, t)| *t), n).detach();
        let layout: Vec<(String, Vec<i64>)> =
            trainable.iter().map(|(name, t)| (name.to_string(), t.size()[1..].to_vec())).collect();
        let mut offset = 0;
        let stack = stack.with_parameters(|name, t| {
            if !is_weight_name(name) {
                return t.detach();
            }
            let size = t.numel() as i64 / n;
            offset += size;
            weights.narrow(1, offset - size, size).view(t.size().as_slice())
        });
        let lr: Vec<f64> = runs.iter().map(|(c, _, _)| c.train.lr).collect();
        let wd: Vec<f64> = runs.iter().map(|(c, _, _)| c.train.weight_decay).collect();
        let optimizer = AdamW::new(vec![weights.shallow_clone()], &lr, &wd, first.train.betas)?;
        let data: Vec<(&RunConfig, &Split)> = runs.iter().map(|(c, _, s)| (*c, *s)).collect();
        let batches = Batches::new(&data, device);
        Ok(StackTrainer { stack, weights, layout, optimizer, batches, gpu })
    }

    /// [`Trainer::step`] for this stack's models.
    fn step(&mut self) -> Result<Tensor> {
        let StackTrainer { stack, weights, layout, optimizer, batches, gpu } = self;
        let mut eager = || eager_step(stack, weights, layout, optimizer, batches);
        match gpu {
            Some(gpu) => gpu.step(eager),
            None => Ok(eager()),
        }
    }

    /// Continues from the optimizer states of this stack's models, all at `step`.
    fn set_optimizer_state(&mut self, states: &[&AdamWState], step: i64) -> Result<()> {
        let n = self.stack.n;
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
        let device = self.weights.device();
        let [avg, avg_sq] = flat.map(|parts| Tensor::cat(&parts, 0).view([n, -1]).to_device(device));
        self.optimizer.set_state(vec![avg], vec![avg_sq], step)
    }
}

/// One epoch of one run, as the seed records it: the train loss before the epoch's
/// step; after it, the test loss, and the test loss on the test pairs of seen cells and
/// of unseen cells and the accuracy on each, in [`crate::coverage::CellCurves`]'s order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Epoch {
    pub train_loss: f64,
    pub test_loss: f64,
    pub by_cell: [f64; 4],
}

/// [`Trainer::step`], each kernel launched as it comes.
fn eager_step(
    stack: &Stack,
    weights: &Tensor,
    layout: &[(String, Vec<i64>)],
    optimizer: &mut AdamW,
    b: &Batches,
) -> Tensor {
    let pass = forward(stack, b);
    let grads = weight_gradients(stack, &pass.tables, &pass.train, &pass.d_logits);
    let ordered = layout.iter().map(|(name, _)| {
        let (_, grad) = grads.iter().find(|(n, _)| n == name).expect("a gradient for every trainable weight");
        grad
    });
    optimizer.step(&[flat_per_model(ordered, weights.size()[0])]).expect("one gradient for the one flat tensor");
    pass.measures
}

/// Tensors `[model, …]` of `n` models as one `[model, Σ sizes]`: each model's row its
/// tensors flattened, in order (the layout of [`Trainer`]'s `weights`).
fn flat_per_model<'a>(tensors: impl IntoIterator<Item = &'a Tensor>, n: i64) -> Tensor {
    Tensor::cat(&tensors.into_iter().map(|t| t.reshape([n, -1])).collect::<Vec<_>>(), 1)
}

/// One forward pass of every run over all its rows, with what the backward pass needs.
struct Pass {
    tables: Tables,
    /// What the training rows read from the tables, with resid_mid.
    train: Read,
    /// The gradient of each run's train loss with respect to their logits.
    d_logits: Tensor,
    /// Each run's measures: `[model, 6]` float64, as [`Trainer::step`] returns them.
    measures: Tensor,
}

/// The forward pass of `stack` over all of `batches`, piece by piece.
fn forward(stack: &Stack, batches: &Batches) -> Pass {
    let n_train = batches.n_train;
    let tables = stack.tables(batches.n_pos, &batches.queries, wide_tables(stack.device()));
    let (mut nll, mut correct) = (vec![], vec![]);
    let mut train = None;
    for piece in &batches.pieces {
        let read = stack.read_tables(&tables, &piece.lookup, piece.with_resid_mid);
        let labels = batches.labels.narrow(1, piece.start, piece.len);
        // The training rows come first, in the first piece: their logits' gradient too.
        let first = piece.start == 0;
        let rows = row_losses(&read.logits, &labels, first.then_some(&batches.train_weights));
        nll.push(rows.nll);
        correct.push(rows.correct);
        if first {
            train = Some((read.first(n_train), rows.d_logits.expect("asked for")));
        }
    }
    let (train, d_logits) = train.expect("the training rows come first");
    let (nll, correct) = (Tensor::cat(&nll, 1).unsqueeze(1), Tensor::cat(&correct, 1).unsqueeze(1));
    let losses = nll.bmm(&batches.loss_weights).squeeze_dim(1);
    let by_cell = Tensor::cat(&[nll.bmm(&batches.cell_weights), correct.bmm(&batches.cell_weights)], 2).squeeze_dim(1);
    let empty = Tensor::cat(&[&batches.empty_cells, &batches.empty_cells], 1);
    let measures = Tensor::cat(&[losses, by_cell.masked_fill(&empty, f64::NAN)], 1);
    Pass { tables, train, d_logits, measures }
}
