//! AdamW, step for step as PyTorch's single-tensor `torch.optim.AdamW`
//! (the implementation PyTorch picks for CPU tensors):
//!
//! ```text
//! p   ← p · (1 − lr·wd)
//! m   ← lerp(m, g, 1 − β1)
//! v   ← β2·v + (1 − β2)·g²
//! p   ← p − lr/(1 − β1^t) · m / (√v / √(1 − β2^t) + ε)
//! ```

use tch::Tensor;

pub struct AdamW {
    params: Vec<Tensor>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    step: i32,
    lr: f64,
    weight_decay: f64,
    betas: (f64, f64),
    eps: f64,
}

impl AdamW {
    /// PyTorch's defaults but for the given lr, weight decay and betas (ε = 1e-8).
    pub fn new(params: Vec<Tensor>, lr: f64, weight_decay: f64, betas: (f64, f64)) -> Self {
        let exp_avg = params.iter().map(Tensor::zeros_like).collect();
        let exp_avg_sq = params.iter().map(Tensor::zeros_like).collect();
        AdamW { params, exp_avg, exp_avg_sq, step: 0, lr, weight_decay, betas, eps: 1e-8 }
    }

    /// Takes over another optimizer's moments and step count (one tensor per
    /// parameter, in the order given to [`AdamW::new`]), to continue its run.
    pub fn set_state(&mut self, exp_avg: Vec<Tensor>, exp_avg_sq: Vec<Tensor>, step: i32) {
        assert_eq!(exp_avg.len(), self.params.len(), "one exp_avg per parameter");
        assert_eq!(exp_avg_sq.len(), self.params.len(), "one exp_avg_sq per parameter");
        (self.exp_avg, self.exp_avg_sq, self.step) = (exp_avg, exp_avg_sq, step);
    }

    /// One update from the gradients the parameters hold; then clears them.
    pub fn step(&mut self) {
        self.step += 1;
        let (b1, b2) = self.betas;
        let bias_correction1 = 1.0 - b1.powi(self.step);
        let bias_correction2_sqrt = (1.0 - b2.powi(self.step)).sqrt();
        let step_size = self.lr / bias_correction1;
        let _guard = tch::no_grad_guard();
        for ((p, m), v) in self.params.iter_mut().zip(&mut self.exp_avg).zip(&mut self.exp_avg_sq) {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            let _ = p.g_mul_scalar_(1.0 - self.lr * self.weight_decay);
            let _ = m.lerp_(&g, 1.0 - b1);
            let _ = v.g_mul_scalar_(b2).g_add_(&(&g * &g * (1.0 - b2)));
            let denom = (v.sqrt() / bias_correction2_sqrt).g_add_scalar_(self.eps);
            let _ = p.g_sub_(&(&*m * step_size / denom));
            p.zero_grad();
        }
    }
}
