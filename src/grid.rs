//! A grid of runs: every combination of lists of values, each a whole [`RunConfig`]
//! of the seed's defaults otherwise, in a fixed order (the grid's `run-000`, …).

use crate::config::RunConfig;
use crate::error::Result;
use crate::task::{Task, Term};

/// Lists of values to combine; one value each is a single run.
#[derive(Clone, Debug)]
pub struct Grid {
    pub p: i64,
    /// Exponents of a and of b.
    pub m: Vec<u32>,
    pub n: Vec<u32>,
    pub frac_train: Vec<f64>,
    pub data_seed: Vec<i64>,
    /// Seeds of the weight initialisation.
    pub seed: Vec<i64>,
    pub lr: Vec<f64>,
    pub weight_decay: Vec<f64>,
    pub epochs: i64,
    pub checkpoint_every: i64,
}

impl Grid {
    /// Every combination, m slowest and seed fastest, each validated.
    pub fn configs(&self) -> Result<Vec<RunConfig>> {
        let mut configs = Vec::new();
        for &m in &self.m {
            for &n in &self.n {
                let task = Task { p: self.p, g: Term::power(m), h: Term::power(n) };
                task.validate()?;
                for &frac_train in &self.frac_train {
                    for &data_seed in &self.data_seed {
                        for &lr in &self.lr {
                            for &weight_decay in &self.weight_decay {
                                for &seed in &self.seed {
                                    let mut config = RunConfig::for_task(task);
                                    config.model.seed = seed;
                                    let t = &mut config.train;
                                    (t.frac_train, t.data_seed, t.lr, t.weight_decay) =
                                        (frac_train, data_seed, lr, weight_decay);
                                    (t.num_epochs, t.checkpoint_every) = (self.epochs, self.checkpoint_every);
                                    config.validate()?;
                                    configs.push(config);
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(configs)
    }
}
