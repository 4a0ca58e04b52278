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
    /// Backends to measure, comma-separated, each in turn: auto, webgpu, cpu
    #[arg(long, default_value = "auto")]
    device: String,
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

pub fn run(a: BenchArgs) -> Result<()> {
    let path = crate::model_path::resolve(a.model.as_deref())?;
    let devices: Vec<DeviceChoice> = a.device.split(',').map(|d| d.trim().parse()).collect::<Result<_>>()?;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into());
    let mut results = Vec::new();
    let mut quantization = String::new();
    for device in devices {
        let (mut engine, load_ms) = crate::cli::load_engine(&path, a.json, device)?;
        let (b, m) = measure(&mut engine, &a)?;
        quantization = engine.info().quantization.clone();
        let ratio = m.decode_tokens_per_s / b.decode_tokens_per_s;
        results.push(serde_json::json!({
            "model": engine.info(),
            "device": engine.info().device,
            "device_reason": engine.info().device_reason,
            "load_ms": load_ms,
            "base": b,
            "amulet": m,
            "ratio": ratio,
        }));
    }
    let result = serde_json::json!({
        "threads": threads,
        "q4_1_kernel": amulet::backend::q4_1::KERNEL,
        "new_tokens": a.tokens,
        "peak_rss_mib": peak_rss_mib(),
        "backends": results,
    });
    if let Some(path) = &a.out {
        std::fs::write(path, format!("{result:#}\n"))
            .map_err(|e| amulet::AmuletError::Io(format!("{}: {e}", path.display())))?;
    }
    if a.json {
        println!("{result}");
        return Ok(());
    }
    println!(
        "model {}  ({quantization}, {} new tokens, greedy, {} runs each, RAYON_NUM_THREADS={threads})",
        path.display(),
        a.tokens,
        a.runs.max(1)
    );
    println!(
        "{:<8} {:<8} {:>12} {:>16} {:>11} {:>12} {:>9}",
        "device", "method", "decode tok/s", "min-max", "prefill ms", "prefill t/s", "TTFT ms"
    );
    for r in &results {
        let device = r["device"].as_str().unwrap_or("?");
        for name in ["base", "amulet"] {
            let s = &r[name];
            let f = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
            println!(
                "{:<8} {:<8} {:>12.1} {:>16} {:>11.1} {:>12.0} {:>9.1}",
                device,
                name,
                f("decode_tokens_per_s"),
                format!("{:.1}-{:.1}", f("min"), f("max")),
                f("prefill_ms"),
                f("prefill_tokens_per_s"),
                f("ttft_ms")
            );
        }
        println!(
            "{device}: amulet / base = {:.3}; load {:.0} ms; {}",
            r["ratio"].as_f64().unwrap_or(f64::NAN),
            r["load_ms"].as_f64().unwrap_or(f64::NAN),
            r["device_reason"].as_str().unwrap_or("")
        );
    }
    if results.len() > 1 {
        let base0 = results[0]["base"]["decode_tokens_per_s"].as_f64().unwrap_or(f64::NAN);
        for r in &results[1..] {
            let other = r["base"]["decode_tokens_per_s"].as_f64().unwrap_or(f64::NAN);
            println!("base decode, {} / {} = {:.2}", results[0]["device"], r["device"], base0 / other);
        }
    }
    println!("peak RSS {:.0} MiB", peak_rss_mib().unwrap_or(f64::NAN));
    Ok(())
}
