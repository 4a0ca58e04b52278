//! Text tokenizer built from GGUF metadata alone (no tokenizer.json), reproducing what
//! Hugging Face transformers builds when it loads a tokenizer from a GGUF file, so prompts
//! tokenize to the ids the model was evaluated with and reference tests can compare exactly.
//!
//! The pipeline follows `tokenizer.ggml.model`, as in llama.cpp:
//! * `gpt2`: byte-level BPE from the file's merges. Text is cut by the split regex named by
//!   `tokenizer.ggml.pre` (Llama-3, Qwen2, GPT-4o... families), GPT-2's by default.
//! * `llama` with Gemma's vocabulary (architecture `gemma*`, or whitespace runs stored as
//!   spaces): BPE whose merges follow vocabulary order, spaces written `▁`, byte fallback.
//!   Gemma's GGUF "scores" are merge ranks, not log-probabilities: a Unigram model reading
//!   them as costs splits `capital` into its cheapest pieces.
//! * other `llama` vocabularies (Llama 2, Mistral v0.1-0.3, TinyLlama...): BPE whose merges are
//!   derived from the SentencePiece scores, a `▁` prepended to the first piece, byte fallback.
//!
//! Control tokens (GGUF token type 3) plus bos/eos/unk/pad are special added tokens: matched
//! whole in raw text (chat templates emit them) and dropped by `skip_special_tokens`.

use std::collections::{HashMap, HashSet};

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab as BpeVocab, BPE};
use tokenizers::normalizers::prepend::Prepend;
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::utils::Sequence as NormalizerSequence;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
    Tokenizer,
};

use crate::error::{AmuletError, Result};

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp `llama_token_type`).
pub const TOKEN_TYPE_NORMAL: i32 = 1;
pub const TOKEN_TYPE_UNKNOWN: i32 = 2;
pub const TOKEN_TYPE_CONTROL: i32 = 3;
pub const TOKEN_TYPE_USER_DEFINED: i32 = 4;
pub const TOKEN_TYPE_UNUSED: i32 = 5;
pub const TOKEN_TYPE_BYTE: i32 = 6;

/// SentencePiece's whitespace marker.
const SPIECE_SPACE: &str = "\u{2581}";

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

fn tok_err(e: impl std::fmt::Display) -> AmuletError {
    AmuletError::Tokenizer(e.to_string())
}

/// Everything the GGUF metadata says about the tokenizer, decoupled from the file format so a
/// tokenizer can also be built from other sources (tests, hand-made vocabularies).
#[derive(Clone, Debug, Default)]
pub struct TokenizerSpec {
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

impl TokenizerSpec {
    /// Reads the `tokenizer.ggml.*` keys, checking their lengths and ids against the vocabulary
    /// so a corrupt file is reported here rather than as a wrong tokenization later.
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
        if n == 0 {
            return Err(AmuletError::BadModel("tokenizer.ggml.tokens is empty".into()));
        }
        if let Some(s) = &scores {
            if s.len() != n {
                return Err(AmuletError::BadModel(format!(
                    "tokenizer.ggml.scores has {} entries for {n} tokens",
                    s.len()
                )));
            }
        }
        if let Some(t) = &token_types {
            if t.len() != n {
                return Err(AmuletError::BadModel(format!(
                    "tokenizer.ggml.token_type has {} entries for {n} tokens",
                    t.len()
                )));
            }
        }
        let id = |key: &str| -> Result<Option<u32>> {
            match g.opt_u32(key)? {
                Some(i) if i as usize >= n => {
                    Err(AmuletError::BadModel(format!("{key} is {i}, but the vocabulary has {n} tokens")))
                }
                v => Ok(v),
            }
        };
        // Converters often write a placeholder (-1, or an id past the vocabulary) for an
        // unused pad/unk token; that must not make the model unloadable.
        let lenient_id = |key: &str| -> Option<u32> { g.opt_u32(key).ok().flatten().filter(|&i| (i as usize) < n) };
        // llama.cpp's defaults: SentencePiece vocabularies add bos, byte-level BPE ones do not.
        let add_bos_default = model == "llama";
        Ok(TokenizerSpec {
            pre: g.opt_str("tokenizer.ggml.pre").map(str::to_string),
            arch: g.opt_str("general.architecture").map(str::to_string),
            bos_id: id("tokenizer.ggml.bos_token_id")?,
            eos_id: id("tokenizer.ggml.eos_token_id")?,
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
        })
    }

    fn check(&self) -> Result<()> {
        let n = self.tokens.len();
        if n == 0 {
            return Err(tok_err("the vocabulary is empty"));
        }
        if n > u32::MAX as usize {
            return Err(tok_err("the vocabulary is too large"));
        }
        for (name, len) in
            [("scores", self.scores.as_ref().map(Vec::len)), ("token_types", self.token_types.as_ref().map(Vec::len))]
        {
            if let Some(len) = len {
                if len != n {
                    return Err(tok_err(format!("{name} has {len} entries for {n} tokens")));
                }
            }
        }
        for (name, id) in [("bos", self.bos_id), ("eos", self.eos_id), ("unk", self.unk_id), ("pad", self.pad_id)] {
            if let Some(id) = id {
                if id as usize >= n {
                    return Err(tok_err(format!("{name} id {id} is outside the vocabulary of {n} tokens")));
                }
            }
        }
        Ok(())
    }

    fn token_type(&self, id: usize) -> i32 {
        self.token_types.as_ref().map_or(TOKEN_TYPE_NORMAL, |t| t[id])
    }

    /// Gemma's SentencePiece export is told apart by its whitespace-run tokens, written with
    /// spaces where SentencePiece writes `▁`; the architecture name is the other hint.
    fn is_gemma(&self) -> bool {
        self.arch.as_deref().is_some_and(|a| a.starts_with("gemma")) || self.tokens.iter().any(|t| is_space_run(t))
    }
}

/// A tokenizer for one model; cheap to share by reference (encode/decode take `&self`).
pub struct TextTokenizer {
    inner: Tokenizer,
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

/// Python's `str.isspace` (what `token.strip()` removes in the Gemma converter).
fn py_is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `" " in token and not token.strip()`.
fn is_space_run(token: &str) -> bool {
    token.contains(' ') && token.chars().all(py_is_space)
}

fn is_byte_piece(piece: &str) -> bool {
    piece.len() == 6 && piece.starts_with("<0x") && piece.ends_with('>') && u8::from_str_radix(&piece[3..5], 16).is_ok()
}

/// transformers' `GGUFTokenizerSkeleton` merges for SentencePiece files without merges: every
/// split of a token into two vocabulary pieces, ordered by the whole token's rank (its score,
/// or for Gemma its vocabulary position), ties broken by the pieces' scores. Kept exact
/// because BPE results depend on merge order.
fn derive_merges(tokens: &[String], scores: &[f32], rank_by_position: bool) -> Vec<(String, String)> {
    // A Python dict: first insertion fixes the order, the last duplicate fixes the value.
    let mut score: HashMap<&str, f32> = HashMap::with_capacity(tokens.len());
    let mut position: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    let mut order: Vec<&str> = Vec::with_capacity(tokens.len());
    for (i, (t, &s)) in tokens.iter().zip(scores).enumerate() {
        if score.insert(t.as_str(), s).is_none() {
            order.push(t);
        }
        position.insert(t.as_str(), i);
    }
    // Higher rank merges first; -position keeps "earlier token, earlier merge".
    let rank = |t: &str| -> f64 {
        if rank_by_position {
            -(position[t] as f64)
        } else {
            score[t] as f64
        }
    };
    let mut merges: Vec<(&str, &str, f64)> = Vec::new();
    let mut local: Vec<(&str, &str, f64)> = Vec::new();
    for &tok in &order {
        local.clear();
        for (i, _) in tok.char_indices().skip(1) {
            let (l, r) = tok.split_at(i);
            if score.contains_key(l) && score.contains_key(r) {
                local.push((l, r, rank(tok)));
            }
        }
        // Python's `sorted(.., reverse=True)` is stable, as is `sort_by` with a reversed order.
        local.sort_by(|a, b| score[b.0].total_cmp(&score[a.0]).then(score[b.1].total_cmp(&score[a.1])));
        merges.extend(local.iter().copied());
    }
    merges.sort_by(|a, b| b.2.total_cmp(&a.2));
    merges.into_iter().map(|(l, r, _)| (l.to_string(), r.to_string())).collect()
}

/// GPT-2's byte-to-character table (`bytes_to_unicode`).
fn byte_level_chars() -> [char; 256] {
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

fn parse_merges(merges: &[String]) -> Result<Vec<(String, String)>> {
    merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut parts = m.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(l), Some(r), None) if !l.is_empty() && !r.is_empty() => Ok((l.to_string(), r.to_string())),
                _ => Err(tok_err(format!("merge #{i} {m:?} is not two tokens separated by one space"))),
            }
        })
        .collect()
}

fn bpe_vocab(tokens: &[String]) -> BpeVocab {
    // Like the Python dict comprehension: a duplicated token maps to its last id.
    tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect()
}

impl TextTokenizer {
    pub fn from_spec(spec: &TokenizerSpec) -> Result<Self> {
        spec.check()?;
        let n = spec.tokens.len();
        let is_control = |id: usize| spec.token_type(id) == TOKEN_TYPE_CONTROL;

        // `pieces[id]` is the token's spelling inside the tokenizer (model vocabulary, added
        // tokens and decoder input); a few GGUF spellings are not the ones the model expects.
        let mut pieces: Vec<String> = spec.tokens.clone();
        let unk_piece = |pieces: &[String]| spec.unk_id.map(|i| pieces[i as usize].clone());

        let mut tokenizer = match spec.model.as_str() {
            "gpt2" => {
                // llama.cpp stores a token whose bytes are not valid UTF-8 raw (Phi-4 has U+FFFD
                // where its merges spell `ï¿½`): respell it in the byte-level alphabet the merges
                // use. Control and user-defined tokens keep their text: they are matched as written.
                let table = byte_level_chars();
                let alphabet: HashSet<char> = table.iter().copied().collect();
                for (id, p) in pieces.iter_mut().enumerate() {
                    let verbatim = is_control(id) || spec.token_type(id) == TOKEN_TYPE_USER_DEFINED;
                    if !verbatim && !p.chars().all(|c| alphabet.contains(&c)) {
                        *p = p.bytes().map(|b| table[b as usize]).collect();
                    }
                }
                let merges = parse_merges(spec.merges.as_deref().ok_or_else(|| {
                    AmuletError::BadModel("a gpt2 (byte-level BPE) tokenizer needs tokenizer.ggml.merges".into())
                })?)?;
                let mut builder = BPE::builder().vocab_and_merges(bpe_vocab(&pieces), merges);
                if let Some(unk) = unk_piece(&pieces) {
                    builder = builder.unk_token(unk);
                }
                let mut t = Tokenizer::new(builder.build().map_err(tok_err)?);
                let pre = match pre_split(spec.pre.as_deref()) {
                    None => PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, true)),
                    Some(regex) => {
                        let split =
                            Split::new(SplitPattern::Regex(regex.into()), SplitDelimiterBehavior::Isolated, false)
                                .map_err(tok_err)?;
                        PreTokenizerWrapper::Sequence(PreTokenizerSequence::new(vec![
                            PreTokenizerWrapper::Split(split),
                            PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, false, false)),
                        ]))
                    }
                };
                t.with_pre_tokenizer(Some(pre));
                t.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::new(false, false, true))));
                t
            }
            "llama" => {
                let gemma = spec.is_gemma();
                if gemma {
                    for p in pieces.iter_mut() {
                        if is_space_run(p) {
                            *p = SPIECE_SPACE.repeat(p.chars().count());
                        }
                    }
                }
                let merges = match &spec.merges {
                    Some(m) => parse_merges(m)?,
                    None => {
                        let scores = spec.scores.as_ref().ok_or_else(|| {
                            AmuletError::BadModel(
                                "a SentencePiece tokenizer needs tokenizer.ggml.scores or tokenizer.ggml.merges".into(),
                            )
                        })?;
                        derive_merges(&pieces, scores, gemma)
                    }
                };
                let mut builder = BPE::builder().vocab_and_merges(bpe_vocab(&pieces), merges);
                if let Some(unk) = unk_piece(&pieces) {
                    builder = builder.unk_token(unk);
                }
                let bpe = builder.fuse_unk(true).byte_fallback(true).build().map_err(tok_err)?;
                let mut t = Tokenizer::new(bpe);
                let add_prefix_space = spec.add_space_prefix.unwrap_or(true);
                let mut dec = vec![
                    DecoderWrapper::ByteFallback(ByteFallback::new()),
                    DecoderWrapper::Fuse(Fuse::new()),
                    DecoderWrapper::Replace(Replace::new(SPIECE_SPACE, " ").map_err(tok_err)?),
                ];
                if gemma {
                    // Gemma: every space becomes `▁`, nothing is prepended unless asked.
                    let mut norm: Vec<NormalizerWrapper> = Vec::new();
                    if add_prefix_space {
                        norm.push(NormalizerWrapper::Prepend(Prepend::new(SPIECE_SPACE.into())));
                    }
                    norm.push(NormalizerWrapper::Replace(Replace::new(" ", SPIECE_SPACE).map_err(tok_err)?));
                    t.with_normalizer(Some(NormalizerWrapper::Sequence(NormalizerSequence::new(norm))))
                        .map_err(tok_err)?;
                    // transformers decodes `▁` before bytes; same result, kept for exactness.
                    dec.rotate_right(1);
                } else {
                    // SentencePiece proper: `▁` replaces spaces and is prepended once, to the
                    // first chunk only (not after every special token).
                    let scheme = if add_prefix_space { PrependScheme::First } else { PrependScheme::Never };
                    t.with_pre_tokenizer(Some(PreTokenizerWrapper::Metaspace(Metaspace::new(
                        '\u{2581}', scheme, false,
                    ))));
                }
                if add_prefix_space {
                    dec.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
                }
                t.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(dec))));
                t
            }
            other => {
                return Err(AmuletError::Unsupported(format!(
                    "tokenizer model `{other}` (supported: gpt2 byte-level BPE, llama SentencePiece)"
                )))
            }
        };

        // Control tokens and the declared bos/eos/unk/pad become special added tokens;
        // user-defined ones (type 4: Gemma's `<html>`, whitespace and newline runs...) plain added
        // tokens. Both are matched verbatim in raw text before BPE, as SentencePiece does.
        let mut seen = HashSet::new();
        let (mut special_added, mut user_added) = (Vec::new(), Vec::new());
        let declared = [spec.bos_id, spec.eos_id, spec.unk_id, spec.pad_id];
        for (id, content) in pieces.iter().enumerate() {
            let is_special = is_control(id) || declared.contains(&Some(id as u32));
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
        let special = (0..n as u32)
            .map(|id| {
                let added = tokenizer.get_added_vocabulary();
                added.simple_id_to_token(id).is_some_and(|t| added.is_special_token(&t))
            })
            .collect();

        // Template pieces are parsed from `name:type_id` strings, so tokens are referred to by
        // the aliases BOS/EOS rather than by their (arbitrary) text.
        if spec.add_bos || spec.add_eos {
            let mut single = Vec::new();
            let mut pair = Vec::new();
            let mut specials = Vec::new();
            if spec.add_bos {
                if let Some(b) = spec.bos_id {
                    single.push("BOS");
                    specials.push(
                        SpecialToken::new("BOS".into(), vec![b], vec![pieces[b as usize].clone()]).map_err(tok_err)?,
                    );
                }
            }
            single.push("$A");
            pair.extend(single.iter().copied());
            if spec.add_eos {
                if let Some(e) = spec.eos_id {
                    single.push("EOS");
                    pair.push("EOS");
                    specials.push(
                        SpecialToken::new("EOS".into(), vec![e], vec![pieces[e as usize].clone()]).map_err(tok_err)?,
                    );
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
            tokenizer.with_post_processor(Some(PostProcessorWrapper::Template(post)));
        }

        let uses_byte_fallback = spec.model == "llama";
        let byte_piece = pieces.iter().map(|p| uses_byte_fallback && is_byte_piece(p)).collect();
        Ok(TextTokenizer {
            inner: tokenizer,
            vocab_size: n,
            bos_id: spec.bos_id,
            eos_id: spec.eos_id,
            byte_piece,
            special,
        })
    }

    /// Convenience: the spec and tokenizer of a parsed GGUF file.
    pub fn from_gguf(g: &crate::gguf::Gguf) -> Result<Self> {
        Self::from_spec(&TokenizerSpec::from_gguf(g)?)
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

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    fn is_byte_piece(&self, id: u32) -> bool {
        self.byte_piece.get(id as usize).copied().unwrap_or(false)
    }
}

/// Incremental detokenizer for streaming generation.
///
/// Decodes a small window (the tokens since the last emitted delta, plus that delta's tokens as
/// context) and emits only text that can no longer change: nothing while the window ends in an
/// incomplete UTF-8 sequence (U+FFFD) or inside a run of byte-fallback tokens, which the
/// decoder converts as a whole. Because every cut is at such a stable point, the deltas
/// concatenate to exactly `decode(all ids)`.
/// Generic over how it holds the tokenizer: borrowed (`&TextTokenizer`) or shared
/// (`Arc<TextTokenizer>`, for a generation that outlives any one borrow of the engine).
pub struct StreamDecoder<T: std::borrow::Borrow<TextTokenizer>> {
    tok: T,
    skip_special_tokens: bool,
    ids: Vec<u32>,
    /// `ids[..prefix_len]` is context whose text (`prefix_text`) was already emitted.
    prefix_len: usize,
    prefix_text: String,
}

impl<T: std::borrow::Borrow<TextTokenizer>> StreamDecoder<T> {
    pub fn new(tok: T, skip_special_tokens: bool) -> Self {
        StreamDecoder { tok, skip_special_tokens, ids: Vec::new(), prefix_len: 0, prefix_text: String::new() }
    }

    pub fn push(&mut self, id: u32) -> Result<String> {
        self.tok.borrow().check_id(id)?;
        self.ids.push(id);
        // A skipped special token is invisible to the decoder, so it does not end a byte run.
        let last_visible =
            self.ids.iter().rev().find(|&&i| !(self.skip_special_tokens && self.tok.borrow().is_special(i)));
        if last_visible.is_some_and(|&i| self.tok.borrow().is_byte_piece(i)) {
            return Ok(String::new());
        }
        let text = self.tok.borrow().decode(&self.ids, self.skip_special_tokens)?;
        if text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let delta = self.delta(&text)?;
        // Next window: the tokens just emitted become the context, unless they decode to
        // nothing (skipped specials), in which case the older context is still needed.
        let tail = &self.ids[self.prefix_len..];
        let tail_text = self.tok.borrow().decode(tail, self.skip_special_tokens)?;
        if !tail_text.is_empty() && text.ends_with(&tail_text) {
            self.ids.drain(..self.prefix_len);
            self.prefix_text = tail_text;
        } else {
            self.prefix_text = text;
        }
        self.prefix_len = self.ids.len();
        Ok(delta)
    }

    /// Emits whatever is held back (incomplete characters become U+FFFD, as in `decode`) and
    /// resets the decoder for a new sequence.
    pub fn finish(&mut self) -> Result<String> {
        let out = if self.ids.len() > self.prefix_len {
            let text = self.tok.borrow().decode(&self.ids, self.skip_special_tokens)?;
            self.delta(&text)?
        } else {
            String::new()
        };
        self.ids.clear();
        self.prefix_len = 0;
        self.prefix_text.clear();
        Ok(out)
    }

    fn delta(&self, text: &str) -> Result<String> {
        text.strip_prefix(self.prefix_text.as_str()).map(str::to_string).ok_or_else(|| {
            AmuletError::Tokenizer(format!("stream decoding diverged: {text:?} does not extend {:?}", self.prefix_text))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A byte-level vocabulary: the 256 alphabet characters, a few merges, two control tokens.
    fn byte_level() -> TextTokenizer {
        let mut tokens: Vec<String> = byte_level_chars().iter().map(|c| c.to_string()).collect();
        let merged = ["he", "ll", "hell", "hello", "Ġw", "Ġwo"];
        tokens.extend(merged.iter().map(|s| s.to_string()));
        tokens.push("<|im_start|>".into());
        tokens.push("<|im_end|>".into());
        let n = tokens.len();
        let mut types = vec![TOKEN_TYPE_NORMAL; n];
        types[n - 2] = TOKEN_TYPE_CONTROL;
        types[n - 1] = TOKEN_TYPE_CONTROL;
        let spec = TokenizerSpec {
            model: "gpt2".into(),
            tokens,
            token_types: Some(types),
            merges: Some(["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o"].iter().map(|s| s.to_string()).collect()),
            bos_id: Some(n as u32 - 2),
            eos_id: Some(n as u32 - 1),
            ..Default::default()
        };
        TextTokenizer::from_spec(&spec).unwrap()
    }

    /// A SentencePiece vocabulary with byte fallback and a `▁` prefix, merges from scores.
    fn sentencepiece() -> TextTokenizer {
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
        let spec = TokenizerSpec {
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
        TextTokenizer::from_spec(&spec).unwrap()
    }

    fn stream_all(tok: &TextTokenizer, ids: &[u32], skip: bool) -> (Vec<String>, String) {
        let mut sd = StreamDecoder::new(tok, skip);
        let mut deltas: Vec<String> = ids.iter().map(|&i| sd.push(i).unwrap()).collect();
        deltas.push(sd.finish().unwrap());
        let text = deltas.concat();
        (deltas, text)
    }

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

    #[test]
    fn byte_level_stream_never_splits_characters() {
        let tok = byte_level();
        let text = "a😀b中é";
        let ids = tok.encode(text, false).unwrap();
        assert!(ids.len() > 5);
        let (deltas, joined) = stream_all(&tok, &ids, false);
        assert_eq!(joined, text);
        assert!(deltas.iter().all(|d| !d.contains('\u{FFFD}')), "{deltas:?}");
        // Bytes that never form a character still come out, exactly as decode shows them.
        let stray = [tok.token_id("a").unwrap(), tok.token_id("ð").unwrap(), tok.token_id("b").unwrap()];
        assert_eq!(stream_all(&tok, &stray, false).1, tok.decode(&stray, false).unwrap());
        let trailing = [tok.token_id("a").unwrap(), tok.token_id("ð").unwrap()];
        assert_eq!(stream_all(&tok, &trailing, false).1, "a\u{FFFD}");
    }

    #[test]
    fn sentencepiece_prefix_merges_and_byte_fallback() {
        let tok = sentencepiece();
        let id = |t: &str| tok.token_id(t).unwrap();
        assert_eq!(tok.encode("ab a", false).unwrap(), vec![id("▁ab"), id("▁a")]);
        assert_eq!(tok.encode("ab", true).unwrap(), vec![1, id("▁ab")]);
        // Unknown characters fall back to bytes; decoding strips the prepended space.
        let ids = tok.encode("aé", false).unwrap();
        assert_eq!(ids, vec![id("▁a"), id("<0xC3>"), id("<0xA9>")]);
        assert_eq!(tok.decode(&ids, false).unwrap(), "aé");
        assert_eq!(tok.decode(&[1, id("▁a"), 2], true).unwrap(), "a");
    }

    #[test]
    fn sentencepiece_stream_matches_decode_on_any_ids() {
        let tok = sentencepiece();
        let id = |t: &str| tok.token_id(t).unwrap();
        let ids = tok.encode("a 😀 ab é", false).unwrap();
        let (deltas, joined) = stream_all(&tok, &ids, false);
        assert_eq!(joined, tok.decode(&ids, false).unwrap());
        assert!(deltas.iter().all(|d| !d.contains('\u{FFFD}')), "{deltas:?}");
        // HF decodes a run of byte tokens as a whole: a valid prefix of an invalid run must
        // not be emitted early, and skipped specials do not end the run.
        let tricky = [id("▁a"), id("<0xC3>"), id("<0xA9>"), 2, id("<0xC3>"), id("b"), id("<0xE4>")];
        for skip in [false, true] {
            for end in 1..=tricky.len() {
                let ids = &tricky[..end];
                assert_eq!(stream_all(&tok, ids, skip).1, tok.decode(ids, skip).unwrap(), "{ids:?} skip={skip}");
            }
        }
        let mut state = 12345u64;
        let n = tok.vocab_size() as u64;
        for round in 0..500 {
            let ids: Vec<u32> = (0..1 + round % 9)
                .map(|_| {
                    state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    ((state >> 33) % n) as u32
                })
                .collect();
            assert_eq!(stream_all(&tok, &ids, round % 2 == 0).1, tok.decode(&ids, round % 2 == 0).unwrap());
        }
    }

    #[test]
    fn out_of_range_and_unsupported_are_errors() {
        let tok = byte_level();
        let n = tok.vocab_size() as u32;
        assert!(matches!(tok.decode(&[0, n], false), Err(AmuletError::Tokenizer(_))));
        assert!(tok.token_text(n).is_err());
        assert!(StreamDecoder::new(&tok, false).push(u32::MAX).is_err());
        let bad = TokenizerSpec { model: "rwkv".into(), tokens: vec!["a".into()], ..Default::default() };
        assert!(matches!(TextTokenizer::from_spec(&bad), Err(AmuletError::Unsupported(_))));
        let bad =
            TokenizerSpec { model: "gpt2".into(), tokens: vec!["a".into()], bos_id: Some(3), ..Default::default() };
        assert!(TextTokenizer::from_spec(&bad).is_err());
        let bad = TokenizerSpec {
            model: "gpt2".into(),
            tokens: vec!["a".into()],
            merges: Some(vec!["a".into()]),
            ..Default::default()
        };
        assert!(TextTokenizer::from_spec(&bad).is_err());
    }

    #[test]
    fn derived_merges_follow_rank_then_piece_scores() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "bc", "abc"].iter().map(|s| s.to_string()).collect();
        let scores = [-1.0, -2.0, -3.0, -5.0, -4.0, -6.0];
        let by_score = derive_merges(&tokens, &scores, false);
        let pairs: Vec<(&str, &str)> = by_score.iter().map(|(l, r)| (l.as_str(), r.as_str())).collect();
        // bc (-4) before ab (-5) before abc (-6); abc's splits ordered by their pieces' scores.
        assert_eq!(pairs, [("b", "c"), ("a", "b"), ("a", "bc"), ("ab", "c")]);
        let by_position = derive_merges(&tokens, &scores, true);
        assert_eq!(by_position[0], ("a".to_string(), "b".to_string()));
    }
}
