//! Conversations on the WebGPU backend: a kept sequence cut back to a shared prefix (its KV
//! pages kept, the ones past the cut given back), forked and extended, against the CPU
//! backend doing the same; and a two-turn chat through the engine that reuses its caches and
//! answers as a fresh engine does (the WebGPU side of engine_real's conversation test, on a
//! tiny fixture).
//! CI runs it on lavapipe.

mod common;

use amulet::align::Method;
use amulet::backend::webgpu::GpuContext;
use amulet::chat_template::ChatMessage;
use amulet::engine::{Engine, GenerateRequest};
use amulet::fixture::{write_gguf, FixtureSpec};
use amulet::gguf::Gguf;
use amulet::model::gpu::GpuModel;
use amulet::model::{Arch, CpuModel, LanguageModel};
use candle_core::quantized::GgmlDType;
use common::*;

/// The adapter, or a failure that says how to get one (lavapipe: mesa-vulkan-drivers).
fn context() -> GpuContext {
    GpuContext::open().unwrap_or_else(|e| {
        panic!("missing prerequisite: a WebGPU adapter ({e}; install mesa-vulkan-drivers: ./build.sh test does)")
    })
}

/// Runs 100 tokens, cuts the sequence to 37 (inside its third 16-position page), forks it
/// and extends both: the logits and the bytes held along the way.
fn cut_fork_extend(m: &mut dyn LanguageModel) -> (Vec<Vec<f32>>, Vec<usize>) {
    let a: Vec<u32> = (0..100u32).map(|i| (i * 41 + 3) % 500).collect();
    let s = m.new_sequence();
    let mut out = m.forward(&[(s, &a)]).unwrap();
    let mut bytes = vec![m.sequence_bytes(s)];
    assert!(!m.truncate_sequence(s, 101), "a cut past the end is refused");
    assert!(!m.truncate_sequence(s + 1000, 3), "an unknown sequence is refused");
    assert!(m.truncate_sequence(s, 37));
    assert_eq!(m.sequence_len(s), Some(37));
    bytes.push(m.sequence_bytes(s));
    let f = m.fork_sequence(s).unwrap();
    assert_eq!(m.sequence_len(f), Some(37));
    bytes.push(m.sequence_bytes(f));
    // Different tokens after the cut than before it: stale positions must not be read.
    let (x, y): (Vec<u32>, Vec<u32>) = ((200..230).collect(), (300..305).collect());
    out.extend(m.forward(&[(s, &x), (f, &y)]).unwrap());
    for step in [[7u32, 8], [9, 10]] {
        out.extend(m.forward(&[(s, &step[..1]), (f, &step[1..])]).unwrap());
    }
    // A fresh sequence on the pages given back.
    let n = m.new_sequence();
    out.extend(m.forward(&[(n, &a[..40])]).unwrap());
    (out, bytes)
}

#[test]
fn a_sequence_cut_back_forked_and_extended_matches_the_cpu_backend() {
    let bytes = write_gguf(&FixtureSpec::tiny(Arch::Qwen2, GgmlDType::Q8_0, 7)).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    let mut cpu = CpuModel::load(&g, &bytes, |_, _| {}).unwrap();
    let mut gpu = GpuModel::load(context(), &g, &bytes, |_, _| {}).unwrap();
    let (want, _) = cut_fork_extend(&mut cpu);
    let (got, held) = cut_fork_extend(&mut gpu);
    let cfg = gpu.config().clone();
    // K and V, f32, whole 16-position pages: 7 pages for 100 positions, 3 for 37.
    let page = 2 * cfg.n_layer * 16 * cfg.kv_dim() * 4;
    assert_eq!(held, vec![7 * page, 3 * page, 3 * page]);
    assert_eq!(want.len(), got.len());
    for (w, g) in want.iter().zip(&got) {
        let scale = w.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max_abs_diff(w, g) / scale < 5e-3, "{}", max_abs_diff(w, g) / scale);
        assert_eq!(argmax(w), argmax(g));
    }
}

/// A tiny fixture (its own tokenizer and chat template): SmolLM2 takes minutes on lavapipe.
fn gpu_engine() -> Engine {
    let bytes = write_gguf(&FixtureSpec::tiny(Arch::Llama, GgmlDType::Q4_1, 3)).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    let model = GpuModel::load(context(), &g, &bytes, |_, _| {}).unwrap();
    Engine::with_model(&g, Box::new(model)).unwrap()
}

fn chat(turns: &[(&str, &str)], question: &str, methods: Vec<Method>) -> GenerateRequest {
    let mut r = GenerateRequest::new(question);
    let mut messages = Vec::new();
    for (q, a) in turns {
        messages.push(ChatMessage::new("user", *q));
        messages.push(ChatMessage::new("assistant", *a));
    }
    messages.push(ChatMessage::new("user", question));
    r.conversation.messages = messages;
    r.preference = Some("concise".into());
    r.methods = methods;
    r.max_tokens = 16;
    r
}

#[test]
fn a_conversation_on_webgpu_reuses_its_caches_and_answers_as_a_fresh_engine_does() {
    let mut e = gpu_engine();
    assert_eq!(e.info().device, "webgpu");
    let q1 = "How can I improve my eating habits without compromising on taste?";
    let first = e.generate(&chat(&[], q1, vec![Method::default()]), &mut |_| true).unwrap();
    assert_eq!(first.timings.cached_tokens_base + first.timings.cached_tokens_pref, 0);
    let a1 = first.completions[0].text.clone();
    let (kept, n) = e.prefix_cache_usage();
    assert!(kept > 0 && n == 2, "both contexts kept: {n} sequences, {kept} bytes");

    // Compare mode: base and amulet both read the base context, so the kept base sequence
    // is taken by one track and forked for the other.
    let q2 = "And what should I drink?";
    let next = chat(&[(q1, &a1)], q2, vec![Method::Base, Method::default()]);
    let second = e.generate(&next, &mut |_| true).unwrap();
    let t = &second.timings;
    assert!(t.cached_tokens_base > 20 && t.cached_tokens_pref > 20, "{t:?}");
    assert!(t.prefill_tokens < second.prompt_tokens_base, "only the new turn is read: {t:?}");

    // The same conversation on an engine that never saw it: the same greedy tokens.
    let fresh = gpu_engine().generate(&next, &mut |_| true).unwrap();
    assert_eq!(fresh.timings.cached_tokens_base, 0);
    for (reused, fresh) in second.completions.iter().zip(&fresh.completions) {
        assert_eq!(reused.tokens, fresh.tokens, "{}: {:?} vs {:?}", reused.method, reused.text, fresh.text);
    }
}

#[test]
fn kept_sequences_get_at_most_half_the_adapters_kv_space() {
    let mut e = gpu_engine();
    assert!(e.prefix_budget() > 0);
    e.set_prefix_budget(usize::MAX);
    let half = e.prefix_budget();
    assert!(half < usize::MAX / 2, "the budget is bounded by the adapter: {half}");
    e.set_prefix_budget(1000);
    assert_eq!(e.prefix_budget(), 1000);
}
