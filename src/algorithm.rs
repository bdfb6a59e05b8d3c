//! The algorithm a trained model uses on (g(a) + h(b)) mod p, in pieces small enough to
//! teach: what `notebooks/algorithm.ipynb` draws.
//!
//! In the task's own variables u = g(a), v = h(b) (for the seed u = a⁴, v = b⁴) the label
//! is c = u + v mod p, and the TransformerLens Grokking demo's algorithm for a + b reads,
//! with w_k = 2πk/p for a few key frequencies k ∈ K:
//!
//! 1. the embedding carries cos(w_k u), sin(w_k u) (and of v): [`embed_wave_shares`];
//! 2. the neurons multiply them (the ReLU makes the products cos w_k u · cos w_k v, …),
//!    so that they hold cos(w_k(u + v)) = cos w_k u cos w_k v − sin w_k u sin w_k v and
//!    sin(w_k(u + v)): [`term_shares`], [`interaction_share`], [`neuron_r2`], [`neuron_cells`];
//! 3. each neuron writes a wave in c at its frequency, in phase with what it reads
//!    (W_out·W_U, [`logit_wave`], [`neuron_phases`]), so that summed over neurons the
//!    logits are Σ_k α_k cos(w_k(u + v − c)) ([`approximate_logits`]);
//! 4. those waves all peak at c = u + v and cancel elsewhere: constructive interference
//!    ([`interference`], [`logits_by_offset`], [`peak_margin`]).
//!
//! **Cells.** A model that reads a only through u and b only through v sees the input
//! (a, b) as the cell (u, v) ([`Cells`]; 29 × 29 cells for the seed). Fits over (u, v) are
//! taken on the cell means of an activation, each cell weighted by how many inputs it holds,
//! which is the fit over all p² inputs less what varies inside a cell (what is not a
//! function of (u, v) at all). R² is then the share of the between-cell energy a fit explains.
//!
//! **What these fits cannot tell apart.** On the 29 values of u = a⁴ mod 113 the waves of
//! different frequencies are not orthogonal (the 14 frequencies of one orbit k ↦ ±h·k, h a
//! fourth power, and the constant span every function of u), so a wave of frequency k is
//! partly fit by its orbit-mates: read a share at k against the shares at every other k,
//! and against the controls ([`shuffle_cells`], [`random_freqs`], the initial model). Over
//! c the waves are orthogonal (c runs over all of Z_p), so the output side
//! ([`logit_wave`]) does identify a frequency.

use std::f64::consts::PI;

use ndarray::Array2;
use tch::{Device, Kind, Tensor};

use crate::arrays::to_array2;
use crate::error::{Error, Result};
use crate::measures::{f64_cpu, w_logit};
use crate::model::HookedTransformer;
use crate::task::{Split, Task};

/// The angle w_k·x = 2πk·x/p, reduced exactly first.
fn angle(p: i64, k: i64, x: i64) -> f64 {
    2.0 * PI * (k * x).rem_euclid(p) as f64 / p as f64
}

/// The frequencies 1..=(p−1)/2.
fn all_freqs(p: i64) -> Vec<i64> {
    (1..=(p - 1) / 2).collect()
}

/// The cells (u, v) = (g(a), h(b)) of a task's inputs.
#[derive(Clone, Debug)]
pub struct Cells {
    pub p: i64,
    /// The distinct values of u = g(a), ascending.
    pub u: Vec<i64>,
    /// The distinct values of v = h(b), ascending.
    pub v: Vec<i64>,
    /// Inputs per cell, cell `i·v.len() + j` for (u[i], v[j]).
    pub counts: Vec<f64>,
    /// The cell of each input, a-major.
    cell_of: Vec<i64>,
}

impl Cells {
    pub fn new(task: &Task) -> Self {
        let p = task.p;
        let distinct = |values: &[i64]| {
            let mut d = values.to_vec();
            d.sort_unstable();
            d.dedup();
            d
        };
        let (g, h) = (task.g_values(), task.h_values());
        let (u, v) = (distinct(&g), distinct(&h));
        let index = |values: &[i64], x: i64| values.binary_search(&x).expect("a value of the list") as i64;
        let n_v = v.len() as i64;
        let cell_of: Vec<i64> = (0..p)
            .flat_map(|a| (0..p).map(move |b| (a, b)))
            .map(|(a, b)| index(&u, g[a as usize]) * n_v + index(&v, h[b as usize]))
            .collect();
        let mut counts = vec![0.0; u.len() * v.len()];
        cell_of.iter().for_each(|&c| counts[c as usize] += 1.0);
        Cells { p, u, v, counts, cell_of }
    }

    /// How many cells: `u.len() · v.len()`.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// (u, v) of each cell, in cell order.
    pub fn uv(&self) -> Vec<(i64, i64)> {
        self.u.iter().flat_map(|&u| self.v.iter().map(move |&v| (u, v))).collect()
    }

    /// The cell (index) of each of the p² inputs, a-major.
    pub fn cell_of(&self) -> &[i64] {
        &self.cell_of
    }

    /// The mean of `acts` (`[p², d]`, all inputs a-major) over each cell: `[cells, d]` float64.
    pub fn means(&self, acts: &Tensor) -> Result<Tensor> {
        let acts = self.check(acts)?;
        let ids = Tensor::from_slice(&self.cell_of);
        let sums =
            Tensor::zeros([self.len() as i64, acts.size()[1]], (Kind::Double, Device::Cpu)).index_add(0, &ids, &acts);
        Ok(sums / Tensor::from_slice(&self.counts).unsqueeze(1))
    }

    fn weights(&self) -> Tensor {
        Tensor::from_slice(&self.counts)
    }

    /// `acts` as a float64 `[p², d]` tensor, or why not.
    fn check(&self, acts: &Tensor) -> Result<Tensor> {
        let size = acts.size();
        if size.len() != 2 || size[0] != self.p * self.p {
            return Err(Error::config(format!(
                "activations must be [p², d] = [{}, d] over all inputs a-major, got {size:?}",
                self.p * self.p
            )));
        }
        Ok(f64_cpu(acts))
    }

    /// The terms of frequency k at each cell: `[cells, m]`, columns in the order
    /// [`Terms::columns`] names.
    pub fn features(&self, k: i64, terms: Terms) -> Tensor {
        let p = self.p;
        let rows: Vec<Vec<f64>> = self
            .uv()
            .into_iter()
            .map(|(u, v)| {
                let (cu, su, cv, sv) =
                    (angle(p, k, u).cos(), angle(p, k, u).sin(), angle(p, k, v).cos(), angle(p, k, v).sin());
                match terms {
                    Terms::Linear => vec![cu, su, cv, sv],
                    Terms::Products => vec![cu, su, cv, sv, cu * cv, cu * sv, su * cv, su * sv],
                    Terms::Sum => vec![angle(p, k, u + v).cos(), angle(p, k, u + v).sin()],
                }
            })
            .collect();
        let m = rows[0].len() as i64;
        Tensor::from_slice(&rows.concat()).view([-1, m])
    }
}

/// Which functions of (u, v) at one frequency k a fit uses (always with the constant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Terms {
    /// cos w u, sin w u, cos w v, sin w v: what a sum of a function of u and one of v (the
    /// embedding through attention, before the ReLU) can carry.
    Linear,
    /// The linear terms and their four products cos w u · cos w v, cos w u · sin w v,
    /// sin w u · cos w v, sin w u · sin w v: with the constant, the nine functions of the
    /// seed's 3 × 3 block {1, cos, sin}². The products span cos w(u ± v) and sin w(u ± v).
    Products,
    /// cos w(u + v), sin w(u + v): what the unembedding reads off.
    Sum,
}

impl Terms {
    /// The names of the feature columns.
    pub fn columns(self) -> Vec<&'static str> {
        match self {
            Terms::Linear => vec!["cos wu", "sin wu", "cos wv", "sin wv"],
            Terms::Products => {
                vec![
                    "cos wu",
                    "sin wu",
                    "cos wv",
                    "sin wv",
                    "cos wu·cos wv",
                    "cos wu·sin wv",
                    "sin wu·cos wv",
                    "sin wu·sin wv",
                ]
            }
            Terms::Sum => vec!["cos w(u+v)", "sin w(u+v)"],
        }
    }
}

/// A weighted least-squares fit of each column of `values` on the constant and `features`.
struct Fit {
    /// `[1 + m, d]`: the constant's coefficient, then the features'.
    coefficients: Tensor,
    /// `[n, d]`.
    fitted: Tensor,
    /// Per column, Σ w (y − ȳ)² and Σ w (y − ŷ)².
    total: Vec<f64>,
    residual: Vec<f64>,
}

impl Fit {
    /// R² per column (0 for a column that never varies).
    fn r2(&self) -> Vec<f64> {
        self.total.iter().zip(&self.residual).map(|(t, r)| if *t > 0.0 { 1.0 - r / t } else { 0.0 }).collect()
    }

    /// The share of all columns' energy explained: 1 − Σ residual / Σ total (0 if nothing varies).
    fn share(&self) -> f64 {
        let (t, r): (f64, f64) = (self.total.iter().sum(), self.residual.iter().sum());
        if t > 0.0 {
            1.0 - r / t
        } else {
            0.0
        }
    }
}

/// β = (XᵀWX)⁺ XᵀWY with X = [1, features]: `values` `[n, d]`, `features` `[n, m]`, `weights` `[n]`.
fn weighted_fit(values: &Tensor, features: &Tensor, weights: &Tensor) -> Fit {
    let n = values.size()[0];
    let x = Tensor::cat(&[Tensor::ones([n, 1], (Kind::Double, Device::Cpu)), f64_cpu(features)], 1);
    let w = f64_cpu(weights).unsqueeze(1);
    let xtw = (&x * &w).tr();
    let coefficients = xtw.matmul(&x).linalg_pinv(1e-10, true).matmul(&xtw.matmul(values));
    let fitted = x.matmul(&coefficients);
    let mean = (values * &w).sum_dim_intlist(0, true, Kind::Double) / w.sum(Kind::Double);
    let per_column =
        |t: Tensor| Vec::<f64>::try_from((t.square() * &w).sum_dim_intlist(0, false, Kind::Double)).unwrap_or_default();
    let total = per_column(values - mean);
    let residual = per_column(values - &fitted);
    Fit { coefficients, fitted, total, residual }
}

/// Per frequency k (index k − 1), the share of the between-cell energy of `acts` (`[p², d]`,
/// all inputs a-major, e.g. every neuron's activation) that the `terms` of frequency k
/// explain, summed over the d columns. For [`Terms::Products`] it is what the products add
/// to the linear terms: R²(1, linear, products) − R²(1, linear).
pub fn term_shares(task: &Task, acts: &Tensor, terms: Terms) -> Result<Vec<f64>> {
    let cells = Cells::new(task);
    let means = cells.means(acts)?;
    let weights = cells.weights();
    Ok(all_freqs(task.p)
        .into_iter()
        .map(|k| {
            let share = |t: Terms| weighted_fit(&means, &cells.features(k, t), &weights).share();
            match terms {
                Terms::Products => share(Terms::Products) - share(Terms::Linear),
                t => share(t),
            }
        })
        .collect())
}

/// The share of the between-cell energy of `acts` (`[p², d]`) that no sum f(u) + g(v)
/// explains: what depends on u and v together. The additive fit is exact and cheap here:
/// the cell weights n(u)·n(v) factor, so it is ȳ(u, ·) + ȳ(·, v) − ȳ(·, ·). A sum of a
/// function of a and one of b (attention with a fixed pattern, before the ReLU) scores 0;
/// cos w(u + v) scores near 1.
pub fn interaction_share(task: &Task, acts: &Tensor) -> Result<f64> {
    let cells = Cells::new(task);
    let means = cells.means(acts)?;
    let (n_u, n_v) = (cells.u.len() as i64, cells.v.len() as i64);
    let d = means.size()[1];
    let y = means.view([n_u, n_v, d]);
    let w = cells.weights().view([n_u, n_v, 1]);
    let mean_over =
        |dim: i64| (&y * &w).sum_dim_intlist(dim, true, Kind::Double) / w.sum_dim_intlist(dim, true, Kind::Double);
    let (row, col) = (mean_over(1), mean_over(0)); // ȳ(u, ·) [n_u, 1, d], ȳ(·, v) [1, n_v, d]
    let grand = (&y * &w).sum_dim_intlist([0, 1].as_slice(), true, Kind::Double) / w.sum(Kind::Double);
    let additive = &row + &col - &grand;
    let total = ((&y - &grand).square() * &w).sum(Kind::Double).double_value(&[]);
    let residual = ((&y - additive).square() * &w).sum(Kind::Double).double_value(&[]);
    Ok(if total > 0.0 { residual / total } else { 0.0 })
}

/// Per frequency k (index k − 1), the share of the embedding's variance over the number
/// tokens, Σ_a ‖W_E[a] − mean‖², that {1, cos(w_k u(a)), sin(w_k u(a))} explain (u = g(a)).
/// An embedding that is a function of u made of a few key waves scores high at those k
/// (and, on the seed's 29 values of u, partly at their orbit-mates); the initial weights
/// score about 2/p at every k.
pub fn embed_wave_shares(task: &Task, model: &HookedTransformer) -> Result<Vec<f64>> {
    let p = task.p;
    let w_e = f64_cpu(&model.embed.W_E);
    if w_e.size()[0] < p {
        return Err(Error::config(format!("W_E has {} rows, fewer than p = {p}", w_e.size()[0])));
    }
    let w_e = w_e.narrow(0, 0, p);
    let u = task.g_values();
    let weights = Tensor::ones([p], (Kind::Double, Device::Cpu));
    Ok(all_freqs(p)
        .into_iter()
        .map(|k| {
            let waves: Vec<f64> = u.iter().flat_map(|&x| [angle(p, k, x).cos(), angle(p, k, x).sin()]).collect();
            weighted_fit(&w_e, &Tensor::from_slice(&waves).view([p, 2]), &weights).share()
        })
        .collect())
}

/// Per neuron (column of `acts`, `[p², d]`), the R² over the cells of its fit on the nine
/// functions [`Terms::Products`] (with the constant) of its own frequency `freqs[n]`.
pub fn neuron_r2(task: &Task, acts: &Tensor, freqs: &[i64]) -> Result<Vec<f64>> {
    let cells = Cells::new(task);
    let means = cells.means(acts)?;
    let d = means.size()[1] as usize;
    if freqs.len() != d {
        return Err(Error::config(format!("{} frequencies for {d} neurons", freqs.len())));
    }
    let mut distinct = freqs.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    crate::measures::check_key_freqs(task.p, &distinct)?;
    let weights = cells.weights();
    let mut r2 = vec![0.0; d];
    for k in distinct {
        let columns: Vec<i64> = (0..d as i64).filter(|&n| freqs[n as usize] == k).collect();
        let fit = weighted_fit(
            &means.index_select(1, &Tensor::from_slice(&columns)),
            &cells.features(k, Terms::Products),
            &weights,
        );
        columns.iter().zip(fit.r2()).for_each(|(&n, value)| r2[n as usize] = value);
    }
    Ok(r2)
}

/// One neuron over the cells, rows u and columns v each sorted by the angle k·x mod p, so
/// that a wave of frequency k runs smoothly down the rows and along the columns.
#[derive(Clone, Debug)]
pub struct NeuronCells {
    pub neuron: i64,
    pub k: i64,
    /// The values of u down the rows and of v along the columns, in that order.
    pub u_order: Vec<i64>,
    pub v_order: Vec<i64>,
    /// The neuron's mean activation in each cell: `[u, v]`.
    pub actual: Array2<f64>,
    /// Its fit on [`Terms::Products`] of frequency k.
    pub fitted: Array2<f64>,
    /// The fit's R² over the cells (weighted by the inputs in each).
    pub r2: f64,
    /// The fit's coefficients on the constant and then [`Terms::columns`] of [`Terms::Products`].
    pub coefficients: Vec<f64>,
}

/// Neuron `neuron` of `acts` (`[p², d]`) over the cells, with its nine-term fit at frequency k.
pub fn neuron_cells(task: &Task, acts: &Tensor, neuron: i64, k: i64) -> Result<NeuronCells> {
    crate::measures::check_key_freqs(task.p, &[k])?;
    let cells = Cells::new(task);
    let means = cells.means(acts)?;
    if !(0..means.size()[1]).contains(&neuron) {
        return Err(Error::config(format!("no neuron {neuron}: there are {}", means.size()[1])));
    }
    let column = means.narrow(1, neuron, 1);
    let fit = weighted_fit(&column, &cells.features(k, Terms::Products), &cells.weights());
    let p = task.p;
    let order = |values: &[i64]| {
        let mut idx: Vec<usize> = (0..values.len()).collect();
        idx.sort_by_key(|&i| ((k * values[i]).rem_euclid(p), values[i]));
        idx
    };
    let (iu, iv) = (order(&cells.u), order(&cells.v));
    let (n_u, n_v) = (cells.u.len(), cells.v.len());
    let grid = |t: &Tensor| -> Result<Array2<f64>> {
        let full = to_array2(&t.view([n_u as i64, n_v as i64]))?;
        Ok(Array2::from_shape_fn((n_u, n_v), |(i, j)| full[[iu[i], iv[j]]]))
    };
    Ok(NeuronCells {
        neuron,
        k,
        u_order: iu.iter().map(|&i| cells.u[i]).collect(),
        v_order: iv.iter().map(|&j| cells.v[j]).collect(),
        actual: grid(&column)?,
        fitted: grid(&fit.fitted)?,
        r2: fit.r2()[0],
        coefficients: Vec::<f64>::try_from(fit.coefficients.flatten(0, -1))?,
    })
}

/// The control "a shuffled neuron": `acts` (`[p², d]`) with the cells permuted (one
/// permutation, seeded, the same for every column): each input gets the mean of another
/// cell. What varies inside a cell is dropped; the between-cell values are kept, in an
/// order that no function of (u, v) explains.
pub fn shuffle_cells(task: &Task, acts: &Tensor, seed: u64) -> Result<Tensor> {
    let cells = Cells::new(task);
    let means = cells.means(acts)?;
    let mut order: Vec<i64> = (0..cells.len() as i64).collect();
    let mut rng = SplitMix(seed);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let shuffled = means.index_select(0, &Tensor::from_slice(&order));
    Ok(shuffled.index_select(0, &Tensor::from_slice(cells.cell_of())))
}

/// The control "a random frequency": for each entry of `own`, a frequency in 1..=(p−1)/2
/// drawn uniformly (seeded) among those other than it.
pub fn random_freqs(p: i64, own: &[i64], seed: u64) -> Vec<i64> {
    let n = ((p - 1) / 2) as u64;
    let mut rng = SplitMix(seed);
    own.iter()
        .map(|&k| {
            let r = 1 + rng.below(n.saturating_sub(1).max(1)) as i64; // 1..=n−1
            if (1..=n as i64).contains(&k) && r >= k {
                r + 1
            } else {
                r
            }
        })
        .collect()
}

/// A row over c = 0..p (a neuron's row of W_out·W_U) and its wave at one frequency.
#[derive(Clone, Debug)]
pub struct LogitWave {
    pub k: i64,
    /// The row, less its mean over c.
    pub row: Vec<f64>,
    /// Its projection on cos(w_k c), sin(w_k c): B cos(w_k c + θ).
    pub wave: Vec<f64>,
    /// ‖wave‖² / ‖row‖²: the share of the row's energy at k (orthogonal over c, so the
    /// shares of all k add up to 1).
    pub share: f64,
    /// B ≥ 0 and θ ∈ (−π, π].
    pub amplitude: f64,
    pub phase: f64,
}

/// `row` (over c = 0..p) against the wave of frequency k.
pub fn row_wave(row: &[f64], k: i64) -> Result<LogitWave> {
    let p = row.len() as i64;
    crate::measures::check_key_freqs(p, &[k])?;
    let mean = row.iter().sum::<f64>() / p as f64;
    let row: Vec<f64> = row.iter().map(|r| r - mean).collect();
    let (mut gc, mut gs) = (0.0, 0.0);
    for (c, r) in row.iter().enumerate() {
        let t = angle(p, k, c as i64);
        gc += r * t.cos();
        gs += r * t.sin();
    }
    let (bc, bs) = (2.0 * gc / p as f64, 2.0 * gs / p as f64); // row ≈ bc cos + bs sin
    let wave: Vec<f64> = (0..p).map(|c| bc * angle(p, k, c).cos() + bs * angle(p, k, c).sin()).collect();
    let energy: f64 = row.iter().map(|r| r * r).sum();
    let share = if energy > 0.0 { wave.iter().map(|w| w * w).sum::<f64>() / energy } else { 0.0 };
    Ok(LogitWave { k, row, wave, share, amplitude: bc.hypot(bs), phase: (-bs).atan2(bc) })
}

/// Neuron `neuron`'s row of the neuron-to-logit map W_out·W_U over c, against frequency k.
pub fn logit_wave(model: &HookedTransformer, neuron: i64, k: i64) -> Result<LogitWave> {
    let w = w_logit(model);
    if !(0..w.size()[0]).contains(&neuron) {
        return Err(Error::config(format!("no neuron {neuron}: there are {}", w.size()[0])));
    }
    row_wave(&Vec::<f64>::try_from(w.get(neuron))?, k)
}

/// A neuron's phase on the way in (its activation over the cells ≈ const + A cos(w_k s + φ),
/// s = u + v mod p) and on the way out (its W_out·W_U row ≈ B cos(w_k c + θ)). Its
/// contribution to the logits is then ½AB cos(w_k(s − c) + φ − θ) + ½AB cos(w_k(s + c) + φ + θ):
/// the first peaks at c = s when θ = φ; the second cancels over neurons of spread phases.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NeuronPhase {
    pub neuron: i64,
    pub k: i64,
    pub input_phase: f64,
    pub input_amplitude: f64,
    pub output_phase: f64,
    pub output_amplitude: f64,
}

impl NeuronPhase {
    /// φ − θ, wrapped into (−π, π].
    pub fn difference(&self) -> f64 {
        wrap(self.input_phase - self.output_phase)
    }
}

/// x wrapped into (−π, π].
pub fn wrap(x: f64) -> f64 {
    let y = x.rem_euclid(2.0 * PI);
    if y > PI {
        y - 2.0 * PI
    } else {
        y
    }
}

/// Each listed neuron's phases at its frequency (`neurons[i]` at `freqs[i]`), from its
/// activation `acts` (`[p², d]`) over the cells and its row of `w_logit` (`[d, p]`, W_out·W_U).
pub fn neuron_phases(
    task: &Task,
    acts: &Tensor,
    w_logit: &Tensor,
    neurons: &[i64],
    freqs: &[i64],
) -> Result<Vec<NeuronPhase>> {
    if neurons.len() != freqs.len() {
        return Err(Error::config(format!("{} neurons but {} frequencies", neurons.len(), freqs.len())));
    }
    let cells = Cells::new(task);
    let means = cells.means(acts)?;
    let w = f64_cpu(w_logit);
    let d = means.size()[1];
    if w.size() != [d, task.p] {
        return Err(Error::config(format!("w_logit must be [{d}, {}], got {:?}", task.p, w.size())));
    }
    let weights = cells.weights();
    neurons
        .iter()
        .zip(freqs)
        .map(|(&n, &k)| {
            if !(0..d).contains(&n) {
                return Err(Error::config(format!("no neuron {n}: there are {d}")));
            }
            let out = row_wave(&Vec::<f64>::try_from(w.get(n))?, k)?;
            let fit = weighted_fit(&means.narrow(1, n, 1), &cells.features(k, Terms::Sum), &weights);
            let (bc, bs) = (fit.coefficients.double_value(&[1, 0]), fit.coefficients.double_value(&[2, 0]));
            Ok(NeuronPhase {
                neuron: n,
                k,
                input_phase: (-bs).atan2(bc),
                input_amplitude: bc.hypot(bs),
                output_phase: out.phase,
                output_amplitude: out.amplitude,
            })
        })
        .collect()
}

/// How well phases line up: |mean of e^{i·x}| over the angles `x` (1 when all are equal,
/// about 1/√n for n random ones; 0 for none).
pub fn alignment(angles: &[f64]) -> f64 {
    if angles.is_empty() {
        return 0.0;
    }
    let (c, s) = angles.iter().fold((0.0, 0.0), |(c, s), x| (c + x.cos(), s + x.sin()));
    c.hypot(s) / angles.len() as f64
}

/// The control for [`alignment`]: φ − θ with each neuron's input phase paired with
/// another neuron's output phase (a seeded permutation of the outputs).
pub fn shuffled_differences(phases: &[NeuronPhase], seed: u64) -> Vec<f64> {
    let mut order: Vec<usize> = (0..phases.len()).collect();
    let mut rng = SplitMix(seed);
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    phases.iter().zip(&order).map(|(ph, &j)| wrap(ph.input_phase - phases[j].output_phase)).collect()
}

/// The offsets d = c − (u + v) from −(p−1)/2 to (p−1)/2: the x axis of [`interference`].
pub fn offsets(p: i64) -> Vec<i64> {
    (-(p - 1) / 2..=(p - 1) / 2).collect()
}

/// Σ_k α_k cos(w_k d) / √(p³/2) at each offset d of [`offsets`], for `terms` = (k, α_k):
/// what the key cubes α_k C_k add up to at c = u + v + d, in logit units (C_k is the unit
/// cube cos(w_k(s − c)) / √(p³/2), so α_k are [`crate::measures::LogitPeriodicity`]'s
/// coefficients). Every term is largest at d = 0; elsewhere they disagree and cancel.
pub fn interference(p: i64, terms: &[(i64, f64)]) -> Vec<f64> {
    let unit = ((p * p * p) as f64 / 2.0).sqrt();
    offsets(p).into_iter().map(|d| terms.iter().map(|&(k, a)| a * angle(p, k, d).cos()).sum::<f64>() / unit).collect()
}

/// The model's side of [`interference`]: at each offset d, the mean over all inputs of
/// the centred logit L[a, b, u + v + d] − mean_c L[a, b, ·] (`logits` `[p², p]`).
pub fn logits_by_offset(task: &Task, logits: &Tensor) -> Result<Vec<f64>> {
    let p = task.p;
    let l = Cells::new(task).check(logits)?;
    if l.size()[1] != p {
        return Err(Error::config(format!("logits must have p = {p} columns, got {:?}", l.size())));
    }
    let centred = &l - l.mean_dim(1, true, Kind::Double);
    let labels = task.labels();
    offsets(p)
        .into_iter()
        .map(|d| {
            let c = (&labels + d).remainder(p);
            Ok(centred.gather(1, &c.unsqueeze(1), false).mean(Kind::Double).double_value(&[]))
        })
        .collect()
}

/// How far a curve over [`offsets`] peaks at d = 0: (value at 0 − the largest elsewhere) /
/// |value at 0|. One frequency alone gives 1 − cos(2π/p) (0.0015 for p = 113): its
/// neighbours are nearly as high. Negative when the curve does not peak at 0; NaN for an
/// empty curve or a zero peak.
pub fn peak_margin(curve: &[f64]) -> f64 {
    let mid = curve.len() / 2;
    match curve.get(mid) {
        Some(&top) if top != 0.0 => {
            let runner_up =
                curve.iter().enumerate().filter(|(i, _)| *i != mid).map(|(_, v)| *v).fold(f64::NEG_INFINITY, f64::max);
            (top - runner_up) / top.abs()
        }
        _ => f64::NAN,
    }
}

/// One input's logits over c and their key-term approximation.
#[derive(Clone, Debug)]
pub struct ApproximateLogits {
    /// The input, a-major (a·p + b), its cell and its label c = u + v.
    pub pair: i64,
    pub u: i64,
    pub v: i64,
    pub answer: i64,
    /// L[a, b, c] − mean_c, for c = 0..p.
    pub actual: Vec<f64>,
    /// Σ_{k∈K} α_k cos(w_k(u + v − c)) / √(p³/2), for c = 0..p.
    pub approx: Vec<f64>,
}

/// The logits of input `pair` (`logits` `[p², p]`) next to the key cubes' sum over `key_freqs`,
/// with α_k = `coefficients[k − 1]` (the task view's [`crate::measures::LogitPeriodicity`]).
pub fn approximate_logits(
    task: &Task,
    logits: &Tensor,
    coefficients: &[f64],
    key_freqs: &[i64],
    pair: i64,
) -> Result<ApproximateLogits> {
    let p = task.p;
    crate::measures::check_key_freqs(p, key_freqs)?;
    if !(0..p * p).contains(&pair) {
        return Err(Error::config(format!("no input {pair}: there are {}", p * p)));
    }
    if coefficients.len() as i64 != (p - 1) / 2 {
        return Err(Error::config(format!(
            "{} coefficients, not one per frequency ((p − 1)/2 = {})",
            coefficients.len(),
            (p - 1) / 2
        )));
    }
    let row = Vec::<f64>::try_from(f64_cpu(logits).get(pair))?;
    if row.len() as i64 != p {
        return Err(Error::config(format!("logits must have p = {p} columns, got {}", row.len())));
    }
    let mean = row.iter().sum::<f64>() / p as f64;
    let (u, v) = (task.g.eval(pair / p, p), task.h.eval(pair % p, p));
    let s = (u + v) % p;
    let unit = ((p * p * p) as f64 / 2.0).sqrt();
    let approx = (0..p)
        .map(|c| key_freqs.iter().map(|&k| coefficients[k as usize - 1] * angle(p, k, s - c).cos()).sum::<f64>() / unit)
        .collect();
    Ok(ApproximateLogits { pair, u, v, answer: s, actual: row.iter().map(|r| r - mean).collect(), approx })
}

/// Where the training pairs lie over the cells: rows u, columns v, ascending.
#[derive(Clone, Debug)]
pub struct CoverageMap {
    pub u: Vec<i64>,
    pub v: Vec<i64>,
    /// Training pairs in each cell.
    pub train: Array2<f64>,
    /// Test pairs in each cell that holds no training pair (0 elsewhere).
    pub unseen_test: Array2<f64>,
}

/// How many training pairs each cell (u, v) holds, and the test pairs of the cells with none.
pub fn coverage_map(task: &Task, split: &Split) -> Result<CoverageMap> {
    split.validate(task.n_pairs())?;
    let cells = Cells::new(task);
    let (n_u, n_v) = (cells.u.len(), cells.v.len());
    let count = |pairs: &[i64]| {
        let mut m = Array2::zeros((n_u, n_v));
        pairs.iter().for_each(|&i| {
            let c = cells.cell_of[i as usize] as usize;
            m[[c / n_v, c % n_v]] += 1.0;
        });
        m
    };
    let train = count(&split.train);
    let mut unseen_test = count(&split.test);
    unseen_test.zip_mut_with(&train, |t, &n| {
        if n > 0.0 {
            *t = 0.0
        }
    });
    Ok(CoverageMap { u: cells.u.clone(), v: cells.v.clone(), train, unseen_test })
}

/// SplitMix64: a small seeded generator for the controls (torch's global one is left alone).
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n ≥ 1).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `f(u, v)` for every input of `task`, as a `[p², 1]` column.
    fn column(task: &Task, f: impl Fn(i64, i64) -> f64) -> Tensor {
        let (g, h, p) = (task.g_values(), task.h_values(), task.p);
        let values: Vec<f64> = (0..p * p).map(|i| f(g[(i / p) as usize], h[(i % p) as usize])).collect();
        Tensor::from_slice(&values).view([-1, 1])
    }

    fn wave(p: i64, k: i64, x: i64, phase: f64) -> f64 {
        (angle(p, k, x) + phase).cos()
    }

    #[test]
    fn seed_cells_are_29_by_29_and_means_recover_cell_functions() {
        let task = Task::seed();
        let cells = Cells::new(&task);
        assert_eq!((cells.u.len(), cells.v.len()), (29, 29));
        assert_eq!(cells.counts.iter().sum::<f64>(), (113 * 113) as f64);
        // u = 0 holds one a, every other value four.
        assert_eq!(cells.counts[0], 1.0);
        assert_eq!(cells.counts[1], 4.0);
        assert_eq!(cells.counts[30], 16.0);
        let f = |u: i64, v: i64| (u * 7 + v * v) as f64;
        let means = cells.means(&column(&task, f)).unwrap();
        for (i, (u, v)) in cells.uv().into_iter().enumerate() {
            assert_eq!(means.double_value(&[i as i64, 0]), f(u, v));
        }
        assert!(cells.means(&Tensor::zeros([10, 2], (Kind::Double, Device::Cpu))).is_err());
    }

    #[test]
    fn fits_find_exact_terms_and_not_noise() {
        let task = Task::seed();
        let p = task.p;
        let k = 9;
        // An exact combination of the nine terms: R² = 1 at k, and its products need both u and v.
        let exact = column(&task, |u, v| 0.3 + 2.0 * wave(p, k, u, 0.4) * wave(p, k, v, -1.1) + wave(p, k, u, 0.0));
        assert!((neuron_r2(&task, &exact, &[k]).unwrap()[0] - 1.0).abs() < 1e-9);
        let products = term_shares(&task, &exact, Terms::Products).unwrap();
        let linear = term_shares(&task, &exact, Terms::Linear).unwrap();
        assert!(products[k as usize - 1] > 0.5 && linear[k as usize - 1] > 0.05, "{} {}", products[8], linear[8]);
        // An additive function has no interaction and gains nothing from the products.
        let additive = column(&task, |u, v| wave(p, k, u, 0.2) + 0.5 * wave(p, 3, v, 1.0));
        assert!(interaction_share(&task, &additive).unwrap() < 1e-12);
        assert!(term_shares(&task, &additive, Terms::Products).unwrap()[k as usize - 1].abs() < 1e-9);
        // cos w(u + v) is all interaction but for what its means over u and over v keep.
        let sum = column(&task, |u, v| wave(p, k, u + v, 0.7));
        assert!((term_shares(&task, &sum, Terms::Sum).unwrap()[k as usize - 1] - 1.0).abs() < 1e-9);
        assert!(interaction_share(&task, &sum).unwrap() > 0.8);
        // Shuffled over the cells, the same neuron is nearly unexplained: about 8 of 840 dimensions.
        let shuffled = shuffle_cells(&task, &exact, 3).unwrap();
        let r2 = neuron_r2(&task, &shuffled, &[k]).unwrap()[0];
        assert!(r2 < 0.05, "{r2}");
        assert!(neuron_r2(&task, &exact, &[0]).is_err() && neuron_r2(&task, &exact, &[1, 2]).is_err());
    }

    #[test]
    fn neuron_cells_sort_by_the_angle_and_keep_the_fit() {
        let task = Task::seed();
        let (p, k) = (task.p, 5);
        let acts = Tensor::cat(
            &[column(&task, |u, _| u as f64), column(&task, |u, v| wave(p, k, u, 0.0) * wave(p, k, v, 0.0))],
            1,
        );
        let cells = neuron_cells(&task, &acts, 1, k).unwrap();
        assert_eq!(cells.actual.dim(), (29, 29));
        assert!((cells.r2 - 1.0).abs() < 1e-9);
        let angles: Vec<i64> = cells.u_order.iter().map(|&u| (k * u).rem_euclid(p)).collect();
        assert!(angles.windows(2).all(|w| w[0] <= w[1]), "{angles:?}");
        // The first row is the value of u with angle 0 (u = 0): cos w·0 = 1 times cos w v.
        assert_eq!(cells.u_order[0], 0);
        assert!((cells.actual[[0, 0]] - 1.0).abs() < 1e-12);
        assert!((&cells.actual - &cells.fitted).iter().all(|d| d.abs() < 1e-9));
        assert!(neuron_cells(&task, &acts, 2, k).is_err());
    }

    #[test]
    fn embedding_waves_are_found_at_their_frequency() {
        let task = Task::seed();
        let config = crate::config::RunConfig::seed();
        let model = HookedTransformer::new(&config.model, Device::Cpu).unwrap();
        let random = embed_wave_shares(&task, &model).unwrap();
        let mean = random.iter().sum::<f64>() / random.len() as f64;
        assert!(mean < 0.05, "initial weights: {mean}");
        let (p, k) = (task.p, 12);
        let u = task.g_values();
        let wave_embed = model.map_parameters(|name, t| match name {
            "embed.W_E" => {
                let e = t.zeros_like();
                let values: Vec<f32> = (0..p).map(|a| wave(p, k, u[a as usize], 0.3) as f32).collect();
                e.narrow(0, 0, p).narrow(1, 0, 1).copy_(&Tensor::from_slice(&values).view([p, 1]));
                e
            }
            _ => t.copy(),
        });
        let shares = embed_wave_shares(&task, &wave_embed).unwrap();
        assert!((shares[k as usize - 1] - 1.0).abs() < 1e-6);
        // An orbit-mate explains part of it (the waves are not orthogonal on the 29 values of u), a frequency of
        // another orbit little.
        let orbits = crate::measures::frequency_orbits(&task);
        let own = orbits.iter().find(|o| o.contains(&k)).unwrap();
        let other = orbits.iter().find(|o| !o.contains(&k)).unwrap()[0];
        assert!(own.iter().filter(|&&j| j != k).any(|&j| shares[j as usize - 1] > 0.05));
        assert!(shares[other as usize - 1] < 0.05, "{}", shares[other as usize - 1]);
    }

    #[test]
    fn waves_and_phases_over_c() {
        let p = 113;
        let (k, theta) = (21, -2.0);
        let row: Vec<f64> = (0..p).map(|c| 1.5 + 3.0 * wave(p, k, c, theta)).collect();
        let w = row_wave(&row, k).unwrap();
        assert!((w.amplitude - 3.0).abs() < 1e-9 && (w.phase - theta).abs() < 1e-9 && (w.share - 1.0).abs() < 1e-9);
        assert!(row_wave(&row, k + 1).unwrap().share < 1e-12);
        assert!(row_wave(&row, 57).is_err());
        // Neurons whose activation is cos(w s + φ) and whose output is cos(w c + φ) line up.
        let task = Task::seed();
        let phases: Vec<f64> = (0..6).map(|i| -3.0 + i as f64).collect();
        let acts = Tensor::cat(
            &phases.iter().map(|&ph| column(&task, move |u, v| 2.0 + wave(p, k, u + v, ph))).collect::<Vec<_>>(),
            1,
        );
        let w_logit = Tensor::from_slice(
            &phases.iter().flat_map(|&ph| (0..p).map(move |c| 0.5 * wave(p, k, c, ph))).collect::<Vec<f64>>(),
        )
        .view([6, p]);
        let neurons: Vec<i64> = (0..6).collect();
        let found = neuron_phases(&task, &acts, &w_logit, &neurons, &[k; 6]).unwrap();
        for (f, &ph) in found.iter().zip(&phases) {
            assert!((wrap(f.input_phase - ph)).abs() < 1e-9 && (f.input_amplitude - 1.0).abs() < 1e-9, "{f:?}");
            assert!(f.difference().abs() < 1e-9 && (f.output_amplitude - 0.5).abs() < 1e-9);
        }
        let diffs: Vec<f64> = found.iter().map(|f| f.difference()).collect();
        assert!((alignment(&diffs) - 1.0).abs() < 1e-12);
        assert!(alignment(&shuffled_differences(&found, 1)) < 0.9);
        assert_eq!(alignment(&[]), 0.0);
        assert!((wrap(3.0 * PI) - PI).abs() < 1e-12 && (wrap(-PI) - PI).abs() < 1e-12);
    }

    #[test]
    fn interference_peaks_only_where_the_frequencies_agree() {
        let p = 113;
        let one = interference(p, &[(14, 1.0)]);
        assert_eq!(one.len(), 113);
        assert!((peak_margin(&one) - (1.0 - (2.0 * PI / p as f64).cos())).abs() < 1e-12);
        // Every frequency with one weight: Σ_k cos(w_k d) = −1/2 for d ≠ 0, so the rest is flat.
        let all: Vec<(i64, f64)> = all_freqs(p).into_iter().map(|k| (k, 1.0)).collect();
        let curve = interference(p, &all);
        let unit = ((p * p * p) as f64 / 2.0).sqrt();
        assert!((curve[56] * unit - 56.0).abs() < 1e-9 && (curve[0] * unit + 0.5).abs() < 1e-9);
        assert!(peak_margin(&curve) > 1.0);
        // A negative weight turns the peak into a trough.
        assert!(peak_margin(&interference(p, &[(3, -1.0)])) < 0.0);
        assert!(peak_margin(&[]).is_nan());
        // Logits made of the key cubes come back from the offsets, and the approximation is exact.
        let task = Task::seed();
        let alpha: Vec<f64> = all_freqs(p).iter().map(|&k| if k == 14 || k == 35 { 300.0 } else { 0.0 }).collect();
        let labels = task.labels();
        let logits = Tensor::from_slice(
            &(0..p * p)
                .flat_map(|i| {
                    let s = labels.int64_value(&[i]);
                    let alpha = alpha.clone();
                    (0..p).map(move |c| {
                        4.0 + [14, 35].iter().map(|&k| alpha[k as usize - 1] * angle(p, k, s - c).cos()).sum::<f64>()
                            / unit
                    })
                })
                .collect::<Vec<f64>>(),
        )
        .view([p * p, p]);
        let by_offset = logits_by_offset(&task, &logits).unwrap();
        let expected = interference(p, &[(14, 300.0), (35, 300.0)]);
        assert!(by_offset.iter().zip(&expected).all(|(a, b)| (a - b).abs() < 1e-9));
        let approx = approximate_logits(&task, &logits, &alpha, &[14, 35], 1234).unwrap();
        assert_eq!(approx.answer, labels.int64_value(&[1234]));
        assert!(approx.actual.iter().zip(&approx.approx).all(|(a, b)| (a - b).abs() < 1e-9));
        assert!(approximate_logits(&task, &logits, &alpha, &[0], 1).is_err());
    }

    #[test]
    fn coverage_map_matches_the_seed_coverage() {
        let task = Task::seed();
        let split = Split::seeded(task.n_pairs(), 0.3, 598).unwrap();
        let map = coverage_map(&task, &split).unwrap();
        let coverage = crate::coverage::Coverage::new(&task, &split);
        assert_eq!(map.train.sum() as usize, split.train.len());
        assert_eq!(map.unseen_test.sum() as usize, coverage.unseen_test_pairs.len());
        assert_eq!(map.train.iter().filter(|&&n| n == 0.0).count(), coverage.unseen_cells.len());
    }

    #[test]
    fn random_freqs_avoid_their_own() {
        let own: Vec<i64> = (0..1000).map(|i| 1 + i % 56).collect();
        let drawn = random_freqs(113, &own, 9);
        assert!(drawn.iter().zip(&own).all(|(d, o)| d != o && (1..=56).contains(d)));
        assert!((1..=56).all(|k| drawn.contains(&k)));
        assert_eq!(drawn, random_freqs(113, &own, 9));
    }

    #[test]
    #[ignore]
    fn explore_fixtures() {
        let t0 = std::time::Instant::now();
        let lap = |what: &str| println!("  [{what}: {:.1} s]", t0.elapsed().as_secs_f64());
        for name in ["seed"] {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/runs/");
            let config: crate::config::RunConfig =
                serde_json::from_str(&std::fs::read_to_string(format!("{dir}{name}_config.json")).unwrap()).unwrap();
            let task = config.task;
            let p = task.p;
            let model = crate::run::load_state_dict(
                std::path::Path::new(&format!("{dir}{name}_final.safetensors")),
                &config,
                Device::Cpu,
            )
            .unwrap();
            let acts = crate::measures::all_inputs(&model, &task).unwrap();
            lap("all_inputs");
            let per =
                crate::fourier::PerView::new(|v| crate::measures::logit_periodicity(&task, v, &acts.logits).unwrap());
            let keys = crate::measures::LogitRule::default().detect_views(&task, &per).task;
            let alpha = per.task.coefficients.clone();
            println!("orbits {:?}", crate::measures::frequency_orbits(&task));
            let l = crate::measures::f64_cpu(&acts.logits);
            let centred = (&l - l.mean_dim(1, true, Kind::Double)).square().sum(Kind::Double).double_value(&[]);
            let all: f64 = alpha.iter().map(|a| a * a).sum();
            println!("all-k share of centred logits {:.4}", all / centred);
            let mut ranked: Vec<usize> = (0..56).collect();
            ranked.sort_by(|&i, &j| alpha[j].abs().total_cmp(&alpha[i].abs()));
            println!(
                "top alphas {:?}",
                ranked
                    .iter()
                    .take(12)
                    .map(|&i| (i + 1, (alpha[i] * alpha[i] / centred * 1000.0).round() / 1000.0))
                    .collect::<Vec<_>>()
            );
            lap("periodicity");
            let post = acts.mlp_post.shallow_clone();
            let prod = term_shares(&task, &post, Terms::Products).unwrap();
            lap("term_shares");
            let mut r: Vec<usize> = (0..56).collect();
            r.sort_by(|&i, &j| prod[j].total_cmp(&prod[i]));
            println!(
                "post products top {:?}",
                r.iter().take(12).map(|&i| (i + 1, (prod[i] * 1000.0).round() / 1000.0)).collect::<Vec<_>>()
            );
            let lin = term_shares(&task, &post, Terms::Linear).unwrap();
            r.sort_by(|&i, &j| lin[j].total_cmp(&lin[i]));
            println!(
                "post linear top {:?}",
                r.iter().take(12).map(|&i| (i + 1, (lin[i] * 1000.0).round() / 1000.0)).collect::<Vec<_>>()
            );
            let emb = embed_wave_shares(&task, &model).unwrap();
            lap("embed");
            r.sort_by(|&i, &j| emb[j].total_cmp(&emb[i]));
            println!(
                "embed top {:?}",
                r.iter().take(14).map(|&i| (i + 1, (emb[i] * 1000.0).round() / 1000.0)).collect::<Vec<_>>()
            );
            let out = crate::measures::neuron_logit_freq(&model).unwrap();
            let mut counts = vec![0; 57];
            for n in 0..512 {
                if out.max[n] >= 0.5 {
                    counts[out.best_freq[n] as usize] += 1;
                }
            }
            println!(
                "neurons with out share >= 0.5 by freq: {:?}",
                (1..=56).filter(|&k| counts[k] > 0).map(|k| (k, counts[k])).collect::<Vec<_>>()
            );
            let r2 = neuron_r2(&task, &post, &out.best_freq).unwrap();
            lap("neuron_r2");
            let sel: Vec<i64> = (0..512)
                .filter(|&n| keys.freqs.contains(&out.best_freq[n as usize]) && out.max[n as usize] >= 0.5)
                .collect();
            let fr: Vec<i64> = sel.iter().map(|&n| out.best_freq[n as usize]).collect();
            let ph = neuron_phases(&task, &post, &crate::measures::w_logit(&model), &sel, &fr).unwrap();
            lap("phases");
            let hist = |xs: &[f64]| {
                let mut h = vec![0; 8];
                for x in xs {
                    h[(((x + PI) / (2.0 * PI) * 8.0) as usize).min(7)] += 1;
                }
                h
            };
            println!("input phase hist {:?}", hist(&ph.iter().map(|x| x.input_phase).collect::<Vec<_>>()));
            println!("output phase hist {:?}", hist(&ph.iter().map(|x| x.output_phase).collect::<Vec<_>>()));
            println!("diff hist {:?}", hist(&ph.iter().map(|x| x.difference()).collect::<Vec<_>>()));
            for &k in &keys.freqs {
                let d: Vec<f64> = ph.iter().filter(|x| x.k == k).map(|x| x.difference()).collect();
                let o: Vec<f64> = ph.iter().filter(|x| x.k == k).map(|x| x.output_phase).collect();
                println!(
                    "  k {k}: {} neurons, alignment {:.3}, output-phase concentration {:.3}",
                    d.len(),
                    alignment(&d),
                    alignment(&o)
                );
            }
            let top: Vec<usize> = {
                let mut v: Vec<usize> = (0..512).collect();
                v.sort_by(|&i, &j| out.max[j].total_cmp(&out.max[i]));
                v
            };
            for &n in top.iter().take(5) {
                println!("neuron {n}: out k {} share {:.3}; r2 {:.3}", out.best_freq[n], out.max[n], r2[n]);
            }
            let nc = neuron_cells(&task, &post, top[0] as i64, out.best_freq[top[0]]).unwrap();
            println!("coefs {:?}", nc.coefficients.iter().map(|c| (c * 1000.0).round() / 1000.0).collect::<Vec<_>>());
            let s_classes = crate::fourier::View::Task.sums(&task);
            let _ = (p, s_classes);
            lap("done");
        }
    }
}
