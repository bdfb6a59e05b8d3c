//! The attention's part of the backward pass on the CPU, one input at a time: what
//! `crate::gradient` computes elsewhere with gathers, broadcasts and `scatter_add`
//! over every input, as one loop. Each input reads n_pos value rows and adds into
//! them and into n_pos entries of the score table per head, so the tensor version
//! spends its time on a dozen passes over small tensors; here it is one pass, the
//! inputs in order (deterministic, as `scatter_add` is on the CPU).
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

use tch::{Device, Kind, Tensor};

use crate::one_layer::Read;

/// A contiguous CPU tensor's elements.
fn elements<T: tch::kind::Element>(t: &Tensor) -> &[T] {
    assert!(t.device() == Device::Cpu && t.kind() == T::KIND && t.is_contiguous(), "a contiguous CPU tensor");
    // SAFETY: the tensor is contiguous, of T, on the CPU, and borrowed for the slice's life.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const T, t.numel()) }
}

/// A new zero float32 CPU tensor.
fn zeros(size: &[i64]) -> Tensor {
    Tensor::zeros(size, (Kind::Float, Device::Cpu))
}

/// The elements of a tensor from [`zeros`], to be written.
///
/// # Safety
/// Nothing else may read or write `t` while the slice lives.
unsafe fn elements_mut(t: &Tensor) -> &mut [f32] {
    std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, t.numel())
}

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
    let (z, d_v, d_scores) = (zeros(&[n, batch, h, e]), zeros(&[value_rows, h * e]), zeros(&[score_rows, h]));
    let (pattern, kv, d_z) = (elements::<f32>(&pattern), elements::<f32>(&kv), elements::<f32>(&d_z));
    let (key_rows, score_index) = (elements::<i64>(&key_rows), elements::<i64>(&score_index));
    // SAFETY: the three are new and only this loop writes them.
    let (z_all, d_v_all, d_scores_all) = unsafe { (elements_mut(&z), elements_mut(&d_v), elements_mut(&d_scores)) };
    let (h, e, n_pos) = (h as usize, e as usize, n_pos as usize);
    let he = h * e;
    let scale = 1.0 / (e as f32).sqrt();
    let mut d_pattern = vec![0f32; h * n_pos];
    for (input, (z, d_z)) in z_all.chunks_exact_mut(he).zip(d_z.chunks_exact(he)).enumerate() {
        let p = &pattern[input * h * n_pos..][..h * n_pos];
        for i in 0..n_pos {
            let row = key_rows[input * n_pos + i] as usize;
            let v = &kv[row * 2 * he + he..][..he];
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
                d_scores_all[score_index[input * n_pos + i] as usize * h + head] += p[i] * (d[i] - p_dot) * scale;
            }
        }
    }
    (z, d_v, d_scores)
}
