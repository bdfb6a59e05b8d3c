//! The whole analysis of a trained model's history, as `groklens analyze` writes it to
//! `analysis.json`: the final model's measures in both views, the key frequencies and
//! phases with the rules that found them, and every measure over training.

use std::rc::Rc;

use serde::Serialize;
use tch::Device;

use crate::coverage::{CellCurves, Coverage};
use crate::error::{Error, Result};
use crate::fourier::{PerView, View};
use crate::import::History;
use crate::key_explorer::KeyExplorer;
use crate::measures::{
    check_key_freqs, key_sets, view_overlap, Directions, KeyFreqs, OverTraining, SinCosEnergy, Subset,
};
use crate::phases::Phases;

/// What the user may fix by hand instead of detecting.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Key frequencies for both views.
    pub key_freqs: Option<Vec<i64>>,
    /// Memorisation end, circuit formation end, clean-up end.
    pub phases: Option<[i64; 3]>,
}

impl Overrides {
    /// Fails unless the key frequencies are Z_p's and the phase boundaries ascend.
    pub fn validate(&self, p: i64) -> Result<()> {
        if let Some(freqs) = &self.key_freqs {
            check_key_freqs(p, freqs)?;
        }
        match self.phases {
            Some([m, c, k]) if !(m <= c && c <= k) => {
                Err(Error::config(format!("phase boundaries must ascend, got {m}, {c}, {k}")))
            }
            _ => Ok(()),
        }
    }
}

#[derive(Serialize)]
pub struct EmbeddingFourier {
    pub sin_energy: f64,
    pub cos_energy: f64,
    pub const_energy: f64,
}

impl From<SinCosEnergy> for EmbeddingFourier {
    fn from(e: SinCosEnergy) -> Self {
        EmbeddingFourier { sin_energy: e.sin, cos_energy: e.cos, const_energy: e.constant }
    }
}

/// The last checkpoint's measures.
#[derive(Serialize)]
pub struct Final {
    pub epoch: i64,
    /// Cosine similarity of the logits with the cube of each frequency 1..(p−1)/2.
    pub logit_cos_sim: PerView<Vec<f64>>,
    /// ‖L − Σ_{key} α_k C_k‖ / ‖L‖ over each view's key frequencies.
    pub residual_fraction: PerView<f64>,
    /// How F·W_E's energy splits between constant, sine and cosine rows (standard view).
    pub embedding_fourier: EmbeddingFourier,
    /// Within-class share of W_E's variance, classes of equal g(a).
    pub class_collapse: f64,
    pub train_accuracy: f64,
    pub test_accuracy: f64,
    /// Per neuron, the share of its output's Fourier energy (its W_out·W_U row over c) in
    /// the task view's key frequencies.
    pub neuron_share_in_keys: Vec<f64>,
}

#[derive(Serialize)]
pub struct KeyFrequencies {
    pub standard: Vec<i64>,
    pub task: Vec<i64>,
    pub rule: String,
    /// The score per frequency each set was chosen from (index k − 1).
    pub evidence: PerView<Vec<f64>>,
    /// The floor per frequency each view's rule used: the random-cube control or the
    /// other view's leak, whichever is larger (index k − 1).
    pub floors: PerView<Vec<f64>>,
    /// O_k, the overlap of the two views' unit cubes at each frequency (index k − 1).
    pub view_overlap: Vec<f64>,
    /// As many task-view frequencies as the key set, of the smallest |cos sim| outside
    /// it: what the excluded loss's control removes.
    pub control: Vec<i64>,
}

/// Per checkpoint. The excluded and restricted losses use the task view's key frequencies.
#[derive(Serialize)]
pub struct Series {
    pub epochs: Vec<i64>,
    pub train_loss: Vec<f64>,
    pub test_loss: Vec<f64>,
    pub train_accuracy: Vec<f64>,
    pub test_accuracy: Vec<f64>,
    pub excluded_loss: Vec<f64>,
    /// The control: the excluded loss with as many non-key frequencies removed instead,
    /// those with the smallest task-view cosine similarities ([`KeyFrequencies::control`]).
    pub excluded_loss_control: Vec<f64>,
    pub restricted_loss: Vec<f64>,
    /// Restricted loss over test loss: near 1 when the key frequencies carry what the
    /// model does on the test set.
    pub restricted_over_test: Vec<f64>,
    /// Gini coefficient of the Fourier norms of W_E (standard view, the paper's).
    pub gini_embedding: Vec<f64>,
    pub gini_embedding_task: Vec<f64>,
    pub gini_logit_map: Vec<f64>,
    pub weight_norm: Vec<f64>,
    pub class_collapse: Vec<f64>,
    pub residual_fraction: PerView<Vec<f64>>,
    /// The share of W_E's Fourier energy over a (standard view) in the task view's key frequencies.
    pub embed_energy_in_keys: Vec<f64>,
    /// The share of W_out·W_U's Fourier energy over c in them.
    pub logit_map_energy_in_keys: Vec<f64>,
}

/// Where the generalisation happens: the cells the training set covers and, per
/// checkpoint, the test loss and accuracy on the test pairs of seen and of unseen cells.
#[derive(Serialize)]
pub struct CoverageSeries {
    #[serde(flatten)]
    pub coverage: Coverage,
    #[serde(flatten)]
    pub per_checkpoint: CellCurves,
}

#[derive(Serialize)]
pub struct Analysis {
    pub task: String,
    #[serde(rename = "final")]
    pub final_: Final,
    pub key_frequencies: KeyFrequencies,
    pub phases: Phases,
    pub over_training: Series,
    pub coverage: CoverageSeries,
    /// Per-epoch losses of the training run (empty where the input has none).
    pub train_losses: Vec<f64>,
    pub test_losses: Vec<f64>,
    /// Per epoch on seen and unseen cells, where the run recorded it.
    #[serde(skip)]
    pub by_cell: CellCurves,
    #[serde(skip)]
    pub measures: Rc<OverTraining>,
    #[serde(skip)]
    pub keys: PerView<KeyFreqs>,
    /// The task view's key set, to tweak (report.html's chooser).
    #[serde(skip)]
    pub explorer: KeyExplorer,
}

/// Measures every checkpoint of `history` once, then detects (or takes) key
/// frequencies and phases and derives the rest from cached parts.
pub fn analyze(history: &History, overrides: &Overrides, device: Device) -> Result<Analysis> {
    let task = history.config.task;
    overrides.validate(task.p)?;
    let epochs = &history.checkpoint_epochs;
    if epochs.is_empty() {
        return Err(Error::format("nothing to analyse: no checkpoints"));
    }
    let measures = Rc::new(OverTraining::compute(&task, &history.split, epochs, |e| history.checkpoint(e, device))?);
    let last = epochs.len() - 1;

    let detected = measures.detect_keys()?;
    let keys = detected.map(|_, detected| match &overrides.key_freqs {
        Some(freqs) => detected.overridden(freqs),
        None => detected.clone(),
    });
    let task_dirs = keys.task.directions();
    let excluded_loss = measures.excluded_loss(&task_dirs)?;
    let control = key_sets::control(&keys.task.freqs, &keys.task.evidence);
    let excluded_loss_control = measures.excluded_loss(&Directions::new(View::Task, &control))?;
    let restricted_loss = measures.restricted_loss(&task_dirs, Subset::Test)?;
    let restricted_over_test = restricted_loss.iter().zip(&measures.test_loss).map(|(r, t)| r / t).collect();
    let residual = keys.map(|view, key| measures.residual(view, &key.freqs));

    let phases = match overrides.phases {
        Some([m, c, k]) => Phases::manual(m, c, k),
        None => measures.detect_phases(&history.train_losses, &history.test_losses, &history.by_cell, &task_dirs)?,
    };

    let explorer = KeyExplorer::new(
        measures.clone(),
        &history.checkpoint(epochs[last], device)?,
        keys.task.clone(),
        &phases.lines(),
    )?;
    let standard = measures.view(View::Standard);
    let final_ = Final {
        epoch: epochs[last],
        logit_cos_sim: PerView::new(|view| measures.view(view).cos_sims.row(last).to_vec()),
        residual_fraction: residual.map(|_, r| r[last]),
        embedding_fourier: standard.sin_cos_energy[last].into(),
        class_collapse: measures.class_collapse[last],
        train_accuracy: measures.train_accuracy[last],
        test_accuracy: measures.test_accuracy[last],
        neuron_share_in_keys: explorer.neuron_share_in(&keys.task.freqs),
    };
    let key_frequencies = KeyFrequencies {
        standard: keys.standard.freqs.clone(),
        task: keys.task.freqs.clone(),
        rule: keys.task.rule.clone(),
        evidence: keys.map(|_, key| key.evidence.clone()),
        floors: keys.map(|_, key| key.floors.clone()),
        view_overlap: view_overlap(&task),
        control,
    };
    let over_training = Series {
        epochs: epochs.clone(),
        train_loss: measures.train_loss.clone(),
        test_loss: measures.test_loss.clone(),
        train_accuracy: measures.train_accuracy.clone(),
        test_accuracy: measures.test_accuracy.clone(),
        excluded_loss,
        excluded_loss_control,
        restricted_loss,
        restricted_over_test,
        gini_embedding: standard.gini_embed.clone(),
        gini_embedding_task: measures.view(View::Task).gini_embed.clone(),
        gini_logit_map: measures.gini_logit_map.clone(),
        weight_norm: measures.weight_norm.clone(),
        class_collapse: measures.class_collapse.clone(),
        residual_fraction: residual,
        embed_energy_in_keys: measures.embed_energy_in(&keys.task.freqs),
        logit_map_energy_in_keys: measures.logit_map_energy_in(&keys.task.freqs),
    };
    Ok(Analysis {
        task: task.describe(),
        final_,
        key_frequencies,
        phases,
        over_training,
        coverage: CoverageSeries { coverage: measures.coverage.clone(), per_checkpoint: measures.by_cell.clone() },
        train_losses: history.train_losses.clone(),
        test_losses: history.test_losses.clone(),
        by_cell: history.by_cell.clone(),
        measures,
        keys,
        explorer,
    })
}
