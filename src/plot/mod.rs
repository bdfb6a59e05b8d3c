//! Charts for notebooks and reports, mirroring the seed notebook's plotly helpers.
//!
//! Every chart is a [`Figure`]: plotly's JSON (`{data, layout}`), edited by short
//! chainable methods and rendered from that JSON alone, for evcxr ([`Figure::show`]),
//! for offline HTML ([`init_notebook`], [`to_standalone_html`]) and for JupyterLab's
//! plotly renderer.
//!
//! ```no_run
//! use groklens::plot::*;
//! init_notebook(); // once per notebook: plotly.js inline, no network
//! let (train, test) = (vec![4.0, 1.0, 0.1], vec![4.0, 3.9, 0.2]);
//! line(&[train, test]).x(&[0, 100, 200]).labels(["train", "test"]).log_y(true)
//!     .toggle_x().toggle_y().phase_lines(&[1500.0, 13300.0, 16600.0]).title("Loss").show();
//! ```

mod charts;
mod chooser;
mod compact;
mod html;
mod matrix;
mod slider;

pub use charts::{imshow, imshow_facets, line, scatter, RDBU};
pub use chooser::Chooser;
pub(crate) use html::escape;
pub use html::{
    display_text, init_notebook, init_notebook_html, plotly_js, show_all, to_page, to_standalone_html, unique_id,
    write_html,
};
pub use matrix::{Matrix, Row, ShapeError};
pub use slider::{imshow_slider, line_slider};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The seed's plotly template: `layout.title.font.size = 30`, axis titles 20.
const TITLE_FONT_SIZE: u32 = 30;
const AXIS_TITLE_FONT_SIZE: u32 = 20;

/// A plotly chart as JSON. The fields are public so that anything the methods do not
/// cover can be set directly (`fig.layout["yaxis"]["range"] = json!([0, 1])`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub data: Vec<Value>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub layout: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames: Option<Vec<Value>>,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub config: Value,
}

impl Figure {
    /// Wraps a chart built with plotly's typed API.
    pub fn from_plotly(plot: &plotly::Plot) -> serde_json::Result<Self> {
        serde_json::from_value(serde_json::to_value(plot)?)
    }

    /// The chart's title, in the seed's template's font size.
    pub fn title(mut self, text: impl Into<String>) -> Self {
        set(&mut self.layout, &["title", "text"], json!(text.into()));
        set(&mut self.layout, &["title", "font", "size"], json!(TITLE_FONT_SIZE));
        self
    }

    /// Title of every x axis (each facet has its own).
    pub fn xaxis(self, label: impl Into<String>) -> Self {
        self.axis_titles("xaxis", label.into())
    }

    /// Title of the y axes in the first column of facets.
    pub fn yaxis(self, label: impl Into<String>) -> Self {
        self.axis_titles("yaxis", label.into())
    }

    fn axis_titles(mut self, prefix: &str, label: String) -> Self {
        for key in axis_keys(&self.layout, prefix) {
            let anchor = self.layout[&key]["anchor"].as_str().map(axis_key);
            let left = anchor.is_none_or(|x| self.layout[x]["domain"][0].as_f64().is_none_or(|x0| x0 == 0.0));
            if prefix == "xaxis" || left {
                set(&mut self.layout, &[&key, "title", "text"], json!(label));
                set(&mut self.layout, &[&key, "title", "font", "size"], json!(AXIS_TITLE_FONT_SIZE));
            }
        }
        self
    }

    /// Height in pixels (plotly's default is 450).
    pub fn height(mut self, px: u32) -> Self {
        set(&mut self.layout, &["height"], json!(px));
        self
    }

    /// Width in pixels (default: the width of the page).
    pub fn width(mut self, px: u32) -> Self {
        set(&mut self.layout, &["width"], json!(px));
        self
    }

    /// The seed's `add_lines`: a dashed vertical line (opacity 0.7) at each x, e.g. the
    /// epochs where memorisation, circuit formation and cleanup end.
    pub fn phase_lines(self, xs: impl Row) -> Self {
        xs.to_f64s().into_iter().fold(self, |fig, x| fig.phase_line(x, None))
    }

    /// Like [`Figure::phase_lines`], each line labelled at its top.
    pub fn phase_lines_named<S: AsRef<str>>(self, lines: &[(S, f64)]) -> Self {
        lines.iter().fold(self, |fig, (name, x)| fig.phase_line(*x, Some(name.as_ref())))
    }

    fn phase_line(mut self, x: f64, name: Option<&str>) -> Self {
        let mut shape = json!({
            "type": "line", "xref": "x", "yref": "paper", "x0": x, "x1": x, "y0": 0, "y1": 1,
            "line": {"dash": "dash", "width": 2}, "opacity": 0.7,
        });
        if let Some(name) = name {
            shape["name"] = json!(name);
            // Written down the line from its top, inside the plot.
            shape["label"] = json!({"text": name, "textposition": "end", "xanchor": "right", "yanchor": "top"});
        }
        push(&mut self.layout, "shapes", shape);
        self
    }
}

/// `root[path[0]][path[1]]… = value`, turning whatever is in the way into objects.
pub(crate) fn set(node: &mut Value, path: &[&str], value: Value) {
    match path.split_first() {
        None => *node = value,
        Some((key, rest)) => {
            if !node.is_object() {
                *node = json!({});
            }
            if let Value::Object(map) = node {
                set(map.entry(*key).or_insert(Value::Null), rest, value);
            }
        }
    }
}

/// Appends `value` to the array `root[key]`, creating it when needed.
pub(crate) fn push(root: &mut Value, key: &str, value: Value) {
    if !root[key].is_array() {
        set(root, &[key], json!([]));
    }
    if let Some(items) = root.get_mut(key).and_then(Value::as_array_mut) {
        items.push(value);
    }
}

/// The layout key of an axis id: "x2" → "xaxis2".
pub(crate) fn axis_key(id: &str) -> String {
    let (letter, n) = id.split_at(id.len().min(1));
    format!("{letter}axis{n}")
}

/// Layout keys of the axes named `prefix` (`xaxis`, `xaxis2`, …), at least `prefix` itself.
pub(crate) fn axis_keys(layout: &Value, prefix: &str) -> Vec<String> {
    let mut keys: Vec<String> = layout
        .as_object()
        .into_iter()
        .flat_map(|m| m.keys())
        .filter(|k| k.strip_prefix(prefix).is_some_and(|n| n.chars().all(|c| c.is_ascii_digit())))
        .cloned()
        .collect();
    if keys.is_empty() {
        keys.push(prefix.to_string());
    }
    keys
}
