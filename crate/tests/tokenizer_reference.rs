//! End-to-end: tokenizers and chat templates built from the real GGUF files must reproduce the
//! Hugging Face reference (transformers' tokenizer loaded from the same GGUF) exactly.
//! The reference outputs are vendored in `tests/data/tokenizer` (see its README); missing model
//! files or reference data fail the test. The Qwen2.5-Coder 1.5B runs only with
//! `AMULET_LARGE=1` (it is not fetched by `./build.sh test`).

mod common;

use std::path::{Path, PathBuf};

use amulet::chat_template::{ChatMessage, ChatTemplate};
use amulet::gguf::Gguf;
use amulet::tokenizer::{StreamDecoder, TextTokenizer, TokenizerSpec};
use serde_json::Value;

const SMOLLM: (&str, &str) = (common::SMOLLM2, "smollm2-135m-instruct-q4_1.json");
const GEMMA: (&str, &str) = (common::GEMMA3, "gemma-3-270m-q4_k_m.json");
const QWEN05: (&str, &str) = (common::QWEN05, "qwen2.5-coder-0.5b-instruct-q4_k_m.json");
/// The 1.5B has the 0.5B's tokenizer (vocabulary, merges, types, special ids) and the same
/// template but for the text of its tool-call instructions (`{{` where the 0.5B has `{`), a branch
/// only rendered with tools: the reference made from it is the 0.5B's, `model_file` aside.
const QWEN15_REFERENCE: &str = QWEN05.1;

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The vendored reference file, or the one in `AMULET_TOKENIZER_REF_DIR` when that is set.
fn reference_path(name: &str) -> PathBuf {
    let dir = match std::env::var("AMULET_TOKENIZER_REF_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => manifest().join("../tests/data/tokenizer"),
    };
    dir.join(name)
}

struct Loaded {
    gguf: Gguf,
    tok: TextTokenizer,
    reference: Value,
}

fn load((model, reference): (&str, &str)) -> Option<Loaded> {
    Some(load_path(&manifest().join("../models/cache").join(model), reference))
}

fn load_path(model_path: &Path, reference: &str) -> Loaded {
    // Missing inputs fail the test: a reference check that skips itself proves nothing.
    let Ok(bytes) = std::fs::read(model_path) else {
        panic!("missing prerequisite: {} (run models/fetch.sh; ./build.sh test does)", model_path.display());
    };
    let ref_path = reference_path(reference);
    let Ok(ref_text) = std::fs::read_to_string(&ref_path) else {
        panic!("missing prerequisite: {} (the reference data in tests/data/tokenizer)", ref_path.display());
    };
    let gguf = Gguf::parse(&bytes).expect("parse gguf");
    let spec = TokenizerSpec::from_gguf(&gguf).expect("tokenizer spec");
    let tok = TextTokenizer::from_spec(spec).expect("tokenizer");
    let reference: Value = serde_json::from_str(&ref_text).unwrap();
    Loaded { gguf, tok, reference }
}

fn ids_of(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn check_cases(l: &Loaded) {
    let cases = l.reference["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 39);
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want = ids_of(&case["ids"]);
        let got = l.tok.encode(text, false).unwrap();
        if got != want {
            failures.push(format!("encode {text:?}: got {got:?}, want {want:?}"));
        }
        let decoded = l.tok.decode(&want, false).unwrap();
        if decoded != case["decoded"].as_str().unwrap() {
            failures.push(format!("decode {want:?}: got {decoded:?}, want {:?}", case["decoded"]));
        }
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));

    let special = &l.reference["special"];
    assert_eq!(l.tok.bos_id(), Some(special["bos_id"].as_u64().unwrap() as u32));
    assert_eq!(l.tok.eos_id(), Some(special["eos_id"].as_u64().unwrap() as u32));
    assert_eq!(l.tok.bos_token().as_deref(), special["bos"].as_str());
    assert_eq!(l.tok.eos_token().as_deref(), special["eos"].as_str());
}

fn check_chat(l: &Loaded) {
    let template = ChatTemplate::from_gguf(&l.gguf, &l.tok).unwrap();
    for chat in l.reference["chat"].as_array().unwrap() {
        let messages: Vec<ChatMessage> = serde_json::from_value(chat["messages"].clone()).unwrap();
        let agp = chat["add_generation_prompt"].as_bool().unwrap();
        let rendered = template.render(&messages, agp).unwrap();
        assert_eq!(rendered, chat["rendered"].as_str().unwrap());
        assert_eq!(l.tok.encode(&rendered, false).unwrap(), ids_of(&chat["ids"]), "{rendered:?}");
    }
}

/// Streams `ids` one by one; the deltas must concatenate to `decode(ids)`.
fn check_stream(tok: &TextTokenizer, ids: &[u32], skip_special: bool) {
    let want = tok.decode(ids, skip_special).unwrap();
    let mut sd = StreamDecoder::new(tok, skip_special);
    let mut got = String::new();
    for &id in ids {
        let delta = sd.push(id).unwrap();
        // A delta never shows a replacement character the full text does not have.
        if delta.contains('\u{FFFD}') {
            assert!(want.contains('\u{FFFD}'), "delta {delta:?} of {want:?}");
        }
        got.push_str(&delta);
    }
    got.push_str(&sd.finish().unwrap());
    assert_eq!(got, want, "stream of {ids:?}");
}

fn check_streams(l: &Loaded) {
    for case in l.reference["cases"].as_array().unwrap() {
        let ids = ids_of(&case["ids"]);
        check_stream(&l.tok, &ids, false);
        check_stream(&l.tok, &ids, true);
    }
    for chat in l.reference["chat"].as_array().unwrap() {
        let ids = ids_of(&chat["ids"]);
        check_stream(&l.tok, &ids, false);
        check_stream(&l.tok, &ids, true);
    }
    // Arbitrary id sequences (partial characters, stray continuation bytes, specials) keep the
    // invariant too: a model can emit anything.
    let n = l.tok.vocab_size() as u64;
    let byte_ids: Vec<u32> = (0..=255u8).filter_map(|b| l.tok.token_id(&format!("<0x{b:02X}>"))).collect();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    for round in 0..300 {
        let len = 1 + (next() % 12) as usize;
        let ids: Vec<u32> = (0..len)
            .map(|_| match next() % 4 {
                0 if !byte_ids.is_empty() => byte_ids[(next() % byte_ids.len() as u64) as usize],
                1 => (next() % 300) as u32,
                _ => (next() % n) as u32,
            })
            .collect();
        check_stream(&l.tok, &ids, round % 2 == 0);
    }
}

fn check_errors(l: &Loaded) {
    let n = l.tok.vocab_size() as u32;
    assert!(l.tok.decode(&[n], false).is_err());
    assert!(l.tok.token_text(u32::MAX).is_err());
    let mut sd = StreamDecoder::new(&l.tok, false);
    assert!(sd.push(n + 5).is_err());
    assert_eq!(l.tok.encode("", true).unwrap().len(), usize::from(l.tok.adds_special_tokens()));
}

#[test]
fn smollm2_matches_hf_reference() {
    let Some(l) = load(SMOLLM) else { return };
    assert_eq!(l.tok.vocab_size(), 49_152);
    check_cases(&l);
    check_chat(&l);
    check_errors(&l);
    // add_bos_token is false in this GGUF.
    assert_eq!(l.tok.encode("hello world", true).unwrap(), vec![28120, 905]);
    assert_eq!(l.tok.token_id("<|im_end|>"), Some(2));
    assert!(l.tok.is_special(2) && !l.tok.is_special(905));
    assert_eq!(l.tok.decode(&[1, 28120, 2], true).unwrap(), "hello");
    assert_eq!(l.tok.token_text(905).unwrap(), " world");
}

#[test]
fn smollm2_streaming() {
    let Some(l) = load(SMOLLM) else { return };
    check_streams(&l);
    // "😀" is four byte-level tokens' worth of bytes: nothing is shown until it is complete.
    let ids = l.tok.encode("a😀b", false).unwrap();
    let mut sd = StreamDecoder::new(&l.tok, false);
    let deltas: Vec<String> = ids.iter().map(|&id| sd.push(id).unwrap()).collect();
    assert!(deltas.iter().all(|d| !d.contains('\u{FFFD}')), "{deltas:?}");
    assert_eq!(deltas.concat() + &sd.finish().unwrap(), "a😀b");
    assert!(deltas.iter().any(|d| d.contains('😀')));
}

#[test]
fn gemma3_matches_hf_reference() {
    let Some(l) = load(GEMMA) else { return };
    assert_eq!(l.tok.vocab_size(), 262_144);
    check_cases(&l);
    check_chat(&l);
    check_errors(&l);
    // add_bos_token is true in this GGUF.
    assert_eq!(l.tok.encode("hello world", true).unwrap(), vec![2, 23391, 1902]);

    // No template in the base model: the Gemma turn fallback, with markers as single tokens.
    let template = ChatTemplate::from_gguf(&l.gguf, &l.tok).unwrap();
    assert!(template.is_fallback());
    let prompt =
        template.render(&[ChatMessage::new("system", "Be brief."), ChatMessage::new("user", "Hi")], true).unwrap();
    assert_eq!(prompt, "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n");
    let ids = l.tok.encode(&prompt, false).unwrap();
    let (bos, sot, eot) = (2, l.tok.token_id("<start_of_turn>").unwrap(), l.tok.token_id("<end_of_turn>").unwrap());
    assert_eq!((sot, eot), (105, 106));
    assert_eq!(ids.iter().filter(|&&i| i == bos).count(), 1);
    assert_eq!(ids[0..2], [bos, sot]);
    assert_eq!(ids.iter().filter(|&&i| i == sot).count(), 2);
    assert_eq!(ids.iter().filter(|&&i| i == eot).count(), 1);
    assert_eq!(l.tok.decode(&ids, false).unwrap(), prompt);
    assert_eq!(l.tok.decode(&ids, true).unwrap(), "user\nBe brief.\n\nHi\nmodel\n");
}

#[test]
fn gemma3_streaming() {
    let Some(l) = load(GEMMA) else { return };
    check_streams(&l);
    // Byte-fallback characters (𝔘 is <0xF0><0x9D><0x94><0x98>) appear whole, never as U+FFFD.
    let text = "free 𝔘𝔫 ok";
    let ids = l.tok.encode(text, false).unwrap();
    assert!(ids.iter().any(|&i| l.tok.token_text(i).unwrap() == "\u{FFFD}"), "{ids:?}");
    let mut sd = StreamDecoder::new(&l.tok, false);
    let mut out = String::new();
    for &id in &ids {
        let d = sd.push(id).unwrap();
        assert!(!d.contains('\u{FFFD}'), "{d:?}");
        out.push_str(&d);
    }
    out.push_str(&sd.finish().unwrap());
    assert_eq!(out, text);
}

/// Qwen2.5-Coder (0.5B and 1.5B): byte-level BPE with the qwen2 split, ChatML with a default
/// system prompt.
fn check_qwen(l: &Loaded) {
    assert_eq!(l.tok.vocab_size(), 151_936);
    check_cases(l);
    check_chat(l);
    check_errors(l);
    // add_bos_token is false in these GGUFs (bos is <|endoftext|>, never written by the template).
    assert_eq!(l.tok.encode("hello world", true).unwrap(), vec![14990, 1879]);
    let (im_start, im_end) = (l.tok.token_id("<|im_start|>").unwrap(), l.tok.token_id("<|im_end|>").unwrap());
    assert_eq!((im_start, im_end), (151_644, 151_645));
    assert!(l.tok.is_special(im_start) && l.tok.is_special(im_end) && !l.tok.is_special(1879));
    assert_eq!(l.tok.decode(&[im_start, 14990, 1879, im_end], true).unwrap(), "hello world");
    // Beyond the reference file, what transformers 5.25 gives for the two other token types:
    // <tool_call>/</tool_call> are user-defined (one token in raw text, kept by skip_special),
    // the 271 unused [PADn] entries are neither matched in text nor skipped.
    let ids = l.tok.encode("x<tool_call>y</tool_call>", false).unwrap();
    assert_eq!(ids, vec![87, 151_657, 88, 151_658]);
    assert!(!l.tok.is_special(151_657));
    assert_eq!(l.tok.decode(&[151_657, 14990, im_end, 151_665], true).unwrap(), "<tool_call>hello[PAD151665]");
    assert_eq!(l.tok.encode("[PAD151665]", false).unwrap(), vec![42347, 1808, 16, 20, 16, 21, 21, 20, 60]);
    assert_eq!(l.tok.encode("<|fim_prefix|>a", false).unwrap(), vec![151_659, 64]);
    let template = ChatTemplate::from_gguf(&l.gguf, &l.tok).unwrap();
    assert!(!template.is_fallback());
}

#[test]
fn qwen05_matches_hf_reference() {
    let Some(l) = load(QWEN05) else { return };
    check_qwen(&l);
}

#[test]
fn qwen05_streaming() {
    let Some(l) = load(QWEN05) else { return };
    check_streams(&l);
}

/// Opt-in (`AMULET_LARGE=1`): the 1.5B file against the same reference.
#[test]
fn qwen15_matches_hf_reference() {
    let Some(path) = common::large_model_path(common::QWEN15, common::QWEN15_ID) else { return };
    let l = load_path(&path, QWEN15_REFERENCE);
    check_qwen(&l);
    check_streams(&l);
}

/// Seeded text that mixes what tokenizers split differently: words in several scripts, runs of
/// spaces, tabs and newlines, digits, code, emoji, byte-fallback characters, markup and the
/// vocabulary's own control tokens written in the text.
fn mixed_text(seed: u64, extra: &[&str]) -> Vec<String> {
    const FRAGMENTS: &[&str] = &[
        "the",
        " the",
        "The",
        " quick",
        "brown",
        " fox",
        "'s",
        "’ll",
        " don't",
        "  ",
        "   ",
        "\t",
        "\n",
        "\n\n",
        " \n ",
        "é",
        "naïve",
        "中文",
        "日本語のテキスト",
        "Привет",
        "мир",
        "مرحبا",
        "😀",
        "👍🏽",
        "𝔘𝔫",
        "\u{200b}",
        "123",
        "4567",
        "3.14159",
        "def f(x):",
        "    return x",
        "{\"a\": 1}",
        "<html>",
        "</div>",
        "▁",
        "Ġ",
        "ab",
        "abc",
        "ing",
        "tion",
        "  hello",
        "world!",
        "?!",
        "...",
        "—",
        "«",
        "»",
        "\u{feff}",
    ];
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    (0..400)
        .map(|_| {
            let n = 1 + next() % 40;
            (0..n)
                .map(|_| match next() % 10 {
                    0 if !extra.is_empty() => extra[next() % extra.len()].to_string(),
                    1 => char::from_u32(0x20 + (next() % 0x2fe0) as u32).map(String::from).unwrap_or_default(),
                    _ => FRAGMENTS[next() % FRAGMENTS.len()].to_string(),
                })
                .collect()
        })
        .collect()
}

/// Our BPE against `tokenizers`' own on the same vocabulary (the model file's): every id's
/// piece, and the ids and decoded text of the reference texts, the rendered chats and 400
/// mixed texts, with and without special tokens.
fn check_against_reference_bpe(l: &Loaded, controls: &[&str]) {
    let reference = TextTokenizer::reference_from_spec(TokenizerSpec::from_gguf(&l.gguf).unwrap()).unwrap();
    for id in 0..l.tok.vocab_size() as u32 {
        assert_eq!(l.tok.token_piece(id).ok(), reference.token_piece(id).ok(), "piece of {id}");
    }
    let mut texts: Vec<String> =
        l.reference["cases"].as_array().unwrap().iter().map(|c| c["text"].as_str().unwrap().into()).collect();
    texts.extend(l.reference["chat"].as_array().unwrap().iter().map(|c| c["rendered"].as_str().unwrap().to_string()));
    texts.extend(mixed_text(7, controls));
    for text in &texts {
        for special in [false, true] {
            let want = reference.encode(text, special).unwrap();
            assert_eq!(l.tok.encode(text, special).unwrap(), want, "{text:?}");
            assert_eq!(l.tok.decode(&want, !special).unwrap(), reference.decode(&want, !special).unwrap());
        }
    }
}

#[test]
fn smollm2_bpe_matches_tokenizers_bpe() {
    let Some(l) = load(SMOLLM) else { return };
    check_against_reference_bpe(&l, &["<|im_start|>", "<|im_end|>", "<|endoftext|>"]);
}

#[test]
fn gemma3_bpe_matches_tokenizers_bpe() {
    let Some(l) = load(GEMMA) else { return };
    check_against_reference_bpe(&l, &["<start_of_turn>", "<end_of_turn>", "<bos>", "<unused7>", "<img>"]);
}

#[test]
fn qwen05_bpe_matches_tokenizers_bpe() {
    let Some(l) = load(QWEN05) else { return };
    check_against_reference_bpe(&l, &["<|im_start|>", "<|im_end|>", "<tool_call>", "<|fim_prefix|>"]);
}
