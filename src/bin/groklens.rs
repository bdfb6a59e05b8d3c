//! The `groklens` command line: a thin shell over the library.
//! Bad input gets one line naming the problem and exit status 2.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use groklens::analysis::Overrides;
use groklens::device::parse_device;
use groklens::grid::{cross, Grid};
use groklens::import::read_history;
use groklens::memory::{analysis_bytes, check_fits, check_training_fits};
use groklens::report::write_report;
use groklens::run::{check_empty_or_absent, create_grid, grid_folders, load_state_dict, write_atomic};
use groklens::sweep::collect::collect;
use groklens::sweep::shard::run_shard;
use groklens::sweep::slurm::{submit, write_scripts, ArrayLayout};
use groklens::sweep::{Plan, Shard, Sweep};
use groklens::tch::Device;
use groklens::train::{train_stacked, Observer, Resume};
use groklens::{Error, HookedTransformer, Run, RunConfig, RunWriter, Split, Task, Term};

#[derive(Parser)]
#[command(name = "groklens", version, about = "Train small transformers on modular arithmetic and watch them grok")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a model on (a^m + b^n) mod p, writing a run folder; or a grid of models
    /// trained together, writing one run folder each and an index.json.
    Train(TrainArgs),
    /// Analyse a run folder, a TransformerLens state dict (.safetensors) or a grokking
    /// demo .pth file: writes analysis.json and report.html.
    Analyze(AnalyzeArgs),
    /// Many runs: plan them from a TOML file of axes, train them in shards (on one
    /// machine, a Slurm job array or a Kubernetes indexed Job), collect a report.
    #[command(subcommand)]
    Sweep(SweepCommand),
}

#[derive(Subcommand)]
enum SweepCommand {
    /// Expand SWEEP.toml's axes into DIR/sweep.json: a fixed, ordered list of runs.
    Plan {
        sweep: PathBuf,
        /// The sweep folder; absent, empty, or holding this same plan.
        #[arg(long)]
        out: PathBuf,
    },
    /// Train shard K of N (runs i with i mod N = K), skipping finished and failed runs
    /// and continuing unfinished ones. K/N come from --shard, or from Slurm's
    /// SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT, or from JOB_COMPLETION_INDEX with --shards N.
    Run {
        dir: PathBuf,
        /// K/N, e.g. 0/4.
        #[arg(long, conflicts_with = "shards")]
        shard: Option<String>,
        /// N, with the index K from the environment.
        #[arg(long)]
        shards: Option<usize>,
        /// At most this many runs train together.
        #[arg(long, default_value_t = 16)]
        stack: usize,
        /// cpu, cuda or cuda:N.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Write a Slurm job array over the sweep and a collect job after it, and submit both.
    Slurm {
        dir: PathBuf,
        /// Array tasks; every run its own task by default.
        #[arg(long)]
        shards: Option<usize>,
        /// At most M tasks at once.
        #[arg(long)]
        array_parallelism: Option<usize>,
        #[arg(long, default_value_t = 16)]
        stack: usize,
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Write the scripts only.
        #[arg(long)]
        no_submit: bool,
        /// sbatch options for both jobs, after `--`: -- --partition=gpu --time=2:00:00
        #[arg(last = true)]
        sbatch: Vec<String>,
    },
    /// Write DIR/results.json and DIR/report.html from the runs as they stand.
    Collect {
        dir: PathBuf,
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

#[derive(Args)]
struct AnalyzeArgs {
    /// A run folder, a .safetensors state dict or a .pth file.
    input: PathBuf,
    /// The folder to write; must not exist or be empty.
    #[arg(long)]
    out: PathBuf,
    /// The task, for inputs that do not record it (.safetensors, .pth).
    #[arg(long, default_value_t = 113, allow_negative_numbers = true)]
    p: i64,
    #[arg(long, default_value_t = 4, allow_negative_numbers = true)]
    m: i64,
    #[arg(long, default_value_t = 4, allow_negative_numbers = true)]
    n: i64,
    /// Key frequencies to use instead of the detected ones, e.g. 14,35,41.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    key_freqs: Option<Vec<i64>>,
    /// Phase boundaries to use instead of the detected ones: memorisation end,
    /// circuit formation end, clean-up end, e.g. 1500,13300,16600.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    phases: Option<Vec<i64>>,
    /// cpu, cuda or cuda:N, for the forward passes.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Every list-valued flag takes `a,b,c`; `--seed` also takes a range `1..16`
/// (both ends included). Several values train the whole grid of runs together.
#[derive(Args)]
struct TrainArgs {
    /// The run folder to write (for a grid: the folder of run folders); must not
    /// exist or be empty.
    #[arg(long, required_unless_present = "resume")]
    out: Option<PathBuf>,
    /// Continue the killed or unfinished run (or grid) in this folder from its last
    /// checkpoint, with the config it was started with.
    #[arg(long, conflicts_with_all = ["out", "p", "m", "n", "frac_train", "data_seed", "seed", "epochs",
        "checkpoint_every", "lr", "weight_decay", "init_from"])]
    resume: Option<PathBuf>,
    #[arg(long, default_value_t = 113, allow_negative_numbers = true)]
    p: i64,
    /// Exponent(s) of a.
    #[arg(long, default_value = "4", value_delimiter = ',', allow_negative_numbers = true)]
    m: Vec<i64>,
    /// Exponent(s) of b.
    #[arg(long, default_value = "4", value_delimiter = ',', allow_negative_numbers = true)]
    n: Vec<i64>,
    #[arg(long, default_value = "0.3", value_delimiter = ',', allow_negative_numbers = true)]
    frac_train: Vec<f64>,
    #[arg(long, default_value = "598", value_delimiter = ',', allow_negative_numbers = true)]
    data_seed: Vec<i64>,
    /// Seed(s) of the weight initialisation: `999`, `1,2,3` or `1..16`.
    #[arg(long, alias = "seeds", default_value = "999", value_parser = parse_seeds, allow_negative_numbers = true)]
    seed: Seeds,
    #[arg(long, default_value_t = 25_000, allow_negative_numbers = true)]
    epochs: i64,
    #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
    checkpoint_every: i64,
    #[arg(long, default_value = "1e-3", value_delimiter = ',', allow_negative_numbers = true)]
    lr: Vec<f64>,
    #[arg(long, default_value = "1", value_delimiter = ',', allow_negative_numbers = true)]
    weight_decay: Vec<f64>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Initial weights: a TransformerLens state dict saved as safetensors.
    #[arg(long)]
    init_from: Option<PathBuf>,
}

#[derive(Clone)]
struct Seeds(Vec<i64>);

/// `999`, `1,2,3` or `1..16` (both ends included).
fn parse_seeds(text: &str) -> Result<Seeds, String> {
    let number = |s: &str| s.trim().parse::<i64>().map_err(|_| format!("`{s}` is not a whole number"));
    match text.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (number(a)?, number(b.trim_start_matches('='))?);
            if a > b {
                return Err(format!("empty range {text}"));
            }
            Ok(Seeds((a..=b).collect()))
        }
        None => text.split(',').map(number).collect::<Result<_, _>>().map(Seeds),
    }
}

fn exponent(name: &str, value: i64) -> Result<u32, Error> {
    u32::try_from(value).map_err(|_| Error::config(format!("exponent {name} must be a whole number ≥ 0, got {value}")))
}

fn train(args: TrainArgs) -> Result<(), Error> {
    let device = parse_device(&args.device)?;
    let out = match (&args.resume, &args.out) {
        (Some(dir), _) => return resume(dir, device),
        (None, Some(out)) => out.clone(),
        (None, None) => return Err(Error::config("train needs --out FOLDER (or --resume FOLDER)")),
    };
    let grid = grid(&args)?;
    check_training_fits(&grid.iter().collect::<Vec<_>>(), device)?;
    check_empty_or_absent(&out)?;
    let mut runs = Vec::new();
    for config in &grid {
        let split = config.split()?;
        let init = match &args.init_from {
            Some(path) => load_state_dict(path, config, device)?,
            None => HookedTransformer::new(&config.model, device)?,
        };
        runs.push((config, split, Resume::start(init)));
    }
    let mut writers = match &runs[..] {
        [(config, split, start)] => vec![RunWriter::create(&out, config, split, &start.model)?],
        _ => create_grid(&out, &runs.iter().map(|(c, s, r)| (*c, s, &r.model)).collect::<Vec<_>>())?,
    };
    let folders: Vec<PathBuf> = writers.iter().map(|w| w.dir().to_path_buf()).collect();
    let (first, split, _) = &runs[0];
    eprintln!(
        "groklens: training {} run(s) of {} on {} ({} train / {} test pairs), {} epochs, into {}",
        grid.len(),
        first.task.describe(),
        args.device,
        split.train.len(),
        split.test.len(),
        args.epochs,
        out.display()
    );
    let stack: Vec<_> = runs.iter().map(|(c, s, r)| (*c, s, r)).collect();
    train_into(&stack, &mut writers, &folders)
}

/// The grid the list-valued flags describe.
fn grid(args: &TrainArgs) -> Result<Vec<RunConfig>, Error> {
    let exponents = |name, values: &[i64]| values.iter().map(|&v| exponent(name, v)).collect::<Result<Vec<_>, _>>();
    Grid {
        p: vec![args.p],
        exponents: cross(&exponents("m", &args.m)?, &exponents("n", &args.n)?),
        frac_train: args.frac_train.clone(),
        data_seed: args.data_seed.clone(),
        seed: args.seed.0.clone(),
        lr: args.lr.clone(),
        weight_decay: args.weight_decay.clone(),
        epochs: vec![args.epochs],
        checkpoint_every: vec![args.checkpoint_every],
    }
    .configs()
}

/// Continues the run or grid in `dir` from the last epoch that all its runs can
/// continue from.
fn resume(dir: &Path, device: Device) -> Result<(), Error> {
    let folders = grid_folders(dir)?.unwrap_or_else(|| vec![dir.to_path_buf()]);
    let runs = folders.iter().map(Run::load).collect::<Result<Vec<_>, _>>()?;
    let mut points = runs[0].resume_points()?;
    for run in &runs[1..] {
        let theirs = run.resume_points()?;
        points.retain(|e| theirs.contains(e));
    }
    let epoch = points.last().copied();
    let last = runs[0].config.train.num_epochs - 1;
    if epoch == Some(last) {
        // Finished; a kill may have left an older optimizer state, or a partial file.
        for run in &runs {
            RunWriter::reopen(run, epoch)?.all_checkpointed(last)?;
        }
        eprintln!("groklens: {} is finished; nothing to continue", dir.display());
        return Ok(());
    }
    check_training_fits(&runs.iter().map(|r| &r.config).collect::<Vec<_>>(), device)?;
    let starts = runs.iter().map(|r| r.resume_from(epoch, device)).collect::<Result<Vec<_>, _>>()?;
    let mut writers = runs.iter().map(|r| RunWriter::reopen(r, epoch)).collect::<Result<Vec<_>, _>>()?;
    eprintln!(
        "groklens: continuing {} run(s) of {} in {} after epoch {} of {}",
        runs.len(),
        runs[0].config.task.describe(),
        dir.display(),
        epoch.map_or("none".into(), |e| e.to_string()),
        runs[0].config.train.num_epochs
    );
    let stack: Vec<_> = runs.iter().zip(&starts).map(|(r, s)| (&r.config, &r.split, s)).collect();
    train_into(&stack, &mut writers, &folders)
}

/// Trains a stack into its run folders and says how each ended.
fn train_into(
    stack: &[(&RunConfig, &Split, &Resume)],
    writers: &mut [RunWriter],
    folders: &[PathBuf],
) -> Result<(), Error> {
    let mut observers: Vec<&mut dyn Observer> = writers.iter_mut().map(|w| w as &mut dyn Observer).collect();
    let trained = train_stacked(stack, &mut observers)?;
    for ((_, train, test), folder) in trained.iter().zip(folders) {
        if let (Some(tr), Some(te)) = (train.last(), test.last()) {
            eprintln!("groklens: {}: final train loss {tr:.4e}, test loss {te:.4e}", folder.display());
        }
    }
    Ok(())
}

fn analyze(args: AnalyzeArgs) -> Result<(), Error> {
    let task = Task { p: args.p, g: Term::power(exponent("m", args.m)?), h: Term::power(exponent("n", args.n)?) };
    task.validate()?;
    let phases = match args.phases.as_deref() {
        None => None,
        Some(&[m, c, k]) => Some([m, c, k]),
        Some(other) => return Err(Error::config(format!("--phases takes three epochs, got {other:?}"))),
    };
    let overrides = Overrides { key_freqs: args.key_freqs, phases };
    check_empty_or_absent(&args.out)?;
    let device = parse_device(&args.device)?;
    let start = std::time::Instant::now();
    let history = read_history(&args.input, task)?;
    let needed = analysis_bytes(
        &history.config.model,
        history.config.task.n_pairs(),
        history.split.train.len(),
        history.checkpoint_epochs.len(),
    );
    check_fits(&format!("analysing p = {}", history.config.task.p), needed, device)?;
    let analysis = groklens::analysis::analyze(&history, &overrides, device)?;
    let json = serde_json::to_string_pretty(&analysis).map_err(|e| Error::format(e.to_string()))?;
    std::fs::create_dir_all(&args.out).map_err(|e| Error::io(&args.out, e))?;
    write_atomic(&args.out, "analysis.json", |path| std::fs::write(path, &json).map_err(|e| Error::io(path, e)))?;
    write_atomic(&args.out, "report.html", |path| write_report(path, &analysis))?;
    let k = &analysis.key_frequencies;
    eprintln!(
        "groklens: analysed {} checkpoints of {} in {:.1} s: key frequencies (task view) {:?}, (a + b view) {:?}; phases {:?}; wrote {}",
        analysis.over_training.epochs.len(),
        analysis.task,
        start.elapsed().as_secs_f64(),
        k.task,
        k.standard,
        analysis.phases.lines(),
        args.out.display()
    );
    Ok(())
}

fn sweep(command: SweepCommand) -> Result<(), Error> {
    match command {
        SweepCommand::Plan { sweep, out } => {
            let text =
                std::fs::read_to_string(&sweep).map_err(|e| Error::config(format!("{}: {e}", sweep.display())))?;
            let plan = Plan::from_toml(&text).map_err(|e| Error::config(format!("{}: {e}", sweep.display())))?;
            let planned = Sweep::create(&out, plan)?;
            eprintln!("groklens: planned {} runs into {}", planned.plan.runs.len(), out.display());
        }
        SweepCommand::Run { dir, shard, shards, stack, device } => {
            let sweep = Sweep::open(&dir)?;
            let shard = match shard {
                Some(text) => Shard::parse(&text)?,
                None => Shard::from_env(|name| std::env::var(name).ok(), shards)?,
            };
            let s = run_shard(&sweep, shard, stack, parse_device(&device)?)?;
            eprintln!(
                "groklens: shard {}/{} of {}: {} runs: {} trained now, {} finished before, {} failed, {} held by another process",
                shard.index,
                shard.count,
                dir.display(),
                s.runs,
                s.trained,
                s.already_finished,
                s.failed.len(),
                s.busy.len()
            );
            for (id, why) in &s.failed {
                eprintln!("groklens: failed: {id}: {why}");
            }
        }
        SweepCommand::Slurm { dir, shards, array_parallelism, stack, device, no_submit, sbatch } => {
            let sweep = Sweep::open(&dir)?;
            parse_device(&device)?;
            let shards = shards.unwrap_or(sweep.plan.runs.len());
            let exe = std::env::current_exe().map_err(|e| Error::config(format!("cannot find this binary: {e}")))?;
            let layout = ArrayLayout { shards, parallelism: array_parallelism, stack, device, sbatch };
            let scripts = write_scripts(&sweep, &exe, &layout)?;
            if no_submit {
                eprintln!(
                    "groklens: wrote {} and {}; submit with\n  jid=$(sbatch --parsable {})\n  sbatch --dependency=afterok:$jid {}",
                    scripts.train.display(),
                    scripts.collect.display(),
                    scripts.train.display(),
                    scripts.collect.display()
                );
            } else {
                let (train, collect) = submit(&scripts)?;
                eprintln!("groklens: submitted array job {train} ({shards} shards) and collect job {collect} after it");
                println!("{train} {collect}");
            }
        }
        SweepCommand::Collect { dir, device } => {
            let sweep = Sweep::open(&dir)?;
            let results = collect(&sweep, parse_device(&device)?)?;
            let finished = results.runs.iter().filter(|r| r.learned.is_some()).count();
            eprintln!(
                "groklens: collected {} runs ({finished} finished) into {} and report.html",
                results.runs.len(),
                sweep.results_path().display()
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let message = e.render().to_string();
            let first = message.lines().next().unwrap_or("bad arguments").trim_start_matches("error: ");
            eprintln!("groklens: {first}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Train(args) => train(args),
        Command::Analyze(args) => analyze(args),
        Command::Sweep(command) => sweep(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("groklens: {e}");
            match e {
                Error::Config(_) | Error::Format(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
