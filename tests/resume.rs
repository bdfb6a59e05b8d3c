//! A run killed at any moment continues where it stopped: `groklens train --resume`
//! gives the same files, byte for byte, as a run that was never killed.
//!
//! The kills are SIGKILL at exact points, injected by strace on the n-th system call
//! of a kind (`rename`: before each file lands; `write`: in the middle of writing
//! one; `unlink`: while an old optimizer state goes), and at a few moments picked by
//! the clock (mid-epoch).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn groklens() -> Command {
    Command::new(env!("CARGO_BIN_EXE_groklens"))
}

/// A tiny seed-shaped run: 40 epochs, a checkpoint every 10, a grid of `seeds`.
fn train_args(out: &Path, seeds: &str) -> Vec<String> {
    let out = out.to_str().unwrap();
    ["train", "--out", out, "--p", "13", "--frac-train", "0.5", "--epochs", "40", "--checkpoint-every", "10"]
        .iter()
        .chain(&["--seed", seeds])
        .map(|s| s.to_string())
        .collect()
}

fn check(output: &Output, what: &str) {
    assert!(output.status.success(), "{what}: {}", String::from_utf8_lossy(&output.stderr));
}

/// Every file under `dir`, by path relative to it, with its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(folder) = stack.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Trains `seeds` into `out` under strace, killed at the `n`-th `syscall`; says
/// whether the kill came (a run that finished first was not killed).
fn train_killed_at(out: &Path, seeds: &str, syscall: &str, n: usize) -> bool {
    let output = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "-e", &format!("trace={syscall}")])
        .args(["-e", &format!("inject={syscall}:signal=KILL:when={n}")])
        .arg(env!("CARGO_BIN_EXE_groklens"))
        .args(train_args(out, seeds))
        .output()
        .expect("strace runs (setup.sh installs it)");
    // strace ends itself by the signal that ended the run.
    output.status.signal() == Some(9) || output.status.code() == Some(128 + 9)
}

/// Continues `dir` after a kill and checks that it ends as `reference` did.
fn resume_and_compare(dir: &Path, seeds: &str, reference: &[(PathBuf, Vec<u8>)], what: &str) {
    if dir.join("config.json").is_file() || dir.join("index.json").is_file() {
        check(&groklens().args(["train", "--resume", dir.to_str().unwrap()]).output().unwrap(), what);
    } else {
        // Killed before the run folder appeared: nothing to continue, so start it again.
        assert!(!dir.exists() || std::fs::read_dir(dir).unwrap().next().is_none(), "{what}: a half-made run folder");
        check(&groklens().args(train_args(dir, seeds)).output().unwrap(), what);
    }
    let got = files(dir);
    let names = |f: &[(PathBuf, Vec<u8>)]| f.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got), names(reference), "{what}: other files");
    for ((path, bytes), (_, want)) in got.iter().zip(reference) {
        assert!(bytes == want, "{what}: {} differs from the uninterrupted run's", path.display());
    }
    let staging = dir.with_file_name(format!(".{}.partial", dir.file_name().unwrap().to_string_lossy()));
    assert!(!staging.exists(), "{what}: a staging folder was left behind");
}

#[test]
fn a_run_killed_anywhere_resumes_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let reference_dir = tmp.path().join("reference");
    check(&groklens().args(train_args(&reference_dir, "999")).output().unwrap(), "reference");
    let reference = files(&reference_dir);

    // 10 renames: the run folder, then per checkpoint its weights, losses and optimizer
    // state; 3 unlinks: the optimizer states that later ones replace; writes: every 25th.
    let mut points: Vec<(&str, usize)> = (1..=10).map(|n| ("rename", n)).collect();
    points.extend((1..=3).map(|n| ("unlink", n)));
    points.extend((1..=150).step_by(25).map(|n| ("write", n)));
    for (i, (syscall, n)) in points.into_iter().enumerate() {
        let dir = tmp.path().join(format!("killed-{i}"));
        let what = format!("killed at {syscall} #{n}");
        assert!(train_killed_at(&dir, "999", syscall, n), "{what}: the run ended before the kill");
        resume_and_compare(&dir, "999", &reference, &what);
    }

    // And by the clock, mid-epoch: a few moments after the run folder appeared.
    for (i, delay_ms) in [0u64, 20, 60, 120].into_iter().enumerate() {
        let dir = tmp.path().join(format!("clock-{i}"));
        let mut child = groklens().args(train_args(&dir, "999")).stderr(Stdio::null()).spawn().unwrap();
        while !dir.join("config.json").is_file() && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        resume_and_compare(&dir, "999", &reference, &format!("killed {delay_ms} ms after the folder appeared"));
    }
}

#[test]
fn a_grid_killed_between_its_runs_resumes_to_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let reference_dir = tmp.path().join("reference");
    check(&groklens().args(train_args(&reference_dir, "1,2")).output().unwrap(), "reference grid");
    let reference = files(&reference_dir);
    // Renames: the grid's folder, then per checkpoint three per run: a kill at #6 or
    // #7 leaves run-000 a checkpoint ahead of run-001.
    for n in [1, 3, 5, 6, 7, 10, 12, 16] {
        let dir = tmp.path().join(format!("killed-{n}"));
        assert!(train_killed_at(&dir, "1,2", "rename", n), "rename #{n}: the grid ended before the kill");
        resume_and_compare(&dir, "1,2", &reference, &format!("grid killed at rename #{n}"));
    }
}

#[test]
fn resume_says_what_is_wrong_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    check(&groklens().args(train_args(&run, "999")).output().unwrap(), "run");
    let before = files(&run);
    let output = groklens().args(["train", "--resume", run.to_str().unwrap()]).output().unwrap();
    check(&output, "resuming a finished run");
    assert!(String::from_utf8_lossy(&output.stderr).contains("finished"));
    assert!(files(&run) == before, "resuming a finished run changed it");

    let rejected = |args: &[&str], needle: &str| {
        let output = groklens().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: `{needle}` not in {stderr}");
    };
    let run_arg = run.to_str().unwrap();
    rejected(&["train", "--resume", run_arg, "--p", "7"], "cannot be used with");
    rejected(&["train", "--resume", tmp.path().to_str().unwrap()], "not a groklens run folder");

    // An unfinished run whose optimizer state was tampered with.
    let broken = tmp.path().join("broken");
    assert!(train_killed_at(&broken, "999", "rename", 8));
    let state = broken.join("optimizer/epoch_000019.safetensors");
    std::fs::write(&state, b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage").unwrap();
    rejected(&["train", "--resume", broken.to_str().unwrap()], "optimizer/epoch_000019.safetensors");

    // A grid index naming a folder outside the grid.
    let grid = tmp.path().join("grid");
    std::fs::create_dir(&grid).unwrap();
    std::fs::write(grid.join("index.json"), r#"[{"folder": "../run", "seed": 1, "m": 4, "n": 4, "frac_train": 0.5, "data_seed": 598, "lr": 0.001, "weight_decay": 1.0}]"#).unwrap();
    rejected(&["train", "--resume", grid.to_str().unwrap()], "is not a folder name");
}

/// The notebooks' call: trains an absent run, continues an unfinished one, loads a
/// finished one, and refuses a folder that holds another config.
#[test]
fn train_or_load_continues_and_never_loads_another_config() {
    use groklens::{train_or_load, RunConfig, Task};
    let tmp = tempfile::tempdir().unwrap();
    let mut config = RunConfig::for_task(Task::power_sum(13, 4, 4));
    (config.train.frac_train, config.train.num_epochs, config.train.checkpoint_every) = (0.5, 40, 10);
    let reference = tmp.path().join(config.id());
    let run = train_or_load(&reference, &config, tch::Device::Cpu).unwrap();
    assert!(run.is_finished());
    let bytes = files(&reference);

    let killed = tmp.path().join("killed");
    assert!(train_killed_at(&killed, "999", "rename", 6));
    let run = train_or_load(&killed, &config, tch::Device::Cpu).unwrap();
    assert!(run.is_finished());
    assert!(files(&killed) == bytes, "continued by train_or_load, the run differs");

    let loaded = train_or_load(&killed, &config, tch::Device::Cpu).unwrap();
    assert_eq!(loaded.train_losses, run.train_losses);

    let mut other = config.clone();
    other.task = Task::power_sum(13, 2, 2);
    assert_ne!(other.id(), config.id());
    let error = train_or_load(&killed, &other, tch::Device::Cpu).err().expect("another config is refused");
    assert!(error.to_string().contains("holds a run of another config"), "{error}");
    assert!(error.to_string().contains("task.g.power: 4 there, 2 here"), "{error}");
}
