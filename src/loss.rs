//! The seed's loss, and its gradient with respect to the logits.

use tch::{Kind, Tensor};

/// The seed's `loss_fn`: mean cross-entropy of last-position logits, in float64.
pub fn loss_fn(last_logits: &Tensor, labels: &Tensor) -> Tensor {
    let log_probs = last_logits.to_kind(Kind::Double).log_softmax(-1, Kind::Double);
    -log_probs.gather(-1, &labels.unsqueeze(-1), false).squeeze_dim(-1).mean(Kind::Double)
}

/// The gradient of Σ_rows weight·(−log p(label)) with respect to the logits, from the
/// float64 log-probabilities, in float32 as autograd hands it back to the float32
/// logits: `(softmax − onehot(label))·weight`.
pub(crate) fn logit_gradient(log_probs: &Tensor, labels: &Tensor, weights: &Tensor) -> Tensor {
    let weights = weights.unsqueeze(-1);
    let mut grad = log_probs.exp() * &weights;
    let _ = grad.scatter_add_(-1, &labels.unsqueeze(-1), &(-weights));
    grad.to_kind(Kind::Float)
}
