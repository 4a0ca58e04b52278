//! Tiny random-weight GGUF fixtures of every architecture and several quant types: our
//! batched forward pass (two sequences of different lengths in one batch, then batched
//! decode steps) against candle-transformers' quantized model run on each sequence alone.

mod common;

use amulet::fixture::{write_gguf, FixtureSpec};
use amulet::gguf::Gguf;
use amulet::model::{Activation, Arch, CpuModel, LanguageModel, ModelConfig};
use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::{Device, Tensor};
use common::*;

type Forward = Box<dyn FnMut(&[u32], usize) -> Vec<f32>>;

fn reference(arch: Arch, bytes: &[u8]) -> Forward {
    let mut r = std::io::Cursor::new(bytes.to_vec());
    let ct = gguf_file::Content::read(&mut r).unwrap();
    let dev = Device::Cpu;
    let run = |logits: candle_core::Result<Tensor>| logits.unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let input = |t: &[u32]| Tensor::new(t, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    match arch {
        Arch::Llama => {
            let mut m =
                candle_transformers::models::quantized_llama::ModelWeights::from_gguf(ct, &mut r, &dev).unwrap();
            Box::new(move |t, p| run(m.forward(&input(t), p)))
        }
        Arch::Qwen2 => {
            let mut m =
                candle_transformers::models::quantized_qwen2::ModelWeights::from_gguf(ct, &mut r, &dev).unwrap();
            Box::new(move |t, p| run(m.forward(&input(t), p)))
        }
        Arch::Gemma3 => {
            let mut m =
                candle_transformers::models::quantized_gemma3::ModelWeights::from_gguf(ct, &mut r, &dev).unwrap();
            Box::new(move |t, p| run(m.forward(&input(t), p)))
        }
    }
}

fn check(arch: Arch, quant: GgmlDType) {
    pin_candle_to_avx2();
    let bytes = write_gguf(&FixtureSpec::tiny(arch, quant, 7)).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    let mut cfg = ModelConfig::from_gguf(&g).unwrap();
    if arch == Arch::Gemma3 {
        // candle-transformers 0.11's quantized_gemma3 gates its MLP with SiLU, while Gemma 3
        // (HF gelu_pytorch_tanh, llama.cpp) uses GELU; pin ours to theirs for this comparison.
        assert_eq!(cfg.activation, Activation::GeluTanh);
        cfg.activation = Activation::Silu;
    }
    let mut ours = CpuModel::load_with_config(&g, &bytes, cfg, &mut |_, _| {}).unwrap();
    ours.set_exact_kernels(true);
    let mut theirs = reference(arch, &bytes);

    let a: Vec<u32> = vec![300, 12, 77, 5, 260, 99, 1, 42, 43];
    let b: Vec<u32> = vec![7, 8, 300];
    let steps: [[u32; 2]; 3] = [[10, 11], [257, 258], [33, 34]];

    let (sa, sb) = (ours.new_sequence(), ours.new_sequence());
    let mut got = vec![ours.forward(&[(sa, &a), (sb, &b)]).unwrap()];
    for s in &steps {
        got.push(ours.forward(&[(sa, &s[..1]), (sb, &s[1..])]).unwrap());
    }
    for (seq, (prompt, col)) in [(&a, 0usize), (&b, 1usize)].into_iter().enumerate() {
        let mut want = vec![theirs(prompt, 0)];
        for (i, s) in steps.iter().enumerate() {
            want.push(theirs(&s[col..col + 1], prompt.len() + i));
        }
        // A fresh candle model per sequence: its KV cache is per model instance.
        theirs = reference(arch, &bytes);
        for (step, w) in want.iter().enumerate() {
            let d = max_abs_diff(&got[step][seq], w);
            // Quantized matmuls are bit-exact; float weights go through gemm, whose blocking
            // depends on the input's rank ([rows, d] here, [1, rows, d] there).
            let tol = if matches!(quant, GgmlDType::F32 | GgmlDType::F16) { 1e-5 * scale(w) } else { 0.0 };
            assert!(d <= tol, "{arch:?} {quant:?} seq {seq} step {step}: max |Δlogit| {d}");
        }
    }
}

fn scale(v: &[f32]) -> f32 {
    v.iter().fold(1f32, |m, x| m.max(x.abs()))
}

#[test]
fn llama_fixtures_match_candle_transformers() {
    for q in [
        GgmlDType::F32,
        GgmlDType::F16,
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q6K,
    ] {
        check(Arch::Llama, q);
    }
}

#[test]
fn qwen2_fixtures_match_candle_transformers() {
    for q in [GgmlDType::Q4_1, GgmlDType::Q8_0, GgmlDType::Q5K] {
        check(Arch::Qwen2, q);
    }
}

#[test]
fn gemma3_fixtures_match_candle_transformers() {
    for q in [GgmlDType::Q8_0, GgmlDType::Q4K] {
        check(Arch::Gemma3, q);
    }
}
