//! SentencePiece vocabularies (`tokenizer.ggml.model` = `llama`) as BPE with byte fallback,
//! the way transformers converts them:
//! * Gemma's (architecture `gemma*`, or whitespace runs stored as spaces): merges follow
//!   vocabulary order, spaces written `▁`. Gemma's GGUF "scores" are merge ranks, not
//!   log-probabilities: a Unigram model reading them as costs splits `capital` into its
//!   cheapest pieces.
//! * the others (Llama 2, Mistral v0.1-0.3, TinyLlama...): merges derived from the
//!   SentencePiece scores, a `▁` prepended to the first piece.

use std::collections::HashMap;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::normalizers::prepend::Prepend;
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::utils::Sequence as NormalizerSequence;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper};

use super::{bpe_model, parse_merges, tok_err, Model, Pipeline, TokenizerSpec};
use crate::error::{AmuletError, Result};

/// SentencePiece's whitespace marker.
const SPIECE_SPACE: &str = "\u{2581}";

/// Python's `str.isspace` (what `token.strip()` removes in the Gemma converter).
fn py_is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `" " in token and not token.strip()`.
fn is_space_run(token: &str) -> bool {
    token.contains(' ') && token.chars().all(py_is_space)
}

/// Gemma's SentencePiece export is told apart by its whitespace-run tokens, written with
/// spaces where SentencePiece writes `▁`; the architecture name is the other hint.
fn is_gemma(spec: &TokenizerSpec) -> bool {
    spec.arch.as_deref().is_some_and(|a| a.starts_with("gemma")) || spec.tokens.iter().any(|t| is_space_run(t))
}

/// `<0xNN>`: a byte-fallback token, which the decoder turns into one raw byte.
fn is_byte_piece(piece: &str) -> bool {
    piece.len() == 6 && piece.starts_with("<0x") && piece.ends_with('>') && u8::from_str_radix(&piece[3..5], 16).is_ok()
}

/// transformers' `GGUFTokenizerSkeleton` merges for SentencePiece files without merges (the
/// reference BPE's; ours ranks them as it meets them, `bpe::Ranks::Derived`): every
/// split of a token into two vocabulary pieces, ordered by the whole token's rank (its score,
/// or for Gemma its vocabulary position), ties broken by the pieces' scores. Kept exact
/// because BPE results depend on merge order.
pub(super) fn derive_merges(tokens: &[String], scores: &[f32], rank_by_position: bool) -> Vec<(String, String)> {
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

pub(super) fn model(spec: &mut TokenizerSpec, reference: bool) -> Result<Model> {
    let gemma = is_gemma(spec);
    let (mut pieces, merges) = spec.take_text();
    if gemma {
        for p in pieces.iter_mut() {
            if is_space_run(p) {
                *p = SPIECE_SPACE.repeat(p.chars().count());
            }
        }
    }
    let (merges, derived) = match merges {
        Some(m) => (Some(parse_merges(m)?), None),
        None => {
            let scores = spec.scores.as_ref().ok_or_else(|| {
                AmuletError::BadModel(
                    "a SentencePiece tokenizer needs tokenizer.ggml.scores or tokenizer.ggml.merges".into(),
                )
            })?;
            if reference {
                (Some(derive_merges(&pieces, scores, gemma)), None)
            } else {
                (None, Some((scores.clone(), gemma)))
            }
        }
    };
    let mut tokenizer = Pipeline::new(bpe_model(&pieces, merges, derived, spec.unk_id, true, reference)?);
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
        tokenizer.with_normalizer(Some(NormalizerWrapper::Sequence(NormalizerSequence::new(norm)))).map_err(tok_err)?;
        // transformers decodes `▁` before bytes; same result, kept for exactness.
        dec.rotate_right(1);
    } else {
        // SentencePiece proper: `▁` replaces spaces and is prepended once, to the
        // first chunk only (not after every special token).
        let scheme = if add_prefix_space { PrependScheme::First } else { PrependScheme::Never };
        tokenizer.with_pre_tokenizer(Some(PreTokenizerWrapper::Metaspace(Metaspace::new('\u{2581}', scheme, false))));
    }
    if add_prefix_space {
        dec.push(DecoderWrapper::Strip(Strip::new(' ', 1, 0)));
    }
    tokenizer.with_decoder(Some(DecoderWrapper::Sequence(DecoderSequence::new(dec))));
    let byte_piece = pieces.iter().map(|p| is_byte_piece(p)).collect();
    Ok(Model { tokenizer, pieces, byte_piece })
}

#[cfg(test)]
mod tests {
    use super::super::test_vocab::sentencepiece;
    use super::derive_merges;

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
