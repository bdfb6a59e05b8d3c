//! Reading what people already have: the grokking demo's `.pth` (fixtures written by
//! real PyTorch, tests/data/pth/make_pth_fixtures.py), safetensors state dicts, run folders.

use std::path::PathBuf;

use groklens::import::read_history;
use groklens::{HookedTransformer, ModelConfig, Task};
use serde_json::Value;
use tch::{Device, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/pth/")).join(name)
}

/// The float32 values PyTorch recorded for `key` of the first checkpoint of a fixture.
fn expected_first_checkpoint(file: &str, key: &str) -> Vec<f32> {
    let all: Value = serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap();
    let items = all[file]["items"].as_array().unwrap();
    let entry = |items: &[Value], name: &str| -> Value {
        items.iter().find(|kv| kv[0]["value"] == name).unwrap_or_else(|| panic!("no {name}"))[1].clone()
    };
    let checkpoints = entry(items, "checkpoints");
    let first = &checkpoints["items"].as_array().unwrap()[0];
    let tensor = entry(first["items"].as_array().unwrap(), key);
    let hex = tensor["hex"].as_str().unwrap();
    (0..hex.len())
        .step_by(8)
        .map(|i| {
            let bytes: Vec<u8> =
                (0..4).map(|j| u8::from_str_radix(&hex[i + 2 * j..i + 2 * j + 2], 16).unwrap()).collect();
            f32::from_le_bytes(bytes.try_into().unwrap())
        })
        .collect()
}

#[test]
fn reads_the_grokking_demo_pth() {
    let file = "demo_small.pth";
    let history = read_history(&fixture(file), Task::power_sum(7, 1, 1)).unwrap();
    assert_eq!(history.config.model.d_model, 8, "{file}");
    assert_eq!(history.config.model.n_heads, 2, "{file}");
    assert_eq!(history.checkpoint_epochs.len(), 3, "{file}");
    assert_eq!(history.split.train.len() + history.split.test.len(), 49, "{file}");
    assert_eq!(history.train_losses.len(), history.test_losses.len(), "{file}");
    let model = history.checkpoint(history.checkpoint_epochs[0], Device::Cpu).unwrap();
    let ours = Vec::<f32>::try_from(model.embed.W_E.flatten(0, -1)).unwrap();
    assert_eq!(ours, expected_first_checkpoint(file, "embed.W_E"), "{file}");
}

/// That fixture pickles its config as a dataclass object and saves no split: the
/// config is read (the error comes later, at the split).
#[test]
fn reads_a_config_saved_as_an_object() {
    let err = read_history(&fixture("demo_dataclass_config.pth"), Task::power_sum(7, 1, 1)).err().unwrap();
    assert!(err.to_string().contains("no `train_indices` entry"), "{err}");
}

#[test]
fn a_pth_for_another_p_is_refused_with_a_hint() {
    let err = read_history(&fixture("demo_small.pth"), Task::power_sum(113, 4, 4)).err().unwrap();
    assert!(err.to_string().contains("pass --p"), "{err}");
}

#[test]
fn hostile_and_foreign_pth_files_are_errors() {
    for file in ["hostile_reduce.pth", "hostile_eval.pth", "hostile_popen.pth", "views.pth", "legacy.pth"] {
        let err = read_history(&fixture(file), Task::power_sum(7, 1, 1)).err().unwrap_or_else(|| panic!("{file} read"));
        assert!(err.to_string().contains(file), "{file}: {err}");
    }
}

#[test]
fn reads_a_safetensors_state_dict() {
    let tmp = tempfile::tempdir().unwrap();
    let task = Task::power_sum(7, 2, 2);
    let model = HookedTransformer::new(&ModelConfig::for_task(&task), Device::Cpu).unwrap();
    let path = tmp.path().join("model.safetensors");
    Tensor::write_safetensors(&model.state_dict(), &path).unwrap();
    let history = read_history(&path, task).unwrap();
    let loaded = history.checkpoint(0, Device::Cpu).unwrap();
    assert!(loaded.blocks[0].mlp.W_in.equal(&model.blocks[0].mlp.W_in));
    assert!(history.train_losses.is_empty());
    let err = read_history(&tmp.path().join("model.bin"), task).err().unwrap();
    assert!(err.to_string().contains("no such file"), "{err}");
}
