//! How training shows its progress: a bar on a terminal, or the seed's line per
//! checkpoint where output is a log or a notebook.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

pub(crate) struct Progress(Option<ProgressBar>);

impl Progress {
    /// Out of `epochs`, `done` of them already.
    pub fn new(epochs: u64, done: u64) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress(None);
        }
        let bar = ProgressBar::new(epochs);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} epochs [{elapsed_precise}<{eta_precise}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_position(done);
        Progress(Some(bar))
    }

    pub fn tick(&self, epochs_done: i64) {
        if let Some(bar) = &self.0 {
            bar.set_position(epochs_done as u64);
        }
    }

    /// Each run's (train, test) loss at a checkpoint.
    pub fn checkpoint(&self, epoch: i64, losses: &[(f64, f64)]) {
        match (losses, &self.0) {
            ([(train, test)], None) => eprintln!("Epoch {epoch} Train Loss {train:?} Test Loss {test:?}"),
            (_, None) => eprintln!("Epoch {epoch} {}", describe(losses)),
            (_, Some(bar)) => bar.set_message(describe(losses)),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish();
        }
    }
}

/// "train 1.2e-3 test 4.5e-2", or the range over several runs.
fn describe(losses: &[(f64, f64)]) -> String {
    let range = |f: fn(&(f64, f64)) -> f64| {
        let (lo, hi) =
            losses.iter().map(f).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
        if losses.len() == 1 {
            format!("{lo:.3e}")
        } else {
            format!("{lo:.3e}..{hi:.3e}")
        }
    };
    format!("train {} test {}", range(|l| l.0), range(|l| l.1))
}
