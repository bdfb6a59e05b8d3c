//! The phases of grokking (memorisation, circuit formation, clean-up), found on the
//! curves by written rules, and overridable; and the test curve's spikes, as events.
//!
//! The rules ([`PhaseRule`], defaults in brackets), on the train loss and on the test
//! curve the phases are read from (the test loss, or for a task whose classes collapse
//! the test loss on unseen cells, [`crate::coverage`]):
//! 1. memorisation ends at the first epoch where the train loss is ≤ a fraction [1%] of
//!    its first value;
//! 2. from there, take log₁₀ of the test curve. A spike is a rise of more than [1]
//!    decade above the curve's lowest value so far; it lasts from where it climbs past a
//!    tenth of that to where it is back under a tenth, and counts when that is within a share
//!    [10%] of the epochs from memorisation's end to the last (or it is still up at the
//!    last epoch, having started within that many): its start, peak, height in decades
//!    and recovery are an event, and its points are left out of what follows;
//! 3. on what remains: `hi` its highest value (at e_hi), `lo` its lowest value from e_hi
//!    on (at e_lo), the fall hi − lo. With a fall under [1] decade the model did not
//!    grok: no later phase;
//! 4. circuit formation ends at the last epoch in [e_hi, e_lo] where the log test loss is
//!    still within a fraction [10%] of the fall below `hi`: the test loss starts to fall;
//! 5. clean-up ends at the first epoch after that where the log test loss is within
//!    [10%] of the fall above `lo`.
//!
//! What a spike cannot be: the plateau before the fall (it does not come back within
//! the window), or a rise of under a decade. What the rule needs: the curve at every
//! epoch, as a run's `losses.csv` has it. A spike after a slow drift upward is found only
//! if the curve comes back within a tenth of a decade of its lowest: on the seed's run
//! (`tests/data/runs`) the unseen-cell loss drifts 0.8 decade up before its spike at epoch
//! 22,912, and the rule finds the spike at every epoch but not at every 10th; a missed
//! spike stays in the curve and moves the lines if it rises above the plateau.
//!
//! Excluded loss, restricted loss and the weight norm do not move the lines; where given,
//! they are read for evidence that should agree: in the a + b paper the excluded loss
//! climbs during circuit formation and peaks near its end, the restricted loss falls
//! before the test loss does, and the weight norm falls fastest during clean-up.

use serde::Serialize;

use crate::error::{Error, Result};

/// A curve over epochs.
#[derive(Clone, Debug, Serialize)]
pub struct Curve {
    pub epochs: Vec<i64>,
    pub values: Vec<f64>,
}

impl Curve {
    pub fn new(epochs: &[i64], values: &[f64]) -> Result<Self> {
        if epochs.len() != values.len() || epochs.is_empty() {
            return Err(Error::config(format!(
                "a curve needs as many epochs as values, at least one ({} epochs, {} values)",
                epochs.len(),
                values.len()
            )));
        }
        if epochs.windows(2).any(|w| w[0] >= w[1]) {
            return Err(Error::config("a curve's epochs must increase"));
        }
        Ok(Curve { epochs: epochs.to_vec(), values: values.to_vec() })
    }

    /// Values at epochs 0, 1, 2, … (a run's `train_losses`, say).
    pub fn per_epoch(values: &[f64]) -> Result<Self> {
        Self::new(&(0..values.len() as i64).collect::<Vec<_>>(), values)
    }

    fn points(&self) -> impl Iterator<Item = (i64, f64)> + '_ {
        self.epochs.iter().copied().zip(self.values.iter().copied())
    }
}

/// The curves phases are read from; the optional ones only add evidence.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseCurves {
    pub train_loss: Curve,
    /// The test curve phases are read from, and its name ("test loss", "test loss on
    /// unseen cells").
    pub test_loss: Curve,
    pub test_loss_name: String,
    pub excluded_loss: Option<Curve>,
    pub restricted_loss: Option<Curve>,
    pub weight_norm: Option<Curve>,
}

/// The thresholds of the rules (see the module).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PhaseRule {
    /// Memorisation ends when the train loss is this fraction of its first value.
    pub train_fraction: f64,
    /// Circuit formation ends when the log test loss has fallen this share of its fall.
    pub fall_start: f64,
    /// Clean-up ends when the log test loss has fallen this share of its fall.
    pub fall_end: f64,
    /// A fall of fewer decades is no grokking.
    pub min_fall_decades: f64,
    /// A rise of more decades than this above the lowest value so far is a spike…
    pub spike_decades: f64,
    /// …when it comes back within this share of the epochs after memorisation.
    pub spike_window: f64,
}

impl Default for PhaseRule {
    fn default() -> Self {
        PhaseRule {
            train_fraction: 0.01,
            fall_start: 0.1,
            fall_end: 0.9,
            min_fall_decades: 1.0,
            spike_decades: 1.0,
            spike_window: 0.1,
        }
    }
}

/// A spike of the test curve after memorisation (rule 2 of the module).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Spike {
    /// The first epoch past a tenth of the threshold, on the way up.
    pub start: i64,
    pub peak: i64,
    /// log₁₀ of the peak over the lowest value before it.
    pub height_decades: f64,
    /// The first epoch back under a tenth of the threshold, if it came back.
    pub recovered: Option<i64>,
    /// recovered − start.
    pub epochs_to_recover: Option<i64>,
}

/// Phase boundaries in epochs, with how they were found.
#[derive(Clone, Debug, Serialize)]
pub struct Phases {
    #[serde(rename = "memorization_end")]
    pub memorisation_end: Option<i64>,
    pub circuit_formation_end: Option<i64>,
    pub cleanup_end: Option<i64>,
    /// The rules, in words, with their numbers.
    pub rule: String,
    /// What the rules and the other curves showed, by name.
    pub evidence: Vec<(String, f64)>,
    /// Spikes of the test curve, left out of the phases.
    pub events: Vec<Spike>,
}

impl Phases {
    /// Boundaries typed by hand.
    pub fn manual(memorisation_end: i64, circuit_formation_end: i64, cleanup_end: i64) -> Self {
        Phases {
            memorisation_end: Some(memorisation_end),
            circuit_formation_end: Some(circuit_formation_end),
            cleanup_end: Some(cleanup_end),
            rule: "set by hand".into(),
            evidence: vec![],
            events: vec![],
        }
    }

    /// The seed's hand-typed lines, copied from the TransformerLens Grokking demo's a + b
    /// run (the paper reports its own: memorisation ending near 1.4k epochs and circuit
    /// formation near 9.4k).
    pub fn seed() -> Self {
        Phases {
            rule: "the seed's hand-typed values, from the TransformerLens Grokking demo's (a + b) run".into(),
            ..Self::manual(1500, 13300, 16600)
        }
    }

    /// The boundaries found and each event's peak, named: the labelled lines of a chart.
    pub fn named_lines(&self) -> Vec<(String, f64)> {
        let phases = [
            ("memorisation end", self.memorisation_end),
            ("circuit formation end", self.circuit_formation_end),
            ("clean-up end", self.cleanup_end),
        ];
        let phases = phases.into_iter().filter_map(|(name, e)| e.map(|e| (name.to_string(), e as f64)));
        let spikes = self.events.iter().map(|s| (format!("spike ×10^{:.1}", s.height_decades), s.peak as f64));
        phases.chain(spikes).collect()
    }

    /// The boundaries found, in order: the vertical lines of a time-axis chart.
    pub fn lines(&self) -> Vec<i64> {
        [self.memorisation_end, self.circuit_formation_end, self.cleanup_end].into_iter().flatten().collect()
    }
}

/// The phases of a run by the rules of the module.
pub fn detect_phases(curves: &PhaseCurves, rule: &PhaseRule) -> Phases {
    let mut evidence = vec![];
    let text = format!(
        "memorisation end: first epoch with train loss ≤ {tf} × its first value; then on log10({test}) \
         from there, spikes (rises of over {sd} decade(s) above the lowest value so far that come back \
         within {sw} of the epochs after memorisation) left out as events; hi = its maximum, lo = its \
         minimum after hi, fall = hi − lo (under {md} decade(s): no grokking, no later phase); circuit \
         formation end: last epoch between hi and lo with log ≥ hi − {fs} × fall; clean-up end: first \
         epoch after it with log ≤ lo + {fe_left} × fall",
        tf = rule.train_fraction,
        test = curves.test_loss_name,
        sd = rule.spike_decades,
        sw = rule.spike_window,
        md = rule.min_fall_decades,
        fs = rule.fall_start,
        fe_left = ((1.0 - rule.fall_end) * 1e9).round() / 1e9, // 0.1, not 0.09999999999999998
    );
    let first_train = curves.train_loss.values[0];
    let memorisation_end =
        curves.train_loss.points().find(|&(_, v)| v <= rule.train_fraction * first_train).map(|(e, _)| e);
    let (mut circuit_formation_end, mut cleanup_end, mut events) = (None, None, vec![]);
    if let Some(m) = memorisation_end {
        evidence.push(("train loss at memorisation end".into(), value_at(&curves.train_loss, m)));
        let log_test: Vec<(i64, f64)> = (curves.test_loss.points())
            .filter(|&(e, v)| e >= m && !v.is_nan())
            .map(|(e, v)| (e, v.max(f64::MIN_POSITIVE).log10()))
            .collect();
        let window = log_test.last().map_or(0, |&(last, _)| ((last - m) as f64 * rule.spike_window) as i64);
        events = spikes(&log_test, rule.spike_decades, window);
        let in_spike = |e: i64| events.iter().any(|s| e >= s.start && s.recovered.is_none_or(|r| e < r));
        let log_test: Vec<(i64, f64)> = log_test.into_iter().filter(|&(e, _)| !in_spike(e)).collect();
        if let Some(&(e_hi, hi)) = log_test.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
            let after_hi = log_test.iter().filter(|&&(e, _)| e >= e_hi);
            let &(e_lo, lo) = after_hi.min_by(|a, b| a.1.total_cmp(&b.1)).expect("e_hi itself is after hi");
            let fall = hi - lo;
            evidence.extend([
                ("log10 test loss high".to_string(), hi),
                ("epoch of the high".to_string(), e_hi as f64),
                ("log10 test loss low".to_string(), lo),
                ("epoch of the low".to_string(), e_lo as f64),
            ]);
            if fall >= rule.min_fall_decades {
                let start_level = hi - rule.fall_start * fall;
                let c = log_test.iter().rfind(|&&(e, v)| e >= e_hi && e <= e_lo && v >= start_level).map(|p| p.0);
                let end_level = lo + (1.0 - rule.fall_end) * fall;
                let k = c.and_then(|c| log_test.iter().find(|&&(e, v)| e > c && v <= end_level).map(|p| p.0));
                circuit_formation_end = c;
                cleanup_end = k;
            }
        }
    }
    let window = (circuit_formation_end.or(memorisation_end), cleanup_end);
    if let Some(excluded) = &curves.excluded_loss {
        if let Some((e, v)) = peak(excluded, memorisation_end, cleanup_end) {
            evidence.push(("excluded loss peak epoch (memorisation end to clean-up end)".into(), e as f64));
            evidence.push(("excluded loss peak".into(), v));
        }
    }
    if let (Some(restricted), Some(c)) = (&curves.restricted_loss, circuit_formation_end) {
        evidence.push(("restricted loss at circuit formation end".into(), value_at(restricted, c)));
        evidence.push(("test loss at circuit formation end".into(), value_at(&curves.test_loss, c)));
    }
    if let Some(norm) = &curves.weight_norm {
        if let Some(e) = steepest_fall(norm, window.0, window.1) {
            evidence.push(("weight norm steepest fall epoch (circuit formation end to clean-up end)".into(), e as f64));
        }
    }
    Phases { memorisation_end, circuit_formation_end, cleanup_end, rule: text, evidence, events }
}

/// The spikes of a log curve (rule 2 of the module): rises of more than `decades` above
/// the lowest value so far, each from where it climbs past a tenth of that to where it
/// is back under it, within `window` epochs (or, at the end, not back yet, having
/// started within `window` epochs of it).
fn spikes(log: &[(i64, f64)], decades: f64, window: i64) -> Vec<Spike> {
    let last = log.last().map_or(0, |p| p.0);
    let mut events = vec![];
    let (mut lowest, mut i) = (f64::INFINITY, 0);
    while i < log.len() {
        if log[i].1 <= lowest + decades {
            lowest = lowest.min(log[i].1);
            i += 1;
            continue;
        }
        let foot = lowest + decades / 10.0;
        let first = log[..i].iter().rposition(|&(_, v)| v <= foot).map_or(0, |j| j + 1);
        let back = log[i..].iter().position(|&(_, v)| v <= foot).map(|j| i + j);
        let end = back.unwrap_or(log.len());
        let (start, recovered) = (log[first].0, back.map(|j| log[j].0));
        if recovered.unwrap_or(last) - start <= window {
            let &(peak, top) = log[first..end].iter().max_by(|a, b| a.1.total_cmp(&b.1)).expect("at least one point");
            events.push(Spike {
                start,
                peak,
                height_decades: top - lowest,
                recovered,
                epochs_to_recover: recovered.map(|r| r - start),
            });
        }
        i = end;
    }
    events
}

/// The value at the last point at or before `epoch` (the first point if none).
fn value_at(curve: &Curve, epoch: i64) -> f64 {
    curve.points().take_while(|&(e, _)| e <= epoch).last().unwrap_or((0, curve.values[0])).1
}

fn in_window(e: i64, from: Option<i64>, to: Option<i64>) -> bool {
    from.is_none_or(|f| e >= f) && to.is_none_or(|t| e <= t)
}

/// The highest point between `from` and `to`.
fn peak(curve: &Curve, from: Option<i64>, to: Option<i64>) -> Option<(i64, f64)> {
    curve.points().filter(|&(e, _)| in_window(e, from, to)).max_by(|a, b| a.1.total_cmp(&b.1))
}

/// The epoch ending the steepest fall per epoch between consecutive points in the window.
fn steepest_fall(curve: &Curve, from: Option<i64>, to: Option<i64>) -> Option<i64> {
    let points: Vec<(i64, f64)> = curve.points().filter(|&(e, _)| in_window(e, from, to)).collect();
    points
        .windows(2)
        .map(|w| (w[1].0, (w[0].1 - w[1].1) / (w[1].0 - w[0].0) as f64))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(e, _)| e)
}
