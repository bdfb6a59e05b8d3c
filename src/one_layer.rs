//! The last position of one-layer models, computed from per-token tables: the fast
//! path that training and the analysis take. It agrees with the plain forward pass of
//! [`HookedTransformer`] to float32 rounding (`tests/parity.rs`).
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
//! The last position is the query, and its own token t_last is the same for every
//! input of a task (`=`). Each head's pattern sums to 1, so its weight on the last
//! position is 1 − Σ_{i<last} pattern[h, i], and the sum above is
//!
//! ```text
//! Σ_i pattern[h, i] · VO[i, t_i, h] = VO[last, t_last, h] + Σ_{i<last} pattern[h, i] · (VO[i, t_i, h] − VO[last, t_last, h])
//! ```
//!
//! So the tables hold, per last token (a query, `Queries`), the differences for the
//! positions before the last, and a base row that takes in every head's row at the
//! last position: an input sums n_heads·(n_pos − 1) rows and its base row, 9 rows for
//! the seed's `a b =` instead of 13.
//!
//! N models trained together are one [`Stack`] (every parameter with a leading model
//! axis) and one `embedding_bag` over all their inputs. The tables and what each input
//! read from them are kept for the hand-written backward pass (`crate::gradient`).
//!
//! The summed rows are one flat table `[rows, width]`, all models' together, with
//! `lower` = n_pos − 1 and `query` the place of the input's last token among the queries:
//!
//! ```text
//!  row = (((model·n_heads + head)·queries + query)·lower + position)·d_vocab + token
//!                    VO[position, token, head] − VO[last, query token, head], n·n_heads·queries·lower·d_vocab of them
//!  row = n·n_heads·queries·lower·d_vocab + model·queries + query
//!                    base rows: the query token's own x + b_O, plus Σ_h VO[last, query token, h]
//!
//!  Wide:   | VO·W_in  (d_mlp) | VO·W_U  (d_vocab_out) | 0… | VO (d_model) |   base: with b_in and b_out·W_U + b_U
//!  Narrow: | VO (d_model) |
//! ```
//!
//! Wide rows are zero from the logits' columns to a multiple of 16 floats (the
//! `0…`), so that the sums read whole, aligned AVX-512 vectors with resid_mid and
//! without it (measured in BENCHMARKS.md).

#![allow(non_snake_case)]

use tch::{Device, Kind, Tensor};

use crate::config::{ActFn, ModelConfig};
use crate::error::{Error, Result};
use crate::model::{act, HookedTransformer};
use crate::row_sums::{row_sums, Reads};

/// N one-layer models of one shape, each parameter stacked on a leading model axis,
/// by TransformerLens's name in its `named_parameters` order. Not a model: it has no
/// forward pass of its own, only the tables'.
pub(crate) struct Stack {
    pub cfg: ModelConfig,
    /// Models stacked.
    pub n: i64,
    parameters: Vec<(String, Tensor)>,
}

impl Stack {
    /// `models` stacked; they must be one-layer models of one shape on one device.
    pub fn new(models: &[&HookedTransformer]) -> Result<Stack> {
        let first = models.first().ok_or_else(|| Error::config("no models to stack"))?;
        let shape = |m: &HookedTransformer| ModelConfig { seed: 0, ..m.cfg.clone() };
        if first.cfg.n_layers != 1 {
            return Err(Error::config(format!("the fast path is for one-layer models, not {}", first.cfg.n_layers)));
        }
        if let Some(other) = models.iter().find(|m| shape(m) != shape(first) || m.device() != first.device()) {
            return Err(Error::config(format!(
                "models stacked together must share a shape and a device: {:?} on {:?} and {:?} on {:?}",
                shape(first),
                first.device(),
                shape(other),
                other.device()
            )));
        }
        let parameters = (first.named_parameters())
            .map(|(name, _)| {
                let each: Vec<&Tensor> =
                    models.iter().map(|m| m.parameter(name).expect("one shape, one list")).collect();
                (name.to_string(), Tensor::stack(&each, 0))
            })
            .collect();
        Ok(Stack { cfg: first.cfg.clone(), n: models.len() as i64, parameters })
    }

    /// A stack whose parameters are `f(name)`, each `[model, …]`, in this stack's order.
    pub fn with_parameters(&self, mut f: impl FnMut(&str, &Tensor) -> Tensor) -> Stack {
        let parameters = self.parameters.iter().map(|(name, t)| (name.clone(), f(name, t))).collect();
        Stack { cfg: self.cfg.clone(), n: self.n, parameters }
    }

    /// Every parameter `[model, …]`, in TransformerLens's `named_parameters` order.
    pub fn named_parameters(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.parameters.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// The stacked parameter of that TransformerLens name (`blocks.0.attn.W_Q`).
    pub fn get(&self, name: &str) -> &Tensor {
        self.parameters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t)
            .unwrap_or_else(|| panic!("a one-layer model has no parameter `{name}`"))
    }

    /// Model i, its own copy of its parameters.
    pub fn model(&self, i: i64) -> HookedTransformer {
        let state: Vec<(String, Tensor)> = self.parameters.iter().map(|(n, t)| (n.clone(), t.get(i))).collect();
        HookedTransformer::from_state_dict(&self.cfg, &state, self.device())
            .expect("a stack's own parameters fit its config")
    }

    pub fn device(&self) -> Device {
        self.get("embed.W_E").device()
    }
}

/// The summed rows of the tables, and how wide they are (see the module's diagram).
pub(crate) enum Rows {
    /// Rows carry their products with W_in and W_U: `[d_mlp + d_vocab_out + d_model]`
    /// wide; inputs that need no resid_mid read only the first d_mlp + d_vocab_out.
    Wide { rows: Tensor },
    /// `[d_model]` wide: inputs multiply their resid_mid by W_in and W_U instead.
    Narrow { rows: Tensor },
}

/// The tokens that inputs end in, the only queries the score table is built for (for
/// the seed's inputs `a b =`, one: `=`), and where each token of the vocabulary is
/// among them.
pub(crate) struct Queries {
    /// `[queries]`, ascending.
    pub tokens: Tensor,
    /// `[d_vocab]`: each query token's place in `tokens` (0 for the others, never read).
    place: Tensor,
}

impl Queries {
    /// The last tokens of `tokens` `[model, batch, pos]`, every model's.
    pub fn of(tokens: &Tensor, d_vocab: i64) -> Queries {
        let (last, _) = tokens.select(2, -1).flatten(0, 1).internal_unique(true, false);
        let places = Tensor::arange(last.size()[0], (Kind::Int64, tokens.device()));
        let place = Tensor::zeros([d_vocab], (Kind::Int64, tokens.device())).index_copy(0, &last, &places);
        Queries { tokens: last, place }
    }
}

/// The tables of a stack, each tensor with a leading model axis.
pub(crate) struct Tables {
    /// Every (position, token) embedding: `[model, pos, vocab, d_model]`.
    pub x: Tensor,
    /// The tokens of the queries (`Queries::tokens`): `[queries]`.
    pub query_tokens: Tensor,
    /// Their queries at the last position: `[model, queries, head·d_head]`.
    pub q: Tensor,
    /// Key and value of every (position, token): `[model, pos·vocab, 2·head·d_head]`,
    /// keys first.
    pub kv: Tensor,
    /// Attention score of (position, key token) for each query:
    /// `[model, pos, key token, query, head]`.
    scores: Tensor,
    rows: Rows,
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
    /// Row of each input's scores in the score table, per head: `[model, batch, pos]`.
    pub score_rows: Tensor,
    /// The last position's attention pattern: `[model, batch, pos, head]`.
    pub pattern: Tensor,
    /// MLP activations: `[model, batch, d_mlp]`.
    pub post: Tensor,
    /// What the activation's derivative is evaluated at: the MLP input for GELU; for
    /// ReLU the activations themselves (positive exactly where the input is), which
    /// overwrite the input.
    pub derivative_at: Tensor,
    /// `[model, batch, d_vocab_out]`; from wide rows on the CPU, the sums' logit
    /// columns (rows spaced wider than they are long).
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
    /// Row of each input's (model, position, key token, query) in the score table,
    /// per head: `[model, batch, pos]`.
    score_rows: Tensor,
    /// Each input's scores in the flat score table: `[model, batch, head, pos]`.
    score_index: Tensor,
    /// The rows each input sums: head·(pos − 1) pattern-weighted ones, then its base row.
    bag_rows: Tensor,
    offsets: Tensor,
    /// The base row's weight, 1: `[model · batch, 1]`.
    ones: Tensor,
}

impl Lookup {
    /// `tokens` end in tokens of `queries`.
    pub fn new(cfg: &ModelConfig, tokens: &Tensor, queries: &Queries) -> Lookup {
        let (n, batch, n_pos) = tokens.size3().expect("tokens are [model, batch, pos]");
        let (n_heads, n_vocab) = (cfg.n_heads, cfg.d_vocab);
        let device = tokens.device();
        let model = Tensor::arange(n, (Kind::Int64, device)).view([n, 1]);
        let t_last = tokens.select(2, n_pos - 1);
        let key_rows = (model.unsqueeze(2) * n_pos + Tensor::arange(n_pos, (Kind::Int64, device))) * n_vocab + tokens;
        let last_rows = &model * n_vocab + &t_last;
        // Each input's query: its last token's place among the queries.
        let (n_queries, query) =
            (queries.tokens.size()[0], queries.place.index_select(0, &t_last.flatten(0, 1)).view([n, batch]));
        let score_rows = &key_rows * n_queries + query.unsqueeze(2);
        let heads = Tensor::arange(n_heads, (Kind::Int64, device)).view([n_heads, 1]);
        let score_index = score_rows.unsqueeze(2) * n_heads + &heads;
        // [model, batch, head, position < last]: the difference rows (the module's diagram).
        let lower = n_pos - 1;
        let token_rows = Tensor::arange(lower, (Kind::Int64, device)) * n_vocab + tokens.narrow(2, 0, lower);
        let block = (model.view([n, 1, 1, 1]) * n_heads + heads.view([1, 1, n_heads, 1])) * n_queries
            + query.view([n, batch, 1, 1]);
        let difference_rows = block * (lower * n_vocab) + token_rows.unsqueeze(2);
        let base_rows = &model * n_queries + &query + n * n_heads * n_queries * lower * n_vocab;
        let bag_rows = Tensor::cat(&[difference_rows.reshape([n, batch, -1]), base_rows.unsqueeze(2)], 2).flatten(0, 2);
        let offsets = Tensor::arange(n * batch, (Kind::Int64, device)) * (n_heads * lower + 1);
        let ones = Tensor::ones([n * batch, 1], (Kind::Float, device));
        Lookup { key_rows, last_rows, score_rows, score_index, bag_rows, offsets, ones }
    }
}

/// Inputs per piece when a batch is read from the tables in pieces on the CPU
/// (BENCHMARKS.md has the measurements behind it).
const CHUNK: i64 = 3072;

/// Where to cut `len` inputs into pieces on `device`: on the CPU in even pieces of at
/// most [`CHUNK`] (the gathers and the logits' product then stay in cache), elsewhere
/// in one piece (fewer kernel launches).
pub(crate) fn pieces(len: i64, device: Device) -> Vec<(i64, i64)> {
    let count = if device == Device::Cpu { (len + CHUNK - 1) / CHUNK } else { 1 };
    let step = ((len + count - 1) / count.max(1)).max(1);
    (0..len).step_by(step as usize).map(|start| (start, step.min(len - start))).collect()
}

/// Whether tables on `device` should be [`Rows::Wide`]: on the CPU, where summing 9
/// wide rows costs less than the products; on a GPU the products are the cheap part.
pub(crate) fn wide_tables(device: Device) -> bool {
    device == Device::Cpu
}

/// Zero columns after the logits' in wide rows, so that the summed width without
/// resid_mid, and with it, is a whole number of 16-float (64-byte) vectors.
fn wide_padding(cfg: &ModelConfig) -> i64 {
    (16 - (cfg.d_mlp + cfg.d_vocab_out) % 16) % 16
}

/// The summed rows (the module's diagram), wide or narrow, from the values of every
/// (position, token) `v` `[model·head, pos·vocab, d_head]`, those of the last position's
/// query tokens `v_query` `[model·head, queries, d_head]`, and each query token's own
/// x + b_O, `base` `[model, queries, d_model]`. A value's row is its product with W_O,
/// and in wide rows with W_O·W_in and W_O·W_U too (products d_head long, not d_model),
/// each head's written in place by one product.
fn summed_rows(
    cfg: &ModelConfig,
    wide: bool,
    [v, v_query, base]: [&Tensor; 3],
    [w_o, w_in, w_u]: [&Tensor; 3],
    [b_in, logit_bias]: [&Tensor; 2],
) -> Tensor {
    let (nh, _, e) = v.size3().expect("values are [model·head, pos·vocab, d_head]");
    let (n, n_queries, d_model) = (base.size()[0], base.size()[1], cfg.d_model);
    let (before_last, n_heads) = (v.size()[1] - cfg.d_vocab, nh / n); // (position, token) pairs before the last
    let w_in_u = wide.then(|| Tensor::cat(&[w_in, w_u], 2)); // [model, d_model, d_mlp + d_vocab_out]
    let products = w_in_u.as_ref().map_or(0, |w| w.size()[2]);
    let width = if wide { products + wide_padding(cfg) + d_model } else { d_model };
    let w_o_heads = w_o.reshape([nh, e, d_model]);
    let w_o_in_u = w_in_u.as_ref().map(|w| w_o.reshape([n, -1, d_model]).bmm(w).view([nh, e, products]));
    // `out` [model·head, rows, width] ← the rows of values `v` [model·head, rows, d_head].
    let fill = |out: &Tensor, v: &Tensor| {
        if let Some(w_o_in_u) = &w_o_in_u {
            product_into(&out.narrow(2, 0, products), v, w_o_in_u);
        }
        product_into(&out.narrow(2, width - d_model, d_model), v, &w_o_heads);
    };
    let device = v.device();
    let (count, bases) = (nh * n_queries * before_last, n * n_queries);
    let rows = Tensor::empty([count + bases, width], (Kind::Float, device));
    let _ = rows.narrow(1, products, width - products - d_model).zero_();
    // A row is linear in its value: the difference rows are the rows of the values'
    // differences.
    let v_differences = (v.narrow(1, 0, before_last).unsqueeze(1) - v_query.unsqueeze(2)).view([nh, -1, e]);
    fill(&rows.narrow(0, 0, count).view([nh, -1, width]), &v_differences);
    let at_query = Tensor::zeros([nh, n_queries, width], (Kind::Float, device));
    fill(&at_query, v_query);
    // Views taken afresh after each write: where autograd follows, the first write gives
    // `rows` a history that views taken before it do not share.
    let base_rows = || rows.narrow(0, count, bases).view([n, n_queries, width]);
    if let Some(w_in_u) = &w_in_u {
        let bias = Tensor::cat(&[b_in.unsqueeze(1), logit_bias.shallow_clone()], 2);
        let _ = base_rows().narrow(2, 0, products).copy_(&base.bmm(w_in_u).g_add_(&bias));
    }
    let _ = base_rows().narrow(2, width - d_model, d_model).copy_(base);
    let _ = base_rows().g_add_(&at_query.view([n, n_heads, n_queries, width]).sum_dim_intlist(1, false, Kind::Float));
    rows
}

/// `out` ← `a·b` (batched): in place, or where autograd is to follow (which in-place
/// products do not support), by a copy.
fn product_into(out: &Tensor, a: &Tensor, b: &Tensor) {
    if a.requires_grad() || b.requires_grad() {
        out.shallow_clone().copy_(&a.bmm(b));
    } else {
        let _ = a.bmm_out(out, b);
    }
}

/// `[model, h, d, e]` → `[model, d, h·e]`: the per-head projection as one matrix.
pub(crate) fn heads_as_columns(w: &Tensor) -> Tensor {
    let (n, h, d, e) = (w.size()[0], w.size()[1], w.size()[2], w.size()[3]);
    w.permute([0, 2, 1, 3]).reshape([n, d, h * e])
}

impl Stack {
    /// The tables of the stack for inputs of `n_pos` positions ending in `queries`,
    /// wide or narrow.
    pub fn tables(&self, n_pos: i64, queries: &Queries, wide: bool) -> Tables {
        let cfg = &self.cfg;
        let (n_heads, d_head, n_vocab, d_model) = (cfg.n_heads, cfg.d_head, cfg.d_vocab, cfg.d_model);
        let (n, he) = (self.n, n_heads * d_head);
        let p = |name: &str| self.get(name);
        let (W_O, b_O) = (p("blocks.0.attn.W_O"), p("blocks.0.attn.b_O"));
        let (W_in, b_in, W_out, b_out) =
            (p("blocks.0.mlp.W_in"), p("blocks.0.mlp.b_in"), p("blocks.0.mlp.W_out"), p("blocks.0.mlp.b_out"));
        let (W_U, b_U) = (p("unembed.W_U"), p("unembed.b_U"));
        let x = p("embed.W_E").unsqueeze(1) + p("pos_embed.W_pos").narrow(1, 0, n_pos).unsqueeze(2);
        let x_query = x.select(1, n_pos - 1).index_select(1, &queries.tokens); // [model, queries, d_model]
        let n_queries = queries.tokens.size()[0];
        let q = x_query.bmm(&heads_as_columns(p("blocks.0.attn.W_Q"))) + p("blocks.0.attn.b_Q").view([n, 1, he]); // [model, queries, he]
        let w_kv =
            Tensor::cat(&[heads_as_columns(p("blocks.0.attn.W_K")), heads_as_columns(p("blocks.0.attn.W_V"))], 2);
        let b_kv = Tensor::cat(&[p("blocks.0.attn.b_K").view([n, 1, he]), p("blocks.0.attn.b_V").view([n, 1, he])], 2);
        let kv = x.view([n, n_pos * n_vocab, d_model]).bmm(&w_kv) + b_kv; // [model, pos·vocab, 2·he]
        let k = kv.narrow(2, 0, he).reshape([n, n_pos * n_vocab, n_heads, d_head]).permute([0, 2, 1, 3]);
        let q_heads = q.view([n, n_queries, n_heads, d_head]).permute([0, 2, 3, 1]);
        let scores =
            k.reshape([n * n_heads, n_pos * n_vocab, d_head]).bmm(&q_heads.reshape([n * n_heads, d_head, n_queries]))
                / (d_head as f64).sqrt(); // [model·head, pos·vocab, query]
        let scores = scores.view([n, n_heads, n_pos, n_vocab, n_queries]).permute([0, 2, 3, 4, 1]);
        // The values per head, [model·head, pos·vocab, d_head], and the query tokens' at
        // the last position.
        let v_heads = kv.narrow(2, he, he).reshape([n, n_pos * n_vocab, n_heads, d_head]).permute([0, 2, 1, 3]);
        let v_heads = v_heads.reshape([n * n_heads, n_pos * n_vocab, d_head]);
        let v_query = v_heads.narrow(1, (n_pos - 1) * n_vocab, n_vocab).index_select(1, &queries.tokens);
        let resid_base = x_query + b_O.unsqueeze(1); // [model, queries, d_model]
        let logit_bias = b_out.unsqueeze(1).bmm(W_U) + b_U.unsqueeze(1);
        let summed = summed_rows(cfg, wide, [&v_heads, &v_query, &resid_base], [W_O, W_in, W_U], [b_in, &logit_bias]);
        let rows = if wide { Rows::Wide { rows: summed } } else { Rows::Narrow { rows: summed } };
        let query_tokens = queries.tokens.shallow_clone();
        Tables { scores: scores.contiguous(), rows, logit_bias, w_logit: W_out.bmm(W_U), x, query_tokens, q, kv }
    }

    /// Reads the inputs of `lookup` from `tables`; `resid_mid` only when asked for.
    pub fn read_tables(&self, tables: &Tables, lookup: &Lookup, with_resid_mid: bool) -> Read {
        let (n, batch, _) = lookup.key_rows.size3().expect("key rows are [model, batch, pos]");
        let (d_mlp, d_out, d_model) = (self.cfg.d_mlp, self.cfg.d_vocab_out, self.cfg.d_model);
        let relu = self.cfg.act_fn == ActFn::Relu;
        let rows = match &tables.rows {
            Rows::Wide { rows } | Rows::Narrow { rows } => rows,
        };
        let wide = matches!(tables.rows, Rows::Wide { .. });
        // Wide rows carry resid_mid in their last d_model columns: read them only when asked.
        let resid_start = d_mlp + d_out + wide_padding(&self.cfg);
        let width = if wide && !with_resid_mid { resid_start } else { rows.size()[1] };
        // The last query sees every position: softmax over all of them, per head; then
        // each input's rows before the last position weighted by the pattern, and its
        // base row once. On the CPU (wide
        // rows) as one loop per input, ReLU included, unless autograd is to follow.
        let loops = wide && !rows.requires_grad();
        let (pattern, mixed) = if loops {
            let relu_columns = if relu { d_mlp } else { 0 };
            let reads = Reads {
                scores: &tables.scores,
                score_index: &lookup.score_index,
                rows,
                width,
                bag_rows: &lookup.bag_rows,
                relu_columns,
            };
            row_sums(&reads)
        } else {
            let pattern = tables.scores.take(&lookup.score_index).softmax(-1, Kind::Float); // [model, batch, head, pos]
            let before_last = pattern.narrow(3, 0, pattern.size()[3] - 1).reshape([n * batch, -1]);
            let weights = Tensor::cat(&[before_last, lookup.ones.shallow_clone()], 1);
            let (mixed, _, _, _) = Tensor::embedding_bag(
                &rows.narrow(1, 0, width),
                &lookup.bag_rows,
                &lookup.offsets,
                false,
                0, // sum
                false,
                Some(weights.flatten(0, 1)),
                false,
            );
            (pattern, mixed.view([n, batch, width]))
        };
        let (b_in, W_in, W_U) = (self.get("blocks.0.mlp.b_in"), self.get("blocks.0.mlp.W_in"), self.get("unembed.W_U"));
        let (mut pre, resid_mid) = if wide {
            (mixed.narrow(2, 0, d_mlp), with_resid_mid.then(|| mixed.narrow(2, resid_start, d_model)))
        } else {
            (b_in.unsqueeze(1).baddbmm(&mixed, W_in, 1, 1), with_resid_mid.then(|| mixed.shallow_clone()))
        };
        let (post, derivative_at) = match self.cfg.act_fn {
            // In place, or done in the loop: the MLP input is a fresh tensor or the sums'
            // own columns, and nothing else reads it. The derivative reads the
            // activations, positive exactly where the input is.
            ActFn::Relu => {
                let post = if loops { pre } else { pre.relu_() };
                (post.shallow_clone(), post)
            }
            ActFn::Gelu => (act(ActFn::Gelu, &pre), pre),
        };
        let logits = if loops {
            // In place in the sums' logit columns, which nothing else reads: no copy of
            // them into a new tensor first (what `baddbmm` does), the same product.
            mixed.narrow(2, d_mlp, d_out).baddbmm_(&post, &tables.w_logit)
        } else if wide {
            mixed.narrow(2, d_mlp, d_out).baddbmm(&post, &tables.w_logit, 1, 1)
        } else {
            tables.logit_bias.baddbmm(&mixed, W_U, 1, 1).baddbmm(&post, &tables.w_logit, 1, 1)
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
}

/// What the last position computes, for a batch of inputs.
pub struct LastPosition {
    /// `blocks.0.hook_resid_mid` at the last position: `[batch, d_model]`.
    pub resid_mid: Tensor,
    /// `blocks.0.mlp.hook_post` at the last position: `[batch, d_mlp]`.
    pub mlp_post: Tensor,
    /// `[batch, d_vocab_out]`.
    pub logits: Tensor,
}

/// The last position of a one-layer `model` for inputs `[batch, pos]`: the same
/// numbers as its forward pass at that position, from the tables (any depth: through
/// the forward pass).
pub fn last_position(model: &HookedTransformer, tokens: &Tensor) -> Result<LastPosition> {
    model.check_tokens(tokens)?;
    if model.cfg.n_layers != 1 {
        let (logits, cache) = model.run_with_cache(tokens)?;
        let last = |name: &str| cache.require(name).map(|t| t.select(1, -1));
        let layer = model.cfg.n_layers - 1;
        return Ok(LastPosition {
            resid_mid: last(&format!("blocks.{layer}.hook_resid_mid"))?,
            mlp_post: last(&format!("blocks.{layer}.mlp.hook_post"))?,
            logits: logits.select(1, -1),
        });
    }
    let (logits, mlp_post, resid_mid) = read_all(model, tokens, true)?;
    Ok(LastPosition { resid_mid: resid_mid.expect("asked for"), mlp_post, logits })
}

/// The logits at the last position, `[batch, d_vocab_out]`: what the seed's loss
/// reads, the same numbers as `forward(tokens)` at that position.
pub fn last_logits(model: &HookedTransformer, tokens: &Tensor) -> Result<Tensor> {
    if model.cfg.n_layers != 1 {
        return Ok(model.forward(tokens)?.select(1, -1));
    }
    model.check_tokens(tokens)?;
    Ok(read_all(model, tokens, false)?.0)
}

/// Logits, MLP activations and (when asked for) resid_mid at the last position of a
/// one-layer model, read from its tables in pieces.
fn read_all(
    model: &HookedTransformer,
    tokens: &Tensor,
    with_resid_mid: bool,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let stack = Stack::new(&[model])?;
    let tokens = tokens.unsqueeze(0);
    let queries = Queries::of(&tokens, stack.cfg.d_vocab);
    if queries.tokens.size()[0] > 1 {
        return read_by_query(model, &tokens.squeeze_dim(0), &queries.tokens, with_resid_mid);
    }
    let tables = stack.tables(tokens.size()[2], &queries, wide_tables(tokens.device()));
    let reads: Vec<Read> = pieces(tokens.size()[1], tokens.device())
        .into_iter()
        .map(|(start, len)| {
            let lookup = Lookup::new(&stack.cfg, &tokens.narrow(1, start, len), &queries);
            stack.read_tables(&tables, &lookup, with_resid_mid)
        })
        .collect();
    let cat = |f: &dyn Fn(&Read) -> &Tensor| Tensor::cat(&reads.iter().map(f).collect::<Vec<_>>(), 1).squeeze_dim(0);
    let resid_mid = with_resid_mid.then(|| cat(&|r| r.resid_mid.as_ref().expect("asked for")));
    Ok((cat(&|r| &r.logits), cat(&|r| &r.post), resid_mid))
}

/// [`read_all`] for inputs that end in different tokens: those ending in each token in
/// turn, so that the tables, which grow with the number of last tokens, are one
/// token's each time.
fn read_by_query(
    model: &HookedTransformer,
    tokens: &Tensor,
    last_tokens: &Tensor,
    with_resid_mid: bool,
) -> Result<(Tensor, Tensor, Option<Tensor>)> {
    let last = tokens.select(1, -1);
    let mut all: Option<(Tensor, Tensor, Option<Tensor>)> = None;
    for token in Vec::<i64>::try_from(last_tokens)? {
        let inputs = last.eq(token).nonzero().squeeze_dim(1);
        let read = read_all(model, &tokens.index_select(0, &inputs), with_resid_mid)?;
        let all = all.get_or_insert_with(|| {
            let empty = |t: &Tensor| t.new_zeros([tokens.size()[0], t.size()[1]], (t.kind(), t.device()));
            (empty(&read.0), empty(&read.1), read.2.as_ref().map(empty))
        });
        let _ = all.0.index_copy_(0, &inputs, &read.0);
        let _ = all.1.index_copy_(0, &inputs, &read.1);
        if let (Some(into), Some(from)) = (&mut all.2, &read.2) {
            let _ = into.index_copy_(0, &inputs, from);
        }
    }
    Ok(all.expect("inputs end in at least one token"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;
    use crate::task::Task;

    /// Inputs that end in different tokens (read one last token at a time) give the plain
    /// forward pass's last position, as the task's inputs, which all end in `=`, do.
    #[test]
    fn inputs_ending_in_different_tokens_match_the_forward_pass() {
        let cfg = RunConfig::for_task(Task::power_sum(11, 4, 4)).model;
        let cfg = ModelConfig { d_model: 16, d_head: 8, n_heads: 2, d_mlp: 32, ..cfg };
        let model = HookedTransformer::new(&cfg, Device::Cpu).unwrap();
        let random = crate::rng::seeded(9, || Tensor::randint(cfg.d_vocab, [60, 3], (Kind::Int64, Device::Cpu)));
        let dataset = Task::power_sum(11, 4, 4).dataset();
        for tokens in [random, dataset] {
            let last = last_position(&model, &tokens).unwrap();
            let (logits, cache) = model.run_with_cache(&tokens).unwrap();
            let gap = |ours: &Tensor, theirs: &Tensor| (ours - theirs.select(1, -1)).abs().max().double_value(&[]);
            assert!(gap(&last.logits, &logits) < 1e-5);
            assert!(gap(&last.mlp_post, &cache[("post", 0)]) < 1e-5);
            assert!(gap(&last.resid_mid, &cache[("resid_mid", 0)]) < 1e-5);
        }
    }
}
