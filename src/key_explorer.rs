//! Tweaking key frequencies: everything a key set changes, from parts computed once.
//!
//! [`KeyExplorer::new`] takes the measures over training (one pass over the checkpoints,
//! [`OverTraining`]) and the final model's logits and neuron-to-logit map. After that:
//! * [`KeyExplorer::charts`] redraws, for any key set K, every chart that depends on it:
//!   the residual of the logits in both views, excluded and restricted loss, the share of
//!   the embedding's, W_out·W_U's and each neuron's Fourier energy in K, each beside the
//!   same for a control (as many frequencies the model does not lean on), and the final
//!   logits of one input next to their key-frequency approximation. No forward pass: a new
//!   K costs a p × p product and a pass over the training logits per checkpoint.
//! * [`KeyExplorer::chooser`] puts a key-frequency chooser into the page that recomputes
//!   in the browser what is additive over frequencies (residual, energy shares) and shows
//!   excluded and restricted loss for the named sets ([`key_sets::presets`]) computed
//!   here beforehand.

use std::rc::Rc;

use ndarray::Array2;
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

use crate::arrays::to_array2;
use crate::error::Result;
use crate::fourier::View;
use crate::measures::key_sets::{self, KeySet};
use crate::measures::{all_inputs, check_key_freqs, neuron_logit_freq, Directions, KeyFreqs, OverTraining, Subset};
use crate::model::HookedTransformer;
use crate::plot::{line, Chooser, Figure};
use crate::run::Run;
use crate::series::{freq_names, sorted};

/// What a key set changes, ready to recompute for any set.
pub struct KeyExplorer {
    over: Rc<OverTraining>,
    /// The task-view key set the analysis found (or was given), with its evidence.
    keys: KeyFreqs,
    phase_lines: Vec<f64>,
    /// `[(p−1)/2, d_mlp]`: each neuron's share of its W_out·W_U row's energy per frequency (final model).
    neuron_share: Array2<f64>,
    /// The final model's logits over all p² inputs, float64 `[p², p]`.
    final_logits: Tensor,
    /// The input whose logits [`KeyExplorer::charts`] approximates: the first test pair in
    /// an unseen cell where there is one, else the first test pair.
    example: i64,
}

impl KeyExplorer {
    pub fn new(
        over: Rc<OverTraining>,
        final_model: &HookedTransformer,
        keys: KeyFreqs,
        phase_lines: &[i64],
    ) -> Result<Self> {
        let acts = all_inputs(final_model, &over.task)?;
        let neuron_share = to_array2(&neuron_logit_freq(final_model)?.norm)?;
        let cov = &over.coverage;
        let example = cov.unseen_test_pairs.first().or(cov.seen_test_pairs.first()).copied().unwrap_or(0);
        Ok(KeyExplorer {
            keys,
            phase_lines: phase_lines.iter().map(|&e| e as f64).collect(),
            neuron_share,
            final_logits: acts.logits.to_kind(Kind::Double),
            example,
            over,
        })
    }

    /// Everything a run's key-set charts need, found as `groklens analyze` finds it: the
    /// measures over its checkpoints, the task view's key set
    /// ([`OverTraining::detect_keys`]) and the phase lines ([`OverTraining::detect_phases`]).
    pub fn from_run(run: &Run, device: Device) -> Result<Self> {
        let over = OverTraining::from_run(run, device)?;
        let keys = over.detect_keys()?.task;
        let phases = over.detect_phases(&run.train_losses, &run.test_losses, &run.by_cell, &keys.directions())?;
        KeyExplorer::new(Rc::new(over), &run.final_model(device)?, keys, &phases.lines())
    }

    pub fn over(&self) -> &OverTraining {
        &self.over
    }

    /// The key set found, with its evidence.
    pub fn keys(&self) -> &KeyFreqs {
        &self.keys
    }

    /// The named sets the chooser offers.
    pub fn presets(&self) -> Vec<KeySet> {
        key_sets::presets(&self.over.task, &self.keys)
    }

    /// Per neuron (final model), the share of its output's Fourier energy in K.
    pub fn neuron_share_in(&self, key_freqs: &[i64]) -> Vec<f64> {
        let cols = self.neuron_share.t().to_owned();
        crate::measures::over_training::share_in(&cols, key_freqs)
    }

    /// Every chart that depends on the key set, for K and its control.
    pub fn charts(&self, key_freqs: &[i64]) -> Result<Vec<Figure>> {
        check_key_freqs(self.over.task.p, key_freqs)?;
        let over = &self.over;
        let control = key_sets::control(key_freqs, &self.keys.evidence);
        let (k_name, c_name) = (format!("K = {key_freqs:?}"), format!("control {control:?}"));
        let lines = &self.phase_lines;
        let epochs = &over.epochs;
        let residual = line([
            over.residual(View::Standard, key_freqs),
            over.residual(View::Task, key_freqs),
            over.residual(View::Task, &control),
        ])
        .x(epochs)
        .labels(["a + b view, K".to_string(), "task view, K".into(), format!("task view, {c_name}")])
        .title("Residual fraction of the logits outside K")
        .xaxis("Epoch")
        .yaxis("‖L − Σ_K α_k C_k‖ / ‖L‖")
        .phase_lines(lines);
        let (dirs, control_dirs) = (Directions::new(View::Task, key_freqs), Directions::new(View::Task, &control));
        let losses = line([
            over.train_loss.clone(),
            over.test_loss.clone(),
            over.excluded_loss(&dirs)?,
            over.excluded_loss(&control_dirs)?,
            over.restricted_loss(&dirs, Subset::Test)?,
            over.restricted_loss(&control_dirs, Subset::Test)?,
        ])
        .x(epochs)
        .labels([
            "train".to_string(),
            "test".into(),
            "excluded, K (train)".into(),
            format!("excluded, {c_name}"),
            "restricted, K (test)".into(),
            format!("restricted, {c_name}"),
        ])
        .title(format!("Excluded and restricted loss, {k_name}"))
        .xaxis("Epoch")
        .yaxis("Loss")
        .log_y(true)
        .toggle_y()
        .phase_lines(lines);
        let energy = line([
            over.embed_energy_in(key_freqs),
            over.logit_map_energy_in(key_freqs),
            over.embed_energy_in(&control),
            over.logit_map_energy_in(&control),
        ])
        .x(epochs)
        .labels([
            "W_E over a, K".to_string(),
            "W_out·W_U over c, K".into(),
            format!("W_E, {c_name}"),
            format!("W_out·W_U, {c_name}"),
        ])
        .title("Share of the Fourier energy in K")
        .xaxis("Epoch")
        .yaxis("Share")
        .phase_lines(lines);
        let neurons = line([sorted(&self.neuron_share_in(key_freqs)), sorted(&self.neuron_share_in(&control))])
            .labels([k_name.clone(), c_name.clone()])
            .title("Each neuron's output (its W_out·W_U row) in K, final model, sorted")
            .xaxis("Neuron (sorted)")
            .yaxis("Share of the row's energy");
        Ok(vec![residual, losses, energy, neurons, self.approximated_logits(key_freqs)?])
    }

    /// Displays [`KeyExplorer::charts`] in one evcxr output.
    pub fn show(&self, key_freqs: &[i64]) -> Result<()> {
        crate::plot::show_all(&self.charts(key_freqs)?);
        Ok(())
    }

    /// The final logits of the example input over c, centred, and Σ_{k∈K} α_k C_k there
    /// (task view): C_k[a, b, c] = cos(2πk(u + v − c)/p) / √(p³/2), the unit cube.
    fn approximated_logits(&self, key_freqs: &[i64]) -> Result<Figure> {
        let task = &self.over.task;
        let p = task.p;
        let last = self.over.epochs.len() - 1;
        let alpha = self.over.view(View::Task).coefficients.row(last).to_vec();
        let s = View::Task.sums(task)[self.example as usize];
        let unit = ((p * p * p) as f64 / 2.0).sqrt();
        let approx: Vec<f64> = (0..p)
            .map(|c| {
                key_freqs
                    .iter()
                    .map(|&k| {
                        let angle = 2.0 * std::f64::consts::PI * (k * (s - c)).rem_euclid(p) as f64 / p as f64;
                        alpha[k as usize - 1] * angle.cos() / unit
                    })
                    .sum()
            })
            .collect();
        let row = self.final_logits.get(self.example);
        let actual = Vec::<f64>::try_from(&(&row - row.mean(Kind::Double)))?;
        let (a, b) = (self.example / p, self.example % p);
        let answer = task.labels().int64_value(&[self.example]);
        let unseen = if self.over.coverage.unseen_test_pairs.is_empty() { "" } else { " in an unseen cell" };
        Ok(line([actual, approx])
            .labels(["final logits, centred".to_string(), format!("Σ_K α_k C_k, K = {key_freqs:?}")])
            .title(format!("Logits of (a, b) = ({a}, {b}), a test pair{unseen}; answer c = {answer}"))
            .xaxis("c")
            .yaxis("Logit")
            .phase_lines([answer as f64]))
    }

    /// The in-page chooser, with excluded and restricted loss computed here for every
    /// preset (the expensive part: two re-keyings of every checkpoint per preset).
    pub fn chooser(&self) -> Result<Chooser> {
        let over = &self.over;
        let presets: Vec<Value> = self
            .presets()
            .into_iter()
            .map(|set| {
                let dirs = Directions::new(View::Task, &set.freqs);
                Ok(json!({
                    "name": set.name, "freqs": set.freqs,
                    "excluded": over.excluded_loss(&dirs)?, "restricted": over.restricted_loss(&dirs, Subset::Test)?,
                }))
            })
            .collect::<Result<_>>()?;
        let rows = |m: &Array2<f64>| -> Vec<Vec<f64>> { m.rows().into_iter().map(|r| r.to_vec()).collect() };
        let data = json!({
            "p": over.task.p,
            "freqs": (1..=(over.task.p - 1) / 2).collect::<Vec<i64>>(),
            "freq_names": freq_names(&(1..=(over.task.p - 1) / 2).collect::<Vec<i64>>()),
            "epochs": over.epochs,
            "phase_lines": self.phase_lines,
            "cos_sims": {
                "standard": rows(&over.view(View::Standard).cos_sims),
                "task": rows(&over.view(View::Task).cos_sims),
            },
            "embed_share": rows(&over.embed_freq_share),
            "logit_map_share": rows(&over.logit_map_freq_share),
            "neuron_share": rows(&self.neuron_share.t().to_owned()),
            "train_loss": over.train_loss,
            "test_loss": over.test_loss,
            "key_set": self.keys.freqs,
            "presets": presets,
        });
        Ok(Chooser::new(data))
    }
}
