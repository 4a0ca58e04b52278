//! Text tokenizer built from GGUF metadata alone (no tokenizer.json), reproducing what
//! Hugging Face transformers builds when it loads a tokenizer from a GGUF file, so prompts
//! tokenize to the ids the model was evaluated with and reference tests can compare exactly.
//!
//! The pipeline follows `tokenizer.ggml.model`, as in llama.cpp: `gpt2` is byte-level BPE
//! (`byte_level`), `llama` SentencePiece run as BPE with byte fallback (`sentencepiece`, with
//! Gemma's export as its own variant). Both start from a [`TokenizerSpec`], checked once when
//! it is built.
//!
//! Control tokens (GGUF token type 3) plus bos/eos/unk/pad are special added tokens: matched
//! whole in raw text (chat templates emit them) and dropped by `skip_special_tokens`.

mod bpe;
mod byte_level;
mod sentencepiece;
mod spec;
mod stream;
#[cfg(test)]
mod test_vocab;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use tokenizers::models::bpe::{BpeTrainer, Vocab as BpeVocab, BPE};
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Token, TokenizerImpl,
};

use crate::error::{AmuletError, Result};
pub use spec::{
    TokenizerFields, TokenizerSpec, TOKEN_TYPE_BYTE, TOKEN_TYPE_CONTROL, TOKEN_TYPE_NORMAL, TOKEN_TYPE_UNKNOWN,
    TOKEN_TYPE_UNUSED, TOKEN_TYPE_USER_DEFINED,
};
pub use stream::StreamDecoder;

fn tok_err(e: impl std::fmt::Display) -> AmuletError {
    AmuletError::Tokenizer(e.to_string())
}

/// The BPE inside the pipeline: ours (`bpe`: the vocabulary once, SentencePiece merges ranked
/// when met), or `tokenizers`' own, which the differential tests compare it with.
enum BpeModel {
    Compact(Box<bpe::Bpe>),
    Reference(Box<BPE>),
}

impl tokenizers::Model for BpeModel {
    type Trainer = BpeTrainer;

    fn tokenize(&self, sequence: &str) -> tokenizers::Result<Vec<Token>> {
        match self {
            BpeModel::Compact(m) => m.tokenize(sequence),
            BpeModel::Reference(m) => m.tokenize(sequence),
        }
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        match self {
            BpeModel::Compact(m) => m.token_to_id(token),
            BpeModel::Reference(m) => m.token_to_id(token),
        }
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        match self {
            BpeModel::Compact(m) => m.id_to_token(id),
            BpeModel::Reference(m) => m.id_to_token(id),
        }
    }

    fn get_vocab(&self) -> HashMap<String, u32> {
        match self {
            BpeModel::Compact(m) => m.get_vocab(),
            BpeModel::Reference(m) => m.get_vocab(),
        }
    }

    fn get_vocab_size(&self) -> usize {
        match self {
            BpeModel::Compact(m) => m.get_vocab_size(),
            BpeModel::Reference(m) => m.get_vocab_size(),
        }
    }

    fn save(&self, folder: &Path, prefix: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        match self {
            BpeModel::Compact(m) => m.save(folder, prefix),
            BpeModel::Reference(m) => m.save(folder, prefix),
        }
    }

    fn get_trainer(&self) -> BpeTrainer {
        BpeTrainer::default()
    }
}

/// The Hugging Face pipeline (normalizer, pre-tokenizer, added tokens, post-processor,
/// decoder) around our BPE.
type Pipeline = TokenizerImpl<BpeModel, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>;

/// What a tokenizer model's builder hands back: the Hugging Face tokenizer with its model,
/// pre-tokenizer and decoder set, and the vocabulary as spelled inside it.
struct Model {
    tokenizer: Pipeline,
    /// `pieces[id]`: the token's spelling in the model vocabulary, added tokens and decoder
    /// input; a few GGUF spellings are not the ones the model expects.
    pieces: Vec<String>,
    /// Per id: the decoder treats the token as one raw byte (`<0xNN>` with byte fallback).
    byte_piece: Vec<bool>,
}

/// "left right" strings as pairs, each string's memory kept for its left half.
fn parse_merges(merges: Vec<String>) -> Result<Vec<(String, String)>> {
    merges
        .into_iter()
        .enumerate()
        .map(|(i, mut m)| match m.split_once(' ') {
            Some((l, r)) if !l.is_empty() && !r.is_empty() && !r.contains(' ') => {
                let (at, r) = (l.len(), r.to_string());
                m.truncate(at);
                Ok((m, r))
            }
            _ => Err(tok_err(format!("merge #{i} {m:?} is not two tokens separated by one space"))),
        })
        .collect()
}

/// The BPE model for `pieces`: with `merges` in rank order, or else merges derived from
/// `(scores, by_position)` (SentencePiece); `reference` builds `tokenizers`' own, which needs the
/// merges listed.
fn bpe_model(
    pieces: &[String],
    merges: Option<Vec<(String, String)>>,
    derived: Option<(Vec<f32>, bool)>,
    unk: Option<u32>,
    sentencepiece: bool,
    reference: bool,
) -> Result<BpeModel> {
    if !reference {
        return Ok(BpeModel::Compact(Box::new(bpe::Bpe::new(pieces, merges, derived, unk, sentencepiece)?)));
    }
    let merges = merges.ok_or_else(|| tok_err("the reference BPE needs its merges listed"))?;
    // Like the Python dict comprehension: a duplicated token maps to its last id.
    let vocab: BpeVocab = pieces.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let mut builder = BPE::builder().vocab_and_merges(vocab, merges);
    if let Some(unk) = unk {
        builder = builder.unk_token(pieces[unk as usize].clone());
    }
    if sentencepiece {
        builder = builder.fuse_unk(true).byte_fallback(true);
    }
    Ok(BpeModel::Reference(Box::new(builder.build().map_err(tok_err)?)))
}

/// A tokenizer for one model; cheap to share by reference (encode/decode take `&self`).
pub struct TextTokenizer {
    inner: Pipeline,
    vocab_size: usize,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    /// Per id: the decoder treats the token as one raw byte (`<0xNN>` with byte fallback).
    /// The stream decoder must not cut inside a run of these: HF decodes a whole run at once.
    byte_piece: Vec<bool>,
    special: Vec<bool>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .finish_non_exhaustive()
    }
}

impl TextTokenizer {
    /// The tokenizer `spec` describes; the build consumes the spec's vocabulary and merges.
    pub fn from_spec(spec: TokenizerSpec) -> Result<Self> {
        Self::build(spec, false)
    }

    /// The same tokenizer with `tokenizers`' own BPE model inside (its vocabulary kept twice,
    /// SentencePiece merges listed): the oracle of the differential tests.
    #[doc(hidden)]
    pub fn reference_from_spec(spec: TokenizerSpec) -> Result<Self> {
        Self::build(spec, true)
    }

    fn build(mut spec: TokenizerSpec, reference: bool) -> Result<Self> {
        let vocab_size = spec.tokens.len();
        let Model { mut tokenizer, pieces, byte_piece } = match spec.model.as_str() {
            "gpt2" => byte_level::model(&mut spec, reference)?,
            "llama" => sentencepiece::model(&mut spec, reference)?,
            other => {
                return Err(AmuletError::Unsupported(format!(
                    "tokenizer model `{other}` (supported: gpt2 byte-level BPE, llama SentencePiece)"
                )))
            }
        };
        let special = add_vocabulary_tokens(&mut tokenizer, &spec, &pieces)?;
        if let Some(post) = bos_eos_processor(&spec, &pieces)? {
            tokenizer.with_post_processor(Some(PostProcessorWrapper::Template(post)));
        }
        Ok(TextTokenizer {
            inner: tokenizer,
            vocab_size,
            bos_id: spec.bos_id,
            eos_id: spec.eos_id,
            byte_piece,
            special,
        })
    }

    /// Convenience: the spec and tokenizer of a parsed GGUF file.
    pub fn from_gguf(g: &crate::gguf::Gguf) -> Result<Self> {
        Self::from_spec(TokenizerSpec::from_gguf(g)?)
    }

    fn check_id(&self, id: u32) -> Result<()> {
        if (id as usize) < self.vocab_size {
            Ok(())
        } else {
            Err(AmuletError::Tokenizer(format!(
                "token id {id} is outside the vocabulary of {} tokens",
                self.vocab_size
            )))
        }
    }

    /// `add_special_tokens` adds bos/eos as the GGUF asks; chat prompts rendered from a
    /// template already contain them and should be encoded with `false` (as transformers'
    /// `apply_chat_template` does).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, add_special_tokens).map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        for &id in ids {
            self.check_id(id)?;
        }
        self.inner.decode(ids, skip_special_tokens).map_err(tok_err)
    }

    /// One token's text as it would print on its own (partial UTF-8 shows as U+FFFD).
    pub fn token_text(&self, id: u32) -> Result<String> {
        self.decode(&[id], false)
    }

    /// The raw vocabulary entry (e.g. `Ġhello`, `▁hello`, `<0x0A>`, `<|im_end|>`).
    pub fn token_piece(&self, id: u32) -> Result<String> {
        self.check_id(id)?;
        self.inner.id_to_token(id).ok_or_else(|| tok_err(format!("token id {id} has no text")))
    }

    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The bos token's text, as chat templates expect it in `bos_token`.
    pub fn bos_token(&self) -> Option<String> {
        self.bos_id.and_then(|id| self.inner.id_to_token(id))
    }

    pub fn eos_token(&self) -> Option<String> {
        self.eos_id.and_then(|id| self.inner.id_to_token(id))
    }

    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }

    /// Whether `decode(.., skip_special_tokens = true)` drops this id.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    /// Whether `encode(.., true)` adds bos or eos.
    pub fn adds_special_tokens(&self) -> bool {
        self.inner.get_post_processor().is_some()
    }

    fn is_byte_piece(&self, id: u32) -> bool {
        self.byte_piece.get(id as usize).copied().unwrap_or(false)
    }
}

/// Control tokens and the declared bos/eos/unk/pad become special added tokens;
/// user-defined ones (type 4: Gemma's `<html>`, whitespace and newline runs...) plain added
/// tokens. Both are matched verbatim in raw text before BPE, as SentencePiece does.
/// Returns, per id, whether the token is special.
fn add_vocabulary_tokens(tokenizer: &mut Pipeline, spec: &TokenizerSpec, pieces: &[String]) -> Result<Vec<bool>> {
    let mut seen = HashSet::new();
    let (mut special_added, mut user_added) = (Vec::new(), Vec::new());
    let declared = [spec.bos_id, spec.eos_id, spec.unk_id, spec.pad_id];
    for (id, content) in pieces.iter().enumerate() {
        let is_special = spec.token_type(id) == TOKEN_TYPE_CONTROL || declared.contains(&Some(id as u32));
        let is_user = spec.token_type(id) == TOKEN_TYPE_USER_DEFINED;
        if (is_special || is_user) && !content.is_empty() && seen.insert(content.as_str()) {
            let token = AddedToken::from(content.clone(), is_special).normalized(false);
            if is_special {
                special_added.push(token)
            } else {
                user_added.push(token)
            }
        }
    }
    tokenizer.add_special_tokens(special_added).map_err(tok_err)?;
    tokenizer.add_tokens(user_added).map_err(tok_err)?;
    let added = tokenizer.get_added_vocabulary();
    Ok((0..pieces.len() as u32)
        .map(|id| added.simple_id_to_token(id).is_some_and(|t| added.is_special_token(&t)))
        .collect())
}

/// The post-processor that adds bos/eos when `encode` is asked to, if the spec wants either.
/// Template pieces are parsed from `name:type_id` strings, so tokens are referred to by
/// the aliases BOS/EOS rather than by their (arbitrary) text.
fn bos_eos_processor(spec: &TokenizerSpec, pieces: &[String]) -> Result<Option<TemplateProcessing>> {
    if !spec.add_bos && !spec.add_eos {
        return Ok(None);
    }
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = Vec::new();
    if spec.add_bos {
        if let Some(b) = spec.bos_id {
            single.push("BOS");
            specials.push(SpecialToken::new("BOS".into(), vec![b], vec![pieces[b as usize].clone()]).map_err(tok_err)?);
        }
    }
    single.push("$A");
    pair.extend(single.iter().copied());
    if spec.add_eos {
        if let Some(e) = spec.eos_id {
            single.push("EOS");
            pair.push("EOS");
            specials.push(SpecialToken::new("EOS".into(), vec![e], vec![pieces[e as usize].clone()]).map_err(tok_err)?);
        }
    }
    if spec.add_bos && spec.bos_id.is_some() {
        pair.push("BOS");
    }
    pair.push("$B:1");
    if spec.add_eos && spec.eos_id.is_some() {
        pair.push("EOS");
    }
    let post = TemplateProcessing::builder()
        .try_single(single)
        .map_err(tok_err)?
        .try_pair(pair)
        .map_err(tok_err)?
        .special_tokens(specials)
        .build()
        .map_err(tok_err)?;
    Ok(Some(post))
}

#[cfg(test)]
mod tests {
    use super::test_vocab::byte_level;
    use super::*;

    #[test]
    fn out_of_range_and_unsupported_are_errors() {
        let tok = byte_level();
        let n = tok.vocab_size() as u32;
        assert!(matches!(tok.decode(&[0, n], false), Err(AmuletError::Tokenizer(_))));
        assert!(tok.token_text(n).is_err());
        assert!(StreamDecoder::new(&tok, false).push(u32::MAX).is_err());
        let build = |f: TokenizerFields| TokenizerSpec::new(f).and_then(TextTokenizer::from_spec);
        let bad = TokenizerFields { model: "rwkv".into(), tokens: vec!["a".into()], ..Default::default() };
        assert!(matches!(build(bad), Err(AmuletError::Unsupported(_))));
        let bad =
            TokenizerFields { model: "gpt2".into(), tokens: vec!["a".into()], bos_id: Some(3), ..Default::default() };
        assert!(build(bad).is_err());
        let bad = TokenizerFields {
            model: "gpt2".into(),
            tokens: vec!["a".into()],
            merges: Some(vec!["a".into()]),
            ..Default::default()
        };
        assert!(build(bad).is_err());
    }
}
