//! Typed errors: every public failure is a value with a message a user can act on.

use thiserror::Error;

pub type Result<T> = std::result::Result<T, AmuletError>;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum AmuletError {
    /// The model file is malformed, truncated or inconsistent with its own metadata.
    #[error("bad model file: {0}")]
    BadModel(String),
    /// The model file is valid GGUF but uses something this engine does not implement.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// A caller-supplied option is out of range, of the wrong kind, or unknown.
    #[error("bad option `{option}`: {message}")]
    BadOption { option: String, message: String },
    /// Tokenizer construction, encoding or decoding failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template could not be compiled or rendered.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// The prompt (plus the tokens to generate) does not fit the model's context.
    #[error("context overflow: {0}")]
    ContextOverflow(String),
    /// The request was aborted by the caller (an AbortSignal in JS).
    #[error("aborted")]
    Aborted,
    /// A numeric failure inside the forward pass (NaN logits, shape mismatch).
    #[error("compute: {0}")]
    Compute(String),
    /// WebGPU was asked for, but there is no adapter or it cannot run this model.
    #[error("WebGPU unavailable: {0}")]
    NoWebGpu(String),
    /// The model needs more memory than the place it would run can hold (checked from its
    /// header, before a download).
    #[error("too large: {0}")]
    TooLarge(String),
    /// Reading a file failed.
    #[error("io: {0}")]
    Io(String),
    /// A thread of the CPU pool stopped (in a browser: a trap in one of its Web Workers); the
    /// engine cannot run any more. The same code as a lost engine Worker in JavaScript.
    #[error("thread lost: {0}")]
    ThreadLost(String),
}

impl AmuletError {
    pub fn bad_option(option: impl Into<String>, message: impl Into<String>) -> Self {
        AmuletError::BadOption { option: option.into(), message: message.into() }
    }

    /// A stable machine-readable code, mirrored as `error.code` in JavaScript.
    pub fn code(&self) -> &'static str {
        match self {
            AmuletError::BadModel(_) => "BAD_MODEL",
            AmuletError::Unsupported(_) => "UNSUPPORTED_MODEL",
            AmuletError::BadOption { .. } => "BAD_OPTION",
            AmuletError::Tokenizer(_) => "TOKENIZER",
            AmuletError::ChatTemplate(_) => "CHAT_TEMPLATE",
            AmuletError::ContextOverflow(_) => "CONTEXT_OVERFLOW",
            AmuletError::Aborted => "ABORTED",
            AmuletError::Compute(_) => "COMPUTE",
            AmuletError::NoWebGpu(_) => "NO_WEBGPU",
            AmuletError::TooLarge(_) => "TOO_LARGE",
            AmuletError::Io(_) => "IO",
            AmuletError::ThreadLost(_) => "WORKER_LOST",
        }
    }
}

impl From<candle_core::Error> for AmuletError {
    fn from(e: candle_core::Error) -> Self {
        AmuletError::Compute(e.to_string())
    }
}

impl From<std::io::Error> for AmuletError {
    fn from(e: std::io::Error) -> Self {
        AmuletError::Io(e.to_string())
    }
}
