//! A stack of runs computes what each run computes alone. Its own test binary, so that
//! it can pin libtorch to one intra-op thread before any work: with two threads some CPU
//! kernels are not deterministic, and a rare run under load once drifted past the bound
//! from that alone.

use groklens::trainer::{Epoch, Trainer};
use groklens::{HookedTransformer, Split, Task};
use tch::Device;

mod common;
use common::tiny;

/// Each run's losses alone and in stacks of two (the first two runs stacked, the third
/// in a stack of its own) agree to 1e-6 relative over 200 epochs (the same arithmetic,
/// batched; a small model is not chaotic at this scale).
#[test]
fn a_stack_trains_each_run_as_if_alone() {
    tch::set_num_threads(1);
    let configs = [
        tiny(Task::power_sum(11, 2, 3), 1, 0.5, 1.0),
        tiny(Task::power_sum(11, 1, 1), 2, 0.3, 0.1),
        tiny(Task::power_sum(11, 4, 4), 3, 0.7, 2.0),
    ];
    let splits: Vec<Split> = configs
        .iter()
        .map(|c| Split::seeded(c.task.n_pairs(), c.train.frac_train, c.train.data_seed).unwrap())
        .collect();
    let models: Vec<HookedTransformer> =
        configs.iter().map(|c| HookedTransformer::new(&c.model, Device::Cpu).unwrap()).collect();
    let runs: Vec<_> = (0..3).map(|i| (&configs[i], &models[i], &splits[i])).collect();
    let together = Trainer::in_stacks_of(&runs, 2).unwrap().train_epochs(200).unwrap();
    let alone: Vec<Vec<Vec<Epoch>>> =
        runs.iter().map(|(c, m, s)| Trainer::new(c, m, s).unwrap().train_epochs(200).unwrap()).collect();
    let mut worst: f64 = 0.0;
    for (epoch, together) in together.iter().enumerate() {
        for (i, alone) in alone.iter().enumerate() {
            let (ours, theirs) = (together[i], alone[epoch][0]);
            let pairs = [(ours.train_loss, theirs.train_loss), (ours.test_loss, theirs.test_loss)];
            for (ours, theirs) in pairs.into_iter().chain(ours.by_cell.into_iter().zip(theirs.by_cell)) {
                if ours.is_nan() && theirs.is_nan() {
                    continue;
                }
                let gap = (ours - theirs).abs() / theirs.abs().max(1e-300);
                worst = worst.max(gap);
                assert!(gap < 1e-6, "run {i}, epoch {epoch}: stacked {ours} vs alone {theirs}");
            }
        }
    }
    eprintln!("largest relative gap between stacked and single runs over 200 epochs: {worst:.1e}");
}
