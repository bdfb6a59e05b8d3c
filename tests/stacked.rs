//! Several runs trained as one stacked computation give each run its own losses.

use std::process::Command;

use groklens::trainer::Trainer;
use groklens::{HookedTransformer, Run, Split, Task};
use tch::Device;

mod common;
use common::tiny;

#[test]
fn runs_of_different_shapes_do_not_stack() {
    let a = tiny(Task::power_sum(11, 2, 3), 1, 0.5, 1.0);
    let mut b = a.clone();
    b.model.d_mlp = 64;
    let (ma, mb) = (
        HookedTransformer::new(&a.model, Device::Cpu).unwrap(),
        HookedTransformer::new(&b.model, Device::Cpu).unwrap(),
    );
    let split = Split::seeded(121, 0.5, 598).unwrap();
    let err = Trainer::stacked(&[(&a, &ma, &split), (&b, &mb, &split)]).err().unwrap();
    assert!(err.to_string().contains("share the model shape"), "{err}");
}

#[test]
fn the_command_line_trains_a_grid_into_run_folders_and_an_index() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("grid");
    let output = Command::new(env!("CARGO_BIN_EXE_groklens"))
        .args(["train", "--out", out.to_str().unwrap(), "--p", "11", "--seeds", "1..3", "--weight-decay", "0.5,1"])
        .args(["--epochs", "20", "--checkpoint-every", "10"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("index.json")).unwrap()).unwrap();
    let entries = index.as_array().unwrap();
    assert_eq!(entries.len(), 6);
    for entry in entries {
        let run = Run::load(out.join(entry["folder"].as_str().unwrap())).unwrap();
        assert_eq!(run.config.model.seed, entry["seed"].as_i64().unwrap());
        assert_eq!(run.config.train.weight_decay, entry["weight_decay"].as_f64().unwrap());
        assert_eq!((run.train_losses.len(), run.checkpoint_epochs.len()), (20, 2));
    }
    let seeds: Vec<i64> = entries.iter().map(|e| e["seed"].as_i64().unwrap()).collect();
    assert_eq!(seeds, vec![1, 2, 3, 1, 2, 3]);
}
