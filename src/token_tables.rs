//! The last position of a one-layer model, computed from per-token tables.
//!
//! In one layer, what the last position reads from position i depends only on the
//! token t_i there: its key, its value through W_O, and that value's products with
//! W_in and W_U. So instead of pushing every input through the weights, build those
//! tables once per call (d_vocab rows per position and head) and, per input, add up
//! the rows of its tokens weighted by the attention pattern:
//!
//! ```text
//! score[h, i]  = q_h(t_last) · k_h(i, t_i) / √d_head          a table lookup
//! resid_mid    = x(last, t_last) + b_O + Σ_{i,h} pattern[h, i] · VO[i, t_i, h]
//! pre          = resid_mid · W_in + b_in  = base_in(t_last)  + Σ pattern · (VO·W_in)[i, t_i, h]
//! logits       = resid_mid · W_U + post · (W_out·W_U) + b_out·W_U + b_U
//! ```
//!
//! For a batch of inputs the weighted sums are one `embedding_bag` (mode sum,
//! per-sample weights) over the n_ctx · n_heads rows of each input; N models trained
//! together are one stack (every weight with a leading model axis) and one bag over
//! all their inputs. The math is the model's, reordered; it agrees with the plain
//! forward pass to float32 rounding (tests/parity.rs). The tables and what each input
//! read from them are kept for the hand-written backward pass (`crate::gradient`).

use tch::{Device, Kind, Tensor};

use crate::config::{ActFn, ModelConfig};
use crate::model::HookedTransformer;

/// The tables of N models, each tensor with a leading model axis.
pub(crate) struct Tables {
    /// Every (position, token) embedding: `[model, pos, vocab, d_model]`.
    pub x: Tensor,
    /// The query of every token at the last position: `[model, vocab, head·d_head]`.
    pub q: Tensor,
    /// Key and value of every (position, token): `[model, pos·vocab, 2·head·d_head]`,
    /// keys first.
    pub kv: Tensor,
    /// Attention score of (position, key token) for each query token:
    /// `[model, pos, key token, query token, head]`.
    scores: Tensor,
    /// The rows an input's sums read: first per (model, position, token, head) VO·W_in,
    /// VO·W_U and VO, then per (model, query token) what the last token adds directly
    /// with the biases to the MLP input, to the logits and to the residual; or, when
    /// not `wide`, the VO and residual columns alone.
    rows: Tensor,
    /// The rows without their resid_mid columns, contiguous, when `wide`: what inputs
    /// read when resid_mid is not asked for.
    rows_out: Option<Tensor>,
    /// Whether the rows carry the products with W_in and W_U (`[d_mlp + d_vocab_out +
    /// d_model]` wide), or inputs multiply their resid_mid by those weights instead
    /// (`[d_model]` wide). Summing 13 wide rows costs less than the product on a CPU; on
    /// a GPU the product is the cheap part and reading wide rows the dear one.
    wide: bool,
    /// b_out·W_U + b_U: `[model, 1, d_vocab_out]`.
    logit_bias: Tensor,
    /// W_out · W_U: `[model, d_mlp, d_vocab_out]`.
    pub w_logit: Tensor,
}

/// What a batch of inputs `[model, batch, pos]` read from the tables.
pub(crate) struct Read {
    /// Row of each input's (model, position, token) in model·pos·vocab: `[model, batch, pos]`.
    pub key_rows: Tensor,
    /// Row of each input's (model, last token) in model·vocab: `[model, batch]`.
    pub last_rows: Tensor,
    /// Row of each input's scores in the score table: `[model, batch, pos]`.
    pub score_rows: Tensor,
    /// The last position's attention pattern: `[model, batch, pos, head]`.
    pub pattern: Tensor,
    /// MLP activations: `[model, batch, d_mlp]`.
    pub post: Tensor,
    /// What the activation's derivative is evaluated at: the MLP input for GELU; for
    /// ReLU the activations themselves (positive exactly where the input is), which
    /// overwrite the input.
    pub derivative_at: Tensor,
    /// `[model, batch, d_vocab_out]`.
    pub logits: Tensor,
    /// `[model, batch, d_model]`, when asked for.
    pub resid_mid: Option<Tensor>,
}

impl Read {
    /// What the first `len` inputs read.
    pub fn first(&self, len: i64) -> Read {
        let first = |t: &Tensor| t.narrow(1, 0, len);
        Read {
            key_rows: first(&self.key_rows),
            last_rows: first(&self.last_rows),
            score_rows: first(&self.score_rows),
            pattern: first(&self.pattern),
            derivative_at: first(&self.derivative_at),
            post: first(&self.post),
            logits: first(&self.logits),
            resid_mid: self.resid_mid.as_ref().map(first),
        }
    }
}

/// Where a batch of inputs `[model, batch, pos]` reads in the tables: fixed by the
/// tokens, so a trainer builds it once.
pub(crate) struct Lookup {
    /// Row of each input's (model, position, token) in model·pos·vocab: `[model, batch, pos]`.
    key_rows: Tensor,
    /// Row of each input's (model, last token) in model·vocab: `[model, batch]`.
    last_rows: Tensor,
    /// Row of each input's (model, position, key token, query token) in the score
    /// table, per head: `[model, batch, pos]`.
    score_rows: Tensor,
    /// Each input's scores in the flat score table: `[model, batch, head, pos]`.
    score_index: Tensor,
    /// The rows each input sums: head·pos pattern-weighted ones, then its base row.
    bag_rows: Tensor,
    offsets: Tensor,
    /// The base row's weight, 1: `[model · batch, 1]`.
    ones: Tensor,
}

impl Lookup {
    pub fn new(cfg: &ModelConfig, tokens: &Tensor) -> Lookup {
        let (n, batch, n_pos) = tokens.size3().expect("tokens are [model, batch, pos]");
        let (n_heads, n_vocab) = (cfg.n_heads, cfg.d_vocab);
        let device = tokens.device();
        let model = Tensor::arange(n, (Kind::Int64, device)).view([n, 1]);
        let t_last = tokens.select(2, n_pos - 1);
        let key_rows = (model.unsqueeze(2) * n_pos + Tensor::arange(n_pos, (Kind::Int64, device))) * n_vocab + tokens;
        let last_rows = model * n_vocab + &t_last;
        let score_rows = &key_rows * n_vocab + t_last.unsqueeze(2);
        let heads = Tensor::arange(n_heads, (Kind::Int64, device)).view([n_heads, 1]);
        let score_index = score_rows.unsqueeze(2) * n_heads + &heads;
        let head_rows = key_rows.unsqueeze(2) * n_heads + heads; // [model, batch, head, pos]
        let base_rows = &last_rows + n * n_pos * n_vocab * n_heads;
        let bag_rows = Tensor::cat(&[head_rows.reshape([n, batch, -1]), base_rows.unsqueeze(2)], 2).flatten(0, 2);
        let offsets = Tensor::arange(n * batch, (Kind::Int64, device)) * (n_pos * n_heads + 1);
        let ones = Tensor::ones([n * batch, 1], (Kind::Float, device));
        Lookup { key_rows, last_rows, score_rows, score_index, bag_rows, offsets, ones }
    }
}

/// Inputs per piece when a batch is read from the tables in pieces on the CPU.
const CHUNK: i64 = 2048;

/// Where to cut `len` inputs into pieces on `device`: on the CPU in even pieces of at
/// most [`CHUNK`] (the gathers and the logits' product then stay in cache: on the seed's
/// 8,939 test inputs one piece took twice as long, and 2,048 beat 1,024 and 4,096),
/// elsewhere in one piece (fewer kernel launches).
pub(crate) fn pieces(len: i64, device: Device) -> Vec<(i64, i64)> {
    let count = if device == Device::Cpu { (len + CHUNK - 1) / CHUNK } else { 1 };
    let step = ((len + count - 1) / count.max(1)).max(1);
    (0..len).step_by(step as usize).map(|start| (start, step.min(len - start))).collect()
}

/// Whether tables on `device` should be wide ([`Tables::wide`]): on the CPU.
pub(crate) fn wide_tables(device: Device) -> bool {
    device == Device::Cpu
}

/// `[model, h, d, e]` → `[model, d, h·e]`: the per-head projection as one matrix.
pub(crate) fn heads_as_columns(w: &Tensor) -> Tensor {
    let (n, h, d, e) = (w.size()[0], w.size()[1], w.size()[2], w.size()[3]);
    w.permute([0, 2, 1, 3]).reshape([n, d, h * e])
}

impl HookedTransformer {
    /// The same weights with a leading model axis of one: a stack of this model alone.
    pub(crate) fn as_stack(&self) -> HookedTransformer {
        self.map_parameters(|_, t| t.unsqueeze(0))
    }

    /// The tables of a stack of one-layer models (every weight `[model, ..]`) for
    /// inputs of `n_pos` positions; `wide` as [`Tables::wide`] says.
    pub(crate) fn tables(&self, n_pos: i64, wide: bool) -> Tables {
        let cfg = &self.cfg;
        let (n_heads, d_head, n_vocab, d_model) = (cfg.n_heads, cfg.d_head, cfg.d_vocab, cfg.d_model);
        let he = n_heads * d_head;
        let (a, m) = (&self.blocks[0].attn, &self.blocks[0].mlp);
        let n = self.embed.W_E.size()[0];
        let x = self.embed.W_E.unsqueeze(1) + self.pos_embed.W_pos.narrow(1, 0, n_pos).unsqueeze(2);
        let x_last = x.select(1, n_pos - 1); // [model, vocab, d_model]
        let q = x_last.bmm(&heads_as_columns(&a.W_Q)) + a.b_Q.view([n, 1, he]);
        let w_kv = Tensor::cat(&[heads_as_columns(&a.W_K), heads_as_columns(&a.W_V)], 2);
        let b_kv = Tensor::cat(&[a.b_K.view([n, 1, he]), a.b_V.view([n, 1, he])], 2);
        let kv = x.view([n, n_pos * n_vocab, d_model]).bmm(&w_kv) + b_kv; // [model, pos·vocab, 2·he]
        let k = kv.narrow(2, 0, he).reshape([n, n_pos * n_vocab, n_heads, d_head]).permute([0, 2, 1, 3]);
        let q_heads = q.view([n, n_vocab, n_heads, d_head]).permute([0, 2, 3, 1]);
        let scores =
            k.reshape([n * n_heads, n_pos * n_vocab, d_head]).bmm(&q_heads.reshape([n * n_heads, d_head, n_vocab]))
                / (d_head as f64).sqrt(); // [model·head, pos·vocab, query token]
        let scores = scores.view([n, n_heads, n_pos, n_vocab, n_vocab]).permute([0, 2, 3, 4, 1]);
        // VO per (position, token, head): [model, pos·vocab·head, d_model].
        let v = kv.narrow(2, he, he).reshape([n, n_pos * n_vocab, n_heads, d_head]);
        let vo = Tensor::einsum("nthe,nhed->nthd", &[&v, &a.W_O], None::<i64>).reshape([n, -1, d_model]);
        let resid_base = &x_last + a.b_O.unsqueeze(1);
        let logit_bias = m.b_out.unsqueeze(1).bmm(&self.unembed.W_U) + self.unembed.b_U.unsqueeze(1);
        let (rows, base) = if wide {
            (
                Tensor::cat(&[vo.bmm(&m.W_in), vo.bmm(&self.unembed.W_U), vo], 2),
                Tensor::cat(
                    &[
                        resid_base.bmm(&m.W_in) + m.b_in.unsqueeze(1),
                        resid_base.bmm(&self.unembed.W_U) + &logit_bias,
                        resid_base,
                    ],
                    2,
                ),
            )
        } else {
            (vo, resid_base)
        };
        let width = rows.size()[2];
        let rows = Tensor::cat(&[rows.view([-1, width]), base.view([-1, width])], 0);
        let rows_out = wide.then(|| rows.narrow(1, 0, cfg.d_mlp + cfg.d_vocab_out).contiguous());
        Tables {
            scores: scores.contiguous(),
            rows,
            rows_out,
            wide,
            logit_bias,
            w_logit: m.W_out.bmm(&self.unembed.W_U),
            x,
            q,
            kv,
        }
    }

    /// Reads the inputs of `lookup` from `tables`; `resid_mid` only when asked for.
    pub(crate) fn read_tables(&self, tables: &Tables, lookup: &Lookup, with_resid_mid: bool) -> Read {
        let (n, batch, _) = lookup.key_rows.size3().expect("key rows are [model, batch, pos]");
        let (d_mlp, d_out) = (self.cfg.d_mlp, self.cfg.d_vocab_out);
        // The last query sees every position: softmax over all of them, per head.
        let pattern = tables.scores.take(&lookup.score_index).softmax(-1, Kind::Float); // [model, batch, head, pos]
        let rows = match (&tables.rows_out, with_resid_mid) {
            (Some(rows_out), false) => rows_out,
            _ => &tables.rows,
        };
        let width = rows.size()[1];
        // Per input: its pattern-weighted rows, and its base row once.
        let weights = Tensor::cat(&[pattern.view([n * batch, -1]), lookup.ones.shallow_clone()], 1);
        let (mixed, _, _, _) = Tensor::embedding_bag(
            rows,
            &lookup.bag_rows,
            &lookup.offsets,
            false,
            0, // sum
            false,
            Some(weights.flatten(0, 1)),
            false,
        );
        let mixed = mixed.view([n, batch, width]);
        let (m, w_u) = (&self.blocks[0].mlp, &self.unembed.W_U);
        let (mut pre, resid_mid) = if tables.wide {
            (mixed.narrow(2, 0, d_mlp), with_resid_mid.then(|| mixed.narrow(2, d_mlp + d_out, self.cfg.d_model)))
        } else {
            (m.b_in.unsqueeze(1).baddbmm(&mixed, &m.W_in, 1, 1), with_resid_mid.then(|| mixed.shallow_clone()))
        };
        let (post, derivative_at) = match self.cfg.act_fn {
            // In place: the MLP input is a fresh tensor or the bag's own columns, and
            // nothing else reads it.
            ActFn::Relu => {
                let post = pre.relu_();
                (post.shallow_clone(), post)
            }
            ActFn::Gelu => (pre.gelu("none"), pre),
        };
        let logits = if tables.wide {
            mixed.narrow(2, d_mlp, d_out).baddbmm(&post, &tables.w_logit, 1, 1)
        } else {
            tables.logit_bias.baddbmm(&mixed, w_u, 1, 1).baddbmm(&post, &tables.w_logit, 1, 1)
        };
        Read {
            key_rows: lookup.key_rows.shallow_clone(),
            last_rows: lookup.last_rows.shallow_clone(),
            score_rows: lookup.score_rows.shallow_clone(),
            pattern: pattern.permute([0, 1, 3, 2]),
            post,
            derivative_at,
            logits,
            resid_mid,
        }
    }

    /// The last position of a stack of one-layer models, each on its own inputs
    /// `[model, batch, pos]`: logits and MLP activations `[model, batch, ·]`, and
    /// `resid_mid` only when asked for.
    fn stacked_last_position(&self, tokens: &Tensor, with_resid_mid: bool) -> (Tensor, Tensor, Option<Tensor>) {
        let tables = self.tables(tokens.size()[2], wide_tables(tokens.device()));
        let reads: Vec<Read> = pieces(tokens.size()[1], tokens.device())
            .into_iter()
            .map(|(start, len)| {
                self.read_tables(&tables, &Lookup::new(&self.cfg, &tokens.narrow(1, start, len)), with_resid_mid)
            })
            .collect();
        let cat = |f: &dyn Fn(&Read) -> &Tensor| Tensor::cat(&reads.iter().map(f).collect::<Vec<_>>(), 1);
        let resid_mid = with_resid_mid.then(|| cat(&|r| r.resid_mid.as_ref().expect("asked for")));
        (cat(&|r| &r.logits), cat(&|r| &r.post), resid_mid)
    }

    /// The last position of this one-layer model for a batch of inputs `[batch, pos]`:
    /// logits, MLP activations and, when asked for, resid_mid.
    pub(crate) fn last_position_from_tables(
        &self,
        tokens: &Tensor,
        with_resid_mid: bool,
    ) -> (Tensor, Tensor, Option<Tensor>) {
        let (logits, mlp_post, resid_mid) = self.as_stack().stacked_last_position(&tokens.unsqueeze(0), with_resid_mid);
        (logits.squeeze_dim(0), mlp_post.squeeze_dim(0), resid_mid.map(|r| r.squeeze_dim(0)))
    }
}
