//! Measures of one model, TransformerLens-style, in either [`View`](crate::fourier::View),
//! and the same measures as series over a run's checkpoints.
//!
//! Every measure reads the last position (the `=` token) over all p² inputs, listed
//! a-major as [`Task::dataset`] does ([`all_inputs`]), and computes in float64 on the CPU.
//! Nothing here builds a tensor bigger than the logits (p² × p): sums over (a, b) of
//! functions of the view's sum s first add up the inputs within each class of s
//! (p classes), then work on p × p.

pub mod ablation;
pub mod key_freqs;
pub mod key_sets;
pub mod logits;
pub mod neurons;
pub mod over_training;
pub mod weights;

pub use ablation::{
    excluded_loss, excluded_loss_seed_buggy, restricted_loss, Ablation, Directions, LogitParts, Projection, Subset,
};
pub use key_freqs::{check_key_freqs, leaks, KeyFreqs, LogitRule, NeuronRule};
pub use key_sets::{frequency_orbits, KeySet};
pub use logits::{
    class_share, logit_periodicity, random_cube_cos_sim, random_cube_level, view_overlap, ClassShare, LogitPeriodicity,
};
pub use neurons::{neuron_fourier, neuron_freq_norm, neuron_logit_freq, NeuronFourier, NeuronFreqNorm};
pub use over_training::{KeyedSeries, OverTraining, ViewSeries};
pub use weights::{
    accuracy, class_collapse, embed_fourier_norms, freq_shares, gini, logit_map_fourier_norms, sin_cos_energy,
    weight_norm, SinCosEnergy,
};

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::model::HookedTransformer;
use crate::one_layer::{last_position, LastPosition};
use crate::task::Task;

/// The last position over all p² inputs of `task`, a-major, without gradients.
pub fn all_inputs(model: &HookedTransformer, task: &Task) -> Result<LastPosition> {
    tch::no_grad(|| last_position(model, &task.dataset().to_device(model.device())))
}

/// A float64 CPU copy.
pub(crate) fn f64_cpu(t: &Tensor) -> Tensor {
    t.detach().to_device(Device::Cpu).to_kind(Kind::Double)
}

/// The values of a float tensor, flattened.
pub(crate) fn to_vec(t: &Tensor) -> Result<Vec<f64>> {
    Ok(Vec::<f64>::try_from(f64_cpu(t).flatten(0, -1))?)
}

/// Checks that `t` is `[p², width]` for the task: activations over all inputs.
pub(crate) fn check_all_inputs(t: &Tensor, task: &Task, what: &str) -> Result<()> {
    let size = t.size();
    if size.len() != 2 || size[0] != task.n_pairs() {
        return Err(Error::config(format!(
            "{what} must be [p², ·] = [{}, ·] over all inputs a-major, got {size:?}",
            task.n_pairs()
        )));
    }
    Ok(())
}

/// The neuron-to-logit map W_out · W_U of the last block, `[d_mlp, d_vocab_out]` float64.
pub fn w_logit(model: &HookedTransformer) -> Tensor {
    let mlp = &model.blocks.last().expect("a model has at least one block").mlp;
    f64_cpu(&mlp.W_out).matmul(&f64_cpu(&model.unembed.W_U))
}
