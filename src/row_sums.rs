//! Each input's attention pattern and its pattern-weighted sum of table rows
//! (`crate::one_layer`), on the CPU in one loop per input instead of a gather, a
//! softmax, an `embedding_bag` and a ReLU, each a pass of its own over every input.
//! Per input, with s its scores (one per head and position) and R its rows, one per
//! head and position before the last (the last position's are in the base row):
//!
//! ```text
//! p[h, i] = exp(s[h, i] − max_j s[h, j]) / Σ_j exp(s[h, j] − max_j s[h, j])
//! sum     = Σ_{h, i<last} p[h, i] · R[h, i]  +  R[base]        (then ReLU on the MLP columns)
//! ```
//!
//! The sum adds one row at a time, each as a fused multiply-add (one rounding per row).
//!
//! The inputs are cut into parts, one per libtorch thread (`crate::cpu_loops`); each
//! input's arithmetic is the same wherever it falls, so a run's numbers do not depend
//! on the stack it is in.

use tch::Tensor;

use crate::cpu_loops::{self, elements, elements_mut, empty, Vectorised};

/// What [`row_sums`] reads: the flat score table and the summed rows, as
/// `crate::one_layer::Lookup` indexes them.
pub(crate) struct Reads<'a> {
    /// The score table, flat.
    pub scores: &'a Tensor,
    /// Each input's scores in it: `[model, batch, head, pos]`.
    pub score_index: &'a Tensor,
    /// The table of rows, `[rows, full width]`; the sums read its first `width` columns.
    pub rows: &'a Tensor,
    pub width: i64,
    /// Each input's rows: head·(pos − 1) pattern-weighted ones, then its base row.
    pub bag_rows: &'a Tensor,
    /// The leading columns that ReLU applies to (0: none).
    pub relu_columns: i64,
}

/// The pattern `[model, batch, head, pos]` and the row sums `[model, batch, width]`.
pub(crate) fn row_sums(reads: &Reads) -> (Tensor, Tensor) {
    let size = reads.score_index.size();
    let (n, batch, heads, n_pos) = (size[0], size[1], size[2], size[3]);
    let weighted = (heads * n_pos) as usize;
    let (scores, score_index, rows, bag_rows) = (
        reads.scores.contiguous(),
        reads.score_index.contiguous(),
        reads.rows.contiguous(),
        reads.bag_rows.contiguous(),
    );
    let full_width = rows.size()[1] as usize;
    let (scores, score_index) = (elements::<f32>(&scores), elements::<i64>(&score_index));
    let (rows, bag_rows) = (elements::<f32>(&rows), elements::<i64>(&bag_rows));
    let (width, relu_columns, n_pos) = (reads.width as usize, reads.relu_columns as usize, n_pos as usize);
    let inputs = (n * batch) as usize;
    // Every element of both is written below.
    let pattern = empty(&[n, batch, heads, n_pos as i64]);
    let sums = empty(&[n, batch, width as i64]);
    let step = inputs.div_ceil(cpu_loops::parts()).max(1);
    // SAFETY: both are new, and each part writes only its own slices of them.
    let (pattern_all, sums_all) = unsafe { (elements_mut::<f32>(&pattern), elements_mut::<f32>(&sums)) };
    let parts: Vec<_> = (pattern_all.chunks_mut(step * weighted).zip(sums_all.chunks_mut(step * width)).enumerate())
        .map(|(i, (p, s))| (i * step, p, s))
        .collect();
    let table = Table { scores, score_index, rows, bag_rows, full_width, width, weighted, n_pos, relu_columns };
    cpu_loops::for_each_owned(parts, |(first, pattern, sums)| {
        cpu_loops::widest(Inputs { table: &table, first, pattern, sums })
    });
    (pattern, sums)
}

/// Columns summed at a time: eight AVX-512 registers.
const BLOCK: usize = 128;

/// Exponentials taken at a time: one AVX-512 register.
const LANES: usize = 16;

/// e^x for x ≤ 0 in float32, within 2 ulp of the C library's, in straight-line
/// arithmetic that vectorises: x = k·ln 2 + r with |r| ≤ ln 2 / 2, e^r by its Taylor
/// series to r⁷ (the first term left out is below 2⁻²⁷ of the sum), times 2^k from its
/// exponent bits. Below −87.33, where e^x leaves the normal float32 range, it gives 0
/// (no subnormal weight enters the sums). NaN gives NaN.
#[inline(always)]
fn exp(x: f32) -> f32 {
    // ln 2 in two parts, the first of 9 bits, so that k·LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2²³: adding it rounds to an integer, held in the low mantissa bits.
    const SHIFT: f32 = 12_582_912.0;
    const C: [f32; 8] = [1.0, 1.0, 1.0 / 2.0, 1.0 / 6.0, 1.0 / 24.0, 1.0 / 120.0, 1.0 / 720.0, 1.0 / 5040.0];
    let t = x.mul_add(std::f32::consts::LOG2_E, SHIFT);
    let k = t - SHIFT;
    let r = k.mul_add(-LN2_LO, k.mul_add(-LN2_HI, x));
    // Estrin's scheme: pairs, then pairs of pairs.
    let (r2, pair) = (r * r, |i: usize| C[i + 1].mul_add(r, C[i]));
    let low = pair(2).mul_add(r2, pair(0));
    let high = pair(6).mul_add(r2, pair(4));
    let poly = high.mul_add(r2 * r2, low);
    let scale = f32::from_bits(t.to_bits().wrapping_add(127) << 23);
    if x < -87.33 {
        0.0
    } else {
        poly * scale
    }
}

/// The tables' elements and their shapes.
struct Table<'a> {
    scores: &'a [f32],
    score_index: &'a [i64],
    rows: &'a [f32],
    bag_rows: &'a [i64],
    full_width: usize,
    width: usize,
    /// Scores per input: head·pos.
    weighted: usize,
    n_pos: usize,
    relu_columns: usize,
}

/// Inputs `first…` and their slices of the pattern and the sums.
struct Inputs<'a> {
    table: &'a Table<'a>,
    first: usize,
    pattern: &'a mut [f32],
    sums: &'a mut [f32],
}

impl Vectorised for Inputs<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Inputs { table, first, pattern, sums } = self;
        table.inputs(first, pattern, sums)
    }
}

impl Table<'_> {
    #[inline(always)]
    fn inputs(&self, first: usize, pattern: &mut [f32], sums: &mut [f32]) {
        let (w, n_pos) = (self.weighted, self.n_pos);
        // Each input's scores less their head's maximum, and their exponentials, in
        // whole vectors: the shifted scores' lanes past the last score stay 0, and no
        // lane past it is read. (Copies of a run-time length here were calls to memcpy,
        // several per input.)
        let padded = w.next_multiple_of(LANES);
        let (mut shifted, mut exps) = (vec![0f32; padded], vec![0f32; padded]);
        // Each input's rows' weights: the pattern before the last position, then 1.
        let mut weights = vec![1f32; w - w / n_pos + 1];
        for (j, (p, sum)) in pattern.chunks_exact_mut(w).zip(sums.chunks_exact_mut(self.width)).enumerate() {
            let input = first + j;
            // The softmax over positions, per head: the scores less their head's
            // maximum, their exponentials a vector at a time, each head's total.
            let index = &self.score_index[input * w..][..w];
            for (s, index) in shifted.chunks_exact_mut(n_pos).zip(index.chunks_exact(n_pos)) {
                for (s, &i) in s.iter_mut().zip(index) {
                    *s = self.scores[i as usize];
                }
                let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                s.iter_mut().for_each(|s| *s -= max);
            }
            for (e, s) in exps.chunks_exact_mut(LANES).zip(shifted.chunks_exact(LANES)) {
                for (e, &s) in e.iter_mut().zip(s) {
                    *e = exp(s);
                }
            }
            for (head, (p, e)) in p.chunks_exact_mut(n_pos).zip(exps.chunks_exact(n_pos)).enumerate() {
                let scale = 1.0 / e.iter().sum::<f32>();
                for (i, (p, &e)) in p.iter_mut().zip(e).enumerate() {
                    *p = e * scale;
                    // The pattern-weighted rows, then the base row (weight 1).
                    if i + 1 < n_pos {
                        weights[head * (n_pos - 1) + i] = *p;
                    }
                }
            }
            // A block of columns at a time (the block's running sums stay in
            // registers), then the last columns.
            let bag = &self.bag_rows[input * weights.len()..][..weights.len()];
            let row = |row: i64, start: usize, len: usize| &self.rows[row as usize * self.full_width + start..][..len];
            let mut start = 0;
            while start + BLOCK <= self.width {
                let mut block = [0f32; BLOCK];
                for (&r, &weight) in bag.iter().zip(&weights) {
                    let r: &[f32; BLOCK] = row(r, start, BLOCK).try_into().expect("a whole block");
                    for k in 0..BLOCK {
                        block[k] = weight.mul_add(r[k], block[k]);
                    }
                }
                sum[start..start + BLOCK].copy_from_slice(&block);
                start += BLOCK;
            }
            // The sums start at zero, as a block's do.
            let tail = &mut sum[start..];
            tail.fill(0.0);
            let len = tail.len();
            for (&r, &weight) in bag.iter().zip(&weights) {
                for (s, r) in tail.iter_mut().zip(row(r, start, len)) {
                    *s = weight.mul_add(*r, *s);
                }
            }
            for s in &mut sum[..self.relu_columns] {
                *s = s.max(0.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectorised e^x against the C library's over [−87.33, 0], 0 below, NaN through.
    #[test]
    fn exp_is_within_two_ulp() {
        for i in 0..=200_000 {
            let x = -87.33 * i as f32 / 200_000.0;
            let (ours, libm) = (exp(x), x.exp());
            assert!((ours - libm).abs() <= 2.0 * f32::EPSILON * libm, "e^{x}: {ours:e} vs {libm:e}");
        }
        assert_eq!(exp(-87.34), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(f32::NAN).is_nan());
    }
}
