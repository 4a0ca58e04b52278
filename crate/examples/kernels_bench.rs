//! Our Q4_K / Q6_K / Q5_0 / Q8_0 kernels against candle's QMatMul on the matrix shapes of the
//! Qwen2.5-Coder 1.5B (d 1,536, ff 8,960) and 0.5B (d 896, ff 4,864) q4_k_m files, for 1, 2
//! and 8 activation rows, plus a plain memory-read probe (a sum over 1 GiB) in the same run.
//!
//! Run: `RAYON_NUM_THREADS=1 cargo run --release --example kernels_bench`
//! (optional arguments: a filter on the shape names, e.g. `1.5B`; `--hot` for one copy of each
//! matrix, so that small ones stay in cache and the kernels' compute speed shows; `--tiers` to
//! time our kernels on each x86 tier this CPU has, against each other, in place of candle).
//!
//! Each shape also reports how fast our load-time repack runs (wall time, MB/s of GGUF bytes).
//! Each shape cycles over enough copies of its matrix (at least 128 MB in all) that every call
//! streams its weights from DRAM, as a decode step does; GB/s counts the weight bytes read
//! per call (GGUF size). candle runs as the app runs it (its own tier for this CPU: on
//! AVX512-VNNI machines it repacks Q4_K, Q6_K for m > 1 and Q8_0). Ours and candle's run in
//! alternating batches of at least 100 ms, 9 of each, timed in this thread's CPU time (Linux:
//! /proc/thread-self/schedstat, so waiting for a core on a shared machine does not count);
//! each figure is its fastest batch. Printed, never asserted.

use std::time::Instant;

use amulet::backend::q4_1::Q41Matrix;
use amulet::backend::q4_k::Q4KMatrix;
use amulet::backend::q5_0::Q50Matrix;
use amulet::backend::q6_k::Q6KMatrix;
use amulet::backend::q8_0::Q80Matrix;
use amulet::backend::x86::Tier;
use amulet::rng::Rng;
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QMatMul};
use candle_core::{Device, Module, Tensor};

enum Ours {
    Q41(Q41Matrix),
    Q4K(Q4KMatrix),
    Q6K(Q6KMatrix),
    Q50(Q50Matrix),
    Q80(Q80Matrix),
}

impl Ours {
    fn load(dtype: GgmlDType, bytes: &[u8], n: usize, k: usize) -> Ours {
        match dtype {
            GgmlDType::Q4_1 => Ours::Q41(Q41Matrix::from_gguf_bytes(bytes, n, k).unwrap()),
            GgmlDType::Q4K => Ours::Q4K(Q4KMatrix::from_gguf_bytes(bytes, n, k).unwrap()),
            GgmlDType::Q6K => Ours::Q6K(Q6KMatrix::from_gguf_bytes(bytes, n, k).unwrap()),
            GgmlDType::Q5_0 => Ours::Q50(Q50Matrix::from_gguf_bytes(bytes, n, k).unwrap()),
            GgmlDType::Q8_0 => Ours::Q80(Q80Matrix::from_gguf_bytes(bytes, n, k).unwrap()),
            other => panic!("no kernel of ours for {other:?}"),
        }
    }

    fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        match self {
            Ours::Q41(w) => w.matmul(x, m, out),
            Ours::Q4K(w) => w.matmul(x, m, out),
            Ours::Q6K(w) => w.matmul(x, m, out),
            Ours::Q50(w) => w.matmul(x, m, out),
            Ours::Q80(w) => w.matmul(x, m, out),
        }
        .unwrap()
    }

    fn matmul_on(&self, tier: Tier, x: &[f32], m: usize, out: &mut [f32]) {
        match self {
            Ours::Q41(w) => w.matmul_on(tier, x, m, out),
            Ours::Q4K(w) => w.matmul_on(tier, x, m, out),
            Ours::Q6K(w) => w.matmul_on(tier, x, m, out),
            Ours::Q50(w) => w.matmul_on(tier, x, m, out),
            Ours::Q80(w) => w.matmul_on(tier, x, m, out),
        }
        .unwrap()
    }
}

/// Random GGUF bytes of a `dtype` matrix: random quants, small sane f16 scales (timing does
/// not depend on the values, and this is much faster than quantizing real floats).
fn gguf_bytes(dtype: GgmlDType, n: usize, k: usize, rng: &mut Rng) -> Vec<u8> {
    let (block, size) = (dtype.block_size(), dtype.type_size());
    let mut bytes: Vec<u8> = (0..n * k / block * size).map(|_| rng.next_u64() as u8).collect();
    let scale = half::f16::from_f32(0.01).to_le_bytes();
    let fields: &[usize] = match dtype {
        GgmlDType::Q4K | GgmlDType::Q4_1 => &[0, 2],
        GgmlDType::Q6K => &[208],
        _ => &[0],
    };
    for blk in bytes.chunks_exact_mut(size) {
        for &f in fields {
            blk[f..f + 2].copy_from_slice(&scale);
        }
    }
    bytes
}

/// Nanoseconds this thread has run on a CPU (Linux), so that time spent waiting for a core on
/// a busy machine does not count; elsewhere wall time.
fn clock() -> f64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    if let Ok(s) = std::fs::read_to_string("/proc/thread-self/schedstat") {
        if let Some(ns) = s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()) {
            return ns as f64 * 1e-9;
        }
    }
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// Seconds per call of each `fs[j](i)` (i counts calls): batches of at least 100 ms of each
/// (the CPU clock advances in scheduler ticks), alternated 9 times so that all see the same
/// machine, and the fastest batch of each.
fn time_all(fs: &mut [&mut dyn FnMut(usize)]) -> Vec<f64> {
    let mut calls = 0usize;
    let mut iters = 1usize;
    loop {
        let t = clock();
        for _ in 0..iters {
            fs[0](calls);
            calls += 1;
        }
        if clock() - t >= 0.1 {
            break;
        }
        iters *= 2;
    }
    let mut best = vec![f64::INFINITY; fs.len()];
    for _ in 0..9 {
        for (f, best) in fs.iter_mut().zip(&mut best) {
            let t = clock();
            for _ in 0..iters {
                f(calls);
                calls += 1;
            }
            *best = best.min((clock() - t) / iters as f64);
        }
    }
    best
}

/// GB/s of a plain sum over 1 GiB (best of 3): what one core can stream from DRAM.
fn read_bandwidth() -> f64 {
    let buf: Vec<u64> = (0..(1usize << 27)).map(|i| i as u64).collect();
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = clock();
        let s = buf.chunks_exact(8).fold([0u64; 8], |mut a, c| {
            for (a, &v) in a.iter_mut().zip(c) {
                *a = a.wrapping_add(v);
            }
            a
        });
        std::hint::black_box(s);
        best = best.min(clock() - t);
    }
    (buf.len() * 8) as f64 / best / 1e9
}

const SHAPES: [(&str, GgmlDType, usize, usize); 18] = [
    ("SmolLM2 q/o", GgmlDType::Q4_1, 576, 576),
    ("SmolLM2 gate/up", GgmlDType::Q4_1, 1536, 576),
    ("SmolLM2 down", GgmlDType::Q4_1, 576, 1536),
    ("SmolLM2 output", GgmlDType::Q8_0, 49_152, 576),
    ("1.5B q/o", GgmlDType::Q4K, 1536, 1536),
    ("1.5B k/v", GgmlDType::Q4K, 256, 1536),
    ("1.5B v", GgmlDType::Q6K, 256, 1536),
    ("1.5B gate/up", GgmlDType::Q4K, 8960, 1536),
    ("1.5B down", GgmlDType::Q4K, 1536, 8960),
    ("1.5B down", GgmlDType::Q6K, 1536, 8960),
    ("1.5B output", GgmlDType::Q6K, 151_936, 1536),
    ("0.5B q/o", GgmlDType::Q5_0, 896, 896),
    ("0.5B k/v", GgmlDType::Q5_0, 128, 896),
    ("0.5B v", GgmlDType::Q8_0, 128, 896),
    ("0.5B gate/up", GgmlDType::Q5_0, 4864, 896),
    ("0.5B down", GgmlDType::Q4K, 896, 4864),
    ("0.5B down", GgmlDType::Q6K, 896, 4864),
    ("0.5B output", GgmlDType::Q8_0, 151_936, 896),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // --hot: one copy of each matrix, so small ones stay in cache (the kernels' own speed).
    let hot = args.iter().any(|a| a == "--hot");
    let tiers: Vec<Tier> =
        if args.iter().any(|a| a == "--tiers") { Tier::ALL.into_iter().filter(|t| t.here()).collect() } else { vec![] };
    let filter = args.iter().find(|a| !a.starts_with("--")).cloned().unwrap_or_default();
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "unset".into());
    println!("kernel {}, RAYON_NUM_THREADS={threads}", amulet::backend::rows::tier());
    println!("memory read probe (sum over 1 GiB): {:.1} GB/s", read_bandwidth());
    if tiers.is_empty() {
        println!(
            "{:<15} {:<5} {:>8} {:>2} {:>10} {:>7} {:>10} {:>7} {:>6}",
            "shape", "type", "MB", "m", "ours ms", "GB/s", "candle ms", "GB/s", "x"
        );
    } else {
        print!("{:<15} {:<5} {:>8} {:>2}", "shape", "type", "MB", "m");
        for t in &tiers {
            print!(" {:>12} {:>6}", format!("{} ms", t.name()), "GB/s");
        }
        println!("  (ms / first tier's)");
    }
    let mut rng = Rng::new(0x5eed);
    for (name, dtype, n, k) in SHAPES {
        if !name.contains(&filter) {
            continue;
        }
        let bytes = gguf_bytes(dtype, n, k, &mut rng);
        let mb = bytes.len() as f64 / 1e6;
        let copies = if hot { 1 } else { (128e6 / bytes.len() as f64).ceil() as usize };
        let t = Instant::now();
        let ours: Vec<Ours> = (0..copies).map(|_| Ours::load(dtype, &bytes, n, k)).collect();
        let repack = t.elapsed().as_secs_f64() / copies as f64;
        // candle has no Q4_1 tier of its own worth comparing here (q4_1_bench does).
        let theirs: Vec<QMatMul> = if tiers.is_empty() {
            (0..copies)
                .map(|_| {
                    QMatMul::from_qtensor(qtensor_from_ggml(dtype, &bytes, vec![n, k], &Device::Cpu).unwrap()).unwrap()
                })
                .collect()
        } else {
            vec![]
        };
        drop(bytes);
        println!(
            "{name:<15} {:<5} {mb:>8.1}    repack at load: {:.2} ms, {:.0} MB/s",
            format!("{dtype:?}"),
            repack * 1e3,
            mb / repack
        );
        for m in [1usize, 2, 8] {
            let x = rng.vec(m * k, 1.0);
            let mut out = vec![0f32; m * n];
            print!("{name:<15} {:<5} {mb:>8.1} {m:>2}", format!("{dtype:?}"));
            if !tiers.is_empty() {
                let out = std::cell::RefCell::new(out);
                let mut fs: Vec<Box<dyn FnMut(usize)>> = tiers
                    .iter()
                    .map(|&t| {
                        let (ours, x, out) = (&ours, &x, &out);
                        Box::new(move |i: usize| ours[i % copies].matmul_on(t, x, m, &mut out.borrow_mut()))
                            as Box<dyn FnMut(usize)>
                    })
                    .collect();
                let mut refs: Vec<&mut dyn FnMut(usize)> = fs.iter_mut().map(|f| f.as_mut() as _).collect();
                let ts = time_all(&mut refs);
                for &t in &ts {
                    print!(" {:>12.3} {:>6.1}", t * 1e3, mb / 1e3 / t);
                }
                let rel: Vec<String> = ts.iter().map(|t| format!("{:.2}", t / ts[0])).collect();
                println!("  ({})", rel.join(" "));
                continue;
            }
            let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
            let (a, b) = match &mut time_all(&mut [&mut |i| ours[i % copies].matmul(&x, m, &mut out), &mut |i| {
                std::hint::black_box(theirs[i % copies].forward(&xt).unwrap());
            }])[..]
            {
                [a, b] => (*a, *b),
                _ => unreachable!(),
            };
            println!(" {:>10.3} {:>7.1} {:>10.3} {:>7.1} {:>6.2}", a * 1e3, mb / 1e3 / a, b * 1e3, mb / 1e3 / b, b / a);
        }
    }
}
