//! The attention's part of the backward pass on the CPU, one input at a time: what
//! `crate::gradient` computes elsewhere with gathers, broadcasts and `scatter_add`
//! over every input, as one loop. Each input reads n_pos value rows and adds into
//! them and into n_pos entries of the score table per head, so the tensor version
//! spends its time on a dozen passes over small tensors; here it is one pass. The
//! inputs go in parts, one per libtorch thread (`crate::cpu_loops`), each adding into
//! tables of its own, which are added up in part order: deterministic for a given
//! number of threads, as `scatter_add` is on the CPU.
//!
//! Per input, head h and position i, with p the pattern and v_i the value row of
//! (i, t_i):
//!
//! ```text
//! z[h]            = Σ_i p[h, i] · v_i[h]
//! d_pattern[h, i] = v_i[h] · d_z[h]
//! d_v[row of (i, t_i)][h]              += p[h, i] · d_z[h]
//! d_scores[row of (i, t_i, t_last)][h] += p[h, i] · (d_pattern[h, i] − Σ_j p[h, j] · d_pattern[h, j]) / √d_head
//! ```

use tch::Tensor;

use crate::cpu_loops::{self, elements, elements_mut, zeros};
use crate::one_layer::Read;

/// For the inputs of `read`, whose value rows are rows of `kv` `[model, pos·vocab,
/// 2·head·d_head]` (keys, then values), and each input's `d_z` `[model, batch, head,
/// d_head]`: z `[model, batch, head, d_head]`, the value table's gradient
/// `[model·pos·vocab, head·d_head]` and the flat score table's
/// `[model·pos·vocab·vocab, head]`.
pub(crate) fn gradients(kv: &Tensor, read: &Read, d_z: &Tensor, n_vocab: i64) -> (Tensor, Tensor, Tensor) {
    let (n, batch, n_pos) = read.key_rows.size3().expect("key rows are [model, batch, pos]");
    let (h, e) = (d_z.size()[2], d_z.size()[3]);
    let (value_rows, score_rows) = (n * n_pos * n_vocab, n * n_pos * n_vocab * n_vocab);
    // The pattern as the softmax wrote it, [input, head, pos].
    let pattern = read.pattern.permute([0, 1, 3, 2]).contiguous();
    let (kv, key_rows, score_index, d_z) =
        (kv.contiguous(), read.key_rows.contiguous(), read.score_rows.contiguous(), d_z.contiguous());
    let (pattern, kv, d_z) = (elements::<f32>(&pattern), elements::<f32>(&kv), elements::<f32>(&d_z));
    let (key_rows, score_index) = (elements::<i64>(&key_rows), elements::<i64>(&score_index));
    let inputs =
        Inputs { pattern, kv, d_z, key_rows, score_index, h: h as usize, e: e as usize, n_pos: n_pos as usize };
    // The inputs in parts, one per libtorch thread, each with its own value and score
    // table gradients, added up in part order at the end.
    let (z, d_v, d_scores) = (zeros(&[n, batch, h, e]), zeros(&[value_rows, h * e]), zeros(&[score_rows, h]));
    let he = (h * e) as usize;
    let count = (n * batch) as usize;
    let step = count.div_ceil(cpu_loops::parts()).max(1);
    // SAFETY: the three are new, and each part writes only its own slice of z.
    let (z_all, d_v_all, d_scores_all) =
        unsafe { (elements_mut::<f32>(&z), elements_mut::<f32>(&d_v), elements_mut::<f32>(&d_scores)) };
    let mut tables: Vec<(Vec<f32>, Vec<f32>)> =
        (0..count.div_ceil(step)).map(|_| (vec![0f32; d_v_all.len()], vec![0f32; d_scores_all.len()])).collect();
    let parts: Vec<_> = (z_all.chunks_mut(step * he).zip(tables.iter_mut()).enumerate())
        .map(|(i, (z, (d_v, d_scores)))| (i * step, z, d_v, d_scores))
        .collect();
    cpu_loops::for_each_owned(parts, |(first, z, d_v, d_scores)| inputs.backward(first, z, d_v, d_scores));
    for (d_v, d_scores) in tables {
        d_v_all.iter_mut().zip(d_v).for_each(|(a, b)| *a += b);
        d_scores_all.iter_mut().zip(d_scores).for_each(|(a, b)| *a += b);
    }
    (z, d_v, d_scores)
}

/// What the inputs read, and each one's d_z.
struct Inputs<'a> {
    /// `[input, head, pos]`.
    pattern: &'a [f32],
    /// `[value rows, 2·head·d_head]`, keys then values.
    kv: &'a [f32],
    /// `[input, head, d_head]`.
    d_z: &'a [f32],
    /// `[input, pos]`: each position's value row.
    key_rows: &'a [i64],
    /// `[input, pos]`: each position's row in the score table.
    score_index: &'a [i64],
    h: usize,
    e: usize,
    n_pos: usize,
}

impl Inputs<'_> {
    /// Inputs `first…` (as many as `z` holds): their z, and their gradients added into
    /// `d_v` `[value rows, head·d_head]` and `d_scores` `[score rows, head]`.
    fn backward(&self, first: usize, z: &mut [f32], d_v_all: &mut [f32], d_scores_all: &mut [f32]) {
        let (h, e, n_pos) = (self.h, self.e, self.n_pos);
        let he = h * e;
        let scale = 1.0 / (e as f32).sqrt();
        let mut d_pattern = vec![0f32; h * n_pos];
        for (j, z) in z.chunks_exact_mut(he).enumerate() {
            let input = first + j;
            let d_z = &self.d_z[input * he..][..he];
            let p = &self.pattern[input * h * n_pos..][..h * n_pos];
            for i in 0..n_pos {
                let row = self.key_rows[input * n_pos + i] as usize;
                let v = &self.kv[row * 2 * he + he..][..he];
                let d_v = &mut d_v_all[row * he..][..he];
                for head in 0..h {
                    let w = p[head * n_pos + i];
                    let (v, d_z) = (&v[head * e..][..e], &d_z[head * e..][..e]);
                    d_pattern[head * n_pos + i] = v.iter().zip(d_z).map(|(v, g)| v * g).sum();
                    for ((z, d_v), (v, g)) in
                        z[head * e..][..e].iter_mut().zip(&mut d_v[head * e..][..e]).zip(v.iter().zip(d_z))
                    {
                        *z += w * v;
                        *d_v += w * g;
                    }
                }
            }
            // The softmax over positions, then the score's 1/√d_head.
            for head in 0..h {
                let (p, d) = (&p[head * n_pos..][..n_pos], &d_pattern[head * n_pos..][..n_pos]);
                let p_dot: f32 = p.iter().zip(d).map(|(p, d)| p * d).sum();
                for i in 0..n_pos {
                    d_scores_all[self.score_index[input * n_pos + i] as usize * h + head] +=
                        p[i] * (d[i] - p_dot) * scale;
                }
            }
        }
    }
}
