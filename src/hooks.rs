//! Hook points, as in TransformerLens: every named activation of the forward pass,
//! which [`HookedTransformer::run_with_cache`](crate::HookedTransformer::run_with_cache)
//! reads and [`run_with_hooks`](crate::HookedTransformer::run_with_hooks) replaces.
//!
//! ```ignore
//! let (logits, cache) = model.run_with_cache(&dataset)?;
//! let pattern = &cache[("pattern", 0)];        // cache["pattern", 0] in TransformerLens
//! let post = &cache["blocks.0.mlp.hook_post"];
//! let point: HookPoint = "blocks.0.attn.hook_z".parse()?;
//! ```

use std::fmt;
use std::ops::Index;
use std::str::FromStr;

use tch::Tensor;

use crate::error::{Error, Result};

/// A hook point of one block, in the order the forward pass visits them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockHook {
    ResidPre,
    Q,
    K,
    V,
    AttnScores,
    Pattern,
    Z,
    AttnOut,
    ResidMid,
    Pre,
    Post,
    MlpOut,
    ResidPost,
}

/// Each block hook point with its name under `blocks.{i}.` and TransformerLens's short
/// name (`utils.get_act_name`), in forward order: the one list of hook names.
const BLOCK_HOOKS: [(BlockHook, &str, &str); 13] = [
    (BlockHook::ResidPre, "hook_resid_pre", "resid_pre"),
    (BlockHook::Q, "attn.hook_q", "q"),
    (BlockHook::K, "attn.hook_k", "k"),
    (BlockHook::V, "attn.hook_v", "v"),
    (BlockHook::AttnScores, "attn.hook_attn_scores", "attn_scores"),
    (BlockHook::Pattern, "attn.hook_pattern", "pattern"),
    (BlockHook::Z, "attn.hook_z", "z"),
    (BlockHook::AttnOut, "hook_attn_out", "attn_out"),
    (BlockHook::ResidMid, "hook_resid_mid", "resid_mid"),
    (BlockHook::Pre, "mlp.hook_pre", "pre"),
    (BlockHook::Post, "mlp.hook_post", "post"),
    (BlockHook::MlpOut, "hook_mlp_out", "mlp_out"),
    (BlockHook::ResidPost, "hook_resid_post", "resid_post"),
];

/// TransformerLens's aliases of short names (`get_act_name`), and this crate's `scores`.
const ALIASES: [(&str, &str); 8] = [
    ("attn", "pattern"),
    ("attn_logits", "attn_scores"),
    ("scores", "attn_scores"),
    ("query", "q"),
    ("key", "k"),
    ("value", "v"),
    ("mlp_pre", "pre"),
    ("mlp_post", "post"),
];

/// A named activation of the forward pass: `hook_embed`, `hook_pos_embed`, or one of
/// a block's, as `blocks.0.attn.hook_pattern`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HookPoint {
    Embed,
    PosEmbed,
    Block(usize, BlockHook),
}

impl HookPoint {
    /// Every hook point of a model with `n_layers` blocks, in the order the forward
    /// pass visits them (TransformerLens's `hook_dict` order).
    pub fn all(n_layers: usize) -> Vec<HookPoint> {
        let blocks = (0..n_layers).flat_map(|i| BLOCK_HOOKS.iter().map(move |&(hook, _, _)| HookPoint::Block(i, hook)));
        [HookPoint::Embed, HookPoint::PosEmbed].into_iter().chain(blocks).collect()
    }

    /// TransformerLens's `utils.get_act_name`: `("pattern", 0)` is
    /// `blocks.0.attn.hook_pattern`, `("post", 0)` `blocks.0.mlp.hook_post`,
    /// `("embed", _)` `hook_embed`; a full name stands for itself.
    pub fn act(name: &str, layer: usize) -> Result<HookPoint> {
        let name = ALIASES.iter().find(|(alias, _)| *alias == name).map_or(name, |(_, short)| short);
        match name {
            "embed" => return Ok(HookPoint::Embed),
            "pos_embed" => return Ok(HookPoint::PosEmbed),
            _ => {}
        }
        if let Some((hook, _, _)) = BLOCK_HOOKS.iter().find(|(_, _, short)| *short == name) {
            return Ok(HookPoint::Block(layer, *hook));
        }
        name.parse().map_err(|_| {
            let shorts: Vec<&str> = BLOCK_HOOKS.iter().map(|(_, _, short)| *short).collect();
            Error::config(format!(
                "no hook point `{name}`: expected a full name such as blocks.0.attn.hook_pattern, or embed, pos_embed, {}",
                shorts.join(", ")
            ))
        })
    }

    /// The block it belongs to, if any.
    pub fn layer(self) -> Option<usize> {
        match self {
            HookPoint::Block(i, _) => Some(i),
            _ => None,
        }
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HookPoint::Embed => f.write_str("hook_embed"),
            HookPoint::PosEmbed => f.write_str("hook_pos_embed"),
            HookPoint::Block(i, hook) => {
                let (_, leaf, _) = BLOCK_HOOKS.iter().find(|(h, _, _)| h == hook).expect("every block hook is listed");
                write!(f, "blocks.{i}.{leaf}")
            }
        }
    }
}

impl FromStr for HookPoint {
    type Err = Error;

    /// A full hook name, as [`fmt::Display`] writes it.
    fn from_str(name: &str) -> Result<HookPoint> {
        let unknown = || Error::config(format!("no hook point named `{name}`"));
        match name {
            "hook_embed" => return Ok(HookPoint::Embed),
            "hook_pos_embed" => return Ok(HookPoint::PosEmbed),
            _ => {}
        }
        let (layer, leaf) = name.strip_prefix("blocks.").and_then(|rest| rest.split_once('.')).ok_or_else(unknown)?;
        let layer = layer.parse().map_err(|_| unknown())?;
        let (hook, _, _) = BLOCK_HOOKS.iter().find(|(_, l, _)| *l == leaf).ok_or_else(unknown)?;
        Ok(HookPoint::Block(layer, *hook))
    }
}

/// Something the forward pass hands each activation to; what it returns flows on.
pub trait Hooks {
    fn visit(&mut self, point: HookPoint, activation: Tensor) -> Tensor;
}

/// The plain forward pass.
pub struct NoHooks;

impl Hooks for NoHooks {
    fn visit(&mut self, _: HookPoint, activation: Tensor) -> Tensor {
        activation
    }
}

/// Keeps every activation it sees: what `run_with_cache` fills.
#[derive(Default)]
pub(crate) struct Recorder {
    entries: Vec<(HookPoint, Tensor)>,
}

impl Hooks for Recorder {
    fn visit(&mut self, point: HookPoint, activation: Tensor) -> Tensor {
        self.entries.push((point, activation.detach()));
        activation
    }
}

impl Recorder {
    pub fn into_cache(self) -> ActivationCache {
        ActivationCache { entries: self.entries }
    }
}

/// A hook function: sees the activation and returns a replacement, or `None` to leave
/// it as it is.
pub type HookFn<'a> = &'a mut dyn FnMut(&Tensor) -> Option<Tensor>;

/// Hook functions by hook point, applied in the order given.
pub(crate) struct Interventions<'h, 'f> {
    pub hooks: Vec<(HookPoint, &'h mut HookFn<'f>)>,
}

impl Hooks for Interventions<'_, '_> {
    fn visit(&mut self, point: HookPoint, mut activation: Tensor) -> Tensor {
        for (at, f) in self.hooks.iter_mut() {
            if *at == point {
                if let Some(replacement) = f(&activation) {
                    activation = replacement;
                }
            }
        }
        activation
    }
}

/// Activations by hook point, in the order the forward pass produced them.
pub struct ActivationCache {
    entries: Vec<(HookPoint, Tensor)>,
}

impl ActivationCache {
    /// The activation at a hook point, if cached.
    pub fn at(&self, point: HookPoint) -> Option<&Tensor> {
        self.entries.iter().find(|(p, _)| *p == point).map(|(_, t)| t)
    }

    /// The activation at a full hook name, if that is a hook point and cached.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.at(name.parse().ok()?)
    }

    /// The activation at a full hook name, or an error naming what is wrong.
    pub fn require(&self, name: &str) -> Result<&Tensor> {
        let point: HookPoint = name.parse()?;
        self.at(point).ok_or_else(|| Error::config(format!("no activation at `{point}` in the cache")))
    }

    /// `(hook point, activation)` in forward order, as TransformerLens's `cache.items()`.
    pub fn items(&self) -> impl Iterator<Item = (HookPoint, &Tensor)> {
        self.entries.iter().map(|(p, t)| (*p, t))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// `cache["blocks.0.hook_mlp_out"]`; panics on a name not in the cache ([`ActivationCache::require`]
/// says why as an error instead).
impl Index<&str> for ActivationCache {
    type Output = Tensor;
    fn index(&self, name: &str) -> &Tensor {
        self.require(name).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// `cache[("pattern", 0)]`, TransformerLens's `cache["pattern", 0]`.
impl Index<(&str, usize)> for ActivationCache {
    type Output = Tensor;
    fn index(&self, (name, layer): (&str, usize)) -> &Tensor {
        let point = HookPoint::act(name, layer).unwrap_or_else(|e| panic!("{e}"));
        self.at(point).unwrap_or_else(|| panic!("no activation at `{point}` in the cache"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips_and_short_names_expand_as_transformer_lens_does() {
        let all = HookPoint::all(2);
        assert_eq!(all.len(), 2 + 2 * 13);
        for point in &all {
            assert_eq!(&point.to_string().parse::<HookPoint>().unwrap(), point, "{point}");
            assert_eq!(&HookPoint::act(&point.to_string(), 7).unwrap(), point, "{point}");
        }
        for (hook, _, short) in BLOCK_HOOKS {
            assert_eq!(HookPoint::act(short, 1).unwrap(), HookPoint::Block(1, hook));
        }
        assert_eq!(HookPoint::act("pattern", 0).unwrap().to_string(), "blocks.0.attn.hook_pattern");
        assert_eq!(HookPoint::act("attn", 0).unwrap().to_string(), "blocks.0.attn.hook_pattern");
        assert_eq!(HookPoint::act("post", 2).unwrap().to_string(), "blocks.2.mlp.hook_post");
        assert_eq!(HookPoint::act("resid_mid", 0).unwrap().to_string(), "blocks.0.hook_resid_mid");
        assert_eq!(HookPoint::act("embed", 0).unwrap().to_string(), "hook_embed");
        for bad in ["blocks.0.attn.hook_nothing", "blocks.x.hook_resid_pre", "hook_resid_pre", "", "blocks.0"] {
            assert!(bad.parse::<HookPoint>().is_err(), "{bad}");
        }
        assert!(HookPoint::act("nothing", 0).unwrap_err().to_string().contains("resid_pre"));
    }
}
