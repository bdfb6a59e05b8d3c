//! Plain numeric inputs: a dense row-major [`Matrix`] and the conversions that keep
//! notebook cells short (`line(&[train, test])`, `imshow(&rows)`, `.x(&epochs)`).

use std::fmt;

/// A dense row-major matrix of `f64`. Non-finite entries are drawn as gaps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

/// `Matrix::new` was given a `data` whose length is not `rows * cols`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeError {
    pub rows: usize,
    pub cols: usize,
    pub len: usize,
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (r, c, n) = (self.rows, self.cols, self.len);
        write!(f, "a {r}x{c} matrix needs {} values, got {n}", r * c)
    }
}

impl std::error::Error for ShapeError {}

impl Matrix {
    /// `rows × cols` values in row-major order.
    pub fn new(rows: usize, cols: usize, data: Vec<f64>) -> Result<Self, ShapeError> {
        if rows.checked_mul(cols) == Some(data.len()) {
            Ok(Self { rows, cols, data })
        } else {
            Err(ShapeError { rows, cols, len: data.len() })
        }
    }

    /// Rows of unequal length are padded with NaN (drawn as gaps).
    pub fn from_rows<R: Row>(rows: &[R]) -> Self {
        let rows: Vec<Vec<f64>> = rows.iter().map(Row::to_f64s).collect();
        let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut data = Vec::with_capacity(rows.len() * cols);
        for row in &rows {
            data.extend(row);
            data.resize(data.len() + cols - row.len(), f64::NAN);
        }
        Self { rows: rows.len(), cols, data }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row-major values.
    pub fn data(&self) -> &[f64] {
        &self.data
    }

    /// The rows, top to bottom.
    pub fn iter_rows(&self) -> impl Iterator<Item = &[f64]> {
        (0..self.rows).map(move |r| &self.data[r * self.cols..(r + 1) * self.cols])
    }

    /// Largest finite |value|, 0 when there is none.
    pub fn max_abs(&self) -> f64 {
        self.data.iter().filter(|v| v.is_finite()).fold(0.0, |m, v| m.max(v.abs()))
    }
}

/// One row of numbers: a slice, array or `Vec` of a primitive number type (or a reference to one).
pub trait Row {
    fn to_f64s(&self) -> Vec<f64>;
}

impl<R: Row + ?Sized> Row for &R {
    fn to_f64s(&self) -> Vec<f64> {
        (**self).to_f64s()
    }
}

macro_rules! number_rows {
    ($($t:ty),*) => {$(
        impl Row for [$t] {
            fn to_f64s(&self) -> Vec<f64> {
                self.iter().map(|&v| v as f64).collect()
            }
        }
        impl Row for Vec<$t> {
            fn to_f64s(&self) -> Vec<f64> {
                self.as_slice().to_f64s()
            }
        }
        impl<const N: usize> Row for [$t; N] {
            fn to_f64s(&self) -> Vec<f64> {
                self.as_slice().to_f64s()
            }
        }
        /// A single row.
        impl From<&[$t]> for Matrix {
            fn from(row: &[$t]) -> Self {
                Matrix::from_rows(&[row])
            }
        }
        /// A single row.
        impl From<&Vec<$t>> for Matrix {
            fn from(row: &Vec<$t>) -> Self {
                Matrix::from_rows(&[row])
            }
        }
        /// A single row.
        impl From<Vec<$t>> for Matrix {
            fn from(row: Vec<$t>) -> Self {
                Matrix::from_rows(&[row])
            }
        }
        /// A single row.
        impl<const N: usize> From<&[$t; N]> for Matrix {
            fn from(row: &[$t; N]) -> Self {
                Matrix::from_rows(&[row])
            }
        }
    )*};
}

number_rows!(f64, f32, i64, i32, u64, u32, usize);

impl<R: Row> From<&[R]> for Matrix {
    fn from(rows: &[R]) -> Self {
        Matrix::from_rows(rows)
    }
}

impl<R: Row, const N: usize> From<&[R; N]> for Matrix {
    fn from(rows: &[R; N]) -> Self {
        Matrix::from_rows(rows)
    }
}

impl<R: Row, const N: usize> From<[R; N]> for Matrix {
    fn from(rows: [R; N]) -> Self {
        Matrix::from_rows(&rows)
    }
}

impl<R: Row> From<&Vec<R>> for Matrix {
    fn from(rows: &Vec<R>) -> Self {
        Matrix::from_rows(rows)
    }
}

impl<R: Row> From<Vec<R>> for Matrix {
    fn from(rows: Vec<R>) -> Self {
        Matrix::from_rows(&rows)
    }
}

impl From<&Matrix> for Matrix {
    fn from(m: &Matrix) -> Self {
        m.clone()
    }
}

/// A tensor of one dimension is a row, of two a matrix (rows first); on any device.
impl Row for tch::Tensor {
    fn to_f64s(&self) -> Vec<f64> {
        let flat = self.detach().to_device(tch::Device::Cpu).to_kind(tch::Kind::Double).flatten(0, -1);
        Vec::<f64>::try_from(&flat).unwrap_or_default()
    }
}

impl From<&tch::Tensor> for Matrix {
    fn from(t: &tch::Tensor) -> Matrix {
        let size = t.size();
        let (rows, cols) = match size.as_slice() {
            [] => (1, 1),
            [n] => (1, *n as usize),
            [r, rest @ ..] => (*r as usize, rest.iter().product::<i64>() as usize),
        };
        Matrix::new(rows, cols, t.to_f64s()).unwrap_or_else(|_| Matrix::new(0, 0, Vec::new()).expect("empty matrix"))
    }
}

impl From<tch::Tensor> for Matrix {
    fn from(t: tch::Tensor) -> Matrix {
        Matrix::from(&t)
    }
}

/// An ndarray vector is a row.
impl<S: ndarray::Data<Elem = f64>> Row for ndarray::ArrayBase<S, ndarray::Ix1> {
    fn to_f64s(&self) -> Vec<f64> {
        self.to_vec()
    }
}

/// An ndarray matrix, rows first (a chart draws one line per row: `line(&a.t())` draws the columns).
impl<S: ndarray::Data<Elem = f64>> From<&ndarray::ArrayBase<S, ndarray::Ix2>> for Matrix {
    fn from(a: &ndarray::ArrayBase<S, ndarray::Ix2>) -> Matrix {
        Matrix { rows: a.nrows(), cols: a.ncols(), data: a.iter().copied().collect() }
    }
}

impl<S: ndarray::Data<Elem = f64>> From<ndarray::ArrayBase<S, ndarray::Ix2>> for Matrix {
    fn from(a: ndarray::ArrayBase<S, ndarray::Ix2>) -> Matrix {
        Matrix::from(&a)
    }
}

/// An ndarray vector is a single row.
impl<S: ndarray::Data<Elem = f64>> From<&ndarray::ArrayBase<S, ndarray::Ix1>> for Matrix {
    fn from(a: &ndarray::ArrayBase<S, ndarray::Ix1>) -> Matrix {
        Matrix::from_rows(&[a.to_vec()])
    }
}
