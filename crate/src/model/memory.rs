//! What a model will take in memory on the CPU path, from its GGUF header alone, so that a
//! model too large for the place it would run (wasm32's 4 GiB) is refused before its
//! download, not after.

use candle_core::quantized::GgmlDType;

use super::config::ModelConfig;
use crate::error::{AmuletError, Result};
use crate::gguf::Gguf;

/// The most a wasm32 instance can address.
pub const WASM32_MEMORY: u64 = 4 << 30;
/// Room for everything that is not weights or KV cache: code, tokenizer, scratch rows.
const OVERHEAD: u64 = 192 << 20;
/// Tokens of KV cache counted per context in the estimate (two contexts: Amulet's).
const KV_TOKENS: u64 = 4096;

/// Bytes of the weights once built for the CPU kernels: GGUF's bytes, except that wasm keeps
/// Q4_1's scales as f32 (24 bytes per block instead of 20; see backend/q4_1.rs).
pub fn cpu_weight_bytes(g: &Gguf, wasm: bool) -> u64 {
    g.tensors
        .iter()
        .map(|t| {
            let b = t.byte_len as u64;
            if wasm && t.dtype == GgmlDType::Q4_1 {
                b / 20 * 24
            } else {
                b
            }
        })
        .sum()
}

/// The f32 KV cache of `contexts` sequences of `tokens` each.
pub fn kv_bytes(cfg: &ModelConfig, contexts: u64, tokens: u64) -> u64 {
    2 * 4 * cfg.n_layer as u64 * cfg.kv_dim() as u64 * tokens * contexts
}

/// The CPU path's estimate for `g`: weights, two contexts of KV cache, overhead.
pub fn cpu_estimate(g: &Gguf, wasm: bool) -> Result<u64> {
    let cfg = ModelConfig::from_gguf(g)?;
    let tokens = KV_TOKENS.min(cfg.context_length as u64);
    Ok(cpu_weight_bytes(g, wasm) + kv_bytes(&cfg, 2, tokens) + OVERHEAD)
}

/// Refuses a model whose CPU-path estimate exceeds what wasm32 can hold, naming both.
pub fn check_fits_wasm32(g: &Gguf) -> Result<u64> {
    let need = cpu_estimate(g, true)?;
    if need > WASM32_MEMORY {
        return Err(AmuletError::TooLarge(format!(
            "this model needs about {:.1} GB on the CPU path (weights and two contexts of KV cache); \
             WebAssembly (wasm32) holds at most {:.1} GB: use WebGPU or a smaller model",
            need as f64 / 1e9,
            WASM32_MEMORY as f64 / 1e9
        )));
    }
    Ok(need)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::{write_gguf, FixtureSpec};
    use crate::model::Arch;

    #[test]
    fn estimates_count_weights_and_two_contexts() {
        let bytes = write_gguf(&FixtureSpec::tiny(Arch::Llama, GgmlDType::Q4_1, 1)).unwrap();
        let g = Gguf::parse(&bytes).unwrap();
        let file_tensors: u64 = g.tensors.iter().map(|t| t.byte_len as u64).sum();
        assert_eq!(cpu_weight_bytes(&g, false), file_tensors);
        assert!(cpu_weight_bytes(&g, true) > file_tensors, "wasm keeps Q4_1 scales as f32");
        let cfg = ModelConfig::from_gguf(&g).unwrap();
        let est = cpu_estimate(&g, true).unwrap();
        assert_eq!(est, cpu_weight_bytes(&g, true) + kv_bytes(&cfg, 2, 2048) + OVERHEAD);
        assert_eq!(check_fits_wasm32(&g).unwrap(), est);
    }

    /// The header of a llama file with one F32 embedding of d x vocab, and the file's length.
    fn header_only(d: u64, vocab: u64) -> (Vec<u8>, usize) {
        let s = |b: &mut Vec<u8>, v: &str| {
            b.extend((v.len() as u64).to_le_bytes());
            b.extend(v.as_bytes());
        };
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes()); // tensors
        let kvs: [(&str, u32); 5] = [
            ("llama.block_count", 1),
            ("llama.embedding_length", d as u32),
            ("llama.attention.head_count", 8),
            ("llama.feed_forward_length", 4 * d as u32),
            ("llama.context_length", 4096),
        ];
        b.extend((kvs.len() as u64 + 2).to_le_bytes());
        s(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        s(&mut b, "llama");
        for (k, v) in kvs {
            s(&mut b, k);
            b.extend(4u32.to_le_bytes());
            b.extend(v.to_le_bytes());
        }
        s(&mut b, "llama.attention.layer_norm_rms_epsilon");
        b.extend(6u32.to_le_bytes());
        b.extend(1e-5f32.to_le_bytes());
        s(&mut b, "token_embd.weight");
        b.extend(2u32.to_le_bytes());
        b.extend(d.to_le_bytes());
        b.extend(vocab.to_le_bytes());
        b.extend(0u32.to_le_bytes()); // F32
        b.extend(0u64.to_le_bytes());
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        let len = b.len() + (d * vocab * 4) as usize;
        (b, len)
    }

    #[test]
    fn a_model_beyond_wasm32_is_refused_from_its_header() {
        let (prefix, len) = header_only(4096, 300_000); // 4.9 GB of f32 embeddings
        let g = Gguf::parse_prefix(&prefix, len).unwrap().unwrap();
        let e = check_fits_wasm32(&g).unwrap_err();
        assert_eq!(e.code(), "TOO_LARGE");
        assert!(e.to_string().contains("GB"), "{e}");
        let (prefix, len) = header_only(512, 1000);
        let g = Gguf::parse_prefix(&prefix, len).unwrap().unwrap();
        assert!(check_fits_wasm32(&g).is_ok());
    }
}
