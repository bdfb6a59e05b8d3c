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
//! The weighted sums are one `embedding_bag` (mode sum, per-sample weights) over the
//! n_ctx · n_heads rows of each input. The math is the model's, reordered; it agrees
//! with the plain forward pass to float32 rounding (tests/parity.rs).

use tch::{Kind, Tensor};

use crate::model::{project, HookedTransformer};

impl HookedTransformer {
    /// The last position of a one-layer model from per-token tables: logits, MLP
    /// activations, and `resid_mid` only when asked for (training needs just the logits).
    pub(crate) fn last_position_from_tables(
        &self,
        tokens: &Tensor,
        with_resid_mid: bool,
    ) -> (Tensor, Tensor, Option<Tensor>) {
        let cfg = &self.cfg;
        let (n_heads, d_head, d_mlp) = (cfg.n_heads, cfg.d_head, cfg.d_mlp);
        let (batch, n_pos) = (tokens.size()[0], tokens.size()[1]);
        let n_vocab = cfg.d_vocab;
        let (a, m) = (&self.blocks[0].attn, &self.blocks[0].mlp);
        let device = tokens.device();

        // Every (position, token) embedding: [pos, vocab, d_model].
        let x = self.embed.W_E.unsqueeze(0) + self.pos_embed.W_pos.narrow(0, 0, n_pos).unsqueeze(1);
        let x_last = x.select(0, n_pos - 1); // [vocab, d_model]
        let q = project(&x_last, &a.W_Q, &a.b_Q); // [query token, head, d_head]
        let k = project(&x, &a.W_K, &a.b_K); // [pos, key token, head, d_head]
        let v = project(&x, &a.W_V, &a.b_V);

        // Scores for every (pos, key token, query token): [pos·vocab·vocab, head].
        let scores = k.permute([2, 0, 1, 3]).reshape([n_heads, n_pos * n_vocab, d_head]).matmul(&q.permute([1, 2, 0]))
            / (d_head as f64).sqrt(); // [head, pos·vocab, query token]
        let scores = scores.permute([1, 2, 0]).reshape([n_pos * n_vocab * n_vocab, n_heads]);
        let t_last = tokens.select(1, n_pos - 1); // [batch]
        let key_rows = tokens + Tensor::arange(n_pos, (Kind::Int64, device)) * n_vocab; // [batch, pos]: row in pos·vocab
        let score_rows = (&key_rows * n_vocab + t_last.unsqueeze(1)).flatten(0, 1);
        // The last query sees every position: softmax over all of them.
        let pattern = scores.index_select(0, &score_rows).view([batch, n_pos, n_heads]).softmax(1, Kind::Float);

        // Rows to add up, per (pos, token, head): VO, VO·W_in, VO·W_U side by side.
        let vo = Tensor::einsum("pvhe,hed->pvhd", &[&v, &a.W_O], None::<i64>); // [pos, vocab, head, d_model]
        let mut parts = vec![vo.matmul(&m.W_in), vo.matmul(&self.unembed.W_U)];
        if with_resid_mid {
            parts.push(vo.shallow_clone());
        }
        let table = Tensor::cat(&parts, -1);
        let width = table.size()[3];
        let bag_rows =
            (key_rows.unsqueeze(-1) * n_heads + Tensor::arange(n_heads, (Kind::Int64, device))).flatten(0, 2);
        let offsets = Tensor::arange(batch, (Kind::Int64, device)) * (n_pos * n_heads);
        let (mixed, _, _, _) = Tensor::embedding_bag(
            &table.view([-1, width]),
            &bag_rows,
            &offsets,
            false,
            0, // sum
            false,
            Some(pattern.flatten(0, 2)),
            false,
        ); // [batch, width]

        // What the last token contributes directly, and the biases, per query token.
        let resid_base = &x_last + &a.b_O; // [vocab, d_model]
        let w_logit = m.W_out.matmul(&self.unembed.W_U); // [d_mlp, d_vocab_out]
        let pre_base = resid_base.matmul(&m.W_in) + &m.b_in;
        let logit_base = resid_base.matmul(&self.unembed.W_U) + m.b_out.matmul(&self.unembed.W_U) + &self.unembed.b_U;

        let pre = mixed.narrow(1, 0, d_mlp) + pre_base.index_select(0, &t_last);
        let mlp_post = self.act(&pre);
        let d_out = cfg.d_vocab_out;
        let logits = mixed.narrow(1, d_mlp, d_out) + logit_base.index_select(0, &t_last) + mlp_post.matmul(&w_logit);
        let resid_mid =
            with_resid_mid.then(|| mixed.narrow(1, d_mlp + d_out, cfg.d_model) + resid_base.index_select(0, &t_last));
        (logits, mlp_post, resid_mid)
    }
}
