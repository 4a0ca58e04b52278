//! The WebGPU backend against the CPU backend, whole model: tiny random fixtures of every
//! architecture and weight type, run with the same schedule (two sequences of different
//! lengths prefilled in one batch, a fork, batched decode steps). CI runs it on lavapipe.

mod common;

use amulet::backend::webgpu::GpuContext;
use amulet::fixture::{write_gguf, FixtureSpec};
use amulet::gguf::Gguf;
use amulet::model::gpu::GpuModel;
use amulet::model::{Arch, CpuModel, LanguageModel, ModelConfig};
use candle_core::quantized::GgmlDType;
use common::*;

/// The adapter, or a failure that says how to get one (lavapipe: mesa-vulkan-drivers).
pub fn context() -> GpuContext {
    GpuContext::open().unwrap_or_else(|e| panic!("{e}: install mesa-vulkan-drivers (./build.sh test does)"))
}

fn schedule(m: &mut dyn LanguageModel) -> Vec<Vec<Vec<f32>>> {
    // 150 tokens: past one attention chunk (64) and past the sliding window set below.
    let a: Vec<u32> = (0..150u32).map(|i| (i * 37 + 11) % 500).collect();
    let b: Vec<u32> = vec![7, 8, 300];
    let (sa, sb) = (m.new_sequence(), m.new_sequence());
    let mut out = vec![m.forward(&[(sa, &a), (sb, &b)]).unwrap()];
    let sc = m.fork_sequence(sa).unwrap();
    for step in [[10u32, 11, 12], [257, 258, 259], [33, 34, 35]] {
        out.push(m.forward(&[(sa, &step[..1]), (sb, &step[1..2]), (sc, &step[2..])]).unwrap());
    }
    out
}

fn compare(arch: Arch, quant: GgmlDType) -> (f32, usize, usize) {
    let bytes = write_gguf(&FixtureSpec::tiny(arch, quant, 11)).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    let mut cfg = ModelConfig::from_gguf(&g).unwrap();
    if cfg.sliding_window.is_some() {
        cfg.sliding_window = Some(40);
    }
    let mut cpu = CpuModel::load_with_config(&g, &bytes, cfg.clone(), &mut |_, _| {}).unwrap();
    let mut gpu = GpuModel::load_with_config(context(), &g, &bytes, cfg, &mut |_, _| {}).unwrap();
    let (want, got) = (schedule(&mut cpu), schedule(&mut gpu));
    let (mut worst, mut agree, mut total) = (0f32, 0, 0);
    for (w, g) in want.iter().flatten().zip(got.iter().flatten()) {
        let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        worst = worst.max(max_abs_diff(w, g) / scale);
        agree += (argmax(w) == argmax(g)) as usize;
        total += 1;
    }
    eprintln!("{arch:?} {quant:?}: max |Δlogit| / max |logit| = {worst:.2e}, top-1 {agree}/{total}");
    (worst, agree, total)
}

#[test]
fn every_architecture_and_weight_type_matches_the_cpu_backend() {
    let mut failures = Vec::new();
    for arch in [Arch::Llama, Arch::Qwen2, Arch::Gemma3] {
        for quant in [GgmlDType::F32, GgmlDType::F16, GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q8_0, GgmlDType::Q4K, GgmlDType::Q6K] {
            let (worst, agree, total) = compare(arch, quant);
            // F32 differs only in summation order; quantized types also in that the CPU
            // quantizes activations to 8 bits for its dot products (the GPU keeps f32).
            let limit = if quant == GgmlDType::F32 { 1e-5 } else { 5e-3 };
            if worst > limit || agree < total {
                failures.push(format!("{arch:?} {quant:?}: {worst:.2e}, top-1 {agree}/{total}"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
