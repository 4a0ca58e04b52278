//! Finished sequences kept for the next request. A conversation's next turn starts with the
//! whole previous exchange, so the sequence that ran it (in each context: base and
//! preference) is taken back, cut to the part the new prompt shares, and only the rest is
//! read. An LRU bounded by the bytes of KV cache its sequences hold: the engine owns this
//! policy, the model owns the memory (the sequences are the model's).

use crate::model::SeqId;

/// The shortest shared prefix worth taking a sequence for (below it, a fresh prefill is as
/// cheap and leaves the cached sequence for a better match).
const MIN_SHARED: usize = 8;

struct Entry {
    /// The tokens the sequence's cache holds, in order.
    tokens: Vec<u32>,
    seq: SeqId,
    bytes: usize,
    used: u64,
}

pub struct PrefixCache {
    entries: Vec<Entry>,
    budget: usize,
    clock: u64,
}

/// What `take` hands back: the sequence, and how many of its tokens the new prompt shares
/// (the caller cuts the sequence to that length).
#[derive(Debug, PartialEq)]
pub struct Reuse {
    pub seq: SeqId,
    pub shared: usize,
}

impl PrefixCache {
    pub fn new(budget: usize) -> Self {
        PrefixCache { entries: Vec::new(), budget, clock: 0 }
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Bytes of KV cache the kept sequences hold.
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.bytes).sum()
    }

    /// How many sequences are kept.
    pub fn count(&self) -> usize {
        self.entries.len()
    }

    /// Takes out the sequence sharing the longest prefix with `prompt`, if it shares at least
    /// MIN_SHARED tokens. At most `prompt.len() - 1` are reused: the last prompt token must be
    /// run to give the next token's logits.
    pub fn take(&mut self, prompt: &[u32]) -> Option<Reuse> {
        let (best, shared) = self.best(prompt)?;
        let e = self.entries.swap_remove(best);
        Some(Reuse { seq: e.seq, shared })
    }

    /// How many tokens `take(prompt)` would reuse (0: none), without taking anything. The
    /// engine asks for both contexts first and lets the longer match take first, so that the
    /// base context does not take the preference context's sequence for its first few tokens.
    pub fn shared(&self, prompt: &[u32]) -> usize {
        self.best(prompt).map_or(0, |(_, n)| n)
    }

    fn best(&self, prompt: &[u32]) -> Option<(usize, usize)> {
        let limit = prompt.len().saturating_sub(1);
        let (best, shared) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, e.tokens.iter().zip(prompt).take(limit).take_while(|(a, b)| a == b).count()))
            .max_by_key(|&(i, n)| (n, self.entries[i].used))?;
        (shared >= MIN_SHARED).then_some((best, shared))
    }

    /// Keeps a finished sequence holding `tokens`; returns the sequences evicted (least
    /// recently used first) to stay within the budget, which the caller frees. A sequence
    /// larger than the whole budget is returned at once.
    pub fn put(&mut self, tokens: Vec<u32>, seq: SeqId, bytes: usize) -> Vec<SeqId> {
        self.clock += 1;
        // One entry per token list: an identical older one is replaced.
        let mut evicted: Vec<SeqId> = Vec::new();
        if let Some(i) = self.entries.iter().position(|e| e.tokens == tokens) {
            evicted.push(self.entries.swap_remove(i).seq);
        }
        self.entries.push(Entry { tokens, seq, bytes, used: self.clock });
        while self.bytes() > self.budget {
            let Some(oldest) = (0..self.entries.len()).min_by_key(|&i| self.entries[i].used) else { break };
            evicted.push(self.entries.swap_remove(oldest).seq);
        }
        evicted
    }

    /// Empties the cache; returns every sequence, for the caller to free.
    pub fn clear(&mut self) -> Vec<SeqId> {
        self.entries.drain(..).map(|e| e.seq).collect()
    }

    /// A new budget; returns the sequences evicted to meet it.
    pub fn set_budget(&mut self, budget: usize) -> Vec<SeqId> {
        self.budget = budget;
        let mut evicted = Vec::new();
        while self.bytes() > self.budget {
            let Some(oldest) = (0..self.entries.len()).min_by_key(|&i| self.entries[i].used) else { break };
            evicted.push(self.entries.swap_remove(oldest).seq);
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: u32) -> Vec<u32> {
        (0..n).collect()
    }

    #[test]
    fn the_longest_shared_prefix_is_taken_and_removed() {
        let mut c = PrefixCache::new(1000);
        assert!(c.put(seq(20), 1, 10).is_empty());
        let mut other = seq(12);
        other.extend([99, 98, 97]);
        assert!(c.put(other, 2, 10).is_empty());
        let mut prompt = seq(30);
        prompt[25] = 7;
        assert_eq!(c.take(&prompt), Some(Reuse { seq: 1, shared: 20 }));
        assert_eq!(c.count(), 1);
        // Entry 2 shares 12 tokens with this prompt.
        assert_eq!(c.take(&seq(16)), Some(Reuse { seq: 2, shared: 12 }));
        assert_eq!(c.count(), 0);
    }

    #[test]
    fn shared_peeks_without_taking() {
        let mut c = PrefixCache::new(1000);
        c.put(seq(20), 1, 10);
        assert_eq!(c.shared(&seq(30)), 20);
        assert_eq!(c.shared(&seq(5)), 0);
        assert_eq!(c.count(), 1);
    }

    #[test]
    fn the_last_prompt_token_is_always_run_and_short_matches_are_left() {
        let mut c = PrefixCache::new(1000);
        c.put(seq(20), 1, 10);
        assert_eq!(c.take(&seq(20)), Some(Reuse { seq: 1, shared: 19 }));
        c.put(seq(20), 1, 10);
        assert_eq!(c.take(&seq(MIN_SHARED as u32)), None, "7 shared tokens are not worth a sequence");
        assert_eq!(c.take(&[5, 6, 7]), None);
        assert_eq!(c.count(), 1);
    }

    #[test]
    fn the_budget_evicts_the_least_recently_used() {
        let mut c = PrefixCache::new(25);
        assert!(c.put(seq(10), 1, 10).is_empty());
        assert!(c.put(seq(11), 2, 10).is_empty());
        assert_eq!(c.put(seq(12), 3, 10), vec![1]);
        assert_eq!(c.bytes(), 20);
        assert_eq!(c.put(seq(40), 4, 100), vec![2, 3, 4], "a sequence over the whole budget is not kept");
        assert_eq!(c.bytes(), 0);
        c.put(seq(10), 5, 10);
        assert_eq!(c.put(seq(10), 6, 10), vec![5], "the same tokens twice: the newer replaces the older");
        assert_eq!(c.set_budget(0), vec![6]);
        assert_eq!(c.clear(), Vec::<SeqId>::new());
    }
}
