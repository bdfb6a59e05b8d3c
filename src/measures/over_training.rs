//! The measures over training: one pass over a run's checkpoints, each model loaded,
//! run once over all p² inputs and dropped.
//!
//! What a key set does not change is computed in the pass: losses, accuracies, weight
//! norm, Gini coefficients, the embedding's sine/cosine split and class collapse, and per
//! view the logit periodicity. What it does change (residual, excluded and restricted
//! loss) is recomputed on demand from small per-checkpoint parts ([`LogitParts`]: the
//! training logits as float32 and two p × p matrices), so a new key set costs no forward
//! pass. Memory: about n_checkpoints × n_train × p × 4 bytes, in one tensor per
//! checkpoint. BENCHMARKS.md has what the pass and a new key set cost.

use ndarray::Array2;
use serde::Serialize;
use tch::{Device, Tensor};

use super::ablation::{Ablation, Directions, LogitParts, Subset};
use super::key_freqs::{KeyFreqs, LogitRule};
use super::logits::{periodicity_with, residual_fraction, LogitPeriodicity};
use super::weights::{
    accuracy, class_collapse, embed_fourier_norms, freq_shares, gini, logit_map_fourier_norms, sin_cos_energy,
    weight_norm, SinCosEnergy,
};
use super::{all_inputs, f64_cpu};
use crate::arrays::{from_rows, rows};
use crate::coverage::{CellCurves, Coverage};
use crate::error::{Error, Result};
use crate::fourier::{fourier_basis, PerView, View};
use crate::loss::loss_fn;
use crate::model::HookedTransformer;
use crate::phases::{detect_phases, Curve, PhaseCurves, PhaseRule, Phases};
use crate::run::Run;
use crate::task::{Split, Task};

/// Per-checkpoint series of one view.
#[derive(Clone, Debug, Serialize)]
pub struct ViewSeries {
    pub view: View,
    /// `[n_checkpoints, (p−1)/2]`: α_k (column k − 1), the seed's `cos_coeffs`.
    #[serde(serialize_with = "rows::serialize")]
    pub coefficients: Array2<f64>,
    /// `[n_checkpoints, (p−1)/2]`: α_k/‖L‖, the seed's `cos_sim`.
    #[serde(serialize_with = "rows::serialize")]
    pub cos_sims: Array2<f64>,
    /// ‖L‖.
    pub logit_norm: Vec<f64>,
    /// The seed's `residual_cos_sim` (every frequency).
    pub residual_all: Vec<f64>,
    /// Gini coefficient of the embedding's Fourier norms in this view.
    pub gini_embed: Vec<f64>,
    /// Constant / sine / cosine split of the embedding's Fourier energy in this view.
    pub sin_cos_energy: Vec<SinCosEnergy>,
}

impl ViewSeries {
    /// The logit periodicity at one checkpoint (by position in the series), for
    /// detecting key frequencies without running the model again.
    pub fn at(&self, checkpoint: usize) -> LogitPeriodicity {
        LogitPeriodicity {
            view: self.view,
            coefficients: self.coefficients.row(checkpoint).to_vec(),
            cos_sims: self.cos_sims.row(checkpoint).to_vec(),
            logit_norm: self.logit_norm[checkpoint],
        }
    }
}

/// The series that depend on a key set.
#[derive(Clone, Debug, Serialize)]
pub struct KeyedSeries {
    pub directions: Directions,
    /// ‖L − Σ_{k∈K} α_k C_k‖/‖L‖.
    pub residual: Vec<f64>,
    /// Training loss with the key directions projected out of the neurons.
    pub excluded_loss: Vec<f64>,
    /// Test loss with only the key directions (and the mean) kept.
    pub restricted_loss: Vec<f64>,
}

/// Every measure over a run's checkpoints.
#[derive(Serialize)]
pub struct OverTraining {
    pub task: Task,
    /// The checkpoint epochs (0-based, as the seed counts).
    pub epochs: Vec<i64>,
    /// The checkpoint model's own losses and accuracies (float64 `loss_fn`).
    pub train_loss: Vec<f64>,
    pub test_loss: Vec<f64>,
    pub train_accuracy: Vec<f64>,
    pub test_accuracy: Vec<f64>,
    /// Total sum of squared weights.
    pub weight_norm: Vec<f64>,
    /// Gini coefficient of the Fourier norms of W_out W_U (view-independent).
    pub gini_logit_map: Vec<f64>,
    /// `[n_checkpoints, (p−1)/2]`: the share of the embedding's Fourier energy (over a,
    /// standard view, where the basis is orthogonal) in the sine and cosine rows of each
    /// frequency; the rest is the constant row's.
    #[serde(serialize_with = "rows::serialize")]
    pub embed_freq_share: Array2<f64>,
    /// `[n_checkpoints, (p−1)/2]`: the same for W_out W_U over the output c.
    #[serde(serialize_with = "rows::serialize")]
    pub logit_map_freq_share: Array2<f64>,
    /// Within-class share of the embedding's variance, classes of g.
    pub class_collapse: Vec<f64>,
    /// The cells the training set covers, and per checkpoint the test loss and
    /// accuracy on the test pairs of seen and of unseen cells.
    pub coverage: Coverage,
    pub by_cell: CellCurves,
    pub views: PerView<ViewSeries>,
    #[serde(skip)]
    ablation: Ablation,
    #[serde(skip)]
    parts: Vec<LogitParts>,
}

impl OverTraining {
    /// Every checkpoint of a run folder, each model run on `device`.
    pub fn from_run(run: &Run, device: Device) -> Result<Self> {
        if run.checkpoint_epochs.is_empty() {
            return Err(Error::format(format!("{} has no checkpoints", run.dir.display())));
        }
        Self::compute(&run.config.task, &run.split, &run.checkpoint_epochs, |epoch| run.checkpoint(epoch, device))
    }

    /// The measures of the models `load(epoch)` for each epoch, in order.
    pub fn compute(
        task: &Task,
        split: &Split,
        epochs: &[i64],
        mut load: impl FnMut(i64) -> Result<HookedTransformer>,
    ) -> Result<Self> {
        let basis = fourier_basis(task.p)?;
        let ablation = Ablation::new(task, split)?;
        let sums = PerView::new(|view| Tensor::from_slice(&view.sums(task)));
        let labels = task.labels();
        let (train, test) = (split.train_tensor(), split.test_tensor());
        let coverage = Coverage::new(task, split);
        let cells = [&coverage.seen_test_pairs, &coverage.unseen_test_pairs].map(|pairs| Tensor::from_slice(pairs));
        let n_freqs = ((task.p - 1) / 2) as usize;
        let empty = || Array2::zeros((0, n_freqs));
        // Per view, α_k and cos sims per checkpoint; then the embedding's and the logit map's shares.
        let mut rows_of: PerView<[Vec<Vec<f64>>; 2]> = PerView::new(|_| [vec![], vec![]]);
        let (mut embed_share, mut logit_share) = (vec![], vec![]);
        let mut out = OverTraining {
            task: *task,
            epochs: epochs.to_vec(),
            train_loss: vec![],
            test_loss: vec![],
            train_accuracy: vec![],
            test_accuracy: vec![],
            weight_norm: vec![],
            gini_logit_map: vec![],
            embed_freq_share: empty(),
            logit_map_freq_share: empty(),
            class_collapse: vec![],
            coverage: coverage.clone(),
            by_cell: CellCurves::default(),
            views: PerView::new(|view| ViewSeries {
                view,
                coefficients: empty(),
                cos_sims: empty(),
                logit_norm: vec![],
                residual_all: vec![],
                gini_embed: vec![],
                sin_cos_energy: vec![],
            }),
            ablation,
            parts: vec![],
        };
        for &epoch in epochs {
            let model = load(epoch)?;
            let acts = all_inputs(&model, task)?;
            let logits = f64_cpu(&acts.logits);
            out.train_loss
                .push(loss_fn(&logits.index_select(0, &train), &labels.index_select(0, &train)).double_value(&[]));
            out.test_loss
                .push(loss_fn(&logits.index_select(0, &test), &labels.index_select(0, &test)).double_value(&[]));
            out.train_accuracy.push(accuracy(&logits, &labels, &split.train)?);
            out.test_accuracy.push(accuracy(&logits, &labels, &split.test)?);
            let [seen, unseen] = &cells;
            let on = |pairs: &Tensor| match pairs.numel() {
                0 => f64::NAN,
                _ => loss_fn(&logits.index_select(0, pairs), &labels.index_select(0, pairs)).double_value(&[]),
            };
            let (seen_acc, unseen_acc) = (
                accuracy(&logits, &labels, &coverage.seen_test_pairs)?,
                accuracy(&logits, &labels, &coverage.unseen_test_pairs)?,
            );
            out.by_cell.push([on(seen), on(unseen), seen_acc, unseen_acc]);
            out.weight_norm.push(weight_norm(&model));
            let logit_map_norms = logit_map_fourier_norms(&model)?;
            out.gini_logit_map.push(gini(&logit_map_norms));
            logit_share.push(freq_shares(&logit_map_norms));
            out.class_collapse.push(class_collapse(&model, task)?);
            for (view, series) in out.views.iter_mut() {
                let sums = &sums[view];
                let periodicity = periodicity_with(&basis, series.view, sums, &logits)?;
                series.residual_all.push(periodicity.residual_all());
                let [coefficients, cos_sims] = &mut rows_of[view];
                coefficients.push(periodicity.coefficients);
                cos_sims.push(periodicity.cos_sims);
                series.logit_norm.push(periodicity.logit_norm);
                let embed_norms = embed_fourier_norms(&model, task, series.view)?;
                series.gini_embed.push(gini(&embed_norms));
                if view == View::Standard {
                    embed_share.push(freq_shares(&embed_norms));
                }
                series.sin_cos_energy.push(sin_cos_energy(&model, task, series.view)?);
            }
            out.parts.push(out.ablation.parts(&model, &acts)?);
        }
        for (view, series) in out.views.iter_mut() {
            let [coefficients, cos_sims] = &rows_of[view];
            series.coefficients = from_rows(coefficients, n_freqs);
            series.cos_sims = from_rows(cos_sims, n_freqs);
        }
        out.embed_freq_share = from_rows(&embed_share, n_freqs);
        out.logit_map_freq_share = from_rows(&logit_share, n_freqs);
        Ok(out)
    }

    pub fn view(&self, view: View) -> &ViewSeries {
        &self.views[view]
    }

    /// ‖L − Σ_{k∈K} α_k C_k‖/‖L‖ per checkpoint.
    pub fn residual(&self, view: View, key_freqs: &[i64]) -> Vec<f64> {
        self.view(view).cos_sims.rows().into_iter().map(|c| residual_fraction(&c.to_vec(), key_freqs)).collect()
    }

    /// The share of the embedding's Fourier energy (standard view) in the key frequencies, per checkpoint.
    pub fn embed_energy_in(&self, key_freqs: &[i64]) -> Vec<f64> {
        share_in(&self.embed_freq_share, key_freqs)
    }

    /// The share of W_out W_U's Fourier energy (over c) in the key frequencies, per checkpoint.
    pub fn logit_map_energy_in(&self, key_freqs: &[i64]) -> Vec<f64> {
        share_in(&self.logit_map_freq_share, key_freqs)
    }

    /// The excluded loss per checkpoint (see [`Ablation::excluded_loss`]).
    pub fn excluded_loss(&self, dirs: &Directions) -> Result<Vec<f64>> {
        self.ablation.excluded_loss(&self.parts, dirs)
    }

    /// The seed's buggy excluded loss per checkpoint (see [`Ablation::excluded_loss_seed_buggy`]).
    pub fn excluded_loss_seed_buggy(&self, view: View, key_freqs: &[i64]) -> Result<Vec<f64>> {
        self.ablation.excluded_loss_seed_buggy(&self.parts, view, key_freqs)
    }

    /// The restricted loss per checkpoint on `subset` (see [`Ablation::restricted_loss`]).
    pub fn restricted_loss(&self, dirs: &Directions, subset: Subset) -> Result<Vec<f64>> {
        self.ablation.restricted_loss(&self.parts, dirs, subset)
    }

    /// The curves [`crate::phases::detect_phases`] reads: the per-epoch losses where
    /// given (a run's `train_losses`, `test_losses` and `by_cell`; else the checkpoints'
    /// own), and per checkpoint the excluded loss, the restricted loss (test set) and the
    /// weight norm. Where the task's classes collapse (some test pairs lie in cells the
    /// training set covers) the test curve is the test loss on unseen cells: the rest is
    /// lookup.
    pub fn phase_curves(
        &self,
        train_losses: &[f64],
        test_losses: &[f64],
        by_cell: &CellCurves,
        dirs: &Directions,
    ) -> Result<PhaseCurves> {
        let losses = |per_epoch: &[f64], own: &[f64]| match per_epoch.is_empty() {
            true => Curve::new(&self.epochs, own),
            false => Curve::per_epoch(per_epoch),
        };
        let collapses = !self.coverage.seen_test_pairs.is_empty() && !self.coverage.unseen_test_pairs.is_empty();
        let (test_loss, test_loss_name) = match collapses {
            true => (losses(&by_cell.test_loss_unseen, &self.by_cell.test_loss_unseen)?, "test loss on unseen cells"),
            false => (losses(test_losses, &self.test_loss)?, "test loss"),
        };
        Ok(PhaseCurves {
            train_loss: losses(train_losses, &self.train_loss)?,
            test_loss,
            test_loss_name: test_loss_name.into(),
            excluded_loss: Some(Curve::new(&self.epochs, &self.excluded_loss(dirs)?)?),
            restricted_loss: Some(Curve::new(&self.epochs, &self.restricted_loss(dirs, Subset::Test)?)?),
            weight_norm: Some(Curve::new(&self.epochs, &self.weight_norm)?),
        })
    }

    /// The key sets [`LogitRule`] finds in the last checkpoint's logits, per view.
    pub fn detect_keys(&self) -> Result<PerView<KeyFreqs>> {
        let last = self
            .epochs
            .len()
            .checked_sub(1)
            .ok_or_else(|| Error::format("no checkpoints to find key frequencies in"))?;
        Ok(LogitRule::default().detect_views(&self.task, &PerView::new(|view| self.view(view).at(last))))
    }

    /// The phases [`detect_phases`] finds in [`OverTraining::phase_curves`].
    pub fn detect_phases(
        &self,
        train_losses: &[f64],
        test_losses: &[f64],
        by_cell: &CellCurves,
        dirs: &Directions,
    ) -> Result<Phases> {
        Ok(detect_phases(&self.phase_curves(train_losses, test_losses, by_cell, dirs)?, &PhaseRule::default()))
    }

    /// Residual, excluded loss and restricted loss (test set) for one key set.
    pub fn keyed(&self, dirs: &Directions) -> Result<KeyedSeries> {
        Ok(KeyedSeries {
            directions: dirs.clone(),
            residual: self.residual(dirs.view, &dirs.key_freqs),
            excluded_loss: self.excluded_loss(dirs)?,
            restricted_loss: self.restricted_loss(dirs, Subset::Test)?,
        })
    }
}

/// Σ_{k∈K} of each row's column k − 1 (frequencies out of range are ignored).
pub(crate) fn share_in(per_freq: &Array2<f64>, key_freqs: &[i64]) -> Vec<f64> {
    let cols: Vec<usize> =
        key_freqs.iter().filter(|&&k| k >= 1 && k as usize <= per_freq.ncols()).map(|&k| k as usize - 1).collect();
    per_freq.rows().into_iter().map(|row| cols.iter().map(|&c| row[c]).sum()).collect()
}
