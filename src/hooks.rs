//! Hook points, as in TransformerLens: every named activation of the forward pass
//! can be read (`run_with_cache`) or replaced (`run_with_hooks`).
//!
//! ```ignore
//! let (logits, cache) = model.run_with_cache(&dataset);
//! let pattern = &cache[("pattern", 0)];        // cache["pattern", 0] in TransformerLens
//! let post = &cache["blocks.0.mlp.hook_post"];
//! ```

use std::ops::Index;

use tch::Tensor;

use crate::error::{Error, Result};
use crate::model::HookedTransformer;

/// Something the forward pass hands each activation to, by hook name; what it
/// returns flows on.
pub trait Hooks {
    fn visit(&mut self, name: &str, activation: Tensor) -> Tensor;
}

/// The plain forward pass.
pub struct NoHooks;

impl Hooks for NoHooks {
    fn visit(&mut self, _: &str, activation: Tensor) -> Tensor {
        activation
    }
}

/// TransformerLens's `utils.get_act_name`: the full hook name of a short one,
/// e.g. `("pattern", 0)` → `blocks.0.attn.hook_pattern`, `("post", 0)` →
/// `blocks.0.mlp.hook_post`, `("resid_mid", 0)` → `blocks.0.hook_resid_mid`.
pub fn act_name(name: &str, layer: usize) -> String {
    match name {
        "embed" | "pos_embed" => format!("hook_{name}"),
        "q" | "k" | "v" | "z" | "pattern" | "attn_scores" | "attn" | "scores" => {
            let leaf = match name {
                "attn" => "pattern",
                "scores" => "attn_scores",
                other => other,
            };
            format!("blocks.{layer}.attn.hook_{leaf}")
        }
        "pre" | "post" => format!("blocks.{layer}.mlp.hook_{name}"),
        "resid_pre" | "resid_mid" | "resid_post" | "attn_out" | "mlp_out" => format!("blocks.{layer}.hook_{name}"),
        full => full.to_string(),
    }
}

/// Activations by hook name, in the order the forward pass produced them.
pub struct ActivationCache {
    entries: Vec<(String, Tensor)>,
}

impl ActivationCache {
    /// The activation at a full hook name, if cached.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The activation at a full hook name, or an error naming it.
    pub fn require(&self, name: &str) -> Result<&Tensor> {
        self.get(name).ok_or_else(|| Error::config(format!("no activation `{name}` in the cache")))
    }

    /// `(name, activation)` in forward order, as TransformerLens's `cache.items()`.
    pub fn items(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Index<&str> for ActivationCache {
    type Output = Tensor;
    fn index(&self, name: &str) -> &Tensor {
        match self.get(name) {
            Some(t) => t,
            None => panic!("no activation `{name}` in the cache"),
        }
    }
}

/// `cache[("pattern", 0)]`, TransformerLens's `cache["pattern", 0]`.
impl Index<(&str, usize)> for ActivationCache {
    type Output = Tensor;
    fn index(&self, (name, layer): (&str, usize)) -> &Tensor {
        &self[act_name(name, layer).as_str()]
    }
}

struct Recorder {
    entries: Vec<(String, Tensor)>,
}

impl Hooks for Recorder {
    fn visit(&mut self, name: &str, activation: Tensor) -> Tensor {
        self.entries.push((name.to_string(), activation.detach()));
        activation
    }
}

/// A hook function: sees the activation and returns a replacement, or `None`
/// to leave it as it is.
pub type HookFn<'a> = &'a mut dyn FnMut(&Tensor) -> Option<Tensor>;

struct Interventions<'s, 'n, 'f> {
    hooks: &'s mut [(&'n str, HookFn<'f>)],
}

impl Hooks for Interventions<'_, '_, '_> {
    fn visit(&mut self, name: &str, mut activation: Tensor) -> Tensor {
        for (hook_name, f) in self.hooks.iter_mut() {
            if *hook_name == name {
                if let Some(replacement) = f(&activation) {
                    activation = replacement;
                }
            }
        }
        activation
    }
}

impl HookedTransformer {
    /// Logits and every activation, as TransformerLens's `run_with_cache`.
    /// Runs without gradients.
    pub fn run_with_cache(&self, tokens: &Tensor) -> (Tensor, ActivationCache) {
        let mut recorder = Recorder { entries: Vec::new() };
        let logits = tch::no_grad(|| self.forward_with(tokens, &mut recorder));
        (logits, ActivationCache { entries: recorder.entries })
    }

    /// Logits with hook functions applied at the named hook points (full names or
    /// TransformerLens's short forms through [`act_name`]), in the order given.
    ///
    /// ```ignore
    /// // Zero-ablate head 0's pattern:
    /// let logits = model.run_with_hooks(&tokens, &mut [("blocks.0.attn.hook_pattern", &mut |p: &tch::Tensor| {
    ///     let p = p.copy();
    ///     let _ = p.narrow(1, 0, 1).fill_(0.0);
    ///     Some(p)
    /// })])?;
    /// ```
    pub fn run_with_hooks(&self, tokens: &Tensor, hooks: &mut [(&str, HookFn<'_>)]) -> Result<Tensor> {
        let names = self.hook_names();
        if let Some((unknown, _)) = hooks.iter().find(|(n, _)| !names.iter().any(|m| m == n)) {
            return Err(Error::config(format!("no hook point named `{unknown}`; the model has: {}", names.join(", "))));
        }
        Ok(self.forward_with(tokens, &mut Interventions { hooks }))
    }
}

#[cfg(test)]
mod tests {
    use super::act_name;

    #[test]
    fn short_names_expand_as_transformer_lens_does() {
        assert_eq!(act_name("pattern", 0), "blocks.0.attn.hook_pattern");
        assert_eq!(act_name("post", 2), "blocks.2.mlp.hook_post");
        assert_eq!(act_name("resid_mid", 0), "blocks.0.hook_resid_mid");
        assert_eq!(act_name("embed", 0), "hook_embed");
        assert_eq!(act_name("blocks.0.hook_mlp_out", 0), "blocks.0.hook_mlp_out");
    }
}
