//! The engine owns a request: builds the contexts, prefills them as one batch, then runs
//! the step loop (one batched forward for every live sequence, then align + sample per
//! method) and streams each token out through a callback.

use std::collections::HashMap;

use crate::align::{Aligner, Method};
use crate::chat_template::{ChatMessage, ChatTemplate};
use crate::error::{AmuletError, Result};
use crate::gguf::Gguf;
use crate::model::{CpuModel, LanguageModel, SeqId};
use crate::prompt::{encode_context, validate_preference, Conversation, Placement};
use crate::sample::{top_candidates, Sampler, SamplingParams};
use crate::tokenizer::{StreamDecoder, TextTokenizer};

/// What `engine.info` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub architecture: String,
    pub quantization: String,
    pub context_length: usize,
    pub vocab_size: usize,
    pub device: String,
    pub chat_template_fallback: bool,
}

/// One generation request; several methods share the question and run as one batch.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub conversation: Conversation,
    pub preference: Option<String>,
    pub placement: Placement,
    pub methods: Vec<Method>,
    pub sampling: SamplingParams,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Top candidates per step under base, pref and the combined distribution (0 = none).
    pub top_logprobs: usize,
    /// Keep going past end-of-turn tokens (benchmarks measure a fixed token count).
    pub ignore_eos: bool,
}

impl GenerateRequest {
    pub fn new(question: &str) -> Self {
        GenerateRequest {
            conversation: Conversation { messages: vec![ChatMessage::new("user", question)], system: None },
            preference: None,
            placement: Placement::System,
            methods: vec![Method::default()],
            sampling: SamplingParams::default(),
            max_tokens: 128,
            stop: Vec::new(),
            top_logprobs: 0,
            ignore_eos: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Candidate {
    pub id: u32,
    pub text: String,
    pub prob: f32,
}

/// Top candidates at one step; a distribution the method did not compute is None.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct StepLogprobs {
    pub base: Option<Vec<Candidate>>,
    pub pref: Option<Vec<Candidate>>,
    pub combined: Vec<Candidate>,
}

/// One streamed token of one method.
#[derive(Debug, Clone)]
pub struct TokenEvent {
    /// Index into `GenerateRequest::methods`.
    pub method: usize,
    pub token: u32,
    /// New text, always whole UTF-8 characters (may be empty while a character is split).
    pub text: String,
    pub logprobs: Option<StepLogprobs>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ContextFull,
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContextFull => "context_full",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Completion {
    pub method: String,
    pub text: String,
    pub tokens: Vec<u32>,
    pub finish_reason: FinishReason,
    pub steps: Vec<StepLogprobs>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Timings {
    pub prefill_ms: f64,
    pub prefill_tokens: usize,
    pub decode_ms: f64,
    /// Decode steps (each produces one token for every live method).
    pub decode_steps: usize,
    pub decode_tokens_per_s: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GenerateOutput {
    pub completions: Vec<Completion>,
    pub prompt_tokens_base: usize,
    pub prompt_tokens_pref: usize,
    pub timings: Timings,
}

/// Monotonic milliseconds, on every target (the wasm face supplies performance.now()).
pub type Clock = fn() -> f64;

#[cfg(not(target_arch = "wasm32"))]
fn default_clock() -> f64 {
    use std::sync::OnceLock;
    static START: OnceLock<std::time::Instant> = OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64() * 1e3
}

#[cfg(target_arch = "wasm32")]
fn default_clock() -> f64 {
    0.0
}

pub struct Engine {
    model: Box<dyn LanguageModel>,
    tokenizer: TextTokenizer,
    template: ChatTemplate,
    info: ModelInfo,
    end_ids: Vec<u32>,
    clock: Clock,
}

/// Per-method state during a request.
struct Track<'t> {
    aligner: Aligner,
    sampler: Sampler,
    base_seq: Option<SeqId>,
    pref_seq: Option<SeqId>,
    decoder: StreamDecoder<'t>,
    text: String,
    /// Text held back because it might be the start of a stop string.
    pending: String,
    tokens: Vec<u32>,
    steps: Vec<StepLogprobs>,
    finish: Option<FinishReason>,
    last: u32,
}

fn quantization_name(file_type: Option<u32>) -> String {
    let names = [
        (0, "F32"), (1, "F16"), (2, "Q4_0"), (3, "Q4_1"), (7, "Q8_0"), (8, "Q5_0"), (9, "Q5_1"),
        (10, "Q2_K"), (11, "Q3_K_S"), (12, "Q3_K_M"), (13, "Q3_K_L"), (14, "Q4_K_S"), (15, "Q4_K_M"),
        (16, "Q5_K_S"), (17, "Q5_K_M"), (18, "Q6_K"), (32, "BF16"),
    ];
    match file_type {
        Some(t) => names.iter().find(|(k, _)| *k == t).map_or(format!("file type {t}"), |(_, n)| n.to_string()),
        None => "unknown".into(),
    }
}

impl Engine {
    /// Loads a GGUF model held in memory on the CPU backend. `progress(done, total)` is
    /// called while the layers are built.
    pub fn load(bytes: &[u8], progress: impl FnMut(usize, usize)) -> Result<Engine> {
        let gguf = Gguf::parse(bytes)?;
        let model = CpuModel::load(&gguf, bytes, progress)?;
        Self::with_model(&gguf, Box::new(model))
    }

    /// Wraps an already built model (any backend) with the tokenizer and template of `gguf`.
    pub fn with_model(gguf: &Gguf, model: Box<dyn LanguageModel>) -> Result<Engine> {
        let tokenizer = TextTokenizer::from_gguf(gguf)?;
        let template = ChatTemplate::from_gguf(gguf, &tokenizer)?;
        let cfg = model.config();
        if tokenizer.vocab_size() > cfg.vocab_size {
            return Err(AmuletError::BadModel(format!(
                "the tokenizer has {} tokens but the embedding matrix only {}",
                tokenizer.vocab_size(),
                cfg.vocab_size
            )));
        }
        // Generation ends at eos and at the chat turn terminators the template writes.
        let mut end_ids: Vec<u32> = tokenizer.eos_id().into_iter().collect();
        for t in ["<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>"] {
            if let Some(id) = tokenizer.token_id(t) {
                if !end_ids.contains(&id) {
                    end_ids.push(id);
                }
            }
        }
        let info = ModelInfo {
            name: gguf.opt_str("general.name").unwrap_or("unnamed").to_string(),
            architecture: cfg.arch.name().to_string(),
            quantization: quantization_name(gguf.opt_u32("general.file_type")?),
            context_length: cfg.context_length,
            vocab_size: cfg.vocab_size,
            device: model.device().to_string(),
            chat_template_fallback: template.is_fallback(),
        };
        Ok(Engine { model, tokenizer, template, info, end_ids, clock: default_clock })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    pub fn model_mut(&mut self) -> &mut dyn LanguageModel {
        self.model.as_mut()
    }

    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// The token ids of the base and preference contexts (pref is None without preference).
    pub fn contexts(&self, req: &GenerateRequest) -> Result<(Vec<u32>, Option<Vec<u32>>)> {
        req.conversation.validate()?;
        let base = encode_context(
            &self.template,
            &self.tokenizer,
            &req.conversation.with_preference(None, req.placement),
        )?;
        let pref = match &req.preference {
            Some(p) => {
                validate_preference(p)?;
                Some(encode_context(
                    &self.template,
                    &self.tokenizer,
                    &req.conversation.with_preference(Some(p), req.placement),
                )?)
            }
            None => None,
        };
        Ok((base, pref))
    }

    /// Runs a request. `on_token` sees every token of every method as it is chosen and
    /// returns false to cancel (the request then ends with finish reason `cancelled`).
    pub fn generate(
        &mut self,
        req: &GenerateRequest,
        on_token: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<GenerateOutput> {
        if req.methods.is_empty() {
            return Err(AmuletError::bad_option("methods", "needs at least one method"));
        }
        if req.max_tokens == 0 || req.max_tokens > self.info.context_length {
            return Err(AmuletError::bad_option(
                "max_tokens",
                format!("must be between 1 and the context length {}", self.info.context_length),
            ));
        }
        if req.top_logprobs > 20 {
            return Err(AmuletError::bad_option("top_logprobs", "must be at most 20"));
        }
        if req.stop.iter().any(|s| s.is_empty()) {
            return Err(AmuletError::bad_option("stop", "stop strings must not be empty"));
        }
        let needs_pref = req.methods.iter().any(|m| m.needs_pref());
        if needs_pref && req.preference.is_none() {
            return Err(AmuletError::bad_option(
                "preference",
                "is required by methods pref, la and amulet (e.g. \"concise\")",
            ));
        }
        let (base_ids, pref_ids) = self.contexts(req)?;
        let longest = base_ids.len().max(pref_ids.as_ref().map_or(0, |p| p.len()));
        if longest >= self.info.context_length {
            return Err(AmuletError::ContextOverflow(format!(
                "the prompt has {longest} tokens; the model's context length is {}",
                self.info.context_length
            )));
        }

        let mut seqs: Vec<SeqId> = Vec::new();
        let result = self.run(req, &base_ids, pref_ids.as_deref(), &mut seqs, on_token);
        for s in seqs {
            self.model.free_sequence(s);
        }
        let (completions, timings) = result?;
        Ok(GenerateOutput {
            completions,
            prompt_tokens_base: base_ids.len(),
            prompt_tokens_pref: pref_ids.map_or(0, |p| p.len()),
            timings,
        })
    }

    fn run(
        &mut self,
        req: &GenerateRequest,
        base_ids: &[u32],
        pref_ids: Option<&[u32]>,
        seqs: &mut Vec<SeqId>,
        on_token: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<(Vec<Completion>, Timings)> {
        let mut tracks = Vec::with_capacity(req.methods.len());
        for (i, method) in req.methods.iter().enumerate() {
            let aligner = Aligner::new(*method)?;
            // Each method draws its own stream, reproducible from the one seed.
            let sampling = SamplingParams { seed: req.sampling.seed.wrapping_add(i as u64), ..req.sampling.clone() };
            let sampler = Sampler::new(sampling)?;
            let mut new_seq = |model: &mut Box<dyn LanguageModel>| {
                let s = model.new_sequence();
                seqs.push(s);
                s
            };
            let base_seq = aligner.needs_base().then(|| new_seq(&mut self.model));
            let pref_seq = aligner.needs_pref().then(|| new_seq(&mut self.model));
            tracks.push(Track {
                aligner,
                sampler,
                base_seq,
                pref_seq,
                decoder: StreamDecoder::new(&self.tokenizer, true),
                text: String::new(),
                pending: String::new(),
                tokens: Vec::new(),
                steps: Vec::new(),
                finish: None,
                last: 0,
            });
        }

        // Prefill: every sequence's prompt in one batched forward.
        let t0 = (self.clock)();
        let mut batch: Vec<(SeqId, &[u32])> = Vec::new();
        for t in &tracks {
            if let Some(s) = t.base_seq {
                batch.push((s, base_ids));
            }
            if let (Some(s), Some(p)) = (t.pref_seq, pref_ids) {
                batch.push((s, p));
            }
        }
        let prefill_tokens = batch.iter().map(|(_, t)| t.len()).sum();
        let logits = self.model.forward(&batch)?;
        let mut rows: HashMap<SeqId, Vec<f32>> = batch.iter().map(|(s, _)| *s).zip(logits).collect();
        let mut timings = Timings { prefill_ms: (self.clock)() - t0, prefill_tokens, ..Default::default() };

        let vocab = self.info.vocab_size;
        let mut combined = vec![0f32; vocab];
        let t1 = (self.clock)();
        let mut cancelled = false;
        for step in 0..req.max_tokens {
            for (mi, track) in tracks.iter_mut().enumerate() {
                if track.finish.is_some() {
                    continue;
                }
                let base = track.base_seq.and_then(|s| rows.get(&s)).map(|r| r.as_slice());
                let pref = track.pref_seq.and_then(|s| rows.get(&s)).map(|r| r.as_slice());
                track.aligner.combine(base, pref, &mut combined)?;
                let token = track.sampler.sample(&combined)?;
                let logprobs = (req.top_logprobs > 0)
                    .then(|| self.step_logprobs(base, pref, &combined, req.top_logprobs))
                    .transpose()?;
                track.tokens.push(token);
                track.last = token;
                let ended = !req.ignore_eos && self.end_ids.contains(&token);
                let mut delta = if ended { String::new() } else { track.decoder.push(token)? };
                if ended {
                    delta = track.decoder.finish()?;
                    track.finish = Some(FinishReason::Stop);
                }
                let (emit, hit_stop) = apply_stop(&mut track.pending, &delta, &req.stop, track.finish.is_some());
                track.text.push_str(&emit);
                if hit_stop {
                    track.finish = Some(FinishReason::Stop);
                }
                if let Some(l) = &logprobs {
                    track.steps.push(l.clone());
                }
                let event = TokenEvent { method: mi, token, text: emit, logprobs };
                if !on_token(&event) {
                    cancelled = true;
                }
            }
            timings.decode_steps = step + 1;
            if cancelled {
                for t in tracks.iter_mut().filter(|t| t.finish.is_none()) {
                    t.finish = Some(FinishReason::Cancelled);
                }
                break;
            }
            // Next step: every live sequence advances by its method's token, as one batch.
            let mut batch: Vec<(SeqId, [u32; 1])> = Vec::new();
            for t in tracks.iter_mut().filter(|t| t.finish.is_none()) {
                let full = [t.base_seq, t.pref_seq]
                    .iter()
                    .flatten()
                    .any(|&s| self.model.sequence_len(s).unwrap_or(0) + 1 > self.info.context_length);
                if full {
                    t.finish = Some(FinishReason::ContextFull);
                    continue;
                }
                for s in [t.base_seq, t.pref_seq].into_iter().flatten() {
                    batch.push((s, [t.last]));
                }
            }
            if batch.is_empty() || step + 1 == req.max_tokens {
                break;
            }
            let refs: Vec<(SeqId, &[u32])> = batch.iter().map(|(s, t)| (*s, &t[..])).collect();
            let logits = self.model.forward(&refs)?;
            rows.clear();
            rows.extend(batch.iter().map(|(s, _)| *s).zip(logits));
        }
        timings.decode_ms = (self.clock)() - t1;
        let generated: usize = tracks.iter().map(|t| t.tokens.len()).max().unwrap_or(0);
        timings.decode_tokens_per_s =
            if timings.decode_ms > 0.0 { generated as f64 / (timings.decode_ms / 1e3) } else { 0.0 };

        let mut completions = Vec::with_capacity(tracks.len());
        for t in tracks {
            let mut text = t.text;
            if t.finish.is_none() || t.finish == Some(FinishReason::Cancelled) {
                // Length or cancel: flush what was held back (incomplete characters, stop prefixes).
                let mut decoder = t.decoder;
                text.push_str(&t.pending);
                text.push_str(&decoder.finish()?);
            }
            completions.push(Completion {
                method: t.aligner.method().name().to_string(),
                text,
                tokens: t.tokens,
                finish_reason: t.finish.unwrap_or(FinishReason::Length),
                steps: t.steps,
            });
        }
        Ok((completions, timings))
    }

    fn candidates(&self, scores: &[f32], n: usize) -> Result<Vec<Candidate>> {
        top_candidates(scores, n)
            .into_iter()
            .map(|(id, prob)| Ok(Candidate { id, text: self.tokenizer.token_text(id)?, prob }))
            .collect()
    }

    fn step_logprobs(&self, base: Option<&[f32]>, pref: Option<&[f32]>, combined: &[f32], n: usize) -> Result<StepLogprobs> {
        Ok(StepLogprobs {
            base: base.map(|b| self.candidates(b, n)).transpose()?,
            pref: pref.map(|p| self.candidates(p, n)).transpose()?,
            combined: self.candidates(combined, n)?,
        })
    }
}

/// Adds `delta` to the held-back text and returns (what can be shown now, whether a stop
/// string was found). Text that could still grow into a stop string is held back; at a
/// stop string everything from it on is dropped.
fn apply_stop(pending: &mut String, delta: &str, stops: &[String], flush: bool) -> (String, bool) {
    pending.push_str(delta);
    if let Some(cut) = stops.iter().filter_map(|s| pending.find(s.as_str())).min() {
        let out = pending[..cut].to_string();
        pending.clear();
        return (out, true);
    }
    if flush {
        return (std::mem::take(pending), false);
    }
    // Keep the longest suffix of `pending` that is a proper prefix of some stop string.
    let mut keep = 0;
    for s in stops {
        for (i, _) in pending.char_indices() {
            let tail = &pending[i..];
            if tail.len() > keep && s.starts_with(tail) {
                keep = tail.len();
            }
        }
    }
    let split = pending.len() - keep;
    let out = pending[..split].to_string();
    pending.drain(..split);
    (out, false)
}

#[cfg(test)]
mod tests {
    use super::apply_stop;

    #[test]
    fn stop_strings_are_cut_even_across_deltas() {
        let stops = vec!["END".to_string()];
        let mut p = String::new();
        assert_eq!(apply_stop(&mut p, "hello E", &stops, false), ("hello ".into(), false));
        assert_eq!(apply_stop(&mut p, "N", &stops, false), ("".into(), false));
        assert_eq!(apply_stop(&mut p, "D and more", &stops, false), ("".into(), true));
    }

    #[test]
    fn held_back_text_is_released_when_it_cannot_be_a_stop() {
        let stops = vec!["END".to_string()];
        let mut p = String::new();
        assert_eq!(apply_stop(&mut p, "E", &stops, false), ("".into(), false));
        assert_eq!(apply_stop(&mut p, "x", &stops, false), ("Ex".into(), false));
        assert_eq!(apply_stop(&mut p, "üE", &stops, true), ("üE".into(), false));
    }
}
