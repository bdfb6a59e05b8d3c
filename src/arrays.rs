//! ndarray, as the numbers a notebook user holds: measures' matrices and series over
//! training are [`Array2`]s and [`Array1`]s, tensors convert both ways, and the rest of
//! Rust's numeric crates take them as they are.
//!
//! ```
//! use groklens::arrays::{to_array2, to_tensor};
//! let t = groklens::tch::Tensor::from_slice(&[1.0f64, 2.0, 3.0, 4.0]).view([2, 2]);
//! let a = to_array2(&t).unwrap();
//! assert_eq!(a[[1, 0]], 3.0);
//! assert_eq!(to_tensor(&a.t().to_owned()).double_value(&[0, 1]), 3.0);
//! ```

pub use ndarray::{s, Array1, Array2, ArrayView1, ArrayView2, Axis};

use ndarray::{ArrayBase, Data, Dimension};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// A float64 copy of a 2-D tensor (on any device, of any float or integer kind).
pub fn to_array2(t: &Tensor) -> Result<Array2<f64>> {
    match t.size()[..] {
        [rows, cols] => Ok(Array2::from_shape_vec((rows as usize, cols as usize), values(t)?)
            .expect("a [rows, cols] tensor has rows × cols values")),
        ref size => Err(Error::config(format!("to_array2 needs a 2-D tensor, got {size:?}"))),
    }
}

/// A float64 copy of a 1-D tensor.
pub fn to_array1(t: &Tensor) -> Result<Array1<f64>> {
    match t.size()[..] {
        [_] => Ok(Array1::from(values(t)?)),
        ref size => Err(Error::config(format!("to_array1 needs a 1-D tensor, got {size:?}"))),
    }
}

/// A float64 CPU tensor of the same shape and values.
pub fn to_tensor<S: Data<Elem = f64>, D: Dimension>(a: &ArrayBase<S, D>) -> Tensor {
    let shape: Vec<i64> = a.shape().iter().map(|&n| n as i64).collect();
    let flat: Vec<f64> = a.iter().copied().collect(); // logical (row-major) order, any layout
    Tensor::from_slice(&flat).view(shape.as_slice())
}

fn values(t: &Tensor) -> Result<Vec<f64>> {
    let flat = t.detach().to_device(Device::Cpu).to_kind(Kind::Double).flatten(0, -1);
    Ok(Vec::<f64>::try_from(&flat)?)
}

/// Rows of equal length as an array (`[rows.len(), width]`; `width` where there are none).
pub(crate) fn from_rows(rows: &[Vec<f64>], width: usize) -> Array2<f64> {
    let width = rows.first().map_or(width, Vec::len);
    let flat: Vec<f64> = rows.iter().flatten().copied().collect();
    Array2::from_shape_vec((rows.len(), width), flat).expect("rows of equal length")
}

/// Serde for an [`Array2`] as a list of rows, the JSON every reader expects.
pub(crate) mod rows {
    use ndarray::Array2;
    use serde::ser::{SerializeSeq, Serializer};

    pub fn serialize<S: Serializer>(a: &Array2<f64>, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(a.nrows()))?;
        for row in a.rows() {
            seq.serialize_element(&row.to_vec())?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_round_trip_and_layout_is_logical() {
        let t = Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]);
        let a = to_array2(&t).unwrap();
        assert_eq!(a, ndarray::arr2(&[[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]));
        let back = to_tensor(&a.t());
        assert_eq!(back.size(), [3, 2]);
        assert_eq!(back.double_value(&[2, 1]), 5.0);
        assert!(to_array2(&Tensor::zeros([2], (Kind::Float, Device::Cpu))).is_err());
        assert_eq!(to_array1(&t.get(1)).unwrap().to_vec(), vec![3.0, 4.0, 5.0]);
    }
}
