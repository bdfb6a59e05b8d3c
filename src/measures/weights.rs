//! Measures of the weights and of the predictions: Gini coefficients of Fourier
//! norms, the total squared weight, accuracy, the sine/cosine split of the
//! embedding and how far the embedding collapses the classes of g.
//!
//! The embedding is W_E[:-1] (the p number tokens, not `=`). In the task view it is
//! read as the first input's, through g: F_x W_E with F_x[i, a] = F[i, g(a)], which is
//! Σ_u F[i, u] Σ_{a: g(a)=u} W_E[a] (inner products, see [`crate::fourier`]).

use serde::Serialize;
use tch::{Kind, Tensor};

use super::{f64_cpu, to_vec, w_logit};
use crate::error::{Error, Result};
use crate::fourier::{fourier_basis, View};
use crate::model::HookedTransformer;
use crate::task::Task;

/// The Gini coefficient of non-negative values: 0 when all are equal, → 1 when one
/// holds everything. G = Σ_i (2i − n − 1) x_(i) / (n Σ x), x sorted ascending, i = 1..n.
/// 0 for an empty or all-zero input.
pub fn gini(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    let total: f64 = sorted.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    let weighted: f64 = sorted.iter().enumerate().map(|(i, x)| (2.0 * (i as f64 + 1.0) - n - 1.0) * x).sum();
    weighted / (n * total)
}

/// The number tokens' embedding W_E[:-1], `[p, d_model]` float64.
fn number_embedding(model: &HookedTransformer, task: &Task) -> Result<Tensor> {
    let w_e = f64_cpu(&model.embed.W_E);
    if w_e.size()[0] < task.p {
        return Err(Error::config(format!("W_E has {} rows, fewer than p = {}", w_e.size()[0], task.p)));
    }
    Ok(w_e.narrow(0, 0, task.p))
}

/// F_x W_E[:-1]: the embedding in the Fourier basis, `[p, d_model]` (the seed's
/// `fourier_basis @ W_E` in the standard view).
fn embed_fourier(model: &HookedTransformer, task: &Task, view: View) -> Result<Tensor> {
    let basis = fourier_basis(task.p)?;
    Ok(basis.at_x(task, view).matmul(&number_embedding(model, task)?))
}

/// The norm of each Fourier row of the embedding, ‖(F_x W_E[:-1])_i‖: `[p]` (the
/// seed's "Norms of Embedding in Fourier Basis").
pub fn embed_fourier_norms(model: &HookedTransformer, task: &Task, view: View) -> Result<Vec<f64>> {
    to_vec(&embed_fourier(model, task, view)?.norm_scalaropt_dim(2, [1], false))
}

/// The norm over the neurons of each Fourier component (in the output c) of the
/// neuron-to-logit map W_out W_U: ‖(W_out W_U Fᵀ)[:, i]‖, `[p]`. The same in both views,
/// as c runs over all of Z_p.
pub fn logit_map_fourier_norms(model: &HookedTransformer) -> Result<Vec<f64>> {
    let w = w_logit(model);
    let basis = fourier_basis(w.size()[1])?;
    to_vec(&w.matmul(&basis.basis.tr()).norm_scalaropt_dim(2, [0], false))
}

/// From the norms of the Fourier rows (constant, then sin k, cos k for k = 1, 2, …, as
/// [`fourier_basis`] orders them), each frequency's share of the energy Σ_i norm_i²:
/// `[(p−1)/2]`, summing with the constant row's share to 1 (all 0 for a zero matrix).
pub fn freq_shares(norms: &[f64]) -> Vec<f64> {
    let total: f64 = norms.iter().map(|n| n * n).sum();
    let scale = if total > 0.0 { 1.0 / total } else { 0.0 };
    norms[1..].chunks(2).map(|pair| pair.iter().map(|n| n * n).sum::<f64>() * scale).collect()
}

/// The total sum of squared weights over every parameter.
pub fn weight_norm(model: &HookedTransformer) -> f64 {
    model.named_parameters().map(|(_, t)| t.detach().square().sum(Kind::Double).double_value(&[])).sum()
}

/// The fraction of `indices` (rows of `logits` and `labels`) whose arg-max logit is the label.
pub fn accuracy(logits: &Tensor, labels: &Tensor, indices: &[i64]) -> Result<f64> {
    let rows = labels.size().first().copied().unwrap_or(0);
    if logits.dim() != 2 || labels.dim() != 1 || logits.size()[0] != rows {
        return Err(Error::config(format!(
            "accuracy needs logits [rows, classes] and labels [rows], got {:?} and {:?}",
            logits.size(),
            labels.size()
        )));
    }
    if let Some(bad) = indices.iter().find(|&&i| i < 0 || i >= rows) {
        return Err(Error::config(format!("row {bad} is outside the {rows} rows")));
    }
    if indices.is_empty() {
        return Ok(f64::NAN);
    }
    let correct = logits.argmax(-1, false).eq_tensor(&labels.to_device(logits.device()));
    Ok(correct
        .index_select(0, &Tensor::from_slice(indices).to_device(logits.device()))
        .to_kind(Kind::Double)
        .mean(Kind::Double)
        .double_value(&[]))
}

/// How the energy of the Fourier-basis embedding F_x W_E[:-1] splits between the
/// constant row, the sine rows and the cosine rows (fractions summing to 1). An even
/// g (a^4 = (−a)^4) gives an embedding with no sine energy in the standard view once
/// the classes of g collapse.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SinCosEnergy {
    pub constant: f64,
    pub sin: f64,
    pub cos: f64,
}

pub fn sin_cos_energy(model: &HookedTransformer, task: &Task, view: View) -> Result<SinCosEnergy> {
    let rows = to_vec(&embed_fourier(model, task, view)?.square().sum_dim_intlist(1, false, Kind::Double))?;
    let total: f64 = rows.iter().sum();
    let (mut sin, mut cos) = (0.0, 0.0);
    for (i, e) in rows.iter().enumerate().skip(1) {
        if i % 2 == 1 {
            sin += e;
        } else {
            cos += e;
        }
    }
    if total <= 0.0 {
        return Err(Error::config("the embedding is all zero: its energy cannot be split"));
    }
    Ok(SinCosEnergy { constant: rows[0] / total, sin: sin / total, cos: cos / total })
}

/// Class collapse: the within-class share of the embedding's variance,
/// Σ_a ‖W_E[a] − mean of a's class‖² / Σ_a ‖W_E[a] − mean‖², classes {a : g(a) = u}.
/// 0 when each class is one vector; about 1 − (classes/p) for unrelated vectors. A
/// one-to-one g has singleton classes and gives 0 trivially.
pub fn class_collapse(model: &HookedTransformer, task: &Task) -> Result<f64> {
    let w_e = number_embedding(model, task)?;
    let classes = Tensor::from_slice(&task.g_values());
    let sums = w_e.zeros_like().index_add(0, &classes, &w_e);
    let counts = classes.bincount(None::<Tensor>, task.p).to_kind(Kind::Double).clamp_min(1.0);
    let class_means = (sums / counts.unsqueeze(1)).index_select(0, &classes);
    let within = (&w_e - class_means).square().sum(Kind::Double).double_value(&[]);
    let total = (&w_e - w_e.mean_dim(0, true, Kind::Double)).square().sum(Kind::Double).double_value(&[]);
    if total <= 0.0 {
        return Err(Error::config("the embedding has no variance: class collapse is undefined"));
    }
    Ok(within / total)
}
