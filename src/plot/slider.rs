//! One chart with a slider that scrubs through frames (e.g. training checkpoints).
//! Each slider step restyles the traces with its frame's (rounded) data, so the chart
//! stays plain JSON that every renderer draws.

use serde_json::{json, Value};

use super::compact::{rel, sig};
use super::{imshow, line, push, set, Figure, Matrix};

/// A heatmap per frame, on one colour scale (±the largest |value| of all frames).
/// About 8 bytes per value: 100 KB per 113×113 frame, so thin long runs with
/// [`Figure::stride`].
pub fn imshow_slider<M: Into<Matrix>, S: ToString>(
    frames: impl IntoIterator<Item = M>,
    labels: impl IntoIterator<Item = S>,
) -> Figure {
    let frames: Vec<Matrix> = frames.into_iter().map(Into::into).collect();
    let Some(first) = frames.first() else {
        return Figure::default();
    };
    let max = frames.iter().map(Matrix::max_abs).fold(0.0, f64::max);
    let steps = frames.iter().map(|m| json!([{"z": [rel(m)]}, [0]]));
    let mut fig = imshow(first);
    set(&mut fig.layout, &["coloraxis", "cmin"], json!(-max));
    set(&mut fig.layout, &["coloraxis", "cmax"], json!(max));
    with_slider(fig, steps, labels)
}

/// The lines of each frame (one per row, as in [`line()`]); each step replaces the y values.
pub fn line_slider<M: Into<Matrix>, S: ToString>(
    frames: impl IntoIterator<Item = M>,
    labels: impl IntoIterator<Item = S>,
) -> Figure {
    let frames: Vec<Matrix> = frames.into_iter().map(Into::into).collect();
    let Some(first) = frames.first() else {
        return Figure::default();
    };
    let fig = line(first);
    let traces = fig.data.len();
    let steps = frames.iter().map(|m| {
        let ys: Vec<Value> = m.iter_rows().take(traces).map(sig).collect();
        let ids: Vec<usize> = (0..ys.len()).collect();
        json!([{"y": ys}, ids])
    });
    with_slider(fig, steps, labels)
}

fn with_slider<S: ToString>(
    mut fig: Figure,
    args: impl Iterator<Item = Value>,
    labels: impl IntoIterator<Item = S>,
) -> Figure {
    let mut labels = labels.into_iter().map(|s| s.to_string());
    let steps: Vec<Value> = args
        .enumerate()
        .map(|(i, args)| {
            let label = labels.next().unwrap_or_else(|| i.to_string());
            json!({"label": label, "method": "restyle", "args": args})
        })
        .collect();
    let slider = json!({"active": 0, "steps": steps, "pad": {"t": 50}, "currentvalue": {"visible": true}});
    push(&mut fig.layout, "sliders", slider);
    fig
}

impl Figure {
    /// Keeps every `k`-th slider step (and the last), to shrink long runs.
    pub fn stride(mut self, k: usize) -> Self {
        let k = k.max(1);
        let sliders = self.layout.get_mut("sliders").and_then(Value::as_array_mut);
        for slider in sliders.into_iter().flatten() {
            if let Some(steps) = slider.get_mut("steps").and_then(Value::as_array_mut) {
                let last = steps.len().saturating_sub(1);
                *steps = std::mem::take(steps)
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| i % k == 0 || *i == last)
                    .map(|(_, step)| step)
                    .collect();
            }
        }
        self
    }
}
