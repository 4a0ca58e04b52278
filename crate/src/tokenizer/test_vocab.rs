//! Small hand-made vocabularies, one per tokenizer model, for the unit tests.

use super::byte_level::byte_level_chars;
use super::{
    TextTokenizer, TokenizerFields, TokenizerSpec, TOKEN_TYPE_BYTE, TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL,
    TOKEN_TYPE_UNKNOWN,
};

/// A byte-level vocabulary: the 256 alphabet characters, a few merges, two control tokens.
pub(super) fn byte_level() -> TextTokenizer {
    let mut tokens: Vec<String> = byte_level_chars().iter().map(|c| c.to_string()).collect();
    let merged = ["he", "ll", "hell", "hello", "Ġw", "Ġwo"];
    tokens.extend(merged.iter().map(|s| s.to_string()));
    tokens.push("<|im_start|>".into());
    tokens.push("<|im_end|>".into());
    let n = tokens.len();
    let mut types = vec![TOKEN_TYPE_NORMAL; n];
    types[n - 2] = TOKEN_TYPE_CONTROL;
    types[n - 1] = TOKEN_TYPE_CONTROL;
    let fields = TokenizerFields {
        model: "gpt2".into(),
        tokens,
        token_types: Some(types),
        merges: Some(["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o"].iter().map(|s| s.to_string()).collect()),
        bos_id: Some(n as u32 - 2),
        eos_id: Some(n as u32 - 1),
        ..Default::default()
    };
    TextTokenizer::from_spec(TokenizerSpec::new(fields).unwrap()).unwrap()
}

/// A SentencePiece vocabulary with byte fallback and a `▁` prefix, merges from scores.
pub(super) fn sentencepiece() -> TextTokenizer {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_CONTROL, TOKEN_TYPE_CONTROL];
    let mut scores = vec![0.0, 0.0, 0.0];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(TOKEN_TYPE_BYTE);
        scores.push(0.0);
    }
    for (t, s) in [("▁", -1.0), ("a", -2.0), ("b", -3.0), ("▁a", -4.0), ("ab", -5.0), ("▁ab", -6.0)] {
        tokens.push(t.into());
        types.push(TOKEN_TYPE_NORMAL);
        scores.push(s);
    }
    let fields = TokenizerFields {
        model: "llama".into(),
        arch: Some("llama".into()),
        tokens,
        scores: Some(scores),
        token_types: Some(types),
        bos_id: Some(1),
        eos_id: Some(2),
        unk_id: Some(0),
        add_bos: true,
        ..Default::default()
    };
    TextTokenizer::from_spec(TokenizerSpec::new(fields).unwrap()).unwrap()
}
