//! `report.html`: every chart of an [`Analysis`] on one self-contained page.

use std::path::Path;

use crate::analysis::Analysis;
use crate::error::{Error, Result};
use crate::plot::{line, to_page, Figure};

/// The report's charts, in reading order.
pub fn figures(a: &Analysis) -> Vec<Figure> {
    let s = &a.over_training;
    let lines = &a.phases.lines();
    let freqs: Vec<i64> = (1..=a.final_.logit_cos_sim.task.len() as i64).collect();
    let mut figs = Vec::new();
    if !a.train_losses.is_empty() {
        let stride = (a.train_losses.len() / 1000).max(1);
        let every = |v: &[f64]| v.iter().step_by(stride).copied().collect::<Vec<f64>>();
        let epochs: Vec<i64> = (0..a.train_losses.len() as i64).step_by(stride).collect();
        figs.push(
            line(&[every(&a.train_losses), every(&a.test_losses)])
                .x(&epochs)
                .labels(["train", "test"])
                .title(format!("Training curve: {}", a.task))
                .xaxis("Epoch")
                .yaxis("Loss")
                .log_y(true)
                .toggle_x()
                .toggle_y()
                .phase_lines(lines),
        );
    }
    figs.push(cell_curves(a));
    figs.push(
        line([&s.train_loss, &s.test_loss, &s.excluded_loss, &s.excluded_loss_control, &s.restricted_loss])
            .x(&s.epochs)
            .labels([
                "train",
                "test",
                "excluded (task-view key freqs)",
                "excluded, control (as many other freqs)",
                "restricted (test)",
            ])
            .title("Excluded and restricted loss")
            .xaxis("Epoch")
            .yaxis("Loss")
            .log_y(true)
            .toggle_x()
            .toggle_y()
            .phase_lines(lines),
    );
    figs.push(
        line(&s.restricted_over_test)
            .x(&s.epochs)
            .title("Restricted loss over test loss (near 1: the key frequencies carry the test predictions)")
            .xaxis("Epoch")
            .yaxis("Restricted / test")
            .log_y(true)
            .toggle_y()
            .phase_lines(lines),
    );
    figs.push(
        line([&a.final_.logit_cos_sim.standard, &a.final_.logit_cos_sim.task])
            .x(&freqs)
            .labels(["a + b (seed's view)", "g(a) + h(b) (task view)"])
            .title("Final logits: cosine similarity per frequency (evidence for the key frequencies)")
            .xaxis("Frequency")
            .yaxis("Cosine Sim"),
    );
    let task_series = a.measures.view(crate::fourier::View::Task);
    let key_lines: Vec<Vec<f64>> =
        a.key_frequencies.task.iter().map(|&k| task_series.cos_sims.column(k as usize - 1).to_vec()).collect();
    if !key_lines.is_empty() {
        figs.push(
            line(&key_lines)
                .x(&s.epochs)
                .labels(a.key_frequencies.task.iter().map(|k| format!("Freq {k}")))
                .title("Cosine sim of the logits with each key frequency (task view)")
                .xaxis("Epoch")
                .yaxis("Cosine Sim")
                .phase_lines(lines),
        );
    }
    figs.push(
        line([&s.residual_fraction.standard, &s.residual_fraction.task])
            .x(&s.epochs)
            .labels(["a + b view", "task view"])
            .title("Residual fraction of the logits over the key frequencies")
            .xaxis("Epoch")
            .yaxis("Residual fraction")
            .phase_lines(lines),
    );
    figs.push(
        line([&s.gini_embedding, &s.gini_embedding_task, &s.gini_logit_map])
            .x(&s.epochs)
            .labels(["W_E (a + b view)", "W_E (task view)", "W_out·W_U"])
            .title("Gini coefficient of Fourier norms")
            .xaxis("Epoch")
            .yaxis("Gini")
            .phase_lines(lines),
    );
    figs.push(
        line(&s.weight_norm)
            .x(&s.epochs)
            .title("Total sum of squared weights")
            .xaxis("Epoch")
            .yaxis("Σ w²")
            .phase_lines(lines),
    );
    figs.push(
        line([&s.train_accuracy, &s.test_accuracy])
            .x(&s.epochs)
            .labels(["train", "test"])
            .title("Accuracy")
            .xaxis("Epoch")
            .yaxis("Accuracy")
            .phase_lines(lines),
    );
    figs.push(
        line(&s.class_collapse)
            .x(&s.epochs)
            .title("Class collapse: within-class share of W_E's variance (classes of equal g(a))")
            .xaxis("Epoch")
            .yaxis("Within-class share")
            .phase_lines(lines),
    );
    figs
}

/// The test loss on the test pairs of seen and of unseen cells over training (per epoch
/// where the run recorded it, else per checkpoint), with the phases and the spikes.
pub fn cell_curves(a: &Analysis) -> Figure {
    let c = &a.coverage;
    let title = format!(
        "Test loss on seen and unseen cells: {} of {} cells unseen in training, holding {} test pairs",
        c.coverage.unseen_cells.len(),
        c.coverage.cells,
        c.coverage.unseen_test_pairs.len()
    );
    let (epochs, test, seen, unseen): (Vec<i64>, Vec<f64>, Vec<f64>, Vec<f64>) = if a.by_cell.is_empty() {
        let s = &a.over_training;
        (
            s.epochs.clone(),
            s.test_loss.clone(),
            c.per_checkpoint.test_loss_seen.clone(),
            c.per_checkpoint.test_loss_unseen.clone(),
        )
    } else {
        let stride = (a.test_losses.len() / 1000).max(1);
        let every = |v: &[f64]| v.iter().step_by(stride).copied().collect::<Vec<f64>>();
        let epochs = (0..a.test_losses.len() as i64).step_by(stride).collect();
        (epochs, every(&a.test_losses), every(&a.by_cell.test_loss_seen), every(&a.by_cell.test_loss_unseen))
    };
    line([test, seen, unseen])
        .x(&epochs)
        .labels(["all test pairs", "seen cells", "unseen cells"])
        .title(title)
        .xaxis("Epoch")
        .yaxis("Loss")
        .log_y(true)
        .toggle_x()
        .toggle_y()
        .phase_lines_named(&a.phases.named_lines())
}

/// Writes the report page: the charts, then the key-frequency chooser.
pub fn write_report(path: &Path, analysis: &Analysis) -> Result<()> {
    let mut blocks: Vec<String> = figures(analysis).iter().map(Figure::to_inline_html).collect();
    blocks.push(format!(
        "<h2 style=\"font-family:sans-serif\">Key frequencies, interactively</h2>\n<p style=\"font-family:sans-serif\">{}</p>",
        CHOOSER_NOTE
    ));
    blocks.push(analysis.explorer.chooser()?.to_html());
    std::fs::write(path, to_page(&format!("groklens analysis: {}", analysis.task), &blocks))
        .map_err(|e| Error::io(path, e))
}

/// What the chooser recomputes and what it looks up.
const CHOOSER_NOTE: &str = "Toggle frequencies or pick a preset: the residual fraction of the logits (both views), \
the share of the embedding's and of W_out·W_U's Fourier energy and of each neuron's output in the set are \
recomputed in the page. Excluded and restricted loss were computed beforehand for the presets (the key set \
found, each orbit of the task's symmetry, the top n by evidence for every n, and the key set with one \
frequency left out); for any other set, `groklens analyze --key-freqs` computes them.";
