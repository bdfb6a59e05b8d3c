//! Neurons in the Fourier basis: the seed's `neuron_freq_norm` (which frequency
//! explains each neuron) and the Fourier norms of the neuron activations.
//!
//! A[a, b, n] is neuron n's activation at the last position, centred over the p²
//! inputs, and B = F_x A F_yᵀ its 2-D transform in the view:
//! B[i, j, n] = Σ_{a,b} F[i, x(a)] F[j, y(b)] A[a, b, n]. In the standard view F_x = F_y = F
//! is orthogonal, B holds the coefficients, and the seed's fraction of neuron n's
//! energy in frequency k is Σ_{i,j ∈ {const, sin k, cos k}} B[i,j,n]² / Σ_{i,j} B[i,j,n]².
//!
//! Task view: g and h are many-to-one, so the 2-D picture is taken in (u, v) = (g(a), h(b)).
//! The choice made here: first average A over each class {(a, b) : g(a) = u, h(b) = v},
//! giving Ā[u, v] on the cells that occur; what varies inside a class is not a function of
//! (u, v) and is left out of the neuron's energy. Values that g or h never takes have no
//! cell: nothing is filled in for them. A cell stands for n(u)·n'(v) inputs and is weighted
//! so. The fraction for frequency k is the share of the weighted energy Σ n n' Ā² that the
//! weighted least-squares projection onto the 9 functions {1, sin ku, cos ku} ⊗ {1, sin kv, cos kv}
//! captures: bᵀ G⁺ b / Σ n n' Ā², with b the 3 × 3 block of B (Σ_cells n n' Ā φ ψ is
//! Σ_inputs A φ(x(a)) ψ(y(b))) and G = G_x ⊗ G_y from the 3 × 3 blocks of the Gram matrices
//! F_x F_xᵀ and F_y F_yᵀ (a pseudo-inverse, as a function can vanish on the values taken).
//! In the standard view the cells are the inputs, G = I, and this is the seed's number.
//! In the task view the blocks of different k are not orthogonal over the cells, so one
//! neuron's fractions can add up to more than 1. A neuron that never varies (a dead ReLU)
//! gets 0 for every k (the seed's 0/0 gives NaN).
//!
//! What the task-view fraction cannot tell apart: on the 29 values of u = a⁴ (p = 113),
//! {1, cos ku, sin ku} over the 14 frequencies of any one orbit of k already span every
//! function of u, so a neuron that is exactly cos(2πu/113) scores 1 at k = 1 but also
//! 0.32 at k = 31 and 0.26 at k = 3, its fractions summing to 4 (`tests/measures.rs`).
//! It does not identify a neuron's frequency; [`neuron_logit_freq`] does, on the
//! neuron's output: its row of W_out W_U over the label c, where c runs over all of Z_p
//! and the Fourier basis is orthogonal, so each neuron's fractions sum to 1.

use tch::{Kind, Tensor};

use super::{check_all_inputs, f64_cpu, to_vec, w_logit};
use crate::error::Result;
use crate::fourier::{fourier_basis, transform_2d, FourierBasis, View};
use crate::model::HookedTransformer;
use crate::task::Task;

/// The neurons' 2-D Fourier picture in one view.
pub struct NeuronFourier {
    pub view: View,
    /// B[i, j, n] = Σ_{a,b} F[i, x(a)] F[j, y(b)] (A[a,b,n] − mean_n): `[p, p, d_mlp]`.
    /// In the standard view, the seed's `fourier_neuron_acts` (as [i, j, n], with [0, 0] = 0).
    pub coefficients: Tensor,
    /// Σ over the (x, y) cells of (inputs in the cell) · (cell mean of the centred A)²: `[d_mlp]`.
    /// In the standard view, ‖A − mean‖² per neuron.
    pub class_energy: Tensor,
    /// F_x F_xᵀ and F_y F_yᵀ: `[p, p]` each (the identity in the standard view).
    pub gram_x: Tensor,
    pub gram_y: Tensor,
}

/// The 2-D Fourier picture of `mlp_post` (`[p², d_mlp]`, all inputs a-major) in `view`.
pub fn neuron_fourier(task: &Task, view: View, mlp_post: &Tensor) -> Result<NeuronFourier> {
    check_all_inputs(mlp_post, task, "mlp_post")?;
    let p = task.p;
    let basis = fourier_basis(p)?;
    let acts = f64_cpu(mlp_post);
    let d = acts.size()[1];
    let centred = &acts - acts.mean_dim(0, true, Kind::Double);
    let (fx, fy) = (basis.at_x(task, view), basis.at_y(task, view));
    let coefficients = transform_2d(&fx, &centred.reshape([p, p, d]), &fy);
    let (xs, ys) = (view.x_values(task), view.y_values(task));
    let cells: Vec<i64> = xs.iter().flat_map(|&u| ys.iter().map(move |&v| u * p + v)).collect();
    let cells = Tensor::from_slice(&cells);
    let cell_sums = centred.zeros_like().index_add(0, &cells, &centred); // [p², d], row u·p + v
    let counts = cells.bincount(None::<Tensor>, p * p).to_kind(Kind::Double).clamp_min(1.0);
    let class_energy = (cell_sums.square() / counts.unsqueeze(1)).sum_dim_intlist(0, false, Kind::Double);
    Ok(NeuronFourier { view, coefficients, class_energy, gram_x: fx.matmul(&fx.tr()), gram_y: fy.matmul(&fy.tr()) })
}

/// The seed's `neuron_freq_norm` and its per-neuron maximum, in one view.
#[derive(Debug)]
pub struct NeuronFreqNorm {
    pub view: View,
    /// `[(p−1)/2, d_mlp]`: row k − 1 is the fraction of each neuron's energy in frequency k.
    pub norm: Tensor,
    /// Per neuron, the largest fraction over k.
    pub max: Vec<f64>,
    /// Per neuron, the frequency giving it.
    pub best_freq: Vec<i64>,
}

impl NeuronFreqNorm {
    /// Per frequency k (index k − 1), the neurons whose best frequency is k with a
    /// fraction ≥ `min_frac`: the clusters of the seed's plot.
    pub fn cluster_sizes(&self, min_frac: f64) -> Vec<usize> {
        let mut sizes = vec![0; self.norm.size()[0] as usize];
        for (&k, &m) in self.best_freq.iter().zip(&self.max) {
            if m >= min_frac {
                sizes[k as usize - 1] += 1;
            }
        }
        sizes
    }
}

impl NeuronFourier {
    /// The seed's `neuron_freq_norm`, generalised to the task view as the module says.
    pub fn freq_norm(&self) -> Result<NeuronFreqNorm> {
        let p = self.coefficients.size()[0];
        let freqs: Vec<i64> = (1..=(p - 1) / 2).collect();
        let rows: Vec<i64> = freqs.iter().flat_map(|&k| FourierBasis::block_rows(k)).collect();
        let rows = Tensor::from_slice(&rows).view([-1, 3]); // [K, 3]
        let block = |gram: &Tensor| {
            gram.index(&[Some(rows.unsqueeze(2)), Some(rows.unsqueeze(1))]).linalg_pinv(1e-10, true)
            // [K, 3, 3]
        };
        let (gx, gy) = (block(&self.gram_x), block(&self.gram_y));
        let b = self.coefficients.index(&[Some(rows.unsqueeze(2)), Some(rows.unsqueeze(1))]); // [K, 3, 3, d]
        let b = b.permute([0, 3, 1, 2]); // [K, d, 3, 3]
        let weighted = gx.unsqueeze(1).matmul(&b).matmul(&gy.unsqueeze(1));
        let captured = (&b * weighted).sum_dim_intlist([2, 3].as_slice(), false, Kind::Double); // [K, d]
        let energy = &self.class_energy;
        let norm = (captured / energy.clamp_min(f64::MIN_POSITIVE)).where_self(&energy.gt(0.0), &energy.zeros_like());
        let (max, best) = norm.max_dim(0, false);
        let best_freq = Vec::<i64>::try_from(best + 1)?;
        Ok(NeuronFreqNorm { view: self.view, max: to_vec(&max)?, best_freq, norm })
    }

    /// The seed's "norms of neuron activations by Fourier component": ‖B[i, j, :]‖ over
    /// the neurons, `[p, p]`, rows the x component and columns the y component.
    pub fn norms(&self) -> Tensor {
        self.coefficients.square().sum_dim_intlist(-1, false, Kind::Double).sqrt()
    }

    /// [`Self::norms`] without the constant row and column: `[p−1, p−1]`.
    pub fn norms_without_constant(&self) -> Tensor {
        let p = self.coefficients.size()[0];
        self.norms().narrow(0, 1, p - 1).narrow(1, 1, p - 1)
    }
}

/// The seed's `neuron_freq_norm` of `mlp_post` in `view`: [`neuron_fourier`] then [`NeuronFourier::freq_norm`].
pub fn neuron_freq_norm(task: &Task, view: View, mlp_post: &Tensor) -> Result<NeuronFreqNorm> {
    neuron_fourier(task, view, mlp_post)?.freq_norm()
}

/// Each neuron's frequencies on its output side: the share of its row of the
/// neuron-to-logit map W_out W_U (over the label c, less its mean) in each frequency's
/// sine and cosine. Identifiable (the basis is orthogonal over c, the fractions of a
/// neuron sum to 1), the same in both views, reported as the task view's (there s = c).
pub fn neuron_logit_freq(model: &HookedTransformer) -> Result<NeuronFreqNorm> {
    let w = w_logit(model); // [d_mlp, p]
    let p = w.size()[1];
    let coefficients = w.matmul(&fourier_basis(p)?.basis.tr()); // [d_mlp, p], column 0 the constant
    let freqs: Vec<i64> = (1..=(p - 1) / 2).collect();
    let rows: Vec<i64> = freqs.iter().flat_map(|&k| [FourierBasis::sin_row(k), FourierBasis::cos_row(k)]).collect();
    let per_freq = coefficients
        .index_select(1, &Tensor::from_slice(&rows))
        .square()
        .view([-1, freqs.len() as i64, 2])
        .sum_dim_intlist(-1, false, Kind::Double); // [d_mlp, K]
    let energy = per_freq.sum_dim_intlist(1, true, Kind::Double);
    let norm =
        (&per_freq / energy.clamp_min(f64::MIN_POSITIVE)).where_self(&energy.gt(0.0), &per_freq.zeros_like()).tr();
    let (max, best) = norm.max_dim(0, false);
    let best_freq = Vec::<i64>::try_from(best + 1)?;
    Ok(NeuronFreqNorm { view: View::Task, max: to_vec(&max)?, best_freq, norm })
}
