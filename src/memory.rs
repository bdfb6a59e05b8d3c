//! What training or analysing a config needs in memory, estimated from p, the
//! widths and the number of models before anything is allocated, so that a config
//! that cannot fit gets one line instead of the out-of-memory killer.
//!
//! The estimates count the tensors that grow with the task (the largest live at
//! once, float32 unless said), not libtorch's own few hundred MB: they are lower
//! bounds, meant to reject what cannot fit, not to promise that the rest does.
//! Measured peaks are in BENCHMARKS.md.

use tch::Device;

use crate::config::{ModelConfig, RunConfig};
use crate::error::{Error, Result};

/// Bytes that training `configs` as one stack needs at its peak.
pub fn training_bytes(configs: &[&RunConfig]) -> u64 {
    configs.iter().map(|c| training_bytes_of_one(c)).sum()
}

fn training_bytes_of_one(config: &RunConfig) -> u64 {
    let m = &config.model;
    let pairs = config.task.n_pairs() as f64;
    let n_train = pairs * config.train.frac_train;
    let (vocab, out, mlp, d, pos) =
        (m.d_vocab as f64, m.d_vocab_out as f64, m.d_mlp as f64, m.d_model as f64, m.n_ctx as f64);
    let head_columns = (m.n_heads * m.d_head) as f64;
    // Per training input: its logits (float32), log-probabilities and their gradient
    // (float64), the gradient in float32; MLP activations, their gradient and the
    // input's gradient; resid_mid and its gradient; the values it read, and theirs.
    let per_train_input = out * (4.0 + 8.0 + 8.0 + 4.0) + mlp * 12.0 + d * 12.0 + pos * head_columns * 8.0;
    // Per input: the dataset, its labels, the split and the table lookups (int64).
    let per_input = 8.0 * 8.0 + (pos * m.n_heads as f64) * 16.0;
    // The score table per (position, key token, query token, head), a copy, and its gradient.
    let scores = pos * vocab * vocab * m.n_heads as f64 * 4.0 * 3.0;
    // The summed rows per (position, token, head), as wide as the MLP input, the logits
    // (padded to 16 floats) and the residual stream, twice (with and without resid_mid).
    let rows = (pos * vocab * m.n_heads as f64 + vocab) * (mlp + out + 16.0 + d) * 4.0 * 2.0;
    (n_train * per_train_input + pairs * per_input + scores + rows) as u64
}

/// Bytes that analysing `checkpoints` checkpoints of a model of `model` on a task
/// with `n_pairs` pairs, `n_train` of them trained on, needs at its peak.
pub fn analysis_bytes(model: &ModelConfig, n_pairs: i64, n_train: usize, checkpoints: usize) -> u64 {
    let (pairs, p, mlp, d) = (n_pairs as f64, model.d_vocab_out as f64, model.d_mlp as f64, model.d_model as f64);
    // One checkpoint's pass over every input: its logits (float32 and float64, and the
    // ablations' float64 work on them), MLP activations and resid_mid.
    let pass = pairs * (p * (4.0 + 8.0 + 8.0) + (mlp + d) * 4.0 * 2.0);
    // Kept per checkpoint for re-keying: the training inputs' logits, two p × p maps.
    let kept = n_train as f64 * p * 4.0 + 2.0 * p * p * 8.0;
    (pass + checkpoints as f64 * kept) as u64
}

/// Fails with one line when training `configs` on `device` cannot fit.
pub fn check_training_fits(configs: &[&RunConfig], device: Device) -> Result<()> {
    let what = match configs {
        [one] => format!("training p = {}", one.task.p),
        many => format!("training {} runs of p = {} together", many.len(), many.first().map_or(0, |c| c.task.p)),
    };
    check_fits(&what, training_bytes(configs), device)
}

/// Fails with one line when `bytes` cannot fit in what `device` has free.
pub fn check_fits(what: &str, bytes: u64, device: Device) -> Result<()> {
    let Some(free) = available_bytes(device) else {
        return Ok(());
    };
    if bytes > free {
        return Err(Error::config(format!(
            "{what} needs at least {} of memory and {device:?} has {} available",
            gib(bytes),
            gib(free)
        )));
    }
    Ok(())
}

/// Memory available to a new allocation: the CPU's `MemAvailable`. Unknown (`None`)
/// for GPUs, where libtorch reports its own out-of-memory error, and off Linux.
fn available_bytes(device: Device) -> Option<u64> {
    if device != Device::Cpu {
        return None;
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Task;

    #[test]
    fn the_seed_run_is_small_and_a_huge_p_is_not() {
        let seed = RunConfig::seed();
        let bytes = training_bytes(&[&seed]);
        assert!((30 << 20..300 << 20).contains(&bytes), "seed run: {bytes} bytes");
        assert_eq!(training_bytes(&[&seed, &seed]), 2 * bytes);
        let huge = RunConfig::for_task(Task::power_sum(46_000, 4, 4));
        assert!(training_bytes(&[&huge]) > 1 << 40);
        assert!(check_fits("it", u64::MAX, Device::Cpu).unwrap_err().to_string().contains("needs at least"));
        let analysis = analysis_bytes(&seed.model, seed.task.n_pairs(), 3830, 250);
        assert!((300 << 20..3 << 30).contains(&analysis), "seed analysis: {analysis} bytes");
    }
}
