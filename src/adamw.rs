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

use tch::{Device, Kind, Tensor};

use crate::cpu_loops::{self, elements, elements_mut, Vectorised};

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
        let (step_size, bias_correction2_sqrt) = self.count_step();
        if self.all_on_cpu(grads) {
            self.step_by_loops(grads, &step_size, &bias_correction2_sqrt);
        } else {
            self.step_by_tensors(grads, &step_size, &bias_correction2_sqrt);
        }
        Ok(())
    }

    /// Counts a step: its step size per model, lr / (1 − β1^t) in float64, then
    /// float32, as PyTorch applies it; and √(1 − β2^t), a float64 scalar.
    fn count_step(&mut self) -> (Tensor, Tensor) {
        let _ = self.step.g_add_scalar_(1);
        let (b1, b2) = self.betas;
        let bias_correction1: Tensor = 1.0 - Tensor::pow_scalar(b1, &self.step);
        let bias_correction2: Tensor = 1.0 - Tensor::pow_scalar(b2, &self.step);
        ((&self.lr / bias_correction1).to_kind(Kind::Float), bias_correction2.sqrt())
    }

    /// The step's update as tensor operations, on any device.
    fn step_by_tensors(&mut self, grads: &[Tensor], step_size: &Tensor, bias_correction2_sqrt: &Tensor) {
        let (b1, b2) = self.betas;
        for (((p, m), v), g) in self.params.iter_mut().zip(&mut self.exp_avg).zip(&mut self.exp_avg_sq).zip(grads) {
            // [model] → [model, 1, …] against this parameter.
            let mut shape = vec![1i64; p.dim()];
            shape[0] = -1;
            let _ = p.g_mul_(&self.decay.view(shape.as_slice()));
            let _ = m.lerp_(g, 1.0 - b1);
            let _ = v.g_mul_scalar_(b2).g_add_(&(g * g * (1.0 - b2)));
            let denom = (v.sqrt() / bias_correction2_sqrt).g_add_scalar_(self.eps);
            let _ = p.g_sub_(&(&*m * step_size.view(shape.as_slice()) / denom));
        }
    }
}

impl AdamW {
    /// Whether the parameters, moments and `grads` are contiguous float32 CPU tensors,
    /// which [`AdamW::step_by_loops`] takes.
    fn all_on_cpu(&self, grads: &[Tensor]) -> bool {
        let tensors = || self.params.iter().chain(&self.exp_avg).chain(&self.exp_avg_sq).chain(grads);
        tensors().all(|t| t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous())
    }

    /// The step's update on the CPU: a pass over each parameter's elements that
    /// decays them and updates the moments, libtorch's square root of the second
    /// moments (whose results a correctly rounded one does not always give), and a
    /// pass that updates the elements; instead of a dozen tensor operations, each a
    /// pass of its own. The passes run in parts on libtorch's threads, and each
    /// element gets the float32 arithmetic PyTorch's kernels give it, operation for
    /// operation (lerp is one fused multiply-add, from either end as PyTorch's).
    fn step_by_loops(&mut self, grads: &[Tensor], step_size: &Tensor, bias_correction2_sqrt: &Tensor) {
        let (b1, b2) = self.betas;
        let per_model = |t: &Tensor| Vec::<f32>::try_from(&t.to_kind(Kind::Float)).expect("[model] float32");
        let (step_size, decay) = (per_model(step_size), per_model(&self.decay));
        let c = Constants {
            one_minus_b1: (1.0 - b1) as f32,
            lerp_from_m: ((1.0 - b1) as f32).abs() < 0.5,
            b2: b2 as f32,
            one_minus_b2: (1.0 - b2) as f32,
            bias_correction2_sqrt: bias_correction2_sqrt.double_value(&[]) as f32,
            eps: self.eps as f32,
        };
        let models = decay.len();
        for (((p, m), v), g) in self.params.iter().zip(&self.exp_avg).zip(&self.exp_avg_sq).zip(grads) {
            // Each model's elements, `size` of them, in parts of `step`.
            let size = p.numel() / models;
            let step = size.div_ceil(cpu_loops::parts()).max(1);
            {
                // SAFETY: the optimizer's own tensors, which nothing else touches during the step.
                let (p, m, v) = unsafe { (elements_mut::<f32>(p), elements_mut::<f32>(m), elements_mut::<f32>(v)) };
                let each =
                    p.chunks_mut(size).zip(m.chunks_mut(size)).zip(v.chunks_mut(size)).zip(elements(g).chunks(size));
                let mut parts = vec![];
                for ((((p, m), v), g), &decay) in each.zip(&decay) {
                    let chunks = p.chunks_mut(step).zip(m.chunks_mut(step)).zip(v.chunks_mut(step)).zip(g.chunks(step));
                    parts.extend(chunks.map(|(((p, m), v), g)| Moments { p, m, v, g, decay, c: &c }));
                }
                cpu_loops::for_each_owned(parts, |part| cpu_loops::widest(part));
            }
            let root = v.sqrt();
            // SAFETY: as above.
            let p = unsafe { elements_mut::<f32>(p) };
            let each = p.chunks_mut(size).zip(elements(m).chunks(size)).zip(elements(&root).chunks(size));
            let mut parts = vec![];
            for (((p, m), root), &step_size) in each.zip(&step_size) {
                let chunks = p.chunks_mut(step).zip(m.chunks(step)).zip(root.chunks(step));
                parts.extend(chunks.map(|((p, m), root)| Update { p, m, root, step_size, c: &c }));
            }
            cpu_loops::for_each_owned(parts, |part| cpu_loops::widest(part));
        }
    }
}

/// The step's constants, each as the float32 PyTorch's kernels apply.
struct Constants {
    one_minus_b1: f32,
    lerp_from_m: bool,
    b2: f32,
    one_minus_b2: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
}

/// A run of one model's elements of a parameter, its moments and its gradient:
/// `p ← p·decay`, and the moments' updates.
struct Moments<'a> {
    p: &'a mut [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
    g: &'a [f32],
    decay: f32,
    c: &'a Constants,
}

impl Vectorised for Moments<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Moments { p, m, v, g, decay, c } = self;
        for (((p, m), v), &g) in p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g) {
            *p *= decay;
            // PyTorch's lerp: from m with a weight below ½, else from g.
            *m = match c.lerp_from_m {
                true => (g - *m).mul_add(c.one_minus_b1, *m),
                false => (g - *m).mul_add(c.one_minus_b1 - 1.0, g),
            };
            *v = *v * c.b2 + g * g * c.one_minus_b2;
        }
    }
}

/// A run of one model's elements of a parameter, with its first moment and the
/// square root of its second: `p ← p − step_size · m / (√v / √(1 − β2^t) + ε)`.
struct Update<'a> {
    p: &'a mut [f32],
    m: &'a [f32],
    root: &'a [f32],
    step_size: f32,
    c: &'a Constants,
}

impl Vectorised for Update<'_> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        let Update { p, m, root, step_size, c } = self;
        for ((p, &m), &root) in p.iter_mut().zip(m).zip(root) {
            *p -= m * step_size / (root / c.bias_correction2_sqrt + c.eps);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The loops give the tensor operations' numbers, bit for bit: steps of two
    /// models with their own lr and weight decay, from moments at step 40, over a size
    /// that no vector width divides; with β1 above ½ and below it (lerp from either end).
    #[test]
    fn loops_agree_with_tensors() {
        for betas in [(0.9, 0.98), (0.3, 0.999)] {
            steps_agree(betas);
        }
    }

    fn steps_agree(betas: (f64, f64)) {
        let (weights, moments, grads) = crate::rng::seeded(6, || {
            let weights = Tensor::randn([2, 1003], (Kind::Float, Device::Cpu));
            let moments = (weights.randn_like() * 1e-3, weights.randn_like().square() * 1e-6);
            let grads: Vec<Tensor> = (0..4).map(|_| weights.randn_like() * 1e-3).collect();
            (weights, moments, grads)
        });
        let start = || {
            let mut adam = AdamW::new(vec![weights.copy()], &[1e-3, 3e-3], &[1.0, 0.1], betas).unwrap();
            adam.set_state(vec![moments.0.copy()], vec![moments.1.copy()], 40).unwrap();
            adam
        };
        let (mut loops, mut tensors) = (start(), start());
        assert!(loops.all_on_cpu(&grads));
        for g in &grads {
            loops.step(std::slice::from_ref(g)).unwrap();
            let (step_size, bias_correction2_sqrt) = tensors.count_step();
            tensors.step_by_tensors(std::slice::from_ref(g), &step_size, &bias_correction2_sqrt);
        }
        assert!(loops.params[0].equal(&tensors.params[0]), "{betas:?}");
        assert!(loops.exp_avg[0].equal(&tensors.exp_avg[0]) && loops.exp_avg_sq[0].equal(&tensors.exp_avg_sq[0]));
    }
}
