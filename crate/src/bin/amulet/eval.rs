//! `amulet eval`: base, pref, LA and Amulet over a prompt set, scored offline (docs/method.md
//! §6), with a progress bar; the work itself lives in the library (`amulet::eval`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use amulet::align::{Game, Method};
use amulet::eval::report::{recorded_command, recorded_path, write_report, RunInfo};
use amulet::eval::{load_prompts, run, EvalConfig, Progress};
use amulet::model::DeviceChoice;
use amulet::prompt::Placement;
use amulet::{AmuletError, Result};
use clap::Args;

use crate::cli::{load_engine, with_params};
use crate::model_path;

#[derive(Args)]
pub struct EvalArgs {
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Prompt set: one JSON object a line, {"id": .., "question": ".."}
    #[arg(long)]
    prompts: PathBuf,
    /// Use only the first N prompts
    #[arg(long)]
    limit: Option<usize>,
    /// Preferences, comma-separated (concise, verbose, uplifting and creative have offline metrics)
    #[arg(long, value_delimiter = ',', default_value = "creative,verbose,concise,uplifting")]
    preferences: Vec<String>,
    /// Methods, comma-separated
    #[arg(long, value_enum, value_delimiter = ',', default_value = "base,pref,la,amulet")]
    methods: Vec<Method>,
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Output folder (default: eval-out/<prompt file name>)
    #[arg(long)]
    out: Option<PathBuf>,
    /// GGUF model file (default: the manifest's default model, fetched when missing)
    #[arg(long)]
    model: Option<PathBuf>,
    #[command(flatten)]
    strength: crate::cli::StrengthArgs,
    #[command(flatten)]
    threads: crate::cli::ThreadsArg,
    /// Values of T for the strength sweep, comma-separated (none: --no-sweep)
    #[arg(long, value_delimiter = ',', default_value = "1,5,10,30,60,100")]
    sweep_iterations: Vec<u32>,
    /// Skip the strength sweep
    #[arg(long)]
    no_sweep: bool,
    /// Preferences the sweep runs for (those evaluated), comma-separated
    #[arg(long, value_delimiter = ',', default_value = "concise,uplifting")]
    sweep_preferences: Vec<String>,
    /// Where the preference sentence goes (the paper: system)
    #[arg(long, value_enum, default_value_t = Placement::System)]
    placement: Placement,
}

/// The options whose values are paths, recorded relative to the repository in the summary.
const PATH_OPTIONS: [&str; 3] = ["--prompts", "--out", "--model"];

/// The repository this binary was built from: the summary names files inside it relative to
/// it and any other file by its name only, so committed reports carry no machine's paths.
fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::canonicalize(&root).unwrap_or(root)
}

fn config(a: &EvalArgs) -> Result<EvalConfig> {
    let params = a.strength.params();
    let methods = a
        .methods
        .iter()
        .map(|&m| with_params(m, params, a.strength.ratio, Game::ClosedForm))
        .collect::<Result<Vec<Method>>>()?;
    let cfg = EvalConfig {
        preferences: a.preferences.iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect(),
        methods,
        amulet: params,
        sweep_iterations: if a.no_sweep { Vec::new() } else { a.sweep_iterations.clone() },
        sweep_preferences: a.sweep_preferences.iter().map(|p| p.trim().to_string()).collect(),
        max_tokens: a.max_tokens,
        placement: a.placement,
    };
    cfg.validate()?;
    Ok(cfg)
}

pub fn run_eval(a: EvalArgs) -> Result<()> {
    let t0 = Instant::now();
    a.threads.apply()?;
    let cfg = config(&a)?;
    // The prompt file is checked before the (slower) model load.
    let prompts = load_prompts(&a.prompts, a.limit)?;
    let out = match &a.out {
        Some(o) => o.clone(),
        None => PathBuf::from("eval-out").join(a.prompts.file_stem().unwrap_or_default()),
    };
    let path = model_path::resolve(a.model.as_deref())?;
    let (mut engine, _) = load_engine(&path, false, a.device)?;
    let info = engine.info().clone();

    let bar = indicatif::ProgressBar::new(1);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} requests  {msg}  ETA {eta_precise}",
        )
        .map_err(|e| AmuletError::Io(e.to_string()))?
        .progress_chars("=> "),
    );
    let records = run(&mut engine, &prompts, &cfg, &mut |p: Progress| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!(
            "prompt {}/{}, {} tokens ({:.0} tok/s)",
            (p.prompt + 1).min(p.prompts),
            p.prompts,
            p.generated_tokens,
            p.generated_tokens as f64 / secs
        ));
    })?;
    bar.finish_and_clear();

    let (root, cwd) = (repo_root(), std::env::current_dir().unwrap_or_default());
    let args: Vec<String> = std::env::args().collect();
    let run_info = RunInfo {
        command: recorded_command(&args, &PATH_OPTIONS, &cwd, &root),
        prompts_source: recorded_path(&a.prompts, &cwd, &root),
        model: format!(
            "`{}`: {} ({}, {})",
            path.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default(),
            info.name,
            info.quantization,
            info.device
        ),
        wall_s: t0.elapsed().as_secs_f64(),
    };
    let files = write_report(&out, &records, &cfg, &run_info)?;
    eprintln!(
        "{} prompts, {} responses in {:.0} s; wrote {}",
        prompts.len(),
        records.len(),
        run_info.wall_s,
        out.display()
    );
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}
