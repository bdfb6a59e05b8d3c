//! A sweep on a Slurm cluster: a job array whose task K trains shard K of N
//! (`groklens sweep run` reads its shard from `SLURM_ARRAY_TASK_ID`), requeueable,
//! since a requeued or re-submitted shard continues its runs from their last
//! checkpoints; and a collect job that starts once every task has ended well
//! (`--dependency=afterok`).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Sweep;
use crate::error::{Error, Result};

/// How the array is laid out.
#[derive(Clone, Debug)]
pub struct ArrayLayout {
    /// Array tasks (shards).
    pub shards: usize,
    /// At most this many tasks at once (`--array=0-N%M`).
    pub parallelism: Option<usize>,
    /// Runs trained together in a task.
    pub stack: usize,
    /// `cpu`, `cuda`, …, as `groklens sweep run --device` takes it.
    pub device: String,
    /// Options for both jobs, one `#SBATCH` line each (`--partition=gpu`, `--time=2:00:00`).
    pub sbatch: Vec<String>,
}

/// The two scripts written into the sweep's `slurm/` folder.
pub struct Scripts {
    pub train: PathBuf,
    pub collect: PathBuf,
}

/// Writes `slurm/train.sbatch` and `slurm/collect.sbatch` for the sweep, to run
/// `groklens` as the binary at `exe` (on a path every node sees).
pub fn write_scripts(sweep: &Sweep, exe: &Path, layout: &ArrayLayout) -> Result<Scripts> {
    if layout.shards == 0 || layout.parallelism == Some(0) || layout.stack == 0 {
        return Err(Error::config("--shards, --array-parallelism and --stack must be at least 1"));
    }
    if let Some(bad) = layout.sbatch.iter().find(|o| !o.starts_with('-') || o.contains(['\n', '\r'])) {
        return Err(Error::config(format!("`{bad}` is not an sbatch option (they start with -, one per argument)")));
    }
    let dir = absolute(&sweep.dir)?;
    let exe = absolute(exe)?;
    for path in [&dir, &exe] {
        // #SBATCH lines are not parsed by a shell: a path there cannot be quoted.
        if path.to_string_lossy().contains(|c: char| c.is_whitespace() || c == '%' || c == '\'') {
            return Err(Error::config(format!(
                "{}: Slurm cannot take a path with spaces, quotes or % in a job script",
                path.display()
            )));
        }
    }
    let folder = sweep.slurm_dir();
    let logs = folder.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| Error::io(&logs, e))?;
    let (d, x, logs) = (dir.display(), exe.display(), absolute(&logs)?.display().to_string());
    let options: String = layout.sbatch.iter().map(|o| format!("#SBATCH {o}\n")).collect();
    let array = match layout.parallelism {
        Some(m) => format!("0-{}%{m}", layout.shards - 1),
        None => format!("0-{}", layout.shards - 1),
    };
    let train = format!(
        "#!/bin/bash\n\
         # Shard SLURM_ARRAY_TASK_ID of {shards} of the groklens sweep in {d}; requeued or\n\
         # submitted again, a shard skips finished runs and continues the others.\n\
         #SBATCH --job-name=groklens-sweep\n\
         #SBATCH --array={array}\n\
         #SBATCH --output={logs}/train-%A_%a.out\n\
         #SBATCH --open-mode=append\n\
         #SBATCH --requeue\n\
         {options}\
         exec {x} sweep run {d} --stack {stack} --device {device}\n",
        shards = layout.shards,
        stack = layout.stack,
        device = layout.device,
    );
    let collect = format!(
        "#!/bin/bash\n\
         # Collects the groklens sweep in {d} once every shard has ended well.\n\
         #SBATCH --job-name=groklens-collect\n\
         #SBATCH --output={logs}/collect-%j.out\n\
         {options}\
         exec {x} sweep collect {d}\n"
    );
    let scripts = Scripts { train: folder.join("train.sbatch"), collect: folder.join("collect.sbatch") };
    for (path, text) in [(&scripts.train, train), (&scripts.collect, collect)] {
        let name = path.file_name().expect("a file name").to_string_lossy().into_owned();
        crate::run::write_atomic(&folder, &name, |p| std::fs::write(p, text).map_err(|e| Error::io(p, e)))?;
    }
    Ok(scripts)
}

/// Submits the array, then the collect job after it; returns both job ids.
pub fn submit(scripts: &Scripts) -> Result<(String, String)> {
    let train = sbatch(&[], &scripts.train)?;
    let collect = sbatch(&[format!("--dependency=afterok:{train}")], &scripts.collect)?;
    Ok((train, collect))
}

fn sbatch(options: &[String], script: &Path) -> Result<String> {
    let output = Command::new("sbatch").arg("--parsable").args(options).arg(script).output().map_err(|e| {
        Error::config(format!("cannot run sbatch ({e}): is Slurm installed here? --no-submit writes the scripts only"))
    })?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr);
        return Err(Error::config(format!("sbatch {} failed: {}", script.display(), said.trim())));
    }
    // `--parsable` prints `id` or `id;cluster`.
    let text = String::from_utf8_lossy(&output.stdout);
    let id = text.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::config(format!("sbatch printed `{}`, not a job id", text.trim())));
    }
    Ok(id)
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| Error::io(path, e))
}
