//! Logit periodicity: how much of the logits L[a, b, c] is cos(2πk(s − c)/p).
//!
//! The seed builds, per frequency k, the unit-normalised cube
//! C_k[a, b, c] = cos(2πk(s(a,b) − c)/p) and takes α_k = ⟨L, C_k⟩ (its `cos_coeffs`),
//! the cosine similarity α_k/‖L‖ (`cos_sim`) and the residual fraction
//! ‖L − Σ_k α_k C_k‖/‖L‖ (`residual_cos_sim`). Here no cube is built:
//! cos θ(s − c) = cos θs cos θc + sin θs sin θc, so with L_s[s, c] = Σ_{(a,b): s(a,b)=s} L[a,b,c]
//! (the logits summed over each class of s) and M = F L_s Fᵀ its 2-D transform,
//! ⟨L, cos θ(s−c)⟩ = (p/2)(M[cos k, cos k] + M[sin k, sin k]). Since c runs over all of Z_p,
//! ‖cos θ(s−c)‖² = p³/2 and the C_k are orthogonal across k in either view, so
//! α_k = (M[cos k, cos k] + M[sin k, sin k]) / √(2p) and the residual² = ‖L‖² − Σ_k α_k².

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::{check_all_inputs, f64_cpu, to_vec};
use crate::error::{Error, Result};
use crate::fourier::{fourier_basis, transform_2d, FourierBasis, View};
use crate::task::Task;

/// The seed's logit periodicity measures for one model, in one view.
#[derive(Clone, Debug, Serialize)]
pub struct LogitPeriodicity {
    pub view: View,
    /// α_k = ⟨L, C_k⟩ for k = 1..=(p−1)/2 (index k − 1): the seed's `cos_coeffs`.
    pub coefficients: Vec<f64>,
    /// α_k / ‖L‖: the seed's `cos_sim`.
    pub cos_sims: Vec<f64>,
    /// ‖L‖ over all p³ entries.
    pub logit_norm: f64,
}

impl LogitPeriodicity {
    /// ‖L − Σ_{k∈K} α_k C_k‖ / ‖L‖ = √(1 − Σ_{k∈K} cos_sim_k²) for the key set K
    /// (every frequency gives the seed's `residual_cos_sim`). Frequencies out of range are ignored.
    pub fn residual(&self, key_freqs: &[i64]) -> f64 {
        residual_fraction(&self.cos_sims, key_freqs)
    }

    /// The seed's residual, over every frequency.
    pub fn residual_all(&self) -> f64 {
        let all: Vec<i64> = (1..=self.cos_sims.len() as i64).collect();
        self.residual(&all)
    }
}

pub(crate) fn residual_fraction(cos_sims: &[f64], key_freqs: &[i64]) -> f64 {
    let explained: f64 =
        cos_sims.iter().enumerate().filter(|(i, _)| key_freqs.contains(&(*i as i64 + 1))).map(|(_, c)| c * c).sum();
    (1.0 - explained).max(0.0).sqrt()
}

/// The logit periodicity of `logits` (`[p², p]`, all inputs a-major) in `view`.
pub fn logit_periodicity(task: &Task, view: View, logits: &Tensor) -> Result<LogitPeriodicity> {
    check_all_inputs(logits, task, "logits")?;
    if logits.size()[1] != task.p {
        return Err(Error::config(format!("logits must have p = {} columns, got {:?}", task.p, logits.size())));
    }
    let basis = fourier_basis(task.p)?;
    let sums = Tensor::from_slice(&view.sums(task));
    periodicity_with(&basis, view, &sums, &f64_cpu(logits))
}

/// [`logit_periodicity`] with the basis and the view's sums (`[p²]` int64) at hand.
pub(crate) fn periodicity_with(
    basis: &FourierBasis,
    view: View,
    sums: &Tensor,
    logits: &Tensor,
) -> Result<LogitPeriodicity> {
    let p = basis.p;
    let by_sum = Tensor::zeros([p, p], (Kind::Double, Device::Cpu)).index_add(0, sums, logits); // [p (s), p (c)]
    let m = transform_2d(&basis.basis, &by_sum.unsqueeze(-1), &basis.basis).squeeze_dim(-1);
    let diag = m.diagonal(0, 0, 1);
    let cos_rows = Tensor::from_slice(&basis.freqs().iter().map(|&k| FourierBasis::cos_row(k)).collect::<Vec<_>>());
    let sin_rows = Tensor::from_slice(&basis.freqs().iter().map(|&k| FourierBasis::sin_row(k)).collect::<Vec<_>>());
    let alpha = (diag.index_select(0, &cos_rows) + diag.index_select(0, &sin_rows)) / (2.0 * p as f64).sqrt();
    let logit_norm = logits.norm().double_value(&[]);
    if logit_norm == 0.0 {
        return Err(Error::config("the logits are all zero: their periodicity is undefined"));
    }
    let coefficients = to_vec(&alpha)?;
    let cos_sims = coefficients.iter().map(|a| a / logit_norm).collect();
    Ok(LogitPeriodicity { view, coefficients, cos_sims, logit_norm })
}

/// How much of the logits' variation a grouping of the inputs explains.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ClassShare {
    /// How many distinct classes the grouping has.
    pub classes: usize,
    /// The share of ‖L − mean‖² (over the inputs, per output) that the class means
    /// explain: 1 when L[a, b, :] depends on (a, b) only through its class.
    pub share: f64,
    /// The control: the share's expected value for logits of i.i.d. noise, (k − 1)/(n − 1)
    /// for k classes of n inputs; a share near it says the grouping explains nothing.
    pub random: f64,
}

/// The share of the logits' variance (`[n, c]`, one row per input) that the class of each
/// input (`classes[i]`, non-negative ids) explains, with its random-logits control.
pub fn class_share(logits: &Tensor, classes: &[i64]) -> Result<ClassShare> {
    let n = logits.size()[0];
    if logits.dim() != 2 || classes.len() as i64 != n || classes.iter().any(|&c| c < 0) {
        return Err(Error::config(format!(
            "class_share needs logits [n, c] and n non-negative class ids, got {:?} and {} ids",
            logits.size(),
            classes.len()
        )));
    }
    let logits = f64_cpu(logits);
    let ids = Tensor::from_slice(classes);
    let n_ids = classes.iter().max().map_or(0, |m| m + 1);
    let centred = &logits - logits.mean_dim(0, true, Kind::Double);
    let sums = Tensor::zeros([n_ids, centred.size()[1]], (Kind::Double, Device::Cpu)).index_add(0, &ids, &centred);
    let counts = ids.bincount(None::<Tensor>, n_ids).to_kind(Kind::Double).clamp_min(1.0);
    let between = (sums.square() / counts.unsqueeze(1)).sum(Kind::Double).double_value(&[]);
    let total = centred.square().sum(Kind::Double).double_value(&[]);
    let k = classes.iter().collect::<std::collections::BTreeSet<_>>().len();
    Ok(ClassShare {
        classes: k,
        share: if total > 0.0 { between / total } else { 0.0 },
        random: (k as f64 - 1.0) / (n as f64 - 1.0).max(1.0),
    })
}

/// The seed's control: the cosine similarity of the logits with a cube of N(0, 1)
/// noise, ⟨L, R⟩/(‖L‖‖R‖). The noise is drawn one value at a time from a generator
/// seeded by `seed` (no p³ tensor, and torch's global generator is left alone).
pub fn random_cube_cos_sim(logits: &Tensor, seed: u64) -> Result<f64> {
    let values = to_vec(logits)?;
    let mut noise = Gaussian::new(seed);
    let (mut dot, mut noise_sq, mut logit_sq) = (0.0, 0.0, 0.0);
    for v in values {
        let r = noise.next();
        dot += v * r;
        noise_sq += r * r;
        logit_sq += v * v;
    }
    Ok(dot / (noise_sq.sqrt() * logit_sq.sqrt()))
}

/// The typical size of [`random_cube_cos_sim`]: for any fixed L, ⟨L/‖L‖, R⟩ is N(0, 1)
/// and ‖R‖ ≈ √(p³), so the control is about 1/√(p³) (≈ 0.00083 for p = 113).
pub fn random_cube_level(p: i64) -> f64 {
    (p as f64).powf(-1.5)
}

/// How much the two views' cubes of each frequency overlap: O_k = ⟨C_k, T_k⟩ over all
/// (a, b, c), both unit, C_k the a + b cube cos(2πk(a + b − c)/p) and T_k the task's
/// cos(2πk(g(a) + h(b) − c)/p), for k = 1..=(p−1)/2 (index k − 1). Summing over c first
/// leaves only equal frequencies (k + k' < p), so the overlap is diagonal and exactly
///
/// ```text
/// O_k = Re(S_g(k) · S_h(k)) / p²,   S_g(k) = Σ_a e^{2πik(a − g(a))/p}
/// ```
///
/// A model whose logits are Σ_k α_k T_k has cosine similarity α_k · O_k with C_k: the
/// leak of one view into the other, the floor under which a view's cosine similarity at
/// k says nothing of its own (for a + b, g and h the identity, the views are one: O_k = 1).
pub fn view_overlap(task: &Task) -> Vec<f64> {
    let p = task.p;
    let (g, h) = (task.g_values(), task.h_values());
    let sum = |values: &[i64], k: i64| {
        values.iter().enumerate().fold((0.0, 0.0), |(re, im), (x, &y)| {
            let angle = 2.0 * std::f64::consts::PI * ((k * (x as i64 - y)).rem_euclid(p)) as f64 / p as f64;
            (re + angle.cos(), im + angle.sin())
        })
    };
    (1..=(p - 1) / 2)
        .map(|k| {
            let ((gr, gi), (hr, hi)) = (sum(&g, k), sum(&h, k));
            (gr * hr - gi * hi) / (p * p) as f64
        })
        .collect()
}

/// N(0, 1) by Box–Muller on SplitMix64.
struct Gaussian {
    state: u64,
    spare: Option<f64>,
}

impl Gaussian {
    fn new(seed: u64) -> Self {
        Gaussian { state: seed, spare: None }
    }

    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64 // in (0, 1)
    }

    fn next(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        let (u, v) = (self.uniform(), self.uniform());
        let radius = (-2.0 * u.ln()).sqrt();
        let angle = 2.0 * std::f64::consts::PI * v;
        self.spare = Some(radius * angle.sin());
        radius * angle.cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_share_is_one_for_class_functions_and_near_the_control_for_noise() {
        let classes: Vec<i64> = (0..400).map(|i| i % 7).collect();
        let by_class = Tensor::randn([7, 5], (Kind::Double, Device::Cpu));
        let exact = class_share(&by_class.index_select(0, &Tensor::from_slice(&classes)), &classes).unwrap();
        assert!((exact.share - 1.0).abs() < 1e-12 && exact.classes == 7);
        let noise = class_share(&Tensor::randn([400, 5], (Kind::Double, Device::Cpu)), &classes).unwrap();
        assert!((noise.random - 6.0 / 399.0).abs() < 1e-15);
        assert!(noise.share < 5.0 * noise.random, "{noise:?}");
        assert!(class_share(&by_class, &classes).is_err());
    }

    #[test]
    fn gaussian_has_unit_variance() {
        let mut g = Gaussian::new(7);
        let xs: Vec<f64> = (0..200_000).map(|_| g.next()).collect();
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
        assert!(mean.abs() < 0.01 && (var - 1.0).abs() < 0.01, "mean {mean} var {var}");
    }
}
