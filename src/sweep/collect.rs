//! What each run of a sweep learned: when its accuracies crossed thresholds, its
//! phase (after Liu et al. 2022), how its embedding splits between sines and cosines,
//! and its key frequencies; written to `results.json` and `report.html`.
//!
//! Accuracies: the test accuracy per epoch is the seen-cell and unseen-cell accuracies
//! of `losses.csv` weighted by their pair counts; the train accuracy is taken at the
//! checkpoints (a forward pass each), so its first epoch over a threshold is the
//! checkpoint's epoch, an upper bound by at most the checkpoint interval.

use std::collections::BTreeMap;

use serde::Serialize;
use tch::Device;

use super::plan::axis_values;
use super::{RunState, Sweep};
use crate::coverage::Coverage;
use crate::error::{Error, Result};
use crate::fourier::{PerView, View};
use crate::measures::{accuracy, all_inputs, logit_periodicity, sin_cos_energy, LogitRule, SinCosEnergy};
use crate::model::HookedTransformer;
use crate::run::{write_json, Run};

/// The accuracy thresholds whose first epochs are recorded.
pub const ACCURACY_THRESHOLDS: [f64; 3] = [0.9, 0.99, 1.0];
/// The threshold the phases and heatmaps use.
pub const LEARNED: f64 = 0.99;
/// An embedding "uses only cosines" when its sine share is below this. A random
/// embedding (the initial weights, the control) has a sine share near 1/2.
pub const COSINE_ONLY: f64 = 0.01;

/// Liu et al.'s four phases, from the first epochs with train and test accuracy ≥ [`LEARNED`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Test accuracy follows train accuracy closely: generalises with no long delay.
    Comprehension,
    /// Test accuracy comes long after train accuracy: the generalisation delay is at
    /// least as long as fitting the training set took, and at least one checkpoint interval.
    Grokking,
    /// Fits the training set, never the test set.
    Memorization,
    /// Never fits the training set.
    Confusion,
}

impl Phase {
    pub const ALL: [Phase; 4] = [Phase::Comprehension, Phase::Grokking, Phase::Memorization, Phase::Confusion];
    pub const RULE: &'static str = "confusion: train accuracy never reaches 0.99; memorization: it does, test \
        accuracy never does; grokking: test accuracy reaches 0.99 at epoch E_test > 2·E_train and \
        E_test − E_train ≥ the checkpoint interval, E_train the first checkpoint with train accuracy ≥ 0.99; \
        comprehension: earlier than that";

    fn classify(train_at: Option<i64>, test_at: Option<i64>, checkpoint_every: i64) -> Phase {
        match (train_at, test_at) {
            (None, _) => Phase::Confusion,
            (Some(_), None) => Phase::Memorization,
            (Some(tr), Some(te)) if te > 2 * tr && te - tr >= checkpoint_every => Phase::Grokking,
            _ => Phase::Comprehension,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Phase::Comprehension => "comprehension",
            Phase::Grokking => "grokking",
            Phase::Memorization => "memorization",
            Phase::Confusion => "confusion",
        }
    }
}

/// `results.json`.
#[derive(Debug, Serialize)]
pub struct Results {
    /// Each axis's values, as planned.
    pub axes: BTreeMap<String, Vec<String>>,
    pub phase_rule: &'static str,
    pub cosine_only_below: f64,
    pub runs: Vec<RunResult>,
}

#[derive(Debug, Serialize)]
pub struct RunResult {
    pub id: String,
    /// This run's value on each axis, as `axes` writes it.
    pub at: BTreeMap<String, String>,
    #[serde(flatten)]
    pub state: RunState,
    /// For a finished run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned: Option<Learned>,
}

/// What a finished run learned.
#[derive(Debug, Serialize)]
pub struct Learned {
    /// Per threshold of [`ACCURACY_THRESHOLDS`]: the first epoch with test accuracy at or above it.
    pub test_acc_first_epoch: Vec<Option<i64>>,
    /// The same on the test pairs of unseen cells (crate::coverage); `None` where the split leaves none.
    pub unseen_acc_first_epoch: Option<Vec<Option<i64>>>,
    pub unseen_test_pairs: usize,
    /// The first checkpoint epoch with train accuracy ≥ [`LEARNED`].
    pub train_acc_first_checkpoint: Option<i64>,
    pub final_train_acc: f64,
    pub final_test_acc: f64,
    pub final_unseen_acc: Option<f64>,
    pub phase: Phase,
    /// The embedding's energy in the standard view (x = a), after training and before.
    pub embedding: SinCosEnergy,
    pub embedding_init: SinCosEnergy,
    /// sin / (sin + cos) of `embedding`; below [`COSINE_ONLY`] it uses only cosines.
    pub sine_share: f64,
    pub sine_share_init: f64,
    /// Detected from the final logits, as `groklens analyze` does.
    pub key_freqs: PerView<Vec<i64>>,
}

/// Reads every planned run of `sweep` and writes `results.json` and `report.html`.
pub fn collect(sweep: &Sweep, device: Device) -> Result<Results> {
    let mut runs = Vec::new();
    for planned in &sweep.plan.runs {
        let (state, run) = sweep.state(planned)?;
        let learned = match (&state, run) {
            (RunState::Finished, Some(run)) => Some(learned(&run, device)?),
            _ => None,
        };
        runs.push(RunResult { id: planned.id.clone(), at: axis_values(&planned.config), state, learned });
    }
    let results = Results { axes: sweep.plan.axes(), phase_rule: Phase::RULE, cosine_only_below: COSINE_ONLY, runs };
    sweep.write_atomic(super::RESULTS, |path| write_json(path, &results))?;
    sweep.write_atomic(super::REPORT, |path| super::report::write(path, &results))?;
    Ok(results)
}

/// The first index whose value reaches `threshold`.
fn first_reaching(values: &[f64], threshold: f64) -> Option<i64> {
    values.iter().position(|&v| v >= threshold).map(|e| e as i64)
}

fn learned(run: &Run, device: Device) -> Result<Learned> {
    let (task, split) = (&run.config.task, &run.split);
    let cells = &run.by_cell;
    if cells.len() != run.test_losses.len() {
        return Err(Error::format(format!("{}: losses.csv has no seen/unseen-cell columns", run.dir.display())));
    }
    let coverage = Coverage::new(task, split);
    let (unseen, seen) = (coverage.unseen_test_pairs.len() as f64, coverage.seen_test_pairs.len() as f64);
    let weighted = |acc: f64, n: f64| if n > 0.0 { acc * n } else { 0.0 };
    let test_acc: Vec<f64> = (0..cells.len())
        .map(|e| {
            (weighted(cells.test_acc_seen[e], seen) + weighted(cells.test_acc_unseen[e], unseen)) / (seen + unseen)
        })
        .collect();
    let thresholds = |acc: &[f64]| ACCURACY_THRESHOLDS.iter().map(|&t| first_reaching(acc, t)).collect::<Vec<_>>();
    let labels = task.labels();
    let train_acc = |model: &HookedTransformer| accuracy(&all_inputs(model, task)?.logits, &labels, &split.train);
    let mut train_at = None;
    for &epoch in &run.checkpoint_epochs {
        if train_acc(&run.checkpoint(epoch, device)?)? >= LEARNED {
            train_at = Some(epoch);
            break;
        }
    }
    let (model, init) = (run.final_model(device)?, run.initial_model(device)?);
    let last = all_inputs(&model, task)?;
    let periodicity = PerView::try_new(|view| logit_periodicity(task, view, &last.logits))?;
    let key_freqs = LogitRule::default().detect_views(task, &periodicity).map(|_, k| k.freqs.clone());
    let (embedding, embedding_init) =
        (sin_cos_energy(&model, task, View::Standard)?, sin_cos_energy(&init, task, View::Standard)?);
    let sine_share = |e: &SinCosEnergy| e.sin / (e.sin + e.cos);
    let test_at = first_reaching(&test_acc, LEARNED);
    Ok(Learned {
        test_acc_first_epoch: thresholds(&test_acc),
        unseen_acc_first_epoch: (unseen > 0.0).then(|| thresholds(&cells.test_acc_unseen)),
        unseen_test_pairs: coverage.unseen_test_pairs.len(),
        train_acc_first_checkpoint: train_at,
        final_train_acc: accuracy(&last.logits, &labels, &split.train)?,
        final_test_acc: accuracy(&last.logits, &labels, &split.test)?,
        final_unseen_acc: (unseen > 0.0).then(|| cells.test_acc_unseen[cells.len() - 1]),
        phase: Phase::classify(train_at, test_at, run.config.train.checkpoint_every),
        sine_share: sine_share(&embedding),
        sine_share_init: sine_share(&embedding_init),
        embedding,
        embedding_init,
        key_freqs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_the_stated_rule() {
        assert_eq!(Phase::classify(None, Some(10), 100), Phase::Confusion);
        assert_eq!(Phase::classify(Some(99), None, 100), Phase::Memorization);
        assert_eq!(Phase::classify(Some(99), Some(150), 100), Phase::Comprehension);
        assert_eq!(Phase::classify(Some(99), Some(199), 100), Phase::Grokking);
        // A long delay relative to a quick fit, but within one checkpoint interval: not resolved.
        assert_eq!(Phase::classify(Some(9), Some(60), 100), Phase::Comprehension);
        assert_eq!(first_reaching(&[0.1, 0.95, 0.99, 0.98], 0.99), Some(2));
        assert_eq!(first_reaching(&[0.1, f64::NAN], 0.9), None);
    }
}
