//! Which inputs the training set covers once the task's classes collapse.
//!
//! A model of (g(a) + h(b)) mod p that reads a only through g(a) and b only through
//! h(b) sees the input (a, b) as the cell (u, v) = (g(a), h(b)). A test pair in a cell
//! that holds a training pair is answered by lookup once the classes collapse; a test
//! pair in a cell with no training pair (an unseen cell) needs the algorithm. For
//! (a⁴ + b⁴) mod 113 the 12,769 pairs fall into 29 × 29 cells; for a + b every pair is
//! its own cell, every test pair is in an unseen cell, and the split says nothing new.
//!
//! What this can and cannot tell apart: it names the test pairs that no lookup of
//! training pairs in the task's own variables can answer. A model that has not
//! collapsed its classes may still fail on seen cells; the seen-cell curve shows it.

use std::collections::HashSet;

use serde::Serialize;

use crate::task::{Split, Task};

/// The cells of a task's inputs and which of them the training set covers.
#[derive(Clone, Debug, Serialize)]
pub struct Coverage {
    /// Distinct cells (g(a), h(b)) among all p² inputs.
    pub cells: usize,
    /// Cells with no training pair, as (u, v), ascending.
    pub unseen_cells: Vec<(i64, i64)>,
    /// Test pairs in those cells (indices into the p² pairs, a-major), ascending.
    pub unseen_test_pairs: Vec<i64>,
    /// The other test pairs, ascending.
    #[serde(skip)]
    pub seen_test_pairs: Vec<i64>,
}

impl Coverage {
    pub fn new(task: &Task, split: &Split) -> Self {
        let (g, h, p) = (task.g_values(), task.h_values(), task.p);
        let cell = |pair: i64| (g[(pair / p) as usize], h[(pair % p) as usize]);
        let trained: HashSet<(i64, i64)> = split.train.iter().map(|&i| cell(i)).collect();
        let all: HashSet<(i64, i64)> = (0..task.n_pairs()).map(cell).collect();
        let mut unseen_cells: Vec<(i64, i64)> = all.difference(&trained).copied().collect();
        unseen_cells.sort_unstable();
        let (mut unseen_test_pairs, mut seen_test_pairs): (Vec<i64>, Vec<i64>) =
            split.test.iter().partition(|&&i| !trained.contains(&cell(i)));
        unseen_test_pairs.sort_unstable();
        seen_test_pairs.sort_unstable();
        Coverage { cells: all.len(), unseen_cells, unseen_test_pairs, seen_test_pairs }
    }

    /// Whether the test pair `pair` lies in a cell with no training pair.
    pub fn is_unseen(&self, pair: i64) -> bool {
        self.unseen_test_pairs.binary_search(&pair).is_ok()
    }
}

/// Per epoch: the test loss and accuracy on the test pairs of seen cells and on those
/// of unseen cells (NaN where a run has none; empty for a run recorded without them).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CellCurves {
    pub test_loss_seen: Vec<f64>,
    pub test_loss_unseen: Vec<f64>,
    pub test_acc_seen: Vec<f64>,
    pub test_acc_unseen: Vec<f64>,
}

impl CellCurves {
    /// The four values of one epoch, in the order of the fields.
    pub fn push(&mut self, [loss_seen, loss_unseen, acc_seen, acc_unseen]: [f64; 4]) {
        self.test_loss_seen.push(loss_seen);
        self.test_loss_unseen.push(loss_unseen);
        self.test_acc_seen.push(acc_seen);
        self.test_acc_unseen.push(acc_unseen);
    }

    /// Epoch `e`'s four values.
    pub fn at(&self, e: usize) -> [f64; 4] {
        [self.test_loss_seen[e], self.test_loss_unseen[e], self.test_acc_seen[e], self.test_acc_unseen[e]]
    }

    /// The first `epochs` epochs.
    pub fn first(&self, epochs: usize) -> CellCurves {
        let first = |v: &Vec<f64>| v[..epochs.min(v.len())].to_vec();
        CellCurves {
            test_loss_seen: first(&self.test_loss_seen),
            test_loss_unseen: first(&self.test_loss_unseen),
            test_acc_seen: first(&self.test_acc_seen),
            test_acc_unseen: first(&self.test_acc_unseen),
        }
    }

    pub fn len(&self) -> usize {
        self.test_loss_seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_collapse_with_the_task_and_not_for_a_plus_b() {
        let split = Split::seeded(113 * 113, 0.3, 598).unwrap();
        let seed = Coverage::new(&Task::seed(), &split);
        assert_eq!(seed.cells, 29 * 29);
        // As counted on the seed's split (TransformerLens's own, the same permutation).
        assert_eq!((seed.unseen_cells.len(), seed.unseen_test_pairs.len()), (17, 137));
        assert_eq!(seed.unseen_test_pairs.len() + seed.seen_test_pairs.len(), split.test.len());
        // Every unseen pair's cell is unseen, and no training pair lies in one.
        let (g, h) = (Task::seed().g_values(), Task::seed().h_values());
        let cell = |i: i64| (g[(i / 113) as usize], h[(i % 113) as usize]);
        assert!(seed.unseen_test_pairs.iter().all(|&i| seed.unseen_cells.binary_search(&cell(i)).is_ok()));
        assert!(split.train.iter().all(|&i| seed.unseen_cells.binary_search(&cell(i)).is_err()));

        let sum = Coverage::new(&Task::power_sum(113, 1, 1), &split);
        assert_eq!(sum.cells, 113 * 113);
        assert_eq!(sum.unseen_test_pairs.len(), split.test.len());
        assert!(sum.seen_test_pairs.is_empty());
    }
}
