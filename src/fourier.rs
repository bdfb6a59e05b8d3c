//! The seed's Fourier basis over Z_p, and the two views the analysis reads it in.
//!
//! The basis F is p × p: row 0 the constant, then for k = 1..(p−1)/2 the pair
//! sin(2πk·x/p) (row 2k−1) and cos(2πk·x/p) (row 2k), every row scaled to unit
//! norm, named "Constant", "Sin 1", "Cos 1", …. F is orthogonal: F Fᵀ = I.
//!
//! A [`View`] says in which variables an input pair (a, b) is read: the seed's
//! [`View::Standard`] takes x = a, y = b; the task-aware [`View::Task`] takes the
//! task's own x = g(a), y = h(b). Either way the view's sum is s = (x + y) mod p
//! (for the task view, s is the label c).
//!
//! The basis *at a view's variable* is F_x[i, a] = F[i, x(a)]. For the task view g
//! is usually many-to-one (a ↦ a⁴ mod 113 takes 29 values), so F_x is NOT orthogonal
//! over a: F_x F_xᵀ = Σ_u n(u) F[:, u] F[:, u]ᵀ with n(u) = #{a : g(a) = u}, and
//! values u that g never takes do not appear at all. Products with F_x are then
//! inner products with the basis functions, not coefficients of an expansion;
//! measures that need a projection correct for this with the Gram matrix F_x F_xᵀ.

use std::f64::consts::PI;
use std::fmt;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::task::Task;

/// Which variables an analysis reads the inputs (a, b) in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum View {
    /// The seed's: x = a, y = b, s = (a + b) mod p.
    Standard,
    /// Task-aware: x = g(a), y = h(b), s = (g(a) + h(b)) mod p, the label.
    Task,
}

impl View {
    pub const BOTH: [View; 2] = [View::Standard, View::Task];

    pub fn name(self) -> &'static str {
        match self {
            View::Standard => "standard",
            View::Task => "task",
        }
    }

    /// x(a) for a = 0..p.
    pub fn x_values(self, task: &Task) -> Vec<i64> {
        match self {
            View::Standard => (0..task.p).collect(),
            View::Task => task.g_values(),
        }
    }

    /// y(b) for b = 0..p.
    pub fn y_values(self, task: &Task) -> Vec<i64> {
        match self {
            View::Standard => (0..task.p).collect(),
            View::Task => task.h_values(),
        }
    }

    /// s(a, b) = (x(a) + y(b)) mod p for all p² inputs, a-major.
    pub fn sums(self, task: &Task) -> Vec<i64> {
        let (x, y) = (self.x_values(task), self.y_values(task));
        x.iter().flat_map(|&u| y.iter().map(move |&v| (u + v) % task.p)).collect()
    }
}

/// One value per view, indexed by [`View`]; serialises as `{"standard": …, "task": …}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PerView<T> {
    pub standard: T,
    pub task: T,
}

impl<T> PerView<T> {
    /// `f(view)` for both views.
    pub fn new(mut f: impl FnMut(View) -> T) -> Self {
        PerView { standard: f(View::Standard), task: f(View::Task) }
    }

    /// `f(view)` for both views, or the first error.
    pub fn try_new<E>(mut f: impl FnMut(View) -> Result<T, E>) -> Result<Self, E> {
        Ok(PerView { standard: f(View::Standard)?, task: f(View::Task)? })
    }

    /// `f(view, value)` for both.
    pub fn map<U>(&self, mut f: impl FnMut(View, &T) -> U) -> PerView<U> {
        PerView { standard: f(View::Standard, &self.standard), task: f(View::Task, &self.task) }
    }

    /// `(view, value)` for both, the standard view first.
    pub fn iter(&self) -> impl Iterator<Item = (View, &T)> {
        [(View::Standard, &self.standard), (View::Task, &self.task)].into_iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (View, &mut T)> {
        [(View::Standard, &mut self.standard), (View::Task, &mut self.task)].into_iter()
    }
}

impl<T> std::ops::Index<View> for PerView<T> {
    type Output = T;
    fn index(&self, view: View) -> &T {
        match view {
            View::Standard => &self.standard,
            View::Task => &self.task,
        }
    }
}

impl<T> std::ops::IndexMut<View> for PerView<T> {
    fn index_mut(&mut self, view: View) -> &mut T {
        match view {
            View::Standard => &mut self.standard,
            View::Task => &mut self.task,
        }
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The frequency of the wave k·x mod p, folded into 0..=(p−1)/2: cos(2πkx/p) = cos(2π(p−k)x/p),
/// so k and p − k are one frequency (and sin changes sign).
pub fn fold_freq(k: i64, p: i64) -> i64 {
    let r = k.rem_euclid(p);
    r.min(p - r)
}

/// The seed's `fourier_basis` and `fourier_basis_names`, in float64 on the CPU.
pub struct FourierBasis {
    pub p: i64,
    /// `[p, p]`: rows are basis vectors, columns the points 0..p.
    pub basis: Tensor,
    pub names: Vec<String>,
}

/// The seed's Fourier basis for an odd p ≥ 3.
pub fn fourier_basis(p: i64) -> Result<FourierBasis> {
    if p < 3 || p % 2 == 0 {
        return Err(Error::config(format!("the Fourier analysis needs an odd p ≥ 3, got {p}")));
    }
    let points: Vec<i64> = (0..p).collect();
    let mut rows = vec![Tensor::ones([p], (Kind::Double, Device::Cpu))];
    let mut names = vec!["Constant".to_string()];
    for k in 1..=(p - 1) / 2 {
        let (sin, cos) = waves(p, k, &points);
        rows.extend([sin, cos]);
        names.extend([format!("Sin {k}"), format!("Cos {k}")]);
    }
    let basis = Tensor::stack(&rows, 0);
    let basis = &basis / basis.norm_scalaropt_dim(2, [1], true);
    Ok(FourierBasis { p, basis, names })
}

impl FourierBasis {
    /// The number of frequencies, (p − 1)/2.
    pub fn n_freqs(&self) -> i64 {
        (self.p - 1) / 2
    }

    /// The frequencies 1..=(p − 1)/2.
    pub fn freqs(&self) -> Vec<i64> {
        (1..=self.n_freqs()).collect()
    }

    /// The row of sin k.
    pub fn sin_row(k: i64) -> i64 {
        2 * k - 1
    }

    /// The row of cos k.
    pub fn cos_row(k: i64) -> i64 {
        2 * k
    }

    /// The frequency of a row (0 for the constant).
    pub fn freq_of_row(row: i64) -> i64 {
        (row + 1) / 2
    }

    /// The rows {constant, sin k, cos k}: the seed's 3 × 3 block of frequency k in 2-D.
    pub fn block_rows(k: i64) -> [i64; 3] {
        [0, Self::sin_row(k), Self::cos_row(k)]
    }

    /// The basis evaluated at `values`: `[p, values.len()]`, column j = F[:, values[j]].
    pub fn at(&self, values: &[i64]) -> Tensor {
        self.basis.index_select(1, &Tensor::from_slice(values))
    }

    /// F_x for a view's first variable: `[p, p]`, column a = F[:, x(a)].
    pub fn at_x(&self, task: &Task, view: View) -> Tensor {
        self.at(&view.x_values(task))
    }

    /// F_y for a view's second variable: `[p, p]`, column b = F[:, y(b)].
    pub fn at_y(&self, task: &Task, view: View) -> Tensor {
        self.at(&view.y_values(task))
    }
}

/// The 2-D transform out[i, j, …] = Σ_{a,b} fx[i, a] · fy[j, b] · x[a, b, …]
/// (the seed's `F A Fᵀ` per trailing index): `fx` is `[r, n_a]`, `fy` is `[r', n_b]`,
/// `x` is `[n_a, n_b, …]` and the result `[r, r', …]`.
pub fn transform_2d(fx: &Tensor, x: &Tensor, fy: &Tensor) -> Tensor {
    let shape = x.size();
    let (n_a, n_b) = (shape[0], shape[1]);
    let rest: Vec<i64> = shape[2..].to_vec();
    let width: i64 = rest.iter().product();
    let (r, r2) = (fx.size()[0], fy.size()[0]);
    let over_a = fx.matmul(&x.reshape([n_a, n_b * width])).reshape([r, n_b, width]);
    let over_b = fy.matmul(&over_a.transpose(0, 1).reshape([n_b, r * width])).reshape([r2, r, width]);
    let mut out_shape = vec![r, r2];
    out_shape.extend(rest);
    over_b.transpose(0, 1).reshape(out_shape.as_slice())
}

/// sin(2πk·x/p) and cos(2πk·x/p) at `values`, float64. The angle is reduced
/// exactly first ((k·x) mod p), so large k·x lose no precision.
pub fn waves(p: i64, k: i64, values: &[i64]) -> (Tensor, Tensor) {
    let angles: Vec<f64> = values.iter().map(|&x| 2.0 * PI * ((k * x).rem_euclid(p)) as f64 / p as f64).collect();
    let angles = Tensor::from_slice(&angles);
    (angles.sin(), angles.cos())
}

#[cfg(test)]
mod tests {
    use super::{fold_freq, waves};

    #[test]
    fn a_folded_frequency_is_the_same_cosine_wave() {
        let p = 113;
        let points: Vec<i64> = (0..p).collect();
        for k in [-340, -113, -57, -1, 0, 1, 56, 57, 112, 113, 169, 1000] {
            let folded = fold_freq(k, p);
            assert!((0..=(p - 1) / 2).contains(&folded), "k = {k} folded to {folded}");
            let gap = (waves(p, k, &points).1 - waves(p, folded, &points).1).abs().max().double_value(&[]);
            assert!(gap < 1e-12, "k = {k}: the cosine waves differ by {gap}");
        }
    }
}
