//! The model layer: architecture code over one backend seam.
//!
//! `LanguageModel` is that seam: the engine drives sequences through it and cannot tell
//! which backend runs them. A forward call takes ANY number of sequences, each with its own
//! KV cache and position; all their rows go through each weight matrix together, so the
//! two Amulet contexts cost one pass over the weights per step.

pub mod attention;
pub mod config;
pub mod transformer;

pub use config::{Activation, Arch, ModelConfig, RopeLayout};
pub use transformer::CpuModel;

use crate::error::Result;

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
    /// Appends `tokens` to each listed sequence (one step, or a whole prompt) and returns,
    /// per entry, the logits after its last token. On error no cache is changed.
    fn forward(&mut self, batch: &[(SeqId, &[u32])]) -> Result<Vec<Vec<f32>>>;
}
