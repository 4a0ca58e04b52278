//! What the engine takes and gives: the request, the streamed token events, the finished
//! completions and the model description. Plain data; the faces turn it into their own formats.

use crate::align::Method;
use crate::chat_template::ChatMessage;
use crate::prompt::{Conversation, Placement};
use crate::sample::SamplingParams;

/// What `engine.info` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub architecture: String,
    pub quantization: String,
    pub context_length: usize,
    pub vocab_size: usize,
    pub device: String,
    /// Why this backend (the adapter, or why WebGPU was passed over).
    pub device_reason: String,
    pub chat_template_fallback: bool,
}

/// What a request does when its conversation (and the tokens to generate) no longer fits the
/// model's context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContextOverflow {
    /// A prompt that does not fit is a CONTEXT_OVERFLOW error; one that fits generates until
    /// the context is full (finish reason `context_full`).
    #[default]
    Error,
    /// The oldest turns are dropped (the system prompt and the newest turns are kept) until
    /// the prompt and `max_tokens` fit; `dropped_turns` says how many.
    TruncateOldest,
}

impl std::str::FromStr for ContextOverflow {
    type Err = crate::error::AmuletError;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "error" => Ok(ContextOverflow::Error),
            "truncate-oldest" => Ok(ContextOverflow::TruncateOldest),
            other => Err(crate::error::AmuletError::bad_option(
                "contextOverflow",
                format!("`{other}` is not one of: error, truncate-oldest"),
            )),
        }
    }
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
    pub context_overflow: ContextOverflow,
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
            context_overflow: ContextOverflow::Error,
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
    Aborted,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContextFull => "context_full",
            FinishReason::Aborted => "aborted",
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
    /// Tokens run through the model by the prefill (not counting reused ones).
    pub prefill_tokens: usize,
    /// Prompt tokens whose caches came from an earlier request (a conversation's history),
    /// per context.
    pub cached_tokens_base: usize,
    pub cached_tokens_pref: usize,
    pub decode_ms: f64,
    /// Decode steps (each produces one token for every live method).
    pub decode_steps: usize,
    pub decode_tokens_per_s: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GenerateOutput {
    pub completions: Vec<Completion>,
    /// Oldest user turns (with their answers) left out to fit the context
    /// (`ContextOverflow::TruncateOldest`).
    pub dropped_turns: usize,
    pub prompt_tokens_base: usize,
    pub prompt_tokens_pref: usize,
    pub timings: Timings,
}
