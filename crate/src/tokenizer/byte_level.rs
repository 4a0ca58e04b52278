//! Byte-level BPE (`tokenizer.ggml.model` = `gpt2`: GPT-2, SmolLM2, Qwen, Llama 3...): every
//! byte is one of 256 alphabet characters and the file's merges join them. Text is first cut
//! by the split regex named by `tokenizer.ggml.pre`, GPT-2's by default.

use std::collections::HashSet;

use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{DecoderWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

use super::{
    bpe_model, parse_merges, tok_err, Model, Pipeline, TokenizerSpec, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED,
};
use crate::error::{AmuletError, Result};

const LLAMA3_SPLIT: &str = concat!(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);
const QWEN2_SPLIT: &str = concat!(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);
const QWEN35_SPLIT: &str = concat!(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}",
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);
const TEKKEN_SPLIT: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*",
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);
const GPT4O_SPLIT: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

/// The split regex a byte-level vocabulary was trained with, by llama.cpp's `tokenizer.ggml.pre`
/// name; `None` means GPT-2's, which `ByteLevel` applies itself. BPE only merges inside a
/// chunk, so the wrong regex gives different ids (`def f(x):`: `(`,`x` vs `(x`).
fn pre_split(pre: Option<&str>) -> Option<&'static str> {
    Some(match pre? {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2"
        | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3_SPLIT,
        "tekken" => TEKKEN_SPLIT,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2_SPLIT,
        "qwen35" => QWEN35_SPLIT,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O_SPLIT,
        _ => return None,
    })
}

/// GPT-2's byte-to-character table (`bytes_to_unicode`).
pub(super) fn byte_level_chars() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            extra += 1;
            char::from_u32(255 + extra).unwrap_or('\u{FFFD}')
        };
    }
    table
}

pub(super) fn model(spec: &mut TokenizerSpec, reference: bool) -> Result<Model> {
    // llama.cpp stores a token whose bytes are not valid UTF-8 raw (Phi-4 has U+FFFD
    // where its merges spell `ï¿½`): respell it in the byte-level alphabet the merges
    // use. Control and user-defined tokens keep their text: they are matched as written.
    let table = byte_level_chars();
    let alphabet: HashSet<char> = table.iter().copied().collect();
    let (mut pieces, merges) = spec.take_text();
    for (id, p) in pieces.iter_mut().enumerate() {
        let verbatim = matches!(spec.token_type(id), TOKEN_TYPE_CONTROL | TOKEN_TYPE_USER_DEFINED);
        if !verbatim && !p.chars().all(|c| alphabet.contains(&c)) {
            *p = p.bytes().map(|b| table[b as usize]).collect();
        }
    }
    let merges = parse_merges(merges.ok_or_else(|| {
        AmuletError::BadModel("a gpt2 (byte-level BPE) tokenizer needs tokenizer.ggml.merges".into())
    })?)?;
    let mut tokenizer = Pipeline::new(bpe_model(&pieces, Some(merges), None, spec.unk_id, false, reference)?);
    let pre = match pre_split(spec.pre.as_deref()) {
        None => PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, true)),
        Some(regex) => {
            let split = Split::new(SplitPattern::Regex(regex.into()), SplitDelimiterBehavior::Isolated, false)
                .map_err(tok_err)?;
            PreTokenizerWrapper::Sequence(PreTokenizerSequence::new(vec![
                PreTokenizerWrapper::Split(split),
                PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
            ]))
        }
    };
    tokenizer.with_pre_tokenizer(Some(pre));
    tokenizer.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::new(false, false, true))));
    // No byte fallback: every byte is an alphabet character the decoder maps back on its own.
    let byte_piece = vec![false; pieces.len()];
    Ok(Model { tokenizer, pieces, byte_piece })
}

#[cfg(test)]
mod tests {
    use super::super::test_vocab::byte_level;

    #[test]
    fn byte_level_encode_decode() {
        let tok = byte_level();
        let hello = tok.token_id("hello").unwrap();
        let (bos, eos) = (tok.bos_id().unwrap(), tok.eos_id().unwrap());
        assert_eq!(tok.encode("hello", false).unwrap(), vec![hello]);
        // Control tokens are recognised in text and skipped on request.
        let ids = tok.encode("<|im_start|>hello<|im_end|>", false).unwrap();
        assert_eq!(ids, vec![bos, hello, eos]);
        assert_eq!(tok.decode(&ids, false).unwrap(), "<|im_start|>hello<|im_end|>");
        assert_eq!(tok.decode(&ids, true).unwrap(), "hello");
        assert!(tok.is_special(bos) && !tok.is_special(hello));
        let text = "hello wörld 😀 中";
        assert_eq!(tok.decode(&tok.encode(text, false).unwrap(), false).unwrap(), text);
        assert_eq!(tok.token_text(tok.token_id("Ġw").unwrap()).unwrap(), " w");
        assert_eq!(tok.token_piece(hello).unwrap(), "hello");
    }
}
