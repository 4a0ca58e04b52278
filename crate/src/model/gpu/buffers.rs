//! Activations and per-pass inputs on the device, sized for MAX_ROWS rows (MAX_LAST logit
//! rows), and the buffer constructors the GPU model uses.

use wgpu::util::DeviceExt;

use super::{MAX_LAST, MAX_ROWS};
use crate::backend::webgpu::abi::ROW_META_WORDS;
use crate::backend::webgpu::kernels::PassInfo;
use crate::backend::webgpu::GpuContext;
use crate::model::config::ModelConfig;

/// Activations and per-pass inputs, sized for MAX_ROWS rows.
pub(super) struct Buffers {
    pub x: wgpu::Buffer,
    pub qkv: wgpu::Buffer,
    pub attn: wgpu::Buffer,
    pub gu: wgpu::Buffer,
    pub tmp: wgpu::Buffer,
    pub last_x: wgpu::Buffer,
    /// Normed rows, the input of the matvecs that follow a norm.
    pub xn: wgpu::Buffer,
    pub logits: wgpu::Buffer,
    pub last_index: wgpu::Buffer,
    pub pass_rows: wgpu::Buffer,
    pub pass_last: wgpu::Buffer,
    pub dummy: wgpu::Buffer,
    /// ROW_META_WORDS per pass row, then the page tables of the pass's sequences.
    pub meta: wgpu::Buffer,
    pub meta_words: usize,
    /// attention.wgsl's per-chunk results, for up to `chunk_cap` chunks a row.
    pub partial: wgpu::Buffer,
    pub chunk_cap: usize,
    pub staging: wgpu::Buffer,
    pub staging_rows: usize,
}

impl Buffers {
    pub fn new(ctx: &GpuContext, cfg: &ModelConfig) -> Self {
        let (d, q, kv, ff) = (cfg.d_model, cfg.q_dim(), cfg.kv_dim(), cfg.d_ff);
        let none = wgpu::BufferUsages::empty();
        let r = MAX_ROWS;
        let meta_words = ROW_META_WORDS * r + 1024;
        let chunk_cap = 4;
        Buffers {
            x: f32_buffer(ctx, "x", r * d, none),
            qkv: f32_buffer(ctx, "qkv", r * (q + 2 * kv), none),
            attn: f32_buffer(ctx, "attn", r * q, none),
            gu: f32_buffer(ctx, "gate_up", r * 2 * ff, none),
            tmp: f32_buffer(ctx, "tmp", r * d, none),
            last_x: f32_buffer(ctx, "last rows", MAX_LAST * d, none),
            xn: f32_buffer(ctx, "normed rows", r * d, none),
            logits: f32_buffer(ctx, "logits", MAX_LAST * cfg.vocab_size, wgpu::BufferUsages::COPY_SRC),
            last_index: f32_buffer(ctx, "last index", MAX_LAST, wgpu::BufferUsages::COPY_DST),
            pass_rows: uniform(ctx, &PassInfo::default()),
            pass_last: uniform(ctx, &PassInfo::default()),
            dummy: f32_buffer(ctx, "unused", 4, none),
            meta: f32_buffer(ctx, "meta", meta_words, wgpu::BufferUsages::COPY_DST),
            meta_words,
            partial: f32_buffer(ctx, "attention partials", r * cfg.n_head * chunk_cap * (cfg.head_dim + 2), none),
            chunk_cap,
            staging: staging(ctx, 2 * cfg.vocab_size),
            staging_rows: 2,
        }
    }
}

/// A storage buffer of `floats` f32 (at least 4), plus the `extra` usages.
pub(super) fn f32_buffer(ctx: &GpuContext, label: &str, floats: usize, extra: wgpu::BufferUsages) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (floats.max(4) * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE | extra,
        mapped_at_creation: false,
    })
}

/// A parameter block.
pub(super) fn uniform<T: bytemuck::Pod>(ctx: &GpuContext, value: &T) -> wgpu::Buffer {
    ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("params"),
        contents: bytemuck::bytes_of(value),
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
    })
}

/// The readback buffer for `floats` logits.
pub(super) fn staging(ctx: &GpuContext, floats: usize) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("logits readback"),
        size: (floats * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}
