//! The task: c = (g(a) + h(b)) mod p, with g and h of the form coeff · x^power.
//!
//! This covers the seed's (a^4 + b^4) mod 113 as well as a + b, a − b, a² + b², ….
//! Inputs are the three tokens `[a, b, =]` where the `=` token is p; all p² pairs
//! are listed a-major (row a·p + b), and split into train and test with the
//! seed's own `torch.manual_seed(data_seed); torch.randperm(p * p)`.

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

/// One side of the sum: x ↦ coeff · x^power (mod p).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Term {
    pub coeff: i64,
    pub power: u32,
}

impl Term {
    /// x ↦ x^power.
    pub fn power(power: u32) -> Self {
        Term { coeff: 1, power }
    }

    /// The value of the term at x, reduced into 0..p. 0^0 = 1, as torch computes it.
    pub fn eval(&self, x: i64, p: i64) -> i64 {
        let mut result = 1i64;
        let mut base = x.rem_euclid(p);
        let mut exp = self.power;
        while exp > 0 {
            if exp & 1 == 1 {
                result = result * base % p;
            }
            base = base * base % p;
            exp >>= 1;
        }
        (self.coeff.rem_euclid(p) * result).rem_euclid(p)
    }

    fn describe(&self, var: &str) -> String {
        let body = match self.power {
            0 => "1".to_string(),
            1 => var.to_string(),
            k => format!("{var}^{k}"),
        };
        match self.coeff {
            1 => body,
            -1 => format!("-{body}"),
            c => format!("{c}·{body}"),
        }
    }
}

/// (g(a) + h(b)) mod p.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub p: i64,
    pub g: Term,
    pub h: Term,
}

impl Task {
    /// (a^m + b^n) mod p: the seed's family of tasks.
    pub fn power_sum(p: i64, m: u32, n: u32) -> Self {
        Task { p, g: Term::power(m), h: Term::power(n) }
    }

    /// The seed's task, (a^4 + b^4) mod 113.
    pub fn seed() -> Self {
        Task::power_sum(113, 4, 4)
    }

    pub fn validate(&self) -> Result<()> {
        if self.p < 2 {
            return Err(Error::config(format!("p must be at least 2, got {}", self.p)));
        }
        if self.p > 46_340 {
            // p² must fit the products in `Term::eval` without overflow.
            return Err(Error::config(format!("p must be at most 46340, got {}", self.p)));
        }
        Ok(())
    }

    /// Number of (a, b) pairs, p².
    pub fn n_pairs(&self) -> i64 {
        self.p * self.p
    }

    /// The label of one pair.
    pub fn label(&self, a: i64, b: i64) -> i64 {
        (self.g.eval(a, self.p) + self.h.eval(b, self.p)) % self.p
    }

    /// g(a) for a = 0..p: the task's own variable for the first input.
    pub fn g_values(&self) -> Vec<i64> {
        (0..self.p).map(|a| self.g.eval(a, self.p)).collect()
    }

    /// h(b) for b = 0..p.
    pub fn h_values(&self) -> Vec<i64> {
        (0..self.p).map(|b| self.h.eval(b, self.p)).collect()
    }

    /// All p² inputs `[a, b, p]`, a-major: `[p², 3]` int64.
    pub fn dataset(&self) -> Tensor {
        let p = self.p;
        let rows: Vec<i64> = (0..p).flat_map(|a| (0..p).flat_map(move |b| [a, b, p])).collect();
        Tensor::from_slice(&rows).view([p * p, 3])
    }

    /// The labels of all p² inputs, a-major: `[p²]` int64.
    pub fn labels(&self) -> Tensor {
        let labels: Vec<i64> =
            (0..self.p).flat_map(|a| (0..self.p).map(move |b| (a, b))).map(|(a, b)| self.label(a, b)).collect();
        Tensor::from_slice(&labels)
    }

    /// "(a^4 + b^4) mod 113".
    pub fn describe(&self) -> String {
        let h = self.h.describe("b");
        match h.strip_prefix('-') {
            Some(rest) => format!("({} - {rest}) mod {}", self.g.describe("a"), self.p),
            None => format!("({} + {h}) mod {}", self.g.describe("a"), self.p),
        }
    }
}

/// Which of the p² pairs are trained on, and which are held out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub train: Vec<i64>,
    pub test: Vec<i64>,
}

impl Split {
    /// The seed's split: a torch permutation seeded with `data_seed`, the first
    /// `floor(p² · frac_train)` indices for training and the rest for testing.
    pub fn seeded(n_pairs: i64, frac_train: f64, data_seed: i64) -> Result<Self> {
        let cutoff = (n_pairs as f64 * frac_train) as i64;
        if cutoff < 1 || cutoff >= n_pairs {
            return Err(Error::config(format!(
                "frac_train {frac_train} leaves {cutoff} of {n_pairs} pairs for training: both sets must be non-empty"
            )));
        }
        let perm = crate::rng::seeded(data_seed, || Tensor::randperm(n_pairs, (Kind::Int64, Device::Cpu)));
        let perm = Vec::<i64>::try_from(perm)?;
        let (train, test) = perm.split_at(cutoff as usize);
        Ok(Split { train: train.to_vec(), test: test.to_vec() })
    }

    /// Checks that the split is a partition of 0..n_pairs (for splits read from files).
    pub fn validate(&self, n_pairs: i64) -> Result<()> {
        // Sorted, so that memory grows with the split, not with a (possibly hostile) p².
        let mut all: Vec<i64> = self.train.iter().chain(&self.test).copied().collect();
        all.sort_unstable();
        let repeated = all.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]);
        if let Some(i) = all.iter().copied().find(|&i| i < 0 || i >= n_pairs).or(repeated) {
            return Err(Error::format(format!("split index {i} is out of range or repeated (p² = {n_pairs})")));
        }
        if self.train.is_empty() || self.test.is_empty() {
            return Err(Error::format("split has an empty train or test set"));
        }
        Ok(())
    }

    pub fn train_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.train)
    }

    pub fn test_tensor(&self) -> Tensor {
        Tensor::from_slice(&self.test)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_reduce_and_handle_zero_powers() {
        assert_eq!(Term::power(4).eval(112, 113), 1);
        assert_eq!(Term::power(0).eval(0, 113), 1);
        assert_eq!(Term { coeff: -1, power: 1 }.eval(3, 7), 4);
        assert_eq!(Term::power(5).eval(-2, 7), (-32i64).rem_euclid(7));
    }

    #[test]
    fn labels_match_direct_integer_arithmetic() {
        let task = Task::power_sum(113, 4, 4);
        for (a, b) in [(21, 31), (30, 98), (112, 112), (0, 0)] {
            assert_eq!(task.label(a, b), (a.pow(4) + b.pow(4)) % 113);
        }
        assert_eq!(Task::power_sum(7, 1, 1).describe(), "(a + b) mod 7");
        assert_eq!(Task::seed().describe(), "(a^4 + b^4) mod 113");
        let sub = Task { p: 7, g: Term::power(1), h: Term { coeff: -1, power: 1 } };
        assert_eq!(sub.describe(), "(a - b) mod 7");
        assert_eq!(sub.label(2, 5), 4);
    }

    #[test]
    fn split_rejects_degenerate_fractions() {
        assert!(Split::seeded(49, 0.0, 1).is_err());
        assert!(Split::seeded(49, 1.0, 1).is_err());
        assert!(Split::seeded(4, 0.1, 1).is_err());
        assert!(Split::seeded(49, f64::NAN, 1).is_err());
    }
}
