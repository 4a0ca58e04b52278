//! The model layer: architecture code over one backend seam.
//!
//! `LanguageModel` is that seam: the engine drives sequences through it and cannot tell
//! which backend runs them. A forward call takes ANY number of sequences, each with its own
//! KV cache and position; all their rows go through each weight matrix together, so the
//! two Amulet contexts cost one pass over the weights per step.

pub mod attention;
pub mod config;
mod embeddings;
pub mod gpu;
pub mod memory;
pub mod select;
pub mod transformer;

pub use config::{Activation, Arch, ModelConfig, RopeLayout};
#[cfg(not(target_arch = "wasm32"))]
pub use select::load_model;
pub use select::{load_model_async, DeviceChoice, Loaded};
pub use transformer::CpuModel;

use crate::error::{AmuletError, Result};

/// A boxed future that stays on its thread (wgpu's browser objects are not Send).
pub type LocalFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + 'a>>;

/// Handle of one sequence (one KV cache) inside a model.
pub type SeqId = usize;

pub trait LanguageModel {
    fn config(&self) -> &ModelConfig;
    /// "cpu" or "webgpu": what `engine.info` reports.
    fn device(&self) -> &'static str;
    /// Starts an empty sequence with its own KV cache.
    fn new_sequence(&mut self) -> SeqId;
    /// A new sequence whose cache is a copy of `source`'s (a shared prompt prefix is then
    /// computed once). None if `source` does not exist.
    fn fork_sequence(&mut self, source: SeqId) -> Option<SeqId>;
    /// Releases a sequence's cache; unknown ids are ignored.
    fn free_sequence(&mut self, id: SeqId);
    /// Tokens already in the sequence's cache (its next position), None if unknown.
    fn sequence_len(&self, id: SeqId) -> Option<usize>;
    /// Cuts a sequence's cache back to its first `len` tokens (a kept conversation reused by
    /// a prompt that shares only part of it). False where the backend cannot, or `id` is unknown.
    fn truncate_sequence(&mut self, id: SeqId, len: usize) -> bool {
        let _ = (id, len);
        false
    }
    /// Gives back the spare room a sequence's cache grew into (it is about to be kept, not
    /// extended): a kept sequence then costs what it holds. The default does nothing (a paged
    /// cache has no spare room beyond its last page).
    fn shrink_sequence(&mut self, id: SeqId) {
        let _ = id;
    }
    /// All the KV space there is, where it is bounded (a GPU's largest binding); None where
    /// it grows with memory (the CPU).
    fn kv_capacity_bytes(&self) -> Option<usize> {
        None
    }
    /// Bytes the sequence's cache holds (what keeping it costs).
    fn sequence_bytes(&self, id: SeqId) -> usize {
        let _ = id;
        0
    }
    /// Appends `tokens` to each listed sequence (one step, or a whole prompt) and returns,
    /// per entry, the logits after its last token. On error no cache is changed.
    fn forward(&mut self, batch: &[(SeqId, &[u32])]) -> Result<Vec<Vec<f32>>>;
    /// `forward` as a future, for a backend whose results arrive later: a GPU in a browser
    /// cannot block on its readback. The default runs `forward`.
    fn forward_async<'a>(&'a mut self, batch: &'a [(SeqId, &'a [u32])]) -> LocalFuture<'a, Result<Vec<Vec<f32>>>> {
        Box::pin(std::future::ready(self.forward(batch)))
    }
    /// A decode step that also applies each method's linear combine on the device (`requests`
    /// index into `batch`): a GPU draws the tokens too, so only they come back; the CPU
    /// combines the rows before the output projection and returns one score row per request
    /// (`Combined`). A backend may return the logit rows instead (the default; also a GPU
    /// when a row is not finite or a nucleus is too wide): the caller then combines and
    /// samples them itself with the same uniforms.
    fn forward_choose<'a>(
        &'a mut self,
        batch: &'a [(SeqId, &'a [u32])],
        requests: &'a [TokenRequest],
    ) -> LocalFuture<'a, Result<StepOutput>> {
        let _ = requests;
        Box::pin(async move { Ok(StepOutput::Rows(self.forward_async(batch).await?)) })
    }
    /// Why the device is gone (a lost GPU), or None while it works.
    fn lost(&self) -> Option<String> {
        None
    }
}

/// One method's next token, to be drawn by the backend: which rows of the batch it combines
/// (a linear combine: base, pref, la, amulet's closed form) and how it samples. The uniform
/// is the method's own seeded draw, so a device draws what the CPU path would.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenRequest {
    pub base: Option<usize>,
    pub pref: Option<usize>,
    /// With both rows: pref + strength * (pref - base).
    pub strength: f32,
    /// 0: greedy (lowest id among equal maxima).
    pub temperature: f64,
    pub top_k: Option<usize>,
    pub top_p: Option<f64>,
    /// The uniform the CPU sampler would use for this draw (None when greedy).
    pub uniform: Option<f64>,
    /// Top candidates to return (with their softmax probabilities) per distribution.
    pub top_n: usize,
}

impl TokenRequest {
    /// The request's combine of two rows of the same length (`base`, `pref`: the rows it
    /// uses) into `out`: `pref + strength * (pref - base)` with both, else the one row. The
    /// same formula whether the rows are logits or the hidden states the output projection
    /// takes (it is linear, so the two agree up to rounding: docs/method.md §4).
    pub fn mix(&self, base: Option<&[f32]>, pref: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
        match (base, pref) {
            (Some(b), Some(p)) if b.len() == out.len() && p.len() == out.len() => {
                let k = self.strength;
                for ((o, &p), &b) in out.iter_mut().zip(p).zip(b) {
                    *o = p + k * (p - b);
                }
                Ok(())
            }
            (Some(r), None) | (None, Some(r)) if r.len() == out.len() => {
                out.copy_from_slice(r);
                Ok(())
            }
            _ => Err(AmuletError::Compute(format!(
                "a token request combines rows of {:?} and {:?} values into {}",
                base.map(<[f32]>::len),
                pref.map(<[f32]>::len),
                out.len()
            ))),
        }
    }
}

/// A token drawn on the device, with the top candidates of each distribution when asked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChosenToken {
    pub id: u32,
    pub top_base: Vec<(u32, f32)>,
    pub top_pref: Vec<(u32, f32)>,
    pub top_combined: Vec<(u32, f32)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepOutput {
    /// One per request.
    Tokens(Vec<ChosenToken>),
    /// One logit row per batch entry.
    Rows(Vec<Vec<f32>>),
    /// `scores`: one row per request, its combine formed before the output projection;
    /// `rows`: one logit row per batch entry when some request wants top candidates (the
    /// base and pref distributions'), else empty.
    Combined { scores: Vec<Vec<f32>>, rows: Vec<Vec<f32>> },
}

/// The checks every backend makes before touching a cache: known, distinct sequences,
/// tokens inside the vocabulary, room in the context.
pub(crate) fn check_batch(
    cfg: &ModelConfig,
    batch: &[(SeqId, &[u32])],
    sequence_len: impl Fn(SeqId) -> Option<usize>,
) -> Result<()> {
    for (i, (id, tokens)) in batch.iter().enumerate() {
        let len = sequence_len(*id).ok_or_else(|| AmuletError::Compute(format!("sequence {id} does not exist")))?;
        if batch[..i].iter().any(|(other, _)| other == id) {
            return Err(AmuletError::Compute(format!("sequence {id} appears twice in one batch")));
        }
        if tokens.is_empty() {
            return Err(AmuletError::Compute(format!("sequence {id}: no tokens to run")));
        }
        if let Some(bad) = tokens.iter().find(|&&t| t as usize >= cfg.vocab_size) {
            return Err(AmuletError::bad_option(
                "tokens",
                format!("token id {bad} is outside the vocabulary of {}", cfg.vocab_size),
            ));
        }
        if len + tokens.len() > cfg.context_length {
            return Err(AmuletError::ContextOverflow(format!(
                "{} tokens would exceed the model's context length of {}",
                len + tokens.len(),
                cfg.context_length
            )));
        }
    }
    Ok(())
}

/// Stores a sequence in the first free entry of `table` (or a new one) and returns its id: sequence
/// ids are reused once freed.
pub(crate) fn insert_sequence<T>(table: &mut Vec<Option<T>>, value: T) -> SeqId {
    match table.iter().position(|s| s.is_none()) {
        Some(i) => {
            table[i] = Some(value);
            i
        }
        None => {
            table.push(Some(value));
            table.len() - 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(base: Option<usize>, pref: Option<usize>, strength: f32) -> TokenRequest {
        TokenRequest { base, pref, strength, temperature: 0.0, top_k: None, top_p: None, uniform: None, top_n: 0 }
    }

    #[test]
    fn mix_extrapolates_from_base_to_pref_or_takes_the_one_row() {
        let (b, p) = ([1.0, -2.0, 0.5], [3.0, -2.0, 0.0]);
        let mut out = [0f32; 3];
        request(Some(0), Some(1), 2.0).mix(Some(&b), Some(&p), &mut out).unwrap();
        assert_eq!(out, [7.0, -2.0, -1.0]);
        request(Some(0), None, 2.0).mix(Some(&b), None, &mut out).unwrap();
        assert_eq!(out, b);
        request(None, Some(1), 0.0).mix(None, Some(&p), &mut out).unwrap();
        assert_eq!(out, p);
    }

    #[test]
    fn mix_of_mismatched_or_missing_rows_is_an_error() {
        let mut out = [0f32; 3];
        let r = request(Some(0), Some(1), 1.0);
        assert!(matches!(r.mix(Some(&[1.0; 2]), Some(&[1.0; 3]), &mut out), Err(AmuletError::Compute(_))));
        assert!(matches!(r.mix(None, None, &mut out), Err(AmuletError::Compute(_))));
        assert!(matches!(r.mix(Some(&[1.0; 4]), None, &mut out), Err(AmuletError::Compute(_))));
    }
}
