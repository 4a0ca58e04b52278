//! CPU attention alone on SmolLM2-135M's shape (9 query heads, 3 kv heads of 64, 30 layers):
//! one decode step's attention over every layer, for one or more contexts at the given
//! lengths, on 1 or more threads, with random keys and values. Each layer's cache is its own
//! memory, so the 30 of them stream from the caches below L2 as in a decode step; `LAYERS=1`
//! keeps one layer hot in L1/L2, so that the loops' arithmetic shows.
//!
//! Run: `cargo run --release --example attention_bench -- THREADS LEN [LEN ...]`, e.g.
//! `-- 2 110 130` (amulet's two contexts at 2 threads). Printed, never asserted; compare two
//! builds by running both, alternately, on the same machine.

use amulet::backend::pool::{on_pool, set_threads};
use amulet::model::attention::{attend_rows, AttentionShape, LayerKv};
use amulet::rng::Rng;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("numbers")).collect();
    let (threads, lens) = match args.split_first() {
        Some((&t, lens)) if !lens.is_empty() => (t, lens.to_vec()),
        _ => {
            eprintln!("usage: attention_bench THREADS LEN [LEN ...]");
            std::process::exit(2);
        }
    };
    let env = |name: &str, default: usize| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (layers, iters) = (env("LAYERS", 30), env("ITERS", 2000));
    let s = AttentionShape { n_head: 9, n_kv_head: 3, head_dim: 64, scale: 0.125, window: None };
    let kv_dim = s.n_kv_head * s.head_dim;
    set_threads(threads).expect("threads");
    let mut rng = Rng::new(1);
    let caches: Vec<Vec<LayerKv>> = lens
        .iter()
        .map(|&len| {
            (0..layers)
                .map(|_| {
                    let mut kv = LayerKv::default();
                    for _ in 0..len {
                        kv.push(&rng.vec(kv_dim, 1.0), &rng.vec(kv_dim, 1.0));
                    }
                    kv
                })
                .collect()
        })
        .collect();
    let q = rng.vec(lens.len() * s.n_head * s.head_dim, 3.0);
    let mut out = vec![0f32; q.len()];
    for round in 0..3 {
        let t = Instant::now();
        on_pool(|| {
            for _ in 0..iters {
                for li in 0..layers {
                    let rows: Vec<(&LayerKv, usize)> =
                        caches.iter().zip(&lens).map(|(c, &len)| (&c[li], len - 1)).collect();
                    attend_rows(&s, &q, &rows, &mut out);
                }
            }
            Ok(())
        })
        .expect("attention");
        let us = t.elapsed().as_secs_f64() * 1e6 / iters as f64;
        println!("round {round}: {threads} threads, contexts {lens:?}, {layers} layers: {us:.1} us a step");
    }
}
