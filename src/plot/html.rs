//! Rendering a [`Figure`]'s JSON: evcxr display blocks, HTML that draws offline, and
//! self-contained pages.
//!
//! plotly.js comes from the `plotly` crate (feature `plotly_embed_js`) and is written
//! once per page: by [`init_notebook`] in a notebook, in the `<head>` of
//! [`to_standalone_html`]. A chart's HTML is a `<div>` and a script that draws it as
//! soon as both `window.Plotly` and the div exist.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::Figure;

const PLOTLY_MIME: &str = "application/vnd.plotly.v1+json";

/// plotly.js (minified, from the `plotly` crate) without the MathJax that
/// `Plot::offline_js_sources` adds: LaTeX in titles is not rendered.
pub fn plotly_js() -> String {
    let sources = plotly::Plot::offline_js_sources();
    let start = sources.find('>').map_or(0, |i| i + 1);
    let end = sources.find("</script>").unwrap_or(sources.len());
    sources[start..end].to_string()
}

/// An element id unique across pages, processes and kernel restarts.
pub fn unique_id() -> String {
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let hash = RandomState::new().hash_one((nanos, std::process::id(), n));
    format!("groklens-{hash:016x}-{n}")
}

impl Figure {
    /// The chart as plotly JSON (`{data, layout, …}`).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// A `<div>` and the script that draws the chart into it once plotly.js is on the
    /// page (see [`init_notebook`]); until then the div says what it waits for.
    pub fn to_inline_html(&self) -> String {
        let id = unique_id();
        // `<` only occurs inside JSON strings, where `\u003c` means the same and
        // cannot end the script element.
        let fig = self.to_json().replace('<', "\\u003c");
        format!(
            r#"<div id="{id}" class="plotly-graph-div groklens-chart" style="width:100%"><span style="color:#888;font:12px sans-serif">waiting for plotly.js: run groklens::plot::init_notebook() once</span></div>
<script type="text/javascript">(function () {{
  var fig = {fig};
  var timer = setInterval(draw, 100);
  draw();
  function draw() {{
    var gd = document.getElementById("{id}");
    if (!window.Plotly || !gd) return;
    clearInterval(timer);
    gd.textContent = "";
    window.Plotly.newPlot(gd, fig);
  }}
}})();</script>"#
        )
    }

    /// Displays the chart in evcxr: one block for JupyterLab's plotly renderer and one
    /// `text/html` block for everything else (exported HTML, VS Code, Notebook).
    pub fn show(&self) {
        show_all(std::slice::from_ref(self));
    }

    /// Called by evcxr when a cell ends with a `Figure` expression.
    pub fn evcxr_display(&self) {
        self.show();
    }
}

/// What [`show_all`] prints: evcxr's `EVCXR_BEGIN_CONTENT` blocks. One figure gets a
/// plotly block and an HTML block; several get one HTML block only, since JupyterLab
/// would otherwise prefer the plotly block and show only the first chart.
pub fn display_text(figs: &[Figure]) -> String {
    let block = |mime: &str, body: &str| format!("EVCXR_BEGIN_CONTENT {mime}\n{body}\nEVCXR_END_CONTENT\n");
    let html: Vec<String> = figs.iter().map(Figure::to_inline_html).collect();
    match figs {
        [fig] => block(PLOTLY_MIME, &fig.to_json()) + &block("text/html", &html[0]),
        _ => block("text/html", &html.join("\n")),
    }
}

/// Displays several charts from one evcxr cell (a cell keeps only its last block of
/// each MIME type, so separate `show` calls would leave only the last chart).
pub fn show_all(figs: &[Figure]) {
    let mut out = std::io::stdout().lock();
    // Nothing useful can be done when stdout is gone.
    let _ = out.write_all(display_text(figs).as_bytes()).and_then(|()| out.flush());
}

/// Puts plotly.js inline into the notebook (no network): run once, in its own cell,
/// before the charts (charts drawn earlier wait for it). Like plotly.py's
/// `init_notebook_mode(connected=False)`.
pub fn init_notebook() {
    let html = init_notebook_html();
    println!("EVCXR_BEGIN_CONTENT text/html\n{html}\nEVCXR_END_CONTENT");
}

/// The HTML that [`init_notebook`] displays: plotly.js in a script, skipped when the
/// page already has it.
pub fn init_notebook_html() -> String {
    format!("<script type=\"text/javascript\">if (!window.Plotly) {{\n{}\n}}</script>", plotly_js())
}

/// One self-contained page: plotly.js once in the head, then the charts in order.
pub fn to_standalone_html(figs: &[Figure], title: &str) -> String {
    to_page(title, &figs.iter().map(Figure::to_inline_html).collect::<Vec<_>>())
}

/// One self-contained page of HTML blocks (charts' [`Figure::to_inline_html`], a
/// [`super::Chooser`]'s, headings), plotly.js once in the head.
pub fn to_page(title: &str, blocks: &[String]) -> String {
    let title = escape(title);
    format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n<script type=\"text/javascript\">{js}</script>\n</head>\n<body>\n<h1 style=\"font-family:sans-serif\">{title}</h1>\n{blocks}\n</body>\n</html>\n",
        js = plotly_js(),
        blocks = blocks.join("\n"),
    )
}

/// Writes [`to_standalone_html`] to `path`.
pub fn write_html(path: impl AsRef<Path>, figs: &[Figure], title: &str) -> std::io::Result<()> {
    std::fs::write(path, to_standalone_html(figs, title))
}

pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
