//! What several test binaries share.

use groklens::{ModelConfig, RunConfig, Task};

/// A small seed-shaped run of `task`: d_model 16, 2 heads of 8, d_mlp 32.
pub fn tiny(task: Task, seed: i64, frac_train: f64, weight_decay: f64) -> RunConfig {
    let mut cfg = RunConfig::for_task(task);
    cfg.model = ModelConfig { d_model: 16, d_head: 8, n_heads: 2, d_mlp: 32, seed, ..cfg.model };
    (cfg.train.frac_train, cfg.train.weight_decay) = (frac_train, weight_decay);
    cfg
}
