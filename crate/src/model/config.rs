//! Model hyper-parameters, read from the GGUF metadata and nowhere else, and checked here:
//! every size the model code allocates or indexes with comes from this struct, so a value
//! that is zero, absurd, non-finite or at odds with the file's own tensors stops the load.

use crate::error::{AmuletError, Result};
use crate::gguf::Gguf;

/// Bounds no real model comes near (the largest have 126 blocks, widths of 16k to 53k, head
/// sizes of 256, contexts of 1M tokens); past them a header is corrupt or hostile, and the
/// products taken from it (cache and buffer sizes) could overflow, on wasm32 especially.
const MAX_CONTEXT: usize = 1 << 24;
const MAX_LAYERS: usize = 4096;
const MAX_WIDTH: usize = 1 << 20;
const MAX_HEAD_DIM: usize = 1 << 12;

fn bad(msg: String) -> AmuletError {
    AmuletError::BadModel(msg)
}

/// The block numbers `blk.N.*` tensors carry: (how many distinct, the largest), None if none.
fn block_numbers(g: &Gguf) -> Option<(usize, usize)> {
    let mut seen = std::collections::BTreeSet::new();
    for t in &g.tensors {
        let n = t.name.strip_prefix("blk.").and_then(|r| r.split('.').next()).and_then(|n| n.parse::<usize>().ok());
        seen.extend(n);
    }
    Some((seen.len(), *seen.last()?))
}

/// `block_count` against the file: every block 0..n has tensors and no tensor names a block
/// past it. A file with no block tensors at all (a header read to size a download) passes; the
/// load then stops at its first missing tensor.
fn check_blocks(g: &Gguf, arch: &str, n_layer: usize) -> Result<()> {
    if n_layer == 0 || n_layer > MAX_LAYERS.min(g.tensors.len()) {
        return Err(bad(format!(
            "{arch}.block_count is {n_layer}; the file has {} tensors (at most {MAX_LAYERS} blocks are plausible)",
            g.tensors.len()
        )));
    }
    match block_numbers(g) {
        Some((distinct, last)) if distinct != n_layer || last + 1 != n_layer => Err(bad(format!(
            "{arch}.block_count is {n_layer}, but the file has tensors for {distinct} blocks numbered up to blk.{last}"
        ))),
        _ => Ok(()),
    }
}

/// A size read from the metadata: at least 1 and at most `max`.
fn size(arch: &str, key: &str, v: usize, max: usize) -> Result<usize> {
    if v == 0 || v > max {
        return Err(bad(format!("{arch}.{key} is {v}, outside 1..={max}")));
    }
    Ok(v)
}

/// A RoPE base: finite and at least 1 (below, the rotation frequencies grow with the
/// dimension and overflow to infinity at long positions).
fn check_rope_base(arch: &str, key: &str, v: f32) -> Result<f32> {
    if !(v.is_finite() && v >= 1.0) {
        return Err(bad(format!("{arch}.{key} is {v}; a RoPE base must be a finite number >= 1")));
    }
    Ok(v)
}

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
        check_blocks(g, arch_name, n_layer)?;
        let d_model = size(arch_name, "embedding_length", d_model, MAX_WIDTH)?;
        let d_ff = size(arch_name, "feed_forward_length", d_ff, MAX_WIDTH)?;
        let n_head = size(arch_name, "attention.head_count", n_head, MAX_WIDTH)?;
        let context_length = size(arch_name, "context_length", context_length, MAX_CONTEXT)?;
        // Zero divides every row by nothing (NaN for a zero row); large ones erase the signal.
        if !(rms_eps > 0.0 && rms_eps <= 1.0) {
            return Err(bad(format!(
                "{arch_name}.attention.layer_norm_rms_epsilon is {rms_eps}; it must be in (0, 1]"
            )));
        }
        if !n_head.is_multiple_of(n_kv_head) {
            return Err(AmuletError::BadModel(format!(
                "{arch_name}.attention.head_count {n_head} is not a multiple of head_count_kv {n_kv_head}"
            )));
        }
        let head_dim = match g.opt_u32(&key("attention.key_length"))? {
            Some(k) => size(arch_name, "attention.key_length", k as usize, MAX_HEAD_DIM)?,
            None if d_model.is_multiple_of(n_head) => d_model / n_head,
            None => {
                return Err(AmuletError::BadModel(format!(
                    "{arch_name}.embedding_length {d_model} is not a multiple of head_count {n_head}"
                )))
            }
        };
        let head_dim = size(arch_name, "head size (embedding_length / head_count)", head_dim, MAX_HEAD_DIM)?;
        if n_head as u64 * head_dim as u64 > MAX_WIDTH as u64 {
            return Err(bad(format!("{arch_name}: {n_head} heads of {head_dim} make a query width past {MAX_WIDTH}")));
        }
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
        let rope_base =
            check_rope_base(arch_name, "rope.freq_base", g.opt_f32(&key("rope.freq_base"))?.unwrap_or(default_base))?;
        let (sliding_window, pattern, rope_base_local, embedding_scale, attn_scale) = match arch {
            Arch::Gemma3 => {
                let window = g.get_u32(&key("attention.sliding_window"))? as usize;
                let window = size(arch_name, "attention.sliding_window", window, MAX_CONTEXT)?;
                // llama.cpp and HF: every 6th layer is global in Gemma 3.
                let pattern = g.opt_u32(&key("attention.sliding_window_pattern"))?.unwrap_or(6) as usize;
                let local = g.opt_f32(&key("rope.local_freq_base"))?.unwrap_or(10_000.0);
                let local = check_rope_base(arch_name, "rope.local_freq_base", local)?;
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

#[cfg(test)]
mod tests {
    use candle_core::quantized::GgmlDType;

    use super::*;
    use crate::fixture::{write_gguf, FixtureSpec};
    use crate::gguf::MetaValue;

    fn fixture(arch: Arch) -> Gguf {
        Gguf::parse(&write_gguf(&FixtureSpec::tiny(arch, GgmlDType::Q8_0, 3)).unwrap()).unwrap()
    }

    /// The error `from_gguf` gives once `key` is set to `value` in a valid fixture.
    fn error_with(arch: Arch, key: &str, value: MetaValue) -> String {
        let mut g = fixture(arch);
        g.metadata.insert(format!("{}.{key}", arch.name()), value);
        match ModelConfig::from_gguf(&g) {
            Err(AmuletError::BadModel(m)) => m,
            other => panic!("{key} = {:?}: {other:?}", g.metadata[&format!("{}.{key}", arch.name())]),
        }
    }

    #[test]
    fn the_fixtures_pass() {
        for arch in [Arch::Llama, Arch::Qwen2, Arch::Gemma3] {
            let cfg = ModelConfig::from_gguf(&fixture(arch)).unwrap();
            assert_eq!((cfg.n_layer, cfg.d_model, cfg.head_dim), (2, 256, 64));
        }
    }

    #[test]
    fn block_count_must_match_the_blocks_in_the_file() {
        let m = error_with(Arch::Llama, "block_count", MetaValue::U32(3));
        assert!(m.contains("block_count is 3") && m.contains("2 blocks"), "{m}");
        let m = error_with(Arch::Llama, "block_count", MetaValue::U32(1));
        assert!(m.contains("block_count is 1") && m.contains("blk.1"), "{m}");
        let m = error_with(Arch::Llama, "block_count", MetaValue::U32(u32::MAX));
        assert!(m.contains("block_count"), "{m}");
        // A hole: blocks 0 and 2 but no 1.
        let mut g = fixture(Arch::Llama);
        for t in g.tensors.iter_mut().filter(|t| t.name.starts_with("blk.1.")) {
            t.name = t.name.replace("blk.1.", "blk.2.");
        }
        g.metadata.insert("llama.block_count".into(), MetaValue::U32(3));
        let m = ModelConfig::from_gguf(&g).unwrap_err().to_string();
        assert!(m.contains("2 blocks numbered up to blk.2"), "{m}");
    }

    #[test]
    fn sizes_are_bounded() {
        let m = error_with(Arch::Llama, "context_length", MetaValue::U32(u32::MAX));
        assert!(m.contains("context_length is 4294967295"), "{m}");
        assert!(error_with(Arch::Llama, "embedding_length", MetaValue::U32(1 << 30)).contains("embedding_length"));
        assert!(error_with(Arch::Llama, "feed_forward_length", MetaValue::U32(u32::MAX)).contains("feed_forward"));
        assert!(error_with(Arch::Llama, "attention.head_count", MetaValue::U32(0)).contains("zero"));
        assert!(error_with(Arch::Llama, "attention.head_count", MetaValue::U32(3)).contains("not a multiple"));
        assert!(error_with(Arch::Llama, "attention.head_count_kv", MetaValue::U32(8)).contains("not a multiple"));
        assert!(error_with(Arch::Llama, "attention.key_length", MetaValue::U32(0)).contains("key_length"));
        let m = error_with(Arch::Gemma3, "attention.key_length", MetaValue::U32(1 << 16));
        assert!(m.contains("key_length is 65536"), "{m}");
        assert!(error_with(Arch::Gemma3, "attention.sliding_window", MetaValue::U32(0)).contains("sliding_window"));
    }

    #[test]
    fn norm_epsilon_and_rope_bases_are_finite_and_positive() {
        for eps in [-1e-5, 0.0, 2.0] {
            let m = error_with(Arch::Llama, "attention.layer_norm_rms_epsilon", MetaValue::F32(eps));
            assert!(m.contains("layer_norm_rms_epsilon"), "{m}");
        }
        let m = error_with(Arch::Llama, "attention.layer_norm_rms_epsilon", MetaValue::F32(f32::NAN));
        assert!(m.contains("finite"), "{m}");
        for base in [-10_000.0, 0.0, 0.5, f32::INFINITY] {
            let m = error_with(Arch::Qwen2, "rope.freq_base", MetaValue::F32(base));
            assert!(m.contains("rope.freq_base"), "{m}");
        }
        assert!(error_with(Arch::Gemma3, "rope.local_freq_base", MetaValue::F64(-1.0)).contains("local_freq_base"));
    }
}
