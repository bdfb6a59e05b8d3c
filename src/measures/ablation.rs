//! Excluded and restricted loss: ablate the key frequencies of the view's sum s in the
//! neuron activations and see what the loss does.
//!
//! A [p², d_mlp] are the last position's neuron activations. The directions are the waves
//! cos(2πk·s(a,b)/p) and sin(2πk·s(a,b)/p) over the p² inputs for k in the key set (or
//! the cosines alone), stacked as the columns of V = E Φ: E [p², p] is the one-hot of s and
//! Φ [p, m] the waves over Z_p. The projection onto their span is P A = V (VᵀV)⁺ Vᵀ A with
//! VᵀV = Φᵀ diag(N) Φ (N_s the number of inputs with sum s) and VᵀA = Φᵀ A_s (A_s the sum of
//! A over the inputs with sum s). In the standard view the waves are orthogonal over the
//! inputs and this is the seed's sum of one-vector projections; in the task view they are
//! not, and the pseudo-inverse makes it a true projection. Because P A is a function of s,
//! its effect on the logits is D[s] = R Z [p, p], with R = Φ (ΦᵀNΦ)⁺ Φᵀ and
//! Z = A_s W_out W_U the MLP's logit contribution summed per class of s.
//!
//! * Excluded loss (the seed's `get_excluded_loss`, done right): the logits of
//!   (A − P A) W_out + b_out + resid_mid, through W_U + b_U, i.e. logits − D[s]; the
//!   float64 `loss_fn` on the training set. Subtracted once (the seed adds the cosine
//!   projection twice: [`excluded_loss_seed_buggy`] keeps that for comparison).
//! * Restricted loss (TransformerLens's grokking demo `get_restricted_loss`): keep the
//!   mean of A plus P A only, map through W_out W_U, and shift so the mean over the inputs
//!   equals the real logits' mean: logits_R[s] = mean logits + D[s] − mean_inputs(D), the
//!   direct path dropped but for its mean. Loss on the test set (or any [`Subset`]).
//!
//! [`Ablation`] holds what the task and split fix, [`LogitParts`] what one model fixes
//! (not the key set), so that a new key set over many checkpoints costs a p × p product
//! and one pass over the training logits per checkpoint.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::key_freqs::check_key_freqs;
use super::{check_all_inputs, f64_cpu, w_logit};
use crate::error::Result;
use crate::fourier::{waves, PerView, View};
use crate::model::HookedTransformer;
use crate::one_layer::LastPosition;
use crate::row_loss::mean_log_sum_exp;
use crate::task::{Split, Task};

/// Which waves of s an ablation uses for each key frequency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Projection {
    /// cos and sin (the default, and the a + b paper's).
    #[default]
    SinCos,
    /// cos only (the seed's intent for even m = n).
    CosOnly,
}

/// A set of the p² inputs to take a loss on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Subset {
    Train,
    Test,
    All,
}

/// The directions an ablation removes or keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directions {
    pub view: View,
    /// Frequencies in 1..=(p−1)/2, each at most once.
    pub key_freqs: Vec<i64>,
    pub projection: Projection,
}

impl Directions {
    /// Both waves of each key frequency in `view`.
    pub fn new(view: View, key_freqs: &[i64]) -> Self {
        Directions { view, key_freqs: key_freqs.to_vec(), projection: Projection::SinCos }
    }

    pub fn cos_only(mut self) -> Self {
        self.projection = Projection::CosOnly;
        self
    }
}

/// The view's sum s over the inputs, and how many inputs have each value.
struct SumClasses {
    /// s for all p² inputs, a-major: `[p²]` int64.
    sums: Tensor,
    /// N_s: `[p]` float64.
    counts: Tensor,
    /// s of the training inputs: `[n_train]` int64.
    train_sums: Tensor,
    /// How many training inputs have sum s and label c: `[p, p]` float64.
    train_cells: Tensor,
}

/// What the task and the split fix for every ablation.
pub struct Ablation {
    task: Task,
    split: Split,
    train: Tensor,
    train_labels: Tensor,
    labels: Tensor,
    classes: PerView<SumClasses>,
}

/// How many of the inputs `indices` have sum s and label c: `[p, p]` float64.
fn cell_counts(sums: &Tensor, labels: &Tensor, indices: &Tensor, p: i64) -> Tensor {
    let cells = sums.index_select(0, indices) * p + labels.index_select(0, indices);
    cells.bincount(None::<Tensor>, p * p).to_kind(Kind::Double).view([p, p])
}

/// What one model fixes for every ablation, whatever the key set.
pub struct LogitParts {
    /// The model's logits on the training inputs, as it computed them: `[n_train, p]`.
    train_logits: Tensor,
    /// The mean over the training inputs of the correct label's logit.
    train_correct: f64,
    /// The mean logits over all p² inputs: `[p]` float64.
    mean_logits: Tensor,
    /// Per view, Z = A_s W_out W_U: `[p, p]` float64.
    mlp_by_sum: PerView<Tensor>,
}

impl Ablation {
    pub fn new(task: &Task, split: &Split) -> Result<Self> {
        split.validate(task.n_pairs())?;
        let labels = task.labels();
        let train = split.train_tensor();
        let classes = PerView::new(|view| {
            let sums = Tensor::from_slice(&view.sums(task));
            let counts = sums.bincount(None::<Tensor>, task.p).to_kind(Kind::Double);
            let train_cells = cell_counts(&sums, &labels, &train, task.p);
            SumClasses { train_sums: sums.index_select(0, &train), counts, train_cells, sums }
        });
        Ok(Ablation {
            task: *task,
            split: split.clone(),
            train_labels: labels.index_select(0, &train),
            train,
            labels,
            classes,
        })
    }

    /// What the ablations need from one model, given its last position over all inputs.
    pub fn parts(&self, model: &HookedTransformer, acts: &LastPosition) -> Result<LogitParts> {
        check_all_inputs(&acts.logits, &self.task, "logits")?;
        check_all_inputs(&acts.mlp_post, &self.task, "mlp_post")?;
        let logits = acts.logits.detach().to_device(Device::Cpu);
        let mlp = acts.mlp_post.detach().to_device(Device::Cpu);
        let w = w_logit(model);
        // Summed in the activations' own precision (float32 from the forward), then float64.
        let zeros = Tensor::zeros([self.task.p, mlp.size()[1]], (mlp.kind(), Device::Cpu));
        let by_sum = |c: &SumClasses| f64_cpu(&zeros.index_add(0, &c.sums, &mlp)).matmul(&w);
        let train_logits = logits.index_select(0, &self.train);
        let correct = f64_cpu(&train_logits).gather(1, &self.train_labels.unsqueeze(1), false);
        Ok(LogitParts {
            train_correct: correct.mean(Kind::Double).double_value(&[]),
            train_logits,
            mean_logits: logits.to_kind(Kind::Double).mean_dim(0, false, Kind::Double),
            mlp_by_sum: self.classes.map(|_, classes| by_sum(classes)),
        })
    }

    /// The excluded loss of each model: the training loss with the projection onto the
    /// key directions removed from the neuron activations once.
    pub fn excluded_loss(&self, parts: &[LogitParts], dirs: &Directions) -> Result<Vec<f64>> {
        let r = self.projector(dirs)?;
        Ok(parts.iter().map(|part| self.excluded_with(part, dirs.view, &r)).collect())
    }

    /// The seed's `get_excluded_loss` as written: for each key frequency the unit vector
    /// cos(2πk·s/p) over the inputs, its projection added to the approximation twice
    /// (the block is pasted twice), no sines, and the approximation subtracted.
    pub fn excluded_loss_seed_buggy(&self, parts: &[LogitParts], view: View, key_freqs: &[i64]) -> Result<Vec<f64>> {
        self.check_freqs(key_freqs)?;
        let cosines = self.waves(key_freqs, Projection::CosOnly);
        let norms_sq = self.classes[view].counts.matmul(&cosines.square()); // ‖v_k‖² over the inputs
        let scale = (norms_sq.reciprocal() * 2.0).where_self(&norms_sq.gt(0.0), &norms_sq.zeros_like());
        let r = (&cosines * scale).matmul(&cosines.tr());
        Ok(parts.iter().map(|part| self.excluded_with(part, view, &r)).collect())
    }

    /// The restricted loss of each model on `subset`: only the mean and the key-frequency
    /// part of the neuron activations kept.
    pub fn restricted_loss(&self, parts: &[LogitParts], dirs: &Directions, subset: Subset) -> Result<Vec<f64>> {
        let r = self.projector(dirs)?;
        let classes = &self.classes[dirs.view];
        let indices = match subset {
            Subset::Train => self.split.train.clone(),
            Subset::Test => self.split.test.clone(),
            Subset::All => (0..self.task.n_pairs()).collect(),
        };
        let indices = Tensor::from_slice(&indices);
        let p = self.task.p;
        let weights = cell_counts(&classes.sums, &self.labels, &indices, p);
        let n = indices.size()[0] as f64;
        Ok(parts
            .iter()
            .map(|part| {
                let d = r.matmul(&part.mlp_by_sum[dirs.view]);
                let shift = &part.mean_logits - classes.counts.matmul(&d) / (p * p) as f64;
                let logits = d + shift.unsqueeze(0);
                let log_probs = logits.log_softmax(-1, Kind::Double);
                -(log_probs * &weights).sum(Kind::Double).double_value(&[]) / n
            })
            .collect())
    }

    /// The float64 `loss_fn` of logits − D[s] on the training inputs, as
    /// mean(logsumexp(logits − D[s])) − mean(correct logit) + mean(D[s, label]).
    fn excluded_with(&self, part: &LogitParts, view: View, r: &Tensor) -> f64 {
        let classes = &self.classes[view];
        let d = r.matmul(&part.mlp_by_sum[view]);
        let log_norm = mean_log_sum_exp(&part.train_logits, &classes.train_sums, &d);
        let n = classes.train_sums.size()[0] as f64;
        log_norm - part.train_correct + (d * &classes.train_cells).sum(Kind::Double).double_value(&[]) / n
    }

    /// R = Φ (Φᵀ diag(N) Φ)⁺ Φᵀ: `[p, p]`, D = R Z.
    fn projector(&self, dirs: &Directions) -> Result<Tensor> {
        self.check_freqs(&dirs.key_freqs)?;
        let p = self.task.p;
        if dirs.key_freqs.is_empty() {
            return Ok(Tensor::zeros([p, p], (Kind::Double, Device::Cpu)));
        }
        let phi = self.waves(&dirs.key_freqs, dirs.projection);
        let gram = phi.tr().matmul(&(&phi * self.classes[dirs.view].counts.unsqueeze(1)));
        Ok(phi.matmul(&gram.linalg_pinv(1e-10, true)).matmul(&phi.tr()))
    }

    /// Φ: `[p, m]`, the waves of the key frequencies over s = 0..p (cos k then sin k per k).
    fn waves(&self, key_freqs: &[i64], projection: Projection) -> Tensor {
        let p = self.task.p;
        let points: Vec<i64> = (0..p).collect();
        let mut columns = Vec::new();
        for &k in key_freqs {
            let (sin, cos) = waves(p, k, &points);
            columns.push(cos);
            if projection == Projection::SinCos {
                columns.push(sin);
            }
        }
        if columns.is_empty() {
            return Tensor::zeros([p, 0], (Kind::Double, Device::Cpu));
        }
        Tensor::stack(&columns, 1)
    }

    fn check_freqs(&self, key_freqs: &[i64]) -> Result<()> {
        check_key_freqs(self.task.p, key_freqs)
    }
}

/// The excluded loss of one model: its training loss with the key directions of `dirs`
/// projected out of the last position's neuron activations, once.
pub fn excluded_loss(
    model: &HookedTransformer,
    acts: &LastPosition,
    task: &Task,
    split: &Split,
    dirs: &Directions,
) -> Result<f64> {
    let ablation = Ablation::new(task, split)?;
    Ok(ablation.excluded_loss(&[ablation.parts(model, acts)?], dirs)?[0])
}

/// The seed's buggy excluded loss of one model (cosine projection subtracted twice).
pub fn excluded_loss_seed_buggy(
    model: &HookedTransformer,
    acts: &LastPosition,
    task: &Task,
    split: &Split,
    view: View,
    key_freqs: &[i64],
) -> Result<f64> {
    let ablation = Ablation::new(task, split)?;
    Ok(ablation.excluded_loss_seed_buggy(&[ablation.parts(model, acts)?], view, key_freqs)?[0])
}

/// The restricted loss of one model on `subset`.
pub fn restricted_loss(
    model: &HookedTransformer,
    acts: &LastPosition,
    task: &Task,
    split: &Split,
    dirs: &Directions,
    subset: Subset,
) -> Result<f64> {
    let ablation = Ablation::new(task, split)?;
    Ok(ablation.restricted_loss(&[ablation.parts(model, acts)?], dirs, subset)?[0])
}
