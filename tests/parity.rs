//! Parity with the real peer: golden values made by TransformerLens 2.18.0 and the
//! seed's loop (`tests/golden/make_golden.py`, pins in `tests/golden/requirements.txt`).

use groklens::adamw::AdamWState;
use groklens::loss::loss_fn;
use groklens::trainer::Trainer;
use groklens::{
    last_logits, last_position, ActFn, HookedTransformer, ModelConfig, RunConfig, Split, Task, TrainConfig,
};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

fn golden_path(file: &str) -> String {
    format!("{}/tests/data/golden/{file}", env!("CARGO_MANIFEST_DIR"))
}

fn golden(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(golden_path(&format!("{name}_golden.json"))).unwrap()).unwrap()
}

fn tensors(file: &str) -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(golden_path(file)).unwrap()
}

fn tensor<'a>(set: &'a [(String, Tensor)], name: &str) -> &'a Tensor {
    &set.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} not in golden file")).1
}

fn i(v: &Value) -> i64 {
    v.as_i64().unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// The run config the golden script used for `name`.
fn run_config(g: &Value) -> RunConfig {
    let c = &g["config"];
    let task = Task::power_sum(i(&g["p"]), i(&g["m"]) as u32, i(&g["n"]) as u32);
    let model = ModelConfig {
        n_layers: i(&c["n_layers"]),
        n_heads: i(&c["n_heads"]),
        d_model: i(&c["d_model"]),
        d_head: i(&c["d_head"]),
        d_mlp: i(&c["d_mlp"]),
        d_vocab: i(&c["d_vocab"]),
        d_vocab_out: i(&c["d_vocab_out"]),
        n_ctx: i(&c["n_ctx"]),
        act_fn: ActFn::Relu,
        seed: i(&g["model_seed"]),
    };
    let train = TrainConfig {
        frac_train: g["frac_train"].as_f64().unwrap(),
        data_seed: i(&g["data_seed"]),
        ..TrainConfig::default()
    };
    RunConfig { task, model, train }
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

#[test]
fn seed_split_and_labels_are_the_seeds() {
    let g = golden("seed");
    let cfg = run_config(&g);
    let split = Split::seeded(cfg.task.n_pairs(), cfg.train.frac_train, cfg.train.data_seed).unwrap();
    let golden_train: Vec<i64> = g["train_indices"].as_array().unwrap().iter().map(i).collect();
    assert_eq!(split.train, golden_train);
    assert_eq!((split.train.len(), split.test.len()), (3830, 8939));
    let labels = cfg.task.labels();
    let first: Vec<i64> = split.train[..5].iter().map(|&ix| labels.int64_value(&[ix])).collect();
    assert_eq!(first, vec![93, 17, 58, 10, 12]);
}

#[test]
fn initial_weights_are_transformer_lens_bit_for_bit() {
    for name in ["seed", "tiny", "tiny2l"] {
        let g = golden(name);
        let model = HookedTransformer::new(&run_config(&g).model, Device::Cpu).unwrap();
        let reference = tensors(&format!("{name}_init.safetensors"));
        let ours = model.state_dict();
        assert_eq!(ours.len(), reference.len(), "{name}: state dict sizes differ");
        for (key, t) in &reference {
            let (_, mine) = ours.iter().find(|(n, _)| n == key).unwrap_or_else(|| panic!("{name}: no {key}"));
            assert_eq!(mine.size(), t.size(), "{name}: {key} shape");
            assert!(mine.equal(t), "{name}: {key} differs");
        }
    }
}

#[test]
fn cache_and_logits_match_transformer_lens() {
    for name in ["seed", "tiny", "tiny2l"] {
        let g = golden(name);
        let cfg = run_config(&g);
        let model =
            HookedTransformer::from_state_dict(&cfg.model, &tensors(&format!("{name}_init.safetensors")), Device::Cpu)
                .unwrap();
        let reference = tensors(&format!("{name}_cache.safetensors"));
        let (logits, cache) = model.run_with_cache(tensor(&reference, "tokens")).unwrap();
        assert!(max_abs_diff(&logits, tensor(&reference, "logits")) < 1e-5, "{name}: logits");
        let points: Vec<_> = cache.items().map(|(point, _)| point).collect();
        assert_eq!(points, model.hook_points(), "{name}: the cache holds every hook point, in forward order");
        let mut keys: Vec<String> = points.iter().map(|point| point.to_string()).collect();
        let mut expected: Vec<&str> =
            reference.iter().map(|(n, _)| n.as_str()).filter(|n| n.contains("hook_")).collect();
        keys.sort();
        expected.sort();
        assert_eq!(keys, expected, "{name}: TransformerLens's hook names");
        for (key, act) in cache.items() {
            let key = key.to_string();
            let theirs = tensor(&reference, &key);
            assert_eq!(act.size(), theirs.size(), "{name}: {key} shape");
            // Masked attention scores are -inf on both sides: compare where finite, and the -inf places.
            let finite = theirs.isfinite();
            assert!(act.isfinite().equal(&finite), "{name}: {key} infinities differ");
            let diff = max_abs_diff(&act.masked_select(&finite), &theirs.masked_select(&finite));
            assert!(diff < 1e-5, "{name}: {key} differs by {diff}");
        }
        let tokens = tensor(&reference, "tokens");
        assert!(
            max_abs_diff(&last_logits(&model, tokens).unwrap(), &logits.select(1, -1)) < 1e-5,
            "{name}: last_logits"
        );
        let last = last_position(&model, tokens).unwrap();
        let layer = cfg.model.n_layers as usize - 1;
        assert!(max_abs_diff(&last.logits, &logits.select(1, -1)) < 1e-5, "{name}: last_position logits");
        assert!(max_abs_diff(&last.mlp_post, &cache[("post", layer)].select(1, -1)) < 1e-5, "{name}: mlp_post");
        assert!(max_abs_diff(&last.resid_mid, &cache[("resid_mid", layer)].select(1, -1)) < 1e-5, "{name}: resid_mid");
    }
}

#[test]
fn initial_losses_and_first_gradients_match() {
    for name in ["seed", "tiny"] {
        let g = golden(name);
        let cfg = run_config(&g);
        let split = Split::seeded(cfg.task.n_pairs(), cfg.train.frac_train, cfg.train.data_seed).unwrap();
        let model = HookedTransformer::new(&cfg.model, Device::Cpu).unwrap().trainable_copy();
        let set = |rows: &Vec<i64>| {
            let rows = Tensor::from_slice(rows);
            (cfg.task.dataset().index_select(0, &rows), cfg.task.labels().index_select(0, &rows))
        };
        let ((train_data, train_labels), (test_data, test_labels)) = (set(&split.train), set(&split.test));
        let loss = loss_fn(&last_logits(&model, &train_data).unwrap(), &train_labels);
        let test = loss_fn(&last_logits(&model, &test_data).unwrap(), &test_labels).double_value(&[]);
        assert!((loss.double_value(&[]) - g["init_train_loss"].as_f64().unwrap()).abs() < 1e-6, "{name}: train loss");
        assert!((test - g["init_test_loss"].as_f64().unwrap()).abs() < 1e-6, "{name}: test loss");
        loss.backward();
        let grads = tensors(&format!("{name}_grads0.safetensors"));
        for (key, t) in model.named_parameters() {
            if let Some((_, theirs)) = grads.iter().find(|(n, _)| *n == key) {
                let scale = theirs.abs().max().double_value(&[]);
                assert!(max_abs_diff(&t.grad(), theirs) <= 1e-4 * scale, "{name}: gradient of {key}");
            }
        }
    }
}

fn max_relative_gap(ours: &[f64], theirs: &[f64]) -> f64 {
    ours.iter().zip(theirs).map(|(a, b)| (a - b).abs() / b.abs()).fold(0.0, f64::max)
}

/// How far apart two loss curves may be, epoch by epoch, relative.
fn assert_losses_match(what: &str, ours: &[f64], theirs: &[f64], tolerance: f64) {
    for (epoch, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert!((a - b).abs() <= tolerance * b.abs(), "{what}: epoch {epoch}: {a} vs {b}");
    }
}

/// The seed config's early training amplifies rounding: the peer itself, rerun with
/// 2 threads instead of 1 from the same weights, drifts to ~2e-3 relative by epoch 100
/// (recorded by make_golden.py), and a different but equivalent order of float32
/// operations drifts further (~1e-2). So the whole seed curve must stay within 3e-2 (and
/// within 1e-4 for its first 25 epochs), while every single step is checked to 1e-6 from
/// the peer's own state (`steps_from_the_peers_state_match`). Tiny, which is not
/// chaotic, must match to 1e-4 throughout.
#[test]
fn first_100_epochs_match_the_seeds_loop() {
    let seed = golden("seed");
    let peer_drift = max_relative_gap(&f64s(&seed["peer_rerun_2threads_train_losses"]), &f64s(&seed["train_losses"]));
    assert!(peer_drift > 1e-3, "the peer's own drift ({peer_drift:e}) no longer explains the seed tolerance");
    for (name, exact_epochs) in [("tiny", 100), ("seed", 25)] {
        let g = golden(name);
        let cfg = run_config(&g);
        let split = Split::seeded(cfg.task.n_pairs(), cfg.train.frac_train, cfg.train.data_seed).unwrap();
        let model = HookedTransformer::new(&cfg.model, Device::Cpu).unwrap();
        let mut trainer = Trainer::new(&cfg, &model, &split).unwrap();
        let (train, test): (Vec<f64>, Vec<f64>) =
            trainer.train_epochs(100).unwrap().into_iter().map(|e| (e[0].train_loss, e[0].test_loss)).unzip();
        let (their_train, their_test) = (f64s(&g["train_losses"]), f64s(&g["test_losses"]));
        let n = exact_epochs;
        assert_losses_match(&format!("{name} train"), &train[..n], &their_train[..n], 1e-4);
        assert_losses_match(&format!("{name} test"), &test[..n], &their_test[..n], 1e-4);
        assert_losses_match(&format!("{name} train"), &train, &their_train, 3e-2);
        assert_losses_match(&format!("{name} test"), &test, &their_test, 3e-2);
        eprintln!(
            "{name}: max relative gap to TransformerLens over 100 epochs: train {:.1e}, test {:.1e}",
            max_relative_gap(&train, &their_train),
            max_relative_gap(&test, &their_test)
        );
        if name == "tiny" {
            let after = tensors("tiny_after100.safetensors");
            for (key, t) in trainer.model(0).named_parameters() {
                assert!(max_abs_diff(t, tensor(&after, key)) < 1e-5, "tiny: {key} after 100 epochs");
            }
        }
    }
}

/// From TransformerLens's exact weights and AdamW moments at epochs 40 and 80 of the
/// seed run, groklens's next five epochs give the peer's losses to 1e-6 relative.
#[test]
fn steps_from_the_peers_state_match() {
    let g = golden("seed");
    let cfg = run_config(&g);
    let split = Split::seeded(cfg.task.n_pairs(), cfg.train.frac_train, cfg.train.data_seed).unwrap();
    let (their_train, their_test) = (f64s(&g["train_losses"]), f64s(&g["test_losses"]));
    for start in [40usize, 80] {
        let state = tensors(&format!("seed_state{start}.safetensors"));
        let weights: Vec<(String, Tensor)> = state
            .iter()
            .filter_map(|(n, t)| n.strip_prefix("param.").map(|n| (n.to_string(), t.shallow_clone())))
            .collect();
        let model = HookedTransformer::from_state_dict(&cfg.model, &weights, Device::Cpu).unwrap();
        let mut trainer = Trainer::new(&cfg, &model, &split).unwrap();
        let names: Vec<String> = model.trainable_parameters().map(|(n, _)| n.to_string()).collect();
        let moments = names
            .iter()
            .map(|n| {
                let moment = |prefix: &str| tensor(&state, &format!("{prefix}.{n}")).shallow_clone();
                (n.clone(), moment("exp_avg"), moment("exp_avg_sq"))
            })
            .collect();
        let step = tensor(&state, "step").int64_value(&[0]);
        assert_eq!(step as usize, start);
        trainer.set_optimizer_state(&[&AdamWState { step, moments }]).unwrap();
        let (train, test): (Vec<f64>, Vec<f64>) =
            trainer.train_epochs(5).unwrap().into_iter().map(|e| (e[0].train_loss, e[0].test_loss)).unzip();
        eprintln!(
            "seed: five steps from the peer's state at epoch {start}: max relative gap {:.1e}",
            max_relative_gap(&train, &their_train[start..start + 5])
                .max(max_relative_gap(&test, &their_test[start..start + 5]))
        );
        assert_losses_match(&format!("seed train from epoch {start}"), &train, &their_train[start..start + 5], 1e-6);
        assert_losses_match(&format!("seed test from epoch {start}"), &test, &their_test[start..start + 5], 1e-6);
    }
}
