//! groklens: train small transformers on modular arithmetic, watch them grok, and
//! take them apart with TransformerLens's tools, from Rust.
//!
//! Data flows one way: [`task`] → [`model`] (+ [`hooks`]) → [`train`] → [`run`]
//! (a folder on disk) → analysis → charts.

pub mod adamw;
pub mod analysis;
pub mod config;
mod cuda_graph;
pub mod device;
pub mod error;
pub mod fourier;
mod gradient;
mod heap;
pub mod hooks;
pub mod import;
pub mod measures;
pub mod memory;
pub mod model;
pub mod phases;
pub mod plot;
pub mod pth;
pub mod report;
pub mod run;
pub mod task;
mod token_tables;
pub mod train;

pub use tch;

pub use config::{ActFn, ModelConfig, RunConfig, TrainConfig};
pub use error::{Error, Result};
pub use hooks::{act_name, ActivationCache};
pub use model::HookedTransformer;
pub use run::{train_or_load, Run, RunWriter};
pub use task::{Split, Task, Term};
