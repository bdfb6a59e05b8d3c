//! What people already have, read into one shape: a groklens run folder, a
//! TransformerLens state dict saved as safetensors, or the `.pth` file of the
//! TransformerLens grokking demo (`torch.save` of a dict with `model`, `config`,
//! `checkpoints`, `checkpoint_epochs`, `train_losses`, `test_losses`, `train_indices`,
//! `test_indices`), parsed by [`crate::pth`] without executing anything.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::config::{ActFn, ModelConfig, RunConfig, TrainConfig};
use crate::coverage::CellCurves;
use crate::error::{Error, Result};
use crate::model::HookedTransformer;
use crate::pth::{self, Value};
use crate::run::{checkpoint_file, load_state_dict, Run};
use crate::task::{Split, Task};

/// A trained model's history: its config and split, per-epoch losses (possibly
/// none), and the models at the checkpoint epochs, loaded on demand.
pub struct History {
    pub config: RunConfig,
    pub split: Split,
    pub train_losses: Vec<f64>,
    pub test_losses: Vec<f64>,
    /// Per epoch on seen and unseen cells, where the run recorded it.
    pub by_cell: CellCurves,
    pub checkpoint_epochs: Vec<i64>,
    source: Source,
}

enum Source {
    /// A run folder's checkpoints, read when asked for.
    Folder(PathBuf),
    StateDicts(Vec<Vec<(String, Tensor)>>),
}

impl History {
    /// The model at a checkpoint epoch.
    pub fn checkpoint(&self, epoch: i64, device: Device) -> Result<HookedTransformer> {
        let index = self
            .checkpoint_epochs
            .iter()
            .position(|&e| e == epoch)
            .ok_or_else(|| Error::config(format!("no checkpoint at epoch {epoch}")))?;
        match &self.source {
            Source::Folder(dir) => load_state_dict(&checkpoint_file(dir, epoch), &self.config, device),
            Source::StateDicts(states) => {
                HookedTransformer::from_state_dict(&self.config.model, &states[index], device)
            }
        }
    }
}

/// Reads `input`: a run folder, a `.safetensors` state dict, or a demo `.pth` file.
/// `task` says what was learnt where the file does not (safetensors and `.pth` files
/// hold no task); a safetensors file gets the seed's split and no losses.
pub fn read_history(input: &Path, task: Task) -> Result<History> {
    if input.is_dir() {
        let Run { dir, config, split, train_losses, test_losses, by_cell, checkpoint_epochs } = Run::load(input)?;
        let source = Source::Folder(dir);
        return Ok(History { config, split, train_losses, test_losses, by_cell, checkpoint_epochs, source });
    }
    if !input.is_file() {
        return Err(Error::config(format!("{}: no such file or folder", input.display())));
    }
    match input.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => {
            task.validate()?;
            let config = RunConfig::for_task(task);
            let model = load_state_dict(input, &config, Device::Cpu)?;
            let split = Split::seeded(task.n_pairs(), config.train.frac_train, config.train.data_seed)?;
            Ok(History {
                config,
                split,
                train_losses: vec![],
                test_losses: vec![],
                by_cell: CellCurves::default(),
                checkpoint_epochs: vec![0],
                source: Source::StateDicts(vec![model.state_dict()]),
            })
        }
        Some("pth") | Some("pt") => read_demo_pth(input, task),
        _ => Err(Error::config(format!(
            "{}: expected a run folder, a .safetensors state dict or a .pth file",
            input.display()
        ))),
    }
}

fn read_demo_pth(path: &Path, task: Task) -> Result<History> {
    let fail = |what: String| Error::format(format!("{}: {what}", path.display()));
    let root = pth::read_pth(path).map_err(|e| fail(e.to_string()))?;
    let field = |key: &str| root.get(key).ok_or_else(|| fail(format!("no `{key}` entry (not a grokking demo file)")));
    let model = model_config(field("config")?, task).map_err(|e| fail(e.to_string()))?;
    task.validate()?;
    let indices = |key: &str| -> Result<Vec<i64>> {
        Ok(field(key)?.as_tensor().ok_or_else(|| fail(format!("`{key}` is not a tensor")))?.to_i64_vec())
    };
    let split = Split { train: indices("train_indices")?, test: indices("test_indices")? };
    split.validate(task.n_pairs()).map_err(|e| fail(e.to_string()))?;
    let floats = |key: &str| -> Result<Vec<f64>> {
        let list = field(key)?.as_list().ok_or_else(|| fail(format!("`{key}` is not a list")))?;
        list.iter().map(|v| v.as_f64().ok_or_else(|| fail(format!("`{key}` holds a non-number")))).collect()
    };
    let (train_losses, test_losses) = (floats("train_losses")?, floats("test_losses")?);
    let checkpoint_epochs: Vec<i64> = field("checkpoint_epochs")?
        .as_list()
        .ok_or_else(|| fail("`checkpoint_epochs` is not a list".into()))?
        .iter()
        .map(|v| v.as_i64().ok_or_else(|| fail("`checkpoint_epochs` holds a non-integer".into())))
        .collect::<Result<_>>()?;
    let checkpoints = field("checkpoints")?.as_list().ok_or_else(|| fail("`checkpoints` is not a list".into()))?;
    if checkpoints.len() != checkpoint_epochs.len() {
        return Err(fail(format!(
            "{} checkpoints but {} checkpoint epochs",
            checkpoints.len(),
            checkpoint_epochs.len()
        )));
    }
    let states = checkpoints
        .iter()
        .enumerate()
        .map(|(i, sd)| {
            let state = state_dict(sd).map_err(|e| fail(format!("checkpoint {i}: {e}")))?;
            HookedTransformer::from_state_dict(&model, &state, Device::Cpu)
                .map_err(|e| fail(format!("checkpoint {i}: {e}")))?;
            Ok(state)
        })
        .collect::<Result<Vec<_>>>()?;
    let frac_train = split.train.len() as f64 / task.n_pairs() as f64;
    let train = TrainConfig { frac_train, num_epochs: train_losses.len() as i64, ..TrainConfig::default() };
    Ok(History {
        config: RunConfig { task, model, train },
        split,
        train_losses,
        test_losses,
        by_cell: CellCurves::default(),
        checkpoint_epochs,
        source: Source::StateDicts(states),
    })
}

/// `HookedTransformerConfig` fields from a plain dict or a pickled config object.
fn model_config(config: &Value, task: Task) -> Result<ModelConfig> {
    let int = |key: &str| {
        config.get(key).and_then(Value::as_i64).ok_or_else(|| Error::format(format!("config has no integer `{key}`")))
    };
    let act_fn = match config.get("act_fn").and_then(Value::as_str) {
        Some("relu") => ActFn::Relu,
        Some("gelu") => ActFn::Gelu,
        other => return Err(Error::format(format!("config act_fn {other:?} is not relu or gelu"))),
    };
    if config.get("normalization_type").is_some_and(|v| !matches!(v, Value::None)) {
        return Err(Error::format("config has a normalization_type; groklens models have no LayerNorm"));
    }
    let cfg = ModelConfig {
        n_layers: int("n_layers")?,
        n_heads: int("n_heads")?,
        d_model: int("d_model")?,
        d_head: int("d_head")?,
        d_mlp: int("d_mlp")?,
        d_vocab: int("d_vocab")?,
        d_vocab_out: int("d_vocab_out")?,
        n_ctx: int("n_ctx")?,
        act_fn,
        seed: config.get("seed").and_then(Value::as_i64).unwrap_or(0),
    };
    if cfg.d_vocab_out != task.p || cfg.d_vocab != task.p + 1 {
        return Err(Error::config(format!(
            "the file's model has d_vocab {} / d_vocab_out {}, which does not fit p = {} (pass --p)",
            cfg.d_vocab, cfg.d_vocab_out, task.p
        )));
    }
    Ok(cfg)
}

/// A state dict of float tensors (buffers such as the bool `mask` pass through too).
fn state_dict(value: &Value) -> Result<Vec<(String, Tensor)>> {
    let entries = value.as_dict().ok_or_else(|| Error::format("a checkpoint is not a dict"))?;
    entries
        .iter()
        .map(|(k, v)| {
            let name = k.as_str().ok_or_else(|| Error::format("a state-dict key is not a string"))?;
            let raw = v.as_tensor().ok_or_else(|| Error::format(format!("`{name}` is not a tensor")))?;
            let shape: Vec<i64> = raw.shape.iter().map(|&d| d as i64).collect();
            let tensor = Tensor::from_slice(&raw.to_f32_vec()).to_kind(Kind::Float).view(shape.as_slice());
            Ok((name.to_string(), tensor))
        })
        .collect()
}
