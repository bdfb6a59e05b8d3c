//! A key-frequency chooser in the page: a toggle per frequency, presets, and four charts
//! that follow the choice, drawn by `chooser.js` from data embedded in the page, so it
//! works offline, in an exported notebook, with no kernel.
//!
//! The data (written by [`crate::key_explorer::KeyExplorer::chooser`]), per checkpoint
//! rows of columns k − 1: `cos_sims.{standard,task}` (the logits' cosine similarity with
//! each frequency's cube), `embed_share` and `logit_map_share` (each frequency's share of
//! the Fourier energy of W_E over a and of W_out·W_U over c); per neuron of the final
//! model, `neuron_share`; `epochs`, `phase_lines`, `train_loss`, `test_loss`,
//! `key_set`, and `presets` (`name`, `freqs`, and per checkpoint `excluded`, `restricted`).

use serde_json::Value;

use super::compact::round_sig;
use super::html::unique_id;

/// Significant digits of the embedded values: well inside what a chart shows, and what
/// the click test (`scripts/check_chooser.py`) compares against the crate's values.
const DIGITS: i32 = 6;

/// The chooser widget.
#[derive(Clone, Debug)]
pub struct Chooser {
    data: Value,
}

impl Chooser {
    pub fn new(mut data: Value) -> Self {
        round_all(&mut data);
        Chooser { data }
    }

    /// The widget's HTML: its controls, four chart containers and the script that
    /// draws them once plotly.js is on the page.
    pub fn to_html(&self) -> String {
        let id = unique_id();
        let data = serde_json::to_string(&self.data).unwrap_or_else(|_| "{}".into()).replace('<', "\\u003c");
        let charts: String = ["residual", "energy", "neurons", "losses"]
            .iter()
            .map(|name| {
                format!(r#"<div class="plotly-graph-div gl-chart" data-chart="{name}" style="width:100%"></div>"#)
            })
            .collect();
        format!(
            r#"<div id="{id}" class="groklens-chooser" style="font:13px sans-serif">
<div style="margin:0.5em 0"><b>Key frequencies</b> <span class="gl-current"></span> (bold: the key set found)</div>
<div class="gl-freqs" style="max-width:60em"></div>
<div style="margin:0.5em 0"><select class="gl-presets"><option value="">presets…</option></select>
<button data-action="found">key set found</button> <button data-action="all">all</button> <button data-action="clear">none</button></div>
{charts}
</div>
<script type="text/javascript">(function () {{
{js}
groklensChooser(document.getElementById("{id}"), {data});
}})();</script>"#,
            js = include_str!("chooser.js"),
        )
    }

    /// Displays the chooser in evcxr.
    pub fn show(&self) {
        println!("EVCXR_BEGIN_CONTENT text/html\n{}\nEVCXR_END_CONTENT", self.to_html());
    }

    /// Called by evcxr when a cell ends with a `Chooser` expression.
    pub fn evcxr_display(&self) {
        self.show();
    }
}

fn round_all(v: &mut Value) {
    match v {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => {
            if let Some(x) = n.as_f64() {
                *v = round_sig(x, DIGITS);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(round_all),
        Value::Object(map) => map.values_mut().for_each(round_all),
        _ => {}
    }
}
