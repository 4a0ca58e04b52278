//! Hostile model files and templates, made in the test from the tiny fixture: each must end in
//! a typed error quickly (BAD_MODEL at load, COMPUTE at the first bad step), never a hang, a
//! huge allocation, garbage text or a panic.

use std::time::{Duration, Instant};

use amulet::align::Method;
use amulet::chat_template::{ChatMessage, ChatTemplate};
use amulet::engine::{Engine, GenerateRequest};
use amulet::fixture::{write_gguf, FixtureSpec};
use amulet::gguf::{Gguf, MetaValue};
use amulet::model::{Arch, CpuModel, LanguageModel, ModelConfig, SeqId};
use amulet::AmuletError;
use candle_core::quantized::GgmlDType;

fn fixture() -> Vec<u8> {
    write_gguf(&FixtureSpec::tiny(Arch::Llama, GgmlDType::Q8_0, 5)).unwrap()
}

/// The fixture with every F32 value of `tensor` set to `value`.
fn with_tensor_values(tensor: &str, value: f32) -> Vec<u8> {
    let mut bytes = fixture();
    let g = Gguf::parse(&bytes).unwrap();
    let t = g.tensors.iter().find(|t| t.name == tensor).unwrap();
    assert_eq!(t.dtype, GgmlDType::F32);
    for chunk in bytes[t.offset..t.offset + t.byte_len].chunks_exact_mut(4) {
        chunk.copy_from_slice(&value.to_le_bytes());
    }
    bytes
}

fn request() -> GenerateRequest {
    let mut r = GenerateRequest::new("Hello there");
    r.methods = vec![Method::Base];
    r.max_tokens = 8;
    r.ignore_eos = true;
    r
}

/// A template that must fail with BAD_MODEL naming `tokenizer.chat_template`, fast.
fn assert_stopped(src: &str) -> String {
    let t0 = Instant::now();
    let err = match ChatTemplate::new(src, "<s>", "</s>") {
        Err(e) => e,
        Ok(t) => t.render(&[ChatMessage::new("user", "hi")], true).unwrap_err(),
    };
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(1), "{src}: stopped after {took:?}");
    match err {
        AmuletError::BadModel(m) if m.contains("`tokenizer.chat_template`") => m,
        other => panic!("{src}: {other:?}"),
    }
}

#[test]
fn runaway_templates_fail_at_load_with_bad_model() {
    // Nested loops: 10^15 iterations.
    let m = assert_stopped("{% for a in range(100000) %}{% for b in range(100000) %}{% for c in range(100000) %}x{% endfor %}{% endfor %}{% endfor %}");
    assert!(m.contains("fuel") || m.contains("wrote more"), "{m}");
    let m = assert_stopped("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}");
    assert!(m.contains("fuel"), "{m}");
    // A macro that calls itself, and a recursive loop.
    let m = assert_stopped("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
    assert!(m.contains("depth"), "{m}");
    let m = assert_stopped("{% for m in messages recursive %}{{ loop(messages) }}{% endfor %}");
    assert!(m.contains("depth"), "{m}");
}

#[test]
fn templates_that_build_huge_strings_fail_at_load() {
    // Doubling a string forty times (2^40 bytes), with a namespace, `~`, unrolled, in a macro.
    let m = assert_stopped(
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s|length }}",
    );
    assert!(m.contains("`+`") && m.contains("bytes"), "{m}");
    let m = assert_stopped(
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s|length }}",
    );
    assert!(m.contains("`~`"), "{m}");
    let unrolled = "{% set s = 'xxxxxxxx' %}".to_string() + &"{% set s = s + s %}".repeat(40) + "{{ s|length }}";
    assert_stopped(&unrolled);
    assert_stopped("{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% else %}{{ s|length }}{% endif %}{% endmacro %}{{ d('x', 40) }}");
    // Repetition, replacement, joins, padding, indentation.
    assert_stopped("{{ ('x' * 1000000) * 1000 }}");
    assert_stopped("{{ (['x'] * 100000000)|list|length }}");
    assert_stopped("{{ (['x'] * 100000000)|join|length }}");
    assert_stopped("{% set s = 'x' * 4000 %}{{ (s|replace('x', s)|replace('x', s))|length }}");
    assert_stopped("{% set s = 'x' * 4000 %}{{ s.replace('x', s).replace('x', s)|length }}");
    assert_stopped("{% set s = 'x' * 3000000 %}{{ ([s] * 1000)|join(',')|length }}");
    assert_stopped("{{ 'x'.center(1000000000)|length }}");
    assert_stopped("{{ 'a\\nb'|indent(1000000000)|length }}");
    // Output: a loop of literal text and of a value.
    let m = assert_stopped(&("{% for i in range(100000) %}".to_string() + &"y".repeat(4096) + "{% endfor %}"));
    assert!(m.contains("wrote more"), "{m}");
    assert_stopped("{% set s = 'z' * 1000000 %}{% for i in range(100000) %}{{ s }}{% endfor %}");
}

#[test]
fn a_template_that_explodes_only_on_a_long_conversation_fails_at_that_render() {
    let src = "{% if messages|length > 5 %}{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}{% endif %}ok";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let few = vec![ChatMessage::new("user", "hi"); 5];
    assert_eq!(t.render(&few, false).unwrap(), "ok");
    let t0 = Instant::now();
    let e = t.render(&vec![ChatMessage::new("user", "hi"); 6], false).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert_eq!(e.code(), "BAD_MODEL", "{e}");
    // The template's own errors keep their code.
    let t =
        ChatTemplate::new("{% if messages|length > 3 %}{{ raise_exception('too many') }}{% endif %}", "", "").unwrap();
    assert_eq!(t.render(&vec![ChatMessage::new("user", "hi"); 4], false).unwrap_err().code(), "CHAT_TEMPLATE");
}

#[test]
fn long_conversations_still_render_inside_the_sandbox() {
    // 2,000 turns of 2 KB through ChatML: about 4 MB of prompt, far past the fixed caps' share.
    let t = ChatTemplate::new(amulet::chat_template::CHATML_FALLBACK_TEMPLATE, "", "").unwrap();
    let msgs: Vec<ChatMessage> =
        (0..2000).map(|i| ChatMessage::new("user", format!("{i}{}", "w".repeat(2048)))).collect();
    let out = t.render(&msgs, true).unwrap();
    assert!(out.len() > 2000 * 2048 && out.ends_with("<|im_start|>assistant\n"));
}

#[test]
fn a_hostile_template_in_the_file_stops_the_load() {
    let bytes = fixture();
    let mut g = Gguf::parse(&bytes).unwrap();
    g.metadata.insert(
        "tokenizer.chat_template".into(),
        MetaValue::Str("{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}".into()),
    );
    let model = CpuModel::load(&g, &bytes[..], |_, _| {}).unwrap();
    let t0 = Instant::now();
    let e = Engine::with_model(&g, Box::new(model)).err().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(1));
    assert!(matches!(e, AmuletError::BadModel(ref m) if m.contains("tokenizer.chat_template")), "{e}");
}

#[test]
fn nan_weights_are_refused_at_load_naming_the_tensor() {
    let e = Engine::load(&with_tensor_values("output_norm.weight", f32::NAN), |_, _| {}).err().unwrap();
    assert!(matches!(e, AmuletError::BadModel(ref m) if m.contains("output_norm.weight")), "{e}");
    let e = Engine::load(&with_tensor_values("blk.1.attn_norm.weight", f32::INFINITY), |_, _| {}).err().unwrap();
    assert!(matches!(e, AmuletError::BadModel(ref m) if m.contains("blk.1.attn_norm.weight")), "{e}");
}

#[test]
fn weights_that_overflow_end_the_request_with_compute() {
    // Finite weights, but 3e38 times a normalised row overflows every logit to infinity.
    let mut e = Engine::load(&with_tensor_values("output_norm.weight", 3e38), |_, _| {}).unwrap();
    let mut tokens = 0;
    let err = e.generate(&request(), &mut |_| {
        tokens += 1;
        true
    });
    let err = err.unwrap_err();
    assert!(matches!(err, AmuletError::Compute(ref m) if m.contains("non-finite")), "{err}");
    assert_eq!(tokens, 0, "no token may come out of infinite logits");
    // The engine stays usable for a good model afterwards? A fresh one answers.
    let mut good = Engine::load(&fixture(), |_, _| {}).unwrap();
    assert_eq!(good.generate(&request(), &mut |_| true).unwrap().completions[0].tokens.len(), 8);
}

/// The CPU model, with NaN in the logits from the `bad`-th forward on.
struct NanFrom {
    model: CpuModel,
    calls: usize,
    bad: usize,
}

impl LanguageModel for NanFrom {
    fn config(&self) -> &ModelConfig {
        self.model.config()
    }
    fn device(&self) -> &'static str {
        LanguageModel::device(&self.model)
    }
    fn new_sequence(&mut self) -> SeqId {
        self.model.new_sequence()
    }
    fn fork_sequence(&mut self, source: SeqId) -> Option<SeqId> {
        self.model.fork_sequence(source)
    }
    fn free_sequence(&mut self, id: SeqId) {
        self.model.free_sequence(id)
    }
    fn sequence_len(&self, id: SeqId) -> Option<usize> {
        self.model.sequence_len(id)
    }
    fn forward(&mut self, batch: &[(SeqId, &[u32])]) -> amulet::Result<Vec<Vec<f32>>> {
        let mut rows = self.model.forward(batch)?;
        self.calls += 1;
        if self.calls >= self.bad {
            rows[0][7] = f32::NAN;
        }
        Ok(rows)
    }
}

#[test]
fn a_nan_logit_mid_answer_ends_the_request_at_that_step() {
    let bytes = fixture();
    let g = Gguf::parse(&bytes).unwrap();
    // Forward 1 is the prompt, 2 and 3 the first decode steps: step 1 hands out token 1 and
    // runs forward 2; step 2 runs forward 3, whose NaN ends the request there (the model
    // behind it is unusable, so step 2's token is not handed out either).
    let model = NanFrom { model: CpuModel::load(&g, &bytes[..], |_, _| {}).unwrap(), calls: 0, bad: 3 };
    let mut e = Engine::with_model(&g, Box::new(model)).unwrap();
    let mut tokens = 0;
    let err = e
        .generate(&request(), &mut |_| {
            tokens += 1;
            true
        })
        .unwrap_err();
    assert!(matches!(err, AmuletError::Compute(ref m) if m.contains("decode step 2") && m.contains("NaN")), "{err}");
    assert_eq!(tokens, 1);
}

#[test]
fn inconsistent_hyper_parameters_stop_the_load() {
    let bytes = fixture();
    for (key, value, says) in [
        ("llama.attention.layer_norm_rms_epsilon", MetaValue::F32(-1e-5), "layer_norm_rms_epsilon"),
        ("llama.rope.freq_base", MetaValue::F32(f32::NAN), "rope.freq_base"),
        ("llama.attention.head_count", MetaValue::U32(0), "zero"),
        ("llama.attention.head_count", MetaValue::U32(3), "not a multiple"),
        ("llama.block_count", MetaValue::U32(7), "block_count"),
        ("llama.context_length", MetaValue::U32(u32::MAX), "context_length"),
    ] {
        let mut g = Gguf::parse(&bytes).unwrap();
        g.metadata.insert(key.into(), value);
        let e = CpuModel::load(&g, &bytes[..], |_, _| {}).err().unwrap();
        assert!(matches!(e, AmuletError::BadModel(ref m) if m.contains(says)), "{key}: {e}");
    }
}
