//! Model hyper-parameters, read from the GGUF metadata and nowhere else.

use crate::error::{AmuletError, Result};
use crate::gguf::Gguf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum Arch {
    Llama,
    Qwen2,
    Gemma3,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Gemma3 => "gemma3",
        }
    }
}

/// How a head's dimensions are paired for rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// (0,1), (2,3), ...: llama GGUF files (the converter permutes q/k weights for it).
    Interleaved,
    /// (i, i + d/2): the NeoX layout used by qwen2 and gemma3.
    Halves,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Silu,
    /// GELU, tanh approximation (Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_layer: usize,
    pub d_model: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub d_ff: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rms_eps: f32,
    pub rope_layout: RopeLayout,
    /// Rotated dimensions per head (may be less than head_dim).
    pub rope_dim: usize,
    pub rope_base: f32,
    /// Gemma 3: sliding-window layers use their own base.
    pub rope_base_local: f32,
    /// Gemma 3: window size of the local layers, and one global layer every `pattern`.
    pub sliding_window: Option<usize>,
    pub sliding_window_pattern: usize,
    pub activation: Activation,
    /// Gemma scales embeddings by sqrt(d_model).
    pub embedding_scale: Option<f32>,
    pub attn_scale: f32,
}

impl ModelConfig {
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let arch_name = g.get_str("general.architecture")?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "gemma3" => Arch::Gemma3,
            other => {
                return Err(AmuletError::Unsupported(format!(
                    "architecture `{other}` (supported: llama, qwen2, gemma3)"
                )))
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let n_layer = g.get_u32(&key("block_count"))? as usize;
        let d_model = g.get_u32(&key("embedding_length"))? as usize;
        let n_head = g.get_u32(&key("attention.head_count"))? as usize;
        let n_kv_head = g.opt_u32(&key("attention.head_count_kv"))?.unwrap_or(n_head as u32) as usize;
        let d_ff = g.get_u32(&key("feed_forward_length"))? as usize;
        let context_length = g.get_u32(&key("context_length"))? as usize;
        let rms_eps = g.get_f32(&key("attention.layer_norm_rms_epsilon"))?;
        if n_layer == 0 || d_model == 0 || n_head == 0 || n_kv_head == 0 || d_ff == 0 || context_length == 0 {
            return Err(AmuletError::BadModel(format!(
                "{arch_name}: zero in block_count/embedding_length/head_count/feed_forward_length/context_length"
            )));
        }
        if !n_head.is_multiple_of(n_kv_head) {
            return Err(AmuletError::BadModel(format!(
                "{arch_name}.attention.head_count {n_head} is not a multiple of head_count_kv {n_kv_head}"
            )));
        }
        let head_dim = match g.opt_u32(&key("attention.key_length"))? {
            Some(k) => k as usize,
            None if d_model.is_multiple_of(n_head) => d_model / n_head,
            None => {
                return Err(AmuletError::BadModel(format!(
                    "{arch_name}.embedding_length {d_model} is not a multiple of head_count {n_head}"
                )))
            }
        };
        if let Some(v) = g.opt_u32(&key("attention.value_length"))? {
            if v as usize != head_dim {
                return Err(AmuletError::Unsupported(format!(
                    "{arch_name}: value_length {v} differs from key_length {head_dim}"
                )));
            }
        }
        let rope_dim = g.opt_u32(&key("rope.dimension_count"))?.map(|d| d as usize).unwrap_or(head_dim);
        if rope_dim == 0 || rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(AmuletError::BadModel(format!(
                "{arch_name}.rope.dimension_count {rope_dim} does not fit head size {head_dim}"
            )));
        }
        let vocab_size = match g.tensor_info("token_embd.weight") {
            Some(t) if t.dims.len() == 2 && t.dims[0] == d_model => t.dims[1],
            Some(t) => {
                return Err(AmuletError::BadModel(format!(
                    "tensor `token_embd.weight` has shape {:?}, expected [{d_model}, vocab]",
                    t.dims
                )))
            }
            None => return Err(AmuletError::BadModel("tensor `token_embd.weight` is missing".into())),
        };

        let (default_base, rope_layout, activation) = match arch {
            Arch::Llama => (10_000.0, RopeLayout::Interleaved, Activation::Silu),
            Arch::Qwen2 => (10_000.0, RopeLayout::Halves, Activation::Silu),
            Arch::Gemma3 => (1_000_000.0, RopeLayout::Halves, Activation::GeluTanh),
        };
        let rope_base = g.opt_f32(&key("rope.freq_base"))?.unwrap_or(default_base);
        let (sliding_window, pattern, rope_base_local, embedding_scale, attn_scale) = match arch {
            Arch::Gemma3 => {
                let window = g.get_u32(&key("attention.sliding_window"))? as usize;
                // llama.cpp and HF: every 6th layer is global in Gemma 3.
                let pattern = g.opt_u32(&key("attention.sliding_window_pattern"))?.unwrap_or(6) as usize;
                let local = g.opt_f32(&key("rope.local_freq_base"))?.unwrap_or(10_000.0);
                // Gemma 3 scales queries by query_pre_attn_scalar^-1/2 = head_dim^-1/2 for these sizes.
                (Some(window), pattern.max(1), local, Some((d_model as f32).sqrt()), 1.0 / (head_dim as f32).sqrt())
            }
            _ => (None, 1, rope_base, None, 1.0 / (head_dim as f32).sqrt()),
        };

        Ok(ModelConfig {
            arch,
            n_layer,
            d_model,
            n_head,
            n_kv_head,
            head_dim,
            d_ff,
            vocab_size,
            context_length,
            rms_eps,
            rope_layout,
            rope_dim,
            rope_base,
            rope_base_local,
            sliding_window,
            sliding_window_pattern: pattern,
            activation,
            embedding_scale,
            attn_scale,
        })
    }

    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }

    /// Gemma 3: `Some(window)` for the sliding-window layers, `None` for global ones.
    pub fn layer_window(&self, layer: usize) -> Option<usize> {
        let w = self.sliding_window?;
        let is_global = (layer + 1).is_multiple_of(self.sliding_window_pattern);
        (!is_global).then_some(w)
    }

    pub fn layer_rope_base(&self, layer: usize) -> f32 {
        if self.layer_window(layer).is_some() {
            self.rope_base_local
        } else {
            self.rope_base
        }
    }
}
