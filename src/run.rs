//! A run is a folder, and this module alone names its files:
//!
//! ```text
//! config.json                      the RunConfig (task, model, training)
//! split.json                       {"train": [...], "test": [...]} indices into the p² pairs
//! init.safetensors                 the initial weights
//! losses.csv                       epoch,train_loss,test_loss (up to the last checkpoint)
//! checkpoints/epoch_000099.safetensors   TransformerLens state dicts
//! ```
//!
//! Every file is written to a `.partial` sibling and renamed into place, so a run
//! killed at any moment leaves only whole files: the checkpoints so far, and the
//! losses up to the last of them.

use std::fs;
use std::path::{Path, PathBuf};

use tch::{Device, Tensor};

use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::model::HookedTransformer;
use crate::task::Split;
use crate::train::Observer;

const CONFIG: &str = "config.json";
const SPLIT: &str = "split.json";
const INIT: &str = "init.safetensors";
const LOSSES: &str = "losses.csv";
const CHECKPOINTS: &str = "checkpoints";

/// A run folder on disk: its config, split and losses, and its checkpoints by epoch.
pub struct Run {
    pub dir: PathBuf,
    pub config: RunConfig,
    pub split: Split,
    pub train_losses: Vec<f64>,
    pub test_losses: Vec<f64>,
    /// The epochs (0-based, as the seed counts) that have a checkpoint, ascending.
    pub checkpoint_epochs: Vec<i64>,
}

impl Run {
    /// Reads a run folder, checking that every part is well-formed and fits the others.
    pub fn load(dir: impl AsRef<Path>) -> Result<Run> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.join(CONFIG).is_file() {
            return Err(Error::format(format!("{} is not a groklens run folder (no {CONFIG})", dir.display())));
        }
        let config: RunConfig = read_json(&dir.join(CONFIG))?;
        config.validate().map_err(|e| Error::format(format!("{}: {e}", dir.join(CONFIG).display())))?;
        let split: Split = read_json(&dir.join(SPLIT))?;
        split
            .validate(config.task.n_pairs())
            .map_err(|e| Error::format(format!("{}: {e}", dir.join(SPLIT).display())))?;
        let (train_losses, test_losses) = read_losses(&dir.join(LOSSES))?;
        let checkpoint_epochs = list_checkpoints(&dir.join(CHECKPOINTS))?;
        Ok(Run { dir, config, split, train_losses, test_losses, checkpoint_epochs })
    }

    /// The model saved at a checkpoint epoch.
    pub fn checkpoint(&self, epoch: i64, device: Device) -> Result<HookedTransformer> {
        load_state_dict(&checkpoint_path(&self.dir, epoch), &self.config, device)
    }

    /// The model at the last checkpoint.
    pub fn final_model(&self, device: Device) -> Result<HookedTransformer> {
        let last = self
            .checkpoint_epochs
            .last()
            .ok_or_else(|| Error::format(format!("{} has no checkpoints", self.dir.display())))?;
        self.checkpoint(*last, device)
    }

    /// The model before training.
    pub fn initial_model(&self, device: Device) -> Result<HookedTransformer> {
        load_state_dict(&self.dir.join(INIT), &self.config, device)
    }
}

/// Reads a TransformerLens state dict saved as safetensors into a model of `config`.
pub fn load_state_dict(path: &Path, config: &RunConfig, device: Device) -> Result<HookedTransformer> {
    if !path.is_file() {
        return Err(Error::format(format!("{}: no such file", path.display())));
    }
    let tensors = Tensor::read_safetensors(path)
        .map_err(|e| Error::format(format!("{}: not a readable safetensors file ({e})", path.display())))?;
    HookedTransformer::from_state_dict(&config.model, &tensors, device)
        .map_err(|e| Error::format(format!("{}: {e}", path.display())))
}

/// Writes a run folder as training goes.
pub struct RunWriter {
    dir: PathBuf,
}

impl RunWriter {
    /// Starts a run in `dir`, which must not exist or be empty: writes the config,
    /// the split and the initial weights.
    pub fn create(dir: impl AsRef<Path>, config: &RunConfig, split: &Split, init: &HookedTransformer) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        check_empty_or_absent(&dir)?;
        fs::create_dir_all(dir.join(CHECKPOINTS)).map_err(|e| Error::io(&dir, e))?;
        let writer = RunWriter { dir };
        writer.write_atomic(CONFIG, |path| write_json(path, config))?;
        writer.write_atomic(SPLIT, |path| write_json(path, split))?;
        writer.write_atomic(INIT, |path| write_state_dict(path, init))?;
        Ok(writer)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write_atomic(&self, name: &str, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        write_atomic(&self.dir, name, write)
    }
}

/// Writes `dir/name` whole: `write` fills a `.partial` sibling, which is then renamed
/// into place, so a reader never sees half a file.
pub fn write_atomic(dir: &Path, name: &str, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let path = dir.join(name);
    let partial = dir.join(format!("{name}.partial"));
    write(&partial)?;
    fs::rename(&partial, &path).map_err(|e| Error::io(&path, e))
}

impl Observer for RunWriter {
    fn checkpoint(
        &mut self,
        epoch: i64,
        model: &HookedTransformer,
        train_losses: &[f64],
        test_losses: &[f64],
    ) -> Result<()> {
        let name = checkpoint_path(Path::new(""), epoch);
        self.write_atomic(&name.to_string_lossy(), |path| write_state_dict(path, model))?;
        self.write_atomic(LOSSES, |path| write_losses(path, train_losses, test_losses))
    }
}

/// Keeps nothing: for training without a run folder.
pub struct Discard;

impl Observer for Discard {
    fn checkpoint(&mut self, _: i64, _: &HookedTransformer, _: &[f64], _: &[f64]) -> Result<()> {
        Ok(())
    }
}

/// Fails unless `dir` is absent or an empty folder.
pub fn check_empty_or_absent(dir: &Path) -> Result<()> {
    match fs::read_dir(dir).map(|mut entries| entries.next().is_none()) {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::config(format!("{} already exists and is not empty", dir.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) if dir.exists() => Err(Error::config(format!("{} exists and is not a readable folder", dir.display()))),
        Err(e) => Err(Error::io(dir, e)),
    }
}

fn checkpoint_path(dir: &Path, epoch: i64) -> PathBuf {
    dir.join(CHECKPOINTS).join(format!("epoch_{epoch:06}.safetensors"))
}

fn list_checkpoints(dir: &Path) -> Result<Vec<i64>> {
    let mut epochs = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(epochs),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let name = entry.map_err(|e| Error::io(dir, e))?.file_name();
        let name = name.to_string_lossy();
        if let Some(epoch) = name.strip_prefix("epoch_").and_then(|s| s.strip_suffix(".safetensors")) {
            epochs.push(
                epoch.parse().map_err(|_| Error::format(format!("{}: bad checkpoint name {name}", dir.display())))?,
            );
        }
    }
    epochs.sort_unstable();
    Ok(epochs)
}

fn write_state_dict(path: &Path, model: &HookedTransformer) -> Result<()> {
    let state = model.state_dict();
    Tensor::write_safetensors(&state, path).map_err(Error::from)
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::format(e.to_string()))?;
    fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(format!("{}: {e}", path.display())))
}

fn write_losses(path: &Path, train: &[f64], test: &[f64]) -> Result<()> {
    let mut text = String::from("epoch,train_loss,test_loss\n");
    for (epoch, (tr, te)) in train.iter().zip(test).enumerate() {
        text.push_str(&format!("{epoch},{tr},{te}\n"));
    }
    fs::write(path, text).map_err(|e| Error::io(path, e))
}

fn read_losses(path: &Path) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut train, mut test) = (Vec::new(), Vec::new());
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((train, test)),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut lines = text.lines();
    if lines.next() != Some("epoch,train_loss,test_loss") {
        return Err(Error::format(format!("{}: header must be epoch,train_loss,test_loss", path.display())));
    }
    for (i, line) in lines.enumerate() {
        let bad = || Error::format(format!("{}: line {} is not `epoch,train_loss,test_loss`", path.display(), i + 2));
        let mut fields = line.split(',');
        let epoch: usize = fields.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let tr: f64 = fields.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        let te: f64 = fields.next().and_then(|s| s.parse().ok()).ok_or_else(bad)?;
        if epoch != i || fields.next().is_some() {
            return Err(bad());
        }
        train.push(tr);
        test.push(te);
    }
    Ok((train, test))
}
