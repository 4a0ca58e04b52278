//! The engine on the real default model (SmolLM2-135M-Instruct Q4_1).

mod common;

use amulet::align::{AmuletParams, Game, Method};
use amulet::chat_template::ChatMessage;
use amulet::engine::{Engine, FinishReason, GenerateRequest};
use amulet::prompt::Placement;
use amulet::sample::SamplingParams;
use amulet::AmuletError;
use common::*;

fn engine() -> Engine {
    let bytes = std::fs::read(model_path(SMOLLM2)).unwrap();
    Engine::load(&bytes, |_, _| {}).unwrap()
}

const Q: &str = "How can I improve my eating habits without compromising on taste?";

fn request(methods: Vec<Method>, max_tokens: usize) -> GenerateRequest {
    let mut r = GenerateRequest::new(Q);
    r.preference = Some("concise".into());
    r.methods = methods;
    r.max_tokens = max_tokens;
    r
}

#[test]
fn info_comes_from_the_gguf() {
    let e = engine();
    let i = e.info();
    assert_eq!(i.architecture, "llama");
    assert_eq!(i.quantization, "Q4_1");
    assert_eq!(i.context_length, 8192);
    assert_eq!(i.vocab_size, 49152);
    assert_eq!(i.device, "cpu");
}

#[test]
fn amulet_differs_from_base_and_streams_what_it_returns() {
    let mut e = engine();
    let mut streamed = String::new();
    let amulet = e
        .generate(&request(vec![Method::default()], 40), &mut |ev| {
            streamed.push_str(&ev.text);
            true
        })
        .unwrap();
    let base = e.generate(&request(vec![Method::Base], 40), &mut |_| true).unwrap();
    let (a, b) = (&amulet.completions[0], &base.completions[0]);
    assert_eq!(streamed, a.text, "deltas must concatenate to the final text");
    assert!(!a.text.trim().is_empty());
    assert_ne!(a.tokens, b.tokens, "the preference must change the answer");
    assert!(amulet.prompt_tokens_pref > amulet.prompt_tokens_base);
}

/// The first Personal-set questions (data/prompts/personal.jsonl, ids 0-7).
const PERSONAL: [&str; 8] = [
    "What is the best mobile phone brand currently?",
    "How can you ensure proper nutrition for a housecat?",
    "What are the key elements of a captivating novel?",
    "How can educators integrate technology effectively in the classroom?",
    "How to create a cozy and functional small living space?",
    "What are the best exercises to incorporate into a quick morning workout routine?",
    "How can I improve my eating habits without compromising on taste?",
    "What are effective methods for learning a new language on my own?",
];

#[test]
fn amulet_concise_answers_are_shorter_than_base_ones() {
    // Direction, not only difference: over the same questions Amulet towards "concise"
    // writes fewer words than plain decoding (greedy, so the outcome is fixed for a model).
    let mut e = engine();
    let (mut base_words, mut amulet_words) = (0, 0);
    for q in PERSONAL {
        let mut r = GenerateRequest::new(q);
        r.preference = Some("concise".into());
        r.methods = vec![Method::Base, Method::default()];
        r.max_tokens = 96;
        let out = e.generate(&r, &mut |_| true).unwrap();
        base_words += out.completions[0].text.split_whitespace().count();
        amulet_words += out.completions[1].text.split_whitespace().count();
    }
    assert!(amulet_words < base_words, "amulet {amulet_words} words vs base {base_words}");
}

fn chat(turns: &[(&str, &str)], question: &str) -> GenerateRequest {
    let mut r = GenerateRequest::new(question);
    let mut messages = Vec::new();
    for (q, a) in turns {
        messages.push(ChatMessage::new("user", *q));
        messages.push(ChatMessage::new("assistant", *a));
    }
    messages.push(ChatMessage::new("user", question));
    r.conversation.messages = messages;
    r.preference = Some("concise".into());
    r.max_tokens = 24;
    r
}

#[test]
fn a_conversation_reuses_its_caches_and_answers_as_a_fresh_engine_does() {
    let mut e = engine();
    let q1 = "How can I improve my eating habits without compromising on taste?";
    let first = e.generate(&chat(&[], q1), &mut |_| true).unwrap();
    assert_eq!(first.timings.cached_tokens_base + first.timings.cached_tokens_pref, 0);
    let a1 = first.completions[0].text.clone();
    let (kept, n) = e.prefix_cache_usage();
    assert!(kept > 0 && n == 2, "both contexts kept: {n} sequences, {kept} bytes");

    let q2 = "And what should I drink?";
    let second = e.generate(&chat(&[(q1, &a1)], q2), &mut |_| true).unwrap();
    let t = &second.timings;
    assert!(t.cached_tokens_base > 20 && t.cached_tokens_pref > 20, "{t:?}");
    assert!(t.prefill_tokens < second.prompt_tokens_base / 2, "only the new turn is read: {t:?}");

    // The same conversation on an engine that never saw it: the same greedy tokens.
    let fresh = engine().generate(&chat(&[(q1, &a1)], q2), &mut |_| true).unwrap();
    assert_eq!(fresh.timings.cached_tokens_base, 0);
    assert_eq!(second.completions[0].tokens, fresh.completions[0].tokens);

    // A budget that holds one context's sequence, not both: the preference context's is kept
    // (put last), and the next turn reuses it there; the base context, whose prompt shares
    // only the first tokens with it, does not take it away.
    let mut small = engine();
    small.set_prefix_budget(kept * 3 / 4);
    small.generate(&chat(&[], q1), &mut |_| true).unwrap();
    assert_eq!(small.prefix_cache_usage().1, 1);
    let t = small.generate(&chat(&[(q1, &a1)], q2), &mut |_| true).unwrap().timings;
    assert!(t.cached_tokens_pref > 20 && t.cached_tokens_base == 0, "{t:?}");

    // A budget of zero keeps nothing.
    e.set_prefix_budget(0);
    assert_eq!(e.prefix_cache_usage(), (0, 0));
    let third = e.generate(&chat(&[(q1, &a1)], q2), &mut |_| true).unwrap();
    assert_eq!(third.timings.cached_tokens_base, 0);
    assert_eq!(third.completions[0].tokens, fresh.completions[0].tokens);
}

#[test]
fn a_conversation_too_long_for_the_context_drops_its_oldest_turns_or_fails_as_asked() {
    use amulet::engine::ContextOverflow;
    use amulet::fixture::{write_gguf, FixtureSpec};
    // A tiny model with a 2,048-token context and a byte-level vocabulary: a few long turns fill it.
    let bytes =
        write_gguf(&FixtureSpec::tiny(amulet::model::Arch::Llama, candle_core::quantized::GgmlDType::Q8_0, 3)).unwrap();
    let mut e = Engine::load(&bytes, |_, _| {}).unwrap();
    let long = "many words about the harbour and its ferries ".repeat(12);
    let turns: Vec<(String, String)> = (0..6).map(|i| (format!("turn {i}: {long}"), long.clone())).collect();
    let turns: Vec<(&str, &str)> = turns.iter().map(|(q, a)| (q.as_str(), a.as_str())).collect();
    let mut r = chat(&turns, "and now?");
    r.max_tokens = 64;
    r.ignore_eos = true;
    let err = e.generate(&r, &mut |_| true).unwrap_err();
    assert!(matches!(err, AmuletError::ContextOverflow(ref m) if m.contains("truncate-oldest")), "{err}");
    r.context_overflow = ContextOverflow::TruncateOldest;
    let out = e.generate(&r, &mut |_| true).unwrap();
    assert!(out.dropped_turns > 0 && out.dropped_turns < 6, "{} turns dropped", out.dropped_turns);
    assert!(out.prompt_tokens_pref + 64 <= e.info().context_length);
    assert_eq!(out.completions[0].tokens.len(), 64);
}

#[test]
fn compare_mode_batch_equals_separate_runs() {
    let mut e = engine();
    let methods = vec![Method::Base, Method::Pref, Method::default()];
    let together = e.generate(&request(methods.clone(), 24), &mut |_| true).unwrap();
    for (i, m) in methods.into_iter().enumerate() {
        let alone = e.generate(&request(vec![m], 24), &mut |_| true).unwrap();
        assert_eq!(together.completions[i].tokens, alone.completions[0].tokens, "method {}", m.name());
    }
    let texts: Vec<_> = together.completions.iter().map(|c| c.text.clone()).collect();
    assert_ne!(texts[0], texts[2]);
}

#[test]
fn iterative_game_and_closed_form_choose_the_same_tokens() {
    let mut e = engine();
    let p = AmuletParams::default();
    let closed =
        e.generate(&request(vec![Method::Amulet { params: p, game: Game::ClosedForm }], 12), &mut |_| true).unwrap();
    let iter =
        e.generate(&request(vec![Method::Amulet { params: p, game: Game::Iterative }], 12), &mut |_| true).unwrap();
    assert_eq!(closed.completions[0].tokens, iter.completions[0].tokens);
}

#[test]
fn abort_stops_within_one_token_and_the_engine_stays_usable() {
    let mut e = engine();
    let mut n = 0;
    let out = e
        .generate(&request(vec![Method::default()], 50), &mut |_| {
            n += 1;
            n < 3
        })
        .unwrap();
    assert_eq!(out.completions[0].finish_reason, FinishReason::Aborted);
    assert_eq!(out.completions[0].tokens.len(), 3);
    let again = e.generate(&request(vec![Method::default()], 3), &mut |_| true).unwrap();
    assert_eq!(again.completions[0].tokens.len(), 3);
    assert_eq!(&again.completions[0].tokens[..], &out.completions[0].tokens[..], "greedy restart after an abort");
}

#[test]
fn seeded_sampling_is_reproducible() {
    let mut e = engine();
    let mut r = request(vec![Method::default()], 16);
    r.sampling = SamplingParams { temperature: 0.9, top_k: Some(40), top_p: Some(0.95), seed: 11 };
    let a = e.generate(&r, &mut |_| true).unwrap();
    let b = e.generate(&r, &mut |_| true).unwrap();
    assert_eq!(a.completions[0].tokens, b.completions[0].tokens);
    r.sampling.seed = 12;
    let c = e.generate(&r, &mut |_| true).unwrap();
    assert_ne!(a.completions[0].tokens, c.completions[0].tokens);
}

#[test]
fn top_logprobs_show_all_three_distributions() {
    let mut e = engine();
    let mut r = request(vec![Method::default()], 4);
    r.top_logprobs = 5;
    let out = e
        .generate(&r, &mut |ev| {
            assert!(ev.logprobs.is_some());
            true
        })
        .unwrap();
    let c = &out.completions[0];
    assert_eq!(c.steps.len(), 4);
    for (step, &tok) in c.steps.iter().zip(&c.tokens) {
        assert_eq!(step.combined.len(), 5);
        assert_eq!(step.combined[0].id, tok, "greedy picks the top combined candidate");
        assert_eq!(step.base.as_ref().unwrap().len(), 5);
        assert_eq!(step.pref.as_ref().unwrap().len(), 5);
        assert!(step.combined.windows(2).all(|w| w[0].prob >= w[1].prob));
    }
}

#[test]
fn stop_strings_and_user_placement() {
    let mut e = engine();
    let mut r = request(vec![Method::Base], 60);
    let full = e.generate(&r, &mut |_| true).unwrap().completions.remove(0);
    let word = full.text.split_whitespace().nth(3).unwrap().to_string();
    r.stop = vec![word.clone()];
    let cut = e.generate(&r, &mut |_| true).unwrap().completions.remove(0);
    assert_eq!(cut.finish_reason, FinishReason::Stop);
    assert!(!cut.text.contains(&word), "{:?} still contains {word:?}", cut.text);
    assert!(full.text.starts_with(&cut.text));

    let mut u = request(vec![Method::default()], 8);
    u.placement = Placement::User;
    let (_, pref_user) = e.contexts(&u).unwrap();
    u.placement = Placement::System;
    let (_, pref_sys) = e.contexts(&u).unwrap();
    assert_ne!(pref_user, pref_sys);
}

#[test]
fn bad_requests_are_typed_errors() {
    let mut e = engine();
    let mut r = request(vec![Method::default()], 8);
    r.preference = Some("  ".into());
    assert!(
        matches!(e.generate(&r, &mut |_| true), Err(AmuletError::BadOption { ref option, .. }) if option == "preference")
    );
    r.preference = None;
    assert!(
        matches!(e.generate(&r, &mut |_| true), Err(AmuletError::BadOption { ref option, .. }) if option == "preference")
    );
    let mut r = request(vec![Method::default()], 0);
    assert!(
        matches!(e.generate(&r, &mut |_| true), Err(AmuletError::BadOption { ref option, .. }) if option == "max_tokens")
    );
    r.max_tokens = 4;
    r.methods =
        vec![Method::Amulet { params: AmuletParams { alpha: f64::NAN, ..Default::default() }, game: Game::ClosedForm }];
    assert!(
        matches!(e.generate(&r, &mut |_| true), Err(AmuletError::BadOption { ref option, .. }) if option == "alpha")
    );
    r.methods = vec![Method::default()];
    r.sampling.temperature = -1.0;
    assert!(e.generate(&r, &mut |_| true).is_err());
    // The engine still works after every rejected request.
    r.sampling = SamplingParams::default();
    assert_eq!(e.generate(&r, &mut |_| true).unwrap().completions[0].tokens.len(), 4);
}

#[test]
fn damaged_real_files_name_what_is_wrong() {
    let bytes = std::fs::read(model_path(SMOLLM2)).unwrap();
    let e = Engine::load(&bytes[..bytes.len() - 1000], |_, _| {}).err().unwrap();
    assert!(matches!(e, AmuletError::BadModel(ref m) if m.contains("truncated")), "{e}");
    let e = Engine::load(&bytes[..5_000_000], |_, _| {}).err().unwrap();
    assert!(e.to_string().contains("tensor `"), "{e}");
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert!(Engine::load(&bad, |_, _| {}).err().unwrap().to_string().contains("magic"));
}
