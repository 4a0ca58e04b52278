//! Random-weight GGUF files made by the project: tiny ones per architecture and quant type
//! (tests compare our model code with candle-transformers on them), and ones with a real
//! model's exact shapes (speed depends on shapes only, and real files are too big to carry).

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use crate::error::{AmuletError, Result};
use crate::model::Arch;
use crate::rng::Rng;

#[derive(Debug, Clone)]
pub struct FixtureSpec {
    pub arch: Arch,
    pub n_layer: usize,
    pub d_model: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub d_ff: usize,
    pub vocab: usize,
    pub context_length: usize,
    /// Type of the block matrices; embeddings use `embed_quant`.
    pub quant: GgmlDType,
    pub embed_quant: GgmlDType,
    pub seed: u64,
}

/// A weight type by name: f32, f16, q4_0, q4_1, q5_0, q8_0, q4k, q5k, q6k.
pub fn parse_quant(q: &str) -> Result<GgmlDType> {
    Ok(match q.to_ascii_lowercase().as_str() {
        "f32" => GgmlDType::F32,
        "f16" => GgmlDType::F16,
        "q4_0" => GgmlDType::Q4_0,
        "q4_1" => GgmlDType::Q4_1,
        "q5_0" => GgmlDType::Q5_0,
        "q8_0" => GgmlDType::Q8_0,
        "q4k" | "q4_k" => GgmlDType::Q4K,
        "q5k" | "q5_k" => GgmlDType::Q5K,
        "q6k" | "q6_k" => GgmlDType::Q6K,
        other => {
            return Err(AmuletError::bad_option(
                "quant",
                format!("`{other}` is not one of f32, f16, q4_0, q4_1, q5_0, q8_0, q4k, q5k, q6k"),
            ))
        }
    })
}

impl FixtureSpec {
    /// A tiny model: 2 layers, d = 256 (K-quants need rows of 256), GQA 4/2.
    pub fn tiny(arch: Arch, quant: GgmlDType, seed: u64) -> Self {
        FixtureSpec {
            arch,
            n_layer: 2,
            d_model: 256,
            n_head: 4,
            n_kv_head: 2,
            head_dim: 64,
            d_ff: 512,
            vocab: 512,
            context_length: 2048,
            quant,
            embed_quant: if quant == GgmlDType::F32 { GgmlDType::F32 } else { GgmlDType::Q8_0 },
            seed,
        }
    }

    /// SmolLM2-135M-Instruct Q4_1's exact shapes and types.
    pub fn smollm2_135m(seed: u64) -> Self {
        FixtureSpec {
            arch: Arch::Llama,
            n_layer: 30,
            d_model: 576,
            n_head: 9,
            n_kv_head: 3,
            head_dim: 64,
            d_ff: 1536,
            vocab: 49152,
            context_length: 8192,
            quant: GgmlDType::Q4_1,
            embed_quant: GgmlDType::Q8_0,
            seed,
        }
    }

    /// The spec of `shape` for `arch` with block matrices in `quant`.
    pub fn with_shape(arch: Arch, shape: FixtureShape, quant: GgmlDType, seed: u64) -> Result<Self> {
        match shape {
            FixtureShape::Tiny => Ok(Self::tiny(arch, quant, seed)),
            FixtureShape::Smollm2 if arch == Arch::Llama => Ok(Self::smollm2_135m(seed)),
            FixtureShape::Smollm2 => {
                Err(AmuletError::bad_option("shape", "smollm2-135m is a llama model: use --arch llama"))
            }
        }
    }
}

/// The shapes a fixture can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum FixtureShape {
    /// 2 layers, d = 256: every architecture and type, for reference tests.
    Tiny,
    /// SmolLM2-135M-Instruct Q4_1's exact shapes (llama), for speed runs.
    #[cfg_attr(not(target_arch = "wasm32"), value(name = "smollm2-135m"))]
    Smollm2,
}

/// GPT-2's byte-to-unicode table: the 256 single-byte tokens of a byte-level BPE vocabulary.
fn byte_level_alphabet() -> Vec<String> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut out = vec![String::new(); 256];
    let mut extra = 0;
    for b in 0..256u32 {
        let c = if printable.contains(&b) {
            b
        } else {
            extra += 1;
            255 + extra
        };
        out[b as usize] = char::from_u32(c).map(String::from).unwrap_or_default();
    }
    out
}

const CHATML_TEMPLATE: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + \
message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Serialises the fixture as GGUF bytes.
pub fn write_gguf(spec: &FixtureSpec) -> Result<Vec<u8>> {
    let s = spec;
    let dev = &Device::Cpu;
    let mut rng = Rng::new(s.seed ^ 0xA11CE);
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    let mut add = |name: String, rows: usize, cols: usize, dtype: GgmlDType, scale: f32, offset: f32| -> Result<()> {
        let data: Vec<f32> = rng.vec(rows * cols, scale).into_iter().map(|v| v + offset).collect();
        let t = if rows == 1 { Tensor::from_vec(data, cols, dev)? } else { Tensor::from_vec(data, (rows, cols), dev)? };
        tensors.push((name, QTensor::quantize(&t, dtype)?));
        Ok(())
    };
    let (d, q, kv, ff) = (s.d_model, s.n_head * s.head_dim, s.n_kv_head * s.head_dim, s.d_ff);
    let w = 1.0 / (d as f32).sqrt();
    add("token_embd.weight".into(), s.vocab, d, s.embed_quant, 1.0, 0.0)?;
    add("output_norm.weight".into(), 1, d, GgmlDType::F32, 0.1, 1.0)?;
    for i in 0..s.n_layer {
        let n = |x: &str| format!("blk.{i}.{x}");
        add(n("attn_norm.weight"), 1, d, GgmlDType::F32, 0.1, 1.0)?;
        add(n("attn_q.weight"), q, d, s.quant, w, 0.0)?;
        add(n("attn_k.weight"), kv, d, s.quant, w, 0.0)?;
        add(n("attn_v.weight"), kv, d, s.quant, w, 0.0)?;
        add(n("attn_output.weight"), d, q, s.quant, w, 0.0)?;
        add(n("ffn_norm.weight"), 1, d, GgmlDType::F32, 0.1, 1.0)?;
        add(n("ffn_gate.weight"), ff, d, s.quant, w, 0.0)?;
        add(n("ffn_up.weight"), ff, d, s.quant, w, 0.0)?;
        add(n("ffn_down.weight"), d, ff, s.quant, 1.0 / (ff as f32).sqrt(), 0.0)?;
        if s.arch == Arch::Qwen2 {
            add(n("attn_q.bias"), 1, q, GgmlDType::F32, 0.1, 0.0)?;
            add(n("attn_k.bias"), 1, kv, GgmlDType::F32, 0.1, 0.0)?;
            add(n("attn_v.bias"), 1, kv, GgmlDType::F32, 0.1, 0.0)?;
        }
        if s.arch == Arch::Gemma3 {
            add(n("attn_q_norm.weight"), 1, s.head_dim, GgmlDType::F32, 0.1, 1.0)?;
            add(n("attn_k_norm.weight"), 1, s.head_dim, GgmlDType::F32, 0.1, 1.0)?;
            add(n("post_attention_norm.weight"), 1, d, GgmlDType::F32, 0.1, 1.0)?;
            add(n("post_ffw_norm.weight"), 1, d, GgmlDType::F32, 0.1, 1.0)?;
        }
    }

    // Tokenizer: byte-level BPE over the 256 byte tokens, two specials, fillers up to vocab.
    let mut tokens = byte_level_alphabet();
    let merges = vec!["Ġ t".to_string(), "h e".to_string()];
    tokens.push("Ġt".into());
    tokens.push("he".into());
    let im_start = tokens.len() as u32;
    tokens.push("<|im_start|>".into());
    let im_end = tokens.len() as u32;
    tokens.push("<|im_end|>".into());
    if tokens.len() > s.vocab {
        return Err(AmuletError::bad_option("vocab", format!("must be at least {}", tokens.len())));
    }
    let mut types = vec![1i32; tokens.len()];
    types[im_start as usize] = 3;
    types[im_end as usize] = 3;
    while tokens.len() < s.vocab {
        types.push(4);
        tokens.push(format!("<|fill_{}|>", tokens.len()));
    }

    let arch = s.arch.name();
    let key = |k: &str| format!("{arch}.{k}");
    let str_array = |v: &[String]| Value::Array(v.iter().map(|t| Value::String(t.clone())).collect());
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.name".into(), Value::String(format!("amulet fixture {arch} {:?}", s.quant))),
        (key("block_count"), Value::U32(s.n_layer as u32)),
        (key("context_length"), Value::U32(s.context_length as u32)),
        (key("embedding_length"), Value::U32(d as u32)),
        (key("feed_forward_length"), Value::U32(ff as u32)),
        (key("attention.head_count"), Value::U32(s.n_head as u32)),
        (key("attention.head_count_kv"), Value::U32(s.n_kv_head as u32)),
        (key("attention.layer_norm_rms_epsilon"), Value::F32(1e-5)),
        (key("rope.freq_base"), Value::F32(10_000.0)),
        (key("rope.dimension_count"), Value::U32(s.head_dim as u32)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("default".into())),
        ("tokenizer.ggml.tokens".into(), str_array(&tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types.into_iter().map(Value::I32).collect())),
        ("tokenizer.ggml.merges".into(), str_array(&merges)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(im_start)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(im_end)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        ("tokenizer.chat_template".into(), Value::String(CHATML_TEMPLATE.into())),
    ];
    if s.arch == Arch::Gemma3 {
        meta.push((key("attention.key_length"), Value::U32(s.head_dim as u32)));
        meta.push((key("attention.value_length"), Value::U32(s.head_dim as u32)));
        meta.push((key("attention.sliding_window"), Value::U32(512)));
    }
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &meta_refs, &tensor_refs)?;
    Ok(out.into_inner())
}
