//! groklens's training loop against the seed's (benches/seed_loop.py, TransformerLens),
//! side by side in one run, alternating, on the same machine:
//!
//!     bash scripts/setup.sh --reference && source scripts/env.sh
//!     cargo bench --bench train_vs_seed -- [--device cpu|cuda] [--epochs 40] [--rounds 3] [--stacks 1,4,16]
//!
//! Prints seconds per epoch of each (seed config, test loss every epoch, start-up
//! excluded), their ratio, and the floor: the time libtorch takes for the matrix
//! products of groklens's formulation alone, the same shapes and transposes as an
//! epoch's, timed in turns with groklens's epochs; ratios are medians of each round's.
//! Then the throughput of N seed-config runs (seeds 1..N) trained together, in
//! model-epochs per second, each timed in turns with one run's: as `Trainer::stacked`
//! trains them on the device, and as one stack of N. Last, early against late epochs:
//! the same epochs, in turns, from the initial weights and from the final weights of a
//! full run (tests/data/runs: the seed task and a + b), so that a slowdown as the model
//! trains (denormal floats, say) would show.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use groklens::device::parse_device;
use groklens::run::load_state_dict;
use groklens::trainer::Trainer;
use groklens::{HookedTransformer, RunConfig, Split};
use tch::{Device, Kind, Tensor};

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_string())
}

fn synchronize(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// The seed's loop, in a fresh Python process: its own s/epoch, start-up excluded.
fn seed_seconds_per_epoch(device: &str, epochs: i64) -> f64 {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/seed_loop.py");
    let out = Command::new("python3").args([script, device, &epochs.to_string()]).output().expect("python runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let found = text.split_whitespace().find_map(|w| w.strip_prefix("s/epoch=")).and_then(|v| v.parse().ok());
    found.unwrap_or_else(|| {
        panic!(
            "seed_loop.py printed no s/epoch (is TransformerLens installed? scripts/setup.sh --reference):\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A trainer of `n` seed-config runs (seeds 1..=n), in stacks of `stack_size` (`None`:
/// as `Trainer::stacked` stacks them on the device).
fn trainer(cfg: &RunConfig, split: &Split, device: Device, n: i64, stack_size: Option<usize>) -> Trainer {
    let configs: Vec<RunConfig> = (1..=n)
        .map(|seed| {
            let mut c = cfg.clone();
            c.model.seed = seed;
            c
        })
        .collect();
    let models: Vec<HookedTransformer> =
        configs.iter().map(|c| HookedTransformer::new(&c.model, device).expect("seed config")).collect();
    let runs: Vec<_> = configs.iter().zip(&models).map(|(c, m)| (c, m, split)).collect();
    match stack_size {
        Some(size) => Trainer::in_stacks_of(&runs, size),
        None => Trainer::stacked(&runs),
    }
    .expect("one shape")
}

/// Model-epochs per second of `n` runs trained by `many` and of one run, in turns.
fn per_model_against_one_run(
    many: &mut Trainer,
    n: i64,
    cfg: &RunConfig,
    split: &Split,
    device: Device,
    epochs: i64,
) -> (f64, f64) {
    let mut one = trainer(cfg, split, device, 1, None);
    let (t_many, t_one) = in_turns(
        &mut || drop(many.step().expect("an epoch")),
        &mut || drop(one.step().expect("an epoch")),
        device,
        epochs,
    );
    (n as f64 / t_many, 1.0 / t_one)
}

/// One run's epochs from its initial weights and from `trained` (AdamW's moments
/// start at zero in both), in turns, over `rounds`: medians, in s/epoch.
fn early_and_late(fixture: &str, device: Device, epochs: i64, rounds: usize) -> (f64, f64) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/runs");
    let text = std::fs::read_to_string(dir.join(format!("{fixture}_config.json"))).expect("fixture config");
    let cfg: RunConfig = serde_json::from_str(&text).expect("a run config");
    let split = Split::seeded(cfg.task.n_pairs(), cfg.train.frac_train, cfg.train.data_seed).expect("its split");
    let (mut early, mut late) = (vec![], vec![]);
    for _ in 0..rounds {
        let init = HookedTransformer::new(&cfg.model, device).expect("its model");
        let trained =
            load_state_dict(&dir.join(format!("{fixture}_final.safetensors")), &cfg, device).expect("weights");
        let mut from_init = Trainer::new(&cfg, &init, &split).expect("one run");
        let mut from_trained = Trainer::new(&cfg, &trained, &split).expect("one run");
        let (e, l) = in_turns(
            &mut || drop(from_init.step().expect("an epoch")),
            &mut || drop(from_trained.step().expect("an epoch")),
            device,
            epochs,
        );
        (early.push(e), late.push(l));
    }
    (median(&mut early), median(&mut late))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The matrix products of one epoch of groklens's formulation, seed config, one run,
/// each a product over all the rows it covers, with its operands transposed as the
/// epoch's are; and their FLOPs. Every row: post·(W_out·W_U), and on a GPU (narrow
/// tables) resid_mid·W_in and resid_mid·W_U too; every training row, backward: the
/// gradients of W_out·W_U, post, W_in, resid_mid (through W_U and W_in), W_U, W_O and z.
/// The small products of the tables (rows = tokens, not inputs) are left out.
struct Products {
    run: Box<dyn Fn()>,
    flops: f64,
}

fn products(cfg: &RunConfig, split: &Split, device: Device) -> Products {
    let m = &cfg.model;
    let (all, train) = ((split.train.len() + split.test.len()) as i64, split.train.len() as i64);
    let (d, d_mlp, d_out, he) = (m.d_model, m.d_mlp, m.d_vocab_out, m.n_heads * m.d_head);
    let t = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, device));
    let tr = |x: &Tensor| x.transpose(1, 2);
    let narrow = device != Device::Cpu;
    let (post_all, resid_all, w_logit, w_in, w_u) =
        (t(&[1, all, d_mlp]), t(&[1, all, d]), t(&[1, d_mlp, d_out]), t(&[1, d, d_mlp]), t(&[1, d, d_out]));
    let (post, resid, g, d_pre, z, w_o) = (
        t(&[1, train, d_mlp]),
        t(&[1, train, d]),
        t(&[1, train, d_out]),
        t(&[1, train, d_mlp]),
        t(&[1, train, he]),
        t(&[1, he, d]),
    );
    let run = move || {
        let _ = post_all.bmm(&w_logit);
        if narrow {
            let _ = (resid_all.bmm(&w_in), resid_all.bmm(&w_u));
        }
        let _ = tr(&post).bmm(&g); // W_out·W_U
        let _ = g.bmm(&tr(&w_logit)); // post
        let _ = tr(&resid).bmm(&d_pre); // W_in
        let d_resid = g.bmm(&tr(&w_u)).baddbmm(&d_pre, &tr(&w_in), 1, 1); // resid_mid
        let _ = tr(&resid).bmm(&g); // W_U
        let _ = d_resid.bmm(&tr(&w_o)); // z
        let _ = tr(&z).bmm(&d_resid); // W_O
    };
    let per_row = d_mlp * d_out + if narrow { d * (d_mlp + d_out) } else { 0 };
    let per_train_row = 2 * d_mlp * d_out + d * d_mlp + (d_mlp + d_out) * d + d * d_out + 2 * he * d;
    Products { run: Box::new(run), flops: 2.0 * (per_row * all + per_train_row * train) as f64 }
}

/// Seconds per epoch of one seed-config run (seed 1) and of `products` alone, in turns.
fn against_floor(cfg: &RunConfig, split: &Split, device: Device, epochs: i64, products: &Products) -> (f64, f64) {
    let model = HookedTransformer::new(&cfg.model, device).expect("seed config");
    let mut trainer = Trainer::new(cfg, &model, split).expect("one run");
    in_turns(&mut || drop(trainer.step().expect("an epoch")), &mut || (products.run)(), device, epochs)
}

/// Seconds per call of `a` and of `b`, each called `epochs` times (rounded up to whole
/// turns) in turns of five after five warm-up calls, so that both see the machine as
/// it is: this machine's speed drifts more from minute to minute than some of the
/// differences measured.
fn in_turns(a: &mut dyn FnMut(), b: &mut dyn FnMut(), device: Device, epochs: i64) -> (f64, f64) {
    for _ in 0..5 {
        (a(), b());
    }
    let (turn, turns) = (5, (epochs + 4) / 5);
    let (mut time_a, mut time_b) = (0.0, 0.0);
    let timed = |f: &mut dyn FnMut()| {
        synchronize(device);
        let start = Instant::now();
        for _ in 0..turn {
            f();
        }
        synchronize(device);
        start.elapsed().as_secs_f64()
    };
    for _ in 0..turns {
        time_a += timed(a);
        time_b += timed(b);
    }
    let calls = (turns * turn) as f64;
    (time_a / calls, time_b / calls)
}

fn main() {
    let device_name = arg("--device", "cpu");
    let epochs: i64 = arg("--epochs", "40").parse().expect("--epochs N");
    let rounds: usize = arg("--rounds", "3").parse().expect("--rounds N");
    let stacks: Vec<i64> = arg("--stacks", "1,4,16").split(',').map(|n| n.parse().expect("--stacks N,N")).collect();
    let device = parse_device(&device_name).unwrap_or_else(|e| panic!("{e}"));
    let cfg = RunConfig::seed();
    let split = Split::seeded(cfg.task.n_pairs(), cfg.train.frac_train, cfg.train.data_seed).expect("seed split");

    let products = products(&cfg, &split, device);
    let (mut ours, mut seeds, mut floors, mut to_seed, mut to_floor) = (vec![], vec![], vec![], vec![], vec![]);
    for round in 1..=rounds {
        let seed = seed_seconds_per_epoch(&device_name, epochs);
        let (mine, floor) = against_floor(&cfg, &split, device, epochs, &products);
        println!(
            "round {round}: seed loop {seed:.4} s/epoch, groklens {mine:.4} s/epoch, ratio {:.1}×; floor {floor:.4} s/epoch, groklens at {:.2}× the floor",
            seed / mine,
            mine / floor
        );
        (seeds.push(seed), ours.push(mine), floors.push(floor));
        (to_seed.push(seed / mine), to_floor.push(mine / floor));
    }
    let (seed, mine, floor) = (median(&mut seeds), median(&mut ours), median(&mut floors));
    println!(
        "medians over {rounds} rounds of {epochs} epochs on {device_name}: seed loop {seed:.4} s/epoch, groklens {mine:.4} s/epoch (25,000 epochs: {:.0} s vs {:.0} s), ratio {:.1}×",
        seed * 25_000.0,
        mine * 25_000.0,
        median(&mut to_seed)
    );
    println!(
        "floor: the epoch's matrix products alone, {:.2} GFLOP, {floor:.4} s/epoch ({:.0} GFLOP/s), {:.0} model-epochs/s; groklens is at {:.2}× the floor",
        products.flops / 1e9,
        products.flops / 1e9 / floor,
        1.0 / floor,
        median(&mut to_floor)
    );

    // Each against one run in turns, so that the machine's drift does not pass for a
    // difference between them.
    for &n in &stacks {
        let mut as_trained = trainer(&cfg, &split, device, n, None);
        let (trained, one_a) = per_model_against_one_run(&mut as_trained, n, &cfg, &split, device, epochs);
        drop(as_trained);
        let mut one_stack = trainer(&cfg, &split, device, n, Some(n as usize));
        let (stacked, one_b) = per_model_against_one_run(&mut one_stack, n, &cfg, &split, device, epochs);
        println!(
            "{n} runs: as trained {trained:.1} model-epochs/s, {:.2}× one run's in turns ({one_a:.1}); as one stack {stacked:.1}, {:.2}× one run's ({one_b:.1}); the seed loop: {:.1}",
            trained / one_a,
            stacked / one_b,
            1.0 / seed
        );
    }

    for (fixture, task) in [("seed", "(a^4 + b^4) mod 113"), ("a_plus_b", "(a + b) mod 113")] {
        let (early, late) = early_and_late(fixture, device, epochs, rounds);
        println!(
            "{task}: from the initial weights {early:.4} s/epoch, from the weights after 25,000 epochs {late:.4} s/epoch, late/early {:.2}",
            late / early
        );
    }
}
