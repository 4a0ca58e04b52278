//! Shared helpers of the integration tests: the real model files live in models/cache
//! (fetched by `models/fetch.sh`, which `./build.sh test` runs first).
#![allow(dead_code)]

use std::path::PathBuf;

pub fn model_path(file: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/cache").join(file);
    assert!(p.exists(), "missing prerequisite: {} (run models/fetch.sh; ./build.sh test does)", p.display());
    p
}

/// candle 0.11 repacks Q4_K/Q6_K/Q8_0 weights for AVX512-VNNI (and AVX-VNNI) at run time,
/// where Q8_0 then meets 256-value Q8_K activations instead of Q8_0's 32-value blocks: other
/// numbers on those machines. The references pin candle to its portable AVX2 tier, the one
/// whose sums ours reproduce, so a comparison means the same on every x86 machine. Call it
/// before the first candle matmul (candle reads the variable once).
pub fn pin_candle_to_avx2() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::env::set_var("MISTRALRS_FORCE_AVX2", "1"));
}

pub const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";
/// Qwen2.5-Coder 0.5B Instruct (qwen2; Q5_0 with Q8_0, Q4_K, Q6_K): fetched by `./build.sh test`.
pub const QWEN05: &str = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf";
/// Qwen2.5-Coder 1.5B Instruct (Q4_K, Q6_K; 1.1 GB): not fetched by `./build.sh test`, so the
/// tests that need it run only with `AMULET_LARGE=1` (see [`large_model_path`]).
pub const QWEN15: &str = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf";
/// The manifest id of QWEN15, for the `models/fetch.sh` hint.
pub const QWEN15_ID: &str = "qwen2.5-coder-1.5b-instruct-q4_k_m";

/// Whether the opt-in tests of the large models run: `AMULET_LARGE=1`.
pub fn large_models_enabled() -> bool {
    std::env::var("AMULET_LARGE").as_deref() == Ok("1")
}

/// A large model's path when `AMULET_LARGE=1` (missing then is a missing prerequisite, as for
/// the other models); None, with a note on stderr, otherwise.
pub fn large_model_path(file: &str, id: &str) -> Option<PathBuf> {
    if !large_models_enabled() {
        eprintln!("{file}: not tested (set AMULET_LARGE=1 after models/fetch.sh {id})");
        return None;
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/cache").join(file);
    assert!(p.exists(), "missing prerequisite: {} (AMULET_LARGE=1: run models/fetch.sh {id})", p.display());
    Some(p)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

pub fn argmax(a: &[f32]) -> usize {
    a.iter().enumerate().fold((0, f32::NEG_INFINITY), |m, (i, &v)| if v > m.1 { (i, v) } else { m }).0
}
