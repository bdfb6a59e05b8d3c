//! A grid of runs: every combination of lists of values, each a whole [`RunConfig`]
//! of the seed's defaults otherwise, in a fixed order (the grid's `run-000`, …, a
//! sweep's plan).

use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::task::{Task, Term};

/// Lists of values to combine; one value each is a single run.
#[derive(Clone, Debug)]
pub struct Grid {
    pub p: Vec<i64>,
    /// Exponents (m, n) of a and of b, as pairs: [`Grid::cross`] makes every pair of two lists.
    pub exponents: Vec<(u32, u32)>,
    pub frac_train: Vec<f64>,
    pub data_seed: Vec<i64>,
    /// Seeds of the weight initialisation.
    pub seed: Vec<i64>,
    pub lr: Vec<f64>,
    pub weight_decay: Vec<f64>,
    pub epochs: Vec<i64>,
    pub checkpoint_every: Vec<i64>,
}

/// Every pair (m, n) of `m` × `n`, m slowest.
pub fn cross(m: &[u32], n: &[u32]) -> Vec<(u32, u32)> {
    m.iter().flat_map(|&m| n.iter().map(move |&n| (m, n))).collect()
}

impl Grid {
    /// Every combination, in the order of the fields (p slowest, checkpoint interval
    /// then seed fastest), each validated. Two equal runs are an error.
    pub fn configs(&self) -> Result<Vec<RunConfig>> {
        let (mut configs, mut ids) = (vec![], std::collections::HashSet::new());
        for &p in &self.p {
            for &(m, n) in &self.exponents {
                let task = Task { p, g: Term::power(m), h: Term::power(n) };
                task.validate()?;
                for &frac_train in &self.frac_train {
                    for &data_seed in &self.data_seed {
                        for &lr in &self.lr {
                            for &weight_decay in &self.weight_decay {
                                for &epochs in &self.epochs {
                                    for &checkpoint_every in &self.checkpoint_every {
                                        for &seed in &self.seed {
                                            let mut config = RunConfig::for_task(task);
                                            config.model.seed = seed;
                                            let t = &mut config.train;
                                            (t.frac_train, t.data_seed, t.lr, t.weight_decay) =
                                                (frac_train, data_seed, lr, weight_decay);
                                            (t.num_epochs, t.checkpoint_every) = (epochs, checkpoint_every);
                                            config.validate()?;
                                            if !ids.insert(config.id()) {
                                                return Err(Error::config(format!(
                                                    "the run {} comes twice: an axis repeats a value",
                                                    config.id()
                                                )));
                                            }
                                            configs.push(config);
                                        }
                                    }
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
