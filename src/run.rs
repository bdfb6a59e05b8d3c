//! A run is a folder, and this module alone names its files:
//!
//! ```text
//! config.json                      the RunConfig (task, model, training)
//! split.json                       {"train": [...], "test": [...]} indices into the p² pairs
//! init.safetensors                 the initial weights
//! losses.csv                       epoch,train_loss,test_loss, then the test loss and accuracy
//!                                  on seen and on unseen cells (crate::coverage), up to the last checkpoint
//! checkpoints/epoch_000099.safetensors   TransformerLens state dicts
//! optimizer/epoch_000099.safetensors     AdamW's moments and step after that epoch
//! ```
//!
//! A grid of runs trained together is a folder of run folders, `run-000`, …, with an
//! `index.json` that lists them. A run folder or a grid appears whole: its first files
//! are written in a staging folder that is then renamed. Every later file is written to a `.partial` sibling and
//! renamed into place, so a run killed at any moment leaves only whole files. A
//! checkpoint is written in the order weights, losses, optimizer state, so an
//! optimizer state is there only when everything before it is: it marks an epoch the
//! run can continue from ([`Run::resume_points`]). It is removed once every run
//! trained alongside has a later one.

use std::fs;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use crate::adamw::AdamWState;
use crate::config::RunConfig;
use crate::coverage::CellCurves;
use crate::error::{Error, Result};
use crate::model::HookedTransformer;
use crate::task::Split;
use crate::train::{train_stacked, Checkpoint, Observer, Resume};

const CONFIG: &str = "config.json";
const SPLIT: &str = "split.json";
const INIT: &str = "init.safetensors";
const LOSSES: &str = "losses.csv";
const CHECKPOINTS: &str = "checkpoints";
const OPTIMIZER: &str = "optimizer";
/// In a grid's folder: its runs' folders and what each varies.
const INDEX: &str = "index.json";

/// A run folder on disk: its config, split and losses, and its checkpoints by epoch.
pub struct Run {
    pub dir: PathBuf,
    pub config: RunConfig,
    pub split: Split,
    pub train_losses: Vec<f64>,
    pub test_losses: Vec<f64>,
    /// Per epoch, on the test pairs of seen and of unseen cells (empty for a run
    /// recorded without them).
    pub by_cell: CellCurves,
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
        let (train_losses, test_losses, by_cell) = read_losses(&dir.join(LOSSES))?;
        let checkpoint_epochs = list_epochs(&dir.join(CHECKPOINTS))?;
        Ok(Run { dir, config, split, train_losses, test_losses, by_cell, checkpoint_epochs })
    }

    /// The model saved at a checkpoint epoch.
    pub fn checkpoint(&self, epoch: i64, device: Device) -> Result<HookedTransformer> {
        load_state_dict(&checkpoint_file(&self.dir, epoch), &self.config, device)
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

    /// Whether every epoch was trained and the last one checkpointed.
    pub fn is_finished(&self) -> bool {
        let epochs = self.config.train.num_epochs;
        self.train_losses.len() as i64 == epochs && self.checkpoint_epochs.last() == Some(&(epochs - 1))
    }

    /// The epochs the run can continue from, ascending: those with an optimizer
    /// state, a checkpoint, and the losses up to them.
    pub fn resume_points(&self) -> Result<Vec<i64>> {
        let covered = |e: &i64| self.checkpoint_epochs.contains(e) && (self.train_losses.len() as i64) > *e;
        Ok(list_epochs(&self.dir.join(OPTIMIZER))?.into_iter().filter(covered).collect())
    }

    /// Where the run stands after `epoch` (one of [`Run::resume_points`]), or before
    /// its first epoch when `None`.
    pub fn resume_from(&self, epoch: Option<i64>, device: Device) -> Result<Resume> {
        let Some(epoch) = epoch else {
            return Ok(Resume::start(self.initial_model(device)?));
        };
        if !self.resume_points()?.contains(&epoch) {
            return Err(Error::format(format!("{}: cannot continue from epoch {epoch}", self.dir.display())));
        }
        let path = epoch_path(&self.dir, OPTIMIZER, epoch);
        let optimizer = read_optimizer_state(&path)
            .and_then(|state| match state.step == epoch + 1 {
                true => Ok(state),
                false => Err(Error::format(format!("step {} after epoch {epoch} (one step per epoch)", state.step))),
            })
            .map_err(|e| Error::format(format!("{}: {e}", path.display())))?;
        let kept = epoch as usize + 1;
        // A run recorded without the cell curves continues with NaN for the epochs before.
        let mut by_cell = CellCurves::default();
        for e in 0..kept {
            by_cell.push(if e < self.by_cell.len() { self.by_cell.at(e) } else { [f64::NAN; 4] });
        }
        Ok(Resume {
            model: self.checkpoint(epoch, device)?,
            optimizer,
            train_losses: self.train_losses[..kept].to_vec(),
            test_losses: self.test_losses[..kept].to_vec(),
            by_cell,
        })
    }
}

/// The run of `config` in `dir`: loaded when it is finished, continued from its last
/// checkpoint when it is not, trained from the start when `dir` is absent or empty.
/// A folder that holds a run of another config is an error, never loaded.
pub fn train_or_load(dir: impl AsRef<Path>, config: &RunConfig, device: Device) -> Result<Run> {
    let dir = dir.as_ref();
    config.validate()?;
    let (mut writer, split, resume) = if check_empty_or_absent(dir).is_ok() {
        crate::memory::check_training_fits(&[config], device)?;
        let split = config.split()?;
        let init = HookedTransformer::new(&config.model, device)?;
        (RunWriter::create(dir, config, &split, &init)?, split, Resume::start(init))
    } else {
        let run = Run::load(dir)?;
        if run.config != *config {
            return Err(Error::config(format!(
                "{} holds a run of another config ({}); give this config its own folder",
                dir.display(),
                config_difference(&run.config, config)
            )));
        }
        if run.is_finished() {
            return Ok(run);
        }
        let epoch = run.resume_points()?.last().copied();
        let resume = run.resume_from(epoch, device)?;
        (RunWriter::reopen(&run, epoch)?, run.split, resume)
    };
    train_stacked(&[(config, &split, &resume)], &mut [&mut writer])?;
    Run::load(dir)
}

/// The first field in which two configs differ: `train.num_epochs: 300 there, 25000 here`.
fn config_difference(there: &RunConfig, here: &RunConfig) -> String {
    use serde_json::Value;
    fn first_difference(path: &str, there: &Value, here: &Value) -> Option<String> {
        match (there, here) {
            (Value::Object(there), Value::Object(here)) => there.iter().find_map(|(key, value)| {
                let path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                first_difference(&path, value, here.get(key).unwrap_or(&Value::Null))
            }),
            _ if there != here => Some(format!("{path}: {there} there, {here} here")),
            _ => None,
        }
    }
    match (serde_json::to_value(there), serde_json::to_value(here)) {
        (Ok(there), Ok(here)) => first_difference("", &there, &here),
        _ => None,
    }
    .unwrap_or_else(|| "they differ".into())
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
    /// the split and the initial weights, all of them or none.
    pub fn create(dir: impl AsRef<Path>, config: &RunConfig, split: &Split, init: &HookedTransformer) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        create_staged(&dir, |staging| write_start(staging, config, split, init))?;
        Ok(RunWriter { dir })
    }

    /// Reopens `run` to continue it after `epoch` (before its first epoch when `None`):
    /// removes what a killed write left, and every file of a later epoch.
    pub fn reopen(run: &Run, epoch: Option<i64>) -> Result<Self> {
        let dir = run.dir.clone();
        for folder in [dir.clone(), dir.join(CHECKPOINTS), dir.join(OPTIMIZER)] {
            for entry in fs::read_dir(&folder).into_iter().flatten() {
                let path = entry.map_err(|e| Error::io(&folder, e))?.path();
                if path.extension().is_some_and(|x| x == "partial") {
                    fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                }
            }
        }
        let later = |e: &i64| epoch.is_none_or(|last| *e > last);
        for folder in [CHECKPOINTS, OPTIMIZER] {
            for e in list_epochs(&dir.join(folder))?.iter().filter(|e| later(e)) {
                let path = epoch_path(&dir, folder, *e);
                fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            }
        }
        let kept = epoch.map_or(0, |e| e as usize + 1);
        let writer = RunWriter { dir };
        let by_cell = run.by_cell.first(kept);
        writer.write_atomic(LOSSES, |path| {
            write_losses(path, &run.train_losses[..kept], &run.test_losses[..kept], &by_cell)
        })?;
        Ok(writer)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn write_atomic(&self, name: &str, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        write_atomic(&self.dir, name, write)
    }
}

/// Starts a grid of runs in `dir`, which must not exist or be empty: a run folder
/// each (`run-000`, `run-001`, …) and `index.json` listing them with the values
/// they vary, all of them or none.
pub fn create_grid(dir: &Path, runs: &[(&RunConfig, &Split, &HookedTransformer)]) -> Result<Vec<RunWriter>> {
    let names: Vec<String> = (0..runs.len()).map(|i| format!("run-{i:03}")).collect();
    create_staged(dir, |staging| {
        let mut index = Vec::new();
        for (name, (config, split, init)) in names.iter().zip(runs) {
            write_start(&staging.join(name), config, split, init)?;
            index.push(GridRun::new(name, config));
        }
        write_json(&staging.join(INDEX), &index)
    })?;
    Ok(names.iter().map(|name| RunWriter { dir: dir.join(name) }).collect())
}

/// The run folders of the grid in `dir`, from its `index.json`; `None` when `dir`
/// has none (a single run's folder, say).
pub fn grid_folders(dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    let path = dir.join(INDEX);
    if !path.is_file() {
        return Ok(None);
    }
    let listed: Vec<GridRun> = read_json(&path)?;
    let plain = |name: &str| !name.is_empty() && name != ".." && name != "." && !name.contains(['/', '\\']);
    if let Some(bad) = listed.iter().find(|run| !plain(&run.folder)) {
        return Err(Error::format(format!("{}: `{}` is not a folder name", path.display(), bad.folder)));
    }
    if listed.is_empty() {
        return Err(Error::format(format!("{}: lists no runs", path.display())));
    }
    Ok(Some(listed.iter().map(|run| dir.join(&run.folder)).collect()))
}

/// One run of a grid, as `index.json` lists it: its folder and the values a grid varies.
#[derive(serde::Serialize, serde::Deserialize)]
struct GridRun {
    folder: String,
    seed: i64,
    m: u32,
    n: u32,
    frac_train: f64,
    data_seed: i64,
    lr: f64,
    weight_decay: f64,
}

impl GridRun {
    fn new(folder: &str, c: &RunConfig) -> Self {
        GridRun {
            folder: folder.to_string(),
            seed: c.model.seed,
            m: c.task.g.power,
            n: c.task.h.power,
            frac_train: c.train.frac_train,
            data_seed: c.train.data_seed,
            lr: c.train.lr,
            weight_decay: c.train.weight_decay,
        }
    }
}

/// Makes `dir` (absent or empty) appear whole: `fill` writes it as a staging folder
/// beside it, `.{name}.partial`, which is then renamed into place.
fn create_staged(dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    check_empty_or_absent(dir)?;
    let name = dir.file_name().ok_or_else(|| Error::config(format!("{} is not a folder name", dir.display())))?;
    let staging = dir.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    }
    fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    fill(&staging)?;
    if dir.exists() {
        fs::remove_dir(dir).map_err(|e| Error::io(dir, e))?;
    }
    fs::rename(&staging, dir).map_err(|e| Error::io(dir, e))
}

/// A run's first files: config, split, initial weights.
fn write_start(dir: &Path, config: &RunConfig, split: &Split, init: &HookedTransformer) -> Result<()> {
    fs::create_dir_all(dir.join(CHECKPOINTS)).map_err(|e| Error::io(dir, e))?;
    write_json(&dir.join(CONFIG), config)?;
    write_json(&dir.join(SPLIT), split)?;
    write_state_dict(&dir.join(INIT), init)
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
    fn checkpoint(&mut self, c: &Checkpoint) -> Result<()> {
        let optimizer = self.dir.join(OPTIMIZER);
        fs::create_dir_all(&optimizer).map_err(|e| Error::io(&optimizer, e))?;
        let name = |folder| epoch_path(Path::new(""), folder, c.epoch).to_string_lossy().into_owned();
        self.write_atomic(&name(CHECKPOINTS), |path| write_state_dict(path, c.model))?;
        self.write_atomic(LOSSES, |path| write_losses(path, c.train_losses, c.test_losses, c.by_cell))?;
        self.write_atomic(&name(OPTIMIZER), |path| write_optimizer_state(path, c.optimizer))
    }

    fn all_checkpointed(&mut self, epoch: i64) -> Result<()> {
        for older in list_epochs(&self.dir.join(OPTIMIZER))?.into_iter().filter(|&e| e < epoch) {
            let path = epoch_path(&self.dir, OPTIMIZER, older);
            fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
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

/// The checkpoint of `epoch` in the run folder `dir`.
pub fn checkpoint_file(dir: &Path, epoch: i64) -> PathBuf {
    epoch_path(dir, CHECKPOINTS, epoch)
}

/// `dir/folder/epoch_000099.safetensors`.
fn epoch_path(dir: &Path, folder: &str, epoch: i64) -> PathBuf {
    dir.join(folder).join(format!("epoch_{epoch:06}.safetensors"))
}

/// The epochs of the `epoch_NNNNNN.safetensors` files in `dir`, ascending (none if
/// it is absent).
fn list_epochs(dir: &Path) -> Result<Vec<i64>> {
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
            epochs.push(epoch.parse().map_err(|_| Error::format(format!("{}: bad file name {name}", dir.display())))?);
        }
    }
    epochs.sort_unstable();
    Ok(epochs)
}

fn write_state_dict(path: &Path, model: &HookedTransformer) -> Result<()> {
    let state = model.state_dict();
    Tensor::write_safetensors(&state, path).map_err(Error::from)
}

/// AdamW's state, named per weight as the golden script saves PyTorch's:
/// `exp_avg.{weight}`, `exp_avg_sq.{weight}`, and `step` (one int64).
fn write_optimizer_state(path: &Path, state: &AdamWState) -> Result<()> {
    let mut tensors = vec![("step".to_string(), Tensor::from_slice(&[state.step]))];
    for (name, avg, avg_sq) in &state.moments {
        tensors.push((format!("exp_avg.{name}"), avg.shallow_clone()));
        tensors.push((format!("exp_avg_sq.{name}"), avg_sq.shallow_clone()));
    }
    Tensor::write_safetensors(&tensors, path).map_err(Error::from)
}

/// Reads [`write_optimizer_state`]'s file. Which weights and shapes it must hold is
/// checked where a trainer takes it over.
fn read_optimizer_state(path: &Path) -> Result<AdamWState> {
    let tensors =
        Tensor::read_safetensors(path).map_err(|e| Error::format(format!("not a readable safetensors file ({e})")))?;
    let find = |name: &str| {
        (tensors.iter().find(|(n, _)| n == name))
            .map(|(_, t)| t.shallow_clone())
            .ok_or_else(|| Error::format(format!("no tensor `{name}`")))
    };
    let step = find("step")?;
    if step.kind() != Kind::Int64 || step.numel() != 1 {
        return Err(Error::format("`step` must be one int64"));
    }
    let mut moments = Vec::new();
    for (name, avg) in &tensors {
        if let Some(weight) = name.strip_prefix("exp_avg.") {
            moments.push((weight.to_string(), avg.shallow_clone(), find(&format!("exp_avg_sq.{weight}"))?));
        } else if name != "step" && !name.starts_with("exp_avg_sq.") {
            return Err(Error::format(format!("unexpected tensor `{name}`")));
        }
    }
    Ok(AdamWState { step: step.int64_value(&[0]), moments })
}

pub(crate) fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::format(e.to_string()))?;
    fs::write(path, text + "\n").map_err(|e| Error::io(path, e))
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::format(format!("{}: {e}", path.display())))
}

/// losses.csv's header: the seed's columns, then [`CellCurves`]'s.
const LOSS_COLUMNS: [&str; 7] =
    ["epoch", "train_loss", "test_loss", "test_loss_seen", "test_loss_unseen", "test_acc_seen", "test_acc_unseen"];

fn write_losses(path: &Path, train: &[f64], test: &[f64], by_cell: &CellCurves) -> Result<()> {
    let columns = if by_cell.is_empty() { 3 } else { LOSS_COLUMNS.len() };
    let mut text = LOSS_COLUMNS[..columns].join(",") + "\n";
    for (epoch, (tr, te)) in train.iter().zip(test).enumerate() {
        text.push_str(&format!("{epoch},{tr},{te}"));
        if columns > 3 {
            for v in by_cell.at(epoch) {
                text.push_str(&format!(",{v}"));
            }
        }
        text.push('\n');
    }
    fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// Reads losses.csv: the seed's three columns, or those and [`CellCurves`]'s four.
fn read_losses(path: &Path) -> Result<(Vec<f64>, Vec<f64>, CellCurves)> {
    let (mut train, mut test, mut by_cell) = (Vec::new(), Vec::new(), CellCurves::default());
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((train, test, by_cell)),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let columns = (3..=LOSS_COLUMNS.len()).rev().find(|&n| header == LOSS_COLUMNS[..n].join(","));
    let columns = match columns {
        Some(n @ (3 | 7)) => n,
        _ => {
            return Err(Error::format(format!(
                "{}: header must be {} or {}",
                path.display(),
                LOSS_COLUMNS[..3].join(","),
                LOSS_COLUMNS.join(",")
            )))
        }
    };
    for (i, line) in lines.enumerate() {
        let bad = || {
            Error::format(format!(
                "{}: line {} is not {columns} numbers starting with its epoch",
                path.display(),
                i + 2
            ))
        };
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != columns || fields[0].parse::<usize>().ok() != Some(i) {
            return Err(bad());
        }
        let values = fields[1..].iter().map(|f| f.parse::<f64>().map_err(|_| bad())).collect::<Result<Vec<f64>>>()?;
        train.push(values[0]);
        test.push(values[1]);
        if columns == 7 {
            by_cell.push([values[2], values[3], values[4], values[5]]);
        }
    }
    Ok((train, test, by_cell))
}
