//! `amulet bench`: base-only vs amulet decoding on the same prompt, interleaved runs,
//! medians with min-max, on one or several backends in the same run. Speed is reported,
//! never asserted: these machines are noisy.

use std::path::PathBuf;

use amulet::align::Method;
use amulet::engine::{Engine, GenerateOutput, GenerateRequest};
use amulet::model::DeviceChoice;
use amulet::Result;
use clap::Args;

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long)]
    model: Option<PathBuf>,
    /// Backends to measure, each in turn (comma-separated)
    #[arg(long, value_enum, value_delimiter = ',', default_value = "auto")]
    device: Vec<DeviceChoice>,
    /// New tokens per run
    #[arg(long, default_value_t = 128)]
    tokens: usize,
    /// Runs of each method (interleaved: base, amulet, base, amulet, ...)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value = "How can I improve my eating habits without compromising on taste?")]
    prompt: String,
    #[arg(long, default_value = "concise")]
    preference: String,
    /// Print one JSON object instead of the table
    #[arg(long)]
    json: bool,
    /// Also write the JSON object to this file
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Stats {
    decode_tokens_per_s: f64,
    min: f64,
    max: f64,
    prefill_ms: f64,
    prefill_tokens_per_s: f64,
    /// Prefill plus the first decode step.
    ttft_ms: f64,
    runs: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn stats(outs: &[GenerateOutput]) -> Stats {
    let runs: Vec<f64> = outs.iter().map(|o| o.timings.decode_tokens_per_s).collect();
    let t = |f: &dyn Fn(&GenerateOutput) -> f64| median(outs.iter().map(f).collect());
    Stats {
        decode_tokens_per_s: median(runs.clone()),
        min: runs.iter().copied().fold(f64::INFINITY, f64::min),
        max: runs.iter().copied().fold(0.0, f64::max),
        prefill_ms: t(&|o| o.timings.prefill_ms),
        prefill_tokens_per_s: t(&|o| o.timings.prefill_tokens as f64 / (o.timings.prefill_ms / 1e3)),
        ttft_ms: t(&|o| o.timings.prefill_ms + o.timings.decode_ms / o.timings.decode_steps.max(1) as f64),
        runs,
    }
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn measure(engine: &mut Engine, a: &BenchArgs) -> Result<(Stats, Stats)> {
    let mut req = GenerateRequest::new(&a.prompt);
    req.preference = Some(a.preference.clone());
    req.max_tokens = a.tokens;
    req.ignore_eos = true;
    let mut base_req = req.clone();
    base_req.methods = vec![Method::Base];
    let mut amulet_req = req;
    amulet_req.methods = vec![Method::default()];

    // Warm-up (page faults, caches, shader compilation), not counted.
    let mut warm = amulet_req.clone();
    warm.max_tokens = 8;
    engine.generate(&warm, &mut |_| true)?;
    let (mut base, mut amulet) = (Vec::new(), Vec::new());
    for i in 0..a.runs.max(1) {
        if !a.json {
            eprintln!("{}: run {}/{}", engine.info().device, i + 1, a.runs.max(1));
        }
        base.push(engine.generate(&base_req, &mut |_| true)?);
        amulet.push(engine.generate(&amulet_req, &mut |_| true)?);
    }
    Ok((stats(&base), stats(&amulet)))
}

/// One backend's figures.
#[derive(serde::Serialize)]
struct BackendResult {
    model: amulet::engine::ModelInfo,
    device: String,
    device_reason: String,
    load_ms: f64,
    base: Stats,
    amulet: Stats,
    /// amulet / base decode speed.
    ratio: f64,
}

/// The whole run, as `--json` prints it and `--out` writes it.
#[derive(serde::Serialize)]
struct BenchResult {
    threads: String,
    q4_1_kernel: &'static str,
    new_tokens: usize,
    peak_rss_mib: Option<f64>,
    backends: Vec<BackendResult>,
}

pub fn run(a: BenchArgs) -> Result<()> {
    let path = crate::model_path::resolve(a.model.as_deref())?;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into());
    let mut backends = Vec::new();
    for &device in &a.device {
        let (mut engine, load_ms) = crate::cli::load_engine(&path, a.json, device)?;
        let (base, amulet) = measure(&mut engine, &a)?;
        let info = engine.info().clone();
        backends.push(BackendResult {
            device: info.device.clone(),
            device_reason: info.device_reason.clone(),
            model: info,
            load_ms,
            ratio: amulet.decode_tokens_per_s / base.decode_tokens_per_s,
            base,
            amulet,
        });
    }
    let result = BenchResult {
        threads,
        q4_1_kernel: amulet::backend::q4_1::KERNEL,
        new_tokens: a.tokens,
        peak_rss_mib: peak_rss_mib(),
        backends,
    };
    let json = serde_json::to_string_pretty(&result).map_err(|e| amulet::AmuletError::Io(e.to_string()))?;
    if let Some(path) = &a.out {
        std::fs::write(path, format!("{json}\n"))
            .map_err(|e| amulet::AmuletError::Io(format!("{}: {e}", path.display())))?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&result).map_err(|e| amulet::AmuletError::Io(e.to_string()))?);
        return Ok(());
    }
    let quantization = result.backends.first().map_or("", |b| b.model.quantization.as_str());
    println!(
        "model {}  ({quantization}, {} new tokens, greedy, {} runs each, RAYON_NUM_THREADS={})",
        path.display(),
        a.tokens,
        a.runs.max(1),
        result.threads
    );
    println!(
        "{:<8} {:<8} {:>12} {:>16} {:>11} {:>12} {:>9}",
        "device", "method", "decode tok/s", "min-max", "prefill ms", "prefill t/s", "TTFT ms"
    );
    for r in &result.backends {
        for (name, s) in [("base", &r.base), ("amulet", &r.amulet)] {
            println!(
                "{:<8} {:<8} {:>12.1} {:>16} {:>11.1} {:>12.0} {:>9.1}",
                r.device,
                name,
                s.decode_tokens_per_s,
                format!("{:.1}-{:.1}", s.min, s.max),
                s.prefill_ms,
                s.prefill_tokens_per_s,
                s.ttft_ms
            );
        }
        println!("{}: amulet / base = {:.3}; load {:.0} ms; {}", r.device, r.ratio, r.load_ms, r.device_reason);
    }
    if let [first, rest @ ..] = &result.backends[..] {
        for r in rest {
            println!(
                "base decode, {} / {} = {:.2}",
                first.device,
                r.device,
                first.base.decode_tokens_per_s / r.base.decode_tokens_per_s
            );
        }
    }
    println!("peak RSS {:.0} MiB", result.peak_rss_mib.unwrap_or(f64::NAN));
    Ok(())
}
