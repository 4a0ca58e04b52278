//! Streaming detokenization: text deltas that never split a character.

use std::borrow::Borrow;

use super::TextTokenizer;
use crate::error::{AmuletError, Result};

/// Incremental detokenizer for streaming generation.
///
/// Decodes a small window (the tokens since the last emitted delta, plus that delta's tokens as
/// context) and emits only text that can no longer change: nothing while the window ends in an
/// incomplete UTF-8 sequence (U+FFFD) or inside a run of byte-fallback tokens, which the
/// decoder converts as a whole. Because every cut is at such a stable point, the deltas
/// concatenate to exactly `decode(all ids)`.
///
/// Generic over how it holds the tokenizer: borrowed (`&TextTokenizer`) or shared
/// (`Arc<TextTokenizer>`, for a generation that outlives any one borrow of the engine).
pub struct StreamDecoder<T: Borrow<TextTokenizer>> {
    tok: T,
    skip_special_tokens: bool,
    ids: Vec<u32>,
    /// `ids[..prefix_len]` is context whose text (`prefix_text`) was already emitted.
    prefix_len: usize,
    prefix_text: String,
}

impl<T: Borrow<TextTokenizer>> StreamDecoder<T> {
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
    use super::super::test_vocab::{byte_level, sentencepiece};
    use super::StreamDecoder;
    use crate::tokenizer::TextTokenizer;

    fn stream_all(tok: &TextTokenizer, ids: &[u32], skip: bool) -> (Vec<String>, String) {
        let mut sd = StreamDecoder::new(tok, skip);
        let mut deltas: Vec<String> = ids.iter().map(|&i| sd.push(i).unwrap()).collect();
        deltas.push(sd.finish().unwrap());
        let text = deltas.concat();
        (deltas, text)
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
}
