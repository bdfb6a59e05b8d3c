//! The seed's loss per row on the CPU, in one pass over float32 logits: what
//! `log_softmax` in float64, `gather`, `argmax` and the logit gradient compute as
//! separate passes (each writing a float64 copy of every logit) when a row's 113
//! logits fit in a cache line or two.
//!
//! Per row x with label y, in float64 as the seed's `loss_fn`:
//!
//! ```text
//! m = max_j x_j,  s = Σ_j exp(x_j − m),  nll = m + ln s − x_y
//! grad_j = (exp(x_j − m) / s − [j = y]) · weight        (then float32)
//! ```
//!
//! A NaN logit makes the row's loss NaN and its argmax the NaN's place, as in libtorch.
//! Elsewhere than the CPU the same is computed as tensors.

use tch::{Device, Kind, Tensor};

use crate::cpu_loops::{self, elements};
use crate::loss::logit_gradient;

/// Per row: −log softmax at the label, and whether the argmax is the label.
pub(crate) struct RowLosses {
    /// `[model, rows]` float64.
    pub nll: Tensor,
    /// `[model, rows]` float64, 1 or 0.
    pub correct: Tensor,
    /// With weights: `(softmax − onehot(label)) · weight`, `[model, rows, vocab]` float32.
    pub d_logits: Option<Tensor>,
}

/// The row losses of `logits` `[model, rows, vocab]` (float32) at `labels` `[model,
/// rows]`, and with `weights` `[model, first rows]` (float64) the gradient of
/// Σ weight · nll over those first rows with respect to their logits.
pub(crate) fn row_losses(logits: &Tensor, labels: &Tensor, weights: Option<&Tensor>) -> RowLosses {
    match logits.device() {
        Device::Cpu => by_loops(logits, labels, weights),
        _ => by_tensors(logits, labels, weights),
    }
}

/// [`row_losses`] as libtorch's kernels, every row at once.
fn by_tensors(logits: &Tensor, labels: &Tensor, weights: Option<&Tensor>) -> RowLosses {
    let log_probs = logits.to_kind(Kind::Double).log_softmax(-1, Kind::Double);
    let nll = -log_probs.gather(-1, &labels.unsqueeze(-1), false).squeeze_dim(-1);
    let correct = logits.argmax(-1, false).eq_tensor(labels).to_kind(Kind::Double);
    let d_logits = weights.map(|w| {
        let first = w.size()[1];
        logit_gradient(&log_probs.narrow(1, 0, first), &labels.narrow(1, 0, first), w)
    });
    RowLosses { nll, correct, d_logits }
}

/// [`row_losses`] on the CPU: the rows in even parts, one per libtorch thread.
fn by_loops(logits: &Tensor, labels: &Tensor, weights: Option<&Tensor>) -> RowLosses {
    let (n, rows, vocab) = logits.size3().expect("logits are [model, rows, vocab]");
    let (logits, labels) = (logits.contiguous(), labels.contiguous());
    let weights = weights.map(Tensor::contiguous);
    let first = weights.as_ref().map_or(0, |w| w.size()[1]) as usize;
    let (x, labels) = (elements::<f32>(&logits), elements::<i64>(&labels));
    let weights_of = weights.as_ref().map_or(&[][..], elements::<f64>);
    let (mut nll, mut correct) = (vec![0f64; (n * rows) as usize], vec![0f64; (n * rows) as usize]);
    let mut grad = vec![0f32; n as usize * first * vocab as usize];
    let (rows, vocab) = (rows as usize, vocab as usize);
    let step = rows.div_ceil(cpu_loops::parts()).max(1);
    // Each model's rows in parts of `step`; each part gets its own slices of the results.
    let mut parts = vec![];
    let (mut nll_rest, mut correct_rest, mut grad_rest) = (&mut nll[..], &mut correct[..], &mut grad[..]);
    for model in 0..n as usize {
        for start in (0..rows).step_by(step) {
            let (len, with_grad) = (step.min(rows - start), (start + step).min(first).saturating_sub(start));
            let (nll, rest) = std::mem::take(&mut nll_rest).split_at_mut(len);
            nll_rest = rest;
            let (correct, rest) = std::mem::take(&mut correct_rest).split_at_mut(len);
            correct_rest = rest;
            let (grad, rest) = std::mem::take(&mut grad_rest).split_at_mut(with_grad * vocab);
            grad_rest = rest;
            let (row, weight) = (model * rows + start, model * first + start);
            parts.push(Part {
                x: &x[row * vocab..(row + len) * vocab],
                labels: &labels[row..row + len],
                weights: &weights_of[weight.min(weights_of.len())..(weight + with_grad).min(weights_of.len())],
                nll,
                correct,
                grad,
            });
        }
    }
    cpu_loops::for_each_owned(parts, |part| part.compute(vocab));
    RowLosses {
        nll: Tensor::from_slice(&nll).view([n, rows as i64]),
        correct: Tensor::from_slice(&correct).view([n, rows as i64]),
        d_logits: weights.map(|_| Tensor::from_slice(&grad).view([n, first as i64, vocab as i64])),
    }
}

/// A run of consecutive rows and where their results go; the first `weights.len()`
/// rows get gradients.
struct Part<'a> {
    x: &'a [f32],
    labels: &'a [i64],
    weights: &'a [f64],
    nll: &'a mut [f64],
    correct: &'a mut [f64],
    grad: &'a mut [f32],
}

impl Part<'_> {
    /// [`Part::rows`] in the widest vectors the CPU has: AVX-512's eight float64 lanes,
    /// AVX2's four, or SSE2's two (the same arithmetic, so the same numbers).
    fn compute(self, vocab: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                return unsafe { self.rows_avx512(vocab) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                return unsafe { self.rows_avx2(vocab) };
            }
        }
        self.rows(vocab)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn rows_avx512(self, vocab: usize) {
        self.rows(vocab)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn rows_avx2(self, vocab: usize) {
        self.rows(vocab)
    }

    #[inline(always)]
    fn rows(self, vocab: usize) {
        let mut shifted = vec![0f64; vocab];
        for (row, x) in self.x.chunks_exact(vocab).enumerate() {
            let label = self.labels[row] as usize;
            // The first maximum, or the first NaN, as libtorch's argmax gives it.
            let best = max(x);
            let argmax = x.iter().position(|&v| v == best || (v.is_nan() && best.is_nan())).unwrap_or(0);
            let m = best as f64;
            for (e, &v) in shifted.iter_mut().zip(x) {
                *e = exp(v as f64 - m);
            }
            let sum = sum(&shifted);
            self.nll[row] = m + sum.ln() - x[label] as f64;
            self.correct[row] = f64::from(u8::from(argmax == label));
            if let Some(&w) = self.weights.get(row) {
                let grad = &mut self.grad[row * vocab..][..vocab];
                for (g, e) in grad.iter_mut().zip(&shifted) {
                    *g = (e / sum * w) as f32;
                }
                grad[label] = (shifted[label] / sum * w - w) as f32;
            }
        }
    }
}

/// The largest of `values`, or NaN if one is: in eight interleaved lanes (so that it
/// vectorises).
#[inline(always)]
fn max(values: &[f32]) -> f32 {
    let pick = |best: f32, v: f32| if v > best || v.is_nan() { v } else { best };
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder().iter().fold(f32::NEG_INFINITY, |b, &v| pick(b, v));
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = pick(*lane, v);
        }
    }
    lanes.into_iter().fold(rest, pick)
}

/// Σ values, in four interleaved partial sums (so that it vectorises).
#[inline(always)]
fn sum(values: &[f64]) -> f64 {
    let mut partial = [0f64; 4];
    let chunks = values.chunks_exact(4);
    let rest: f64 = chunks.remainder().iter().sum();
    for chunk in chunks {
        for (p, v) in partial.iter_mut().zip(chunk) {
            *p += v;
        }
    }
    (partial[0] + partial[1]) + (partial[2] + partial[3]) + rest
}

/// e^x for x ≤ 0, to within a few ulp, in straight-line arithmetic that vectorises:
/// x = k·ln 2 + r with |r| ≤ ln 2 / 2, e^r by its Taylor series to r¹³ (the first term
/// left out is below 2⁻⁵⁸ of the sum), times 2^k from its exponent bits. Below −708
/// (where e^x leaves the normal float64 range) it gives e^−708 ≈ 3e-308, which no sum
/// of 1 + … can see. NaN gives NaN.
#[inline(always)]
fn exp(x: f64) -> f64 {
    const LOG2_E: f64 = std::f64::consts::LOG2_E;
    // ln 2 in two parts, the first with trailing zero bits, so that k·LN2_HI is exact.
    const LN2_HI: f64 = 6.931_471_803_691_238_2e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    // 1.5·2⁵²: adding it rounds to an integer, held in the low mantissa bits.
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    let x = if x < -708.0 { -708.0 } else { x }; // NaN stays NaN
    let t = x * LOG2_E + SHIFT;
    let k = t - SHIFT;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // Σ r^n/n! by Estrin's scheme: pairs, then pairs of pairs (a short dependency chain).
    let c = &INVERSE_FACTORIALS;
    let (r2, pair) = (r * r, |i: usize| c[i] + c[i + 1] * r);
    let r4 = r2 * r2;
    let low = (pair(0) + pair(2) * r2) + (pair(4) + pair(6) * r2) * r4;
    let high = (pair(8) + pair(10) * r2) + pair(12) * r4;
    let poly = low + high * (r4 * r4);
    let scale = f64::from_bits((t.to_bits().wrapping_add(1023)) << 52);
    poly * scale
}

/// 1/n! for n = 0..=13.
const INVERSE_FACTORIALS: [f64; 14] = {
    let mut c = [1.0; 14];
    let mut n = 1;
    while n < 14 {
        c[n] = c[n - 1] / n as f64;
        n += 1;
    }
    c
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The loops give libtorch's numbers: float64 losses to rounding, the same argmax
    /// (ties and NaN included), the float32 gradient to an ulp; for two models, the
    /// gradient on the first rows only.
    #[test]
    fn loops_agree_with_libtorch() {
        let (logits, labels) = crate::rng::seeded(3, || {
            (
                Tensor::randn([2, 50, 113], (Kind::Float, Device::Cpu)) * 8.0,
                Tensor::randint(113, [2, 50], (Kind::Int64, Device::Cpu)),
            )
        });
        // A tie for the maximum, a NaN, and a row whose label holds the maximum.
        let _ = logits.get(0).get(3).narrow(0, 10, 2).fill_(40.0);
        let _ = logits.get(1).get(7).get(5).fill_(f64::NAN);
        let _ = logits.get(0).get(9).get(labels.get(0).get(9).int64_value(&[])).fill_(50.0);
        let weights = Tensor::rand([2, 20], (Kind::Double, Device::Cpu));
        let (ours, theirs) = (by_loops(&logits, &labels, Some(&weights)), by_tensors(&logits, &labels, Some(&weights)));
        let nan = |t: &Tensor| t.isnan();
        assert!(nan(&ours.nll).equal(&nan(&theirs.nll)) && nan(&ours.nll).get(1).get(7).int64_value(&[]) == 1);
        let finite = |t: &Tensor| t.nan_to_num(0.0, None, None);
        let nll_gap = (finite(&ours.nll) - finite(&theirs.nll)).abs().max().double_value(&[]);
        assert!(nll_gap < 1e-12, "nll gap {nll_gap:e}");
        assert!(ours.correct.equal(&theirs.correct));
        assert_eq!(ours.correct.get(0).get(9).double_value(&[]), 1.0);
        let (ours, theirs) = (finite(&ours.d_logits.unwrap()), finite(&theirs.d_logits.unwrap()));
        assert_eq!(ours.size(), [2, 20, 113]);
        let gap = (&ours - &theirs).abs().max().double_value(&[]);
        assert!(gap <= 1e-7 * theirs.abs().max().double_value(&[]), "gradient gap {gap:e}");
    }

    /// The vectorised e^x against the C library's over [−708, 0], and its floor below.
    #[test]
    fn exp_is_within_two_ulp() {
        for i in 0..=200_000 {
            let x = -708.0 * i as f64 / 200_000.0;
            let (ours, libm) = (exp(x), x.exp());
            assert!((ours - libm).abs() <= 2.0 * f64::EPSILON * libm, "e^{x}: {ours:e} vs {libm:e}");
        }
        assert_eq!(exp(-800.0), exp(-708.0));
        assert_eq!(exp(f64::NEG_INFINITY), exp(-708.0));
        assert!(exp(f64::NAN).is_nan());
    }
}
