//! AdamW, step for step as PyTorch's single-tensor `torch.optim.AdamW`
//! (the implementation PyTorch picks for CPU tensors):
//!
//! ```text
//! p   ← p · (1 − lr·wd)
//! m   ← lerp(m, g, 1 − β1)
//! v   ← β2·v + (1 − β2)·g²
//! p   ← p − lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + ε)
//! ```
//!
//! The parameters may be stacks of N models' weights (leading model axis), each model
//! with its own lr and weight decay. Every operation is elementwise, so the trainer's
//! one flat `[model, all weights]` tensor gets the same numbers as each weight alone.

use tch::Tensor;

use crate::error::{Error, Result};

pub struct AdamW {
    params: Vec<Tensor>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    /// Steps taken, a float64 scalar on the parameters' device: the bias corrections
    /// are computed there, so a step neither copies nor waits (and can be replayed).
    step: Tensor,
    /// Per model, float64 on the parameters' device (so a step copies nothing there).
    lr: Tensor,
    /// Per model, 1 − lr · weight_decay: `[model]` float32, as PyTorch applies it.
    decay: Tensor,
    betas: (f64, f64),
    eps: f64,
}

impl AdamW {
    /// PyTorch's defaults but for the given betas (ε = 1e-8), over parameters whose
    /// leading axis is the model; `lr[i]` and `weight_decay[i]` are model i's.
    pub fn new(params: Vec<Tensor>, lr: &[f64], weight_decay: &[f64], betas: (f64, f64)) -> Result<Self> {
        let models = params.first().map_or(0, |p| p.size().first().copied().unwrap_or(0)) as usize;
        if params.is_empty() || params.iter().any(|p| p.dim() == 0 || p.size()[0] as usize != models) {
            return Err(Error::config("AdamW needs parameters, each with one leading model axis of the same length"));
        }
        if lr.len() != models || weight_decay.len() != models {
            return Err(Error::config(format!(
                "AdamW over {models} models needs {models} learning rates and weight decays, got {} and {}",
                lr.len(),
                weight_decay.len()
            )));
        }
        let exp_avg = params.iter().map(Tensor::zeros_like).collect();
        let exp_avg_sq = params.iter().map(Tensor::zeros_like).collect();
        let device = params[0].device();
        let decay: Vec<f64> = lr.iter().zip(weight_decay).map(|(lr, wd)| 1.0 - lr * wd).collect();
        Ok(AdamW {
            params,
            exp_avg,
            exp_avg_sq,
            step: Tensor::zeros([], (tch::Kind::Double, device)),
            lr: Tensor::from_slice(lr).to_device(device),
            decay: per_model(&decay, device),
            betas,
            eps: 1e-8,
        })
    }

    /// Takes over another optimizer's moments and step count (one tensor per
    /// parameter, each of its parameter's shape, in the order given to [`AdamW::new`]),
    /// to continue its run.
    pub fn set_state(&mut self, exp_avg: Vec<Tensor>, exp_avg_sq: Vec<Tensor>, step: i64) -> Result<()> {
        self.check_like_params("moment", &exp_avg)?;
        self.check_like_params("moment", &exp_avg_sq)?;
        if step < 0 {
            return Err(Error::config(format!("a step count is at least 0, got {step}")));
        }
        (self.exp_avg, self.exp_avg_sq) = (exp_avg, exp_avg_sq);
        let _ = self.step.fill_(step as f64);
        Ok(())
    }

    /// Fails unless `tensors` are one per parameter, each of its shape.
    fn check_like_params(&self, what: &str, tensors: &[Tensor]) -> Result<()> {
        if tensors.len() != self.params.len() {
            return Err(Error::config(format!(
                "one {what} per parameter: {} for {}",
                tensors.len(),
                self.params.len()
            )));
        }
        if let Some((t, p)) = tensors.iter().zip(&self.params).find(|(t, p)| t.size() != p.size()) {
            return Err(Error::config(format!("a {what} of shape {:?} for a parameter of {:?}", t.size(), p.size())));
        }
        Ok(())
    }

    /// The moments, one tensor per parameter in the order given to [`AdamW::new`].
    pub fn moments(&self) -> (&[Tensor], &[Tensor]) {
        (&self.exp_avg, &self.exp_avg_sq)
    }

    /// Steps taken so far (reading it waits for the device).
    pub fn steps(&self) -> i64 {
        self.step.double_value(&[]) as i64
    }

    /// One update from `grads`, one per parameter, each of its shape.
    pub fn step(&mut self, grads: &[Tensor]) -> Result<()> {
        self.check_like_params("gradient", grads)?;
        let _ = self.step.g_add_scalar_(1);
        let (b1, b2) = self.betas;
        let bias_correction1: Tensor = 1.0 - Tensor::pow_scalar(b1, &self.step);
        let bias_correction2: Tensor = 1.0 - Tensor::pow_scalar(b2, &self.step);
        let bias_correction2_sqrt = bias_correction2.sqrt();
        // lr / (1 − β1^t) in float64, then float32, as PyTorch applies it.
        let step_size = (&self.lr / bias_correction1).to_kind(tch::Kind::Float);
        for (((p, m), v), g) in self.params.iter_mut().zip(&mut self.exp_avg).zip(&mut self.exp_avg_sq).zip(grads) {
            // [model] → [model, 1, …] against this parameter.
            let mut shape = vec![1i64; p.dim()];
            shape[0] = -1;
            let _ = p.g_mul_(&self.decay.view(shape.as_slice()));
            let _ = m.lerp_(g, 1.0 - b1);
            let _ = v.g_mul_scalar_(b2).g_add_(&(g * g * (1.0 - b2)));
            let denom = (v.sqrt() / &bias_correction2_sqrt).g_add_scalar_(self.eps);
            let _ = p.g_sub_(&(&*m * step_size.view(shape.as_slice()) / denom));
        }
        Ok(())
    }
}

/// Per-model values, computed in float64, as the float32 tensor PyTorch would apply.
fn per_model(values: &[f64], device: tch::Device) -> Tensor {
    Tensor::from_slice(&values.iter().map(|&v| v as f32).collect::<Vec<f32>>()).to_device(device)
}

/// What one model's AdamW carries from one epoch to the next beside the weights: its
/// moments per trainable weight, named as TransformerLens names the weight, and its
/// step count. Saved with a run's checkpoints so that a killed run continues exactly.
pub struct AdamWState {
    pub step: i64,
    /// `(name, exp_avg, exp_avg_sq)`, in `named_parameters` order.
    pub moments: Vec<(String, Tensor, Tensor)>,
}

impl AdamWState {
    /// The state before the first step: zero moments for every trainable weight of `model`.
    pub fn initial(model: &crate::HookedTransformer) -> Self {
        let moments =
            model.trainable_parameters().map(|(name, t)| (name.to_string(), t.zeros_like(), t.zeros_like())).collect();
        AdamWState { step: 0, moments }
    }
}
