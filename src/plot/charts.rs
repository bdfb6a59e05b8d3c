//! The seed's `imshow`, `line` and `scatter`, and the chart-specific methods on [`Figure`].

use serde_json::{json, Value};

use super::compact::{num, rel, sig};
use super::{axis_key, axis_keys, push, set, Figure, Matrix, Row};

/// plotly.py's `"RdBu"` (ColorBrewer, red for low, blue for high). plotly.js's own
/// `"RdBu"` runs the other way round, so the scale is written out.
pub const RDBU: [&str; 11] = [
    "rgb(103,0,31)",
    "rgb(178,24,43)",
    "rgb(214,96,77)",
    "rgb(244,165,130)",
    "rgb(253,219,199)",
    "rgb(247,247,247)",
    "rgb(209,229,240)",
    "rgb(146,197,222)",
    "rgb(67,147,195)",
    "rgb(33,102,172)",
    "rgb(5,48,97)",
];

/// Panels per row of a facet grid.
const FACET_COLUMNS: usize = 6;

/// `px.imshow(m, color_continuous_midpoint=0, color_continuous_scale="RdBu")`: row 0 at
/// the top, square cells.
pub fn imshow(m: impl Into<Matrix>) -> Figure {
    imshow_facets([m])
}

/// `px.imshow(t, facet_col=0, …)`: one heatmap panel per matrix, one shared colour
/// scale centred on zero; rows of up to six panels.
pub fn imshow_facets<M: Into<Matrix>>(panels: impl IntoIterator<Item = M>) -> Figure {
    let panels: Vec<Matrix> = panels.into_iter().map(Into::into).collect();
    let cols = panels.len().clamp(1, FACET_COLUMNS);
    let rows = panels.len().div_ceil(cols).max(1);
    let (gap_x, gap_y) = (0.05, 0.12);
    let (w, h) = ((1.0 - gap_x * (cols - 1) as f64) / cols as f64, (1.0 - gap_y * (rows - 1) as f64) / rows as f64);
    let mut fig = Figure::default();
    for (i, m) in panels.iter().enumerate() {
        let (x, y) = axis_ids(i);
        let (x0, y1) = ((i % cols) as f64 * (w + gap_x), 1.0 - (i / cols) as f64 * (h + gap_y));
        fig.data.push(json!({
            "type": "heatmap", "z": rel(m), "coloraxis": "coloraxis", "xaxis": x, "yaxis": y,
        }));
        set(
            &mut fig.layout,
            &[&axis_key(&x)],
            json!({
                "domain": [round(x0), round(x0 + w)], "anchor": y, "constrain": "domain",
            }),
        );
        set(
            &mut fig.layout,
            &[&axis_key(&y)],
            json!({
                "domain": [round(y1 - h), round(y1)], "anchor": x, "autorange": "reversed",
                "scaleanchor": x, "constrain": "domain",
            }),
        );
    }
    let scale: Vec<Value> =
        RDBU.iter().enumerate().map(|(i, c)| json!([i as f64 / (RDBU.len() - 1) as f64, c])).collect();
    set(&mut fig.layout, &["coloraxis"], json!({"colorscale": scale, "cmid": 0}));
    if rows > 1 {
        set(&mut fig.layout, &["height"], json!(280 * rows + 120));
    }
    fig
}

/// neel_plotly's `line`: one line per row of `rows` (a single series is one row).
pub fn line(rows: impl Into<Matrix>) -> Figure {
    let rows: Matrix = rows.into();
    let mut fig = Figure::default();
    for (i, row) in rows.iter_rows().enumerate() {
        let name = i.to_string();
        fig.data.push(json!({"type": "scatter", "mode": "lines", "y": sig(row), "name": name}));
    }
    fig
}

/// `px.scatter(x=x, y=y)`.
pub fn scatter(x: impl Row, y: impl Row) -> Figure {
    let (x, y) = (x.to_f64s(), y.to_f64s());
    let x: Vec<Value> = x.into_iter().map(num).collect();
    Figure { data: vec![json!({"type": "scatter", "mode": "markers", "x": x, "y": sig(&y)})], ..Figure::default() }
}

impl Figure {
    /// One more line, named (e.g. a residual beside the per-frequency lines); give it
    /// before [`Figure::x`], which sets the x of every trace.
    pub fn add_line(mut self, name: impl Into<String>, y: impl Row) -> Self {
        self.data.push(json!({"type": "scatter", "mode": "lines", "y": sig(&y.to_f64s()), "name": name.into()}));
        set(&mut self.layout, &["showlegend"], json!(true));
        self
    }

    /// x coordinates of every trace (e.g. epochs); kept exact, not rounded.
    pub fn x(mut self, xs: impl Row) -> Self {
        let xs: Vec<Value> = xs.to_f64s().into_iter().map(num).collect();
        for trace in &mut self.data {
            set(trace, &["x"], json!(xs));
        }
        self
    }

    /// Names of the traces, in order (the legend; `line_labels` in the seed).
    pub fn labels<S: ToString>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        for (trace, name) in self.data.iter_mut().zip(names) {
            set(trace, &["name"], json!(name.to_string()));
        }
        set(&mut self.layout, &["showlegend"], json!(true));
        self
    }

    /// Names along x, e.g. `["a", "b", "="]` or the Fourier basis names: the columns of
    /// every heatmap, and the points of every line on a categorical x axis, in order.
    pub fn x_labels<S: ToString>(self, labels: impl IntoIterator<Item = S>) -> Self {
        let labels: Vec<String> = labels.into_iter().map(|s| s.to_string()).collect();
        let mut fig = self.heatmap_coords("x", &labels);
        let mut lines = false;
        for trace in fig.data.iter_mut().filter(|t| t["type"] == "scatter") {
            set(trace, &["x"], json!(labels));
            lines = true;
        }
        if lines {
            set(&mut fig.layout, &["xaxis", "type"], json!("category"));
        }
        fig
    }

    /// Tick labels down y of every heatmap, e.g. the Fourier basis names.
    pub fn y_labels<S: ToString>(self, labels: impl IntoIterator<Item = S>) -> Self {
        self.heatmap_coords("y", labels)
    }

    fn heatmap_coords<S: ToString>(mut self, key: &str, labels: impl IntoIterator<Item = S>) -> Self {
        let labels: Vec<String> = labels.into_iter().map(|s| s.to_string()).collect();
        for trace in self.data.iter_mut().filter(|t| t["type"] == "heatmap") {
            set(trace, &[key], json!(labels));
        }
        self
    }

    /// A title above each facet panel, in order.
    pub fn facet_labels<S: ToString>(mut self, labels: impl IntoIterator<Item = S>) -> Self {
        for (i, label) in labels.into_iter().enumerate() {
            let (x, y) = axis_ids(i);
            let note = json!({
                "text": label.to_string(), "xref": format!("{x} domain"), "yref": format!("{y} domain"),
                "x": 0.5, "y": 1, "xanchor": "center", "yanchor": "bottom", "showarrow": false,
            });
            push(&mut self.layout, "annotations", note);
        }
        self
    }

    /// Per-point colour of every trace, on a shared colour bar (the seed's `color=`).
    pub fn color(mut self, values: impl Row) -> Self {
        let values = sig(&values.to_f64s());
        for trace in &mut self.data {
            set(trace, &["marker", "color"], values.clone());
            set(trace, &["marker", "coloraxis"], json!("coloraxis"));
        }
        if self.layout["coloraxis"]["colorscale"].is_null() {
            set(&mut self.layout, &["coloraxis", "colorscale"], json!("Viridis"));
        }
        self
    }

    /// Title of the colour bar (the seed's `caxis`).
    pub fn caxis(mut self, label: impl Into<String>) -> Self {
        set(&mut self.layout, &["coloraxis", "colorbar", "title", "text"], json!(label.into()));
        self
    }

    /// Logarithmic (or linear) x axis.
    pub fn log_x(self, log: bool) -> Self {
        self.axis_type("x", log)
    }

    /// Logarithmic (or linear) y axis.
    pub fn log_y(self, log: bool) -> Self {
        self.axis_type("y", log)
    }

    fn axis_type(mut self, axis: &str, log: bool) -> Self {
        let kind = if log { "log" } else { "linear" };
        for key in axis_keys(&self.layout, &format!("{axis}axis")) {
            set(&mut self.layout, &[&key, "type"], json!(kind));
        }
        let menu = format!("toggle_{axis}");
        let menus = self.layout.get_mut("updatemenus").and_then(Value::as_array_mut);
        for m in menus.into_iter().flatten().filter(|m| m["name"] == menu.as_str()) {
            set(m, &["active"], json!(usize::from(log)));
        }
        self
    }

    /// Buttons above the chart that switch the x axis between linear and log.
    pub fn toggle_x(self) -> Self {
        self.toggle("x")
    }

    /// Buttons above the chart that switch the y axis between linear and log.
    pub fn toggle_y(self) -> Self {
        self.toggle("y")
    }

    fn toggle(mut self, axis: &str) -> Self {
        let name = format!("toggle_{axis}");
        let menus = &self.layout["updatemenus"];
        if menus.as_array().is_some_and(|ms| ms.iter().any(|m| m["name"] == name.as_str())) {
            return self;
        }
        let slot = menus.as_array().map_or(0, Vec::len);
        let keys = axis_keys(&self.layout, &format!("{axis}axis"));
        let log = self.layout[&keys[0]]["type"] == "log";
        let button = |kind: &str| {
            let args: serde_json::Map<String, Value> =
                keys.iter().map(|k| (format!("{k}.type"), json!(kind))).collect();
            json!({"label": format!("{kind} {axis}"), "method": "relayout", "args": [args]})
        };
        let menu = json!({
            "name": name, "type": "buttons", "direction": "right", "active": usize::from(log),
            "buttons": [button("linear"), button("log")], "x": 0, "xanchor": "left", "y": 1,
            "yanchor": "bottom", "pad": {"l": 140 * slot, "b": 6},
        });
        push(&mut self.layout, "updatemenus", menu);
        self
    }
}

/// Trace axis ids of facet `i`: ("x", "y"), ("x2", "y2"), …
fn axis_ids(i: usize) -> (String, String) {
    match i {
        0 => ("x".into(), "y".into()),
        _ => (format!("x{}", i + 1), format!("y{}", i + 1)),
    }
}

fn round(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}
