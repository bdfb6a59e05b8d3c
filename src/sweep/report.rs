//! A sweep's `report.html`, offline: per pair of axes that vary, heatmaps of the epochs
//! to test accuracy ≥ 0.99 and of the embedding's sine share, each cell the median over
//! the seeds (and over every axis not drawn) with its range and how many runs reached
//! the threshold; cells where the median run never did say "never". Then the runs by
//! exponents (the seed's cosine claim), and every run.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use super::collect::{Learned, Results, RunResult, COSINE_ONLY, LEARNED};
use super::plan::AXES;
use super::RunState;
use crate::error::{Error, Result};
use crate::plot::{escape, plotly_js, Figure};

/// A measure drawn over two axes: its name, whether it is a first epoch over
/// [`LEARNED`], and its value for a run: `None` where it does not apply to the run (no
/// test pair in an unseen cell), `Some(None)` where the run never reached the threshold.
struct Measure {
    title: &'static str,
    thresholded: bool,
    value: fn(&Learned) -> Option<Option<f64>>,
}

const MEASURES: [Measure; 3] = [
    Measure {
        title: "first epoch with test accuracy ≥ 0.99",
        thresholded: true,
        value: |l| Some(l.test_acc_first_epoch[1].map(|e| e as f64)),
    },
    Measure {
        title: "first epoch with unseen-cell test accuracy ≥ 0.99",
        thresholded: true,
        value: |l| l.unseen_acc_first_epoch.as_ref().map(|u| u[1].map(|e| e as f64)),
    },
    Measure {
        title: "sine share of the embedding's energy (standard view)",
        thresholded: false,
        value: |l| Some(Some(l.sine_share)),
    },
];

pub(super) fn write(path: &Path, results: &Results) -> Result<()> {
    std::fs::write(path, page(results)).map_err(|e| Error::io(path, e))
}

/// The axes with more than one value, seeds left out (they are aggregated), in plan order.
fn varying(results: &Results) -> Vec<&'static str> {
    AXES.iter().copied().filter(|a| *a != "seed" && results.axes.get(*a).is_some_and(|v| v.len() > 1)).collect()
}

fn page(results: &Results) -> String {
    let finished: Vec<&RunResult> = results.runs.iter().filter(|r| r.learned.is_some()).collect();
    let axes = varying(results);
    let pairs: Vec<(&str, &str)> = match axes.as_slice() {
        [] => vec![],
        [one] => vec![(*one, "")],
        many => many.iter().enumerate().flat_map(|(i, x)| many[i + 1..].iter().map(move |y| (*x, *y))).collect(),
    };
    let mut charts = String::new();
    for (x, y) in &pairs {
        for measure in &MEASURES {
            if let Some(fig) = heatmap(results, &finished, x, y, measure) {
                charts.push_str(&fig.to_inline_html());
                charts.push('\n');
            }
        }
    }
    let count = |f: fn(&RunState) -> bool| results.runs.iter().filter(|r| f(&r.state)).count();
    format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>groklens sweep</title>\n\
         <script type=\"text/javascript\">{js}</script>\n<style>body{{font-family:sans-serif}} \
         table{{border-collapse:collapse;font-size:12px}} td,th{{border:1px solid #ccc;padding:2px 6px}}</style>\n\
         </head>\n<body>\n<h1>groklens sweep: {runs} runs</h1>\n\
         <p>{finished} finished, {failed} failed, {unfinished} unfinished, {not_started} not started.</p>\n\
         <p>Phases (Liu et al. 2022, thresholds here): {rule}.</p>\n\
         <p>Heatmaps: each cell is the median over the seeds and over every axis not drawn, with the range \
         [min–max] and how many runs reached the threshold; a run that never reached it counts as later than \
         any that did, and a cell whose median run never did says <b>never</b>; n/a: no finished run there has the \
         measure (for unseen cells: no test pair in one). The sine share is sin / (sin + cos) \
         of the Fourier energy of W_E over a; below {cos_only} the embedding uses only cosines; the initial \
         weights (the control) give about 0.5.</p>\n{charts}\n<h2>By exponents (m, n): which runs use only cosines (the seed claims every even m = n does)</h2>\n{by_exponents}\n\
         <h2>Every run</h2>\n{table}\n</body>\n</html>\n",
        js = plotly_js(),
        runs = results.runs.len(),
        finished = finished.len(),
        failed = count(|s| matches!(s, RunState::Failed { .. })),
        unfinished = count(|s| matches!(s, RunState::Unfinished { .. })),
        not_started = count(|s| matches!(s, RunState::NotStarted)),
        rule = escape(results.phase_rule),
        cos_only = COSINE_ONLY,
        by_exponents = by_exponents(&finished),
        table = runs_table(results),
    )
}

/// The median of `values` with `None` (never) after every number; `None` when that median is never.
fn median(values: &mut [Option<f64>]) -> Option<f64> {
    use std::cmp::Ordering;
    values.sort_by(|a, b| match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(b),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    });
    values[(values.len() - 1) / 2]
}

fn heatmap(results: &Results, finished: &[&RunResult], x: &str, y: &str, measure: &Measure) -> Option<Figure> {
    let xs = &results.axes[x];
    let ys: Vec<String> = if y.is_empty() { vec![String::new()] } else { results.axes[y].clone() };
    let mut cells: BTreeMap<(usize, usize), Vec<Option<f64>>> = BTreeMap::new();
    for run in finished {
        let learned = run.learned.as_ref().expect("finished runs have results");
        let i = xs.iter().position(|v| *v == run.at[x])?;
        let j = if y.is_empty() { 0 } else { ys.iter().position(|v| *v == run.at[y])? };
        if let Some(value) = (measure.value)(learned) {
            cells.entry((j, i)).or_default().push(value);
        }
    }
    if cells.is_empty() {
        return None;
    }
    let mut z = vec![vec![None::<f64>; xs.len()]; ys.len()];
    let mut text = vec![vec![String::from("n/a"); xs.len()]; ys.len()];
    for ((j, i), values) in &mut cells {
        let reached: Vec<f64> = values.iter().flatten().copied().collect();
        let n = values.len();
        let med = median(values);
        z[*j][*i] = med;
        let range = match reached.iter().copied().reduce(f64::min).zip(reached.iter().copied().reduce(f64::max)) {
            Some((lo, hi)) => format!(" [{}–{}]", short(lo), short(hi)),
            None => String::new(),
        };
        text[*j][*i] = format!("{}{range} {}/{n}", med.map_or("never".into(), short), reached.len());
    }
    let mut fig = Figure::default();
    fig.data.push(json!({
        "type": "heatmap", "x": xs, "y": ys, "z": z, "text": text, "texttemplate": "%{text}",
        "colorscale": "Viridis", "hoverongaps": false,
        "hovertemplate": format!("{x} %{{x}}, {y} %{{y}}: %{{text}}<extra></extra>"),
    }));
    fig.layout = json!({
        "xaxis": {"title": {"text": x}, "type": "category"},
        "yaxis": {"title": {"text": y}, "type": "category"},
    });
    let threshold = if measure.thresholded { format!(" (threshold {LEARNED})") } else { String::new() };
    Some(fig.title(format!(
        "{}{threshold} over {x}{}",
        measure.title,
        if y.is_empty() { "".into() } else { format!(" × {y}") }
    )))
}

/// Three significant digits (whole numbers as they are).
fn short(v: f64) -> String {
    if v == v.trunc() || v.abs() >= 100.0 || !v.is_finite() {
        return format!("{v:.0}");
    }
    let decimals = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    format!("{v:.decimals$}")
}

/// Per (m, n): how many runs use only cosines, their sine shares, and their phases.
fn by_exponents(finished: &[&RunResult]) -> String {
    let mut groups: BTreeMap<(u32, u32), Vec<&Learned>> = BTreeMap::new();
    for run in finished {
        let (m, n) = run.at["exponents"].split_once(',').expect("exponents are written m,n");
        let key = (m.parse().unwrap_or(0), n.parse().unwrap_or(0));
        groups.entry(key).or_default().push(run.learned.as_ref().expect("finished"));
    }
    let mut rows = String::from(
        "<table><tr><th>m, n</th><th>runs</th><th>only cosines (sine share &lt; 0.01)</th><th>sine share: median \
         [min–max]</th><th>at init: median</th><th>test acc ≥ 0.99</th><th>unseen-cell acc ≥ 0.99</th><th>phases</th></tr>\n",
    );
    for ((m, n), group) in &groups {
        let mut shares: Vec<Option<f64>> = group.iter().map(|l| Some(l.sine_share)).collect();
        let mut init: Vec<Option<f64>> = group.iter().map(|l| Some(l.sine_share_init)).collect();
        let lo = group.iter().map(|l| l.sine_share).fold(f64::INFINITY, f64::min);
        let hi = group.iter().map(|l| l.sine_share).fold(0.0, f64::max);
        let cosine_only = group.iter().filter(|l| l.sine_share < COSINE_ONLY).count();
        let generalised = group.iter().filter(|l| l.test_acc_first_epoch[1].is_some()).count();
        let unseen = group.iter().filter(|l| l.unseen_acc_first_epoch.as_ref().is_some_and(|u| u[1].is_some())).count();
        let with_unseen = group.iter().filter(|l| l.unseen_acc_first_epoch.is_some()).count();
        let mut phases: BTreeMap<&str, usize> = BTreeMap::new();
        for l in group {
            *phases.entry(l.phase.name()).or_default() += 1;
        }
        let phases: Vec<String> = phases.iter().map(|(p, k)| format!("{p} {k}")).collect();
        rows.push_str(&format!(
            "<tr><td>{m}, {n}</td><td>{}</td><td>{cosine_only}</td><td>{} [{}–{}]</td><td>{}</td><td>{generalised}</td>\
             <td>{unseen} of {with_unseen}</td><td>{}</td></tr>\n",
            group.len(),
            short(median(&mut shares).unwrap_or(f64::NAN)),
            short(lo),
            short(hi),
            short(median(&mut init).unwrap_or(f64::NAN)),
            phases.join(", ")
        ));
    }
    rows + "</table>"
}

fn runs_table(results: &Results) -> String {
    let axes: Vec<&str> = AXES.iter().copied().filter(|a| results.axes.contains_key(*a)).collect();
    let mut rows = format!(
        "<table><tr><th>id</th>{}<th>state</th><th>phase</th><th>test ≥ 0.99</th><th>unseen ≥ 0.99</th>\
         <th>sine share</th><th>key freqs (task view)</th></tr>\n",
        axes.iter().map(|a| format!("<th>{a}</th>")).collect::<String>()
    );
    let epoch = |e: Option<i64>| e.map_or("never".into(), |e| e.to_string());
    for run in &results.runs {
        let state = match &run.state {
            RunState::NotStarted => "not started".into(),
            RunState::Unfinished { epochs } => format!("unfinished ({epochs} epochs)"),
            RunState::Finished => "finished".into(),
            RunState::Failed { why } => format!("failed: {why}"),
        };
        let cells = match &run.learned {
            Some(l) => format!(
                "<td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{:?}</td>",
                l.phase.name(),
                epoch(l.test_acc_first_epoch[1]),
                l.unseen_acc_first_epoch.as_ref().map_or("no unseen cells".into(), |u| epoch(u[1])),
                l.sine_share,
                l.key_freqs.task
            ),
            None => "<td></td><td></td><td></td><td></td><td></td>".into(),
        };
        rows.push_str(&format!(
            "<tr><td>{}</td>{}<td>{}</td>{cells}</tr>\n",
            escape(&run.id),
            axes.iter().map(|a| format!("<td>{}</td>", escape(&run.at[*a]))).collect::<String>(),
            escape(&state)
        ));
    }
    rows + "</table>"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_counts_never_as_latest() {
        assert_eq!(median(&mut [Some(3.0), None, Some(1.0)]), Some(3.0));
        assert_eq!(median(&mut [None, None, Some(1.0)]), None);
        assert_eq!(median(&mut [Some(2.0), Some(1.0)]), Some(1.0));
        assert_eq!(
            [short(0.000612), short(0.0121), short(0.487), short(12.34), short(1164.0)],
            ["0.000612", "0.0121", "0.487", "12.3", "1164"]
        );
    }
}
