//! The inputs, labels and loss weights of N runs trained together, on the training
//! device: each run's training rows, then its test rows, each set padded to the
//! longest run's so that every run has the same number of rows.

use tch::{Device, Kind, Tensor};

use crate::config::RunConfig;
use crate::coverage::Coverage;
use crate::one_layer::{pieces, Lookup, Queries};
use crate::task::Split;

/// A run of consecutive rows that one read of the tables covers.
pub(crate) struct Piece {
    pub start: i64,
    pub len: i64,
    /// Whether the read keeps resid_mid: the training rows do, for the backward pass.
    pub with_resid_mid: bool,
    pub lookup: Lookup,
}

pub(crate) struct Batches {
    /// Positions per input.
    pub n_pos: i64,
    /// `[model, train + test]`.
    pub labels: Tensor,
    /// Rows of the (padded) training set; the test set follows.
    pub n_train: i64,
    /// What each row weighs in each run's train and test loss: 1/(the run's set size)
    /// for its real rows, 0 for padding and for the other set: `[model, rows, 2]` float64.
    pub loss_weights: Tensor,
    /// What each test row weighs in each run's loss and accuracy on the test pairs of
    /// seen cells and on those of unseen cells ([`Coverage`]), the same way: `[model, rows, 2]`.
    pub cell_weights: Tensor,
    /// Where a run has no such pairs (its seen or unseen measure is NaN): `[model, 2]` bool.
    pub empty_cells: Tensor,
    /// The training part of the train-loss weights: `[model, n_train]`.
    pub train_weights: Tensor,
    /// The tokens the inputs end in: the queries the tables are built for.
    pub queries: Queries,
    /// The pieces a forward pass reads the rows in, the training rows first.
    pub pieces: Vec<Piece>,
}

impl Batches {
    pub fn new(runs: &[(&RunConfig, &Split)], device: Device) -> Self {
        let longest = |indices: &dyn Fn(&Split) -> &Vec<i64>| {
            runs.iter().map(|(_, s)| indices(s).len()).max().unwrap_or(0) as i64
        };
        let (n_train, n_test) = (longest(&|s| &s.train), longest(&|s| &s.test));
        let (mut data, mut labels, mut weights, mut by_cell, mut empty) = (vec![], vec![], vec![], vec![], vec![]);
        for (cfg, split) in runs {
            let coverage = Coverage::new(&cfg.task, split);
            let cell_sizes = [coverage.seen_test_pairs.len(), coverage.unseen_test_pairs.len()];
            let (dataset, all_labels) = (cfg.task.dataset(), cfg.task.labels());
            let mut rows = vec![0i64; (n_train + n_test) as usize];
            let mut w = vec![0f64; 2 * rows.len()];
            let mut cell_w = vec![0f64; 2 * rows.len()];
            for (set, indices, offset) in [(0, &split.train, 0), (1, &split.test, n_train as usize)] {
                // In pair order: neighbouring inputs share their first token, and the
                // table rows they read stay in cache.
                let mut indices = indices.clone();
                indices.sort_unstable();
                for (i, &row) in indices.iter().enumerate() {
                    rows[offset + i] = row;
                    w[2 * (offset + i) + set] = 1.0 / indices.len() as f64;
                    if set == 1 {
                        let cell = coverage.is_unseen(row) as usize;
                        cell_w[2 * (offset + i) + cell] = 1.0 / cell_sizes[cell] as f64;
                    }
                }
            }
            by_cell.push(Tensor::from_slice(&cell_w).view([-1, 2]));
            empty.push(Tensor::from_slice(&cell_sizes.map(|n| n == 0)));
            let rows = Tensor::from_slice(&rows);
            data.push(dataset.index_select(0, &rows));
            labels.push(all_labels.index_select(0, &rows));
            weights.push(Tensor::from_slice(&w).view([-1, 2]));
        }
        let stack = |t: &[Tensor]| Tensor::stack(t, 0).to_device(device);
        let (data, labels, loss_weights) = (stack(&data), stack(&labels), stack(&weights));
        let (cell_weights, empty_cells) = (stack(&by_cell), stack(&empty).to_kind(Kind::Bool));
        let train_weights = loss_weights.narrow(1, 0, n_train).select(2, 0);
        // On the CPU the test rows in pieces after the training rows; elsewhere all
        // rows in one piece (fewer kernel launches).
        let cuts: Vec<(i64, i64, bool)> = if device == Device::Cpu {
            std::iter::once((0, n_train, true))
                .chain(pieces(n_test, device).into_iter().map(|(start, len)| (n_train + start, len, false)))
                .collect()
        } else {
            vec![(0, n_train + n_test, true)]
        };
        let model_cfg = &runs[0].0.model;
        let queries = Queries::of(&data, model_cfg.d_vocab);
        let pieces = cuts
            .into_iter()
            .map(|(start, len, with_resid_mid)| Piece {
                start,
                len,
                with_resid_mid,
                lookup: Lookup::new(model_cfg, &data.narrow(1, start, len), &queries),
            })
            .collect();
        let n_pos = data.size()[2];
        Batches { n_pos, labels, n_train, loss_weights, cell_weights, empty_cells, train_weights, queries, pieces }
    }
}
