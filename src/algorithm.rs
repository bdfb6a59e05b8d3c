//! The algorithm a trained model uses on (g(a) + h(b)) mod p, in pieces small enough to
//! teach: what `notebooks/algorithm.ipynb` draws.
//!
//! In the task's own variables u = g(a), v = h(b) (for the seed u = a⁴, v = b⁴) the label
//! is c = u + v mod p, and the TransformerLens Grokking demo's algorithm for a + b reads,
//! with w_k = 2πk/p for a few key frequencies k ∈ K:
//!
//! 1. the logits are a sum of key terms, L ≈ Σ_k α_k cos(w_k(u + v − c)) ([`logit_shares`],
//!    [`approximate_logits`]);
//! 2. the embedding carries cos(w_k u), sin(w_k u) (and of v) ([`embed_wave_shares`]), and
//!    the neurons multiply them (the ReLU makes the products cos w_k u · cos w_k v, …), so
//!    that they hold cos(w_k(u + v)) = cos w_k u cos w_k v − sin w_k u sin w_k v and
//!    sin(w_k(u + v)) ([`term_shares`], [`interaction_share`], [`neuron_r2`], [`neuron_cells`]);
//! 3. those terms all peak at c = u + v and cancel elsewhere: constructive interference
//!    ([`interference`], [`logits_by_offset`], [`peak_margin`]);
//! 4. each neuron writes a wave in c at its frequency, in phase with what it reads
//!    (W_out·W_U: [`logit_wave`], [`neuron_phases`]).
//!
//! **Cells.** A model that reads a only through u and b only through v sees the input
//! (a, b) as the cell (u, v) ([`Cells`]; 29 × 29 cells for the seed). Fits over (u, v) are
//! taken on the cell means of an activation, each cell weighted by how many inputs it holds:
//! the fit over all p² inputs less what varies inside a cell (what is no function of (u, v)
//! at all). R² is then the share of the between-cell energy a fit explains.
//!
//! **What these fits cannot tell apart.** On the 29 values of u = a⁴ mod 113 the waves of
//! different frequencies are not orthogonal (the 14 frequencies of one orbit k ↦ ±h·k, h a
//! fourth power, and the constant span every function of u), so a wave of frequency k is
//! partly fit by its orbit-mates, and shares over k add up to more than 1: read a share at
//! k against the shares at every other k and against the controls ([`shuffle_cells`],
//! [`random_freqs`], the initial weights). Over c the waves are orthogonal (c runs over all
//! of Z_p), so the output side ([`logit_wave`]) does identify a frequency.
//!
//! The fits are small (at most 9 functions over at most p² cells) and are solved here in
//! float64 with ndarray, not with torch, so they cost the same on a busy machine.

use std::f64::consts::PI;

use ndarray::{Array1, Array2, Axis};
use tch::{Device, Kind, Tensor};

use crate::arrays::to_array2;
use crate::error::{Error, Result};
use crate::measures::{check_key_freqs, f64_cpu, w_logit};
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
    /// Inputs per cell; cell `i·v.len() + j` is (u[i], v[j]).
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
        let cell_of: Vec<i64> =
            (0..p * p).map(|i| index(&u, g[(i / p) as usize]) * n_v + index(&v, h[(i % p) as usize])).collect();
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

    /// The mean of `acts` (`[p², d]`, all inputs a-major) over each cell: `[cells, d]`.
    pub fn means(&self, acts: &Tensor) -> Result<Array2<f64>> {
        let acts = self.check(acts)?;
        let ids = Tensor::from_slice(&self.cell_of);
        let sums =
            Tensor::zeros([self.len() as i64, acts.size()[1]], (Kind::Double, Device::Cpu)).index_add(0, &ids, &acts);
        to_array2(&(sums / Tensor::from_slice(&self.counts).unsqueeze(1)))
    }

    fn weights(&self) -> Array1<f64> {
        Array1::from(self.counts.clone())
    }

    /// `acts` as a float64 CPU `[p², d]` tensor, or why not.
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

    /// The terms of frequency k at each cell: `[cells, m]`, the columns [`Terms::columns`] names.
    pub fn features(&self, k: i64, terms: Terms) -> Array2<f64> {
        let p = self.p;
        let m = terms.columns().len();
        let mut out = Array2::zeros((self.len(), m));
        for (i, (u, v)) in self.uv().into_iter().enumerate() {
            let (cu, su, cv, sv) =
                (angle(p, k, u).cos(), angle(p, k, u).sin(), angle(p, k, v).cos(), angle(p, k, v).sin());
            let row = match terms {
                Terms::Linear => vec![cu, su, cv, sv],
                Terms::Products => vec![cu, su, cv, sv, cu * cv, cu * sv, su * cv, su * sv],
                Terms::Sum => vec![angle(p, k, u + v).cos(), angle(p, k, u + v).sin()],
            };
            out.row_mut(i).assign(&Array1::from(row));
        }
        out
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
    /// The names of the feature columns (the fit adds the constant before them).
    pub fn columns(self) -> Vec<&'static str> {
        match self {
            Terms::Linear => vec!["cos wu", "sin wu", "cos wv", "sin wv"],
            Terms::Products => vec![
                "cos wu",
                "sin wu",
                "cos wv",
                "sin wv",
                "cos wu·cos wv",
                "cos wu·sin wv",
                "sin wu·cos wv",
                "sin wu·sin wv",
            ],
            Terms::Sum => vec!["cos w(u+v)", "sin w(u+v)"],
        }
    }
}

/// A weighted least-squares fit of each column of some values on the constant and features.
struct Fit {
    /// `[1 + m, d]`: the constant's coefficient, then the features'.
    coefficients: Array2<f64>,
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

/// The weighted sums of one set of values (`[n, d]`, weights `[n]`) that every fit of them reuses.
struct Fitter {
    /// w ∘ y: `[n, d]`.
    weighted: Array2<f64>,
    weights: Array1<f64>,
    /// Per column Σ w y², and Σ w (y − ȳ)².
    sum_sq: Array1<f64>,
    total: Vec<f64>,
}

impl Fitter {
    fn new(values: &Array2<f64>, weights: &Array1<f64>) -> Self {
        let weighted = values * &weights.view().insert_axis(Axis(1));
        let sum_sq = (&weighted * values).sum_axis(Axis(0));
        let sum = weighted.sum_axis(Axis(0));
        let w_total = weights.sum();
        let total = sum_sq.iter().zip(&sum).map(|(q, s)| (q - s * s / w_total).max(0.0)).collect();
        Fitter { weighted, weights: weights.clone(), sum_sq, total }
    }

    /// β = (XᵀWX)⁺ XᵀWY with X = [1, features] (`[n, m]`); the residual of each column is
    /// yᵀWy − bᵀ(XᵀWX)⁺b with b = XᵀWy, so no `[n, d]` temporary is made.
    fn fit(&self, features: &Array2<f64>) -> Fit {
        let x = with_constant(features);
        let b = x.t().dot(&self.weighted); // [1 + m, d]
        let gram = x.t().dot(&(&x * &self.weights.view().insert_axis(Axis(1))));
        let coefficients = pinv_symmetric(&gram).dot(&b);
        let explained = (&b * &coefficients).sum_axis(Axis(0));
        let residual = self.sum_sq.iter().zip(&explained).map(|(q, e)| (q - e).max(0.0)).collect();
        Fit { coefficients, total: self.total.clone(), residual }
    }
}

/// [1, features]: `[n, 1 + m]`.
fn with_constant(features: &Array2<f64>) -> Array2<f64> {
    let mut x = Array2::ones((features.nrows(), features.ncols() + 1));
    x.slice_mut(ndarray::s![.., 1..]).assign(features);
    x
}

/// The pseudo-inverse of a small symmetric positive semi-definite matrix, by Jacobi
/// rotations: eigenvalues below 1e-10 × the largest are taken as zero (torch's
/// `linalg_pinv(rtol = 1e-10, hermitian)`).
fn pinv_symmetric(m: &Array2<f64>) -> Array2<f64> {
    let n = m.nrows();
    let mut a = m.clone();
    let mut v = Array2::<f64>::eye(n);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[[i, j]].powi(2))
            .sum();
        let diag: f64 = (0..n).map(|i| a[[i, i]].powi(2)).sum();
        if off <= 1e-30 * diag.max(f64::MIN_POSITIVE) {
            break;
        }
        for i in 0..n {
            for j in i + 1..n {
                if a[[i, j]].abs() < f64::MIN_POSITIVE {
                    continue;
                }
                let theta = (a[[j, j]] - a[[i, i]]) / (2.0 * a[[i, j]]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                for k in 0..n {
                    let (aki, akj) = (a[[k, i]], a[[k, j]]);
                    a[[k, i]] = c * aki - s * akj;
                    a[[k, j]] = s * aki + c * akj;
                }
                for k in 0..n {
                    let (aik, ajk) = (a[[i, k]], a[[j, k]]);
                    a[[i, k]] = c * aik - s * ajk;
                    a[[j, k]] = s * aik + c * ajk;
                }
                for k in 0..n {
                    let (vki, vkj) = (v[[k, i]], v[[k, j]]);
                    v[[k, i]] = c * vki - s * vkj;
                    v[[k, j]] = s * vki + c * vkj;
                }
            }
        }
    }
    let eig: Vec<f64> = (0..n).map(|i| a[[i, i]]).collect();
    let largest = eig.iter().fold(0.0f64, |m, e| m.max(e.abs()));
    let inv = Array1::from_iter(eig.iter().map(|&e| if e.abs() > 1e-10 * largest && e != 0.0 { 1.0 / e } else { 0.0 }));
    (&v * &inv.insert_axis(Axis(0))).dot(&v.t())
}

/// Per frequency k (index k − 1), the share of the between-cell energy of `acts` (`[p², d]`,
/// all inputs a-major, e.g. every neuron's activation), summed over its d columns, that the
/// `terms` of frequency k explain. For [`Terms::Products`] it is what the four products add
/// to the linear terms: R²(1, linear, products) − R²(1, linear).
pub fn term_shares(task: &Task, acts: &Tensor, terms: Terms) -> Result<Vec<f64>> {
    let cells = Cells::new(task);
    let fitter = Fitter::new(&cells.means(acts)?, &cells.weights());
    Ok(all_freqs(task.p)
        .into_iter()
        .map(|k| {
            let share = |t: Terms| fitter.fit(&cells.features(k, t)).share();
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
    let (n_u, n_v, d) = (cells.u.len(), cells.v.len(), means.ncols());
    let w = |i: usize, j: usize| cells.counts[i * n_v + j];
    let (mut row, mut col) = (Array2::<f64>::zeros((n_u, d)), Array2::<f64>::zeros((n_v, d)));
    let (mut row_w, mut col_w) = (vec![0.0; n_u], vec![0.0; n_v]);
    let mut grand = Array1::<f64>::zeros(d);
    for i in 0..n_u {
        for j in 0..n_v {
            let y = means.row(i * n_v + j);
            row.row_mut(i).scaled_add(w(i, j), &y);
            col.row_mut(j).scaled_add(w(i, j), &y);
            grand.scaled_add(w(i, j), &y);
            row_w[i] += w(i, j);
            col_w[j] += w(i, j);
        }
    }
    let total_w: f64 = cells.counts.iter().sum();
    grand /= total_w;
    row.rows_mut().into_iter().zip(&row_w).for_each(|(mut r, n)| r /= *n);
    col.rows_mut().into_iter().zip(&col_w).for_each(|(mut c, n)| c /= *n);
    let (mut total, mut residual) = (0.0, 0.0);
    for i in 0..n_u {
        for j in 0..n_v {
            let y = means.row(i * n_v + j);
            for n in 0..d {
                total += w(i, j) * (y[n] - grand[n]).powi(2);
                residual += w(i, j) * (y[n] - row[[i, n]] - col[[j, n]] + grand[n]).powi(2);
            }
        }
    }
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
    let u = task.g_values();
    let fitter = Fitter::new(&to_array2(&w_e.narrow(0, 0, p))?, &Array1::ones(p as usize));
    Ok(all_freqs(p)
        .into_iter()
        .map(|k| {
            let waves = Array2::from_shape_fn((p as usize, 2), |(a, j)| {
                let t = angle(p, k, u[a]);
                if j == 0 {
                    t.cos()
                } else {
                    t.sin()
                }
            });
            fitter.fit(&waves).share()
        })
        .collect())
}

/// Per neuron (column of `acts`, `[p², d]`), the R² over the cells of its fit on the nine
/// functions of [`Terms::Products`] (with the constant) at its own frequency `freqs[n]`.
pub fn neuron_r2(task: &Task, acts: &Tensor, freqs: &[i64]) -> Result<Vec<f64>> {
    let cells = Cells::new(task);
    let means = cells.means(acts)?;
    let d = means.ncols();
    if freqs.len() != d {
        return Err(Error::config(format!("{} frequencies for {d} neurons", freqs.len())));
    }
    let mut distinct = freqs.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    check_key_freqs(task.p, &distinct)?;
    let weights = cells.weights();
    let mut r2 = vec![0.0; d];
    for k in distinct {
        let columns: Vec<usize> = (0..d).filter(|&n| freqs[n] == k).collect();
        let fit = Fitter::new(&means.select(Axis(1), &columns), &weights).fit(&cells.features(k, Terms::Products));
        columns.iter().zip(fit.r2()).for_each(|(&n, value)| r2[n] = value);
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
    /// Its fit on the nine functions of [`Terms::Products`] at frequency k.
    pub fitted: Array2<f64>,
    /// The fit's R² over the cells (weighted by the inputs in each).
    pub r2: f64,
    /// The fit's coefficients: the constant's, then those of [`Terms::columns`] of [`Terms::Products`].
    pub coefficients: Vec<f64>,
}

/// Neuron `neuron` of `acts` (`[p², d]`) over the cells, with its nine-term fit at frequency k.
pub fn neuron_cells(task: &Task, acts: &Tensor, neuron: i64, k: i64) -> Result<NeuronCells> {
    check_key_freqs(task.p, &[k])?;
    let cells = Cells::new(task);
    let means = cells.means(acts)?;
    let n = usize::try_from(neuron).ok().filter(|&n| n < means.ncols());
    let n = n.ok_or_else(|| Error::config(format!("no neuron {neuron}: there are {}", means.ncols())))?;
    let column = means.select(Axis(1), &[n]);
    let features = cells.features(k, Terms::Products);
    let fit = Fitter::new(&column, &cells.weights()).fit(&features);
    let fitted = with_constant(&features).dot(&fit.coefficients);
    let p = task.p;
    let order = |values: &[i64]| {
        let mut idx: Vec<usize> = (0..values.len()).collect();
        idx.sort_by_key(|&i| ((k * values[i]).rem_euclid(p), values[i]));
        idx
    };
    let (iu, iv) = (order(&cells.u), order(&cells.v));
    let n_v = cells.v.len();
    let grid = |t: &Array2<f64>| Array2::from_shape_fn((iu.len(), iv.len()), |(i, j)| t[[iu[i] * n_v + iv[j], 0]]);
    Ok(NeuronCells {
        neuron,
        k,
        u_order: iu.iter().map(|&i| cells.u[i]).collect(),
        v_order: iv.iter().map(|&j| cells.v[j]).collect(),
        actual: grid(&column),
        fitted: grid(&fitted),
        r2: fit.r2()[0],
        coefficients: fit.coefficients.column(0).to_vec(),
    })
}

/// The control "a shuffled neuron": `acts` (`[p², d]`) with the cells permuted (one seeded
/// permutation, the same for every column): each input gets the mean of another cell.
/// What varies inside a cell is dropped; the between-cell values are kept, in an order that
/// no function of (u, v) explains.
pub fn shuffle_cells(task: &Task, acts: &Tensor, seed: u64) -> Result<Tensor> {
    let cells = Cells::new(task);
    let means = crate::arrays::to_tensor(&cells.means(acts)?);
    let order = permutation(cells.len(), seed);
    let shuffled = means.index_select(0, &Tensor::from_slice(&order.iter().map(|&i| i as i64).collect::<Vec<_>>()));
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

/// A row over c = 0..p (e.g. a neuron's row of W_out·W_U) and its wave at one frequency.
#[derive(Clone, Debug)]
pub struct LogitWave {
    pub k: i64,
    /// The row, less its mean over c.
    pub row: Vec<f64>,
    /// Its projection on cos(w_k c), sin(w_k c): B cos(w_k c + θ).
    pub wave: Vec<f64>,
    /// ‖wave‖² / ‖row‖²: the share of the row's energy at k (the waves are orthogonal over
    /// c, so the shares of all k add up to 1).
    pub share: f64,
    /// B ≥ 0 and θ ∈ (−π, π].
    pub amplitude: f64,
    pub phase: f64,
}

/// `row` (over c = 0..p) against the wave of frequency k.
pub fn row_wave(row: &[f64], k: i64) -> Result<LogitWave> {
    let p = row.len() as i64;
    check_key_freqs(p, &[k])?;
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
    Ok(LogitWave { k, row, wave, share, amplitude: bc.hypot(bs), phase: wrap((-bs).atan2(bc)) })
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
/// the first peaks at c = s when θ = φ; the second cancels over neurons whose phases spread.
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
/// activation `acts` (`[p², d]`) over the cells and its row of `w_logit` (`[d, p]`, W_out·W_U,
/// e.g. [`crate::measures::w_logit`]).
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
    let w = to_array2(w_logit)?;
    let d = means.ncols();
    if w.dim() != (d, task.p as usize) {
        return Err(Error::config(format!("w_logit must be [{d}, {}], got {:?}", task.p, w.dim())));
    }
    let weights = cells.weights();
    neurons
        .iter()
        .zip(freqs)
        .map(|(&neuron, &k)| {
            let n = usize::try_from(neuron).ok().filter(|&n| n < d);
            let n = n.ok_or_else(|| Error::config(format!("no neuron {neuron}: there are {d}")))?;
            let out = row_wave(&w.row(n).to_vec(), k)?;
            let fit = Fitter::new(&means.select(Axis(1), &[n]), &weights).fit(&cells.features(k, Terms::Sum));
            let (bc, bs) = (fit.coefficients[[1, 0]], fit.coefficients[[2, 0]]);
            Ok(NeuronPhase {
                neuron,
                k,
                input_phase: wrap((-bs).atan2(bc)),
                input_amplitude: bc.hypot(bs),
                output_phase: out.phase,
                output_amplitude: out.amplitude,
            })
        })
        .collect()
}

/// How well angles line up: |mean of e^{i·x}| over the angles `x` (1 when all are equal,
/// about 1/√n for n uniformly random ones; 0 for none).
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
    let order = permutation(phases.len(), seed);
    phases.iter().zip(&order).map(|(ph, &j)| wrap(ph.input_phase - phases[j].output_phase)).collect()
}

/// The offsets d = c − (u + v) from −(p−1)/2 to (p−1)/2: the x axis of [`interference`].
pub fn offsets(p: i64) -> Vec<i64> {
    (-(p - 1) / 2..=(p - 1) / 2).collect()
}

/// Σ_k α_k cos(w_k d) / √(p³/2) at each offset d of [`offsets`], for `terms` = (k, α_k):
/// what the key cubes α_k C_k add up to at c = u + v + d, in logit units (C_k is the unit
/// cube cos(w_k(s − c)) / √(p³/2), and α_k are [`crate::measures::LogitPeriodicity`]'s
/// coefficients). Every term is largest at d = 0; elsewhere they disagree and cancel.
pub fn interference(p: i64, terms: &[(i64, f64)]) -> Vec<f64> {
    let unit = ((p * p * p) as f64 / 2.0).sqrt();
    offsets(p).into_iter().map(|d| terms.iter().map(|&(k, a)| a * angle(p, k, d).cos()).sum::<f64>() / unit).collect()
}

/// The model's side of [`interference`]: at each offset d, the mean over all inputs of
/// the centred logit L[a, b, u + v + d] − mean_c L[a, b, ·] (`logits` `[p², p]`).
pub fn logits_by_offset(task: &Task, logits: &Tensor) -> Result<Vec<f64>> {
    let p = task.p;
    let l = to_array2(&Cells::new(task).check(logits)?)?;
    if l.ncols() != p as usize {
        return Err(Error::config(format!("logits must have p = {p} columns, got {:?}", l.dim())));
    }
    let labels = Vec::<i64>::try_from(task.labels())?;
    let means = l.mean_axis(Axis(1)).expect("p ≥ 1 columns");
    let n = l.nrows() as f64;
    Ok(offsets(p)
        .into_iter()
        .map(|d| (0..l.nrows()).map(|i| l[[i, (labels[i] + d).rem_euclid(p) as usize]] - means[i]).sum::<f64>() / n)
        .collect())
}

/// How far a curve over [`offsets`] peaks at d = 0: (value at 0 − the largest elsewhere) /
/// |value at 0|. One frequency alone gives 1 − cos(2π/p) (0.0015 for p = 113): its
/// neighbours are nearly as high. Negative when the curve does not peak at 0; NaN for an
/// empty curve or a zero peak.
pub fn peak_margin(curve: &[f64]) -> f64 {
    let mid = curve.len() / 2;
    match curve.get(mid) {
        Some(&top) if top != 0.0 => {
            let others = curve.iter().enumerate().filter(|(i, _)| *i != mid).map(|(_, v)| *v);
            (top - others.fold(f64::NEG_INFINITY, f64::max)) / top.abs()
        }
        _ => f64::NAN,
    }
}

/// How the logits' energy splits, as shares of ‖L − mean_c L‖² (each input's logits less
/// their mean over c, which softmax ignores): nested sets of functions, so the shares grow.
#[derive(Clone, Debug, PartialEq)]
pub struct LogitShares {
    /// Σ_{k∈K} α_k²: the key cubes cos(w_k(u + v − c)).
    pub key_cubes: f64,
    /// Σ_k α_k² over every frequency: all of L that is a wave in u + v − c.
    pub all_cubes: f64,
    /// What depends on (a, b) only through s = u + v (the class means over s): any function
    /// of (s, c), of which the cubes are a part.
    pub function_of_sum: f64,
    /// What depends on (a, b) only through the cell (u, v).
    pub function_of_cell: f64,
}

/// [`LogitShares`] of `logits` (`[p², p]`), given the task view's α_k (`coefficients[k − 1]`,
/// [`crate::measures::logit_periodicity`] in [`crate::fourier::View::Task`]) and a key set.
pub fn logit_shares(task: &Task, logits: &Tensor, coefficients: &[f64], key_freqs: &[i64]) -> Result<LogitShares> {
    let p = task.p;
    check_key_freqs(p, key_freqs)?;
    if coefficients.len() as i64 != (p - 1) / 2 {
        return Err(Error::config(format!("{} coefficients, not (p − 1)/2 = {}", coefficients.len(), (p - 1) / 2)));
    }
    let cells = Cells::new(task);
    let l = cells.check(logits)?;
    let centred = &l - l.mean_dim(1, true, Kind::Double);
    let total = centred.square().sum(Kind::Double).double_value(&[]);
    if total <= 0.0 {
        return Err(Error::config("the logits do not vary over c: their shares are undefined"));
    }
    // The between-class energy of the centred logits; their mean over the inputs is kept in
    // (a function of c alone is a function of every class).
    let class_energy = |ids: &[i64]| {
        let n = ids.iter().max().map_or(0, |m| m + 1);
        let ids = Tensor::from_slice(ids);
        let sums = Tensor::zeros([n, p], (Kind::Double, Device::Cpu)).index_add(0, &ids, &centred);
        let counts = ids.bincount(None::<Tensor>, n).to_kind(Kind::Double).clamp_min(1.0);
        (sums.square() / counts.unsqueeze(1)).sum(Kind::Double).double_value(&[])
    };
    let sums = crate::fourier::View::Task.sums(task);
    let sq = |freqs: &[i64]| freqs.iter().map(|&k| coefficients[k as usize - 1].powi(2)).sum::<f64>() / total;
    Ok(LogitShares {
        key_cubes: sq(key_freqs),
        all_cubes: sq(&all_freqs(p)),
        function_of_sum: class_energy(&sums) / total,
        function_of_cell: class_energy(cells.cell_of()) / total,
    })
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
    check_key_freqs(p, key_freqs)?;
    if !(0..p * p).contains(&pair) {
        return Err(Error::config(format!("no input {pair}: there are {}", p * p)));
    }
    if coefficients.len() as i64 != (p - 1) / 2 {
        return Err(Error::config(format!("{} coefficients, not (p − 1)/2 = {}", coefficients.len(), (p - 1) / 2)));
    }
    let l = Cells::new(task).check(logits)?;
    if l.size()[1] != p {
        return Err(Error::config(format!("logits must have p = {p} columns, got {:?}", l.size())));
    }
    let row = Vec::<f64>::try_from(l.get(pair))?;
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

/// A seeded permutation of 0..n (Fisher–Yates).
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix(seed);
    for i in (1..n).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    order
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
            assert_eq!(means[[i, 0]], f(u, v));
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
    fn pinv_of_a_rank_deficient_gram_matrix() {
        // Columns x, 2x and y: rank 2; the pseudo-inverse satisfies G G⁺ G = G.
        let x = ndarray::arr2(&[[1.0, 2.0, 0.5], [2.0, 4.0, -1.0], [0.0, 0.0, 3.0], [1.5, 3.0, 1.0]]);
        let g = x.t().dot(&x);
        let gp = pinv_symmetric(&g);
        assert!((g.dot(&gp).dot(&g) - &g).iter().all(|d| d.abs() < 1e-9), "{gp:?}");
        let full = ndarray::arr2(&[[4.0, 1.0], [1.0, 3.0]]);
        assert!((full.dot(&pinv_symmetric(&full)) - Array2::<f64>::eye(2)).iter().all(|d| d.abs() < 1e-12));
    }

    #[test]
    fn logit_shares_are_nested_and_exact_for_key_cubes() {
        let task = Task::seed();
        let p = task.p;
        let unit = ((p * p * p) as f64 / 2.0).sqrt();
        let labels = Vec::<i64>::try_from(task.labels()).unwrap();
        let cells = Cells::new(&task);
        // Key cubes at 14 and 35, plus a function of the cell that is no function of u + v.
        let cube =
            |i: usize, c: i64| [14, 35].iter().map(|&k| 300.0 * angle(p, k, labels[i] - c).cos()).sum::<f64>() / unit;
        let values: Vec<f64> = (0..(p * p) as usize)
            .flat_map(|i| {
                let cell = cells.cell_of()[i];
                (0..p).map(move |c| cube(i, c) + if c == 3 { (cell % 5) as f64 } else { 0.0 })
            })
            .collect();
        let logits = Tensor::from_slice(&values).view([p * p, p]);
        let alpha =
            crate::measures::logit_periodicity(&task, crate::fourier::View::Task, &logits).unwrap().coefficients;
        let shares = logit_shares(&task, &logits, &alpha, &[14, 35]).unwrap();
        assert!(shares.key_cubes <= shares.all_cubes + 1e-12 && shares.all_cubes <= shares.function_of_sum + 1e-12);
        assert!(
            shares.function_of_sum < shares.function_of_cell && (shares.function_of_cell - 1.0).abs() < 1e-9,
            "{shares:?}"
        );
        // The spike at c = 3 is a wave of every frequency in c, but not one of u + v − c.
        assert!((shares.key_cubes - shares.all_cubes).abs() < 1e-3 && shares.all_cubes < 0.75, "{shares:?}");
        let pure: Vec<f64> = (0..(p * p) as usize).flat_map(|i| (0..p).map(move |c| cube(i, c))).collect();
        let pure = Tensor::from_slice(&pure).view([p * p, p]);
        let alpha = crate::measures::logit_periodicity(&task, crate::fourier::View::Task, &pure).unwrap().coefficients;
        let shares = logit_shares(&task, &pure, &alpha, &[14, 35]).unwrap();
        assert!((shares.key_cubes - 1.0).abs() < 1e-9 && (shares.function_of_sum - 1.0).abs() < 1e-9, "{shares:?}");
        assert!(logit_shares(&task, &pure, &alpha[..3], &[14]).is_err());
    }

    /// The seed's real 25,000-epoch run (its final checkpoint, `tests/data/runs`): what
    /// `notebooks/algorithm.ipynb` says the full run shows.
    #[test]
    fn the_seed_run_uses_the_algorithm() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/runs/");
        let config: crate::config::RunConfig =
            serde_json::from_str(&std::fs::read_to_string(format!("{dir}seed_config.json")).unwrap()).unwrap();
        let task = config.task;
        let path = std::path::PathBuf::from(format!("{dir}seed_final.safetensors"));
        let model = crate::run::load_state_dict(&path, &config, Device::Cpu).unwrap();
        let acts = crate::measures::all_inputs(&model, &task).unwrap();
        let periodicity =
            crate::fourier::PerView::new(|v| crate::measures::logit_periodicity(&task, v, &acts.logits).unwrap());
        let keys = crate::measures::LogitRule::default().detect_views(&task, &periodicity).task.freqs;
        let orbits = crate::measures::frequency_orbits(&task);
        let orbit_of_1 = orbits.iter().find(|o| o.contains(&1)).unwrap();
        assert!(!keys.is_empty() && keys.iter().all(|k| orbit_of_1.contains(k)), "{keys:?}");
        let at = |v: &[f64], k: i64| v[k as usize - 1];
        let outside = |v: &[f64]| (1..=56).filter(|k| !orbit_of_1.contains(k)).map(|k| at(v, k)).fold(0.0, f64::max);
        // The embedding: the key frequencies are the largest shares, the other orbits lower.
        let embed = embed_wave_shares(&task, &model).unwrap();
        let mut ranked: Vec<i64> = (1..=56).collect();
        ranked.sort_by(|&i, &j| at(&embed, j).total_cmp(&at(&embed, i)));
        let mut top = ranked[..keys.len()].to_vec();
        top.sort_unstable();
        assert_eq!(top, keys);
        assert!(keys.iter().all(|&k| at(&embed, k) > 1.5 * outside(&embed)));
        // The products appear after the ReLU, at the key frequencies, and hardly before it.
        let (_, cache) = model.run_with_cache(&task.dataset()).unwrap();
        let pre = cache.require("blocks.0.mlp.hook_pre").unwrap().select(1, -1);
        let after = term_shares(&task, &acts.mlp_post, Terms::Products).unwrap();
        let before = term_shares(&task, &pre, Terms::Products).unwrap();
        assert!(keys.iter().all(|&k| at(&after, k) > 5.0 * outside(&after) && at(&after, k) > at(&before, k)));
        assert!(interaction_share(&task, &pre).unwrap() < 0.5 * interaction_share(&task, &acts.mlp_post).unwrap());
        // Neurons fit the nine terms of their own output frequency far better than the controls.
        let out = crate::measures::neuron_logit_freq(&model).unwrap();
        let median = |v: Vec<f64>| crate::series::sorted(&v)[v.len() / 2];
        let own = median(neuron_r2(&task, &acts.mlp_post, &out.best_freq).unwrap());
        let random = median(neuron_r2(&task, &acts.mlp_post, &random_freqs(task.p, &out.best_freq, 1)).unwrap());
        let shuffled = shuffle_cells(&task, &acts.mlp_post, 1).unwrap();
        let shuffled = median(neuron_r2(&task, &shuffled, &out.best_freq).unwrap());
        assert!(own > 0.4 && own > 5.0 * random && own > 5.0 * shuffled, "{own} {random} {shuffled}");
        // The key cubes peak the logits at the answer: the model's mean curve by offset too.
        assert!(peak_margin(&logits_by_offset(&task, &acts.logits).unwrap()) > 0.3);
        let alpha = &periodicity.task.coefficients;
        let shares = logit_shares(&task, &acts.logits, alpha, &keys).unwrap();
        assert!(shares.key_cubes > 0.15 && shares.function_of_cell > 0.99, "{shares:?}");
    }
}
