//! Byte-pair encoding with the results of Hugging Face's `tokenizers::models::bpe::BPE`, in a
//! fraction of its memory: the vocabulary is kept once (one string arena and an index of ids)
//! where `BPE` keeps it twice as hash maps of owned strings, and a SentencePiece vocabulary
//! without merges ranks a pair when it meets it, from the pair and the token it makes (what
//! transformers' derived merge list is ordered by), instead of storing the list: Gemma-3's
//! 262,144 tokens derive 514,906 merges.
//!
//! The algorithm is `BPE`'s (tokenizers 0.23, no dropout, no subword prefix or suffix): each
//! character becomes its vocabulary id (else its `<0xNN>` byte tokens, else the unknown token),
//! then the adjacent pair with the lowest rank merges, the leftmost among equals, until no pair
//! has a rank. `tests/tokenizer_reference.rs` compares it with `BPE` on every real vocabulary.

use std::cmp::Reverse;
use std::collections::hash_map::RandomState;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};

use tokenizers::models::bpe::BpeTrainer;
use tokenizers::Token;

use crate::error::{AmuletError, Result};

const EMPTY: u32 = u32::MAX;

/// Open addressing at a load of 1/3 to 2/3.
fn slots_for(entries: usize) -> usize {
    (entries + entries / 2).next_power_of_two().max(2)
}

/// Every piece end to end, and an open-addressed index from a piece to its id. A piece spelled
/// twice maps to its last id, like the dict transformers builds.
pub(super) struct Vocab {
    /// std's SipHash, keyed: a file's pieces could be made to collide in an unkeyed hash,
    /// and an index of colliding keys takes quadratic time to build.
    hasher: RandomState,
    text: String,
    ends: Vec<u32>,
    slots: Vec<u32>,
    /// Last id to first id, for each piece spelled more than once.
    repeats: HashMap<u32, u32>,
    distinct: usize,
}

impl Vocab {
    pub(super) fn new(pieces: &[String]) -> Result<Vocab> {
        let bytes: usize = pieces.iter().map(|p| p.len()).sum();
        if bytes >= EMPTY as usize || pieces.len() >= EMPTY as usize {
            return Err(AmuletError::Tokenizer("the vocabulary is too large".into()));
        }
        let mut v = Vocab {
            hasher: RandomState::new(),
            text: String::with_capacity(bytes),
            ends: Vec::with_capacity(pieces.len()),
            slots: vec![EMPTY; slots_for(pieces.len())],
            repeats: HashMap::new(),
            distinct: 0,
        };
        for (id, p) in pieces.iter().enumerate() {
            v.text.push_str(p);
            v.ends.push(v.text.len() as u32);
            let slot = v.slot(p);
            match v.slots[slot] {
                EMPTY => v.distinct += 1,
                earlier => {
                    let first = v.repeats.remove(&earlier).unwrap_or(earlier);
                    v.repeats.insert(id as u32, first);
                }
            }
            v.slots[slot] = id as u32;
        }
        Ok(v)
    }

    /// The slot holding `s`, or the empty one where it would go.
    fn slot(&self, s: &str) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = self.hasher.hash_one(s) as usize & mask;
        loop {
            match self.slots[i] {
                EMPTY => return i,
                id if self.piece(id) == s => return i,
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Ids `0..len()`.
    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Panics if `id >= len()`.
    pub(super) fn piece(&self, id: u32) -> &str {
        let end = self.ends[id as usize] as usize;
        let start = if id == 0 { 0 } else { self.ends[id as usize - 1] as usize };
        &self.text[start..end]
    }

    /// The id `s` maps to (its last, when it is spelled twice).
    pub(super) fn id(&self, s: &str) -> Option<u32> {
        match self.slots[self.slot(s)] {
            EMPTY => None,
            id => Some(id),
        }
    }

    /// The first id spelled like `id`.
    fn first(&self, id: u32) -> u32 {
        self.repeats.get(&id).copied().unwrap_or(id)
    }
}

/// A merge's place in the merge list, compared as a whole: lower merges first.
type Rank = [u32; 5];

/// Explicit merges: `(left, right)` ids to `(rank, merged id)`, open-addressed.
pub(super) struct PairTable {
    hasher: RandomState,
    keys: Vec<u64>,
    values: Vec<(u32, u32)>,
}

impl PairTable {
    /// `merges` in rank order; a pair listed twice keeps its last rank, as in `BPE`.
    fn new(vocab: &Vocab, merges: Vec<(String, String)>) -> Result<PairTable> {
        let size = slots_for(merges.len());
        let mut t = PairTable { hasher: RandomState::new(), keys: vec![u64::MAX; size], values: vec![(0, 0); size] };
        let mut both = String::new();
        for (rank, (l, r)) in merges.into_iter().enumerate() {
            let id = |s: &str| {
                vocab
                    .id(s)
                    .ok_or_else(|| AmuletError::Tokenizer(format!("merge #{rank}: {s:?} is not in the vocabulary")))
            };
            both.clear();
            both.push_str(&l);
            both.push_str(&r);
            let (l, r, merged) = (id(&l)?, id(&r)?, id(&both)?);
            let at = t.slot(l, r);
            t.keys[at] = key(l, r);
            t.values[at] = (rank as u32, merged);
        }
        Ok(t)
    }

    fn slot(&self, l: u32, r: u32) -> usize {
        let mask = self.keys.len() - 1;
        let k = key(l, r);
        let mut i = self.hasher.hash_one(k) as usize & mask;
        while self.keys[i] != u64::MAX && self.keys[i] != k {
            i = (i + 1) & mask;
        }
        i
    }

    fn get(&self, l: u32, r: u32) -> Option<(u32, u32)> {
        let at = self.slot(l, r);
        (self.keys[at] != u64::MAX).then(|| self.values[at])
    }
}

fn key(l: u32, r: u32) -> u64 {
    (l as u64) << 32 | r as u64
}

/// f32 total order (`total_cmp`) as integers, reversed: higher scores first.
fn descending(x: f32) -> u32 {
    let b = x.to_bits();
    !(if b >> 31 == 1 { !b } else { b | 1 << 31 })
}

/// Where a pair's rank comes from.
pub(super) enum Ranks {
    Table(PairTable),
    /// transformers' merges for a SentencePiece vocabulary without any: every split of every
    /// token into two pieces, ordered by the token's score (Gemma: its position), then by the
    /// token's first position, then the left piece's score, the right one's, and the split's
    /// place (`sentencepiece::derive_merges`, kept as the test oracle, builds that list).
    Derived {
        scores: Vec<f32>,
        by_position: bool,
    },
}

/// A BPE model for `tokenizers::TokenizerImpl`.
pub(super) struct Bpe {
    vocab: Vocab,
    ranks: Ranks,
    unk: Option<u32>,
    fuse_unk: bool,
    /// `<0xNN>` ids when unknown characters fall back to bytes.
    bytes: Option<Box<[Option<u32>; 256]>>,
}

#[derive(Clone, Copy)]
struct Symbol {
    id: u32,
    prev: isize,
    next: isize,
    len: usize,
}

impl Bpe {
    /// `merges`: explicit merges in rank order, or `None` to derive them from `derived`'s
    /// scores (one per piece) and ranking; `sentencepiece`: unknown characters fall back to
    /// `<0xNN>` tokens, and runs of unknown ones fuse into one `unk`.
    pub(super) fn new(
        pieces: &[String],
        merges: Option<Vec<(String, String)>>,
        derived: Option<(Vec<f32>, bool)>,
        unk: Option<u32>,
        sentencepiece: bool,
    ) -> Result<Bpe> {
        let vocab = Vocab::new(pieces)?;
        let ranks = match (merges, derived) {
            (Some(m), _) => Ranks::Table(PairTable::new(&vocab, m)?),
            (None, Some((scores, by_position))) if scores.len() == vocab.len() => {
                Ranks::Derived { scores, by_position }
            }
            _ => return Err(AmuletError::Tokenizer("BPE needs merges or one score per token".into())),
        };
        // `BPE` looks the unknown token up by its text.
        let unk = unk.and_then(|u| pieces.get(u as usize)).and_then(|p| vocab.id(p));
        let bytes = sentencepiece.then(|| Box::new(std::array::from_fn(|b| vocab.id(&format!("<{b:#04X}>")))));
        Ok(Bpe { vocab, ranks, unk, fuse_unk: sentencepiece, bytes })
    }

    /// The rank and merged id of the pair `(l, r)`, if it merges.
    fn rank(&self, l: u32, r: u32, both: &mut String) -> Option<(Rank, u32)> {
        match &self.ranks {
            Ranks::Table(t) => t.get(l, r).map(|(rank, m)| ([rank, 0, 0, 0, 0], m)),
            Ranks::Derived { scores, by_position } => {
                let (lp, rp) = (self.vocab.piece(l), self.vocab.piece(r));
                both.clear();
                both.push_str(lp);
                both.push_str(rp);
                let m = self.vocab.id(both)?;
                let s = |id: u32| descending(scores[id as usize]);
                // By position (Gemma) the merged token alone orders; by score, ties go to its
                // first position.
                let (primary, first) = if *by_position { (m, m) } else { (s(m), self.vocab.first(m)) };
                Some(([primary, first, s(l), s(r), lp.len() as u32], m))
            }
        }
    }

    /// `BPE::merge_word`: the characters of `w` as symbols.
    fn symbols(&self, w: &str) -> Vec<Symbol> {
        let mut out: Vec<Symbol> = Vec::with_capacity(w.len());
        let mut add = |id: u32, len: usize| {
            let at = out.len() as isize;
            if let Some(last) = out.last_mut() {
                last.next = at;
            }
            out.push(Symbol { id, prev: at - 1, next: -1, len });
        };
        let mut unk: Option<(u32, usize)> = None;
        for (i, c) in w.char_indices() {
            let s = &w[i..i + c.len_utf8()];
            if let Some(id) = self.vocab.id(s) {
                if let Some((u, len)) = unk.take() {
                    add(u, len);
                }
                add(id, s.len());
                continue;
            }
            if let Some(bytes) = self.bytes.as_ref().filter(|t| s.bytes().all(|b| t[b as usize].is_some())) {
                // As in `BPE`, a pending unknown token is not flushed here.
                s.bytes().filter_map(|b| bytes[b as usize]).for_each(|id| add(id, 1));
                continue;
            }
            if let Some(u) = self.unk {
                unk = match unk {
                    Some((u, len)) if self.fuse_unk => Some((u, len + s.len())),
                    Some((u, len)) => {
                        add(u, len);
                        Some((u, s.len()))
                    }
                    None => Some((u, s.len())),
                };
            }
        }
        if let Some((u, len)) = unk {
            add(u, len);
        }
        out
    }

    /// `Word::merge_all`: merges by rank, then position, skipping queue entries gone stale.
    fn merge(&self, sym: &mut Vec<Symbol>) {
        let mut both = String::new();
        let mut queue = BinaryHeap::with_capacity(sym.len());
        for pos in 0..sym.len().saturating_sub(1) {
            if let Some((rank, m)) = self.rank(sym[pos].id, sym[pos + 1].id, &mut both) {
                queue.push(Reverse((rank, pos, m)));
            }
        }
        while let Some(Reverse((_, pos, m))) = queue.pop() {
            if sym[pos].len == 0 || sym[pos].next == -1 {
                continue;
            }
            let next = sym[pos].next as usize;
            let right = sym[next];
            if self.rank(sym[pos].id, right.id, &mut both).map(|r| r.1) != Some(m) {
                continue;
            }
            sym[pos] = Symbol { id: m, len: sym[pos].len + right.len, next: right.next, ..sym[pos] };
            sym[next].len = 0;
            if right.next > -1 && (right.next as usize) < sym.len() {
                sym[right.next as usize].prev = pos as isize;
            }
            let cur = sym[pos];
            if cur.prev >= 0 {
                let prev = cur.prev as usize;
                if let Some((rank, m)) = self.rank(sym[prev].id, cur.id, &mut both) {
                    queue.push(Reverse((rank, prev, m)));
                }
            }
            let after = cur.next as usize;
            if cur.next >= 0 && after < sym.len() {
                if let Some((rank, m)) = self.rank(cur.id, sym[after].id, &mut both) {
                    queue.push(Reverse((rank, pos, m)));
                }
            }
        }
        sym.retain(|s| s.len != 0);
    }
}

impl tokenizers::Model for Bpe {
    /// The trait asks for one; nothing here trains (a GGUF vocabulary is fixed).
    type Trainer = BpeTrainer;

    fn tokenize(&self, sequence: &str) -> tokenizers::Result<Vec<Token>> {
        let mut sym = self.symbols(sequence);
        self.merge(&mut sym);
        let mut start = 0;
        Ok(sym
            .iter()
            .map(|s| {
                start += s.len;
                Token::new(s.id, self.vocab.piece(s.id).to_string(), (start - s.len, start))
            })
            .collect())
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.vocab.id(token)
    }

    /// Like `BPE`'s reverse map, only ids that their text maps back to.
    fn id_to_token(&self, id: u32) -> Option<String> {
        let piece = ((id as usize) < self.vocab.len()).then(|| self.vocab.piece(id))?;
        (self.vocab.id(piece) == Some(id)).then(|| piece.to_string())
    }

    fn get_vocab(&self) -> HashMap<String, u32> {
        (0..self.vocab.len() as u32).filter_map(|id| self.id_to_token(id).map(|p| (p, id))).collect()
    }

    fn get_vocab_size(&self) -> usize {
        self.vocab.distinct
    }

    fn save(&self, _: &Path, _: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        Err("a GGUF vocabulary is not saved as tokenizer files".into())
    }

    fn get_trainer(&self) -> BpeTrainer {
        BpeTrainer::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::sentencepiece::derive_merges;
    use super::super::{TextTokenizer, TokenizerFields, TokenizerSpec};
    use super::Bpe;

    /// The derived ranks put every pair where transformers' derived merge list has it: strictly
    /// increasing along the list, ties between a token's splits broken the same way.
    #[test]
    fn derived_ranks_follow_the_derived_merge_list() {
        let alphabet = ['a', 'b', 'c'];
        let mut tokens: Vec<String> = alphabet.iter().map(|c| c.to_string()).collect();
        for len in 2..=4 {
            for i in 0..3usize.pow(len) {
                tokens.push((0..len).map(|k| alphabet[i / 3usize.pow(k) % 3]).collect());
            }
        }
        tokens.push("ab".into()); // spelled twice: the last one counts
        let scores: Vec<f32> = (0..tokens.len()).map(|i| -((i * 7 % 5) as f32)).collect();
        for by_position in [false, true] {
            let bpe = Bpe::new(&tokens, None, Some((scores.clone(), by_position)), None, true).unwrap();
            let mut both = String::new();
            let list = derive_merges(&tokens, &scores, by_position);
            let ranks: Vec<_> = list
                .iter()
                .map(|(l, r)| {
                    let id = |s: &str| bpe.vocab.id(s).unwrap();
                    bpe.rank(id(l), id(r), &mut both).unwrap().0
                })
                .collect();
            assert!(ranks.windows(2).all(|w| w[0] < w[1]), "by_position {by_position}");
        }
    }

    /// Seeded vocabularies with what the real ones rarely show: tied scores, pieces spelled
    /// twice, no byte tokens (unknown characters fuse into `<unk>`), explicit merges listing a
    /// pair twice; our BPE must give `tokenizers`' ids on seeded text.
    #[test]
    fn seeded_vocabularies_match_tokenizers_bpe() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as usize % n
        };
        let alphabet = ['a', 'b', 'c', 'd', '▁', 'é'];
        for round in 0..40 {
            let (byte_tokens, explicit) = (round % 2 == 0, round % 3 == 0);
            let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
            if byte_tokens {
                tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
            }
            tokens.extend(alphabet[..5].iter().map(|c| c.to_string()));
            // Runs of one letter split several ways into pieces that overlap (`aa|a` or `a|aa`).
            tokens.extend(["aa", "aaa", "aaaa", "bb", "bbb"].map(String::from));
            let singles = tokens.len();
            while tokens.len() < singles + 120 {
                let len = 2 + next(4);
                tokens.push((0..len).map(|_| alphabet[next(5)]).collect());
            }
            let scores: Vec<f32> = (0..tokens.len()).map(|_| -(next(6) as f32)).collect();
            let merges = explicit.then(|| {
                let mut m: Vec<String> = Vec::new();
                for t in tokens.iter().skip(3).filter(|t| t.chars().count() > 1) {
                    let at = t.char_indices().nth(1 + next(t.chars().count() - 1)).map_or(1, |(i, _)| i);
                    let (l, r) = t.split_at(at);
                    if tokens.iter().any(|x| x == l) && tokens.iter().any(|x| x == r) {
                        m.push(format!("{l} {r}"));
                    }
                }
                m.push(m[0].clone());
                m
            });
            let fields = || TokenizerFields {
                model: "llama".into(),
                arch: Some("llama".into()),
                tokens: tokens.clone(),
                scores: Some(scores.clone()),
                merges: merges.clone(),
                bos_id: Some(1),
                eos_id: Some(2),
                unk_id: Some(0),
                add_bos: true,
                ..Default::default()
            };
            let ours = TextTokenizer::from_spec(TokenizerSpec::new(fields()).unwrap()).unwrap();
            let reference = TextTokenizer::reference_from_spec(TokenizerSpec::new(fields()).unwrap()).unwrap();
            for i in 0..60 {
                let text: String = if i % 3 == 0 {
                    "a".repeat(2 + next(9)) + &"b".repeat(next(5))
                } else {
                    (0..1 + next(30)).map(|_| [alphabet[next(6)], ' ', 'x', 'é'][next(4).min(next(4))]).collect()
                };
                let want = reference.encode(&text, true).unwrap();
                assert_eq!(ours.encode(&text, true).unwrap(), want, "round {round}: {text:?}");
                assert_eq!(ours.decode(&want, false).unwrap(), reference.decode(&want, false).unwrap());
            }
        }
    }
}
