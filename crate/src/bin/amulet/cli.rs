//! The command line: generate, bench, fixture.

use crate::{bench, model_path};

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use amulet::align::{AmuletParams, Game, Method};
use amulet::engine::{Engine, GenerateRequest};
use amulet::model::DeviceChoice;
use amulet::prompt::Placement;
use amulet::sample::SamplingParams;
use amulet::{AmuletError, Result};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "amulet", version, about = "Amulet test-time preference realignment for GGUF models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate an answer that follows a preference, streaming text to stdout.
    Generate(GenerateArgs),
    /// A conversation: one line a turn, each reusing the caches of the turns before.
    Chat(crate::chat::ChatArgs),
    /// Decode speed of base vs amulet on the same prompt (interleaved runs, medians).
    Bench(bench::BenchArgs),
    /// Write a random-weight GGUF fixture (tests, and speed runs with real shapes).
    Fixture(amulet_fixture_args::FixtureArgs),
    /// Offline evaluation over a prompt set: base, pref, la and amulet, scored and charted.
    Eval(crate::eval::EvalArgs),
    /// Merge a sharded GGUF set (name-00001-of-0000N.gguf, ...) into one file.
    GgufMerge(crate::gguf_split::MergeArgs),
    /// Split a GGUF file into a sharded set, as llama.cpp's gguf-split does.
    GgufSplit(crate::gguf_split::SplitArgs),
}

mod amulet_fixture_args {
    use clap::Args;
    #[derive(Args)]
    pub struct FixtureArgs {
        #[arg(long, value_enum, default_value_t = amulet::model::Arch::Llama)]
        pub arch: amulet::model::Arch,
        /// tiny, or a real model's exact shapes
        #[arg(long, value_enum, default_value_t = amulet::fixture::FixtureShape::Tiny)]
        pub shape: amulet::fixture::FixtureShape,
        /// Weight type of the block matrices: f32, f16, q4_0, q4_1, q5_0, q8_0, q4k, q5k, q6k
        #[arg(long, default_value = "q4_1", value_parser = amulet::fixture::parse_quant)]
        pub quant: candle_core::quantized::GgmlDType,
        #[arg(long, default_value_t = 0)]
        pub seed: u64,
        /// Output file
        pub out: std::path::PathBuf,
    }
}

#[derive(Args)]
struct GenerateArgs {
    /// GGUF model file (default: the manifest's default model, fetched when missing)
    #[arg(long)]
    model: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Method::default())]
    method: Method,
    /// The preference in plain words, e.g. "concise", "uplifting", "for a ten-year-old"
    #[arg(long)]
    preference: Option<String>,
    /// System prompt (default: the paper's)
    #[arg(long)]
    system: Option<String>,
    /// Where the preference sentence goes
    #[arg(long, value_enum, default_value_t = Placement::System)]
    placement: Placement,
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// 0 = greedy (the paper's choice)
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    #[arg(long)]
    top_p: Option<f64>,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    strength: StrengthArgs,
    #[command(flatten)]
    threads: ThreadsArg,
    #[arg(long, value_enum, default_value_t = Game::ClosedForm)]
    game: Game,
    /// Stop string (repeatable)
    #[arg(long)]
    stop: Vec<String>,
    /// Record the top N candidates per token under base, pref and combined (with --json)
    #[arg(long, default_value_t = 0)]
    top_logprobs: usize,
    /// Print one JSON object at the end instead of streaming text
    #[arg(long)]
    json: bool,
    /// auto: a hardware WebGPU adapter when there is one, else the CPU
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// The question
    prompt: String,
}

/// How many CPU threads run the model (the CPU path), shared by `generate` and `eval`.
#[derive(Args)]
pub struct ThreadsArg {
    /// CPU threads (0: one per core)
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

impl ThreadsArg {
    pub fn apply(&self) -> Result<usize> {
        amulet::backend::pool::set_threads(self.threads)
    }
}

/// The Amulet game's parameters and the LA ratio, shared by `generate` and `eval`.
#[derive(Args)]
pub struct StrengthArgs {
    #[arg(long, default_value_t = 2.0)]
    pub alpha: f64,
    #[arg(long, default_value_t = 2.0)]
    pub lambda: f64,
    #[arg(long, default_value_t = 10.0)]
    pub eta: f64,
    /// T, the number of game iterations
    #[arg(long, default_value_t = 60)]
    pub iterations: u32,
    /// Linear-alignment ratio r (method la)
    #[arg(long, default_value_t = 2.0)]
    pub ratio: f64,
}

impl StrengthArgs {
    pub fn params(&self) -> AmuletParams {
        AmuletParams { alpha: self.alpha, lambda: self.lambda, eta: self.eta, iterations: self.iterations }
    }
}

/// `method` (a name parsed with its defaults) with the command line's parameters.
pub fn with_params(method: Method, params: AmuletParams, ratio: f64, game: Game) -> Result<Method> {
    let method = match method {
        Method::LinearAlignment { .. } => Method::LinearAlignment { ratio },
        Method::Amulet { .. } => Method::Amulet { params, game },
        m => m,
    };
    method.validate()?;
    Ok(method)
}

/// Loads a model file with a progress bar on stderr; returns the engine and load time.
pub fn load_engine(path: &std::path::Path, quiet: bool, device: DeviceChoice) -> Result<(Engine, f64)> {
    let t0 = std::time::Instant::now();
    let bytes = std::fs::read(path).map_err(|e| AmuletError::Io(format!("{}: {e}", path.display())))?;
    let bar = if quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(1) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("loading {msg} [{bar:30}] {pos}/{len} layers")
            .map_err(|e| AmuletError::Io(e.to_string()))?
            .progress_chars("=> "),
    );
    bar.set_message(path.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default());
    let gguf = amulet::gguf::Gguf::parse(&bytes)?;
    let mut engine = Engine::load_on(&gguf, &bytes[..], device, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    if engine.info().device == "webgpu" {
        // A lost GPU: the file is read again and the next request runs on the CPU.
        let path = path.to_path_buf();
        engine.set_fallback(Box::new(move || {
            let bytes = std::fs::read(&path).map_err(|e| AmuletError::Io(format!("{}: {e}", path.display())))?;
            let gguf = amulet::gguf::Gguf::parse(&bytes)?;
            Ok(Box::new(amulet::model::CpuModel::load(&gguf, &bytes[..], |_, _| {})?))
        }));
    }
    Ok((engine, t0.elapsed().as_secs_f64() * 1e3))
}

fn generate(args: GenerateArgs) -> Result<()> {
    args.threads.apply()?;
    let params = args.strength.params();
    let method = with_params(args.method, params, args.strength.ratio, args.game)?;
    let sampling =
        SamplingParams { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p, seed: args.seed };
    sampling.validate()?;
    let path = model_path::resolve(args.model.as_deref())?;
    let (mut engine, load_ms) = load_engine(&path, args.json, args.device)?;

    let mut req = GenerateRequest::new(&args.prompt);
    req.conversation.system = args.system;
    req.preference = args.preference;
    req.placement = args.placement;
    req.methods = vec![method];
    req.sampling = sampling;
    req.max_tokens = args.max_tokens;
    req.stop = args.stop;
    req.top_logprobs = args.top_logprobs;

    let json = args.json;
    let mut stdout = std::io::stdout();
    let out = engine.generate(&req, &mut |ev| {
        if !json {
            let _ = stdout.write_all(ev.text.as_bytes());
            let _ = stdout.flush();
        }
        true
    })?;
    let c = &out.completions[0];
    if json {
        let out = GenerateJson {
            text: &c.text,
            tokens: &c.tokens,
            finish_reason: c.finish_reason.as_str(),
            method: &c.method,
            model: engine.info(),
            usage: UsageJson {
                prompt_tokens_base: out.prompt_tokens_base,
                prompt_tokens_pref: out.prompt_tokens_pref,
                completion_tokens: c.tokens.len(),
            },
            timings: TimingsJson {
                load_ms,
                prefill_ms: out.timings.prefill_ms,
                decode_tokens_per_s: out.timings.decode_tokens_per_s,
            },
            steps: (req.top_logprobs > 0).then_some(&c.steps),
        };
        println!("{}", serde_json::to_string(&out).map_err(|e| AmuletError::Io(e.to_string()))?);
    } else {
        println!();
    }
    Ok(())
}

/// `generate --json`: one object at the end.
#[derive(serde::Serialize)]
struct GenerateJson<'a> {
    text: &'a str,
    tokens: &'a [u32],
    finish_reason: &'static str,
    method: &'a str,
    model: &'a amulet::engine::ModelInfo,
    usage: UsageJson,
    timings: TimingsJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    steps: Option<&'a Vec<amulet::engine::StepLogprobs>>,
}

#[derive(serde::Serialize)]
struct UsageJson {
    prompt_tokens_base: usize,
    prompt_tokens_pref: usize,
    completion_tokens: usize,
}

#[derive(serde::Serialize)]
struct TimingsJson {
    load_ms: f64,
    prefill_ms: f64,
    decode_tokens_per_s: f64,
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A bad or unknown option is reported like every other error: typed, with exit 2.
        Err(e) if e.use_stderr() => {
            let message = e.to_string();
            eprintln!("error [BAD_OPTION]: {}", message.trim().trim_start_matches("error: "));
            return ExitCode::from(2);
        }
        Err(e) => e.exit(), // --help, --version
    };
    quiet_gpu_probe();
    let result = match cli.command {
        Command::Generate(a) => generate(a),
        Command::Chat(a) => crate::chat::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Fixture(a) => fixture(a),
        Command::Eval(a) => crate::eval::run_eval(a),
        Command::GgufMerge(a) => crate::gguf_split::merge(a),
        Command::GgufSplit(a) => crate::gguf_split::split(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error [{}]: {e}", e.code());
            ExitCode::from(2)
        }
    }
}

/// Mesa's Vulkan drivers print "error: XDG_RUNTIME_DIR is invalid or not set" while the
/// WebGPU adapter is probed, on a run that then succeeds. A newcomer reads that as a failure,
/// so the probe gets a private runtime directory when the session has none; nothing else
/// in this process reads the variable.
fn quiet_gpu_probe() {
    let valid = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from).is_some_and(|d| d.is_dir());
    if valid {
        return;
    }
    #[cfg(unix)]
    let dir = {
        use std::os::unix::fs::DirBuilderExt;
        // SAFETY: getuid has no preconditions and cannot fail.
        let dir = std::env::temp_dir().join(format!("amulet-xdg-{}", unsafe { libc::getuid() }));
        let _ = std::fs::DirBuilder::new().mode(0o700).recursive(true).create(&dir);
        dir
    };
    #[cfg(not(unix))]
    let dir = std::env::temp_dir();
    if dir.is_dir() {
        std::env::set_var("XDG_RUNTIME_DIR", dir);
    }
}

fn fixture(a: amulet_fixture_args::FixtureArgs) -> Result<()> {
    let spec = amulet::fixture::FixtureSpec::with_shape(a.arch, a.shape, a.quant, a.seed)?;
    let bytes = amulet::fixture::write_gguf(&spec)?;
    std::fs::write(&a.out, &bytes).map_err(|e| AmuletError::Io(format!("{}: {e}", a.out.display())))?;
    eprintln!("wrote {} ({} bytes)", a.out.display(), bytes.len());
    Ok(())
}
