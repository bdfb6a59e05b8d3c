//! The attention's part of the backward pass on the CPU, one input at a time: what
//! `crate::gradient` computes elsewhere with gathers, broadcasts and `index_add`
//! over every input, as one loop. Each input reads n_pos value rows and adds into
//! them and into n_pos entries of the score table per head, so the tensor version
//! spends its time on a dozen passes over small tensors; here it is one pass. The
//! inputs go in parts, one per libtorch thread (`crate::cpu_loops`), the first adding
//! into the gradients themselves, each other into tables of its own, added to them in
//! part order: deterministic for a given number of threads, as `index_add` is on the
//! CPU. Products add as fused multiply-adds, and dot products in fixed partial sums.
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

use crate::cpu_loops::{self, elements, elements_mut, empty, Vectorised};
use crate::one_layer::Read;

/// For the inputs of `read`, whose value rows are rows of `kv` `[model, pos·vocab,
/// 2·head·d_head]` (keys, then values), and each input's `d_z` `[model, batch, head,
/// d_head]`: z `[model, batch, head, d_head]`, the value table's gradient
/// `[model·pos·vocab, head·d_head]` and the flat score table's
/// `[model·pos·vocab·queries, head]`.
pub(crate) fn gradients(
    kv: &Tensor,
    read: &Read,
    d_z: &Tensor,
    n_vocab: i64,
    n_queries: i64,
) -> (Tensor, Tensor, Tensor) {
    let (n, batch, n_pos) = read.key_rows.size3().expect("key rows are [model, batch, pos]");
    let (h, e) = (d_z.size()[2], d_z.size()[3]);
    let (value_rows, score_rows) = (n * n_pos * n_vocab, n * n_pos * n_vocab * n_queries);
    // The pattern as the softmax wrote it, [input, head, pos].
    let pattern = read.pattern.permute([0, 1, 3, 2]).contiguous();
    let (kv, key_rows, score_index, d_z) =
        (kv.contiguous(), read.key_rows.contiguous(), read.score_rows.contiguous(), d_z.contiguous());
    let (pattern, kv, d_z) = (elements::<f32>(&pattern), elements::<f32>(&kv), elements::<f32>(&d_z));
    let (key_rows, score_index) = (elements::<i64>(&key_rows), elements::<i64>(&score_index));
    let inputs =
        Inputs { pattern, kv, d_z, key_rows, score_index, h: h as usize, e: e as usize, n_pos: n_pos as usize };
    // The inputs in parts, one per libtorch thread: the first adds into the value and
    // score tables' gradients, each other part into tables of its own, added to those
    // in part order at the end. Each part zeroes what it adds into.
    let (z, d_v, d_scores) = (empty(&[n, batch, h, e]), empty(&[value_rows, h * e]), empty(&[score_rows, h]));
    let he = (h * e) as usize;
    let count = (n * batch) as usize;
    let step = count.div_ceil(cpu_loops::parts()).max(1);
    // SAFETY: the three are new, and each part writes only its own slice of z.
    let (z_all, d_v_all, d_scores_all) =
        unsafe { (elements_mut::<f32>(&z), elements_mut::<f32>(&d_v), elements_mut::<f32>(&d_scores)) };
    let (values, len) = (d_v_all.len(), d_v_all.len() + d_scores_all.len());
    let mut others: Vec<Vec<f32>> = (1..count.div_ceil(step)).map(|_| Vec::new()).collect();
    let tables = std::iter::once(Tables::Output(&mut *d_v_all, &mut *d_scores_all))
        .chain(others.iter_mut().map(|own| Tables::Own(own, len)));
    let parts: Vec<_> = z_all.chunks_mut(step * he).zip(tables).enumerate().collect();
    cpu_loops::for_each_owned(parts, |(i, (z, tables))| {
        let (d_v, d_scores) = match tables {
            Tables::Output(d_v, d_scores) => {
                d_v.fill(0.0);
                d_scores.fill(0.0);
                (d_v, d_scores)
            }
            Tables::Own(own, len) => {
                *own = vec![0f32; len];
                own.split_at_mut(values)
            }
        };
        z.fill(0.0);
        cpu_loops::widest(Part { inputs: &inputs, first: i * step, z, d_v, d_scores })
    });
    add_in_order(d_v_all, &others.iter().map(|own| &own[..values]).collect::<Vec<_>>());
    add_in_order(d_scores_all, &others.iter().map(|own| &own[values..]).collect::<Vec<_>>());
    (z, d_v, d_scores)
}

/// Where a part adds its inputs' gradients on the value and score tables: into the
/// outputs, or into a new table of its own (value rows, then score rows) of that length.
enum Tables<'a> {
    Output(&'a mut [f32], &'a mut [f32]),
    Own(&'a mut Vec<f32>, usize),
}

/// `total` += each of `tables`, in order, element by element: in parts on libtorch's
/// threads, each part a run of elements.
fn add_in_order(total: &mut [f32], tables: &[&[f32]]) {
    let step = total.len().div_ceil(cpu_loops::parts()).max(1);
    let parts: Vec<_> = total.chunks_mut(step).enumerate().collect();
    cpu_loops::for_each_owned(parts, |(i, total)| {
        for table in tables {
            total.iter_mut().zip(&table[i * step..]).for_each(|(a, b)| *a += b);
        }
    });
}

/// Σ a·b in sixteen interleaved partial sums (so that it vectorises), added up
/// pairwise: the same order on every CPU.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut lanes = [0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let rest = (a_chunks.remainder().iter().zip(b_chunks.remainder())).fold(0.0, |s: f32, (a, b)| a.mul_add(*b, s));
    for (a, b) in a_chunks.zip(b_chunks) {
        for k in 0..LANES {
            lanes[k] = a[k].mul_add(b[k], lanes[k]);
        }
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for k in 0..width {
            lanes[k] += lanes[k + width];
        }
    }
    lanes[0] + rest
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

/// Inputs `first…` (as many as `z` holds): their z, and their gradients added into
/// `d_v` `[value rows, head·d_head]` and `d_scores` `[score rows, head]`.
struct Part<'a> {
    inputs: &'a Inputs<'a>,
    first: usize,
    z: &'a mut [f32],
    d_v: &'a mut [f32],
    d_scores: &'a mut [f32],
}

impl Vectorised for Part<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Part { inputs, first, z, d_v, d_scores } = self;
        inputs.backward(first, z, d_v, d_scores)
    }
}

impl Inputs<'_> {
    /// [`Part`]'s work.
    #[inline(always)]
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
                    d_pattern[head * n_pos + i] = dot(v, d_z);
                    for ((z, d_v), (v, g)) in
                        z[head * e..][..e].iter_mut().zip(&mut d_v[head * e..][..e]).zip(v.iter().zip(d_z))
                    {
                        *z = w.mul_add(*v, *z);
                        *d_v = w.mul_add(*g, *d_v);
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
