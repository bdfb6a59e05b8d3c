//! Training one shard of a sweep: its runs that are not finished, failed or held by
//! another process, in stacks of runs that can train together (one shape, p, epoch
//! count, checkpoint interval and starting epoch), each started or continued from its
//! last checkpoint. A run that fails (its loss stops being finite, its config is
//! impossible, its folder is corrupt) is recorded with why, and the others go on; only
//! what no run can be blamed for (a disk that cannot be written) stops the shard.

use tch::Device;

use super::{PlannedRun, RunLock, RunState, Shard, Sweep};
use crate::config::{ModelConfig, RunConfig};
use crate::error::{Error, Result};
use crate::memory::check_training_fits;
use crate::model::HookedTransformer;
use crate::run::{Run, RunWriter};
use crate::task::Split;
use crate::train::{train_stacked, Checkpoint, Observer, Resume};

/// What a shard did.
#[derive(Debug, Default)]
pub struct ShardSummary {
    /// Runs of the shard.
    pub runs: usize,
    /// Finished before this shard started.
    pub already_finished: usize,
    /// Trained to their last epoch now.
    pub trained: usize,
    /// Failed, now or before: (id, why).
    pub failed: Vec<(String, String)>,
    /// Held by another process, so left to it.
    pub busy: Vec<String>,
}

/// A run this shard will train, under its lock.
struct Pending<'a> {
    run: &'a PlannedRun,
    _lock: RunLock,
    /// Its folder as it stands, unless it is to be started.
    existing: Option<Run>,
    /// The epoch it continues after.
    from: Option<i64>,
}

/// Trains shard `shard` of `sweep` on `device`, at most `stack` runs at a time.
pub fn run_shard(sweep: &Sweep, shard: Shard, stack: usize, device: Device) -> Result<ShardSummary> {
    if stack == 0 {
        return Err(Error::config("--stack must be at least 1"));
    }
    let mut summary = ShardSummary::default();
    let mut pending = Vec::new();
    for (_, run) in sweep.plan.shard(shard) {
        summary.runs += 1;
        let Some(lock) = sweep.try_lock(&run.id)? else {
            summary.busy.push(run.id.clone());
            continue;
        };
        // Read under the lock: another shard may have just finished it.
        let why = match sweep.state(run)? {
            (RunState::Finished, _) => {
                summary.already_finished += 1;
                continue;
            }
            (RunState::Failed { why }, _) => {
                summary.failed.push((run.id.clone(), why));
                continue;
            }
            (RunState::NotStarted, _) => match run.config.validate() {
                Ok(()) => {
                    pending.push(Pending { run, _lock: lock, existing: None, from: None });
                    continue;
                }
                Err(e) => format!("its config is impossible: {e}"),
            },
            (RunState::Unfinished { .. }, existing) => {
                let existing = existing.expect("an unfinished run has its folder");
                let from = existing.resume_points()?.last().copied();
                pending.push(Pending { run, _lock: lock, existing: Some(existing), from });
                continue;
            }
        };
        sweep.record_failure(&run.id, &why)?;
        summary.failed.push((run.id.clone(), why));
    }
    for group in stacks(pending, stack) {
        train_stack(sweep, shard, group, device, &mut summary)?;
    }
    Ok(summary)
}

/// Runs that can train together, in plan order, at most `size` a stack.
fn stacks(pending: Vec<Pending>, size: usize) -> Vec<Vec<Pending>> {
    let key = |p: &Pending| {
        let (c, t) = (&p.run.config, &p.run.config.train);
        // Everything Trainer::stacked requires to be shared, and the starting epoch.
        format!(
            "{:?}",
            (ModelConfig { seed: 0, ..c.model.clone() }, c.task.p, t.num_epochs, t.checkpoint_every, t.betas, p.from)
        )
    };
    let mut groups: Vec<(String, Vec<Vec<Pending>>)> = Vec::new();
    for p in pending {
        let k = key(&p);
        let chunks = match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, chunks)) => chunks,
            None => {
                groups.push((k, vec![vec![]]));
                &mut groups.last_mut().expect("just pushed").1
            }
        };
        if chunks.last().is_some_and(|c| c.len() == size) {
            chunks.push(vec![]);
        }
        chunks.last_mut().expect("never empty").push(p);
    }
    groups.into_iter().flat_map(|(_, chunks)| chunks).collect()
}

/// A failure to blame on the runs in hand, not on the machine.
fn blames_the_run(e: &Error) -> bool {
    !matches!(e, Error::Io { .. })
}

/// Starts or reopens one run's folder and says where it continues from.
fn open(sweep: &Sweep, p: &Pending, device: Device) -> Result<(Split, Resume, RunWriter)> {
    let config = &p.run.config;
    match &p.existing {
        None => {
            let split = config.split()?;
            let init = HookedTransformer::new(&config.model, device)?;
            let writer = RunWriter::create(sweep.run_dir(&p.run.id), config, &split, &init)?;
            Ok((split, Resume::start(init), writer))
        }
        Some(run) => Ok((run.split.clone(), run.resume_from(p.from, device)?, RunWriter::reopen(run, p.from)?)),
    }
}

fn train_stack(
    sweep: &Sweep,
    shard: Shard,
    group: Vec<Pending>,
    device: Device,
    summary: &mut ShardSummary,
) -> Result<()> {
    let (mut opened, mut watches) = (Vec::new(), Vec::new());
    for p in &group {
        match open(sweep, p, device) {
            Ok((split, resume, writer)) => {
                opened.push((p.run, split, resume));
                watches.push(Watch { writer, diverged: None });
            }
            Err(e) if blames_the_run(&e) => fail(sweep, summary, &p.run.id, format!("it could not start: {e}"))?,
            Err(e) => return Err(e),
        }
    }
    if opened.is_empty() {
        return Ok(());
    }
    let configs: Vec<&RunConfig> = opened.iter().map(|(run, _, _)| &run.config).collect();
    check_training_fits(&configs, device).map_err(|e| Error::config(format!("{e}; give a smaller --stack")))?;
    let from = group[0].from.map_or(0, |e| e + 1);
    eprintln!(
        "groklens: shard {}/{}: training {} run(s) of p = {} from epoch {from}: {}",
        shard.index,
        shard.count,
        opened.len(),
        configs[0].task.p,
        opened.iter().map(|(run, _, _)| run.id.as_str()).collect::<Vec<_>>().join(", ")
    );
    let stack: Vec<_> = opened.iter().map(|(run, split, resume)| (&run.config, split, resume)).collect();
    let mut observers: Vec<&mut dyn Observer> = watches.iter_mut().map(|w| w as &mut dyn Observer).collect();
    match train_stacked(&stack, &mut observers) {
        Ok(_) => {
            for ((run, _, _), watch) in opened.iter().zip(&watches) {
                match &watch.diverged {
                    Some(why) => fail(sweep, summary, &run.id, why.clone())?,
                    None => summary.trained += 1,
                }
            }
            Ok(())
        }
        Err(e) if blames_the_run(&e) => {
            for (run, _, _) in &opened {
                fail(sweep, summary, &run.id, format!("training its stack failed: {e}"))?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn fail(sweep: &Sweep, summary: &mut ShardSummary, id: &str, why: String) -> Result<()> {
    eprintln!("groklens: run {id} failed: {why}");
    sweep.record_failure(id, &why)?;
    summary.failed.push((id.to_string(), why));
    Ok(())
}

/// A run folder's writer that stops writing once the run's loss is no longer finite:
/// the stack it trains in goes on, and its last whole checkpoint stays for a post-mortem.
struct Watch {
    writer: RunWriter,
    diverged: Option<String>,
}

impl Observer for Watch {
    fn checkpoint(&mut self, c: &Checkpoint) -> Result<()> {
        if self.diverged.is_some() {
            return Ok(());
        }
        let bad = c.train_losses.iter().zip(c.test_losses).position(|(tr, te)| !(tr.is_finite() && te.is_finite()));
        if let Some(epoch) = bad {
            self.diverged = Some(format!(
                "its loss stopped being finite at epoch {epoch} (train {}, test {})",
                c.train_losses[epoch], c.test_losses[epoch]
            ));
            return Ok(());
        }
        self.writer.checkpoint(c)
    }

    fn all_checkpointed(&mut self, epoch: i64) -> Result<()> {
        match self.diverged {
            Some(_) => Ok(()),
            None => self.writer.all_checkpointed(epoch),
        }
    }
}
