//! The measures against the seed notebook's own analysis code (golden values from
//! `tests/golden/make_measures_golden.py`) and against the properties that define them.

use std::time::Instant;

use groklens::adamw::AdamWState;
use groklens::fourier::{fourier_basis, transform_2d, FourierBasis, PerView, View};
use groklens::loss::loss_fn;
use groklens::measures::{
    all_inputs, class_collapse, embed_fourier_norms, excluded_loss, excluded_loss_seed_buggy, gini, leaks,
    logit_map_fourier_norms, logit_periodicity, neuron_fourier, neuron_freq_norm, neuron_logit_freq,
    random_cube_cos_sim, random_cube_level, restricted_loss, sin_cos_energy, view_overlap, Directions, LogitRule,
    NeuronRule, OverTraining, Subset,
};
use groklens::phases::{detect_phases, Curve, PhaseCurves, PhaseRule, Phases};
use groklens::run::RunWriter;
use groklens::train::{Checkpoint, Observer};
use groklens::{ActFn, HookedTransformer, ModelConfig, Run, RunConfig, Split, Task, TrainConfig};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

fn data_path(file: &str) -> String {
    format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"))
}

fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string(data_path("measures/tiny_measures.json")).unwrap()).unwrap()
}

/// The golden script's task, (a² + b³) mod 11.
fn tiny_task() -> Task {
    Task::power_sum(11, 2, 3)
}

fn tiny_config(p: i64) -> ModelConfig {
    ModelConfig {
        n_layers: 1,
        n_heads: 2,
        d_model: 16,
        d_head: 8,
        d_mlp: 32,
        d_vocab: p + 1,
        d_vocab_out: p,
        n_ctx: 3,
        act_fn: ActFn::Relu,
        seed: 3,
    }
}

fn tiny_split() -> Split {
    let g: Value =
        serde_json::from_str(&std::fs::read_to_string(data_path("golden/tiny_golden.json")).unwrap()).unwrap();
    let ints = |v: &Value| v.as_array().unwrap().iter().map(|x| x.as_i64().unwrap()).collect();
    Split { train: ints(&g["train_indices"]), test: ints(&g["test_indices"]) }
}

fn tiny_model(file: &str) -> HookedTransformer {
    let state = Tensor::read_safetensors(data_path(file)).unwrap();
    HookedTransformer::from_state_dict(&tiny_config(11), &state, Device::Cpu).unwrap()
}

/// The golden models: (section of the json, weights).
const GOLDEN_MODELS: [(&str, &str); 2] =
    [("after100", "golden/tiny_after100.safetensors"), ("trained", "measures/tiny_trained.safetensors")];

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect()
}

fn matrix(v: &Value) -> Vec<Vec<f64>> {
    v.as_array().unwrap().iter().map(f64s).collect()
}

fn assert_close(ours: f64, theirs: f64, rtol: f64, what: &str) {
    let gap = (ours - theirs).abs();
    assert!(gap <= rtol * (1e-6 + theirs.abs()), "{what}: ours {ours} vs the seed's {theirs} (gap {gap:.3e})");
}

fn assert_all_close(ours: &[f64], theirs: &[f64], atol: f64, what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    for (i, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert!((a - b).abs() <= atol, "{what}[{i}]: ours {a} vs {b}");
    }
}

fn tensor_rows(t: &Tensor) -> Vec<Vec<f64>> {
    let t = t.to_kind(Kind::Double);
    (0..t.size()[0]).map(|i| Vec::<f64>::try_from(t.get(i)).unwrap()).collect()
}

#[test]
fn fourier_basis_is_the_seeds() {
    let g = golden();
    let basis = fourier_basis(11).unwrap();
    let seed = matrix(&g["after100"]["fourier_basis"]);
    for (ours, theirs) in tensor_rows(&basis.basis).iter().zip(&seed) {
        assert_all_close(ours, theirs, 1e-6, "fourier basis row");
    }
    let names: Vec<String> =
        g["after100"]["fourier_basis_names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().into()).collect();
    assert_eq!(basis.names, names);
    let identity = basis.basis.matmul(&basis.basis.tr());
    assert!((identity - Tensor::eye(11, (Kind::Double, Device::Cpu))).abs().max().double_value(&[]) < 1e-12);
    assert_eq!(FourierBasis::block_rows(3), [0, 5, 6]);
    assert_eq!(FourierBasis::freq_of_row(6), 3);
    assert!(fourier_basis(12).is_err() && fourier_basis(1).is_err());
}

#[test]
fn per_model_measures_match_the_seeds_code() {
    let g = golden();
    let (task, split) = (tiny_task(), tiny_split());
    let all_freqs: Vec<i64> = (1..=5).collect();
    let two = [2, 4];
    for (section, file) in GOLDEN_MODELS {
        let g = &g[section];
        let model = tiny_model(file);
        let acts = all_inputs(&model, &task).unwrap();

        let freq_norm = neuron_freq_norm(&task, View::Standard, &acts.mlp_post).unwrap();
        for (k, (ours, theirs)) in tensor_rows(&freq_norm.norm).iter().zip(matrix(&g["neuron_freq_norm"])).enumerate() {
            // The seed's 0/0 (NaN, null in the json) for a dead neuron is 0 here.
            let theirs: Vec<f64> = theirs.iter().map(|x| if x.is_nan() { 0.0 } else { *x }).collect();
            assert_all_close(ours, &theirs, 2e-5, &format!("{section} neuron_freq_norm k={}", k + 1));
        }
        let fourier = neuron_fourier(&task, View::Standard, &acts.mlp_post).unwrap();
        let scale = fourier.norms().max().double_value(&[]);
        for (ours, theirs) in tensor_rows(&fourier.norms()).iter().zip(matrix(&g["fourier_norms"])) {
            assert_all_close(ours, &theirs, 2e-6 * scale, &format!("{section} fourier norms"));
        }
        assert_eq!(fourier.norms_without_constant().size(), [10, 10]);
        let embed = embed_fourier_norms(&model, &task, View::Standard).unwrap();
        assert_all_close(&embed, &f64s(&g["embed_fourier_norms"]), 1e-5, "embedding Fourier norms");

        let periodicity = logit_periodicity(&task, View::Standard, &acts.logits).unwrap();
        let coeff_scale = f64s(&g["cos_coeffs"]).iter().fold(1.0f64, |m, c| m.max(c.abs()));
        assert_all_close(&periodicity.coefficients, &f64s(&g["cos_coeffs"]), 2e-5 * coeff_scale, "cos_coeffs");
        assert_all_close(&periodicity.cos_sims, &f64s(&g["cos_sim"]), 1e-6, "cos_sim");
        assert_close(periodicity.residual_all(), g["residual_cos_sim"].as_f64().unwrap(), 1e-5, "residual_cos_sim");
        let task_view = logit_periodicity(&task, View::Task, &acts.logits).unwrap();
        assert_all_close(&task_view.cos_sims, &f64s(&g["task_cos_sim"]), 1e-6, "task-view cos_sim (explicit cube)");

        for (name, keys) in [("seed", &all_freqs[..]), ("two", &two[..])] {
            let loss = |key: &str| g[format!("{key}_{name}")].as_f64().unwrap();
            let buggy = excluded_loss_seed_buggy(&model, &acts, &task, &split, View::Standard, keys).unwrap();
            assert_close(buggy, loss("excluded_loss_seed_buggy"), 1e-4, &format!("{section} buggy excluded {name}"));
            let dirs = Directions::new(View::Standard, keys);
            let once = excluded_loss(&model, &acts, &task, &split, &dirs).unwrap();
            assert_close(once, loss("excluded_loss_once"), 1e-4, &format!("{section} excluded {name}"));
            let cos = excluded_loss(&model, &acts, &task, &split, &dirs.clone().cos_only()).unwrap();
            assert_close(cos, loss("excluded_loss_once_cos"), 1e-4, &format!("{section} cos-only excluded {name}"));
            let restricted = restricted_loss(&model, &acts, &task, &split, &dirs, Subset::Test).unwrap();
            assert_close(restricted, loss("restricted_loss"), 1e-4, &format!("{section} restricted {name}"));
            let task_dirs = Directions::new(View::Task, keys);
            let task_excluded = excluded_loss(&model, &acts, &task, &split, &task_dirs).unwrap();
            assert_close(task_excluded, loss("task_excluded_loss"), 1e-4, &format!("{section} task excluded {name}"));
        }
        let train_loss = g["train_loss"].as_f64().unwrap();
        for view in View::BOTH {
            let none = excluded_loss(&model, &acts, &task, &split, &Directions::new(view, &[])).unwrap();
            assert_close(none, train_loss, 1e-5, "excluded loss with no key frequencies");
            let none = excluded_loss_seed_buggy(&model, &acts, &task, &split, view, &[]).unwrap();
            assert_close(none, train_loss, 1e-5, "the seed's excluded loss with no key frequencies");
        }
    }
}

/// α_k and the residual from explicit p³ cubes, as the seed builds them.
fn brute_force_periodicity(task: &Task, view: View, logits: &Tensor) -> (Vec<f64>, f64) {
    let p = task.p;
    let logits = logits.to_kind(Kind::Double).view([p, p, p]);
    let s = Tensor::from_slice(&view.sums(task)).view([p, p, 1]);
    let c = Tensor::arange(p, (Kind::Int64, Device::Cpu)).view([1, 1, p]);
    let mut approx = logits.zeros_like();
    let mut coeffs = vec![];
    for k in 1..=(p - 1) / 2 {
        let angle = ((&s - &c) * k).remainder(p).to_kind(Kind::Double) * (2.0 * std::f64::consts::PI / p as f64);
        let cube = angle.cos();
        let cube = &cube / cube.norm();
        let alpha = (&logits * &cube).sum(Kind::Double);
        approx += &cube * &alpha;
        coeffs.push(alpha.double_value(&[]));
    }
    let residual = (&logits - approx).norm().double_value(&[]) / logits.norm().double_value(&[]);
    (coeffs, residual)
}

#[test]
fn fast_periodicity_equals_the_explicit_cubes() {
    let task = tiny_task();
    let model = tiny_model("measures/tiny_trained.safetensors");
    let acts = all_inputs(&model, &task).unwrap();
    for view in View::BOTH {
        let fast = logit_periodicity(&task, view, &acts.logits).unwrap();
        let (coeffs, residual) = brute_force_periodicity(&task, view, &acts.logits);
        let scale = coeffs.iter().fold(1.0f64, |m, c| m.max(c.abs()));
        assert_all_close(&fast.coefficients, &coeffs, 1e-10 * scale, &format!("{view} α_k"));
        // The residual² identity ‖L − Σ α_k C_k‖² = ‖L‖² − Σ α_k², over every frequency and over a key set.
        assert!((fast.residual_all() - residual).abs() < 1e-10, "{view}: {} vs {residual}", fast.residual_all());
        let explained: f64 = [2, 4].iter().map(|&k| fast.cos_sims[k - 1].powi(2)).sum();
        assert!((fast.residual(&[2, 4]) - (1.0 - explained).sqrt()).abs() < 1e-12);
    }
}

#[test]
fn task_view_of_an_a_plus_b_task_is_the_standard_view() {
    let task = Task::power_sum(11, 1, 1);
    let model = HookedTransformer::new(&tiny_config(11), Device::Cpu).unwrap();
    let split = Split::seeded(121, 0.5, 7).unwrap();
    let acts = all_inputs(&model, &task).unwrap();
    let [standard, task_view] = View::BOTH.map(|v| logit_periodicity(&task, v, &acts.logits).unwrap());
    assert_all_close(&standard.coefficients, &task_view.coefficients, 1e-12, "α_k");
    let [a, b] = View::BOTH.map(|v| neuron_freq_norm(&task, v, &acts.mlp_post).unwrap().norm);
    assert!((a - b).abs().max().double_value(&[]) < 1e-10, "neuron_freq_norm");
    let [a, b] = View::BOTH.map(|v| neuron_fourier(&task, v, &acts.mlp_post).unwrap().norms());
    assert!((a - b).abs().max().double_value(&[]) < 1e-10, "Fourier norms");
    let [a, b] = View::BOTH.map(|v| embed_fourier_norms(&model, &task, v).unwrap());
    assert_all_close(&a, &b, 1e-12, "embedding Fourier norms");
    let [a, b] = View::BOTH.map(|v| sin_cos_energy(&model, &task, v).unwrap());
    assert!((a.sin - b.sin).abs() < 1e-12 && (a.cos - b.cos).abs() < 1e-12);
    for keys in [&[1, 3][..], &[1, 2, 3, 4, 5]] {
        let [a, b] =
            View::BOTH.map(|v| excluded_loss(&model, &acts, &task, &split, &Directions::new(v, keys)).unwrap());
        assert_close(a, b, 1e-12, "excluded loss");
        let [a, b] = View::BOTH
            .map(|v| restricted_loss(&model, &acts, &task, &split, &Directions::new(v, keys), Subset::All).unwrap());
        assert_close(a, b, 1e-12, "restricted loss");
    }
}

/// L[a, b, c] = Σ_k w_k cos(2πk(s(a,b) − c)/p) in the task view of (a² + b) mod 23, plus noise.
#[test]
fn known_logit_frequencies_are_found_exactly() {
    let task = Task { p: 23, g: groklens::Term::power(2), h: groklens::Term::power(1) };
    let p = task.p;
    let s = Tensor::from_slice(&View::Task.sums(&task)).view([p * p, 1]);
    let c = Tensor::arange(p, (Kind::Int64, Device::Cpu)).view([1, p]);
    let wave = |k: i64| {
        ((&s - &c) * k).remainder(p).to_kind(Kind::Double).multiply_scalar(2.0 * std::f64::consts::PI / p as f64).cos()
    };
    let noise = groklens::rng::seeded(0, || Tensor::randn([p * p, p], (Kind::Double, Device::Cpu))) * 0.05;
    let logits = wave(4) * 3.0 + wave(7) * 2.0 + noise;
    let found = logit_periodicity(&task, View::Task, &logits).unwrap();
    let unit = ((p * p * p) as f64 / 2.0).sqrt();
    assert!((found.coefficients[3] / unit - 3.0).abs() < 0.01 && (found.coefficients[6] / unit - 2.0).abs() < 0.01);
    let keys = LogitRule::default().detect(&found, &[]);
    assert_eq!(keys.freqs, vec![4, 7], "{}", keys.rule);
    assert_eq!(keys.evidence.len(), 11);
    // The standard view sees these logits only through Gauss-sum overlaps, far weaker.
    let standard = logit_periodicity(&task, View::Standard, &logits).unwrap();
    assert!(standard.residual_all() > 0.95, "{:?}", standard.cos_sims);
    // The random-cube control is about 1/√p³.
    let controls: Vec<f64> = (0..8).map(|seed| random_cube_cos_sim(&logits, seed).unwrap()).collect();
    let rms = (controls.iter().map(|c| c * c).sum::<f64>() / 8.0).sqrt();
    let level = random_cube_level(p);
    assert!(rms > level / 3.0 && rms < level * 3.0, "control rms {rms} vs level {level}");
    // Overriding by hand keeps the evidence.
    let edited = keys.overridden(&[4, 3]);
    assert_eq!((edited.freqs, edited.evidence), (vec![3, 4], keys.evidence));
    assert!(edited.rule.starts_with("set by hand"));
}

/// Neuron n = 1 + cos(2πk_n(x + y)/p + φ_n): all its energy in frequency k_n's block.
#[test]
fn known_neuron_frequencies_are_found_exactly() {
    let task = Task::power_sum(23, 2, 2);
    let p = task.p;
    let freqs = [3, 3, 3, 5, 5, 9, 9, 9, 9, 1];
    for view in View::BOTH {
        let s = Tensor::from_slice(&view.sums(&task)).to_kind(Kind::Double).view([p * p, 1]);
        let ks = Tensor::from_slice(&freqs).to_kind(Kind::Double).view([1, -1]);
        let phases = Tensor::arange(freqs.len() as i64, (Kind::Double, Device::Cpu)).view([1, -1]) * 0.7;
        let acts = (s * ks * (2.0 * std::f64::consts::PI / p as f64) + phases).cos() + 1.0;
        let acts = Tensor::cat(&[acts, Tensor::zeros([p * p, 1], (Kind::Double, Device::Cpu))], 1); // a dead neuron
        let norm = neuron_freq_norm(&task, view, &acts).unwrap();
        assert_eq!(&norm.best_freq[..freqs.len()], &freqs, "{view}");
        assert!(norm.max[..freqs.len()].iter().all(|m| (m - 1.0).abs() < 1e-9), "{view}: {:?}", norm.max);
        assert_eq!(norm.max[freqs.len()], 0.0, "a dead neuron explains nothing");
        let keys = NeuronRule::default().detect(&norm);
        assert_eq!(keys.freqs, vec![1, 3, 5, 9], "{}", keys.rule);
        if view == View::Standard {
            // Orthogonal basis: nothing leaks into the other frequencies.
            let others = norm.norm.narrow(0, 1, 1).narrow(1, 0, 3).abs().max().double_value(&[]);
            assert!(others < 1e-12, "{others}");
        }
    }
}

#[test]
fn weights_measures_follow_their_definitions() {
    assert_eq!(gini(&[1.0, 1.0, 1.0, 1.0]), 0.0);
    assert!((gini(&[0.0, 0.0, 0.0, 1.0]) - 0.75).abs() < 1e-12);
    assert_eq!(gini(&[]), 0.0);
    let task = Task::power_sum(11, 4, 4);
    let mut model = HookedTransformer::new(&tiny_config(11), Device::Cpu).unwrap();
    // An embedding that is a function of a⁴: collapsed classes, even in a, no sine energy.
    let g = Tensor::from_slice(&task.g_values());
    let w_e = model.embed.W_E.narrow(0, 0, 11).index_select(0, &g);
    model.embed.W_E = Tensor::cat(&[w_e, model.embed.W_E.narrow(0, 11, 1)], 0);
    assert!(class_collapse(&model, &task).unwrap() < 1e-12);
    let energy = sin_cos_energy(&model, &task, View::Standard).unwrap();
    assert!(energy.sin < 1e-12 && (energy.constant + energy.cos - 1.0).abs() < 1e-12, "{energy:?}");
    let logit_norms = logit_map_fourier_norms(&model).unwrap();
    let w = model.blocks[0].mlp.W_out.matmul(&model.unembed.W_U).to_kind(Kind::Double);
    let total: f64 = logit_norms.iter().map(|x| x * x).sum();
    assert_close(total, w.square().sum(Kind::Double).double_value(&[]), 1e-6, "Parseval for W_out W_U");
}

#[test]
fn task_view_neuron_picture_averages_classes_and_skips_missing_values() {
    // g = a² mod 11 takes 6 of 11 values; h = b³ is one-to-one.
    let task = tiny_task();
    let model = tiny_model("measures/tiny_trained.safetensors");
    let acts = all_inputs(&model, &task).unwrap();
    let fourier = neuron_fourier(&task, View::Task, &acts.mlp_post).unwrap();
    let p = task.p;
    // The energy is that of the class means: ≤ the total centred energy, equal only without spread in a class.
    let a = acts.mlp_post.to_kind(Kind::Double);
    let centred = &a - a.mean_dim(0, true, Kind::Double);
    let total = centred.square().sum_dim_intlist(0, false, Kind::Double);
    assert!(fourier.class_energy.le_tensor(&(&total + 1e-9)).all().int64_value(&[]) == 1);
    // Means over a class, by hand, against the transform of the class means weighted by class size.
    let basis = fourier_basis(p).unwrap();
    let (g, h) = (task.g_values(), task.h_values());
    let d = a.size()[1];
    let sums = Tensor::zeros([p, p, d], (Kind::Double, Device::Cpu));
    for i in 0..p {
        for j in 0..p {
            let row = centred.get(i * p + j);
            let mut cell = sums.get(g[i as usize]).get(h[j as usize]);
            cell += row;
        }
    }
    let by_hand = transform_2d(&basis.basis, &sums, &basis.basis);
    assert!((by_hand - &fourier.coefficients).abs().max().double_value(&[]) < 1e-9);
    let norm = fourier.freq_norm().unwrap();
    assert!(norm.max.iter().all(|m| (0.0..=1.0 + 1e-9).contains(m)));
}

#[test]
fn a_constant_g_leaves_every_task_view_measure_finite() {
    // g(a) = 0·a: one class of a, and u takes a single value.
    let task = Task { p: 11, g: groklens::Term { coeff: 0, power: 1 }, h: groklens::Term::power(3) };
    let model = tiny_model("measures/tiny_trained.safetensors");
    let acts = all_inputs(&model, &task).unwrap();
    let norm = neuron_freq_norm(&task, View::Task, &acts.mlp_post).unwrap();
    assert!(norm.max.iter().all(|m| m.is_finite() && (0.0..=1.0 + 1e-9).contains(m)), "{:?}", norm.max);
    let split = tiny_split();
    for keys in [&[1][..], &[1, 2, 3, 4, 5]] {
        let dirs = Directions::new(View::Task, keys);
        assert!(excluded_loss(&model, &acts, &task, &split, &dirs).unwrap().is_finite());
        assert!(restricted_loss(&model, &acts, &task, &split, &dirs, Subset::Test).unwrap().is_finite());
    }
    assert!(logit_periodicity(&task, View::Task, &acts.logits).unwrap().residual_all().is_finite());
    assert!(class_collapse(&model, &task).unwrap().is_finite());
}

/// Writes `model` as the run's checkpoint of `epoch` (losses and optimizer state are placeholders).
fn checkpoint(writer: &mut RunWriter, epoch: i64, model: &HookedTransformer) {
    let optimizer = AdamWState::initial(model);
    let (train_losses, test_losses) = (&[1.0][..], &[1.0][..]);
    let by_cell = &Default::default();
    writer.checkpoint(&Checkpoint { epoch, model, optimizer: &optimizer, train_losses, test_losses, by_cell }).unwrap();
}

fn golden_models_as_a_run(dir: &std::path::Path) -> Run {
    let task = tiny_task();
    let config = RunConfig {
        task,
        model: tiny_config(11),
        train: TrainConfig { frac_train: 0.5, data_seed: 7, ..TrainConfig::default() },
    };
    let split = tiny_split();
    let init = tiny_model("golden/tiny_init.safetensors");
    let mut writer = RunWriter::create(dir, &config, &split, &init).unwrap();
    for (epoch, file) in [(0, "golden/tiny_init.safetensors"), (99, GOLDEN_MODELS[0].1), (2999, GOLDEN_MODELS[1].1)] {
        checkpoint(&mut writer, epoch, &tiny_model(file));
    }
    Run::load(dir).unwrap()
}

#[test]
fn over_training_series_equal_the_per_model_measures() {
    let dir = tempfile::tempdir().unwrap();
    let run = golden_models_as_a_run(&dir.path().join("run"));
    let series = OverTraining::from_run(&run, Device::Cpu).unwrap();
    assert_eq!(series.epochs, vec![0, 99, 2999]);
    let (task, split) = (tiny_task(), tiny_split());
    let dirs = Directions::new(View::Task, &[2, 4]);
    let keyed = series.keyed(&dirs).unwrap();
    let buggy = series.excluded_loss_seed_buggy(View::Standard, &[1, 2, 3, 4, 5]).unwrap();
    let restricted_all = series.restricted_loss(&dirs.clone().cos_only(), Subset::All).unwrap();
    for (i, &epoch) in run.checkpoint_epochs.iter().enumerate() {
        let model = run.checkpoint(epoch, Device::Cpu).unwrap();
        let acts = all_inputs(&model, &task).unwrap();
        let train = split.train_tensor();
        let labels = task.labels().index_select(0, &train);
        let train_loss = loss_fn(&acts.logits.index_select(0, &train), &labels).double_value(&[]);
        assert_close(series.train_loss[i], train_loss, 1e-12, "train loss");
        let periodicity = logit_periodicity(&task, View::Task, &acts.logits).unwrap();
        assert_all_close(
            &series.view(View::Task).coefficients.row(i).to_vec(),
            &periodicity.coefficients,
            1e-12,
            "α_k",
        );
        assert_close(keyed.residual[i], periodicity.residual(&[2, 4]), 1e-12, "residual");
        let excluded = excluded_loss(&model, &acts, &task, &split, &dirs).unwrap();
        assert_close(keyed.excluded_loss[i], excluded, 1e-12, "excluded loss");
        let restricted = restricted_loss(&model, &acts, &task, &split, &dirs, Subset::Test).unwrap();
        assert_close(keyed.restricted_loss[i], restricted, 1e-12, "restricted loss");
        let all = restricted_loss(&model, &acts, &task, &split, &dirs.clone().cos_only(), Subset::All).unwrap();
        assert_close(restricted_all[i], all, 1e-12, "restricted loss, cosines, all inputs");
        let seed = excluded_loss_seed_buggy(&model, &acts, &task, &split, View::Standard, &[1, 2, 3, 4, 5]).unwrap();
        assert_close(buggy[i], seed, 1e-12, "buggy excluded loss");
        assert_close(
            series.view(View::Standard).gini_embed[i],
            gini(&embed_fourier_norms(&model, &task, View::Standard).unwrap()),
            1e-12,
            "gini",
        );
    }
    let g = golden();
    assert_close(series.test_loss[2], g["trained"]["test_loss"].as_f64().unwrap(), 1e-5, "test loss");
    assert!(series.excluded_loss(&Directions::new(View::Task, &[6])).is_err(), "6 is out of 1..=5");
    assert!(series.excluded_loss(&Directions::new(View::Task, &[2, 2])).is_err(), "repeated");
}

/// A grokking-shaped run: train loss exp(−e/300); test loss up to 10 by epoch 1500,
/// flat, then down log-linearly to 1e-6 between epochs 9000 and 13000; and spikes of
/// the test loss `(start, top in log10, length)`, rising and falling linearly in log10.
fn synthetic_curves(grok: bool, spikes: &[(i64, f64, i64)]) -> PhaseCurves {
    let epochs: Vec<i64> = (0..20_000).collect();
    let train: Vec<f64> = epochs.iter().map(|&e| 4.7 * (-(e as f64) / 300.0).exp() + 1e-9).collect();
    let test: Vec<f64> = epochs
        .iter()
        .map(|&e| {
            let x = e as f64;
            let mut log = if x < 1500.0 {
                0.67 + 0.33 * x / 1500.0
            } else if !grok || x < 9000.0 {
                1.0
            } else if x < 13_000.0 {
                1.0 - 7.0 * (x - 9000.0) / 4000.0
            } else {
                -6.0
            };
            for &(start, top, len) in spikes {
                let into = (e - start) as f64 / len as f64;
                if (0.0..1.0).contains(&into) {
                    log = log.max(top - (top - log) * (2.0 * into - 1.0).abs());
                }
            }
            10f64.powf(log)
        })
        .collect();
    let checkpoints: Vec<i64> = (99..20_000).step_by(100).collect();
    let excluded: Vec<f64> = checkpoints.iter().map(|&e| if e < 10_000 { e as f64 } else { 0.0 }).collect();
    let norm: Vec<f64> = checkpoints
        .iter()
        .map(|&e| {
            if e < 11_000 {
                100.0
            } else if e < 11_100 {
                50.0
            } else {
                40.0
            }
        })
        .collect();
    PhaseCurves {
        train_loss: Curve::per_epoch(&train).unwrap(),
        test_loss: Curve::per_epoch(&test).unwrap(),
        test_loss_name: "test loss".into(),
        excluded_loss: Some(Curve::new(&checkpoints, &excluded).unwrap()),
        restricted_loss: None,
        weight_norm: Some(Curve::new(&checkpoints, &norm).unwrap()),
    }
}

#[test]
fn phases_of_synthetic_curves() {
    let phases = detect_phases(&synthetic_curves(true, &[]), &PhaseRule::default());
    // 4.7·e^(−e/300) ≤ 0.047 from e = 300·ln 100 = 1381.6; log test ≥ 1 − 0.7 until 9400; ≤ −6 + 0.7 from 12600.
    assert_eq!(phases.lines(), vec![1382, 9400, 12600], "{}", phases.rule);
    assert!(phases.events.is_empty());
    let evidence = |name: &str| phases.evidence.iter().find(|(n, _)| n.starts_with(name)).unwrap().1;
    assert_eq!(evidence("excluded loss peak epoch"), 9999.0);
    assert_eq!(evidence("weight norm steepest fall"), 11_099.0);
    let flat = detect_phases(&synthetic_curves(false, &[]), &PhaseRule::default());
    assert_eq!((flat.memorisation_end, flat.circuit_formation_end, flat.cleanup_end), (Some(1382), None, None));
    assert_eq!(Phases::seed().lines(), vec![1500, 13300, 16600]);
    assert!(Curve::new(&[1, 1], &[0.0, 0.0]).is_err());
}

/// Spikes after clean-up, as high as the plateau before the fall or higher, early or
/// late, one or two, move no phase line and come out as events with their heights and
/// recoveries; one still open at the end has no recovery.
#[test]
fn spikes_after_clean_up_are_events_not_phases() {
    for spikes in [
        vec![(15_000, -3.0, 1_000)],
        vec![(14_000, 1.0, 600)],
        vec![(18_500, 2.0, 1_000)],
        vec![(13_500, -2.0, 400), (17_000, 0.5, 1_600)],
        vec![(19_000, 0.0, 1_600)],
    ] {
        let phases = detect_phases(&synthetic_curves(true, &spikes), &PhaseRule::default());
        assert_eq!(phases.lines(), vec![1382, 9400, 12600], "{spikes:?}: {}", phases.rule);
        assert_eq!(phases.events.len(), spikes.len(), "{spikes:?}: {:?}", phases.events);
        for (event, &(start, top, len)) in phases.events.iter().zip(&spikes) {
            // Up from −6 to `top` over len/2 epochs, past a tenth of the threshold (−5.9)
            // once a share 0.1/(top + 6) of the way up.
            let rise = len as f64 / 2.0;
            let expected_start = start + (0.1 * rise / (top + 6.0)).ceil() as i64;
            assert!((event.start - expected_start).abs() <= 1, "{spikes:?}: start {event:?}");
            assert!((event.peak - (start + len / 2)).abs() <= 1, "{spikes:?}: peak {event:?}");
            assert!((event.height_decades - (top + 6.0)).abs() < 0.01, "{spikes:?}: height {event:?}");
            if start + len < 20_000 {
                let back =
                    event.recovered.expect("it recovers") - (start + len - (0.1 * rise / (top + 6.0)).floor() as i64);
                assert!(back.abs() <= 1, "{spikes:?}: recovery {event:?}");
                assert_eq!(event.epochs_to_recover, event.recovered.map(|r| r - event.start));
            } else {
                assert_eq!(event.recovered, None, "{spikes:?}: {event:?}");
            }
        }
    }
    // A spike on the plateau before the fall is an event too, and leaves the lines where
    // they were but for its foot (a tenth of a decade); a wobble of half a decade after
    // clean-up is no spike.
    let phases =
        detect_phases(&synthetic_curves(true, &[(5_000, 2.0, 400), (15_000, -5.5, 400)]), &PhaseRule::default());
    assert!((phases.circuit_formation_end.unwrap() - 9400).abs() <= 50, "{:?}", phases.lines());
    assert!((phases.cleanup_end.unwrap() - 12600).abs() <= 50, "{:?}", phases.lines());
    assert_eq!(phases.events.iter().map(|e| e.peak).collect::<Vec<_>>(), vec![5200], "{:?}", phases.events);
}

/// Seconds of CPU this process has used (user + system), from /proc (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0 // utime, stime in clock ticks of 1/100 s
}

/// Wall and CPU seconds of `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let out = f();
    (out, wall.elapsed().as_secs_f64(), cpu_seconds() - cpu)
}

/// The seed's size: p = 113, d_mlp 512, 250 checkpoints (random weights: the cost does
/// not depend on them). Run with `cargo test --release --test measures -- --ignored --nocapture`;
/// `GROKLENS_THREADS=1` sets libtorch's intra-op threads first (much faster on a busy machine).
#[test]
#[ignore]
fn timing_of_a_seed_sized_run() {
    if let Ok(n) = std::env::var("GROKLENS_THREADS") {
        tch::set_num_threads(n.parse().expect("GROKLENS_THREADS is a number"));
    }
    let dir = tempfile::tempdir().unwrap();
    let config = RunConfig::seed();
    let split = Split::seeded(config.task.n_pairs(), 0.3, 598).unwrap();
    let init = HookedTransformer::new(&config.model, Device::Cpu).unwrap();
    let mut writer = RunWriter::create(dir.path().join("run"), &config, &split, &init).unwrap();
    for i in 0..250 {
        let model = HookedTransformer::new(&ModelConfig { seed: i, ..config.model.clone() }, Device::Cpu).unwrap();
        checkpoint(&mut writer, i * 100 + 99, &model);
    }
    let run = Run::load(dir.path().join("run")).unwrap();
    let task = run.config.task;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("{} intra-op threads; load average before: {}", tch::get_num_threads(), load.trim());
    let (_, wall, cpu) = timed(|| {
        for &epoch in &run.checkpoint_epochs {
            let _ = all_inputs(&run.checkpoint(epoch, Device::Cpu).unwrap(), &task).unwrap();
        }
    });
    println!("load + last_position forward, 250 checkpoints: {wall:.1} s wall, {cpu:.1} s CPU");
    let (series, wall, cpu) = timed(|| OverTraining::from_run(&run, Device::Cpu).unwrap());
    println!("over-training pass, 250 checkpoints: {wall:.1} s wall, {cpu:.1} s CPU");
    let dirs = Directions::new(View::Task, &[3, 17, 40]);
    let (keyed, wall, cpu) = timed(|| series.keyed(&dirs).unwrap());
    println!(
        "new key set: residual, excluded and restricted loss over {} checkpoints: {wall:.3} s wall, {cpu:.2} s CPU",
        keyed.excluded_loss.len()
    );
    let (_, wall, cpu) = timed(|| series.excluded_loss(&dirs).unwrap());
    println!("  of which excluded loss: {wall:.3} s wall, {cpu:.2} s CPU");
    let acts = all_inputs(&run.final_model(Device::Cpu).unwrap(), &task).unwrap();
    let (_, wall, cpu) = timed(|| neuron_freq_norm(&task, View::Task, &acts.mlp_post).unwrap());
    println!("neuron_freq_norm, one model: {wall:.2} s wall, {cpu:.2} s CPU");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average after: {}", load.trim());
}

/// Prints the analysis of a run folder: `GROKLENS_RUN=runs/x cargo test --release --test
/// measures summary -- --ignored --nocapture`.
#[test]
#[ignore]
fn summary_of_a_run_folder() {
    let Ok(dir) = std::env::var("GROKLENS_RUN") else { return };
    if let Ok(n) = std::env::var("GROKLENS_THREADS") {
        tch::set_num_threads(n.parse().expect("GROKLENS_THREADS is a number"));
    }
    let run = Run::load(&dir).unwrap();
    let task = run.config.task;
    let (series, wall, cpu) = timed(|| OverTraining::from_run(&run, Device::Cpu).unwrap());
    println!("{}: {} checkpoints in {wall:.1} s wall, {cpu:.1} s CPU", task.describe(), series.epochs.len());
    let last = series.epochs.len() - 1;
    let model = run.final_model(Device::Cpu).unwrap();
    let acts = all_inputs(&model, &task).unwrap();
    println!(
        "final: train loss {:.3e} test loss {:.3e} accuracy {:.4}/{:.4}; class collapse {:.4}; random-cube level {:.2e}",
        series.train_loss[last],
        series.test_loss[last],
        series.train_accuracy[last],
        series.test_accuracy[last],
        series.class_collapse[last],
        random_cube_level(task.p)
    );
    for view in View::BOTH {
        let v = series.view(view);
        let periodicity = logit_periodicity(&task, view, &acts.logits).unwrap();
        let mut top: Vec<(usize, f64)> = periodicity.cos_sims.iter().copied().enumerate().collect();
        top.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        let top: Vec<String> = top.iter().take(6).map(|(i, c)| format!("{}:{c:.4}", i + 1)).collect();
        println!("[{view}] top cos sims {}; residual (all k) {:.4}", top.join(" "), v.residual_all[last]);
        println!("[{view}] embedding energy {:?}; gini embed {:.3}", v.sin_cos_energy[last], v.gini_embed[last]);
        let by_logits = LogitRule::default().detect(&periodicity, &[]);
        let freq_norm = neuron_freq_norm(&task, view, &acts.mlp_post).unwrap();
        let by_neurons = NeuronRule::default().detect(&freq_norm);
        let mut maxima = freq_norm.max.clone();
        maxima.sort_by(f64::total_cmp);
        let q = |f: f64| maxima[((maxima.len() - 1) as f64 * f) as usize];
        println!(
            "[{view}] neuron max fraction quantiles 10/50/90/100%: {:.3} {:.3} {:.3} {:.3}",
            q(0.1),
            q(0.5),
            q(0.9),
            q(1.0)
        );
        println!("[{view}] key freqs by logits {:?}: {}", by_logits.freqs, by_logits.rule);
        println!("[{view}] key freqs by neurons {:?}: {}", by_neurons.freqs, by_neurons.rule);
        let keyed = series.keyed(&by_logits.directions()).unwrap();
        let cos = series.excluded_loss(&by_logits.directions().cos_only()).unwrap();
        let buggy = series.excluded_loss_seed_buggy(view, &by_logits.freqs).unwrap();
        for i in (0..series.epochs.len()).step_by((series.epochs.len() / 8).max(1)).chain([last]) {
            println!(
                "  epoch {:>6}: train {:.2e} test {:.2e} excluded {:.3e} (cos only {:.3e}, seed's {:.3e}) restricted {:.3e} residual {:.3} |W|² {:.1}",
                series.epochs[i],
                series.train_loss[i],
                series.test_loss[i],
                keyed.excluded_loss[i],
                cos[i],
                buggy[i],
                keyed.restricted_loss[i],
                keyed.residual[i],
                series.weight_norm[i]
            );
        }
    }
    let keys = LogitRule::default().detect(&series.view(View::Task).at(last), &[]);
    let curves = series.phase_curves(&run.train_losses, &run.test_losses, &run.by_cell, &keys.directions()).unwrap();
    let phases = detect_phases(&curves, &PhaseRule::default());
    println!(
        "phases {:?} {:?} {:?}; evidence {:?}",
        phases.memorisation_end, phases.circuit_formation_end, phases.cleanup_end, phases.evidence
    );
}

/// The views' overlap O_k in closed form equals the cubes' inner product summed over
/// every (a, b, c); for the seed's task it is far above the random-cube level (the
/// issue's figures: about 0.008 RMS, up to 0.031), and for a + b the views are one.
#[test]
fn the_views_overlap_as_the_closed_form_says() {
    let task = Task::power_sum(13, 4, 4);
    let (p, g) = (13i64, task.g_values());
    let overlap = view_overlap(&task);
    for k in 1..=(p - 1) / 2 {
        let theta = 2.0 * std::f64::consts::PI * k as f64 / p as f64;
        let (mut dot, mut norm_c, mut norm_t) = (0.0, 0.0, 0.0);
        for a in 0..p {
            for b in 0..p {
                for c in 0..p {
                    let standard = (theta * (a + b - c) as f64).cos();
                    let own = (theta * (g[a as usize] + g[b as usize] - c) as f64).cos();
                    (dot, norm_c, norm_t) = (dot + standard * own, norm_c + standard * standard, norm_t + own * own);
                }
            }
        }
        let brute = dot / (norm_c * norm_t).sqrt();
        assert!((brute - overlap[k as usize - 1]).abs() < 1e-12, "k = {k}: {brute} vs {}", overlap[k as usize - 1]);
    }
    let seed = view_overlap(&Task::seed());
    let rms = (seed.iter().map(|o| o * o).sum::<f64>() / seed.len() as f64).sqrt();
    let max = seed.iter().map(|o| o.abs()).fold(0.0, f64::max);
    println!("seed task: view overlap RMS {rms:.4}, max {max:.4}, random-cube level {:.5}", random_cube_level(113));
    assert!((0.0075..0.0085).contains(&rms) && (0.030..0.032).contains(&max), "RMS {rms}, max {max}");
    assert!(view_overlap(&Task::power_sum(113, 1, 1)).iter().all(|o| (o - 1.0).abs() < 1e-9));
    // The leak floors: zero for a + b, |O_k · other view's cos sim| for the seed's task.
    let cos = PerView { standard: vec![0.1; 56], task: vec![0.2; 56] };
    assert!(leaks(&Task::power_sum(113, 1, 1), &cos).standard.iter().all(|&l| l == 0.0));
    let leak = leaks(&Task::seed(), &cos);
    assert!(
        (leak.standard[0] - (seed[0] * 0.2).abs()).abs() < 1e-15
            && (leak.task[0] - (seed[0] * 0.1).abs()).abs() < 1e-15
    );
}

/// The task-view input-side fractions do not identify a frequency (the figures
/// for a neuron that is exactly cos(2πu/113)); the output-side fractions do: a neuron
/// whose logit row is a pure wave of frequency k scores 1 there and 0 elsewhere, and
/// every neuron's fractions sum to 1.
#[test]
fn neuron_frequencies_identifiable_on_the_output_side_only() {
    let task = Task::seed();
    let p = task.p;
    let g = task.g_values();
    let theta = 2.0 * std::f64::consts::PI / p as f64;
    let acts: Vec<f64> = (0..p * p).map(|i| (theta * g[(i / p) as usize] as f64).cos()).collect();
    let acts = Tensor::from_slice(&acts).view([p * p, 1]);
    let fractions = neuron_freq_norm(&task, View::Task, &acts).unwrap().norm.squeeze_dim(1);
    let at = |k: i64| fractions.double_value(&[k - 1]);
    let sum = fractions.sum(Kind::Double).double_value(&[]);
    println!("pure cos(2πu/p): k=1 {:.2}, k=31 {:.2}, k=3 {:.2}, sum {sum:.2}", at(1), at(31), at(3));
    assert!(
        (at(1) - 1.0).abs() < 1e-6
            && (at(31) - 0.32).abs() < 0.01
            && (at(3) - 0.26).abs() < 0.01
            && (sum - 4.0).abs() < 0.05
    );

    let cfg = ModelConfig::for_task(&task);
    let model = HookedTransformer::new(&cfg, Device::Cpu).unwrap();
    let freqs = neuron_logit_freq(&model).unwrap();
    let sums = freqs.norm.sum_dim_intlist(0, false, Kind::Double);
    assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-9, "fractions sum to 1");
    // W_out W_U = W_out · (W_U): make neuron n's row of the product a pure wave by
    // giving W_out one non-zero row and W_U columns cos(2πkc/p) on one direction.
    let k = 17;
    let wave: Vec<f32> = (0..p).map(|c| (theta * (k * c) as f64).cos() as f32).collect();
    let pure = model.map_parameters(|name, t| match name {
        "unembed.W_U" => {
            let u = t.zeros_like();
            u.narrow(0, 0, 1).copy_(&Tensor::from_slice(&wave).view([1, p]));
            u
        }
        _ => t.copy(),
    });
    let freqs = neuron_logit_freq(&pure).unwrap();
    let column = freqs.norm.select(1, 3);
    assert!((column.double_value(&[k - 1]) - 1.0).abs() < 1e-6, "{:?}", freqs.best_freq[3]);
    assert_eq!(freqs.best_freq[3], k);
}

/// A real groklens run's fixture (`tests/data/runs/make_fixtures.py`): its config,
/// `losses.csv` at every epoch (epoch, train loss, test loss, unseen-cell test loss) and
/// its final checkpoint.
struct RealRun {
    config: RunConfig,
    epochs: Vec<i64>,
    train_loss: Vec<f64>,
    test_loss: Vec<f64>,
    test_loss_unseen: Vec<f64>,
    model: HookedTransformer,
}

fn real_run(name: &str) -> RealRun {
    let config: RunConfig =
        serde_json::from_str(&std::fs::read_to_string(data_path(&format!("runs/{name}_config.json"))).unwrap())
            .unwrap();
    let text = std::fs::read_to_string(data_path(&format!("runs/{name}_losses.csv"))).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("epoch,train_loss,test_loss,test_loss_unseen"));
    let rows: Vec<Vec<f64>> = lines.map(|l| l.split(',').map(|v| v.parse().unwrap()).collect()).collect();
    let column = |i: usize| rows.iter().map(|r| r[i]).collect::<Vec<f64>>();
    let path = std::path::PathBuf::from(data_path(&format!("runs/{name}_final.safetensors")));
    let model = groklens::run::load_state_dict(&path, &config, Device::Cpu).unwrap();
    RealRun {
        epochs: rows.iter().map(|r| r[0] as i64).collect(),
        train_loss: column(1),
        test_loss: column(2),
        test_loss_unseen: column(3),
        config,
        model,
    }
}

impl RealRun {
    fn phases(&self, test_loss: &[f64]) -> Phases {
        let curves = PhaseCurves {
            train_loss: Curve::new(&self.epochs, &self.train_loss).unwrap(),
            test_loss: Curve::new(&self.epochs, test_loss).unwrap(),
            test_loss_name: "test loss".into(),
            excluded_loss: None,
            restricted_loss: None,
            weight_norm: None,
        };
        detect_phases(&curves, &PhaseRule::default())
    }

    /// Each view's key frequencies of the final model, on the floors `analyze` uses.
    fn key_freqs(&self) -> PerView<groklens::measures::KeyFreqs> {
        let task = self.config.task;
        let logits = all_inputs(&self.model, &task).unwrap().logits;
        let periodicity = PerView::new(|view| logit_periodicity(&task, view, &logits).unwrap());
        LogitRule::default().detect_views(&task, &periodicity)
    }
}

/// The seed's full run (25,000 epochs, trained by groklens): its test loss is all class
/// lookup but for the 137 pairs in unseen cells (0.942 accuracy on them until epoch
/// ≈7,400, 1.0 by 8,000), and it spikes by over four decades near epoch 22,900.
#[test]
fn phases_of_the_seed_run_are_read_on_its_unseen_cells_and_survive_its_spike() {
    let run = real_run("seed");
    let phases = run.phases(&run.test_loss_unseen);
    let [m, c, k] = [phases.memorisation_end, phases.circuit_formation_end, phases.cleanup_end].map(Option::unwrap);
    assert!(m < 1_000, "{:?}: {}", phases.lines(), phases.rule);
    // The unseen cells' loss starts its fall before their accuracy moves (≈7,400) and
    // ends it long before the spike.
    assert!((5_000..7_500).contains(&c) && (c + 2_000..20_000).contains(&k), "{:?}: {}", phases.lines(), phases.rule);
    assert_eq!(phases.events.len(), 1, "{:?}", phases.events);
    let spike = &phases.events[0];
    assert!((22_500..23_500).contains(&spike.peak) && spike.height_decades > 3.0, "{spike:?}");
    assert!(spike.recovered.is_some_and(|r| r < 24_500), "{spike:?}");
    // The same rule on the whole test set finds the lookup, not the unseen cells: its loss
    // is 100× smaller and the fall is of other cells.
    let all = run.phases(&run.test_loss);
    assert_ne!(all.lines(), phases.lines(), "{}", all.rule);
}

/// The seed's final model: its logits are periodic in s = u + v, and the a + b view sees
/// nothing above the floor its own leak from the task view sets.
#[test]
fn key_frequencies_of_the_seed_run_are_in_the_task_view_only() {
    let run = real_run("seed");
    let keys = run.key_freqs();
    assert!(!keys.task.freqs.is_empty(), "{}", keys.task.rule);
    assert_eq!(keys.standard.freqs, Vec::<i64>::new(), "{}", keys.standard.rule);
    let top = keys.task.evidence.iter().map(|c| c.abs()).fold(0.0, f64::max);
    let top_standard = keys.standard.evidence.iter().map(|c| c.abs()).fold(0.0, f64::max);
    assert!(top > 30.0 * top_standard, "task view's largest |cos| {top}, a + b view's {top_standard}");
}

/// The TransformerLens Grokking demo's task, (a + b) mod 113, with the seed's config,
/// trained 25,000 epochs by groklens: test loss above 20 until epoch 6,915, under 1 from
/// 11,168, under 1e-6 from 18,785. Every pair is its own cell, so the phases are read on
/// the whole test set.
#[test]
fn phases_of_the_a_plus_b_run_bracket_its_fall() {
    let run = real_run("a_plus_b");
    assert_eq!(run.test_loss_unseen, run.test_loss, "every test pair of a + b lies in an unseen cell");
    let phases = run.phases(&run.test_loss);
    let [m, c, k] = [phases.memorisation_end, phases.circuit_formation_end, phases.cleanup_end].map(Option::unwrap);
    assert!(m < 1_000, "{:?}: {}", phases.lines(), phases.rule);
    assert!((6_915..11_168).contains(&c) && (c + 1_000..=18_785).contains(&k), "{:?}: {}", phases.lines(), phases.rule);
    assert!(phases.events.is_empty(), "{:?}", phases.events);
}

/// On a + b the two views are one: the same key frequencies in both, and few of them
/// explain most of the logits.
#[test]
fn key_frequencies_of_the_a_plus_b_run_agree_in_both_views() {
    let run = real_run("a_plus_b");
    let keys = run.key_freqs();
    assert_eq!(keys.standard.freqs, keys.task.freqs, "{}", keys.task.rule);
    assert!((1..=8).contains(&keys.task.freqs.len()), "{}", keys.task.rule);
    let periodic: f64 = keys.task.evidence.iter().map(|c| c * c).sum();
    assert!(periodic > 0.9, "periodic share {periodic}");
}

/// Per Fourier row of `m` ([p, width], rows over Z_p), its squared norm, from the basis by hand.
fn row_energies(basis: &Tensor, m: &Tensor) -> Vec<f64> {
    tensor_rows(&basis.matmul(m).square().sum_dim_intlist(1, false, Kind::Double).unsqueeze(0))[0].clone()
}

/// The notebooks' key explorer for a run is the one `groklens analyze` builds: the same
/// key set and the same charts, phase lines included.
#[test]
fn key_explorer_from_a_run_is_the_analysis_one() {
    let dir = tempfile::tempdir().unwrap();
    let run = golden_models_as_a_run(&dir.path().join("run"));
    let ours = groklens::key_explorer::KeyExplorer::from_run(&run, Device::Cpu).unwrap();
    let history = groklens::import::read_history(&run.dir, run.config.task).unwrap();
    let overrides = groklens::analysis::Overrides { key_freqs: None, phases: None };
    let analysis = groklens::analysis::analyze(&history, &overrides, Device::Cpu).unwrap();
    assert_eq!(ours.keys().freqs, analysis.explorer.keys().freqs);
    let charts = |e: &groklens::key_explorer::KeyExplorer| -> Vec<String> {
        e.charts(&[2, 4]).unwrap().iter().map(|f| f.to_json()).collect()
    };
    assert_eq!(charts(&ours), charts(&analysis.explorer));
}

#[test]
fn key_explorer_shares_follow_their_definitions() {
    let dir = tempfile::tempdir().unwrap();
    let run = golden_models_as_a_run(&dir.path().join("run"));
    let over = std::rc::Rc::new(OverTraining::from_run(&run, Device::Cpu).unwrap());
    let task = tiny_task();
    let model = run.final_model(Device::Cpu).unwrap();
    let keys = groklens::measures::KeyFreqs::manual(View::Task, &[2, 4]);
    let explorer = groklens::key_explorer::KeyExplorer::new(over.clone(), &model, keys, &[99]).unwrap();
    let basis = fourier_basis(task.p).unwrap().basis;
    // By hand: W_E's rows over a, and W_out·W_U's columns over c, in the Fourier basis.
    let w_e = model.embed.W_E.narrow(0, 0, task.p).to_kind(Kind::Double);
    let w_logit = model.blocks[0].mlp.W_out.to_kind(Kind::Double).matmul(&model.unembed.W_U.to_kind(Kind::Double));
    for (share, energies) in [
        (over.embed_energy_in(&[2, 4]), row_energies(&basis, &w_e)),
        (over.logit_map_energy_in(&[2, 4]), row_energies(&basis, &w_logit.tr())),
    ] {
        let total: f64 = energies.iter().sum();
        let in_keys = energies[3] + energies[4] + energies[7] + energies[8]; // sin 2, cos 2, sin 4, cos 4
        assert_close(*share.last().unwrap(), in_keys / total, 1e-10, "energy share in K");
    }
    // Every frequency: the embedding's share is all but the constant row's; a neuron's output shares sum to 1.
    let all: Vec<i64> = (1..=(task.p - 1) / 2).collect();
    let w_e_energy = row_energies(&basis, &w_e);
    assert_close(
        *over.embed_energy_in(&all).last().unwrap(),
        1.0 - w_e_energy[0] / w_e_energy.iter().sum::<f64>(),
        1e-10,
        "share of every frequency",
    );
    assert!(explorer.neuron_share_in(&all).iter().all(|s| (s - 1.0).abs() < 1e-9 || *s == 0.0));
    let figs = explorer.charts(&[2, 4]).unwrap();
    assert_eq!(figs.len(), 5);
    assert!(explorer.charts(&[0]).is_err() && explorer.charts(&[2, 2]).is_err());
    // The chooser carries every preset's losses, equal to the crate's for that set.
    let html = explorer.chooser().unwrap().to_html();
    let start = html.find("groklensChooser(document").unwrap();
    let json = &html[html[start..].find("), ").unwrap() + start + 3..html.rfind(");\n})();").unwrap()];
    let data: Value = serde_json::from_str(json).unwrap();
    let found = &data["presets"][0];
    assert_eq!((found["name"].as_str(), found["freqs"].clone()), (Some("key set found"), serde_json::json!([2, 4])));
    let excluded = over.excluded_loss(&Directions::new(View::Task, &[2, 4])).unwrap();
    for (shown, crate_value) in f64s(&found["excluded"]).iter().zip(&excluded) {
        assert_close(*shown, *crate_value, 1e-5, "a preset's excluded loss in the page");
    }
}
