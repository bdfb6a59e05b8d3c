//! Short helpers for series a notebook draws: thinning per-epoch curves, picking
//! per-frequency columns, and the orders and magnitudes the seed's cells compute inline.

use ndarray::Array2;

/// Every `n`-th value, from the first (`n` = 0 is taken as 1).
pub fn every(values: &[f64], n: usize) -> Vec<f64> {
    values.iter().step_by(n.max(1)).copied().collect()
}

/// The indices [`every`] keeps: the epochs of a per-epoch curve thinned to every `n`-th.
pub fn every_epoch(len: usize, n: usize) -> Vec<i64> {
    (0..len as i64).step_by(n.max(1)).collect()
}

/// A per-epoch curve read at the given epochs (e.g. the checkpoints'); NaN past its end.
pub fn at_epochs(per_epoch: &[f64], epochs: &[i64]) -> Vec<f64> {
    epochs
        .iter()
        .map(|&e| usize::try_from(e).ok().and_then(|e| per_epoch.get(e)).copied().unwrap_or(f64::NAN))
        .collect()
}

/// Ascending, NaN last.
pub fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// |v| of each value.
pub fn abs(values: &[f64]) -> Vec<f64> {
    values.iter().map(|v| v.abs()).collect()
}

/// From a `[n_checkpoints, (p−1)/2]` series (column k − 1 for frequency k), the listed
/// frequencies' columns as rows, `[freqs.len(), n_checkpoints]`: one line each in `line`.
/// Frequencies out of range give rows of NaN.
pub fn freq_rows(per_freq: &Array2<f64>, freqs: &[i64]) -> Array2<f64> {
    let n = per_freq.nrows();
    let mut out = Array2::from_elem((freqs.len(), n), f64::NAN);
    for (row, &k) in freqs.iter().enumerate() {
        if k >= 1 && (k as usize) <= per_freq.ncols() {
            out.row_mut(row).assign(&per_freq.column(k as usize - 1));
        }
    }
    out
}

/// "Freq k" for each frequency: the seed's legend names.
pub fn freq_names(freqs: &[i64]) -> Vec<String> {
    freqs.iter().map(|k| format!("Freq {k}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thins_picks_and_orders() {
        let v = [3.0, -1.0, 2.0, 5.0, 0.5];
        assert_eq!(every(&v, 2), vec![3.0, 2.0, 0.5]);
        assert_eq!(every_epoch(5, 2), vec![0, 2, 4]);
        assert_eq!(at_epochs(&v, &[1, 3]), vec![-1.0, 5.0]);
        assert!(at_epochs(&v, &[9])[0].is_nan());
        assert_eq!(sorted(&v), vec![-1.0, 0.5, 2.0, 3.0, 5.0]);
        assert_eq!(abs(&v)[1], 1.0);
        let m = ndarray::arr2(&[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]);
        let rows = freq_rows(&m, &[3, 1]);
        assert_eq!(rows.row(0).to_vec(), vec![3.0, 6.0]);
        assert_eq!(rows.row(1).to_vec(), vec![1.0, 4.0]);
        assert!(freq_rows(&m, &[4]).iter().all(|v| v.is_nan()));
    }
}
