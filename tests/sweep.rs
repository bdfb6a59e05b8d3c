//! `groklens sweep`: plans, shards that overlap or die midway, failed runs, the Slurm
//! scripts and the collected report, through the command line.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn groklens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_groklens")).args(args).output().expect("the groklens binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn plan(dir: &Path, toml: &str) -> String {
    let file = dir.join("sweep.toml");
    std::fs::write(&file, toml).unwrap();
    let out = dir.join("sweep");
    let done = groklens(&["sweep", "plan", file.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(done.status.success(), "{}", stderr(&done));
    out.to_str().unwrap().to_string()
}

fn results(sweep: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(Path::new(sweep).join("results.json")).unwrap()).unwrap()
}

#[test]
fn bad_axes_and_bad_plans_get_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("bad.toml");
    let out = tmp.path().join("never");
    for (text, says) in [("seed = \"9..1\"", "axis `seed`"), ("colour = 1", "unknown axis"), ("lr = 0", "lr must")] {
        std::fs::write(&file, text).unwrap();
        let done = groklens(&["sweep", "plan", file.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        let said = stderr(&done);
        assert_eq!(done.status.code(), Some(2), "{said}");
        assert!(said.contains(says) && said.lines().count() == 1, "{text}: {said}");
        assert!(!out.exists(), "a bad plan writes nothing");
    }
    let sweep = plan(tmp.path(), "p = 7\nseed = \"1..2\"\nepochs = 5");
    // Planning again with another plan is refused; with the same one it is a no-op.
    std::fs::write(&file, "p = 7\nseed = \"1..3\"\nepochs = 5").unwrap();
    let again = groklens(&["sweep", "plan", file.to_str().unwrap(), "--out", &sweep]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("another sweep's plan"));
    // A plan edited by hand (an id that is not its config's) or corrupt.
    let path = Path::new(&sweep).join("sweep.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("\"seed\": 1", "\"seed\": 5", 1)).unwrap();
    let edited = groklens(&["sweep", "run", &sweep, "--shard", "0/1"]);
    assert_eq!(edited.status.code(), Some(2));
    assert!(stderr(&edited).contains("the plan was edited"), "{}", stderr(&edited));
    std::fs::write(&path, "{\"runs\": 3").unwrap();
    let corrupt = groklens(&["sweep", "collect", &sweep]);
    assert_eq!(corrupt.status.code(), Some(2));
    assert_eq!(stderr(&corrupt).lines().count(), 1);
    for shard in ["2/2", "x", "1/0"] {
        let bad = groklens(&["sweep", "run", &sweep, "--shard", shard]);
        assert_eq!(bad.status.code(), Some(2), "--shard {shard}");
    }
}

#[test]
fn overlapping_shards_train_each_run_once_and_a_diverging_run_is_recorded_failed() {
    let tmp = tempfile::tempdir().unwrap();
    // lr = 1000 makes the loss overflow within an epoch or two.
    let sweep = plan(
        tmp.path(),
        "p = 11\nexponents = [[1, 1]]\nseed = \"1..2\"\nlr = [1e-3, 1000]\nepochs = 60\ncheckpoint_every = 10",
    );
    let bin = env!("CARGO_BIN_EXE_groklens");
    // Shard 0 twice at once, and shard 1: the second shard 0 must leave the first's runs alone.
    let spawn = |shard: &str| Command::new(bin).args(["sweep", "run", &sweep, "--shard", shard]).output();
    let (a, b, c) = std::thread::scope(|s| {
        let a = s.spawn(|| spawn("0/2"));
        let b = s.spawn(|| spawn("0/2"));
        let c = s.spawn(|| spawn("1/2"));
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap(), c.join().unwrap().unwrap())
    });
    for out in [&a, &b, &c] {
        assert!(out.status.success(), "{}", stderr(out));
    }
    let collected = groklens(&["sweep", "collect", &sweep]);
    assert!(collected.status.success(), "{}", stderr(&collected));
    let r = results(&sweep);
    let runs = r["runs"].as_array().unwrap();
    let states: Vec<&str> = runs.iter().map(|x| x["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["finished", "finished", "failed", "failed"]);
    assert!(runs[2]["why"].as_str().unwrap().contains("stopped being finite"));
    for run in &runs[..2] {
        let losses = std::fs::read_to_string(
            Path::new(&sweep).join("runs").join(run["id"].as_str().unwrap()).join("losses.csv"),
        )
        .unwrap();
        assert_eq!(losses.lines().count(), 61, "a header and one line per epoch, written once");
        let learned = &run["learned"];
        assert!(learned["sine_share_init"].as_f64().unwrap() > 0.2, "a random embedding has sines");
        assert!(learned["phase"].is_string());
    }
    // Done is done: a shard run again trains nothing, and says why.
    let again = groklens(&["sweep", "run", &sweep, "--shard", "0/1"]);
    let said = stderr(&again);
    assert!(said.contains("0 trained now, 2 finished before, 2 failed"), "{said}");
    let report = std::fs::read_to_string(Path::new(&sweep).join("report.html")).unwrap();
    assert!(report.contains("first epoch with test accuracy ≥ 0.99") && report.contains("stopped being finite"));
    assert!(!report.contains("<script src="), "the report is offline");
}

#[test]
fn a_killed_shard_continues_from_its_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = plan(tmp.path(), "p = 11\nexponents = [[1, 1]]\nepochs = 4000\ncheckpoint_every = 100");
    let id = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(Path::new(&sweep).join("sweep.json")).unwrap(),
    )
    .unwrap()["runs"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let run = Path::new(&sweep).join("runs").join(&id);
    let mut child = Command::new(env!("CARGO_BIN_EXE_groklens"))
        .args(["sweep", "run", &sweep])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    // A checkpoint the run can continue from, as the run itself decides it (a whole
    // optimizer state, not the `.partial` file written before its rename).
    let resumable = || groklens::Run::load(&run).and_then(|r| r.resume_points()).is_ok_and(|p| !p.is_empty());
    while !resumable() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint in two minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let partial = std::fs::read_to_string(run.join("losses.csv")).unwrap();
    assert!(partial.lines().count() < 4001, "killed before the end");
    let resumed = groklens(&["sweep", "run", &sweep]);
    let said = stderr(&resumed);
    assert!(resumed.status.success(), "{said}");
    let from: i64 = said.split("from epoch ").nth(1).unwrap().split(':').next().unwrap().parse().unwrap();
    assert!(from > 0, "continued from a checkpoint, not from the start: {said}");
    let losses = std::fs::read_to_string(run.join("losses.csv")).unwrap();
    assert_eq!(losses.lines().count(), 4001);
}

#[test]
fn slurm_scripts_hold_the_array_the_shards_and_the_options() {
    let tmp = tempfile::tempdir().unwrap();
    let sweep = plan(tmp.path(), "p = 7\nseed = \"1..5\"\nepochs = 5");
    let done = groklens(&[
        "sweep",
        "slurm",
        &sweep,
        "--shards",
        "3",
        "--array-parallelism",
        "2",
        "--no-submit",
        "--",
        "--time=1:00:00",
    ]);
    assert!(done.status.success(), "{}", stderr(&done));
    assert!(stderr(&done).contains("--dependency=afterok:$jid"));
    let train = std::fs::read_to_string(Path::new(&sweep).join("slurm/train.sbatch")).unwrap();
    for line in ["#SBATCH --array=0-2%2", "#SBATCH --requeue", "#SBATCH --time=1:00:00", " sweep run "] {
        assert!(train.contains(line), "{line} in\n{train}");
    }
    let collect = std::fs::read_to_string(Path::new(&sweep).join("slurm/collect.sbatch")).unwrap();
    assert!(collect.contains(" sweep collect ") && collect.contains("#SBATCH --time=1:00:00"));
    let bad = groklens(&["sweep", "slurm", &sweep, "--no-submit", "--", "partition=gpu"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("not an sbatch option"));
}
