//! What a tokenizer is built from: the GGUF's `tokenizer.ggml.*` keys, checked once, here.

use std::ops::Deref;

use crate::error::{AmuletError, Result};

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`).
pub const TOKEN_TYPE_NORMAL: i32 = 1;
pub const TOKEN_TYPE_UNKNOWN: i32 = 2;
pub const TOKEN_TYPE_CONTROL: i32 = 3;
pub const TOKEN_TYPE_USER_DEFINED: i32 = 4;
pub const TOKEN_TYPE_UNUSED: i32 = 5;
pub const TOKEN_TYPE_BYTE: i32 = 6;

/// Everything the GGUF metadata says about the tokenizer, decoupled from the file format so a
/// tokenizer can also be built from other sources (tests, hand-made vocabularies). Unchecked:
/// [`TokenizerSpec::new`] checks it.
#[derive(Clone, Debug, Default)]
pub struct TokenizerFields {
    /// `tokenizer.ggml.model`: "gpt2" (byte-level BPE) or "llama" (SentencePiece).
    pub model: String,
    /// `tokenizer.ggml.pre`: llama.cpp's name for the split regex of byte-level vocabularies.
    pub pre: Option<String>,
    /// `general.architecture`: tells Gemma's SentencePiece export from the others.
    pub arch: Option<String>,
    pub tokens: Vec<String>,
    pub scores: Option<Vec<f32>>,
    pub token_types: Option<Vec<i32>>,
    /// "left right" pairs, highest priority first.
    pub merges: Option<Vec<String>>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub pad_id: Option<u32>,
    /// Whether `encode(.., add_special_tokens = true)` prepends bos / appends eos (llama.cpp's
    /// meaning of `tokenizer.ggml.add_bos_token` / `add_eos_token`).
    pub add_bos: bool,
    pub add_eos: bool,
    /// `tokenizer.ggml.add_space_prefix`; `None` means the SentencePiece default (true).
    pub add_space_prefix: Option<bool>,
}

/// Tokenizer fields whose lengths and ids agree with the vocabulary. Built only by `new` and
/// `from_gguf`, so the tokenizer builders index with its ids without checking again.
#[derive(Clone, Debug)]
pub struct TokenizerSpec(TokenizerFields);

impl Deref for TokenizerSpec {
    type Target = TokenizerFields;
    fn deref(&self) -> &TokenizerFields {
        &self.0
    }
}

impl TokenizerSpec {
    /// Checks hand-made fields; a mismatch is a `Tokenizer` error.
    pub fn new(fields: TokenizerFields) -> Result<Self> {
        Self::check(fields, AmuletError::Tokenizer)
    }

    /// Reads the `tokenizer.ggml.*` keys, checking their lengths and ids against the vocabulary
    /// so a corrupt file is reported here (as a `BadModel` error) rather than as a wrong
    /// tokenization later.
    pub fn from_gguf(g: &crate::gguf::Gguf) -> Result<Self> {
        let model = g.get_str("tokenizer.ggml.model")?.to_string();
        let tokens = g.str_array("tokenizer.ggml.tokens")?;
        let opt_array = |key: &str| g.get(key).is_some();
        let scores =
            if opt_array("tokenizer.ggml.scores") { Some(g.f32_array("tokenizer.ggml.scores")?) } else { None };
        let token_types =
            if opt_array("tokenizer.ggml.token_type") { Some(g.i32_array("tokenizer.ggml.token_type")?) } else { None };
        let merges =
            if opt_array("tokenizer.ggml.merges") { Some(g.str_array("tokenizer.ggml.merges")?) } else { None };
        let n = tokens.len();
        // Converters often write a placeholder (-1, or an id past the vocabulary) for an
        // unused pad/unk token; that must not make the model unloadable.
        let lenient_id = |key: &str| -> Option<u32> { g.opt_u32(key).ok().flatten().filter(|&i| (i as usize) < n) };
        // llama.cpp's defaults: SentencePiece vocabularies add bos, byte-level BPE ones do not.
        let add_bos_default = model == "llama";
        let fields = TokenizerFields {
            pre: g.opt_str("tokenizer.ggml.pre").map(str::to_string),
            arch: g.opt_str("general.architecture").map(str::to_string),
            bos_id: g.opt_u32("tokenizer.ggml.bos_token_id")?,
            eos_id: g.opt_u32("tokenizer.ggml.eos_token_id")?,
            unk_id: lenient_id("tokenizer.ggml.unknown_token_id"),
            pad_id: lenient_id("tokenizer.ggml.padding_token_id"),
            add_bos: g.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(add_bos_default),
            add_eos: g.opt_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false),
            add_space_prefix: g.opt_bool("tokenizer.ggml.add_space_prefix")?,
            model,
            tokens,
            scores,
            token_types,
            merges,
        };
        Self::check(fields, AmuletError::BadModel)
    }

    /// The one check; messages name the GGUF keys the fields stand for.
    fn check(f: TokenizerFields, error: fn(String) -> AmuletError) -> Result<Self> {
        let n = f.tokens.len();
        if n == 0 {
            return Err(error("tokenizer.ggml.tokens is empty".into()));
        }
        if n > u32::MAX as usize {
            return Err(error(format!("tokenizer.ggml.tokens has {n} tokens, more than 32-bit ids can name")));
        }
        let lens = [("scores", f.scores.as_ref().map(Vec::len)), ("token_type", f.token_types.as_ref().map(Vec::len))];
        for (key, len) in lens {
            if let Some(len) = len.filter(|&len| len != n) {
                return Err(error(format!("tokenizer.ggml.{key} has {len} entries for {n} tokens")));
            }
        }
        let ids = [
            ("bos_token_id", f.bos_id),
            ("eos_token_id", f.eos_id),
            ("unknown_token_id", f.unk_id),
            ("padding_token_id", f.pad_id),
        ];
        for (key, id) in ids {
            if let Some(i) = id.filter(|&i| i as usize >= n) {
                return Err(error(format!("tokenizer.ggml.{key} is {i}, but the vocabulary has {n} tokens")));
            }
        }
        Ok(TokenizerSpec(f))
    }

    /// Moves the vocabulary and merges out, leaving both empty: a build consumes them instead
    /// of copying them (with their copies, a build's peak was twice what the tokenizer keeps).
    /// Only the builders call it, once, after reading what they need of them (`from_spec` reads
    /// the vocabulary's size first).
    pub(super) fn take_text(&mut self) -> (Vec<String>, Option<Vec<String>>) {
        (std::mem::take(&mut self.0.tokens), self.0.merges.take())
    }

    pub(super) fn token_type(&self, id: usize) -> i32 {
        self.token_types.as_ref().map_or(TOKEN_TYPE_NORMAL, |t| t[id])
    }
}
