//! Key frequencies, chosen from evidence by a written rule, and overridable.
//!
//! Two rules, each returning the set, the rule as a sentence, its threshold and the
//! per-frequency evidence it looked at:
//! * [`LogitRule`]: the frequencies that carry the logits' periodic part — taken in
//!   decreasing |cos sim| until their squared cosine similarities reach a share (0.9) of
//!   the sum over all frequencies, none below a multiple (10×) of the random-cube level,
//!   nor below a multiple (2×) of what the other view leaks into this one at that
//!   frequency ([`leaks`]).
//! * [`NeuronRule`]: the frequencies that own a cluster of neurons — at least a share
//!   (1%, and at least one) of the neurons have their best frequency there with a
//!   fraction ≥ 0.85 of their energy (the a + b paper's criterion).

use serde::Serialize;

use super::ablation::Directions;
use super::logits::{random_cube_level, view_overlap, LogitPeriodicity};
use super::neurons::NeuronFreqNorm;
use crate::error::{Error, Result};
use crate::fourier::{PerView, View};
use crate::task::Task;

/// A key-frequency set with the reason for it.
#[derive(Clone, Debug, Serialize)]
pub struct KeyFreqs {
    pub view: View,
    /// Ascending.
    pub freqs: Vec<i64>,
    /// How the set was chosen, in words, with the numbers used.
    pub rule: String,
    /// The rule's main threshold (NaN for a set typed by hand).
    pub threshold: f64,
    /// The score per frequency k (index k − 1) the rule looked at; empty for a set typed by hand.
    pub evidence: Vec<f64>,
    /// The floor per frequency k (index k − 1) under which the rule takes none; empty
    /// where the rule has no floors (neuron clusters, a set typed by hand).
    pub floors: Vec<f64>,
}

impl KeyFreqs {
    /// A set typed by hand.
    pub fn manual(view: View, freqs: &[i64]) -> Self {
        let mut freqs = freqs.to_vec();
        freqs.sort_unstable();
        KeyFreqs {
            view,
            rule: format!("set by hand: {freqs:?}"),
            freqs,
            threshold: f64::NAN,
            evidence: vec![],
            floors: vec![],
        }
    }

    /// This detection with the set replaced by hand, keeping the evidence.
    pub fn overridden(&self, freqs: &[i64]) -> Self {
        let mut freqs = freqs.to_vec();
        freqs.sort_unstable();
        KeyFreqs {
            view: self.view,
            rule: format!("set by hand to {freqs:?}; the rule had found {:?}: {}", self.freqs, self.rule),
            freqs,
            threshold: self.threshold,
            evidence: self.evidence.clone(),
            floors: self.floors.clone(),
        }
    }

    /// Both waves of each key frequency, in this set's view.
    pub fn directions(&self) -> Directions {
        Directions::new(self.view, &self.freqs)
    }
}

/// Key frequencies from the logits' periodicity.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct LogitRule {
    /// The share of Σ_k cos_sim_k² the set must reach.
    pub share: f64,
    /// No frequency with |cos sim| below this multiple of 1/√p³ (the random-cube level).
    pub min_over_control: f64,
    /// Nor below this multiple of the other view's leak into this one ([`leaks`]).
    pub min_over_leak: f64,
}

impl Default for LogitRule {
    fn default() -> Self {
        LogitRule { share: 0.9, min_over_control: 10.0, min_over_leak: 2.0 }
    }
}

impl LogitRule {
    /// The key frequencies of `periodicity`, given what the other view leaks into it at
    /// each frequency (`leak[k − 1]`, [`leaks`]; zeros for none).
    pub fn detect(&self, periodicity: &LogitPeriodicity, leak: &[f64]) -> KeyFreqs {
        let cos = &periodicity.cos_sims;
        let p = 2 * cos.len() as i64 + 1;
        let floors = self.floors(p, leak);
        let total: f64 = cos.iter().map(|c| c * c).sum();
        let mut order: Vec<usize> = (0..cos.len()).collect();
        order.sort_by(|&i, &j| cos[j].abs().total_cmp(&cos[i].abs()));
        let (mut freqs, mut reached) = (vec![], 0.0);
        for i in order {
            if reached >= self.share * total {
                break;
            }
            if cos[i].abs() < floors[i] {
                continue;
            }
            freqs.push(i as i64 + 1);
            reached += cos[i] * cos[i];
        }
        freqs.sort_unstable();
        let highest_leak = leak.iter().copied().fold(0.0, f64::max);
        let rule = format!(
            "{view} view: frequencies k taken in decreasing |cos sim| of the logits with the cube \
             cos(2πk(s − c)/p) until their squared cos sims reach {share} of the sum over all k \
             (that sum, the periodic share of ‖L‖², is {total:.4}; the set reaches {reached:.4}), \
             skipping any with |cos sim| below {min} × 1/√p³ = {control:.2e} (the random-cube level) \
             or below {leak_min} × the other view's leak at k (at most {highest_leak:.2e})",
            view = periodicity.view,
            share = self.share,
            min = self.min_over_control,
            control = self.min_over_control * random_cube_level(p),
            leak_min = self.min_over_leak,
        );
        KeyFreqs { view: periodicity.view, freqs, rule, threshold: self.share, evidence: cos.clone(), floors }
    }

    /// Each view's key frequencies, each on the floors that the other view's leak into it
    /// sets ([`leaks`]): what `groklens analyze` detects.
    pub fn detect_views(&self, task: &Task, periodicity: &PerView<LogitPeriodicity>) -> PerView<KeyFreqs> {
        let leak = leaks(task, &periodicity.map(|_, p| p.cos_sims.clone()));
        PerView::new(|view| self.detect(&periodicity[view], &leak[view]))
    }

    /// The floor at each frequency: the larger of the random-cube control and the leak.
    fn floors(&self, p: i64, leak: &[f64]) -> Vec<f64> {
        let control = self.min_over_control * random_cube_level(p);
        (0..(p - 1) / 2)
            .map(|i| control.max(self.min_over_leak * leak.get(i as usize).copied().unwrap_or(0.0)))
            .collect()
    }
}

/// What each view's cosine similarities owe to the other's: at frequency k, |O_k| × the
/// other view's |cos sim| at k ([`view_overlap`]), the cosine similarity a model with
/// only the other view's structure would show. Zero where the views are one (a + b).
pub fn leaks(task: &Task, cos_sims: &PerView<Vec<f64>>) -> PerView<Vec<f64>> {
    let same = (0..task.p).all(|x| task.g.eval(x, task.p) == x && task.h.eval(x, task.p) == x);
    let overlap = view_overlap(task);
    let other = |view: View| match view {
        View::Standard => View::Task,
        View::Task => View::Standard,
    };
    PerView::new(|view| {
        (overlap.iter().zip(&cos_sims[other(view)])).map(|(o, c)| if same { 0.0 } else { (o * c).abs() }).collect()
    })
}

/// Key frequencies from the neuron clusters.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct NeuronRule {
    /// The fraction of a neuron's energy its best frequency must explain.
    pub min_frac: f64,
    /// The share of all neurons a cluster must hold (and at least one neuron).
    pub min_neuron_share: f64,
}

impl Default for NeuronRule {
    fn default() -> Self {
        NeuronRule { min_frac: 0.85, min_neuron_share: 0.01 }
    }
}

impl NeuronRule {
    pub fn detect(&self, freq_norm: &NeuronFreqNorm) -> KeyFreqs {
        let n_neurons = freq_norm.max.len();
        let min_neurons = ((self.min_neuron_share * n_neurons as f64).ceil() as usize).max(1);
        let sizes = freq_norm.cluster_sizes(self.min_frac);
        let freqs: Vec<i64> =
            (sizes.iter().enumerate()).filter(|(_, &size)| size >= min_neurons).map(|(i, _)| i as i64 + 1).collect();
        let clustered: usize = freqs.iter().map(|&k| sizes[k as usize - 1]).sum();
        let highest = freq_norm.max.iter().copied().fold(0.0, f64::max);
        let rule = format!(
            "{view} view: frequencies k that are the best frequency, with a fraction ≥ {min_frac} of the \
             neuron's energy (neuron_freq_norm), of at least {min_neurons} of the {n_neurons} neurons \
             ({share} of them, at least one); {clustered} neurons are in these clusters, and the highest \
             fraction of any neuron is {highest:.3}",
            view = freq_norm.view,
            min_frac = self.min_frac,
            share = self.min_neuron_share,
        );
        let evidence = sizes.iter().map(|&s| s as f64).collect();
        KeyFreqs { view: freq_norm.view, freqs, rule, threshold: self.min_frac, evidence, floors: vec![] }
    }
}

/// Fails unless every key frequency is one of Z_p's, 1..=(p−1)/2, and none repeats.
pub fn check_key_freqs(p: i64, key_freqs: &[i64]) -> Result<()> {
    let n = (p - 1) / 2;
    for (i, &k) in key_freqs.iter().enumerate() {
        if !(1..=n).contains(&k) {
            return Err(Error::config(format!("key frequency {k} is not a frequency in 1..={n} (p = {p})")));
        }
        if key_freqs[..i].contains(&k) {
            return Err(Error::config(format!("key frequency {k} is given twice")));
        }
    }
    Ok(())
}
