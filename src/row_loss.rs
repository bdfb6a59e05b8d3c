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
//! Elsewhere than the CPU the same is computed as tensors. The excluded loss's
//! log-sum-exp of shifted logits ([`mean_log_sum_exp`]) is the same loop without labels.

use tch::{Device, Kind, Tensor};

use crate::cpu_loops::{self, elements, elements_mut, Vectorised};
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
    // The logits' rows where they are (the logit columns of the row sums, say), or a
    // contiguous copy.
    let copy;
    let (x, stride) = match cpu_loops::even_rows::<f32>(logits) {
        Some(rows) => rows,
        None => {
            copy = logits.contiguous();
            cpu_loops::even_rows(&copy).expect("a contiguous tensor has even rows")
        }
    };
    let labels = labels.contiguous();
    let weights = weights.map(Tensor::contiguous);
    let first = weights.as_ref().map_or(0, |w| w.size()[1]) as usize;
    let labels = elements::<i64>(&labels);
    let weights_of = weights.as_ref().map_or(&[][..], elements::<f64>);
    let double = |size: &[i64]| Tensor::empty(size, (Kind::Double, Device::Cpu));
    let (nll_out, correct_out) = (double(&[n, rows]), double(&[n, rows]));
    let grad_out = cpu_loops::empty(&[n, first as i64, vocab]);
    // SAFETY: the three are new, and the loop writes every element of each.
    let (nll, correct, grad) =
        unsafe { (elements_mut::<f64>(&nll_out), elements_mut::<f64>(&correct_out), elements_mut::<f32>(&grad_out)) };
    let (rows, vocab) = (rows as usize, vocab as usize);
    let step = rows.div_ceil(cpu_loops::parts()).max(1);
    // Each model's rows in parts of `step`; each part gets its own slices of the results.
    let mut parts = vec![];
    let (mut nll_rest, mut correct_rest, mut grad_rest) = (nll, correct, grad);
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
                vocab,
                stride,
                x: &x[row * stride..((row + len) * stride).min(x.len())],
                labels: &labels[row..row + len],
                weights: &weights_of[weight.min(weights_of.len())..(weight + with_grad).min(weights_of.len())],
                nll,
                correct,
                grad,
            });
        }
    }
    cpu_loops::for_each_owned(parts, |part| cpu_loops::widest(part));
    RowLosses { nll: nll_out, correct: correct_out, d_logits: weights.map(|_| grad_out) }
}

/// The mean over the rows i of `x` `[rows, vocab]` of ln Σ_j exp(x_ij − shift[class_i, j])
/// in float64, `shift` `[classes, vocab]` float64: the excluded loss's log-normaliser
/// (`crate::measures::ablation`). Float32 `x` on the CPU in one pass per row, in parts
/// (their totals added in part order); anything else as tensors.
pub(crate) fn mean_log_sum_exp(x: &Tensor, classes: &Tensor, shift: &Tensor) -> f64 {
    let (rows, vocab) = x.size2().expect("x is [rows, vocab]");
    if x.device() != Device::Cpu || x.kind() != Kind::Float {
        let shifted = x.to_kind(Kind::Double) - shift.to_device(x.device()).index_select(0, classes);
        return shifted.logsumexp([1], false).mean(Kind::Double).double_value(&[]);
    }
    let (x, classes, shift) = (x.contiguous(), classes.contiguous(), shift.to_kind(Kind::Double).contiguous());
    let (x, classes, shift) = (elements::<f32>(&x), elements::<i64>(&classes), elements::<f64>(&shift));
    let (rows, vocab) = (rows as usize, vocab as usize);
    let step = rows.div_ceil(cpu_loops::parts()).max(1);
    let mut totals = vec![0f64; rows.div_ceil(step)];
    let parts: Vec<_> = x.chunks(step * vocab).zip(classes.chunks(step)).zip(totals.iter_mut()).collect();
    cpu_loops::for_each_owned(parts, |((x, classes), total)| {
        *total = cpu_loops::widest(LogSumExps { x, classes, shift, vocab })
    });
    totals.iter().sum::<f64>() / rows as f64
}

/// Rows of [`mean_log_sum_exp`]; `run` gives the sum of their log-sum-exps.
struct LogSumExps<'a> {
    x: &'a [f32],
    classes: &'a [i64],
    shift: &'a [f64],
    vocab: usize,
}

impl Vectorised for LogSumExps<'_> {
    type Output = f64;

    #[inline(always)]
    fn run(self) -> f64 {
        let LogSumExps { x, classes, shift, vocab } = self;
        let mut shifted = vec![0f64; vocab];
        let mut total = 0.0;
        for (x, &class) in x.chunks_exact(vocab).zip(classes) {
            let shift = &shift[class as usize * vocab..][..vocab];
            for ((e, &v), &s) in shifted.iter_mut().zip(x).zip(shift) {
                *e = v as f64 - s;
            }
            let m = max(&shifted);
            shifted.iter_mut().for_each(|e| *e = exp(*e - m));
            total += m + sum(&shifted).ln();
        }
        total
    }
}

/// A run of consecutive rows and where their results go; the first `weights.len()`
/// rows get gradients.
struct Part<'a> {
    vocab: usize,
    /// From one row's logits to the next's.
    stride: usize,
    /// The rows' logits, `vocab` of them from every `stride`-th element.
    x: &'a [f32],
    labels: &'a [i64],
    weights: &'a [f64],
    nll: &'a mut [f64],
    correct: &'a mut [f64],
    grad: &'a mut [f32],
}

impl Vectorised for Part<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let vocab = self.vocab;
        let mut shifted = vec![0f64; vocab];
        for (row, x) in self.x.chunks(self.stride).map(|row| &row[..vocab]).enumerate() {
            // Rows spaced wider than they are long (the logit columns of the row sums),
            // which the hardware's prefetcher does not foresee: the row after next
            // asked for now.
            let next = (self.stride > vocab).then(|| self.x.get((row + 2) * self.stride..)?.get(..vocab)).flatten();
            if let Some(next) = next {
                cpu_loops::prefetch(next);
            }
            let label = self.labels[row] as usize;
            let best = max(x);
            let m = best as f64;
            for (e, &v) in shifted.iter_mut().zip(x) {
                *e = exp(v as f64 - m);
            }
            let sum = sum(&shifted);
            self.nll[row] = m + sum.ln() - x[label] as f64;
            self.correct[row] = f64::from(u8::from(first_maximum_at(x, best, label)));
            if let Some(&w) = self.weights.get(row) {
                let grad = &mut self.grad[row * vocab..][..vocab];
                let scale = w / sum;
                for (g, e) in grad.iter_mut().zip(&shifted) {
                    *g = normal_or_zero((e * scale) as f32);
                }
                grad[label] = normal_or_zero((shifted[label] * scale - w) as f32);
            }
        }
    }
}

/// Whether `x`'s argmax, as libtorch's gives it (the first maximum, or the first NaN),
/// is `label`, given `best`, the maximum ([`max`]): no earlier entry equals it. Without
/// a branch per entry, so that it vectorises.
#[inline(always)]
fn first_maximum_at(x: &[f32], best: f32, label: usize) -> bool {
    if best.is_nan() {
        return x[label].is_nan() && !x[..label].iter().any(|v| v.is_nan());
    }
    x[label] == best && !x[..label].iter().fold(false, |seen, &v| seen | (v == best))
}

/// `g`, or zero where it is subnormal (below 2⁻¹²⁶ ≈ 1.2e-38 in size). A trained
/// model's float32 logit gradient has many such entries (a wrong class's probability
/// times its row's weight, far below 1e-38), and on CPUs that take a microcode assist
/// on a subnormal operand every product reading them runs tens of times slower
/// (BENCHMARKS.md, "An Intel CPU, and the logit gradient's subnormals"). Their share of
/// any weight's gradient is below 1e-38 and lost to rounding in every sum they enter.
#[inline(always)]
fn normal_or_zero(g: f32) -> f32 {
    if g.abs() < f32::MIN_POSITIVE {
        0.0
    } else {
        g
    }
}

/// The largest of `values`, or NaN if one is: in eight interleaved lanes (so that it
/// vectorises).
#[inline(always)]
fn max<T: Float>(values: &[T]) -> T {
    let pick = |best: T, v: T| if v > best || v.is_nan() { v } else { best };
    let mut lanes = [T::NEG_INFINITY; 8];
    let chunks = values.chunks_exact(8);
    let rest = chunks.remainder().iter().fold(T::NEG_INFINITY, |b, &v| pick(b, v));
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane = pick(*lane, v);
        }
    }
    lanes.into_iter().fold(rest, pick)
}

/// The float types the loops take maxima of.
trait Float: Copy + PartialOrd {
    const NEG_INFINITY: Self;
    fn is_nan(self) -> bool;
}

impl Float for f32 {
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    fn is_nan(self) -> bool {
        self.is_nan()
    }
}

impl Float for f64 {
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
    fn is_nan(self) -> bool {
        self.is_nan()
    }
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
    // Σ r^n/n! by Estrin's scheme: pairs, then pairs of pairs (a short dependency chain),
    // each step one fused multiply-add.
    let c = &INVERSE_FACTORIALS;
    let (r2, pair) = (r * r, |i: usize| c[i + 1].mul_add(r, c[i]));
    let r4 = r2 * r2;
    let low = pair(6).mul_add(r2, pair(4)).mul_add(r4, pair(2).mul_add(r2, pair(0)));
    let high = pair(12).mul_add(r4, pair(10).mul_add(r2, pair(8)));
    let poly = high.mul_add(r4 * r4, low);
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

    /// Logits whose rows are spaced wider than they are long (the sums' logit columns)
    /// give the same numbers as a contiguous copy of them.
    #[test]
    fn rows_spaced_apart_give_the_same_losses() {
        let (wide, labels) = crate::rng::seeded(6, || {
            (
                Tensor::randn([2, 70, 140], (Kind::Float, Device::Cpu)) * 8.0,
                Tensor::randint(113, [2, 70], (Kind::Int64, Device::Cpu)),
            )
        });
        let logits = wide.narrow(2, 20, 113);
        let weights = Tensor::rand([2, 30], (Kind::Double, Device::Cpu));
        let (apart, together) =
            (by_loops(&logits, &labels, Some(&weights)), by_loops(&logits.contiguous(), &labels, Some(&weights)));
        assert!(apart.nll.equal(&together.nll) && apart.correct.equal(&together.correct));
        assert!(apart.d_logits.unwrap().equal(&together.d_logits.unwrap()));
    }

    /// Where libtorch's float32 gradient is subnormal the loops' is zero, and
    /// elsewhere the same to an ulp.
    #[test]
    fn the_gradient_has_no_subnormals() {
        let (logits, labels) = crate::rng::seeded(4, || {
            (
                Tensor::randn([1, 60, 113], (Kind::Float, Device::Cpu)) * 40.0,
                Tensor::randint(113, [1, 60], (Kind::Int64, Device::Cpu)),
            )
        });
        let weights = Tensor::full([1, 60], 1.0 / 60.0, (Kind::Double, Device::Cpu));
        let (ours, theirs) = (by_loops(&logits, &labels, Some(&weights)), by_tensors(&logits, &labels, Some(&weights)));
        let (ours, theirs) = (ours.d_logits.unwrap(), theirs.d_logits.unwrap());
        let subnormal = |t: &Tensor| t.abs().lt(f64::from(f32::MIN_POSITIVE)).logical_and(&t.ne(0.0));
        assert!(subnormal(&theirs).sum(Kind::Int64).int64_value(&[]) > 100, "the test needs subnormals");
        assert_eq!(subnormal(&ours).sum(Kind::Int64).int64_value(&[]), 0);
        let flushed = theirs.where_self(&subnormal(&theirs).logical_not(), &theirs.zeros_like());
        let gap = (&ours - &flushed).abs().max().double_value(&[]);
        assert!(gap <= 1e-7 * flushed.abs().max().double_value(&[]), "gradient gap {gap:e}");
    }

    /// The excluded loss's log-normaliser: the loop against libtorch's logsumexp, over
    /// more rows than one part, and NaN through.
    #[test]
    fn mean_log_sum_exp_agrees_with_libtorch() {
        let (x, classes, shift) = crate::rng::seeded(5, || {
            (
                Tensor::randn([301, 113], (Kind::Float, Device::Cpu)) * 8.0,
                Tensor::randint(113, [301], (Kind::Int64, Device::Cpu)),
                Tensor::randn([113, 113], (Kind::Double, Device::Cpu)) * 4.0,
            )
        });
        let ours = mean_log_sum_exp(&x, &classes, &shift);
        let theirs = mean_log_sum_exp(&x.to_kind(Kind::Double), &classes, &shift);
        assert!((ours - theirs).abs() < 1e-12 * theirs.abs(), "{ours} vs {theirs}");
        let _ = x.get(7).get(3).fill_(f64::NAN);
        assert!(mean_log_sum_exp(&x, &classes, &shift).is_nan());
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
