//! The engine owns a request: builds the contexts, prefills them as one batch, then runs
//! the step loop (one batched forward for every live sequence, then align + sample per
//! method) and streams each token out through a callback.

mod prefix_cache;
mod stop;
mod types;

use std::collections::HashMap;
use std::sync::Arc;

use crate::align::{Aligner, Method};
use crate::chat_template::ChatTemplate;
use crate::error::{AmuletError, Result};
use crate::gguf::{Gguf, TensorSource};
use crate::model::{
    load_model_async, ChosenToken, CpuModel, DeviceChoice, LanguageModel, Loaded, SeqId, StepOutput, TokenRequest,
};
use crate::prompt::{encode_context, validate_preference};
use crate::sample::{top_candidates, Sampler, SamplingParams};
use crate::tokenizer::{StreamDecoder, TextTokenizer};
use prefix_cache::PrefixCache;
use stop::apply_stop;

/// The default budget of KV cache kept for the next request (`set_prefix_budget`): a
/// conversation of a few thousand tokens in both contexts on a 1.5B model.
pub const DEFAULT_PREFIX_BYTES: usize = 256 << 20;
pub use types::{
    Candidate, Completion, ContextOverflow, FinishReason, GenerateOutput, GenerateRequest, ModelInfo, StepLogprobs,
    Timings, TokenEvent,
};

/// Monotonic milliseconds, on every target (the wasm face supplies performance.now()).
pub type Clock = fn() -> f64;

#[cfg(not(target_arch = "wasm32"))]
fn default_clock() -> f64 {
    crate::backend::pool::now_ms()
}

#[cfg(target_arch = "wasm32")]
fn default_clock() -> f64 {
    0.0
}

/// Builds a replacement model on the CPU when the GPU is lost.
pub type Fallback = Box<dyn FnMut() -> Result<Box<dyn LanguageModel>>>;

pub struct Engine {
    model: Box<dyn LanguageModel>,
    fallback: Option<Fallback>,
    tokenizer: Arc<TextTokenizer>,
    template: ChatTemplate,
    info: ModelInfo,
    end_ids: Vec<u32>,
    clock: Clock,
    /// Finished sequences kept for the next request's prompt (a conversation's history).
    prefix: PrefixCache,
}

/// Per-method state during a request.
struct Track {
    aligner: Aligner,
    sampler: Sampler,
    base_seq: Option<SeqId>,
    pref_seq: Option<SeqId>,
    decoder: StreamDecoder<Arc<TextTokenizer>>,
    text: String,
    /// Text held back because it might be the start of a stop string.
    pending: String,
    tokens: Vec<u32>,
    steps: Vec<StepLogprobs>,
    finish: Option<FinishReason>,
    last: u32,
    /// The next token when the backend drew it (`forward_choose`).
    chosen: Option<ChosenToken>,
    /// The uniform already drawn for the next token, when the backend was asked to draw it
    /// but sent rows back instead: the CPU draws with the same number.
    uniform: Option<f64>,
    /// The next token's scores when the backend combined the rows itself (`Combined`).
    scores: Option<Vec<f32>>,
}

/// A request in flight: owned state, so a caller (the wasm face) can hold it between steps.
pub struct Generation {
    tracks: Vec<Track>,
    rows: HashMap<SeqId, Vec<f32>>,
    combined: Vec<f32>,
    stop: Vec<String>,
    top_logprobs: usize,
    ignore_eos: bool,
    max_tokens: usize,
    step: usize,
    aborted: bool,
    prompt_tokens_base: usize,
    prompt_tokens_pref: usize,
    timings: Timings,
    decode_start: f64,
    released: bool,
    /// The shared-prefix sequence while prefill runs.
    root: Option<SeqId>,
    /// The prompts' token ids (base, preference): with the tokens each sequence ran after
    /// them, what a finished sequence holds, for the prefix cache.
    prompts: [Vec<u32>; 2],
    /// A step or the prefill failed: the caches are not kept.
    failed: bool,
    dropped_turns: usize,
}

impl Generation {
    /// Stops before the next token; `finish` then reports `aborted`.
    pub fn abort(&mut self) {
        self.aborted = true;
        for t in self.tracks.iter_mut().filter(|t| t.finish.is_none()) {
            t.finish = Some(FinishReason::Aborted);
        }
    }

    pub fn is_done(&self) -> bool {
        self.released || self.tracks.iter().all(|t| t.finish.is_some())
    }

    pub fn tokens_generated(&self) -> usize {
        self.tracks.iter().map(|t| t.tokens.len()).max().unwrap_or(0)
    }
}

fn quantization_name(file_type: Option<u32>) -> String {
    let names = [
        (0, "F32"),
        (1, "F16"),
        (2, "Q4_0"),
        (3, "Q4_1"),
        (7, "Q8_0"),
        (8, "Q5_0"),
        (9, "Q5_1"),
        (10, "Q2_K"),
        (11, "Q3_K_S"),
        (12, "Q3_K_M"),
        (13, "Q3_K_L"),
        (14, "Q4_K_S"),
        (15, "Q4_K_M"),
        (16, "Q5_K_S"),
        (17, "Q5_K_M"),
        (18, "Q6_K"),
        (32, "BF16"),
    ];
    match file_type {
        Some(t) => names.iter().find(|(k, _)| *k == t).map_or(format!("file type {t}"), |(_, n)| n.to_string()),
        None => "unknown".into(),
    }
}

/// The tokenizer and chat template of a file. The loaders build them before the weights: in
/// wasm, memory only grows, so the tokenizer's build-time garbage (tens of MB for a large
/// vocabulary) costs nothing there when it comes first, but adds to the page's peak after.
struct Text {
    tokenizer: TextTokenizer,
    template: ChatTemplate,
}

impl Text {
    fn from_gguf(gguf: &Gguf) -> Result<Text> {
        let tokenizer = TextTokenizer::from_gguf(gguf)?;
        let template = ChatTemplate::from_gguf(gguf, &tokenizer)?;
        Ok(Text { tokenizer, template })
    }
}

impl Engine {
    /// Loads a GGUF model held in memory on the CPU backend. `progress(done, total)` is
    /// called while the layers are built.
    pub fn load(bytes: &[u8], progress: impl FnMut(usize, usize)) -> Result<Engine> {
        let gguf = Gguf::parse(bytes)?;
        Self::load_from(&gguf, bytes, progress)
    }

    /// As `load`, reading tensors from `src` one at a time (the file need not be in memory).
    pub fn load_from<S: TensorSource + ?Sized>(
        gguf: &Gguf,
        src: &S,
        progress: impl FnMut(usize, usize),
    ) -> Result<Engine> {
        let text = Text::from_gguf(gguf)?;
        let model = CpuModel::load(gguf, src, progress)?;
        Self::assemble(gguf, text, Box::new(model))
    }

    /// As `load_from`, on the backend `device` picks (`auto`: WebGPU when a hardware
    /// adapter exists and the model fits it, else the CPU; `info().device_reason` says why).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load_on<S: TensorSource + ?Sized>(
        gguf: &Gguf,
        src: &S,
        device: DeviceChoice,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Engine> {
        let text = Text::from_gguf(gguf)?;
        let loaded = crate::model::load_model(gguf, src, device, &mut progress)?;
        Self::with_loaded(gguf, text, loaded)
    }

    /// `load_on` where opening the adapter is asynchronous (a browser).
    pub async fn load_on_async<S: TensorSource + ?Sized>(
        gguf: &Gguf,
        src: &S,
        device: DeviceChoice,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Engine> {
        let text = Text::from_gguf(gguf)?;
        let loaded = load_model_async(gguf, src, device, &mut progress).await?;
        Self::with_loaded(gguf, text, loaded)
    }

    fn with_loaded(gguf: &Gguf, text: Text, Loaded { model, reason }: Loaded) -> Result<Engine> {
        let mut engine = Self::assemble(gguf, text, model)?;
        engine.info.device_reason = reason;
        Ok(engine)
    }

    /// Wraps an already built model (any backend) with the tokenizer and template of `gguf`.
    pub fn with_model(gguf: &Gguf, model: Box<dyn LanguageModel>) -> Result<Engine> {
        Self::assemble(gguf, Text::from_gguf(gguf)?, model)
    }

    fn assemble(gguf: &Gguf, Text { tokenizer, template }: Text, model: Box<dyn LanguageModel>) -> Result<Engine> {
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
            device_reason: String::new(),
            chat_template_fallback: template.is_fallback(),
        };
        Ok(Engine {
            model,
            fallback: None,
            tokenizer: Arc::new(tokenizer),
            template,
            info,
            end_ids,
            clock: default_clock,
            prefix: PrefixCache::new(0),
        }
        .with_prefix_budget(DEFAULT_PREFIX_BYTES))
    }

    fn with_prefix_budget(mut self, bytes: usize) -> Self {
        self.set_prefix_budget(bytes);
        self
    }

    /// How many bytes of KV cache finished sequences may keep for the next request (a
    /// conversation's history); 0 keeps none. Sequences over it are freed now.
    /// Where the KV space is bounded (a GPU), kept sequences get at most half of it, so that a
    /// new request always finds room.
    pub fn set_prefix_budget(&mut self, bytes: usize) {
        let bytes = self.model.kv_capacity_bytes().map_or(bytes, |all| bytes.min(all / 2));
        for seq in self.prefix.set_budget(bytes) {
            self.model.free_sequence(seq);
        }
    }

    /// The budget in force (`set_prefix_budget`'s, or half the KV space where that is less).
    pub fn prefix_budget(&self) -> usize {
        self.prefix.budget()
    }

    /// Frees every kept sequence.
    pub fn clear_prefix_cache(&mut self) {
        for seq in self.prefix.clear() {
            self.model.free_sequence(seq);
        }
    }

    /// Bytes of KV cache the kept sequences hold, and how many there are.
    pub fn prefix_cache_usage(&self) -> (usize, usize) {
        (self.prefix.bytes(), self.prefix.count())
    }

    /// What to run on when the device is lost: the next request after a loss builds the
    /// model with it (the request that saw the loss ends with its error).
    pub fn set_fallback(&mut self, fallback: Fallback) {
        self.fallback = Some(fallback);
    }

    /// Swaps in the fallback model if the device is gone.
    fn recover_lost_device(&mut self) -> Result<()> {
        let Some(why) = self.model.lost() else { return Ok(()) };
        let Some(fallback) = self.fallback.as_mut() else { return Err(AmuletError::Compute(why)) };
        self.model = fallback()?;
        self.info.device = self.model.device().to_string();
        self.info.device_reason = format!("{why}; running on the {} since", self.info.device);
        Ok(())
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The distribution strength k (amulet) or r (la) a method would use, validated.
    pub fn strength(method: Method) -> Result<Option<f64>> {
        Ok(Aligner::new(method)?.strength())
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
        let base =
            encode_context(&self.template, &self.tokenizer, &req.conversation.with_preference(None, req.placement))?;
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

    /// The contexts of `req` once they fit the model's context, and how many of the oldest
    /// user turns were dropped for that (only under `ContextOverflow::TruncateOldest`).
    fn fitting_contexts(&self, req: &GenerateRequest) -> Result<(Vec<u32>, Option<Vec<u32>>, usize)> {
        let ctx = self.info.context_length;
        let mut req = std::borrow::Cow::Borrowed(req);
        let mut dropped = 0;
        loop {
            let (base, pref) = self.contexts(&req)?;
            let longest = base.len().max(pref.as_ref().map_or(0, |p| p.len()));
            let fits = match req.context_overflow {
                ContextOverflow::Error => longest < ctx,
                ContextOverflow::TruncateOldest => longest + req.max_tokens <= ctx,
            };
            if fits {
                return Ok((base, pref, dropped));
            }
            // The oldest user turn and everything up to the next one (its answer) go.
            let messages = &req.conversation.messages;
            let users: Vec<usize> = (0..messages.len()).filter(|&i| messages[i].role == "user").collect();
            if req.context_overflow == ContextOverflow::Error || users.len() < 2 {
                let hint = match req.context_overflow {
                    ContextOverflow::Error => "; contextOverflow 'truncate-oldest' drops the oldest turns",
                    ContextOverflow::TruncateOldest => " even with only the last turn",
                };
                return Err(AmuletError::ContextOverflow(format!(
                    "the prompt has {longest} tokens and {} are asked for; the model's context length is {ctx}{hint}",
                    req.max_tokens
                )));
            }
            let (first, next) = (users[0], users[1]);
            req.to_mut().conversation.messages.drain(first..next);
            dropped += 1;
        }
    }

    /// Runs a request to the end. `on_token` sees every token of every method as it is
    /// chosen and returns false to abort (the request then ends with reason `aborted`).
    pub fn generate(
        &mut self,
        req: &GenerateRequest,
        on_token: &mut dyn FnMut(&TokenEvent) -> bool,
    ) -> Result<GenerateOutput> {
        let mut g = self.start(req)?;
        loop {
            let events = match self.step(&mut g) {
                Ok(ev) => ev,
                Err(e) => {
                    self.release(&mut g);
                    return Err(e);
                }
            };
            if events.is_empty() {
                break;
            }
            let mut keep_going = true;
            for ev in &events {
                keep_going &= on_token(ev);
            }
            if !keep_going {
                g.abort();
            }
        }
        self.finish(g)
    }

    /// Validates a request, creates its sequences and prefills them as one batch. Drive it
    /// with `step` until that returns no events, then `finish` (always: it frees the caches).
    pub fn start(&mut self, req: &GenerateRequest) -> Result<Generation> {
        run_now(self.start_async(req))
    }

    /// `start` for any backend, including one that computes asynchronously (WebGPU in a
    /// browser); on the others the future is ready at its first poll.
    pub async fn start_async(&mut self, req: &GenerateRequest) -> Result<Generation> {
        self.recover_lost_device()?;
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
        if req.methods.iter().any(|m| m.needs_pref()) && req.preference.is_none() {
            return Err(AmuletError::bad_option(
                "preference",
                "is required by methods pref, la and amulet (e.g. \"concise\")",
            ));
        }
        let (base_ids, pref_ids, dropped_turns) = self.fitting_contexts(req)?;
        let mut tracks = Vec::with_capacity(req.methods.len());
        for (i, method) in req.methods.iter().enumerate() {
            let aligner = Aligner::new(*method)?;
            // Each method draws its own stream, reproducible from the one seed.
            let sampling = SamplingParams { seed: req.sampling.seed.wrapping_add(i as u64), ..req.sampling };
            let sampler = Sampler::new(sampling)?;
            tracks.push(Track {
                base_seq: None,
                pref_seq: None,
                decoder: StreamDecoder::new(self.tokenizer.clone(), true),
                text: String::new(),
                pending: String::new(),
                tokens: Vec::new(),
                steps: Vec::new(),
                finish: None,
                last: 0,
                chosen: None,
                uniform: None,
                scores: None,
                aligner,
                sampler,
            });
        }
        let mut g = Generation {
            tracks,
            rows: HashMap::new(),
            combined: vec![0f32; self.info.vocab_size],
            stop: req.stop.clone(),
            top_logprobs: req.top_logprobs,
            ignore_eos: req.ignore_eos,
            max_tokens: req.max_tokens,
            step: 0,
            aborted: false,
            prompt_tokens_base: base_ids.len(),
            prompt_tokens_pref: pref_ids.as_ref().map_or(0, |p| p.len()),
            timings: Timings::default(),
            decode_start: 0.0,
            released: false,
            root: None,
            prompts: [base_ids.clone(), pref_ids.clone().unwrap_or_default()],
            failed: false,
            dropped_turns,
        };
        let t0 = (self.clock)();
        if let Err(e) = self.prefill(&mut g, &base_ids, pref_ids.as_deref()).await {
            g.failed = true;
            self.release(&mut g);
            return Err(e);
        }
        g.timings.prefill_ms = (self.clock)() - t0;
        g.decode_start = (self.clock)();
        Ok(g)
    }

    /// Chooses the next token of every live method and advances their sequences (one
    /// batched forward). Returns the tokens chosen; empty once the generation is over.
    pub fn step(&mut self, g: &mut Generation) -> Result<Vec<TokenEvent>> {
        run_now(self.step_async(g))
    }

    /// `step` for any backend (see `start_async`).
    pub async fn step_async(&mut self, g: &mut Generation) -> Result<Vec<TokenEvent>> {
        let events = self.step_inner(g).await;
        // A failed step may leave caches half-advanced: they are not kept for a next request.
        g.failed |= events.is_err();
        events
    }

    async fn step_inner(&mut self, g: &mut Generation) -> Result<Vec<TokenEvent>> {
        if g.is_done() {
            return Ok(Vec::new());
        }
        let mut events = Vec::new();
        for (mi, track) in g.tracks.iter_mut().enumerate() {
            if track.finish.is_some() {
                continue;
            }
            let (token, logprobs) = match track.chosen.take() {
                Some(chosen) => {
                    let logprobs = (g.top_logprobs > 0)
                        .then(|| -> Result<StepLogprobs> {
                            Ok(StepLogprobs {
                                base: track.aligner.needs_base().then(|| self.named(&chosen.top_base)).transpose()?,
                                pref: track.aligner.needs_pref().then(|| self.named(&chosen.top_pref)).transpose()?,
                                combined: self.named(&chosen.top_combined)?,
                            })
                        })
                        .transpose()?;
                    (chosen.id, logprobs)
                }
                None => {
                    let base = track.base_seq.and_then(|s| g.rows.get(&s)).map(|r| r.as_slice());
                    let pref = track.pref_seq.and_then(|s| g.rows.get(&s)).map(|r| r.as_slice());
                    let scores = match &track.scores {
                        Some(scores) => scores,
                        None => {
                            track.aligner.combine(base, pref, &mut g.combined)?;
                            &g.combined
                        }
                    };
                    let token = match track.uniform.take() {
                        Some(u) => track.sampler.sample_with(scores, Some(u))?,
                        None => track.sampler.sample(scores)?,
                    };
                    let logprobs = (g.top_logprobs > 0)
                        .then(|| self.step_logprobs(base, pref, scores, g.top_logprobs))
                        .transpose()?;
                    track.scores = None;
                    (token, logprobs)
                }
            };
            track.tokens.push(token);
            track.last = token;
            let ended = !g.ignore_eos && self.end_ids.contains(&token);
            let delta = if ended {
                track.finish = Some(FinishReason::Stop);
                track.decoder.finish()?
            } else {
                track.decoder.push(token)?
            };
            let (emit, hit_stop) = apply_stop(&mut track.pending, &delta, &g.stop, track.finish.is_some());
            track.text.push_str(&emit);
            if hit_stop {
                track.finish = Some(FinishReason::Stop);
            }
            if track.tokens.len() >= g.max_tokens && track.finish.is_none() {
                track.finish = Some(FinishReason::Length);
            }
            if let Some(l) = &logprobs {
                track.steps.push(l.clone());
            }
            events.push(TokenEvent { method: mi, token, text: emit, logprobs });
        }
        g.step += 1;
        g.timings.decode_steps = g.step;
        // Next step's logits: every live sequence advances by its method's token, as one batch.
        let mut batch: Vec<(SeqId, [u32; 1])> = Vec::new();
        for t in g.tracks.iter_mut().filter(|t| t.finish.is_none()) {
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
        if batch.is_empty() {
            g.rows.clear();
            return Ok(events);
        }
        let refs: Vec<(SeqId, &[u32])> = batch.iter().map(|(s, t)| (*s, &t[..])).collect();
        self.advance(g, &refs, &format!("decode step {}", g.step)).await?;
        Ok(events)
    }

    /// Runs `batch` (the sequences of every live track) and leaves what each track's next
    /// token is chosen from: the token the backend drew, the scores it combined, or the logit
    /// rows (`at` names the step in errors).
    async fn advance(&mut self, g: &mut Generation, batch: &[(SeqId, &[u32])], at: &str) -> Result<()> {
        g.rows.clear();
        let live: Vec<usize> = (0..g.tracks.len()).filter(|&i| g.tracks[i].finish.is_none()).collect();
        let requests = token_requests(&mut g.tracks, &live, batch, g.top_logprobs);
        let rows = match requests {
            Some(requests) => match self.model.forward_choose(batch, &requests).await? {
                StepOutput::Tokens(chosen) => {
                    for (&i, c) in live.iter().zip(chosen) {
                        g.tracks[i].chosen = Some(c);
                        g.tracks[i].uniform = None;
                    }
                    return Ok(());
                }
                StepOutput::Combined { scores, rows } => {
                    check_finite(&scores, at)?;
                    for (&i, s) in live.iter().zip(scores) {
                        g.tracks[i].scores = Some(s);
                    }
                    rows
                }
                StepOutput::Rows(rows) => rows,
            },
            None => self.model.forward_async(batch).await?,
        };
        check_finite(&rows, at)?;
        // Empty when the backend combined the rows and no one asked for their candidates.
        g.rows.extend(batch.iter().map(|(s, _)| *s).zip(rows));
        Ok(())
    }

    fn named(&self, top: &[(u32, f32)]) -> Result<Vec<Candidate>> {
        top.iter().map(|&(id, prob)| Ok(Candidate { id, text: self.tokenizer.token_text(id)?, prob })).collect()
    }

    /// Ends a generation (done or not), frees its sequences and returns its completions.
    pub fn finish(&mut self, mut g: Generation) -> Result<GenerateOutput> {
        self.release(&mut g);
        g.timings.decode_ms = (self.clock)() - g.decode_start;
        let generated = g.tracks.iter().map(|t| t.tokens.len()).max().unwrap_or(0);
        g.timings.decode_tokens_per_s =
            if g.timings.decode_ms > 0.0 { generated as f64 / (g.timings.decode_ms / 1e3) } else { 0.0 };
        let aborted = g.aborted;
        let mut completions = Vec::with_capacity(g.tracks.len());
        for mut t in g.tracks {
            let mut text = t.text;
            if t.finish != Some(FinishReason::Stop) {
                // Length, context or abort: flush what was held back.
                text.push_str(&t.pending);
                text.push_str(&t.decoder.finish()?);
            }
            let finish_reason = match t.finish {
                Some(r) => r,
                None if aborted => FinishReason::Aborted,
                None => FinishReason::Length,
            };
            completions.push(Completion {
                method: t.aligner.method().name().to_string(),
                text,
                tokens: t.tokens,
                finish_reason,
                steps: t.steps,
            });
        }
        Ok(GenerateOutput {
            completions,
            dropped_turns: g.dropped_turns,
            prompt_tokens_base: g.prompt_tokens_base,
            prompt_tokens_pref: g.prompt_tokens_pref,
            timings: g.timings,
        })
    }

    /// Creates every track's sequences and runs their prompts. A prompt that continues a kept
    /// sequence (the conversation so far) takes it and runs only what is new. Otherwise the
    /// base and preference contexts share a long prefix (the chat template and system prompt),
    /// and compare mode repeats whole prompts: that prefix is computed once and its cache forked.
    async fn prefill(&mut self, g: &mut Generation, base_ids: &[u32], pref_ids: Option<&[u32]>) -> Result<()> {
        let mut wanted: Vec<(usize, bool)> = Vec::new(); // (track, is_pref)
        for (i, t) in g.tracks.iter().enumerate() {
            if t.aligner.needs_base() {
                wanted.push((i, false));
            }
            if t.aligner.needs_pref() {
                wanted.push((i, true));
            }
        }
        let prompt = |is_pref: bool| if is_pref { pref_ids.unwrap_or(base_ids) } else { base_ids };
        // A kept sequence per context, cut to what its prompt shares with it.
        let mut kept: [Option<(SeqId, usize)>; 2] = [None, None];
        // The context with the longer match takes first (see PrefixCache::shared).
        let order = if self.prefix.shared(prompt(true)) > self.prefix.shared(prompt(false)) {
            [true, false]
        } else {
            [false, true]
        };
        for is_pref in order {
            if !wanted.iter().any(|&(_, p)| p == is_pref) {
                continue;
            }
            if let Some(reuse) = self.prefix.take(prompt(is_pref)) {
                if self.model.truncate_sequence(reuse.seq, reuse.shared) {
                    kept[is_pref as usize] = Some((reuse.seq, reuse.shared));
                } else {
                    self.model.free_sequence(reuse.seq);
                }
            }
        }
        g.timings.cached_tokens_base = kept[0].map_or(0, |k| k.1);
        g.timings.cached_tokens_pref = kept[1].map_or(0, |k| k.1);
        // Without any, the prefix shared by every context is run once and forked.
        let mut shared = 0;
        if kept.iter().all(Option::is_none) && wanted.len() > 1 {
            // Each sequence keeps at least its last token to run: that step yields its logits.
            shared = wanted.iter().map(|&(_, p)| prompt(p).len()).min().unwrap_or(0).saturating_sub(1);
            if let Some(p) = pref_ids {
                if wanted.iter().any(|&(_, is_pref)| is_pref) && wanted.iter().any(|&(_, is_pref)| !is_pref) {
                    shared = shared.min(base_ids.iter().zip(p).take_while(|(a, b)| a == b).count());
                }
            }
        }
        if shared > 0 {
            let root = self.model.new_sequence();
            g.root = Some(root);
            self.model.forward_async(&[(root, &base_ids[..shared])]).await?;
        }
        let mut batch: Vec<(SeqId, &[u32])> = Vec::with_capacity(wanted.len());
        let mut taken = [false, false];
        for &(i, is_pref) in &wanted {
            let c = is_pref as usize;
            let (seq, from) = match (kept[c], g.root) {
                // The first track of a context takes the kept sequence, the others fork it.
                (Some((seq, n)), _) if !taken[c] => {
                    taken[c] = true;
                    (seq, n)
                }
                (Some((seq, n)), _) => (self.fork(seq)?, n),
                (None, Some(root)) => (self.fork(root)?, shared),
                (None, None) => (self.model.new_sequence(), 0),
            };
            let t = &mut g.tracks[i];
            if is_pref {
                t.pref_seq = Some(seq);
            } else {
                t.base_seq = Some(seq);
            }
            batch.push((seq, &prompt(is_pref)[from..]));
        }
        if let Some(r) = g.root.take() {
            self.model.free_sequence(r);
        }
        g.timings.prefill_tokens = shared + batch.iter().map(|(_, t)| t.len()).sum::<usize>();
        self.advance(g, &batch, "the prompt").await
    }

    fn fork(&mut self, seq: SeqId) -> Result<SeqId> {
        self.model.fork_sequence(seq).ok_or_else(|| AmuletError::Compute("a sequence to fork vanished".into()))
    }

    /// Frees a generation's sequences, or keeps them for the next request when it ran without
    /// a failure: each holds its context's prompt and the tokens its track ran after it.
    fn release(&mut self, g: &mut Generation) {
        if g.released {
            return;
        }
        let keep = !g.failed && self.prefix.budget() > 0;
        for t in &g.tracks {
            for (c, seq) in [t.base_seq, t.pref_seq].into_iter().enumerate() {
                let Some(seq) = seq else { continue };
                let len = self.model.sequence_len(seq).unwrap_or(0);
                let prompt = &g.prompts[c];
                if !keep || len < prompt.len() || len > prompt.len() + t.tokens.len() {
                    self.model.free_sequence(seq);
                    continue;
                }
                let mut tokens = prompt.clone();
                tokens.extend_from_slice(&t.tokens[..len - prompt.len()]);
                self.model.shrink_sequence(seq);
                let bytes = self.model.sequence_bytes(seq);
                for evicted in self.prefix.put(tokens, seq, bytes) {
                    self.model.free_sequence(evicted);
                }
            }
        }
        if let Some(r) = g.root.take() {
            self.model.free_sequence(r);
        }
        g.released = true;
    }

    fn candidates(&self, scores: &[f32], n: usize) -> Result<Vec<Candidate>> {
        top_candidates(scores, n)
            .into_iter()
            .map(|(id, prob)| Ok(Candidate { id, text: self.tokenizer.token_text(id)?, prob }))
            .collect()
    }

    fn step_logprobs(
        &self,
        base: Option<&[f32]>,
        pref: Option<&[f32]>,
        combined: &[f32],
        n: usize,
    ) -> Result<StepLogprobs> {
        Ok(StepLogprobs {
            base: base.map(|b| self.candidates(b, n)).transpose()?,
            pref: pref.map(|p| self.candidates(p, n)).transpose()?,
            combined: self.candidates(combined, n)?,
        })
    }
}

/// What the backend needs to draw each live track's next token itself, with each track's
/// uniform drawn now (kept in the track in case rows come back instead). None when some
/// method's combine is not linear (the iterative game): then the rows come back.
fn token_requests(
    tracks: &mut [Track],
    live: &[usize],
    batch: &[(SeqId, &[u32])],
    top_n: usize,
) -> Option<Vec<TokenRequest>> {
    if live.iter().any(|&i| tracks[i].aligner.linear_form().is_none()) {
        return None;
    }
    let row = |seq: Option<SeqId>| seq.and_then(|s| batch.iter().position(|(id, _)| *id == s));
    let mut requests = Vec::with_capacity(live.len());
    for &i in live {
        let t = &mut tracks[i];
        let (uses_base, uses_pref, strength) = t.aligner.linear_form()?;
        let p = *t.sampler.params();
        t.uniform = t.sampler.next_uniform();
        requests.push(TokenRequest {
            base: if uses_base { row(t.base_seq) } else { None },
            pref: if uses_pref { row(t.pref_seq) } else { None },
            strength,
            temperature: p.temperature,
            top_k: p.top_k,
            top_p: p.top_p,
            uniform: t.uniform,
            top_n,
        });
    }
    Some(requests)
}

/// Logits with a NaN or +infinity (weights that overflow, a broken kernel) would sample
/// garbage or nothing: the request ends here with a typed error instead. A -infinity only
/// rules its token out, unless the whole row is.
fn check_finite(rows: &[Vec<f32>], at: &str) -> Result<()> {
    for row in rows {
        let bad = row.iter().position(|v| v.is_nan() || *v == f32::INFINITY);
        let bad = bad.or_else(|| row.iter().all(|v| *v == f32::NEG_INFINITY).then_some(0));
        if let Some(i) = bad {
            return Err(AmuletError::Compute(format!(
                "the model produced a non-finite logit ({}) for token {i} at {at}: its weights are unusable",
                row.get(i).copied().unwrap_or(f32::NAN)
            )));
        }
    }
    Ok(())
}

/// Runs a future that a synchronous backend completes at once. A backend that must wait
/// (WebGPU in a browser) leaves it pending: that caller needs the async API.
fn run_now<T>(future: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(r) => r,
        std::task::Poll::Pending => {
            Err(AmuletError::Compute("this backend computes asynchronously: use start_async / step_async".into()))
        }
    }
}
