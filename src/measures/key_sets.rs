//! Named key-frequency sets to compare a choice against: the set found, each orbit of
//! the task's symmetry, the top n by evidence for every n, the set found with one
//! frequency left out, and a same-size control the model does not lean on.
//!
//! Orbits: a multiplier t ∈ Z_p^* that maps the values of g onto themselves, and those of
//! h too, maps the task onto itself: (u, v, c) ↦ (t·u, t·v, t·c) keeps c = u + v. It
//! turns the waves of frequency k into those of t·k, so a model built on k and one built on
//! ±t·k solve the task equally well, and which members of an orbit a run uses is chance
//! (on a⁴ + b⁴ mod 113 the fourth powers give 4 orbits of 14; for a + b every t qualifies
//! and all frequencies form one orbit, the a + b paper's "any frequency works"). The orbit
//! presets ask whether a whole orbit carries the model, not which frequency in it does.

use serde::Serialize;

use super::key_freqs::KeyFreqs;
use crate::fourier::fold_freq;
use crate::task::Task;

/// A key set with a name to show.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeySet {
    pub name: String,
    /// Ascending.
    pub freqs: Vec<i64>,
}

impl KeySet {
    fn new(name: impl Into<String>, mut freqs: Vec<i64>) -> Self {
        freqs.sort_unstable();
        KeySet { name: name.into(), freqs }
    }
}

/// The frequencies 1..=(p−1)/2 grouped into orbits under k ↦ ±t·k (see the module
/// docs), each ascending, ordered by their smallest member.
pub fn frequency_orbits(task: &Task) -> Vec<Vec<i64>> {
    let p = task.p;
    let value_set = |values: Vec<i64>| {
        let mut taken = vec![false; p as usize];
        values.into_iter().for_each(|v| taken[v as usize] = true);
        taken
    };
    let (g, h) = (value_set(task.g_values()), value_set(task.h_values()));
    let keeps = |set: &[bool], m: i64| (0..p).filter(|&u| set[u as usize]).all(|u| set[(m * u % p) as usize]);
    let multipliers: Vec<i64> = (1..p).filter(|&m| keeps(&g, m) && keeps(&h, m)).collect();
    let mut orbit_of = vec![0usize; ((p - 1) / 2 + 1) as usize];
    let mut orbits: Vec<Vec<i64>> = vec![];
    for k in 1..=(p - 1) / 2 {
        if orbit_of[k as usize] != 0 {
            continue;
        }
        let mut members: Vec<i64> = multipliers.iter().map(|&m| fold_freq(m * k, p)).collect();
        members.sort_unstable();
        members.dedup();
        orbits.push(members.clone());
        members.iter().for_each(|&j| orbit_of[j as usize] = orbits.len());
    }
    orbits
}

/// The frequencies ranked by |evidence|, largest first (ties to the lower frequency).
pub fn ranked(evidence: &[f64]) -> Vec<i64> {
    let mut order: Vec<i64> = (1..=evidence.len() as i64).collect();
    order.sort_by(|&i, &j| evidence[j as usize - 1].abs().total_cmp(&evidence[i as usize - 1].abs()));
    order
}

/// As many frequencies as `freqs` holds, outside it, of the smallest |evidence| (ties to
/// the lower frequency): a same-size set the model does not lean on.
pub fn control(freqs: &[i64], evidence: &[f64]) -> Vec<i64> {
    let mut others: Vec<i64> = (1..=evidence.len() as i64).filter(|k| !freqs.contains(k)).collect();
    others.sort_by(|&i, &j| evidence[i as usize - 1].abs().total_cmp(&evidence[j as usize - 1].abs()));
    let mut control: Vec<i64> = others.into_iter().take(freqs.len()).collect();
    control.sort_unstable();
    control
}

/// The sets a chooser offers: the set found (as `keys` names it), each orbit, the top n
/// by `keys`' evidence for every n, and the set found with each frequency left out.
pub fn presets(task: &Task, keys: &KeyFreqs) -> Vec<KeySet> {
    let mut sets = vec![KeySet::new("key set found", keys.freqs.clone())];
    for orbit in frequency_orbits(task) {
        sets.push(KeySet::new(format!("orbit of {}", orbit[0]), orbit));
    }
    let order = ranked(&keys.evidence);
    for n in 1..=order.len() {
        sets.push(KeySet::new(format!("top {n}"), order[..n].to_vec()));
    }
    if keys.freqs.len() > 1 {
        for &k in &keys.freqs {
            sets.push(KeySet::new(
                format!("key set without {k}"),
                keys.freqs.iter().copied().filter(|&j| j != k).collect(),
            ));
        }
    }
    sets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fourier::View;

    #[test]
    fn fourth_powers_mod_113_give_four_orbits_of_fourteen() {
        let orbits = frequency_orbits(&Task::power_sum(113, 4, 4));
        assert_eq!(orbits.len(), 4);
        assert!(orbits.iter().all(|o| o.len() == 14));
        let mut all: Vec<i64> = orbits.concat();
        all.sort_unstable();
        assert_eq!(all, (1..=56).collect::<Vec<_>>());
        // 1 shares its orbit with the fourth powers 16 = 2⁴ and 30 = 16² mod 113.
        assert!(orbits[0].contains(&16) && orbits[0].contains(&30));
    }

    #[test]
    fn a_plus_b_is_one_orbit_and_odd_squares_split() {
        assert_eq!(frequency_orbits(&Task::power_sum(113, 1, 1)).len(), 1);
        // Squares mod 113 (113 ≡ 1 mod 4, so −1 is a square): two orbits, of the squares and the rest.
        let orbits = frequency_orbits(&Task::power_sum(113, 2, 2));
        assert_eq!(orbits.len(), 2);
        assert!(orbits[0].contains(&4) && orbits[1].contains(&3));
    }

    #[test]
    fn presets_and_control() {
        let evidence = vec![0.1, -0.5, 0.02, 0.3, 0.0];
        let keys = KeyFreqs { evidence: evidence.clone(), ..KeyFreqs::manual(View::Task, &[2, 4]) };
        let sets = presets(&Task::power_sum(11, 1, 1), &keys);
        let names: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "key set found",
                "orbit of 1",
                "top 1",
                "top 2",
                "top 3",
                "top 4",
                "top 5",
                "key set without 2",
                "key set without 4"
            ]
        );
        assert_eq!(sets[3].freqs, vec![2, 4]);
        assert_eq!(sets[4].freqs, vec![1, 2, 4]);
        assert_eq!(sets[7].freqs, vec![4]);
        assert_eq!(control(&[2, 4], &evidence), vec![3, 5]);
    }
}
