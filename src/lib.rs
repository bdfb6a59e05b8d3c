//! groklens: train small transformers on modular arithmetic, watch them grok, and
//! take them apart with TransformerLens's tools, from Rust.
//!
//! Data flows one way: [`task`] → [`model`] (+ [`hooks`]) → [`train`] → [`run`]
//! (a folder on disk) → analysis → charts.
//!
//! Two process-wide settings come with training: on the CPU the C heap keeps freed
//! blocks ([`heap`]), and on a GPU the training thread works on a side stream while a
//! trainer lives ([`cuda_graph`]). [`Trainer`](trainer::Trainer) says when.

pub mod adamw;
pub mod algorithm;
pub mod analysis;
pub mod arrays;
mod attention_grad;
mod batches;
pub mod config;
pub mod coverage;
mod cpu_loops;
mod cuda_graph;
pub mod device;
pub mod error;
pub mod fourier;
mod gradient;
pub mod grid;
mod heap;
pub mod hooks;
pub mod import;
pub mod key_explorer;
pub mod loss;
pub mod measures;
pub mod memory;
pub mod model;
pub mod one_layer;
pub mod phases;
pub mod plot;
pub mod prelude;
mod progress;
pub mod pth;
pub mod report;
pub mod rng;
mod row_loss;
mod row_sums;
pub mod run;
pub mod series;
pub mod sweep;
pub mod task;
pub mod train;
pub mod trainer;

pub use tch;

pub use config::{ActFn, ModelConfig, RunConfig, TrainConfig};
pub use error::{Error, Result};
pub use hooks::{ActivationCache, HookPoint};
pub use model::HookedTransformer;
pub use one_layer::{last_logits, last_position, LastPosition};
pub use run::{train_or_load, Run, RunWriter};
pub use task::{Split, Task, Term};
