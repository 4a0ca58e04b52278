//! amulet: Amulet test-time preference realignment over quantized GGUF models.
//! Layers (arrows point down): engine -> prompt/align/sample -> model -> backend <- gguf.

pub mod align;
pub mod backend;
pub mod chat_template;
pub mod engine;
pub mod error;
#[cfg(not(target_arch = "wasm32"))] // the offline evaluation is a CLI tool: kept out of the wasm package
pub mod eval;
pub mod fixture;
#[cfg(not(target_arch = "wasm32"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod gguf;
pub mod model;
pub mod prompt;
pub mod request;
pub mod rng;
pub mod sample;
pub mod tokenizer;

pub use error::{AmuletError, Result};

#[cfg(target_arch = "wasm32")]
pub mod web;
