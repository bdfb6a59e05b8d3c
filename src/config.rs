//! The configuration of a run: the task, the model (TransformerLens's
//! `HookedTransformerConfig` fields) and the training, with the seed's defaults,
//! validated in one place.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::task::{Split, Task};

/// The activation of the MLP, as TransformerLens's `act_fn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActFn {
    Relu,
    Gelu,
}

/// The fields of TransformerLens's `HookedTransformerConfig` that this model uses
/// (a LayerNorm-free transformer with a causal mask).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub n_layers: i64,
    pub n_heads: i64,
    pub d_model: i64,
    pub d_head: i64,
    pub d_mlp: i64,
    pub d_vocab: i64,
    pub d_vocab_out: i64,
    pub n_ctx: i64,
    pub act_fn: ActFn,
    /// Seed of the weight initialisation (TransformerLens's `seed`).
    pub seed: i64,
}

impl ModelConfig {
    /// The seed notebook's model for a task: 1 layer, 4 heads, d_model 128,
    /// d_head 32, d_mlp 512, ReLU, vocabulary p + 1 in and p out, 3 positions.
    pub fn for_task(task: &Task) -> Self {
        ModelConfig {
            n_layers: 1,
            n_heads: 4,
            d_model: 128,
            d_head: 32,
            d_mlp: 512,
            d_vocab: task.p + 1,
            d_vocab_out: task.p,
            n_ctx: 3,
            act_fn: ActFn::Relu,
            seed: 999,
        }
    }

    /// TransformerLens's `initializer_range` for this config: 0.8 / √d_model.
    pub fn initializer_range(&self) -> f64 {
        0.8 / (self.d_model as f64).sqrt()
    }

    pub fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("d_model", self.d_model),
            ("d_head", self.d_head),
            ("d_mlp", self.d_mlp),
            ("d_vocab", self.d_vocab),
            ("d_vocab_out", self.d_vocab_out),
            ("n_ctx", self.n_ctx),
        ] {
            if value < 1 {
                return Err(Error::config(format!("{name} must be at least 1, got {value}")));
            }
        }
        Ok(())
    }
}

/// Full-batch AdamW on a seeded split, as in the seed notebook.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub frac_train: f64,
    pub data_seed: i64,
    pub lr: f64,
    pub weight_decay: f64,
    pub betas: (f64, f64),
    pub num_epochs: i64,
    pub checkpoint_every: i64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            frac_train: 0.3,
            data_seed: 598,
            lr: 1e-3,
            weight_decay: 1.0,
            betas: (0.9, 0.98),
            num_epochs: 25_000,
            checkpoint_every: 100,
        }
    }
}

impl TrainConfig {
    /// The train/test split of `task`'s pairs this config trains on.
    pub fn split(&self, task: &Task) -> Result<Split> {
        Split::seeded(task.n_pairs(), self.frac_train, self.data_seed)
    }

    pub fn validate(&self) -> Result<()> {
        if !(self.frac_train > 0.0 && self.frac_train < 1.0) {
            return Err(Error::config(format!(
                "frac_train must lie strictly between 0 and 1, got {}",
                self.frac_train
            )));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::config(format!("lr must be a positive number, got {}", self.lr)));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::config(format!("weight_decay must be a number ≥ 0, got {}", self.weight_decay)));
        }
        let (b1, b2) = self.betas;
        if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
            return Err(Error::config(format!("betas must lie in [0, 1), got ({b1}, {b2})")));
        }
        if self.num_epochs < 1 {
            return Err(Error::config(format!("num_epochs must be at least 1, got {}", self.num_epochs)));
        }
        if self.checkpoint_every < 1 {
            return Err(Error::config(format!("checkpoint_every must be at least 1, got {}", self.checkpoint_every)));
        }
        Ok(())
    }
}

/// Everything needed to reproduce a run; saved as the run folder's `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub task: Task,
    pub model: ModelConfig,
    pub train: TrainConfig,
}

impl RunConfig {
    /// The train/test split this config trains on (what a run folder's `split.json` holds).
    pub fn split(&self) -> Result<Split> {
        self.train.split(&self.task)
    }

    /// The seed notebook's run, for another task.
    pub fn for_task(task: Task) -> Self {
        RunConfig { task, model: ModelConfig::for_task(&task), train: TrainConfig::default() }
    }

    /// The seed notebook's run: (a^4 + b^4) mod 113 with every default.
    pub fn seed() -> Self {
        RunConfig::for_task(Task::seed())
    }

    /// The TransformerLens Grokking demo's run, which the seed adapted: (a + b) mod 113
    /// with every other setting the same.
    pub fn grokking_demo() -> Self {
        RunConfig::for_task(Task::power_sum(113, 1, 1))
    }

    /// A name for this config's run folder, unique to the whole config: readable parts
    /// and a hash of the rest, as `p113-a4-b4-seed999-25000ep-3f2a9c01d4e7`.
    pub fn id(&self) -> String {
        let term = |var: &str, t: &crate::task::Term| match t.coeff {
            1 => format!("{var}{}", t.power),
            c => format!("{c}{var}{}", t.power),
        };
        let (task, train) = (&self.task, &self.train);
        let json = serde_json::to_string(self).expect("a config serialises");
        // FNV-1a, 64 bits: stable across builds and platforms, unlike std's hasher.
        let hash = json.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
        format!(
            "p{}-{}-{}-seed{}-{}ep-{:012x}",
            task.p,
            term("a", &task.g),
            term("b", &task.h),
            self.model.seed,
            train.num_epochs,
            hash >> 16
        )
    }

    /// Checks each part and that they fit together.
    pub fn validate(&self) -> Result<()> {
        self.task.validate()?;
        self.model.validate()?;
        self.train.validate()?;
        let p = self.task.p;
        if self.model.d_vocab != p + 1 || self.model.d_vocab_out != p {
            return Err(Error::config(format!(
                "the model's vocabulary ({} in, {} out) does not fit p = {p} (needs {} in, {p} out)",
                self.model.d_vocab,
                self.model.d_vocab_out,
                p + 1
            )));
        }
        if self.model.n_ctx != 3 {
            return Err(Error::config(format!(
                "the task's inputs are 3 tokens long, but n_ctx is {}",
                self.model.n_ctx
            )));
        }
        Ok(())
    }
}
