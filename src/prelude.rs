//! What a notebook cell needs, in one line: `use groklens::prelude::*;`.

pub use std::path::Path;
pub use std::rc::Rc;

pub use crate::algorithm::{self, Terms};
pub use crate::analysis::{analyze, Overrides};
pub use crate::arrays::{s, to_array1, to_array2, to_tensor, Array1, Array2, Axis};
pub use crate::config::{ActFn, ModelConfig, RunConfig, TrainConfig};
pub use crate::coverage::Coverage;
pub use crate::fourier::{fold_freq, fourier_basis, PerView, View};
pub use crate::import::read_history;
pub use crate::key_explorer::KeyExplorer;
pub use crate::loss::loss_fn;
pub use crate::measures::{self, all_inputs, Directions, KeyFreqs, LogitRule, NeuronRule, OverTraining, Subset};
pub use crate::model::HookedTransformer;
pub use crate::one_layer::last_logits;
pub use crate::phases::{self, Phases};
pub use crate::plot::{self, imshow, imshow_facets, imshow_slider, line, scatter, show_all, Figure};
pub use crate::run::{train_or_load, Run};
pub use crate::series::{abs, at_epochs, every, every_epoch, freq_names, freq_rows, sorted};
pub use crate::task::{Split, Task};
pub use crate::tch::{self, Device, Kind, Tensor};
