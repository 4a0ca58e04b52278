//! The WebGPU backend inside a browser (wasm-bindgen-test in headless Chromium with
//! --enable-unsafe-webgpu: SwiftShader here), against the CPU backend in the same page:
//! Chrome's own WGSL compiler (Tint) takes every kernel, and results come back through
//! promises. `./build.sh test` runs it in the browser only.
#![cfg(target_arch = "wasm32")]

use amulet::backend::webgpu::GpuContext;
use amulet::fixture::{write_gguf, FixtureSpec};
use amulet::gguf::Gguf;
use amulet::model::gpu::GpuModel;
use amulet::model::{Arch, CpuModel, LanguageModel, ModelConfig, SeqId, StepOutput, TokenRequest};
use amulet::sample::top_candidates;
use candle_core::quantized::GgmlDType;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().fold(0, |best, (i, v)| if *v > row[best] { i } else { best })
}

/// Two sequences prefilled in one batch (one past an attention chunk and a pass), a fork,
/// then batched decode steps; the logits of every call.
async fn schedule(m: &mut dyn LanguageModel) -> (Vec<Vec<f32>>, [SeqId; 3]) {
    let a: Vec<u32> = (0..70).map(|i| (i * 37 + 11) % 500).collect();
    let b: Vec<u32> = vec![7, 8, 300];
    let (sa, sb) = (m.new_sequence(), m.new_sequence());
    let mut out = m.forward_async(&[(sa, &a[..]), (sb, &b[..])]).await.unwrap();
    let sc = m.fork_sequence(sa).unwrap();
    for step in [[10u32, 11, 12], [257, 258, 259]] {
        out.extend(m.forward_async(&[(sa, &step[..1]), (sb, &step[1..2]), (sc, &step[2..])]).await.unwrap());
    }
    (out, [sa, sb, sc])
}

async fn compare(arch: Arch, quant: GgmlDType, tolerance: f32) {
    let mut spec = FixtureSpec::tiny(arch, quant, 11);
    if quant == GgmlDType::Q5_0 {
        spec.embed_quant = quant; // as the 0.5B Qwen holds it: the embedding kernel reads Q5_0 too
    }
    let bytes = write_gguf(&spec).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    let mut cfg = ModelConfig::from_gguf(&g).unwrap();
    if cfg.sliding_window.is_some() {
        cfg.sliding_window = Some(40);
    }
    let mut cpu = CpuModel::load_with_config(&g, &bytes, cfg.clone(), &mut |_, _| {}).unwrap();
    let ctx = GpuContext::open_async().await.expect("Chromium with --enable-unsafe-webgpu offers an adapter");
    let mut gpu = GpuModel::load_with_config(ctx, &g, &bytes, cfg, &mut |_, _| {}).unwrap();
    let (want, seqs_cpu) = schedule(&mut cpu).await;
    let (got, seqs_gpu) = schedule(&mut gpu).await;
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = w.iter().zip(g).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
        assert!(worst <= tolerance, "{arch:?} {quant:?} row {i}: max |Δlogit| / max |logit| = {worst:e}");
        assert_eq!(argmax(w), argmax(g), "{arch:?} {quant:?} row {i}: top-1");
    }

    // One more step with the token drawn on the GPU: amulet's extrapolation of two rows,
    // greedy, with the top candidates (the chooser kernel through Tint).
    let step = [(seqs_gpu[0], &[40u32][..]), (seqs_gpu[1], &[41u32][..])];
    let request = TokenRequest {
        base: Some(1),
        pref: Some(0),
        strength: 4.0 / 3.0,
        temperature: 0.0,
        top_k: None,
        top_p: None,
        uniform: None,
        top_n: 3,
    };
    let StepOutput::Tokens(chosen) = gpu.forward_choose(&step, &[request]).await.unwrap() else {
        panic!("{arch:?} {quant:?}: the GPU sent rows back instead of a token");
    };
    let rows = cpu.forward(&[(seqs_cpu[0], &[40u32][..]), (seqs_cpu[1], &[41u32][..])]).unwrap();
    let combined: Vec<f32> = rows[0].iter().zip(&rows[1]).map(|(p, b)| p + request.strength * (p - b)).collect();
    assert_eq!(chosen[0].id as usize, argmax(&combined), "{arch:?} {quant:?}: chosen token");
    let want_top = top_candidates(&combined, 3);
    assert_eq!(
        chosen[0].top_combined.iter().map(|c| c.0).collect::<Vec<_>>(),
        want_top.iter().map(|c| c.0).collect::<Vec<_>>()
    );
    assert_eq!(chosen[0].top_base.len(), 3);
}

#[wasm_bindgen_test]
async fn llama_q4_1_matches_the_cpu_backend() {
    compare(Arch::Llama, GgmlDType::Q4_1, 5e-3).await;
}

#[wasm_bindgen_test]
async fn qwen2_q4_k_matches_the_cpu_backend() {
    compare(Arch::Qwen2, GgmlDType::Q4K, 5e-3).await;
}

#[wasm_bindgen_test]
async fn gemma3_f32_with_a_sliding_window_matches_the_cpu_backend() {
    compare(Arch::Gemma3, GgmlDType::F32, 1e-5).await;
}

#[wasm_bindgen_test]
async fn llama_q6_k_matches_the_cpu_backend() {
    compare(Arch::Llama, GgmlDType::Q6K, 5e-3).await;
}

#[wasm_bindgen_test]
async fn qwen2_q5_0_matches_the_cpu_backend() {
    compare(Arch::Qwen2, GgmlDType::Q5_0, 5e-3).await;
}
