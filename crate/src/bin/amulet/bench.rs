//! `amulet bench`: base-only vs amulet decoding on the same prompt, interleaved runs,
//! medians with min-max. Speed is reported, never asserted: these machines are noisy.

use std::path::PathBuf;

use amulet::align::Method;
use amulet::engine::{GenerateOutput, GenerateRequest};
use amulet::Result;
use clap::Args;

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long)]
    model: Option<PathBuf>,
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
    runs: Vec<f64>,
}

fn stats(outs: &[GenerateOutput]) -> Stats {
    let mut v: Vec<f64> = outs.iter().map(|o| o.timings.decode_tokens_per_s).collect();
    let runs = v.clone();
    v.sort_by(f64::total_cmp);
    let mut p: Vec<f64> = outs.iter().map(|o| o.timings.prefill_ms).collect();
    p.sort_by(f64::total_cmp);
    Stats {
        decode_tokens_per_s: v[v.len() / 2],
        min: v[0],
        max: v[v.len() - 1],
        prefill_ms: p[p.len() / 2],
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

pub fn run(a: BenchArgs) -> Result<()> {
    let path = crate::model_path::resolve(a.model.as_deref())?;
    let (mut engine, load_ms) = crate::cli::load_engine(&path, a.json)?;
    let mut req = GenerateRequest::new(&a.prompt);
    req.preference = Some(a.preference.clone());
    req.max_tokens = a.tokens;
    req.ignore_eos = true;
    let mut base_req = req.clone();
    base_req.methods = vec![Method::Base];
    let mut amulet_req = req;
    amulet_req.methods = vec![Method::default()];

    // Warm-up (page faults, caches), not counted.
    let mut warm = base_req.clone();
    warm.max_tokens = 8;
    engine.generate(&warm, &mut |_| true)?;
    let (mut base, mut amulet) = (Vec::new(), Vec::new());
    for i in 0..a.runs.max(1) {
        if !a.json {
            eprintln!("run {}/{}", i + 1, a.runs.max(1));
        }
        base.push(engine.generate(&base_req, &mut |_| true)?);
        amulet.push(engine.generate(&amulet_req, &mut |_| true)?);
    }
    let (b, m) = (stats(&base), stats(&amulet));
    let ratio = m.decode_tokens_per_s / b.decode_tokens_per_s;
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into());
    let result = serde_json::json!({
        "model": engine.info(),
        "device": engine.info().device,
        "threads": threads,
        "q4_1_kernel": amulet::backend::q4_1::KERNEL,
        "new_tokens": a.tokens,
        "load_ms": load_ms,
        "peak_rss_mib": peak_rss_mib(),
        "base": b,
        "amulet": m,
        "ratio": ratio,
    });
    if let Some(path) = &a.out {
        std::fs::write(path, format!("{result:#}\n")).map_err(|e| amulet::AmuletError::Io(format!("{}: {e}", path.display())))?;
    }
    if a.json {
        println!("{result}");
    } else {
        println!("model {}  ({}, {} new tokens, greedy, {} runs each, RAYON_NUM_THREADS={threads})",
            path.display(), engine.info().quantization, a.tokens, a.runs.max(1));
        println!("{:<8} {:>12} {:>18} {:>12}", "method", "decode tok/s", "min-max", "prefill ms");
        for (name, s) in [("base", &b), ("amulet", &m)] {
            println!(
                "{:<8} {:>12.1} {:>18} {:>12.1}",
                name,
                s.decode_tokens_per_s,
                format!("{:.1}-{:.1}", s.min, s.max),
                s.prefill_ms
            );
        }
        println!("amulet / base = {ratio:.3}");
        println!("load {load_ms:.0} ms, peak RSS {:.0} MiB", peak_rss_mib().unwrap_or(f64::NAN));
    }
    Ok(())
}
