//! JSON structure of the chart helpers, and their HTML output.

use groklens::plot::*;
use serde_json::{json, Value};

/// A deterministic `rows × cols` matrix with values in (-1, 1) and a few exact zeros.
fn waves(rows: usize, cols: usize, phase: f64) -> Matrix {
    let data = (0..rows * cols).map(|i| ((i as f64) * 0.37 + phase).sin() * 0.8).collect();
    Matrix::new(rows, cols, data).expect("shape")
}

fn json_of(fig: &Figure) -> Value {
    serde_json::from_str(&fig.to_json()).expect("valid JSON")
}

#[test]
fn imshow_is_px_imshow() {
    let fig = imshow([[1.0, -2.0, 0.5], [0.25, 0.0, -0.125]])
        .title("Embedding in Fourier Basis")
        .xaxis("Residual Stream")
        .yaxis("Fourier Component")
        .x_labels(["a", "b", "="])
        .y_labels(vec!["sin 1".to_string(), "cos 1".into()]);
    let j = json_of(&fig);
    let scale = &j["layout"]["coloraxis"]["colorscale"];
    assert_eq!(scale.as_array().map(Vec::len), Some(11));
    assert_eq!(scale[0], json!([0.0, "rgb(103,0,31)"]), "RdBu: red for low values");
    assert_eq!(scale[10], json!([1.0, "rgb(5,48,97)"]), "RdBu: blue for high values");
    assert_eq!(j["layout"]["coloraxis"]["cmid"], 0);
    assert_eq!(j["layout"]["yaxis"]["autorange"], "reversed", "row 0 at the top");
    assert_eq!(j["layout"]["yaxis"]["scaleanchor"], "x", "square cells");
    assert_eq!(j["layout"]["title"]["text"], "Embedding in Fourier Basis");
    assert_eq!(j["layout"]["xaxis"]["title"]["text"], "Residual Stream");
    assert_eq!(j["layout"]["yaxis"]["title"]["text"], "Fourier Component");
    let trace = &j["data"][0];
    assert_eq!(trace["type"], "heatmap");
    assert_eq!(trace["coloraxis"], "coloraxis");
    assert_eq!(trace["z"], json!([[1, -2, 0.5], [0.25, 0, -0.125]]));
    assert_eq!(trace["x"], json!(["a", "b", "="]));
    assert_eq!(trace["y"], json!(["sin 1", "cos 1"]));
}

#[test]
fn facets_share_one_zero_centred_scale() {
    let heads: Vec<Matrix> = (0..4).map(|h| waves(5, 5, h as f64)).collect();
    let j = json_of(&imshow_facets(&heads).facet_labels((0..4).map(|h| format!("head {h}"))));
    assert_eq!(j["data"].as_array().map(Vec::len), Some(4));
    for (i, t) in j["data"].as_array().into_iter().flatten().enumerate() {
        let (x, y) = if i == 0 { ("x".into(), "y".into()) } else { (format!("x{}", i + 1), format!("y{}", i + 1)) };
        assert_eq!((t["xaxis"].as_str(), t["yaxis"].as_str()), (Some(x.as_str()), Some(y.as_str())));
        assert_eq!(t["coloraxis"], "coloraxis");
        let yaxis = &j["layout"][format!("{}axis{}", "y", &y[1..])];
        assert_eq!(yaxis["autorange"], "reversed");
        assert_eq!(yaxis["scaleanchor"], x.as_str());
    }
    assert_eq!(j["layout"]["coloraxis"]["cmid"], 0);
    let notes = j["layout"]["annotations"].as_array().expect("facet labels");
    assert_eq!(notes.len(), 4);
    assert_eq!(notes[3]["text"], "head 3");
}

#[test]
fn facets_go_past_eight_axes() {
    let panels: Vec<Matrix> = (0..12).map(|i| waves(3, 3, i as f64)).collect();
    let j = json_of(&imshow_facets(panels).xaxis("b").yaxis("a"));
    assert_eq!(j["data"].as_array().map(Vec::len), Some(12));
    assert_eq!(j["layout"]["xaxis12"]["anchor"], "y12");
    assert_eq!(j["layout"]["xaxis12"]["title"]["text"], "b");
    assert_eq!(j["layout"]["yaxis7"]["title"]["text"], "a", "first column of the second row");
    assert!(j["layout"]["yaxis2"].get("title").is_none(), "not between panels");
    assert!(j["layout"]["height"].as_u64().is_some_and(|h| h > 450), "two rows get taller");
}

#[test]
fn line_has_one_trace_per_row_with_labels_and_exact_x() {
    let train = [4.712_345_6, 0.01, 1.234_567e-7];
    let test = vec![4.8f32, 4.7, f32::NAN];
    let epochs = vec![0usize, 12_345, 24_999];
    let fig = line(&[train.iter().map(|&v| v as f32).collect::<Vec<_>>(), test]).x(&epochs).labels(["train", "test"]);
    let j = json_of(&fig);
    assert_eq!(j["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(j["data"][0]["name"], "train");
    assert_eq!(j["data"][1]["name"], "test");
    assert_eq!(j["data"][0]["x"], json!([0, 12345, 24999]), "epochs are not rounded");
    assert_eq!(j["data"][0]["y"], json!([4.712, 0.01, 1.235e-7]), "4 significant digits");
    assert_eq!(j["data"][1]["y"][2], Value::Null, "NaN is a gap");
    assert!(j["layout"].get("updatemenus").is_none());
}

#[test]
fn single_series_and_matrix_inputs() {
    assert_eq!(json_of(&line(&[1.0, 2.0])).to_string(), json_of(&line(vec![1.0, 2.0])).to_string());
    assert_eq!(json_of(&line(vec![vec![1.0], vec![2.0]]))["data"].as_array().map(Vec::len), Some(2));
    let ragged = Matrix::from_rows(&[vec![1.0, 2.0], vec![3.0]]);
    assert_eq!((ragged.rows(), ragged.cols()), (2, 2));
    assert!(ragged.data()[3].is_nan());
    let err = Matrix::new(2, 3, vec![0.0; 5]).expect_err("5 values do not fill 2x3");
    assert_eq!(err.to_string(), "a 2x3 matrix needs 6 values, got 5");
}

#[test]
fn log_axes_and_toggles() {
    let toggles = |fig: Figure| {
        let j = json_of(&fig);
        assert_eq!(j["layout"]["yaxis"]["type"], "log");
        let menus = j["layout"]["updatemenus"].as_array().expect("menus").clone();
        assert_eq!(menus.len(), 2);
        menus
    };
    let a = toggles(line(&[1.0, 0.1]).log_y(true).toggle_x().toggle_y());
    let b = toggles(line(&[1.0, 0.1]).toggle_x().toggle_y().toggle_y().log_y(true));
    assert_eq!(a, b, "order does not matter, and a toggle is added once");
    let (x, y) = (&a[0], &a[1]);
    assert_eq!(x["buttons"][0]["args"], json!([{"xaxis.type": "linear"}]));
    assert_eq!(x["buttons"][1]["args"], json!([{"xaxis.type": "log"}]));
    assert_eq!(y["buttons"][1]["args"], json!([{"yaxis.type": "log"}]));
    assert_eq!((x["active"].as_u64(), y["active"].as_u64()), (Some(0), Some(1)));
    assert_eq!(x["buttons"][0]["method"], "relayout");
}

#[test]
fn phase_lines_are_dashed_vertical_lines() {
    let j = json_of(&line(&[1.0, 2.0]).phase_lines([1500.0, 13300.0, 16600.0]));
    let shapes = j["layout"]["shapes"].as_array().expect("shapes");
    let xs: Vec<f64> = shapes.iter().filter_map(|s| s["x0"].as_f64()).collect();
    assert_eq!(xs, [1500.0, 13300.0, 16600.0]);
    for s in shapes {
        assert_eq!((&s["x0"], &s["xref"], &s["yref"]), (&s["x1"], &json!("x"), &json!("paper")));
        assert_eq!((&s["y0"], &s["y1"]), (&json!(0), &json!(1)));
        assert_eq!(s["line"]["dash"], "dash");
        assert_eq!(s["opacity"], 0.7);
    }
    let j = json_of(&line(&[1.0]).phase_lines_named(&[("memorisation ends", 1500.0)]));
    assert_eq!(j["layout"]["shapes"][0]["label"]["text"], "memorisation ends");
}

#[test]
fn scatter_with_colour() {
    let j = json_of(&scatter([1, 2, 3], [0.5, 0.25, 0.125]).color([3.0, 2.0, 1.0]).caxis("freq"));
    let t = &j["data"][0];
    assert_eq!((&t["type"], &t["mode"]), (&json!("scatter"), &json!("markers")));
    assert_eq!(t["x"], json!([1, 2, 3]));
    assert_eq!(t["marker"]["color"], json!([3, 2, 1]));
    assert_eq!(t["marker"]["coloraxis"], "coloraxis");
    assert_eq!(j["layout"]["coloraxis"]["colorbar"]["title"]["text"], "freq");
}

#[test]
fn imshow_slider_steps_restyle_z() {
    let frames: Vec<Matrix> = (0..25).map(|k| waves(4, 6, k as f64)).collect();
    let labels: Vec<String> = (0..25).map(|k| format!("epoch {}", k * 100)).collect();
    let j = json_of(&imshow_slider(&frames, &labels));
    let steps = j["layout"]["sliders"][0]["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 25);
    assert_eq!(steps[3]["label"], "epoch 300");
    assert_eq!(steps[3]["method"], "restyle");
    assert_eq!(steps[3]["args"][1], json!([0]));
    let z3 = &steps[3]["args"][0]["z"][0];
    assert_eq!((z3.as_array().map(Vec::len), z3[0].as_array().map(Vec::len)), (Some(4), Some(6)));
    assert_eq!(steps[0]["args"][0]["z"][0], j["data"][0]["z"], "starts on frame 0");
    let max = frames.iter().map(Matrix::max_abs).fold(0.0, f64::max);
    assert_eq!(j["layout"]["coloraxis"]["cmax"].as_f64(), Some(max));
    assert_eq!(j["layout"]["coloraxis"]["cmin"].as_f64(), Some(-max));

    let j = json_of(&imshow_slider(&frames, &labels).stride(10));
    let labels: Vec<&str> = j["layout"]["sliders"][0]["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["label"].as_str())
        .collect();
    assert_eq!(labels, ["epoch 0", "epoch 1000", "epoch 2000", "epoch 2400"], "keeps the last");
}

#[test]
fn line_slider_steps_restyle_y() {
    let frames: Vec<Vec<Vec<f64>>> = (0..5).map(|k| vec![vec![k as f64; 3], vec![-(k as f64); 3]]).collect();
    let j = json_of(&line_slider(&frames, ["a", "b"]));
    let steps = j["layout"]["sliders"][0]["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 5);
    assert_eq!(steps[4]["args"], json!([{"y": [[4, 4, 4], [-4, -4, -4]]}, [0, 1]]));
    assert_eq!(steps[4]["label"], "4", "unlabelled frames are numbered");
    assert_eq!(j["data"].as_array().map(Vec::len), Some(2));
}

#[test]
fn slider_over_a_training_run_stays_small() {
    let frames: Vec<Matrix> = (0..250).map(|k| waves(113, 113, k as f64 * 0.01)).collect();
    let labels = (0..250).map(|k| k * 100);
    let full = imshow_slider(&frames, labels.clone()).to_json().len();
    let thin = imshow_slider(&frames, labels).stride(10).to_json().len();
    println!("113x113 x 250 frames: {full} bytes; stride 10: {thin} bytes");
    assert!(full / 251 < 110_000, "{} bytes per frame", full / 251);
    assert!(thin < 3_500_000, "{thin} bytes");
}

#[test]
fn ids_are_unique() {
    let ids: std::collections::HashSet<String> = (0..10_000).map(|_| unique_id()).collect();
    assert_eq!(ids.len(), 10_000);
    let fig = line(&[1.0]);
    assert_ne!(fig.to_inline_html(), fig.to_inline_html());
}

#[test]
fn inline_html_cannot_close_its_script() {
    let html = line(&[1.0]).title("</script><script>alert(1)</script>").to_inline_html();
    assert_eq!(html.matches("</script>").count(), 1);
    assert!(html.contains("\\u003c/script>"));
}

#[test]
fn standalone_page_embeds_plotly_once_and_loads_nothing() {
    let js = plotly_js();
    assert!(js.contains("plotly.js v3"), "plotly.js itself");
    assert!(!js.contains("</script"), "no MathJax script after it");
    let figs = [line(&[1.0, 2.0]), imshow([[1.0]])];
    let page = to_standalone_html(&figs, "Report <1>");
    assert_eq!(page.matches(&js[..2000]).count(), 1);
    assert!(page.contains("<title>Report &lt;1&gt;</title>"));
    let rest = page.replacen(&js, "", 1).to_lowercase();
    assert_eq!(rest.matches("plotly.newplot").count(), 2);
    assert!(!rest.contains("cdn") && !rest.contains("https://") && !rest.contains("http://"));
    assert!(!rest.contains(" src="), "no external scripts");
}

#[test]
fn evcxr_display_blocks() {
    let fig = line(&[1.0, 2.0]).title("t");
    let text = display_text(std::slice::from_ref(&fig));
    let blocks: Vec<(&str, &str)> = text
        .split("EVCXR_END_CONTENT\n")
        .filter(|b| !b.is_empty())
        .filter_map(|b| b.strip_prefix("EVCXR_BEGIN_CONTENT ")?.split_once('\n'))
        .collect();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].0, "application/vnd.plotly.v1+json");
    let plotly: Value = serde_json::from_str(blocks[0].1.trim_end()).expect("JSON block");
    assert_eq!(plotly, json_of(&fig));
    assert_eq!(blocks[1].0, "text/html");
    assert!(blocks[1].1.contains("Plotly.newPlot") && !blocks[1].1.contains("plotly.js v"));

    let two = display_text(&[fig.clone(), fig]);
    assert_eq!(two.matches("EVCXR_BEGIN_CONTENT text/html\n").count(), 1);
    assert_eq!(two.matches("EVCXR_BEGIN_CONTENT").count(), 1);
    assert_eq!(two.matches("Plotly.newPlot").count(), 2);
}

#[test]
fn wraps_plotly_typed_charts() {
    let mut plot = plotly::Plot::new();
    plot.add_trace(plotly::Scatter::new(vec![1, 2], vec![3, 4]));
    let fig = Figure::from_plotly(&plot).expect("plotly JSON").title("typed");
    assert_eq!(json_of(&fig)["data"][0]["x"], json!([1, 2]));
}

/// Every kind of chart, as a notebook would draw them.
fn gallery() -> Vec<Figure> {
    let p: usize = 23;
    let epochs: Vec<usize> = (0..200).map(|e| e * 100).collect();
    let train: Vec<f64> = epochs.iter().map(|&e| 4.7 * (-(e as f64) / 2000.0).exp() + 1e-7).collect();
    let test: Vec<f64> = epochs
        .iter()
        .map(|&e| if e < 14_000 { 5.0 } else { 5.0 * (-((e - 14_000) as f64) / 800.0).exp() + 1e-6 })
        .collect();
    let names: Vec<String> = (0..=p)
        .map(|k| {
            if k == 0 {
                "Const".into()
            } else {
                format!("{} {}", if k % 2 == 1 { "sin" } else { "cos" }, k.div_ceil(2))
            }
        })
        .collect();
    let frames: Vec<Matrix> = (0..60).map(|k| waves(p, p, k as f64 * 0.1)).collect();
    let frame_labels: Vec<String> = (0..60).map(|k| format!("epoch {}", k * 400)).collect();
    let lines: Vec<Vec<Vec<f64>>> = (0..30)
        .map(|k| {
            vec![
                (0..p).map(|i| ((i + k) as f64 * 0.3).sin()).collect(),
                (0..p).map(|i| ((i * k) as f64 * 0.01).cos()).collect(),
            ]
        })
        .collect();
    let mut typed = plotly::Plot::new();
    typed.add_trace(plotly::Bar::new(vec!["a", "b", "="], vec![3, 1, 2]));
    vec![
        imshow(waves(p + 1, 32, 0.0))
            .title("Embedding in Fourier Basis")
            .xaxis("Residual Stream")
            .yaxis("Fourier Component")
            .y_labels(&names),
        imshow(waves(4, 3, 1.0)).title("Attention to tokens").x_labels(["a", "b", "="]),
        imshow_facets((0..4).map(|h| waves(p, p, h as f64)))
            .facet_labels((0..4).map(|h| format!("head {h}")))
            .title("Attention score for heads at position 0")
            .xaxis("b")
            .yaxis("a"),
        imshow_facets((0..12).map(|n| waves(p, p, n as f64 * 0.5)))
            .facet_labels((0..12).map(|n| format!("neuron {n}")))
            .title("12 neurons"),
        line([&train, &test])
            .x(&epochs)
            .labels(["train", "test"])
            .log_y(true)
            .toggle_x()
            .toggle_y()
            .phase_lines([1500.0, 13300.0, 16600.0])
            .title("Training curve"),
        line(&train)
            .x(&epochs)
            .phase_lines_named(&[("memorisation", 1500.0), ("circuit formation", 13300.0), ("cleanup", 16600.0)])
            .log_x(true)
            .title("Named phases on a log x axis"),
        scatter(&train, &test).color(&epochs).caxis("epoch").xaxis("train loss").yaxis("test loss").title("Scatter"),
        imshow_slider(&frames, &frame_labels)
            .stride(3)
            .title("Neuron activations across checkpoints")
            .xaxis("b")
            .yaxis("a"),
        line_slider(&lines, (0..30).map(|k| format!("checkpoint {k}"))).labels(["norm", "other"]).title("Line slider"),
        Figure::from_plotly(&typed).expect("plotly JSON").title("A chart from plotly's typed API"),
        line(vec![vec![1.0, f64::NAN, 3.0]]).height(300).width(600).title("Gap and fixed size"),
    ]
}

/// Writes pages for check_html.py into target/tmp (see check_pages.sh): a good page, a
/// page with one broken chart, charts before and without plotly.js, plotly.rs's own
/// CDN page, and a notebook holding what evcxr stores for `init_notebook` and `show`.
#[test]
fn pages_for_check_html() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let figs = gallery();
    write_html(dir.join("plot-good.html"), &figs, "groklens charts").expect("write");

    let page = to_standalone_html(&figs, "one chart broken");
    let body = page.find("</head>").expect("head");
    let broken = page[..body].to_string() + &page[body..].replacen("var fig = {", "var fig = {{", 1);
    std::fs::write(dir.join("plot-broken.html"), broken).expect("write");

    // Charts placed before plotly.js wait for it; without it they never draw.
    let charts: Vec<String> = figs[..3].iter().map(Figure::to_inline_html).collect();
    let late = format!("<!DOCTYPE html><html><body>{}{}</body></html>", charts.join("\n"), init_notebook_html());
    std::fs::write(dir.join("plot-late.html"), late).expect("write");
    let no_js = format!("<!DOCTYPE html><html><body>{}</body></html>", charts.join("\n"));
    std::fs::write(dir.join("plot-nojs.html"), no_js).expect("write");

    let mut cdn = plotly::Plot::new();
    cdn.use_cdn_js();
    cdn.add_trace(plotly::Scatter::new(vec![1, 2], vec![3, 4]));
    std::fs::write(dir.join("plot-cdn.html"), cdn.to_html()).expect("write");

    // One code cell per display, with the outputs evcxr would store for it.
    let cell = |text: &str| {
        let data: serde_json::Map<String, Value> = text
            .split("EVCXR_END_CONTENT\n")
            .filter_map(|b| b.strip_prefix("EVCXR_BEGIN_CONTENT ")?.split_once('\n'))
            .map(|(mime, body)| {
                let body = body.trim_end();
                let value = serde_json::from_str(body).unwrap_or_else(|_| json!(body));
                (mime.to_string(), value)
            })
            .collect();
        json!({"cell_type": "code", "execution_count": 1, "metadata": {}, "source": "", "id": unique_id(),
               "outputs": [{"output_type": "execute_result", "execution_count": 1, "metadata": {}, "data": data}]})
    };
    let init = format!("EVCXR_BEGIN_CONTENT text/html\n{}\nEVCXR_END_CONTENT\n", init_notebook_html());
    let mut cells = vec![cell(&init)];
    cells.extend(figs[..8].iter().map(|f| cell(&display_text(std::slice::from_ref(f)))));
    cells.push(cell(&display_text(&figs[8..])));
    let nb = json!({"nbformat": 4, "nbformat_minor": 5, "cells": cells,
        "metadata": {"kernelspec": {"name": "rust", "display_name": "Rust", "language": "rust"}}});
    std::fs::write(dir.join("plot-notebook.ipynb"), nb.to_string()).expect("write");
}

#[test]
fn lines_take_names_on_a_categorical_x_axis_and_the_seeds_font_sizes() {
    let names = ["Constant", "Sin 1", "Cos 1"];
    let fig = line(&[3.0, 1.0, 2.0])
        .x_labels(names)
        .add_line("second", &[1.0, 1.0, 1.0])
        .x_labels(names)
        .title("Norms of Embedding in Fourier Basis")
        .xaxis("Fourier Component")
        .yaxis("Norm");
    let j = json_of(&fig);
    assert_eq!(j["layout"]["xaxis"]["type"], "category");
    for trace in j["data"].as_array().unwrap() {
        assert_eq!(trace["x"], json!(names), "every line is drawn at the names, in order");
    }
    assert_eq!(j["data"][1]["name"], "second");
    assert_eq!(j["layout"]["title"]["font"]["size"], 30, "pio.templates['plotly'].layout.title.font.size = 30");
    assert_eq!(j["layout"]["xaxis"]["title"]["font"]["size"], 20);
    assert_eq!(j["layout"]["yaxis"]["title"]["font"]["size"], 20);
}

#[test]
fn ndarray_arrays_draw_row_by_row() {
    let m = ndarray::arr2(&[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    let rows = json_of(&line(&m));
    assert_eq!(rows["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(rows["data"][1]["y"], json!([4, 5, 6]));
    let columns = json_of(&line(&m.t()));
    assert_eq!(columns["data"].as_array().map(Vec::len), Some(3));
    assert_eq!(columns["data"][2]["y"], json!([3, 6]));
    let x = json_of(&line(&m.row(0)).x(&ndarray::arr1(&[10.0, 20.0, 30.0])));
    assert_eq!(x["data"][0]["x"], json!([10, 20, 30]));
}
