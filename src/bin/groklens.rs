//! The `groklens` command line: a thin shell over the library.
//! Bad input gets one line naming the problem and exit status 2.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use groklens::analysis::Overrides;
use groklens::device::parse_device;
use groklens::import::read_history;
use groklens::report::write_report;
use groklens::run::{check_empty_or_absent, load_state_dict, write_atomic};
use groklens::{Error, HookedTransformer, RunConfig, RunWriter, Split, Task, Term};

#[derive(Parser)]
#[command(name = "groklens", version, about = "Train small transformers on modular arithmetic and watch them grok")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train one model on (a^m + b^n) mod p, writing a run folder.
    Train(TrainArgs),
    /// Analyse a run folder, a TransformerLens state dict (.safetensors) or a grokking
    /// demo .pth file: writes analysis.json and report.html.
    Analyze(AnalyzeArgs),
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

#[derive(Args)]
struct TrainArgs {
    /// The run folder to write; must not exist or be empty.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 113, allow_negative_numbers = true)]
    p: i64,
    /// Exponent of a.
    #[arg(long, default_value_t = 4, allow_negative_numbers = true)]
    m: i64,
    /// Exponent of b.
    #[arg(long, default_value_t = 4, allow_negative_numbers = true)]
    n: i64,
    #[arg(long, default_value_t = 0.3, allow_negative_numbers = true)]
    frac_train: f64,
    #[arg(long, default_value_t = 598, allow_negative_numbers = true)]
    data_seed: i64,
    /// Seed of the weight initialisation.
    #[arg(long, default_value_t = 999, allow_negative_numbers = true)]
    seed: i64,
    #[arg(long, default_value_t = 25_000, allow_negative_numbers = true)]
    epochs: i64,
    #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
    checkpoint_every: i64,
    #[arg(long, default_value_t = 1e-3, allow_negative_numbers = true)]
    lr: f64,
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    weight_decay: f64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Initial weights: a TransformerLens state dict saved as safetensors.
    #[arg(long)]
    init_from: Option<PathBuf>,
}

fn exponent(name: &str, value: i64) -> Result<u32, Error> {
    u32::try_from(value).map_err(|_| Error::config(format!("exponent {name} must be a whole number ≥ 0, got {value}")))
}

fn train(args: TrainArgs) -> Result<(), Error> {
    let task = Task { p: args.p, g: Term::power(exponent("m", args.m)?), h: Term::power(exponent("n", args.n)?) };
    task.validate()?;
    let mut config = RunConfig::for_task(task);
    config.model.seed = args.seed;
    let t = &mut config.train;
    (t.frac_train, t.data_seed, t.num_epochs, t.checkpoint_every) =
        (args.frac_train, args.data_seed, args.epochs, args.checkpoint_every);
    (t.lr, t.weight_decay) = (args.lr, args.weight_decay);
    config.validate()?;
    check_empty_or_absent(&args.out)?;
    let device = parse_device(&args.device)?;
    let split = Split::seeded(task.n_pairs(), config.train.frac_train, config.train.data_seed)?;
    let init = match &args.init_from {
        Some(path) => load_state_dict(path, &config, device)?,
        None => HookedTransformer::new(&config.model, device)?,
    };
    let mut writer = RunWriter::create(&args.out, &config, &split, &init)?;
    eprintln!(
        "groklens: training {} on {} ({} train / {} test pairs), {} epochs, into {}",
        task.describe(),
        args.device,
        split.train.len(),
        split.test.len(),
        config.train.num_epochs,
        writer.dir().display()
    );
    let (_, train_losses, test_losses) = groklens::train::train(&config, &init, &split, &mut writer)?;
    if let (Some(tr), Some(te)) = (train_losses.last(), test_losses.last()) {
        eprintln!("groklens: done: final train loss {tr:.4e}, test loss {te:.4e}");
    }
    Ok(())
}

fn analyze(args: AnalyzeArgs) -> Result<(), Error> {
    let task = Task { p: args.p, g: Term::power(exponent("m", args.m)?), h: Term::power(exponent("n", args.n)?) };
    task.validate()?;
    let phases = match args.phases.as_deref() {
        None => None,
        Some(&[m, c, k]) if m <= c && c <= k => Some([m, c, k]),
        Some(other) => {
            return Err(Error::config(format!("--phases takes three ascending epochs, got {other:?}")));
        }
    };
    check_empty_or_absent(&args.out)?;
    let device = parse_device(&args.device)?;
    let start = std::time::Instant::now();
    let history = read_history(&args.input, task)?;
    if let Some(freqs) = &args.key_freqs {
        let max = history.config.task.p / 2;
        if let Some(bad) = freqs.iter().find(|&&k| k < 1 || k > max) {
            return Err(Error::config(format!("--key-freqs: {bad} is not a frequency in 1..={max}")));
        }
    }
    let overrides = Overrides { key_freqs: args.key_freqs, phases };
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
        analysis.phase_lines,
        args.out.display()
    );
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
