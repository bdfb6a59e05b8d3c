//! A sweep's plan: axes read from a TOML file, expanded by the [`Grid`] into a fixed,
//! ordered list of runs, each named by its config ([`RunConfig::id`]).
//!
//! ```toml
//! p = 41                                   # a value, a list, or (integer axes) "1..8"
//! exponents = [[2, 2], [4, 4], [2, 3]]     # (m, n) pairs; or m = [...] and n = [...], every pair
//! seed = "1..3"                            # both ends included
//! frac_train = [0.4, 0.6]
//! lr = { from = 1e-4, to = 1e-2, steps = 5, log = true }   # evenly spaced, ends included
//! weight_decay = [0.3, 1.0]
//! epochs = 2000
//! checkpoint_every = 100
//! ```
//! Axes left out take the seed's value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Value;

use crate::config::{RunConfig, TrainConfig};
use crate::error::{Error, Result};
use crate::grid::{cross, Grid};

/// The axes a sweep file may set, in the order the plan nests them (first slowest).
pub const AXES: [&str; 11] =
    ["p", "m", "n", "exponents", "frac_train", "data_seed", "lr", "weight_decay", "epochs", "checkpoint_every", "seed"];

/// The most runs one plan may hold: past this a typo (a range of a million seeds) is likelier than a plan.
const MAX_RUNS: usize = 100_000;

/// The plan, as `sweep.json` holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub runs: Vec<PlannedRun>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlannedRun {
    pub id: String,
    pub config: RunConfig,
}

impl Plan {
    /// The plan of a sweep file's text; every problem is one line naming the axis.
    pub fn from_toml(text: &str) -> Result<Plan> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            Error::config(format!("not a TOML sweep file: {}", e.message().lines().next().unwrap_or("")))
        })?;
        if let Some(unknown) = table.keys().find(|k| !AXES.contains(&k.as_str())) {
            return Err(Error::config(format!("unknown axis `{unknown}` (axes: {})", AXES.join(", "))));
        }
        let seed = RunConfig::seed();
        let defaults = TrainConfig::default();
        let ints = |name: &str, default: i64| match table.get(name) {
            None => Ok(vec![default]),
            Some(v) => int_axis(name, v),
        };
        let floats = |name: &str, default: f64| match table.get(name) {
            None => Ok(vec![default]),
            Some(v) => float_axis(name, v),
        };
        let exponents = match (table.get("exponents"), table.get("m"), table.get("n")) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
                return Err(Error::config("axis `exponents` gives (m, n) pairs: leave out `m` and `n`"))
            }
            (Some(pairs), None, None) => pairs_axis(pairs)?,
            (None, m, n) => {
                let power = |name: &str, v: Option<&Value>| match v {
                    None => Ok(vec![seed.task.g.power]),
                    Some(v) => int_axis(name, v)?.into_iter().map(|x| exponent(name, x)).collect(),
                };
                cross(&power("m", m)?, &power("n", n)?)
            }
        };
        let grid = Grid {
            p: ints("p", seed.task.p)?,
            exponents,
            frac_train: floats("frac_train", defaults.frac_train)?,
            data_seed: ints("data_seed", defaults.data_seed)?,
            seed: ints("seed", seed.model.seed)?,
            lr: floats("lr", defaults.lr)?,
            weight_decay: floats("weight_decay", defaults.weight_decay)?,
            epochs: ints("epochs", defaults.num_epochs)?,
            checkpoint_every: ints("checkpoint_every", defaults.checkpoint_every)?,
        };
        let size = [
            grid.p.len(),
            grid.exponents.len(),
            grid.frac_train.len(),
            grid.data_seed.len(),
            grid.seed.len(),
            grid.lr.len(),
            grid.weight_decay.len(),
            grid.epochs.len(),
            grid.checkpoint_every.len(),
        ]
        .iter()
        .try_fold(1usize, |n, &k| n.checked_mul(k).filter(|&n| n <= MAX_RUNS));
        if size.is_none() {
            return Err(Error::config(format!("the axes make more than {MAX_RUNS} runs")));
        }
        let runs = grid.configs()?.into_iter().map(|config| PlannedRun { id: config.id(), config }).collect();
        Ok(Plan { runs })
    }

    /// Each axis's values in plan order (the order the file gave them), spelled as
    /// [`axis_values`] spells them.
    pub fn axes(&self) -> BTreeMap<String, Vec<String>> {
        let mut axes: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for run in &self.runs {
            for (axis, value) in axis_values(&run.config) {
                let values = axes.entry(axis).or_default();
                if !values.contains(&value) {
                    values.push(value);
                }
            }
        }
        axes
    }

    /// Checks a plan read from disk (possibly edited, possibly hostile): every id a
    /// plain folder name, unique, and the one its config gives. A config that is itself
    /// impossible is not an error here: that run fails, with why, when it is trained.
    pub fn validate(&self) -> Result<()> {
        if self.runs.is_empty() {
            return Err(Error::format("the plan lists no runs"));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, run) in self.runs.iter().enumerate() {
            if run.id != run.config.id() {
                return Err(Error::format(format!(
                    "run {i}'s id `{}` is not its config's ({}): the plan was edited",
                    run.id,
                    run.config.id()
                )));
            }
            if !seen.insert(&run.id) {
                return Err(Error::format(format!("run `{}` is listed twice", run.id)));
            }
        }
        Ok(())
    }

    /// Runs `i` with `i mod count = index`, with their positions in the plan.
    pub fn shard(&self, shard: Shard) -> impl Iterator<Item = (usize, &PlannedRun)> {
        self.runs.iter().enumerate().filter(move |(i, _)| i % shard.count == shard.index)
    }
}

/// Shard `index` of `count` (0-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// `K/N`.
    pub fn parse(text: &str) -> Result<Shard> {
        let bad = || Error::config(format!("--shard takes K/N with 0 ≤ K < N, got `{text}`"));
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let (index, count) = (k.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        Shard::new(index, count).map_err(|_| bad())
    }

    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if count == 0 || index >= count {
            return Err(Error::config(format!("shard {index} of {count}: needs 0 ≤ K < N")));
        }
        Ok(Shard { index, count })
    }

    /// The shard a job array's task is: Slurm's `SLURM_ARRAY_TASK_ID` (counted from
    /// `SLURM_ARRAY_TASK_MIN`) of `SLURM_ARRAY_TASK_COUNT`, or a Kubernetes indexed
    /// Job's `JOB_COMPLETION_INDEX` of `count`. `count` overrides Slurm's count.
    pub fn from_env(env: impl Fn(&str) -> Option<String>, count: Option<usize>) -> Result<Shard> {
        let number = |name: &str| -> Result<Option<usize>> {
            env(name)
                .map(|v| v.trim().parse().map_err(|_| Error::config(format!("{name}={v} is not a whole number ≥ 0"))))
                .transpose()
        };
        if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
            let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let total = count.or(number("SLURM_ARRAY_TASK_COUNT")?).ok_or_else(|| {
                Error::config("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not: give --shards N")
            })?;
            let index = id.checked_sub(min).ok_or_else(|| Error::config("SLURM_ARRAY_TASK_ID is below its MIN"))?;
            return Shard::new(index, total);
        }
        if let Some(index) = number("JOB_COMPLETION_INDEX")? {
            let total =
                count.ok_or_else(|| Error::config("JOB_COMPLETION_INDEX needs --shards N (the Job's completions)"))?;
            return Shard::new(index, total);
        }
        match count {
            Some(total) => Err(Error::config(format!(
                "--shards {total} without an index: give --shard K/{total}, or run as a Slurm array or indexed Job"
            ))),
            None => Shard::new(0, 1),
        }
    }
}

/// A TOML value as an error message quotes it.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Boolean(b) => b.to_string(),
        other => format!("a {}", other.type_str()),
    }
}

/// A run's value on each axis (`exponents` as "m,n").
pub fn axis_values(config: &RunConfig) -> BTreeMap<String, String> {
    let t = &config.train;
    BTreeMap::from([
        ("p".to_string(), config.task.p.to_string()),
        ("exponents".into(), format!("{},{}", config.task.g.power, config.task.h.power)),
        ("frac_train".into(), t.frac_train.to_string()),
        ("data_seed".into(), t.data_seed.to_string()),
        ("seed".into(), config.model.seed.to_string()),
        ("lr".into(), t.lr.to_string()),
        ("weight_decay".into(), t.weight_decay.to_string()),
        ("epochs".into(), t.num_epochs.to_string()),
        ("checkpoint_every".into(), t.checkpoint_every.to_string()),
    ])
}

fn exponent(name: &str, x: i64) -> Result<u32> {
    u32::try_from(x).map_err(|_| Error::config(format!("axis `{name}`: exponents are whole numbers ≥ 0, got {x}")))
}

/// A value, a list, or `"a..b"` (both ends included).
fn int_axis(name: &str, v: &Value) -> Result<Vec<i64>> {
    let bad = |what: &str| Error::config(format!("axis `{name}`: {what}"));
    let values = match v {
        Value::Integer(x) => vec![*x],
        Value::Array(items) => items
            .iter()
            .map(|x| x.as_integer().ok_or_else(|| bad(&format!("{} is not a whole number", shown(x)))))
            .collect::<Result<_>>()?,
        Value::String(range) => {
            let (a, b) = range.split_once("..").ok_or_else(|| bad(&format!("`{range}` is not a range a..b")))?;
            let number = |s: &str| {
                s.trim().parse::<i64>().map_err(|_| bad(&format!("`{s}` in `{range}` is not a whole number")))
            };
            let (a, b) = (number(a)?, number(b.trim_start_matches('='))?);
            if a > b || b - a >= MAX_RUNS as i64 {
                return Err(bad(&format!("`{range}` is empty or too long")));
            }
            (a..=b).collect()
        }
        other => return Err(bad(&format!("takes a whole number, a list or \"a..b\", not {}", shown(other)))),
    };
    non_empty(name, values)
}

/// A value, a list, or `{ from, to, steps, log }`: `steps` values evenly spaced from
/// `from` to `to` (geometrically when `log = true`).
fn float_axis(name: &str, v: &Value) -> Result<Vec<f64>> {
    let bad = |what: &str| Error::config(format!("axis `{name}`: {what}"));
    let number = |x: &Value| match x {
        Value::Float(f) => Ok(*f),
        Value::Integer(i) => Ok(*i as f64),
        other => Err(bad(&format!("{} is not a number", shown(other)))),
    };
    let values = match v {
        Value::Array(items) => items.iter().map(number).collect::<Result<_>>()?,
        Value::Table(span) => {
            if let Some(key) = span.keys().find(|k| !["from", "to", "steps", "log"].contains(&k.as_str())) {
                return Err(bad(&format!("a span takes from, to, steps and log, not `{key}`")));
            }
            let get = |key: &str| span.get(key).ok_or_else(|| bad(&format!("a span needs `{key}`")));
            let (from, to) = (number(get("from")?)?, number(get("to")?)?);
            let steps = get("steps")?.as_integer().filter(|s| (1..=MAX_RUNS as i64).contains(s));
            let steps = steps.ok_or_else(|| bad("`steps` must be a whole number ≥ 1"))? as usize;
            let log = match span.get("log") {
                None => false,
                Some(l) => l.as_bool().ok_or_else(|| bad("`log` is true or false"))?,
            };
            if log && !(from > 0.0 && to > 0.0) {
                return Err(bad("a log span needs from and to > 0"));
            }
            let at = |i: usize| {
                let t = if steps == 1 { 0.0 } else { i as f64 / (steps - 1) as f64 };
                match log {
                    true => (from.ln() + t * (to.ln() - from.ln())).exp(),
                    false => from + t * (to - from),
                }
            };
            // Round off the last bits of the arithmetic, so that 0.1 + 0.1 + 0.1 plans as 0.3.
            (0..steps).map(|i| format!("{:.12e}", at(i)).parse().expect("a number prints and parses")).collect()
        }
        scalar => vec![number(scalar)?],
    };
    if let Some(x) = values.iter().find(|x: &&f64| !x.is_finite()) {
        return Err(bad(&format!("{x} is not a finite number")));
    }
    non_empty(name, values)
}

/// `[[m, n], ...]`.
fn pairs_axis(v: &Value) -> Result<Vec<(u32, u32)>> {
    let bad = || Error::config("axis `exponents` takes (m, n) pairs: [[2, 2], [4, 4]]");
    let items = v.as_array().ok_or_else(bad)?;
    let pairs = items
        .iter()
        .map(|pair| match pair.as_array().map(|p| p.as_slice()) {
            Some([m, n]) => {
                let whole = |x: &Value| x.as_integer().ok_or_else(bad).and_then(|x| exponent("exponents", x));
                Ok((whole(m)?, whole(n)?))
            }
            _ => Err(bad()),
        })
        .collect::<Result<Vec<_>>>()?;
    non_empty("exponents", pairs)
}

fn non_empty<T>(name: &str, values: Vec<T>) -> Result<Vec<T>> {
    match values.is_empty() {
        true => Err(Error::config(format!("axis `{name}` has no values"))),
        false => Ok(values),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_expand_in_order_with_ids_from_configs() {
        let plan = Plan::from_toml(
            "p = 23\nm = [2, 3]\nseed = \"1..2\"\nlr = { from = 1e-4, to = 1e-2, steps = 3, log = true }\nepochs = 10",
        )
        .unwrap();
        assert_eq!(plan.runs.len(), 2 * 2 * 3);
        let first = &plan.runs[0].config;
        assert_eq!((first.task.p, first.task.g.power, first.task.h.power, first.model.seed), (23, 2, 4, 1));
        assert_eq!(plan.runs[1].config.model.seed, 2, "seed is the fastest axis");
        let lrs: Vec<f64> = plan.runs.iter().step_by(2).take(3).map(|r| r.config.train.lr).collect();
        assert_eq!(lrs, [1e-4, 1e-3, 1e-2]);
        assert!(plan.runs.iter().all(|r| r.id == r.config.id()));
        plan.validate().unwrap();
        assert_eq!(plan.axes()["exponents"], ["2,4", "3,4"]);
        assert_eq!(plan.axes()["lr"], ["0.0001", "0.001", "0.01"]);
    }

    #[test]
    fn bad_axes_name_the_axis() {
        for (text, says) in [
            ("q = 3", "unknown axis `q`"),
            ("seed = \"5..1\"", "axis `seed`"),
            ("lr = [1e-3, \"fast\"]", "axis `lr`"),
            ("lr = -1.0", "lr must be a positive number"),
            ("m = [2]\nexponents = [[2, 2]]", "leave out `m`"),
            ("exponents = [[2]]", "(m, n) pairs"),
            ("seed = [1, 1]", "comes twice"),
            ("frac_train = []", "axis `frac_train` has no values"),
            ("seed = \"0..999999999\"", "too long"),
            ("p = [1]", "p must be at least 2"),
            ("lr = { from = 0, to = 1, steps = 3, log = true }", "log span"),
            ("p = ", "not a TOML sweep file"),
        ] {
            let e = Plan::from_toml(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text:?} gave {e:?}, not {says:?}");
            assert!(!e.contains('\n'), "{e:?} is one line");
        }
    }

    #[test]
    fn shards_cover_the_plan_once_and_come_from_the_environment() {
        let plan = Plan::from_toml("seed = \"1..7\"\nepochs = 10").unwrap();
        let mut all: Vec<usize> = (0..3).flat_map(|k| plan.shard(Shard::new(k, 3).unwrap()).map(|(i, _)| i)).collect();
        all.sort();
        assert_eq!(all, (0..7).collect::<Vec<_>>());
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let slurm =
            env(&[("SLURM_ARRAY_TASK_ID", "5"), ("SLURM_ARRAY_TASK_MIN", "1"), ("SLURM_ARRAY_TASK_COUNT", "8")]);
        assert_eq!(Shard::from_env(slurm, None).unwrap(), Shard { index: 4, count: 8 });
        assert_eq!(
            Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "2")]), Some(3)).unwrap(),
            Shard { index: 2, count: 3 }
        );
        assert!(Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "2")]), None).is_err());
        assert_eq!(Shard::from_env(env(&[]), None).unwrap(), Shard { index: 0, count: 1 });
        assert!(Shard::parse("3/3").is_err() && Shard::parse("x").is_err());
        assert_eq!(Shard::parse("1/4").unwrap(), Shard { index: 1, count: 4 });
    }
}
