//! Rounding numbers before they are written, so that charts (and notebooks) stay small.

use serde_json::Value;

use super::Matrix;

/// Significant digits kept in drawn values.
const DIGITS: i32 = 4;

/// A JSON number printed as short as possible: integral values without `.0`,
/// non-finite values as `null` (a gap).
pub(crate) fn num(v: f64) -> Value {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        Value::from(v as i64)
    } else {
        Value::from(v)
    }
}

/// `v` rounded to a multiple of `10^e`; dividing by an exact power of ten keeps the
/// result the double nearest to the decimal, which serde_json prints in full.
fn round_pow10(v: f64, e: i32) -> f64 {
    if e < 0 {
        let s = 10f64.powi(-e);
        (v * s).round() / s
    } else {
        let s = 10f64.powi(e);
        (v / s).round() * s
    }
}

fn exponent(v: f64) -> i32 {
    v.abs().log10().floor() as i32
}

/// `v` to `digits` significant digits, as a JSON number (non-finite: `null`).
pub(crate) fn round_sig(v: f64, digits: i32) -> Value {
    if v.is_finite() && v != 0.0 {
        num(round_pow10(v, exponent(v) - (digits - 1)))
    } else {
        num(v)
    }
}

/// Each value to [`DIGITS`] significant digits (safe on log axes).
pub(crate) fn sig(values: &[f64]) -> Value {
    values.iter().map(|&v| round_sig(v, DIGITS)).collect()
}

/// Every value to [`DIGITS`] digits of the matrix's largest |value|: a colour scale
/// cannot show finer steps, and small values shrink to a few characters.
pub(crate) fn rel(m: &Matrix) -> Value {
    let max = m.max_abs();
    let e = if max > 0.0 { exponent(max) - (DIGITS - 1) } else { 0 };
    m.iter_rows().map(|row| row.iter().map(|&v| num(round_pow10(v, e))).collect::<Value>()).collect()
}
