//! TransformerLens's `HookedTransformer`, for the configs this crate trains:
//! no LayerNorm, causal attention, a ReLU (or GELU) MLP, untied embeddings.
//!
//! Weights carry TransformerLens's names and shapes (`W_Q: [n_heads, d_model, d_head]`,
//! weights multiply on the right), so a state dict moves between the two unchanged.
//! The forward pass visits every hook point of TransformerLens's in the same order,
//! under the same name ([`crate::hooks`]).

#![allow(non_snake_case)]

use tch::{Device, Kind, Tensor};

use crate::config::{ActFn, ModelConfig};
use crate::error::{Error, Result};
use crate::hooks::{ActivationCache, BlockHook, HookFn, HookPoint, Hooks, Interventions, NoHooks, Recorder};

/// Token and position embeddings.
pub struct Embed {
    pub W_E: Tensor, // [d_vocab, d_model]
}

pub struct PosEmbed {
    pub W_pos: Tensor, // [n_ctx, d_model]
}

pub struct Attention {
    pub W_Q: Tensor, // [n_heads, d_model, d_head]
    pub W_K: Tensor,
    pub W_V: Tensor,
    pub W_O: Tensor, // [n_heads, d_head, d_model]
    pub b_Q: Tensor, // [n_heads, d_head]
    pub b_K: Tensor,
    pub b_V: Tensor,
    pub b_O: Tensor, // [d_model]
}

pub struct Mlp {
    pub W_in: Tensor,  // [d_model, d_mlp]
    pub b_in: Tensor,  // [d_mlp]
    pub W_out: Tensor, // [d_mlp, d_model]
    pub b_out: Tensor, // [d_model]
}

pub struct Block {
    pub attn: Attention,
    pub mlp: Mlp,
}

pub struct Unembed {
    pub W_U: Tensor, // [d_model, d_vocab_out]
    pub b_U: Tensor, // [d_vocab_out]
}

/// The model. Its fields are handles on the parameters that `named_parameters` lists:
/// read them freely, and make a changed model with [`HookedTransformer::map_parameters`]
/// rather than by assigning a field.
pub struct HookedTransformer {
    pub cfg: ModelConfig,
    pub embed: Embed,
    pub pos_embed: PosEmbed,
    pub blocks: Vec<Block>,
    pub unembed: Unembed,
    /// Every parameter by TransformerLens's name, in its `named_parameters()` order.
    parameters: Vec<(String, Tensor)>,
}

/// What TransformerLens fills masked attention scores with (its `IGNORE` buffer).
pub const IGNORE: f64 = f64::NEG_INFINITY;

impl HookedTransformer {
    /// The parameters of a model of `cfg`, in TransformerLens's `named_parameters()`
    /// order, each with its name and shape: the one list of them. `source(name, shape)`
    /// gives each parameter's tensor.
    fn build(cfg: &ModelConfig, mut source: impl FnMut(&str, &[i64]) -> Result<Tensor>) -> Result<Self> {
        let (h, d, dh, m) = (cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_mlp);
        let mut parameters = Vec::new();
        let mut param = |name: String, shape: &[i64]| -> Result<Tensor> {
            let t = source(&name, shape)?;
            parameters.push((name, t.shallow_clone()));
            Ok(t)
        };
        let embed = Embed { W_E: param("embed.W_E".into(), &[cfg.d_vocab, d])? };
        let pos_embed = PosEmbed { W_pos: param("pos_embed.W_pos".into(), &[cfg.n_ctx, d])? };
        let mut blocks = Vec::new();
        for i in 0..cfg.n_layers {
            let mut at = |leaf: &str, shape: &[i64]| param(format!("blocks.{i}.{leaf}"), shape);
            let (W_Q, W_O) = (at("attn.W_Q", &[h, d, dh])?, at("attn.W_O", &[h, dh, d])?);
            let (b_Q, b_O) = (at("attn.b_Q", &[h, dh])?, at("attn.b_O", &[d])?);
            let (W_K, W_V) = (at("attn.W_K", &[h, d, dh])?, at("attn.W_V", &[h, d, dh])?);
            let (b_K, b_V) = (at("attn.b_K", &[h, dh])?, at("attn.b_V", &[h, dh])?);
            let attn = Attention { W_Q, W_K, W_V, W_O, b_Q, b_K, b_V, b_O };
            let (W_in, b_in) = (at("mlp.W_in", &[d, m])?, at("mlp.b_in", &[m])?);
            let (W_out, b_out) = (at("mlp.W_out", &[m, d])?, at("mlp.b_out", &[d])?);
            blocks.push(Block { attn, mlp: Mlp { W_in, b_in, W_out, b_out } });
        }
        let unembed = Unembed {
            W_U: param("unembed.W_U".into(), &[d, cfg.d_vocab_out])?,
            b_U: param("unembed.b_U".into(), &[cfg.d_vocab_out])?,
        };
        Ok(HookedTransformer { cfg: cfg.clone(), embed, pos_embed, blocks, unembed, parameters })
    }

    /// A model initialised as TransformerLens does for this config: every `W_*`
    /// drawn from N(0, initializer_range²) in `named_parameters` order after
    /// `torch.manual_seed(cfg.seed)`, biases zero. Drawn on the CPU, so the
    /// weights are the same whatever the device.
    pub fn new(cfg: &ModelConfig, device: Device) -> Result<Self> {
        cfg.validate()?;
        let std = cfg.initializer_range();
        let model = crate::rng::seeded(cfg.seed, || {
            tch::no_grad(|| {
                Self::build(cfg, |name, shape| {
                    let mut t = Tensor::zeros(shape, (Kind::Float, Device::Cpu));
                    if is_weight_name(name) {
                        let _ = t.normal_(0.0, std);
                    }
                    Ok(t)
                })
            })
        })?;
        Ok(if device == Device::Cpu { model } else { model.to_device(device) })
    }

    /// A model whose weights come from a state dict with TransformerLens's names.
    /// Every parameter must be present with its exact shape; the `mask` and
    /// `IGNORE` buffers may be present or not; anything else is an error.
    pub fn from_state_dict(cfg: &ModelConfig, state: &[(String, Tensor)], device: Device) -> Result<Self> {
        cfg.validate()?;
        let model = tch::no_grad(|| {
            Self::build(cfg, |name, shape| {
                let (_, source) = (state.iter().find(|(n, _)| n == name))
                    .ok_or_else(|| Error::format(format!("missing tensor `{name}`")))?;
                if source.size() != shape {
                    return Err(Error::format(format!(
                        "tensor `{name}` has shape {:?}, expected {shape:?}",
                        source.size()
                    )));
                }
                if !source.is_floating_point() {
                    return Err(Error::format(format!(
                        "tensor `{name}` is {:?}, expected floating point",
                        source.kind()
                    )));
                }
                Ok(source.to_kind(Kind::Float).to_device(Device::Cpu).copy())
            })
        })?;
        if let Some((name, _)) =
            state.iter().find(|(n, _)| model.parameter(n).is_none() && !is_buffer_name(n, cfg.n_layers))
        {
            return Err(Error::format(format!("unexpected tensor `{name}` (not a parameter of this model)")));
        }
        Ok(if device == Device::Cpu { model } else { model.to_device(device) })
    }

    /// The same model on `device`.
    pub fn to_device(&self, device: Device) -> Self {
        self.map_parameters(|_, t| t.to_device(device))
    }

    /// The same weights, shared: a second handle on this model's tensors.
    pub fn shallow_clone(&self) -> Self {
        self.map_parameters(|_, t| t.shallow_clone())
    }

    pub fn device(&self) -> Device {
        self.embed.W_E.device()
    }

    /// A model whose every parameter is `f(name, parameter)`, of the same shape.
    pub fn map_parameters(&self, mut f: impl FnMut(&str, &Tensor) -> Tensor) -> Self {
        Self::build(&self.cfg, |name, _| {
            Ok(f(name, self.parameter(name).expect("the same config lists the same names")))
        })
        .expect("mapping never fails")
    }

    /// The parameter of that name, if the model has one.
    pub fn parameter(&self, name: &str) -> Option<&Tensor> {
        self.parameters.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Every parameter in TransformerLens's `named_parameters()` order.
    pub fn named_parameters(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.parameters.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// The weights the optimizer updates: every `W_*`, in `named_parameters` order.
    /// Biases stay frozen at their initial zeros, as the seed sets `requires_grad =
    /// False` on them.
    pub fn trainable_parameters(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.named_parameters().filter(|(name, _)| is_weight_name(name))
    }

    /// A copy of the weights as fresh leaves, the trainable ones (every `W_*`)
    /// tracking gradients.
    pub fn trainable_copy(&self) -> Self {
        self.map_parameters(|name, t| t.detach().copy().set_requires_grad(is_weight_name(name)))
    }

    /// TransformerLens's `state_dict()`: the parameters plus each block's `mask`
    /// and `IGNORE` buffers, on the CPU, detached copies.
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> =
            self.named_parameters().map(|(n, t)| (n.to_string(), t.detach().to_device(Device::Cpu).copy())).collect();
        for i in 0..self.cfg.n_layers {
            let n = self.cfg.n_ctx;
            out.push((format!("blocks.{i}.attn.mask"), Tensor::ones([n, n], (Kind::Bool, Device::Cpu)).tril(0)));
            out.push((format!("blocks.{i}.attn.IGNORE"), Tensor::from(IGNORE as f32)));
        }
        out
    }

    /// Every hook point of this model, in the order the forward pass visits them.
    pub fn hook_points(&self) -> Vec<HookPoint> {
        HookPoint::all(self.cfg.n_layers as usize)
    }

    /// Fails unless `tokens` is `[batch, pos]` int64 with 1 ≤ pos ≤ n_ctx and every
    /// token in the vocabulary.
    pub fn check_tokens(&self, tokens: &Tensor) -> Result<()> {
        let size = tokens.size();
        if tokens.kind() != Kind::Int64 || size.len() != 2 || size[1] < 1 || size[1] > self.cfg.n_ctx {
            return Err(Error::config(format!(
                "tokens must be [batch, pos] int64 with 1 ≤ pos ≤ n_ctx = {}, got {:?} {:?}",
                self.cfg.n_ctx,
                tokens.kind(),
                size
            )));
        }
        if tokens.numel() > 0 {
            let (lo, hi) = (tokens.min().int64_value(&[]), tokens.max().int64_value(&[]));
            if lo < 0 || hi >= self.cfg.d_vocab {
                let bad = if lo < 0 { lo } else { hi };
                return Err(Error::config(format!("token {bad} is outside the vocabulary 0..{}", self.cfg.d_vocab)));
            }
        }
        Ok(())
    }

    /// Logits at every position: `[batch, pos, d_vocab_out]`.
    pub fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        self.forward_with(tokens, &mut NoHooks)
    }

    /// Logits and every activation, as TransformerLens's `run_with_cache`. Runs
    /// without gradients.
    pub fn run_with_cache(&self, tokens: &Tensor) -> Result<(Tensor, ActivationCache)> {
        let mut recorder = Recorder::default();
        let logits = tch::no_grad(|| self.forward_with(tokens, &mut recorder))?;
        Ok((logits, recorder.into_cache()))
    }

    /// Logits with hook functions applied at the named hook points (full names or
    /// TransformerLens's short ones, `("pattern", 0)` as `"blocks.0.attn.hook_pattern"`),
    /// in the order given.
    ///
    /// ```ignore
    /// // Zero-ablate head 0:
    /// let logits = model.run_with_hooks(&tokens, &mut [("blocks.0.attn.hook_pattern", &mut |p: &Tensor| {
    ///     let p = p.copy();
    ///     let _ = p.narrow(1, 0, 1).fill_(0.0);
    ///     Some(p)
    /// })])?;
    /// ```
    pub fn run_with_hooks(&self, tokens: &Tensor, hooks: &mut [(&str, HookFn<'_>)]) -> Result<Tensor> {
        let points = self.hook_points();
        let mut at = Vec::new();
        for (name, f) in hooks.iter_mut() {
            let point: HookPoint = name.parse()?;
            if !points.contains(&point) {
                return Err(Error::config(format!("{point} is past this model's {} layer(s)", self.cfg.n_layers)));
            }
            at.push((point, f));
        }
        self.forward_with(tokens, &mut Interventions { hooks: at })
    }

    /// The forward pass, visiting every hook point in TransformerLens's order.
    pub fn forward_with(&self, tokens: &Tensor, hooks: &mut dyn Hooks) -> Result<Tensor> {
        self.check_tokens(tokens)?;
        let n_pos = tokens.size()[1];
        let embed = self.embed.W_E.index_select(0, &tokens.flatten(0, 1)).view([-1, n_pos, self.cfg.d_model]);
        let embed = hooks.visit(HookPoint::Embed, embed);
        let pos = self.pos_embed.W_pos.narrow(0, 0, n_pos).unsqueeze(0).expand_as(&embed);
        let pos = hooks.visit(HookPoint::PosEmbed, pos);
        let mut resid = embed + pos; // [batch, pos, d_model]
        for (i, block) in self.blocks.iter().enumerate() {
            resid = self.block_forward(i, block, resid, hooks);
        }
        Ok(resid.matmul(&self.unembed.W_U) + &self.unembed.b_U)
    }

    fn block_forward(&self, i: usize, block: &Block, resid: Tensor, hooks: &mut dyn Hooks) -> Tensor {
        let mut visit = |hook, t| hooks.visit(HookPoint::Block(i, hook), t);
        let a = &block.attn;
        let resid_pre = visit(BlockHook::ResidPre, resid);
        let q = visit(BlockHook::Q, project(&resid_pre, &a.W_Q, &a.b_Q)); // [batch, pos, head, d_head]
        let k = visit(BlockHook::K, project(&resid_pre, &a.W_K, &a.b_K));
        let v = visit(BlockHook::V, project(&resid_pre, &a.W_V, &a.b_V));
        let n_pos = q.size()[1];
        let scores = q.permute([0, 2, 1, 3]).matmul(&k.permute([0, 2, 3, 1])) / (self.cfg.d_head as f64).sqrt();
        let future = Tensor::ones([n_pos, n_pos], (Kind::Bool, scores.device())).triu(1);
        let scores = visit(BlockHook::AttnScores, scores.masked_fill(&future, IGNORE)); // [batch, head, q_pos, k_pos]
        let pattern = visit(BlockHook::Pattern, scores.softmax(-1, Kind::Float));
        let z = visit(BlockHook::Z, pattern.matmul(&v.permute([0, 2, 1, 3])).permute([0, 2, 1, 3])); // [batch, pos, head, d_head]
        let (h, dh, d) = (self.cfg.n_heads, self.cfg.d_head, self.cfg.d_model);
        let attn_out = visit(BlockHook::AttnOut, z.flatten(2, 3).matmul(&a.W_O.reshape([h * dh, d])) + &a.b_O);
        let resid_mid = visit(BlockHook::ResidMid, resid_pre + attn_out);
        let m = &block.mlp;
        let pre = visit(BlockHook::Pre, resid_mid.matmul(&m.W_in) + &m.b_in);
        let post = visit(BlockHook::Post, act(self.cfg.act_fn, &pre));
        let mlp_out = visit(BlockHook::MlpOut, post.matmul(&m.W_out) + &m.b_out);
        visit(BlockHook::ResidPost, resid_mid + mlp_out)
    }
}

/// The MLP's activation function.
pub(crate) fn act(act_fn: ActFn, pre: &Tensor) -> Tensor {
    match act_fn {
        ActFn::Relu => pre.relu(),
        ActFn::Gelu => pre.gelu("none"),
    }
}

/// `x · W + b` per head: `[..., d_model]` → `[..., head, d_head]`, one matmul for all heads.
fn project(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
    let (h, d, dh) = (w.size()[0], w.size()[1], w.size()[2]);
    let mut shape = x.size();
    shape.pop();
    shape.extend([h, dh]);
    x.matmul(&w.permute([1, 0, 2]).reshape([d, h * dh])).view(shape.as_slice()) + b
}

/// Whether a parameter is a weight (`W_*`, trained) rather than a bias (`b_*`, frozen).
pub(crate) fn is_weight_name(name: &str) -> bool {
    name.rsplit('.').next().is_some_and(|leaf| leaf.starts_with("W_"))
}

fn is_buffer_name(name: &str, n_layers: i64) -> bool {
    (0..n_layers).any(|i| name == format!("blocks.{i}.attn.mask") || name == format!("blocks.{i}.attn.IGNORE"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Task;

    /// `build`'s fields and names agree: each field is the tensor listed under its name.
    #[test]
    fn fields_are_the_parameters_listed_under_their_names() {
        let cfg = ModelConfig { n_layers: 2, ..ModelConfig::for_task(&Task::power_sum(7, 1, 1)) };
        let mut next = 0.0;
        let model = HookedTransformer::build(&cfg, |_, shape| {
            next += 1.0;
            Ok(Tensor::full(shape, next, (Kind::Float, Device::Cpu)))
        })
        .unwrap();
        let (a, m) = (&model.blocks[1].attn, &model.blocks[1].mlp);
        for (name, field) in [
            ("embed.W_E", &model.embed.W_E),
            ("pos_embed.W_pos", &model.pos_embed.W_pos),
            ("blocks.1.attn.W_Q", &a.W_Q),
            ("blocks.1.attn.W_K", &a.W_K),
            ("blocks.1.attn.W_V", &a.W_V),
            ("blocks.1.attn.W_O", &a.W_O),
            ("blocks.1.attn.b_Q", &a.b_Q),
            ("blocks.1.attn.b_K", &a.b_K),
            ("blocks.1.attn.b_V", &a.b_V),
            ("blocks.1.attn.b_O", &a.b_O),
            ("blocks.1.mlp.W_in", &m.W_in),
            ("blocks.1.mlp.b_in", &m.b_in),
            ("blocks.1.mlp.W_out", &m.W_out),
            ("blocks.1.mlp.b_out", &m.b_out),
            ("unembed.W_U", &model.unembed.W_U),
            ("unembed.b_U", &model.unembed.b_U),
        ] {
            assert!(model.parameter(name).unwrap().equal(field), "{name}");
        }
        assert_eq!(model.named_parameters().count(), 4 + 2 * 12);
    }
}
