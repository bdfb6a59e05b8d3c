//! The gradient of the training loss for a stack of one-layer models, written out by
//! hand over the per-token tables (`crate::one_layer`): what autograd would compute,
//! without the autograd graph or the backward of `embedding_bag`, in a few dozen
//! kernels however many models are stacked.
//!
//! Backwards from the logits, per input at the last position:
//!
//! ```text
//! logits    = (resid_mid + post·W_out + b_out)·W_U + b_U      post = act(pre)
//! pre       = resid_mid·W_in + b_in
//! resid_mid = x(last, t_last) + b_O + Σ_h z_h·W_O[h]           z_h = Σ_i pattern[i, h]·v_h(i, t_i)
//! pattern   = softmax_i(k_h(i, t_i)·q_h(t_last) / √d_head)
//! ```
//!
//! and every key, value and query is a row of a per-token table, `x(i, t)·W + b` with
//! `x(i, t) = W_E[t] + W_pos[i]`. Each input's gradient on a value row, and on its
//! entry of the score table (key row · query row), adds into that row or entry
//! (`index_add`, in order on the CPU); the tables' gradients give the weights'.
//! Only the weights `W_*` get gradients: the seed trains no biases.

use tch::{Device, Kind, Tensor};

use crate::attention_grad;
use crate::config::ActFn;
use crate::one_layer::{heads_as_columns, Read, Stack, Tables};

fn tr(t: &Tensor) -> Tensor {
    t.transpose(1, 2)
}

/// The gradients of every weight `W_*` of `stack`, by TransformerLens's name, given what
/// the training inputs read from `tables` (with resid_mid) and the loss's gradient on
/// their logits.
pub(crate) fn weight_gradients(
    stack: &Stack,
    tables: &Tables,
    read: &Read,
    d_logits: &Tensor,
) -> Vec<(&'static str, Tensor)> {
    // On the CPU the attention's per-input part as loops; elsewhere as tensors, a few
    // kernels over every input at once.
    let loops = d_logits.device() == Device::Cpu;
    gradients(stack, tables, read, d_logits, loops)
}

/// Rows `[rows, width]`, `src`'s rows `[…, width]` added into those `index` names.
fn scatter(rows: i64, index: &Tensor, src: &Tensor, width: i64) -> Tensor {
    Tensor::zeros([rows, width], (Kind::Float, src.device())).index_add(0, index, &src.reshape([-1, width]))
}

/// [`attention_grad::gradients`] as tensors, every input at once: z `[model, batch,
/// head, d_head]`, the value table's gradient `[model·pos·vocab, head·d_head]` and the
/// flat score table's `[model·pos·vocab·queries, head]`.
fn attention_by_tensors(
    kv: &Tensor,
    read: &Read,
    d_z: &Tensor,
    n_vocab: i64,
    n_queries: i64,
) -> (Tensor, Tensor, Tensor) {
    let (n, batch, n_pos) = read.key_rows.size3().expect("key rows are [model, batch, pos]");
    let (h, e) = (d_z.size()[2], d_z.size()[3]);
    let key_rows = read.key_rows.flatten(0, 2);
    let v_rows =
        kv.view([-1, 2 * h * e]).narrow(1, h * e, h * e).index_select(0, &key_rows).view([n, batch, n_pos, h, e]);
    let pattern = read.pattern.unsqueeze(-1);
    let z = (&pattern * &v_rows).sum_dim_intlist(2, false, Kind::Float);
    let d_z = d_z.unsqueeze(2);
    let d_pattern = (&v_rows * &d_z).sum_dim_intlist(-1, false, Kind::Float); // [model, batch, pos, head]
                                                                              // Softmax over positions, and the score's 1/√d_head.
    let p_dot = (&read.pattern * &d_pattern).sum_dim_intlist(2, true, Kind::Float);
    let d_score = &read.pattern * (d_pattern - p_dot) / (e as f64).sqrt();
    let d_v = scatter(n * n_pos * n_vocab, &key_rows, &(&pattern * &d_z), h * e);
    let d_scores = scatter(n * n_pos * n_vocab * n_queries, &read.score_rows.flatten(0, 2), &d_score, h);
    (z, d_v, d_scores)
}

/// [`weight_gradients`], the attention's per-input part as loops (CPU only) or tensors.
fn gradients(
    stack: &Stack,
    tables: &Tables,
    read: &Read,
    d_logits: &Tensor,
    loops: bool,
) -> Vec<(&'static str, Tensor)> {
    let cfg = &stack.cfg;
    let p = |name: &str| stack.get(name);
    let (w_q, w_k, w_v, w_o) =
        (p("blocks.0.attn.W_Q"), p("blocks.0.attn.W_K"), p("blocks.0.attn.W_V"), p("blocks.0.attn.W_O"));
    let (w_in, w_out, b_out, w_u) =
        (p("blocks.0.mlp.W_in"), p("blocks.0.mlp.W_out"), p("blocks.0.mlp.b_out"), p("unembed.W_U"));
    let (n, batch, n_pos) = read.key_rows.size3().expect("key rows are [model, batch, pos]");
    let (h, e, d, n_vocab) = (cfg.n_heads, cfg.d_head, cfg.d_model, cfg.d_vocab);
    let he = h * e;
    let resid_mid = read.resid_mid.as_ref().expect("training reads resid_mid");
    let g = d_logits;

    // Unembedding and MLP output.
    let d_w_logit = tr(&read.post).bmm(g); // Σ postᵀ·g: [model, d_mlp, d_vocab_out]
    let g_sum = g.sum_dim_intlist(1, true, Kind::Float);
    let d_w_out = d_w_logit.bmm(&tr(w_u));
    let d_w_u = tr(resid_mid).bmm(g).baddbmm(&tr(w_out), &d_w_logit, 1, 1).baddbmm(&b_out.unsqueeze(2), &g_sum, 1, 1);
    // MLP input. ReLU's backward writes over d_post, a fresh tensor nothing else reads.
    let d_post = g.bmm(&tr(&tables.w_logit));
    let d_pre = match cfg.act_fn {
        ActFn::Relu => read.derivative_at.threshold_backward_grad_input(&d_post, &d_post, 0.0),
        ActFn::Gelu => read.derivative_at.gelu_backward(&d_post, "none"),
    };
    let d_w_in = tr(resid_mid).bmm(&d_pre);
    // The second product added in place into the first (`baddbmm` would copy it first).
    let d_resid = g.bmm(&tr(w_u)).baddbmm_(&d_pre, &tr(w_in)); // [model, batch, d_model]

    // Attention at the last position: z_h per input, and each input's gradient on a
    // table row added into that row: the values' per input, the scores' per (position,
    // key token, query token).
    let last_rows = read.last_rows.flatten(0, 1);
    let d_z = d_resid.bmm(&tr(&w_o.reshape([n, he, d]))).view([n, batch, h, e]);
    let n_queries = tables.q.size()[1];
    let (z, d_v, d_scores) = match loops {
        true => attention_grad::gradients(&tables.kv, read, &d_z, n_vocab, n_queries),
        false => attention_by_tensors(&tables.kv, read, &d_z, n_vocab, n_queries),
    };
    let d_w_o = tr(&z.view([n, batch, he])).bmm(&d_resid).view([n, h, e, d]);
    let d_v = d_v.view([n, n_pos * n_vocab, he]);
    // scores[(pos, key token), query] = k·q per head, so d_k = d_scores·q, d_q = d_scoresᵀ·k.
    let d_scores = d_scores.view([n, n_pos * n_vocab, n_queries, h]).permute([0, 3, 1, 2]).reshape([
        n * h,
        n_pos * n_vocab,
        n_queries,
    ]);
    let per_head = |t: Tensor, rows: i64| t.reshape([n, rows, h, e]).permute([0, 2, 1, 3]).reshape([n * h, rows, e]);
    let per_column = |t: Tensor, rows: i64| t.view([n, h, rows, e]).permute([0, 2, 1, 3]).reshape([n, rows, he]);
    let k = per_head(tables.kv.narrow(2, 0, he), n_pos * n_vocab);
    let q = per_head(tables.q.shallow_clone(), n_queries);
    let d_k = per_column(d_scores.bmm(&q), n_pos * n_vocab);
    let d_q = per_column(tr(&d_scores).bmm(&k), n_queries);
    let mut d_x_last = scatter(n * n_vocab, &last_rows, &d_resid, d).view([n, n_vocab, d]);

    // The tables' weights, then the embeddings under them.
    let x = tables.x.view([n, n_pos * n_vocab, d]);
    let x_query = tables.x.select(1, n_pos - 1).index_select(1, &tables.query_tokens);
    let as_heads = |w: Tensor| w.view([n, d, h, e]).permute([0, 2, 1, 3]).contiguous(); // → [model, head, d_model, d_head]
    let d_w_k = as_heads(tr(&x).bmm(&d_k));
    let d_w_v = as_heads(tr(&x).bmm(&d_v));
    let d_w_q = as_heads(tr(&x_query).bmm(&d_q));
    let back = |d: &Tensor, w: &Tensor| d.bmm(&tr(&heads_as_columns(w)));
    let d_x = (back(&d_k, w_k) + back(&d_v, w_v)).view([n, n_pos, n_vocab, d]);
    let _ = d_x.select(1, n_pos - 1).g_add_(&d_x_last.index_add_(1, &tables.query_tokens, &back(&d_q, w_q)));
    let d_w_e = d_x.sum_dim_intlist(1, false, Kind::Float);
    let d_w_pos = Tensor::zeros_like(p("pos_embed.W_pos"));
    d_w_pos.narrow(1, 0, n_pos).copy_(&d_x.sum_dim_intlist(2, false, Kind::Float));

    vec![
        ("embed.W_E", d_w_e),
        ("pos_embed.W_pos", d_w_pos),
        ("blocks.0.attn.W_Q", d_w_q),
        ("blocks.0.attn.W_O", d_w_o),
        ("blocks.0.attn.W_K", d_w_k),
        ("blocks.0.attn.W_V", d_w_v),
        ("blocks.0.mlp.W_in", d_w_in),
        ("blocks.0.mlp.W_out", d_w_out),
        ("unembed.W_U", d_w_u),
    ]
}

#[cfg(test)]
mod tests {
    use tch::Device;

    use super::*;
    use crate::config::{ModelConfig, RunConfig};
    use crate::loss::{logit_gradient, loss_fn};
    use crate::model::HookedTransformer;
    use crate::one_layer::{Lookup, Queries};
    use crate::task::Task;

    /// Autograd through the plain full forward pass (every position, as
    /// TransformerLens computes it) against the hand-written gradient, for a stack of
    /// two models with random biases, each on its own inputs, with ReLU and GELU, from
    /// wide and narrow tables, the attention's part as loops and as tensors.
    #[test]
    fn hand_written_gradients_match_autograd() {
        for (act_fn, wide) in [(ActFn::Relu, true), (ActFn::Gelu, true), (ActFn::Relu, false)] {
            let task = Task::power_sum(11, 4, 4);
            let mut cfg = RunConfig::for_task(task);
            cfg.model = ModelConfig { d_model: 16, d_head: 8, n_heads: 2, d_mlp: 32, act_fn, ..cfg.model };
            let models: Vec<HookedTransformer> = (1..=2)
                .map(|seed| HookedTransformer::new(&ModelConfig { seed, ..cfg.model.clone() }, Device::Cpu).unwrap())
                .collect();
            let (models, tokens, labels) = crate::rng::seeded(7, || {
                (
                    models.iter().map(|m| m.map_parameters(|_, t| t + 0.1 * t.randn_like())).collect::<Vec<_>>(),
                    Tensor::randint(cfg.model.d_vocab, [2, 40, 3], (Kind::Int64, Device::Cpu)),
                    Tensor::randint(cfg.model.d_vocab_out, [2, 40], (Kind::Int64, Device::Cpu)),
                )
            });

            let stack = Stack::new(&models.iter().collect::<Vec<_>>()).unwrap();
            let queries = Queries::of(&tokens, stack.cfg.d_vocab);
            let tables = stack.tables(3, &queries, wide);
            let read = stack.read_tables(&tables, &Lookup::new(&stack.cfg, &tokens, &queries), true);
            let log_probs = read.logits.to_kind(Kind::Double).log_softmax(-1, Kind::Double);
            let weights = Tensor::full([2, 40], 1.0 / 40.0, (Kind::Double, Device::Cpu));
            let d_logits = logit_gradient(&log_probs, &labels, &weights);

            for (i, model) in models.iter().enumerate() {
                let model = model.trainable_copy();
                let logits = model.forward(&tokens.get(i as i64)).unwrap().select(1, -1);
                loss_fn(&logits, &labels.get(i as i64)).backward();
                let trained: Vec<(&str, &Tensor)> = model.trainable_parameters().collect();
                for loops in [true, false] {
                    let ours = gradients(&stack, &tables, &read, &d_logits, loops);
                    assert_eq!(trained.len(), ours.len());
                    for (name, param) in &trained {
                        let (_, grad) = ours.iter().find(|(n, _)| n == name).expect("a gradient per weight");
                        let theirs = param.grad();
                        let scale = theirs.abs().max().double_value(&[]);
                        let gap = (grad.get(i as i64) - &theirs).abs().max().double_value(&[]);
                        assert!(
                            gap <= 1e-5 * scale,
                            "{act_fn:?} wide {wide} loops {loops} model {i} {name}: gap {gap:e} at scale {scale:e}"
                        );
                    }
                }
            }
        }
    }
}
