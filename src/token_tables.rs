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
//! per-sample weights) over the n_ctx · n_heads rows of each input. For all p² inputs
//! `[a, b, =]` at once they are three small batched products over the (a, b) grid.
//! The math is the model's, reordered; it agrees with the plain forward pass to
//! float32 rounding (tests/parity.rs).

use tch::{Kind, Tensor};

use crate::model::{project, HookedTransformer, LastPosition};

/// The tables of one model.
struct Tables {
    /// Attention score of (position, key token) for each query token:
    /// `[pos, key token, query token, head]`.
    scores: Tensor,
    /// Per (position, token, head): VO·W_in, VO·W_U and, when asked for, VO:
    /// `[pos, token, head, width]`.
    rows: Tensor,
    /// What the last token adds directly, with the biases, per query token:
    /// to the residual `[vocab, d_model]`, to the MLP input `[vocab, d_mlp]`, to the logits.
    resid_base: Tensor,
    pre_base: Tensor,
    logit_base: Tensor,
    /// W_out · W_U: `[d_mlp, d_vocab_out]`.
    w_logit: Tensor,
}

/// What the weighted sums of table rows give: logits, MLP activations, resid_mid.
type Outputs = (Tensor, Tensor, Option<Tensor>);

impl HookedTransformer {
    fn tables(&self, n_pos: i64, with_resid_mid: bool) -> Tables {
        let cfg = &self.cfg;
        let (n_heads, d_head, n_vocab) = (cfg.n_heads, cfg.d_head, cfg.d_vocab);
        let (a, m) = (&self.blocks[0].attn, &self.blocks[0].mlp);
        // Every (position, token) embedding: [pos, vocab, d_model].
        let x = self.embed.W_E.unsqueeze(0) + self.pos_embed.W_pos.narrow(0, 0, n_pos).unsqueeze(1);
        let x_last = x.select(0, n_pos - 1); // [vocab, d_model]
        let q = project(&x_last, &a.W_Q, &a.b_Q); // [query token, head, d_head]
        let k = project(&x, &a.W_K, &a.b_K); // [pos, key token, head, d_head]
        let v = project(&x, &a.W_V, &a.b_V);
        let scores = k.permute([2, 0, 1, 3]).reshape([n_heads, n_pos * n_vocab, d_head]).matmul(&q.permute([1, 2, 0]))
            / (d_head as f64).sqrt(); // [head, pos·vocab, query token]
        let scores = scores.permute([1, 2, 0]).reshape([n_pos, n_vocab, n_vocab, n_heads]);
        let vo = Tensor::einsum("pvhe,hed->pvhd", &[&v, &a.W_O], None::<i64>); // [pos, vocab, head, d_model]
        let mut parts = vec![vo.matmul(&m.W_in), vo.matmul(&self.unembed.W_U)];
        if with_resid_mid {
            parts.push(vo);
        }
        let resid_base = &x_last + &a.b_O;
        let pre_base = resid_base.matmul(&m.W_in) + &m.b_in;
        let logit_base = resid_base.matmul(&self.unembed.W_U) + m.b_out.matmul(&self.unembed.W_U) + &self.unembed.b_U;
        Tables {
            scores,
            rows: Tensor::cat(&parts, -1),
            resid_base,
            pre_base,
            logit_base,
            w_logit: m.W_out.matmul(&self.unembed.W_U),
        }
    }

    /// Splits the summed rows `[.., width]` plus each input's base into the outputs.
    fn finish(&self, tables: &Tables, mixed: &Tensor, t_last: &Tensor, with_resid_mid: bool) -> Outputs {
        let (d_mlp, d_out) = (self.cfg.d_mlp, self.cfg.d_vocab_out);
        let last = mixed.dim() as i64 - 1;
        let pre = mixed.narrow(last, 0, d_mlp) + tables.pre_base.index_select(0, t_last);
        let mlp_post = self.act(&pre);
        let logits = mixed.narrow(last, d_mlp, d_out)
            + tables.logit_base.index_select(0, t_last)
            + mlp_post.matmul(&tables.w_logit);
        let resid_mid = with_resid_mid
            .then(|| mixed.narrow(last, d_mlp + d_out, self.cfg.d_model) + tables.resid_base.index_select(0, t_last));
        (logits, mlp_post, resid_mid)
    }

    /// The last position of a one-layer model for a batch of inputs `[batch, pos]`:
    /// logits, MLP activations, and `resid_mid` only when asked for (training needs
    /// just the logits).
    pub(crate) fn last_position_from_tables(&self, tokens: &Tensor, with_resid_mid: bool) -> Outputs {
        let (batch, n_pos) = (tokens.size()[0], tokens.size()[1]);
        let (n_heads, n_vocab) = (self.cfg.n_heads, self.cfg.d_vocab);
        let device = tokens.device();
        let tables = self.tables(n_pos, with_resid_mid);
        let t_last = tokens.select(1, n_pos - 1); // [batch]
        let key_rows = tokens + Tensor::arange(n_pos, (Kind::Int64, device)) * n_vocab; // [batch, pos]: row in pos·vocab
        let score_rows = (&key_rows * n_vocab + t_last.unsqueeze(1)).flatten(0, 1);
        // The last query sees every position: softmax over all of them.
        let pattern = tables
            .scores
            .view([-1, n_heads])
            .index_select(0, &score_rows)
            .view([batch, n_pos, n_heads])
            .softmax(1, Kind::Float);
        let width = tables.rows.size()[3];
        let bag_rows =
            (key_rows.unsqueeze(-1) * n_heads + Tensor::arange(n_heads, (Kind::Int64, device))).flatten(0, 2);
        let offsets = Tensor::arange(batch, (Kind::Int64, device)) * (n_pos * n_heads);
        let (mixed, _, _, _) = Tensor::embedding_bag(
            &tables.rows.view([-1, width]),
            &bag_rows,
            &offsets,
            false,
            0, // sum
            false,
            Some(pattern.flatten(0, 2)),
            false,
        ); // [batch, width]
        self.finish(&tables, &mixed, &t_last, with_resid_mid)
    }

    /// The last position of a one-layer model for all p² inputs `[a, b, =]`, a-major
    /// (p = d_vocab_out, `=` = p): the table rows of a, of b and of `=` weighted over
    /// the (a, b) grid, with no per-input gather.
    pub(crate) fn last_position_all_pairs(&self) -> LastPosition {
        let p = self.cfg.d_vocab_out;
        let device = self.device();
        let tables = self.tables(3, true);
        let eq = p; // the `=` token
                    // Scores of the first p tokens at a position, queried by `=`: [token, head].
        let score = |pos: i64| tables.scores.get(pos).narrow(0, 0, p).select(1, eq);
        let s_a = score(0).unsqueeze(1); // [a, 1, head]
        let s_b = score(1).unsqueeze(0); // [1, b, head]
        let s_eq = tables.scores.get(2).get(eq).get(eq).view([1, 1, -1]); // [1, 1, head]
        let (s_a, s_b, s_eq) =
            (s_a.expand([p, p, -1], false), s_b.expand([p, p, -1], false), s_eq.expand([p, p, -1], false));
        let pattern = Tensor::stack(&[s_a, s_b, s_eq], 3).softmax(3, Kind::Float); // [a, b, head, pos]
        let rows_a = tables.rows.get(0).narrow(0, 0, p); // [a, head, width]
        let rows_b = tables.rows.get(1).narrow(0, 0, p);
        let rows_eq = tables.rows.get(2).get(eq); // [head, width]
        let mixed = pattern.select(3, 0).matmul(&rows_a) // [a, b, head] × [a, head, width]
            + pattern.select(3, 1).permute([1, 0, 2]).matmul(&rows_b).permute([1, 0, 2])
            + pattern.select(3, 2).matmul(&rows_eq); // [a, b, width]
        let mixed = mixed.flatten(0, 1);
        let t_last = Tensor::full([p * p], eq, (Kind::Int64, device));
        let (logits, mlp_post, resid_mid) = self.finish(&tables, &mixed, &t_last, true);
        LastPosition { resid_mid: resid_mid.expect("asked for"), mlp_post, logits }
    }
}
