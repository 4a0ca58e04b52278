//! The model's weights on the device: per layer the matrices (q/k/v and gate/up stacked
//! where their types agree) and norm vectors, the embedding and output head, and the RoPE
//! tables (one per distinct base, computed by the CPU's RopeTable, grown on demand).

use crate::backend::webgpu::upload::load_stacked;
use crate::backend::webgpu::weights::{storage, vector, GpuMatrix};
use crate::backend::webgpu::GpuContext;
use crate::error::Result;
use crate::gguf::{Gguf, TensorSource};
use crate::model::attention::RopeTable;
use crate::model::config::{Arch, ModelConfig};

pub(super) struct Layer {
    pub attn_norm: wgpu::Buffer,
    /// q, k and v stacked into one matrix when their types agree; (matrix, first row).
    pub qkv: Vec<(GpuMatrix, usize)>,
    pub qkv_bias: Option<wgpu::Buffer>,
    /// Gemma: q_norm then k_norm weights.
    pub qk_norm: Option<wgpu::Buffer>,
    pub attn_out: GpuMatrix,
    pub post_attn_norm: Option<wgpu::Buffer>,
    pub ffn_norm: wgpu::Buffer,
    pub gate_up: Vec<(GpuMatrix, usize)>,
    pub down: GpuMatrix,
    pub post_ffn_norm: Option<wgpu::Buffer>,
    pub window: Option<usize>,
    /// Index of the layer's RoPE table in `Weights::ropes`.
    pub rope: usize,
}

pub(super) struct GpuRope {
    table: RopeTable,
    positions: usize,
    pub buffer: wgpu::Buffer,
}

pub(super) struct Weights {
    pub embed: GpuMatrix,
    /// None when the output projection is tied to the embedding.
    output: Option<GpuMatrix>,
    pub output_norm: wgpu::Buffer,
    pub layers: Vec<Layer>,
    pub ropes: Vec<GpuRope>,
}

impl Weights {
    /// Uploads every tensor of the model (`progress` per layer), each streamed in pieces of
    /// 1 MB: nothing of the weights stays in memory on this side.
    pub fn load<S: TensorSource + ?Sized>(
        ctx: &GpuContext,
        g: &Gguf,
        src: &S,
        cfg: &ModelConfig,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let (d, q, kv, ff) = (cfg.d_model, cfg.q_dim(), cfg.kv_dim(), cfg.d_ff);
        let embed = GpuMatrix::load(ctx, g, src, "token_embd.weight", d, cfg.vocab_size)?;
        let output = match g.tensor_info("output.weight") {
            Some(_) => Some(GpuMatrix::load(ctx, g, src, "output.weight", d, cfg.vocab_size)?),
            None => None,
        };
        let output_norm = vector(ctx, g, src, &[("output_norm.weight".to_string(), d)])?;
        let gemma = cfg.arch == Arch::Gemma3;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        let mut bases: Vec<f32> = Vec::new();
        for i in 0..cfg.n_layer {
            progress(i, cfg.n_layer);
            let n = |s: &str| format!("blk.{i}.{s}");
            let m = |s: &str, k: usize, rows: usize| GpuMatrix::load(ctx, g, src, &n(s), k, rows);
            let v = |s: &str, len: usize| vector(ctx, g, src, &[(n(s), len)]);
            let qkv_bias = match cfg.arch {
                Arch::Qwen2 => {
                    Some(vector(ctx, g, src, &[(n("attn_q.bias"), q), (n("attn_k.bias"), kv), (n("attn_v.bias"), kv)])?)
                }
                _ => None,
            };
            let hd = cfg.head_dim;
            let qk_norm = if gemma {
                Some(vector(ctx, g, src, &[(n("attn_q_norm.weight"), hd), (n("attn_k_norm.weight"), hd)])?)
            } else {
                None
            };
            let base = cfg.layer_rope_base(i);
            let rope = match bases.iter().position(|&b| b == base) {
                Some(r) => r,
                None => {
                    bases.push(base);
                    bases.len() - 1
                }
            };
            layers.push(Layer {
                attn_norm: v("attn_norm.weight", d)?,
                qkv: load_stacked(
                    ctx,
                    g,
                    src,
                    &[(n("attn_q.weight"), q), (n("attn_k.weight"), kv), (n("attn_v.weight"), kv)],
                    d,
                )?,
                qkv_bias,
                qk_norm,
                attn_out: m("attn_output.weight", q, d)?,
                post_attn_norm: if gemma { Some(v("post_attention_norm.weight", d)?) } else { None },
                ffn_norm: v("ffn_norm.weight", d)?,
                gate_up: load_stacked(ctx, g, src, &[(n("ffn_gate.weight"), ff), (n("ffn_up.weight"), ff)], d)?,
                down: m("ffn_down.weight", ff, d)?,
                post_ffn_norm: if gemma { Some(v("post_ffw_norm.weight", d)?) } else { None },
                window: cfg.layer_window(i),
                rope,
            });
        }
        progress(cfg.n_layer, cfg.n_layer);
        let first_positions = cfg.context_length.clamp(1, 1024);
        let ropes = bases
            .iter()
            .map(|&b| {
                let mut table = RopeTable::new(cfg.rope_dim, b, cfg.rope_layout);
                let buffer = rope_buffer(ctx, &mut table, first_positions);
                GpuRope { table, positions: first_positions, buffer }
            })
            .collect();
        Ok(Weights { embed, output, output_norm, layers, ropes })
    }

    /// The output projection: its own matrix, or the embedding when they are tied.
    pub fn output(&self) -> &GpuMatrix {
        self.output.as_ref().unwrap_or(&self.embed)
    }

    /// Grows the RoPE tables to cover `positions` (to the next power of two, at most the
    /// context length); true when a buffer was replaced.
    pub fn ensure_rope(&mut self, ctx: &GpuContext, context_length: usize, positions: usize) -> bool {
        let mut replaced = false;
        for r in &mut self.ropes {
            if r.positions < positions {
                let target = positions.next_power_of_two().min(context_length.max(positions));
                r.buffer = rope_buffer(ctx, &mut r.table, target);
                r.positions = target;
                replaced = true;
            }
        }
        replaced
    }
}

/// [position][cos | sin] for `positions` positions, computed by the CPU's RopeTable.
fn rope_buffer(ctx: &GpuContext, table: &mut RopeTable, positions: usize) -> wgpu::Buffer {
    let (cos, sin) = table.tables(positions);
    let half = cos.len() / positions.max(1);
    let mut data = Vec::with_capacity(2 * cos.len());
    for p in 0..positions {
        data.extend_from_slice(&cos[p * half..(p + 1) * half]);
        data.extend_from_slice(&sin[p * half..(p + 1) * half]);
    }
    storage(ctx, "rope", bytemuck::cast_slice(&data))
}
