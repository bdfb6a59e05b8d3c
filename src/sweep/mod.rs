//! Sweeps: many runs planned once, trained in shards on as many machines as there are
//! (a Slurm job array, a Kubernetes indexed Job, a loop), then collected into one
//! report. A sweep is a folder, and this module alone names its files:
//!
//! ```text
//! sweep.json          the plan (plan::Plan): its runs in order, each an id and a config
//! runs/<id>/          each run's folder (crate::run)
//! failed/<id>.json    why a run failed; it is not tried again while this is there
//! locks/<id>          held (flock) by the process training that run
//! results.json        per run: how it ended and what it learned (collect::Results)
//! report.html         heatmaps over the axes, and every run
//! slurm/              the sbatch scripts (slurm) and their logs
//! ```
//!
//! Every file is written whole (to a `.partial` sibling, then renamed), and a run is
//! trained only under its lock, so shards that overlap, or run twice at once on one
//! folder, skip each other's runs instead of writing them together.

pub mod collect;
pub mod plan;
mod report;
pub mod shard;
pub mod slurm;

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::run::{check_empty_or_absent, read_json, write_atomic, write_json, Run};
pub use plan::{Plan, PlannedRun, Shard};

const PLAN: &str = "sweep.json";
const RUNS: &str = "runs";
const FAILED: &str = "failed";
const LOCKS: &str = "locks";
const RESULTS: &str = "results.json";
const REPORT: &str = "report.html";
const SLURM: &str = "slurm";

/// A sweep folder and its plan.
pub struct Sweep {
    pub dir: PathBuf,
    pub plan: Plan,
}

/// Where one planned run stands.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RunState {
    NotStarted,
    /// Epochs trained (up to its last checkpoint) of the run's total.
    Unfinished {
        epochs: i64,
    },
    Finished,
    Failed {
        why: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Failure {
    id: String,
    why: String,
}

impl Sweep {
    /// Writes `plan` into `dir`, which must be absent or empty, or already hold this
    /// very plan (planning again is a no-op).
    pub fn create(dir: &Path, plan: Plan) -> Result<Sweep> {
        if dir.join(PLAN).is_file() {
            let there = Sweep::open(dir)?;
            if there.plan != plan {
                return Err(Error::config(format!(
                    "{} holds another sweep's plan; plan into a new folder",
                    dir.display()
                )));
            }
            return Ok(there);
        }
        check_empty_or_absent(dir)?;
        fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        write_atomic(dir, PLAN, |path| write_json(path, &plan))?;
        Ok(Sweep { dir: dir.to_path_buf(), plan })
    }

    /// Reads the sweep in `dir`, checking its plan.
    pub fn open(dir: &Path) -> Result<Sweep> {
        let path = dir.join(PLAN);
        if !path.is_file() {
            return Err(Error::config(format!(
                "{} is not a sweep folder (no {PLAN}: run `groklens sweep plan` first)",
                dir.display()
            )));
        }
        let plan: Plan = read_json(&path)?;
        plan.validate().map_err(|e| Error::format(format!("{}: {e}", path.display())))?;
        Ok(Sweep { dir: dir.to_path_buf(), plan })
    }

    /// The run folder of a planned run.
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.dir.join(RUNS).join(id)
    }

    pub fn results_path(&self) -> PathBuf {
        self.dir.join(RESULTS)
    }

    pub fn slurm_dir(&self) -> PathBuf {
        self.dir.join(SLURM)
    }

    /// Where run `run` stands, from its files, with its folder as read when it has
    /// one. A run folder that cannot be read, or holds another config, counts as failed.
    pub fn state(&self, run: &PlannedRun) -> Result<(RunState, Option<Run>)> {
        if let Some(why) = self.failure(&run.id)? {
            return Ok((RunState::Failed { why }, None));
        }
        let dir = self.run_dir(&run.id);
        if check_empty_or_absent(&dir).is_ok() {
            return Ok((RunState::NotStarted, None));
        }
        let loaded = match Run::load(&dir) {
            Ok(loaded) => loaded,
            Err(e @ Error::Io { .. }) => return Err(e),
            Err(e) => return Ok((RunState::Failed { why: format!("its folder cannot be read: {e}") }, None)),
        };
        if loaded.config != run.config {
            let why = format!("{} holds a run of another config", dir.display());
            return Ok((RunState::Failed { why }, None));
        }
        let state = match loaded.is_finished() {
            true => RunState::Finished,
            false => RunState::Unfinished { epochs: loaded.resume_points()?.last().map_or(0, |e| e + 1) },
        };
        Ok((state, Some(loaded)))
    }

    /// Why run `id` failed, if it did.
    fn failure(&self, id: &str) -> Result<Option<String>> {
        let path = self.dir.join(FAILED).join(format!("{id}.json"));
        if !path.is_file() {
            return Ok(None);
        }
        Ok(Some(read_json::<Failure>(&path)?.why))
    }

    /// Records that run `id` failed, and why.
    pub fn record_failure(&self, id: &str, why: &str) -> Result<()> {
        let folder = self.dir.join(FAILED);
        fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
        let failure = Failure { id: id.to_string(), why: why.to_string() };
        write_atomic(&folder, &format!("{id}.json"), |path| write_json(path, &failure))
    }

    /// The lock of run `id`, or `None` when another process holds it. Held until dropped
    /// (or the process ends, however it ends).
    pub fn try_lock(&self, id: &str) -> Result<Option<RunLock>> {
        let folder = self.dir.join(LOCKS);
        fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
        let path = folder.join(id);
        let file =
            File::options().create(true).truncate(false).write(true).open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: flock on a descriptor this function owns; no memory is shared.
        match unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } {
            0 => Ok(Some(RunLock { _file: file })),
            _ => match std::io::Error::last_os_error() {
                e if e.raw_os_error() == Some(libc::EWOULDBLOCK) => Ok(None),
                e => Err(Error::io(&path, e)),
            },
        }
    }

    /// Writes `name` (results.json, report.html) whole.
    fn write_atomic(&self, name: &str, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        write_atomic(&self.dir, name, write)
    }
}

/// A held lock on one run of a sweep.
pub struct RunLock {
    _file: File,
}
