//! TransformerLens's `HookedTransformer`, for the configs this crate trains:
//! no LayerNorm, causal attention, a ReLU (or GELU) MLP, untied embeddings.
//!
//! Weights carry TransformerLens's names and shapes (`W_Q: [n_heads, d_model, d_head]`,
//! weights multiply on the right), so a state dict moves between the two unchanged.
//! Every hook point of TransformerLens's forward pass is visited in the same order,
//! under the same name; see [`crate::hooks`] for caching and intervening.

#![allow(non_snake_case)]

use tch::{Device, Kind, Tensor};

use crate::config::{ActFn, ModelConfig};
use crate::error::{Error, Result};
use crate::hooks::Hooks;

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

pub struct HookedTransformer {
    pub cfg: ModelConfig,
    pub embed: Embed,
    pub pos_embed: PosEmbed,
    pub blocks: Vec<Block>,
    pub unembed: Unembed,
}

/// What TransformerLens fills masked attention scores with (its `IGNORE` buffer).
pub const IGNORE: f64 = f64::NEG_INFINITY;

impl HookedTransformer {
    /// A model initialised as TransformerLens does for this config: every `W_*`
    /// drawn from N(0, initializer_range²) in `named_parameters` order after
    /// `torch.manual_seed(cfg.seed)`, biases zero. Drawn on the CPU, so the
    /// weights are the same whatever the device.
    pub fn new(cfg: &ModelConfig, device: Device) -> Result<Self> {
        cfg.validate()?;
        let model = Self::zeros(cfg);
        tch::manual_seed(cfg.seed);
        let std = cfg.initializer_range();
        tch::no_grad(|| {
            for (name, tensor) in model.named_parameters() {
                if is_weight_name(&name) {
                    let mut t = tensor.shallow_clone();
                    let _ = t.normal_(0.0, std);
                }
            }
        });
        Ok(if device == Device::Cpu { model } else { model.to_device(device) })
    }

    /// A model of this shape with every weight zero, on the CPU.
    fn zeros(cfg: &ModelConfig) -> Self {
        let z = |shape: &[i64]| Tensor::zeros(shape, (Kind::Float, Device::Cpu));
        let (h, d, dh, m) = (cfg.n_heads, cfg.d_model, cfg.d_head, cfg.d_mlp);
        HookedTransformer {
            cfg: cfg.clone(),
            embed: Embed { W_E: z(&[cfg.d_vocab, d]) },
            pos_embed: PosEmbed { W_pos: z(&[cfg.n_ctx, d]) },
            blocks: (0..cfg.n_layers)
                .map(|_| Block {
                    attn: Attention {
                        W_Q: z(&[h, d, dh]),
                        W_K: z(&[h, d, dh]),
                        W_V: z(&[h, d, dh]),
                        W_O: z(&[h, dh, d]),
                        b_Q: z(&[h, dh]),
                        b_K: z(&[h, dh]),
                        b_V: z(&[h, dh]),
                        b_O: z(&[d]),
                    },
                    mlp: Mlp { W_in: z(&[d, m]), b_in: z(&[m]), W_out: z(&[m, d]), b_out: z(&[d]) },
                })
                .collect(),
            unembed: Unembed { W_U: z(&[d, cfg.d_vocab_out]), b_U: z(&[cfg.d_vocab_out]) },
        }
    }

    /// A model whose weights come from a state dict with TransformerLens's names.
    /// Every parameter must be present with its exact shape; the `mask` and
    /// `IGNORE` buffers may be present or not; anything else is an error.
    pub fn from_state_dict(cfg: &ModelConfig, state: &[(String, Tensor)], device: Device) -> Result<Self> {
        cfg.validate()?;
        let model = Self::zeros(cfg);
        let params = model.named_parameters();
        for (name, _) in state {
            let known = params.iter().any(|(n, _)| n == name) || is_buffer_name(name, cfg.n_layers);
            if !known {
                return Err(Error::format(format!("unexpected tensor `{name}` (not a parameter of this model)")));
            }
        }
        tch::no_grad(|| -> Result<()> {
            for (name, target) in &params {
                let (_, source) = state
                    .iter()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| Error::format(format!("missing tensor `{name}`")))?;
                if source.size() != target.size() {
                    return Err(Error::format(format!(
                        "tensor `{name}` has shape {:?}, expected {:?}",
                        source.size(),
                        target.size()
                    )));
                }
                if !source.is_floating_point() {
                    return Err(Error::format(format!(
                        "tensor `{name}` is {:?}, expected floating point",
                        source.kind()
                    )));
                }
                target.shallow_clone().copy_(source);
            }
            Ok(())
        })?;
        Ok(if device == Device::Cpu { model } else { model.to_device(device) })
    }

    /// Models of one shape stacked on a leading model axis (every weight `[model, …]`),
    /// the form [`crate::train::Trainer`] trains several runs in.
    pub fn stack(models: &[&HookedTransformer]) -> Self {
        let params: Vec<Vec<(String, &Tensor)>> = models.iter().map(|m| m.named_parameters()).collect();
        let named = |params: &[(String, &Tensor)], name: &str| {
            params.iter().find(|(n, _)| n == name).map(|(_, t)| t.shallow_clone())
        };
        models[0].map_parameters(|name, _| {
            Tensor::stack(&params.iter().filter_map(|p| named(p, name)).collect::<Vec<_>>(), 0)
        })
    }

    /// The same weights, shared: a second handle on this model's tensors.
    pub fn shallow_clone(&self) -> Self {
        self.map_parameters(|_, t| t.shallow_clone())
    }

    /// The same model on `device`.
    pub fn to_device(&self, device: Device) -> Self {
        self.map_parameters(|_, t| t.to_device(device))
    }

    pub fn device(&self) -> Device {
        self.embed.W_E.device()
    }

    /// A model whose every parameter is `f(name, parameter)`.
    pub fn map_parameters(&self, mut f: impl FnMut(&str, &Tensor) -> Tensor) -> Self {
        let mut f = |name: String, t: &Tensor| f(&name, t);
        HookedTransformer {
            cfg: self.cfg.clone(),
            embed: Embed { W_E: f("embed.W_E".into(), &self.embed.W_E) },
            pos_embed: PosEmbed { W_pos: f("pos_embed.W_pos".into(), &self.pos_embed.W_pos) },
            blocks: (self.blocks.iter().enumerate())
                .map(|(i, b)| {
                    let (a, m) = (&b.attn, &b.mlp);
                    let mut at = |leaf: &str, t: &Tensor| f(format!("blocks.{i}.attn.{leaf}"), t);
                    let attn = Attention {
                        W_Q: at("W_Q", &a.W_Q),
                        W_O: at("W_O", &a.W_O),
                        b_Q: at("b_Q", &a.b_Q),
                        b_O: at("b_O", &a.b_O),
                        W_K: at("W_K", &a.W_K),
                        W_V: at("W_V", &a.W_V),
                        b_K: at("b_K", &a.b_K),
                        b_V: at("b_V", &a.b_V),
                    };
                    let mut ml = |leaf: &str, t: &Tensor| f(format!("blocks.{i}.mlp.{leaf}"), t);
                    let mlp = Mlp {
                        W_in: ml("W_in", &m.W_in),
                        b_in: ml("b_in", &m.b_in),
                        W_out: ml("W_out", &m.W_out),
                        b_out: ml("b_out", &m.b_out),
                    };
                    Block { attn, mlp }
                })
                .collect(),
            unembed: Unembed {
                W_U: f("unembed.W_U".into(), &self.unembed.W_U),
                b_U: f("unembed.b_U".into(), &self.unembed.b_U),
            },
        }
    }

    /// Every parameter in TransformerLens's `named_parameters()` order.
    pub fn named_parameters(&self) -> Vec<(String, &Tensor)> {
        let mut out =
            vec![("embed.W_E".to_string(), &self.embed.W_E), ("pos_embed.W_pos".to_string(), &self.pos_embed.W_pos)];
        for (i, b) in self.blocks.iter().enumerate() {
            let a = &b.attn;
            for (leaf, t) in [
                ("W_Q", &a.W_Q),
                ("W_O", &a.W_O),
                ("b_Q", &a.b_Q),
                ("b_O", &a.b_O),
                ("W_K", &a.W_K),
                ("W_V", &a.W_V),
                ("b_K", &a.b_K),
                ("b_V", &a.b_V),
            ] {
                out.push((format!("blocks.{i}.attn.{leaf}"), t));
            }
            let m = &b.mlp;
            for (leaf, t) in [("W_in", &m.W_in), ("b_in", &m.b_in), ("W_out", &m.W_out), ("b_out", &m.b_out)] {
                out.push((format!("blocks.{i}.mlp.{leaf}"), t));
            }
        }
        out.push(("unembed.W_U".to_string(), &self.unembed.W_U));
        out.push(("unembed.b_U".to_string(), &self.unembed.b_U));
        out
    }

    /// The weights the optimizer updates: every `W_*`. Biases stay frozen at
    /// their initial zeros, as the seed sets `requires_grad = False` on them.
    pub fn trainable_parameters(&self) -> Vec<&Tensor> {
        self.named_parameters().into_iter().filter(|(n, _)| is_weight_name(n)).map(|(_, t)| t).collect()
    }

    /// A copy of the weights as fresh leaves, the trainable ones (every `W_*`)
    /// tracking gradients: what a trainer updates in place.
    pub fn trainable_copy(&self) -> Self {
        self.map_parameters(|name, t| t.detach().copy().set_requires_grad(is_weight_name(name)))
    }

    /// TransformerLens's `state_dict()`: the parameters plus each block's `mask`
    /// and `IGNORE` buffers, on the CPU, detached copies.
    pub fn state_dict(&self) -> Vec<(String, Tensor)> {
        let mut out: Vec<(String, Tensor)> =
            self.named_parameters().into_iter().map(|(n, t)| (n, t.detach().to_device(Device::Cpu).copy())).collect();
        for i in 0..self.cfg.n_layers {
            let n = self.cfg.n_ctx;
            out.push((format!("blocks.{i}.attn.mask"), Tensor::ones([n, n], (Kind::Bool, Device::Cpu)).tril(0)));
            out.push((format!("blocks.{i}.attn.IGNORE"), Tensor::from(IGNORE as f32)));
        }
        out
    }

    /// Logits at every position: `[batch, pos, d_vocab_out]`.
    pub fn forward(&self, tokens: &Tensor) -> Tensor {
        self.forward_with(tokens, &mut crate::hooks::NoHooks)
    }

    /// The forward pass, visiting every hook point in TransformerLens's order.
    pub fn forward_with(&self, tokens: &Tensor, hooks: &mut dyn Hooks) -> Tensor {
        let n_pos = tokens.size()[1];
        let embed = hooks.visit(
            "hook_embed",
            self.embed.W_E.index_select(0, &tokens.flatten(0, 1)).view([-1, n_pos, self.cfg.d_model]),
        );
        let pos =
            hooks.visit("hook_pos_embed", self.pos_embed.W_pos.narrow(0, 0, n_pos).unsqueeze(0).expand_as(&embed));
        let mut resid = embed + pos; // [batch, pos, d_model]
        for (i, block) in self.blocks.iter().enumerate() {
            resid = self.block_forward(i, block, resid, hooks);
        }
        resid.matmul(&self.unembed.W_U) + &self.unembed.b_U
    }

    fn block_forward(&self, i: usize, block: &Block, resid: Tensor, hooks: &mut dyn Hooks) -> Tensor {
        let name = |leaf: &str| format!("blocks.{i}.{leaf}");
        let a = &block.attn;
        let resid_pre = hooks.visit(&name("hook_resid_pre"), resid);
        let q = hooks.visit(&name("attn.hook_q"), project(&resid_pre, &a.W_Q, &a.b_Q)); // [batch, pos, head, d_head]
        let k = hooks.visit(&name("attn.hook_k"), project(&resid_pre, &a.W_K, &a.b_K));
        let v = hooks.visit(&name("attn.hook_v"), project(&resid_pre, &a.W_V, &a.b_V));
        let n_pos = q.size()[1];
        let scores = q.permute([0, 2, 1, 3]).matmul(&k.permute([0, 2, 3, 1])) / (self.cfg.d_head as f64).sqrt();
        let future = Tensor::ones([n_pos, n_pos], (Kind::Bool, scores.device())).triu(1);
        let scores = hooks.visit(&name("attn.hook_attn_scores"), scores.masked_fill(&future, IGNORE)); // [batch, head, q_pos, k_pos]
        let pattern = hooks.visit(&name("attn.hook_pattern"), scores.softmax(-1, Kind::Float));
        let z = hooks.visit(&name("attn.hook_z"), pattern.matmul(&v.permute([0, 2, 1, 3])).permute([0, 2, 1, 3])); // [batch, pos, head, d_head]
        let (h, dh, d) = (self.cfg.n_heads, self.cfg.d_head, self.cfg.d_model);
        let attn_out =
            hooks.visit(&name("hook_attn_out"), z.flatten(2, 3).matmul(&a.W_O.reshape([h * dh, d])) + &a.b_O);
        let resid_mid = hooks.visit(&name("hook_resid_mid"), resid_pre + attn_out);
        let m = &block.mlp;
        let pre = hooks.visit(&name("mlp.hook_pre"), resid_mid.matmul(&m.W_in) + &m.b_in);
        let post = hooks.visit(&name("mlp.hook_post"), self.act(&pre));
        let mlp_out = hooks.visit(&name("hook_mlp_out"), post.matmul(&m.W_out) + &m.b_out);
        hooks.visit(&name("hook_resid_post"), resid_mid + mlp_out)
    }

    pub(crate) fn act(&self, pre: &Tensor) -> Tensor {
        match self.cfg.act_fn {
            ActFn::Relu => pre.relu(),
            ActFn::Gelu => pre.gelu("none"),
        }
    }

    /// Every hook point's name, in the order the forward pass visits them.
    pub fn hook_names(&self) -> Vec<String> {
        let mut names = vec!["hook_embed".to_string(), "hook_pos_embed".to_string()];
        for i in 0..self.cfg.n_layers {
            for leaf in [
                "hook_resid_pre",
                "attn.hook_q",
                "attn.hook_k",
                "attn.hook_v",
                "attn.hook_attn_scores",
                "attn.hook_pattern",
                "attn.hook_z",
                "hook_attn_out",
                "hook_resid_mid",
                "mlp.hook_pre",
                "mlp.hook_post",
                "hook_mlp_out",
                "hook_resid_post",
            ] {
                names.push(format!("blocks.{i}.{leaf}"));
            }
        }
        names
    }

    /// Logits at the last position only, `[batch, d_vocab_out]`: the same numbers as
    /// `forward(tokens).select(1, -1)`. What the trainer uses.
    pub fn last_logits(&self, tokens: &Tensor) -> Tensor {
        match self.cfg.n_layers {
            1 => self.last_position_from_tables(tokens, false).0,
            _ => self.last_position_through_blocks(tokens).logits,
        }
    }

    /// The last position's residual stream after attention, MLP activations and
    /// logits, for every input at once: the last block's queries, MLP and
    /// unembedding are computed at that position alone.
    pub fn last_position(&self, tokens: &Tensor) -> LastPosition {
        match self.cfg.n_layers {
            1 => {
                let (logits, mlp_post, resid_mid) = self.last_position_from_tables(tokens, true);
                LastPosition { resid_mid: resid_mid.expect("asked for"), mlp_post, logits }
            }
            _ => self.last_position_through_blocks(tokens),
        }
    }

    /// [`HookedTransformer::last_position`] for any depth: every block before the last at
    /// every position, the last block at the last position.
    fn last_position_through_blocks(&self, tokens: &Tensor) -> LastPosition {
        let n_pos = tokens.size()[1];
        let d = self.cfg.d_model;
        let mut resid = self.embed.W_E.index_select(0, &tokens.flatten(0, 1)).view([-1, n_pos, d])
            + self.pos_embed.W_pos.narrow(0, 0, n_pos);
        let (last, earlier) = self.blocks.split_last().expect("a model has at least one block");
        for (i, block) in earlier.iter().enumerate() {
            resid = self.block_forward(i, block, resid, &mut crate::hooks::NoHooks);
        }
        let a = &last.attn;
        let q = project(&resid.select(1, n_pos - 1), &a.W_Q, &a.b_Q); // [batch, head, d_head]
        let k = project(&resid, &a.W_K, &a.b_K); // [batch, pos, head, d_head]
        let v = project(&resid, &a.W_V, &a.b_V);
        // The last query sees every position: no mask needed.
        let scores = q.unsqueeze(2).matmul(&k.permute([0, 2, 3, 1])) / (self.cfg.d_head as f64).sqrt(); // [batch, head, 1, pos]
        let pattern = scores.softmax(-1, Kind::Float);
        let z = pattern.matmul(&v.permute([0, 2, 1, 3])).squeeze_dim(2); // [batch, head, d_head]
        let (h, dh) = (self.cfg.n_heads, self.cfg.d_head);
        let resid_mid =
            resid.select(1, n_pos - 1) + z.reshape([-1, h * dh]).matmul(&a.W_O.reshape([h * dh, d])) + &a.b_O;
        let m = &last.mlp;
        let mlp_post = self.act(&(resid_mid.matmul(&m.W_in) + &m.b_in));
        let resid_post = &resid_mid + mlp_post.matmul(&m.W_out) + &m.b_out;
        let logits = resid_post.matmul(&self.unembed.W_U) + &self.unembed.b_U;
        LastPosition { resid_mid, mlp_post, logits }
    }
}

/// What the last position computes, for a batch of inputs.
pub struct LastPosition {
    /// `blocks.{last}.hook_resid_mid` at the last position: `[batch, d_model]`.
    pub resid_mid: Tensor,
    /// `blocks.{last}.mlp.hook_post` at the last position: `[batch, d_mlp]`.
    pub mlp_post: Tensor,
    /// `[batch, d_vocab_out]`.
    pub logits: Tensor,
}

/// `x · W + b` per head: `[..., d_model]` → `[..., head, d_head]`, one matmul for all heads.
pub(crate) fn project(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
    let (h, d, dh) = (w.size()[0], w.size()[1], w.size()[2]);
    let mut shape = x.size();
    shape.pop();
    shape.extend([h, dh]);
    x.matmul(&w.permute([1, 0, 2]).reshape([d, h * dh])).view(shape.as_slice()) + b
}

pub(crate) fn is_weight_name(name: &str) -> bool {
    name.rsplit('.').next().is_some_and(|leaf| leaf.starts_with("W_"))
}

fn is_buffer_name(name: &str, n_layers: i64) -> bool {
    (0..n_layers).any(|i| name == format!("blocks.{i}.attn.mask") || name == format!("blocks.{i}.attn.IGNORE"))
}
