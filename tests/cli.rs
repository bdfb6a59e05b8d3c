//! The command line: a tiny run end to end, and every kind of bad input answered
//! with one line, exit status 2, and nothing written.

use std::path::Path;
use std::process::{Command, Output};

use groklens::{HookedTransformer, ModelConfig, Run, Task};
use tch::{Device, Tensor};

fn groklens(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_groklens")).args(args).output().expect("the groklens binary runs")
}

fn tiny_args(out: &Path) -> Vec<String> {
    [
        "train",
        "--out",
        out.to_str().unwrap(),
        "--p",
        "7",
        "--m",
        "2",
        "--n",
        "3",
        "--frac-train",
        "0.5",
        "--epochs",
        "20",
        "--checkpoint-every",
        "5",
    ]
    .map(String::from)
    .to_vec()
}

/// The tiny run's arguments, with `extra` flags replacing those of the same name.
fn run_with(out: &Path, extra: &[&str]) -> Output {
    let base = tiny_args(out);
    let mut args = vec![base[0].clone()];
    for pair in base[1..].chunks(2) {
        if !extra.contains(&pair[0].as_str()) {
            args.extend_from_slice(pair);
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    groklens(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn trains_a_tiny_run_into_a_loadable_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let output = run_with(&out, &[]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let run = Run::load(&out).unwrap();
    assert_eq!(run.config.task, Task::power_sum(7, 2, 3));
    assert_eq!(run.train_losses.len(), 20);
    assert_eq!(run.checkpoint_epochs, vec![4, 9, 14, 19]);
    assert!(run.train_losses[19] < run.train_losses[0]);
    let names: Vec<String> = Tensor::read_safetensors(out.join("checkpoints/epoch_000019.safetensors"))
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for key in
        ["embed.W_E", "pos_embed.W_pos", "blocks.0.attn.W_Q", "blocks.0.attn.mask", "blocks.0.mlp.W_in", "unembed.W_U"]
    {
        assert!(names.iter().any(|n| n == key), "{key} missing from {names:?}");
    }
    assert!(!std::fs::read_dir(&out).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".partial")));
}

fn assert_rejected(output: &Output, needle: &str, out: &Path) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line expected, got: {stderr}");
    assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out.exists() || std::fs::read_dir(out).unwrap().next().is_none(), "{} was written", out.display());
}

#[test]
fn rejects_impossible_configs_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    for (extra, needle) in [
        (&["--p", "1"][..], "p must be at least 2"),
        (&["--m", "-1"], "exponent m"),
        (&["--n", "-3"], "exponent n"),
        (&["--frac-train", "0"], "frac_train"),
        (&["--frac-train", "1.5"], "frac_train"),
        (&["--epochs", "0"], "num_epochs"),
        (&["--checkpoint-every", "0"], "checkpoint_every"),
        (&["--lr", "-1"], "lr"),
        (&["--device", "tpu"], "unknown device"),
        (&["--p", "x"], "invalid value"),
        (&["--bogus"], "unexpected argument"),
    ] {
        assert_rejected(&run_with(&out, extra), needle, &out);
    }
}

#[test]
fn rejects_cuda_where_there_is_none() {
    if tch::Cuda::is_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    assert_rejected(&run_with(&out, &["--device", "cuda"]), "no CUDA device", &out);
}

#[test]
fn rejects_a_non_empty_out_folder() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("keep.txt"), "mine").unwrap();
    let output = run_with(tmp.path(), &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not empty"));
    assert_eq!(std::fs::read_to_string(tmp.path().join("keep.txt")).unwrap(), "mine");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
}

#[test]
fn rejects_bad_init_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let cfg = ModelConfig::for_task(&Task::power_sum(7, 2, 3));
    let state = HookedTransformer::new(&cfg, Device::Cpu).unwrap().state_dict();

    let missing = tmp.path().join("missing.safetensors");
    let kept: Vec<_> = state.iter().filter(|(n, _)| n != "blocks.0.mlp.W_in").collect();
    Tensor::write_safetensors(&kept.iter().map(|(n, t)| (n.as_str(), t)).collect::<Vec<_>>(), &missing).unwrap();
    assert_rejected(
        &run_with(&out, &["--init-from", missing.to_str().unwrap()]),
        "missing tensor `blocks.0.mlp.W_in`",
        &out,
    );

    let shaped = tmp.path().join("shaped.safetensors");
    let wrong: Vec<(String, Tensor)> = state
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                if n == "unembed.W_U" {
                    Tensor::zeros([3, 3], (tch::Kind::Float, Device::Cpu))
                } else {
                    t.shallow_clone()
                },
            )
        })
        .collect();
    Tensor::write_safetensors(&wrong, &shaped).unwrap();
    assert_rejected(
        &run_with(&out, &["--init-from", shaped.to_str().unwrap()]),
        "`unembed.W_U` has shape [3, 3]",
        &out,
    );

    let garbage = tmp.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a safetensors file").unwrap();
    assert_rejected(
        &run_with(&out, &["--init-from", garbage.to_str().unwrap()]),
        "not a readable safetensors file",
        &out,
    );

    let absent = tmp.path().join("absent.safetensors");
    assert_rejected(&run_with(&out, &["--init-from", absent.to_str().unwrap()]), "no such file", &out);
}

#[test]
fn init_from_gives_the_same_start_as_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = ModelConfig { seed: 5, ..ModelConfig::for_task(&Task::power_sum(7, 2, 3)) };
    let init = tmp.path().join("init.safetensors");
    Tensor::write_safetensors(&HookedTransformer::new(&cfg, Device::Cpu).unwrap().state_dict(), &init).unwrap();
    let out = tmp.path().join("run");
    let output = run_with(&out, &["--init-from", init.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let saved = Tensor::read_safetensors(out.join("init.safetensors")).unwrap();
    let given = Tensor::read_safetensors(&init).unwrap();
    for (name, t) in &given {
        let (_, s) = saved.iter().find(|(n, _)| n == name).unwrap();
        assert!(t.equal(s), "{name} differs");
    }
}

#[test]
fn analyzes_a_run_into_json_and_an_offline_report() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    assert!(run_with(&run, &["--p", "11"]).status.success());
    let out = tmp.path().join("analysis");
    let output = groklens(&["analyze", run.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let a: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("analysis.json")).unwrap()).unwrap();
    for view in ["standard", "task"] {
        assert_eq!(a["final"]["logit_cos_sim"][view].as_array().unwrap().len(), 5, "{view}");
        assert!(a["final"]["residual_fraction"][view].is_f64(), "{view}");
        assert!(a["key_frequencies"][view].is_array(), "{view}");
    }
    for key in ["sin_energy", "cos_energy", "const_energy"] {
        assert!(a["final"]["embedding_fourier"][key].is_f64(), "{key}");
    }
    assert!(a["final"]["class_collapse"].is_f64());
    assert!(a["key_frequencies"]["rule"].is_string());
    for key in ["memorization_end", "circuit_formation_end", "cleanup_end"] {
        assert!(a["phases"].get(key).is_some(), "{key}");
    }
    assert!(a["phases"]["rule"].is_string());
    let series = &a["over_training"];
    assert_eq!(series["epochs"].as_array().unwrap().len(), 4);
    for key in ["train_loss", "test_loss", "excluded_loss", "restricted_loss", "gini_embedding", "weight_norm"] {
        assert_eq!(series[key].as_array().unwrap().len(), 4, "{key}");
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("plotly-graph-div") || html.contains("Plotly.newPlot"));
    assert!(!html.contains("<script src=\"http"), "the report fetches a script from the network");
}

#[test]
fn analyze_rejects_bad_input_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    assert!(run_with(&run, &["--p", "11"]).status.success());
    let out = tmp.path().join("analysis");
    let (run, out_arg) = (run.to_str().unwrap(), out.to_str().unwrap());
    let missing = tmp.path().join("nothing.pth");
    for (args, needle) in [
        (vec!["analyze", missing.to_str().unwrap(), "--out", out_arg], "no such file"),
        (vec!["analyze", run, "--out", out_arg, "--key-freqs", "0,3"], "not a frequency"),
        (vec!["analyze", run, "--out", out_arg, "--key-freqs", "9"], "not a frequency"),
        (vec!["analyze", run, "--out", out_arg, "--phases", "10,5,20"], "phase boundaries must ascend"),
        (vec!["analyze", run, "--out", out_arg, "--phases", "1,2"], "--phases takes three epochs"),
        (vec!["analyze", run, "--out", out_arg, "--device", "tpu"], "unknown device"),
        (vec!["analyze", run, "--out", run], "not empty"),
    ] {
        assert_rejected(&groklens(&args), needle, &out);
    }
}

#[test]
fn rejects_configs_that_cannot_fit_in_memory_before_allocating() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let start = std::time::Instant::now();
    assert_rejected(&run_with(&out, &["--p", "46000", "--epochs", "1"]), "needs at least", &out);
    assert_rejected(&run_with(&out, &["--p", "2000", "--seed", "1..4"]), "training 4 runs of p = 2000", &out);
    assert!(start.elapsed().as_secs() < 10, "the check came after allocating");
}

#[test]
fn analyze_rejects_a_run_too_big_to_analyse() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    assert!(run_with(&run, &["--p", "11"]).status.success());
    // A hand-edited config: p = 30000 over a tiny split (nothing checks that the split
    // covers every pair; the analysis would run every one of the p² inputs).
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    config["task"]["p"] = 30000.into();
    config["model"]["d_vocab"] = 30001.into();
    config["model"]["d_vocab_out"] = 30000.into();
    std::fs::write(run.join("config.json"), config.to_string()).unwrap();
    let out = tmp.path().join("analysis");
    assert_rejected(
        &groklens(&["analyze", run.to_str().unwrap(), "--out", out.to_str().unwrap()]),
        "needs at least",
        &out,
    );
}

/// A run's per-epoch test loss and accuracy on seen and unseen cells (written by the
/// trainer) equal what the analysis recomputes from each checkpoint, as it does for an
/// older run folder without those columns. As in the seed's loop, epoch e's test loss is
/// computed after its step, from the weights checkpoint e holds.
#[test]
fn cell_curves_of_a_run_equal_those_recomputed_from_its_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let output = run_with(&out, &["--p", "23", "--m", "2", "--n", "2", "--frac-train", "0.1"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let run = Run::load(&out).unwrap();
    let series = groklens::measures::OverTraining::from_run(&run, Device::Cpu).unwrap();
    assert!(!series.coverage.unseen_test_pairs.is_empty() && !series.coverage.seen_test_pairs.is_empty());
    for (i, &epoch) in run.checkpoint_epochs.iter().enumerate() {
        let (recomputed, written) = (series.by_cell.at(i), run.by_cell.at(epoch as usize));
        for (r, w) in recomputed.iter().zip(&written) {
            assert!(
                (r - w).abs() <= 1e-5 * w.abs().max(1.0),
                "epoch {epoch}: {recomputed:?} recomputed, {written:?} written"
            );
        }
    }
    assert_eq!(series.by_cell.len(), 4);
}
