//! The decoder-only transformer (llama, qwen2, gemma3) on the WebGPU backend.
//!
//! A forward call becomes passes of at most `MAX_ROWS` rows (a decode step of any number
//! of sequences is one pass); each pass is ONE command buffer: the embedding; per layer
//! the attention norm, the stacked q/k/v matvec, rope + KV-cache write, split-K attention
//! and its merge, the output projection adding into the residual, the MLP norm, the
//! stacked gate/up matvec, the down projection with the gated activation fused in (Gemma
//! adds its post-norms); then each sequence's last row through the final norm and the
//! output projection. Logits are read back once per call. While the GPU runs a decode
//! step, the next step's command buffer is recorded.
//!
//! KV caches live in one paged pool ([page][layer][KV_PAGE positions][kv_dim], K and V
//! apart): every row of a pass finds its sequence's pages through a page table in `meta`,
//! so sequences at different positions share each dispatch.

use wgpu::util::DeviceExt;

use super::attention::RopeTable;
use super::config::{Activation, Arch, ModelConfig, RopeLayout};
use super::{check_batch, put_in_free_slot, LanguageModel, LocalFuture, SeqId, StepOutput, TokenRequest};
use crate::backend::webgpu::abi::{
    MatvecInput, ATTENTION_CHUNK, KV_PAGE, MATMUL_TILE_N, MATMUL_TILE_ROWS, MATVEC_ROWS, MAX_HEAD_DIM, ROW_META_WORDS,
    WORKGROUP,
};
use crate::backend::webgpu::kernels::{
    bind, AttentionParams, EmbedParams, GatherParams, Kernels, MatvecParams, NormParams, PassInfo, RopeCacheParams,
};
use crate::backend::webgpu::weights::{repack_tensor, storage, vector, GpuMatrix, Repacked};
use crate::backend::webgpu::GpuContext;
use crate::error::{AmuletError, Result};
use crate::gguf::{Gguf, TensorSource};

/// Rows per pass (prefill is split into passes of this many tokens).
const MAX_ROWS: usize = 64;
/// Sequence ends (logit rows) per pass.
const MAX_LAST: usize = 8;
/// KV pages allocated at load (grown by doubling up to the binding limit).
const INITIAL_PAGES: usize = 64;

struct Layer {
    attn_norm: wgpu::Buffer,
    /// q, k and v stacked into one matrix when their types agree; (matrix, first row).
    qkv: Vec<(GpuMatrix, usize)>,
    qkv_bias: Option<wgpu::Buffer>,
    /// Gemma: q_norm then k_norm weights.
    qk_norm: Option<wgpu::Buffer>,
    attn_out: GpuMatrix,
    post_attn_norm: Option<wgpu::Buffer>,
    ffn_norm: wgpu::Buffer,
    gate_up: Vec<(GpuMatrix, usize)>,
    down: GpuMatrix,
    post_ffn_norm: Option<wgpu::Buffer>,
    window: Option<usize>,
    rope: usize,
}

struct GpuRope {
    table: RopeTable,
    positions: usize,
    buffer: wgpu::Buffer,
}

/// Activations and per-pass inputs, sized for MAX_ROWS rows.
struct Buffers {
    x: wgpu::Buffer,
    qkv: wgpu::Buffer,
    attn: wgpu::Buffer,
    gu: wgpu::Buffer,
    tmp: wgpu::Buffer,
    last_x: wgpu::Buffer,
    /// Normed rows, the input of the matvecs that follow a norm.
    xn: wgpu::Buffer,
    logits: wgpu::Buffer,
    last_index: wgpu::Buffer,
    pass_rows: wgpu::Buffer,
    pass_last: wgpu::Buffer,
    dummy: wgpu::Buffer,
    meta: wgpu::Buffer,
    meta_words: usize,
    /// attention.wgsl's per-chunk results, for up to `chunk_cap` chunks a row.
    partial: wgpu::Buffer,
    chunk_cap: usize,
    staging: wgpu::Buffer,
    staging_rows: usize,
}

struct KvPool {
    k: wgpu::Buffer,
    v: wgpu::Buffer,
    pages: usize,
    max_pages: usize,
    page_bytes: u64,
    free: Vec<u32>,
}

struct Sequence {
    pages: Vec<u32>,
    len: usize,
}

#[derive(Clone)]
enum Grid {
    /// (x, 1, one z-slice per 8 rows); with more rows than that, the tiled matmul when the
    /// step has one: (its x, 1, one z-slice per 64 rows).
    Matvec(u32, Option<(wgpu::ComputePipeline, u32)>),
    /// (x, one y per row, 1).
    PerRow(u32),
    /// (x, one y per row, one z per attention chunk of the longest row).
    Attention(u32),
}

struct Step {
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))] // for the native profiler
    label: &'static str,
    pipeline: wgpu::ComputePipeline,
    bind: wgpu::BindGroup,
    grid: Grid,
}

/// The recorded dispatches of a pass; rebuilt when a buffer they bind is replaced.
struct Plan {
    body: Vec<Step>,
    head: Vec<Step>,
}

struct Row {
    seq: SeqId,
    pos: usize,
    token: u32,
    /// Index in the batch when this is the sequence's last row.
    last: Option<usize>,
}

pub struct GpuModel {
    cfg: ModelConfig,
    ctx: GpuContext,
    kernels: Kernels,
    embed: GpuMatrix,
    output: Option<GpuMatrix>,
    output_norm: wgpu::Buffer,
    layers: Vec<Layer>,
    ropes: Vec<GpuRope>,
    bufs: Buffers,
    kv: KvPool,
    seqs: Vec<Option<Sequence>>,
    plan: Option<Plan>,
    /// AMULET_GPU_PROFILE=1: every step is submitted and waited for alone, and its wall
    /// time summed per kernel (printed when the model is dropped). Slow; for diagnosis.
    profile: Option<Vec<(&'static str, usize, f64)>>,
    /// AMULET_GPU_PROFILE=2: seconds spent recording + submitting, and waiting for results.
    timing: Option<(usize, f64, f64)>,
    /// Bumped whenever a buffer that recorded commands bind is replaced.
    generation: u64,
    /// The next decode step's command buffer, recorded while the GPU ran this one (a step's
    /// commands depend on its shape, not on its tokens, which travel in `meta`).
    prerecorded: Option<(PassShape, wgpu::CommandBuffer)>,
    /// Draws the tokens of a decode step on the GPU (built at its first use).
    chooser: Option<crate::backend::webgpu::choose::Chooser>,
    /// AMULET_GPU_CHOOSE=0: read the rows back instead (to measure what the chooser saves).
    choose_on_gpu: bool,
    /// Prefill through the tiled matmul (software adapters; AMULET_GPU_MATMUL=1|0 forces).
    use_matmul: bool,
}

/// What a pass's command buffer depends on.
#[derive(Clone, PartialEq, Debug)]
struct PassShape {
    rows: usize,
    chunks: usize,
    /// (row in the pass, index in the batch) of each sequence's last row.
    lasts: Vec<(u32, usize)>,
    generation: u64,
}

fn f32_buffer(ctx: &GpuContext, label: &str, floats: usize, extra: wgpu::BufferUsages) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (floats.max(4) * 4) as u64,
        usage: wgpu::BufferUsages::STORAGE | extra,
        mapped_at_creation: false,
    })
}

fn uniform<T: bytemuck::Pod>(ctx: &GpuContext, value: &T) -> wgpu::Buffer {
    ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("params"),
        contents: bytemuck::bytes_of(value),
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
    })
}

fn staging(ctx: &GpuContext, floats: usize) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("logits readback"),
        size: (floats * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// Matrices that share an input, stacked into one when their types agree.
fn stacked<S: TensorSource + ?Sized>(
    ctx: &GpuContext,
    g: &Gguf,
    src: &S,
    parts: &[(String, usize)],
    k: usize,
) -> Result<Vec<(GpuMatrix, usize)>> {
    let repacked =
        parts.iter().map(|(name, rows)| repack_tensor(g, src, name, k, *rows)).collect::<Result<Vec<_>>>()?;
    match Repacked::stack(repacked) {
        Ok(one) => Ok(vec![(GpuMatrix::upload(ctx, &one)?, 0)]),
        Err(each) => {
            let mut off = 0;
            let mut out = Vec::new();
            for r in &each {
                out.push((GpuMatrix::upload(ctx, r)?, off));
                off += r.rows;
            }
            Ok(out)
        }
    }
}

fn div_up(a: usize, b: usize) -> u32 {
    a.div_ceil(b) as u32
}

impl GpuModel {
    /// Uploads the model to the device; the source may go afterwards.
    pub fn load<S: TensorSource + ?Sized>(
        ctx: GpuContext,
        g: &Gguf,
        src: &S,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<Self> {
        let cfg = ModelConfig::from_gguf(g)?;
        Self::load_with_config(ctx, g, src, cfg, &mut progress)
    }

    pub fn load_with_config<S: TensorSource + ?Sized>(
        ctx: GpuContext,
        g: &Gguf,
        src: &S,
        cfg: ModelConfig,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        if [cfg.d_model, cfg.q_dim(), cfg.d_ff].iter().any(|n| n % 4 != 0) {
            return Err(AmuletError::NoWebGpu("the kernels read rows as vec4: widths must be multiples of 4".into()));
        }
        if cfg.head_dim > MAX_HEAD_DIM || !cfg.head_dim.is_multiple_of(4) {
            return Err(AmuletError::NoWebGpu(format!(
                "head size {} (the kernels take multiples of 4 up to {MAX_HEAD_DIM})",
                cfg.head_dim
            )));
        }
        let (d, q, kv, ff) = (cfg.d_model, cfg.q_dim(), cfg.kv_dim(), cfg.d_ff);
        let embed = GpuMatrix::load(&ctx, g, src, "token_embd.weight", d, cfg.vocab_size)?;
        let output = match g.tensor_info("output.weight") {
            Some(_) => Some(GpuMatrix::load(&ctx, g, src, "output.weight", d, cfg.vocab_size)?),
            None => None,
        };
        let output_norm = vector(&ctx, g, src, &[("output_norm.weight".to_string(), d)])?;
        let gemma = cfg.arch == Arch::Gemma3;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        let mut bases: Vec<f32> = Vec::new();
        for i in 0..cfg.n_layer {
            progress(i, cfg.n_layer);
            let n = |s: &str| format!("blk.{i}.{s}");
            let m = |s: &str, k: usize, rows: usize| GpuMatrix::load(&ctx, g, src, &n(s), k, rows);
            let v = |s: &str, len: usize| vector(&ctx, g, src, &[(n(s), len)]);
            let qkv_bias = match cfg.arch {
                Arch::Qwen2 => Some(vector(
                    &ctx,
                    g,
                    src,
                    &[(n("attn_q.bias"), q), (n("attn_k.bias"), kv), (n("attn_v.bias"), kv)],
                )?),
                _ => None,
            };
            let hd = cfg.head_dim;
            let qk_norm = if gemma {
                Some(vector(&ctx, g, src, &[(n("attn_q_norm.weight"), hd), (n("attn_k_norm.weight"), hd)])?)
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
                qkv: stacked(
                    &ctx,
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
                gate_up: stacked(&ctx, g, src, &[(n("ffn_gate.weight"), ff), (n("ffn_up.weight"), ff)], d)?,
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
                let buffer = rope_buffer(&ctx, &mut table, first_positions);
                GpuRope { table, positions: first_positions, buffer }
            })
            .collect();
        let none = wgpu::BufferUsages::empty();
        let r = MAX_ROWS;
        let bufs = Buffers {
            x: f32_buffer(&ctx, "x", r * d, none),
            qkv: f32_buffer(&ctx, "qkv", r * (q + 2 * kv), none),
            attn: f32_buffer(&ctx, "attn", r * q, none),
            gu: f32_buffer(&ctx, "gate_up", r * 2 * ff, none),
            tmp: f32_buffer(&ctx, "tmp", r * d, none),
            last_x: f32_buffer(&ctx, "last rows", MAX_LAST * d, none),
            xn: f32_buffer(&ctx, "normed rows", r * d, none),
            logits: f32_buffer(&ctx, "logits", MAX_LAST * cfg.vocab_size, wgpu::BufferUsages::COPY_SRC),
            last_index: f32_buffer(&ctx, "last index", MAX_LAST, wgpu::BufferUsages::COPY_DST),
            pass_rows: uniform(&ctx, &PassInfo::default()),
            pass_last: uniform(&ctx, &PassInfo::default()),
            dummy: f32_buffer(&ctx, "unused", 4, none),
            meta: f32_buffer(&ctx, "meta", ROW_META_WORDS * r + 1024, wgpu::BufferUsages::COPY_DST),
            meta_words: ROW_META_WORDS * r + 1024,
            partial: f32_buffer(&ctx, "attention partials", r * cfg.n_head * 4 * (cfg.head_dim + 2), none),
            chunk_cap: 4,
            staging: staging(&ctx, 2 * cfg.vocab_size),
            staging_rows: 2,
        };
        let page_bytes = (cfg.n_layer * KV_PAGE * kv * 4) as u64;
        let max_pages = (ctx.info.max_binding_bytes / page_bytes) as usize;
        if max_pages == 0 {
            return Err(AmuletError::NoWebGpu(format!(
                "a KV page of {page_bytes} bytes is above the adapter's binding limit"
            )));
        }
        let pages = INITIAL_PAGES.min(max_pages);
        let kv_pool = KvPool {
            k: kv_buffer(&ctx, pages as u64 * page_bytes),
            v: kv_buffer(&ctx, pages as u64 * page_bytes),
            pages,
            max_pages,
            page_bytes,
            free: (0..pages as u32).rev().collect(),
        };
        let software = ctx.info.software;
        let kernels = Kernels::new(&ctx.device, software);
        let model = GpuModel {
            cfg,
            ctx,
            kernels,
            embed,
            output,
            output_norm,
            layers,
            ropes,
            bufs,
            kv: kv_pool,
            seqs: Vec::new(),
            plan: None,
            profile: std::env::var("AMULET_GPU_PROFILE").is_ok_and(|v| v == "1").then(Vec::new),
            timing: std::env::var("AMULET_GPU_PROFILE").is_ok_and(|v| v == "2").then_some((0, 0.0, 0.0)),
            generation: 0,
            prerecorded: None,
            chooser: None,
            choose_on_gpu: std::env::var("AMULET_GPU_CHOOSE").map_or(true, |v| v != "0"),
            // Measured: faster on lavapipe (1.3-5x per matrix), 6x slower on an H200 (its
            // W reads are not coalesced), so software adapters only until it is tuned.
            use_matmul: std::env::var("AMULET_GPU_MATMUL").map_or(software, |v| v != "0"),
        };
        model.ctx.device.poll(wgpu::PollType::wait_indefinitely()).ok();
        model.ctx.take_error()?;
        Ok(model)
    }

    /// The wgpu device (tests destroy it to simulate a lost GPU).
    pub fn device(&self) -> wgpu::Device {
        self.ctx.device.clone()
    }

    fn build_plan(&mut self) -> Plan {
        let cfg = self.cfg.clone();
        let (d, q, kv, ff) = (cfg.d_model, cfg.q_dim(), cfg.kv_dim(), cfg.d_ff);
        let ctx = &self.ctx;
        let dev = &ctx.device;
        let b = &self.bufs;
        let kernels = &mut self.kernels;
        let mut body = Vec::new();
        let scale = cfg.embedding_scale.unwrap_or(1.0);
        let mut rec = Recorder { ctx, kernels, dummy: &b.dummy, eps: cfg.rms_eps, use_matmul: self.use_matmul };
        let ek = rec.kernels.embed(self.embed.format);
        for c in &self.embed.chunks {
            let p = uniform(ctx, &EmbedParams { d: d as u32, row0: c.row0 as u32, n: c.rows as u32, scale });
            let bind =
                bind(dev, &ek.layout, &[(0, &p), (1, &c.wq), (2, &c.ws), (3, &b.meta), (4, &b.x), (5, &b.pass_rows)]);
            body.push(Step {
                label: "embed",
                pipeline: ek.pipeline.clone(),
                bind,
                grid: Grid::PerRow(div_up(d, WORKGROUP as usize)),
            });
        }

        let qkv_w = q + 2 * kv;
        let act = match cfg.activation {
            Activation::Silu => MatvecInput::SiluGate,
            Activation::GeluTanh => MatvecInput::GeluGate,
        };
        for (li, l) in self.layers.iter().enumerate() {
            let bias = l.qkv_bias.as_ref();
            let rows = &b.pass_rows;
            rec.norm(&mut body, &b.x, &l.attn_norm, &b.xn, false, d, rows);
            for (m, off) in &l.qkv {
                rec.matvec(
                    &mut body,
                    Mv {
                        label: "qkv",
                        m,
                        input: MatvecInput::Plain,
                        x: &b.xn,
                        x_stride: d,
                        y: &b.qkv,
                        y_stride: qkv_w,
                        n_off: *off,
                        accumulate: false,
                        bias,
                        pass: rows,
                    },
                );
            }

            let rp = RopeCacheParams {
                n_head: cfg.n_head as u32,
                n_kv_head: cfg.n_kv_head as u32,
                head_dim: cfg.head_dim as u32,
                rope_half: (cfg.rope_dim / 2) as u32,
                layer: li as u32,
                n_layer: cfg.n_layer as u32,
                interleaved: (cfg.rope_layout == RopeLayout::Interleaved) as u32,
                qk_norm: l.qk_norm.is_some() as u32,
                eps: cfg.rms_eps,
                _pad: [0; 3],
            };
            let p = uniform(ctx, &rp);
            let k = &rec.kernels.rope_cache;
            let bind_rc = bind(
                dev,
                &k.layout,
                &[
                    (0, &p),
                    (1, &b.qkv),
                    (2, &b.meta),
                    (3, &self.kv.k),
                    (4, &self.kv.v),
                    (5, &self.ropes[l.rope].buffer),
                    (6, l.qk_norm.as_ref().unwrap_or(&b.dummy)),
                    (7, rows),
                ],
            );
            body.push(Step {
                label: "rope_cache",
                pipeline: k.pipeline.clone(),
                bind: bind_rc,
                grid: Grid::PerRow((cfg.n_head + 2 * cfg.n_kv_head) as u32),
            });

            let ap = AttentionParams {
                n_head: cfg.n_head as u32,
                n_kv_head: cfg.n_kv_head as u32,
                head_dim: cfg.head_dim as u32,
                layer: li as u32,
                n_layer: cfg.n_layer as u32,
                window: l.window.unwrap_or(0) as u32,
                max_chunks: b.chunk_cap as u32,
                scale: cfg.attn_scale,
            };
            let p = uniform(ctx, &ap);
            let k = &rec.kernels.attention;
            let bind_at = bind(
                dev,
                &k.layout,
                &[(0, &p), (1, &b.qkv), (2, &b.meta), (3, &self.kv.k), (4, &self.kv.v), (5, &b.partial), (6, rows)],
            );
            body.push(Step {
                label: "attention",
                pipeline: k.pipeline.clone(),
                bind: bind_at,
                grid: Grid::Attention(cfg.n_head as u32),
            });
            let k = &rec.kernels.attention_merge;
            let bind_m = bind(dev, &k.layout, &[(0, &p), (2, &b.meta), (5, &b.partial), (6, rows), (7, &b.attn)]);
            body.push(Step {
                label: "attention",
                pipeline: k.pipeline.clone(),
                bind: bind_m,
                grid: Grid::PerRow(cfg.n_head as u32),
            });

            let (out_y, out_acc) = if l.post_attn_norm.is_some() { (&b.tmp, false) } else { (&b.x, true) };
            rec.matvec(
                &mut body,
                Mv {
                    label: "attn_out",
                    m: &l.attn_out,
                    input: MatvecInput::Plain,
                    x: &b.attn,
                    x_stride: q,
                    y: out_y,
                    y_stride: d,
                    n_off: 0,
                    accumulate: out_acc,
                    bias: None,
                    pass: rows,
                },
            );
            if let Some(w) = &l.post_attn_norm {
                rec.norm(&mut body, &b.tmp, w, &b.x, true, d, rows);
            }

            rec.norm(&mut body, &b.x, &l.ffn_norm, &b.xn, false, d, rows);
            for (m, off) in &l.gate_up {
                rec.matvec(
                    &mut body,
                    Mv {
                        label: "gate_up",
                        m,
                        input: MatvecInput::Plain,
                        x: &b.xn,
                        x_stride: d,
                        y: &b.gu,
                        y_stride: 2 * ff,
                        n_off: *off,
                        accumulate: false,
                        bias: None,
                        pass: rows,
                    },
                );
            }
            let (down_y, down_acc) = if l.post_ffn_norm.is_some() { (&b.tmp, false) } else { (&b.x, true) };
            rec.matvec(
                &mut body,
                Mv {
                    label: "down",
                    m: &l.down,
                    input: act,
                    x: &b.gu,
                    x_stride: 2 * ff,
                    y: down_y,
                    y_stride: d,
                    n_off: 0,
                    accumulate: down_acc,
                    bias: None,
                    pass: rows,
                },
            );
            if let Some(w) = &l.post_ffn_norm {
                rec.norm(&mut body, &b.tmp, w, &b.x, true, d, rows);
            }
        }

        let mut head = Vec::new();
        let k = &rec.kernels.gather;
        let p = uniform(ctx, &GatherParams { d: d as u32, count: MAX_LAST as u32, _pad: [0; 2] });
        let bind_g = bind(dev, &k.layout, &[(0, &p), (1, &b.last_index), (2, &b.x), (3, &b.last_x)]);
        head.push(Step {
            label: "gather",
            pipeline: k.pipeline.clone(),
            bind: bind_g,
            grid: Grid::PerRow(div_up(d, WORKGROUP as usize)),
        });
        let out = self.output.as_ref().unwrap_or(&self.embed);
        let vocab = cfg.vocab_size;
        rec.norm(&mut head, &b.last_x, &self.output_norm, &b.xn, false, d, &b.pass_last);
        rec.matvec(
            &mut head,
            Mv {
                label: "output",
                m: out,
                input: MatvecInput::Plain,
                x: &b.xn,
                x_stride: d,
                y: &b.logits,
                y_stride: vocab,
                n_off: 0,
                accumulate: false,
                bias: None,
                pass: &b.pass_last,
            },
        );
        Plan { body, head }
    }

    /// Makes room in the KV pool for `len` positions of sequence `id`.
    fn reserve(&mut self, id: SeqId, len: usize) -> Result<()> {
        let need = len.div_ceil(KV_PAGE);
        let have = self.seqs[id].as_ref().map_or(0, |s| s.pages.len());
        if need <= have {
            return Ok(());
        }
        let extra = need - have;
        if self.kv.free.len() < extra {
            self.grow_pool(self.kv.pages - self.kv.free.len() + extra)?;
        }
        let seq = self.seqs[id].as_mut().expect("checked sequence");
        for _ in 0..extra {
            seq.pages.push(self.kv.free.pop().expect("pool grown"));
        }
        Ok(())
    }

    fn grow_pool(&mut self, used_after: usize) -> Result<()> {
        let pages = (self.kv.pages * 2).max(used_after).min(self.kv.max_pages);
        if pages < used_after {
            return Err(AmuletError::ContextOverflow(format!(
                "the KV caches would need {} positions over all sequences; this adapter's largest binding holds {}",
                used_after * KV_PAGE,
                self.kv.max_pages * KV_PAGE
            )));
        }
        let bytes = pages as u64 * self.kv.page_bytes;
        let (k, v) = (kv_buffer(&self.ctx, bytes), kv_buffer(&self.ctx, bytes));
        let old = self.kv.pages as u64 * self.kv.page_bytes;
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&self.kv.k, 0, &k, 0, old);
        enc.copy_buffer_to_buffer(&self.kv.v, 0, &v, 0, old);
        self.ctx.queue.submit([enc.finish()]);
        self.kv.free.extend((self.kv.pages as u32..pages as u32).rev());
        self.kv.k = k;
        self.kv.v = v;
        self.kv.pages = pages;
        self.plan = None;
        Ok(())
    }

    fn ensure_rope(&mut self, positions: usize) {
        for r in &mut self.ropes {
            if r.positions < positions {
                let target = positions.next_power_of_two().min(self.cfg.context_length.max(positions));
                r.buffer = rope_buffer(&self.ctx, &mut r.table, target);
                r.positions = target;
                self.plan = None;
            }
        }
    }

    fn run_pass(&mut self, rows: &[Row]) -> Result<PassShape> {
        let cfg = self.cfg.clone();
        let mut meta = vec![0u32; ROW_META_WORDS * MAX_ROWS];
        let mut tables: Vec<(SeqId, u32)> = Vec::new();
        for (r, row) in rows.iter().enumerate() {
            let table = match tables.iter().find(|(s, _)| *s == row.seq) {
                Some(&(_, off)) => off,
                None => {
                    let off = meta.len() as u32;
                    meta.extend(&self.seqs[row.seq].as_ref().expect("checked sequence").pages);
                    tables.push((row.seq, off));
                    off
                }
            };
            let at = ROW_META_WORDS * r;
            meta[at..at + ROW_META_WORDS].copy_from_slice(&[row.token, row.pos as u32, table, 0]);
        }
        if meta.len() > self.bufs.meta_words {
            let words = meta.len().next_power_of_two();
            self.bufs.meta = f32_buffer(&self.ctx, "meta", words, wgpu::BufferUsages::COPY_DST);
            self.bufs.meta_words = words;
            self.plan = None;
        }
        let span = rows.iter().map(|r| r.pos + 1).max().unwrap_or(1);
        let chunks = span.div_ceil(ATTENTION_CHUNK);
        if chunks > self.bufs.chunk_cap {
            let cap = chunks.next_power_of_two();
            let floats = MAX_ROWS * cfg.n_head * cap * (cfg.head_dim + 2);
            self.bufs.partial = f32_buffer(&self.ctx, "attention partials", floats, wgpu::BufferUsages::empty());
            self.bufs.chunk_cap = cap;
            self.plan = None;
        }
        if self.plan.is_none() {
            self.plan = Some(self.build_plan());
            self.generation += 1;
        }
        let lasts: Vec<(u32, usize)> =
            rows.iter().enumerate().filter_map(|(r, row)| row.last.map(|b| (r as u32, b))).collect();
        let q = &self.ctx.queue;
        q.write_buffer(&self.bufs.meta, 0, bytemuck::cast_slice(&meta));
        let info = |n: usize| PassInfo { n_rows: n as u32, _pad: [0; 3] };
        q.write_buffer(&self.bufs.pass_rows, 0, bytemuck::bytes_of(&info(rows.len())));
        q.write_buffer(&self.bufs.pass_last, 0, bytemuck::bytes_of(&info(lasts.len())));
        if !lasts.is_empty() {
            let index: Vec<u32> = lasts.iter().map(|&(r, _)| r).collect();
            q.write_buffer(&self.bufs.last_index, 0, bytemuck::cast_slice(&index));
        }
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(profile) = self.profile.as_mut() {
            let plan = self.plan.as_ref().expect("plan built");
            let dev = &self.ctx.device;
            for (steps, n) in [(&plan.body, rows.len()), (&plan.head, lasts.len())] {
                for s in steps.iter().filter(|_| n > 0) {
                    let t0 = std::time::Instant::now();
                    let mut enc = dev.create_command_encoder(&Default::default());
                    record(&mut enc, std::slice::from_ref(s), n, chunks);
                    q.submit([enc.finish()]);
                    dev.poll(wgpu::PollType::wait_indefinitely()).ok();
                    let dt = t0.elapsed().as_secs_f64();
                    match profile.iter_mut().find(|e| e.0 == s.label) {
                        Some(e) => {
                            e.1 += 1;
                            e.2 += dt;
                        }
                        None => profile.push((s.label, 1, dt)),
                    }
                }
            }
            let mut enc = dev.create_command_encoder(&Default::default());
            self.copy_logits(&mut enc, &lasts);
            q.submit([enc.finish()]);
            return Ok(PassShape { rows: rows.len(), chunks, lasts, generation: self.generation });
        }
        let shape = PassShape { rows: rows.len(), chunks, lasts, generation: self.generation };
        let commands = match self.prerecorded.take() {
            Some((pre, commands)) if pre == shape => commands,
            _ => self.encode(&shape),
        };
        self.ctx.queue.submit([commands]);
        Ok(shape)
    }

    /// One pass's commands: the body for all rows, the head for the last rows, and the
    /// copies of their logits to the readback buffer.
    fn encode(&self, shape: &PassShape) -> wgpu::CommandBuffer {
        let plan = self.plan.as_ref().expect("plan built");
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        record(&mut enc, &plan.body, shape.rows, shape.chunks);
        if !shape.lasts.is_empty() {
            record(&mut enc, &plan.head, shape.lasts.len(), shape.chunks);
        }
        self.copy_logits(&mut enc, &shape.lasts);
        enc.finish()
    }

    /// Copies each last row's logits to its batch slot in the readback buffer.
    fn copy_logits(&self, enc: &mut wgpu::CommandEncoder, lasts: &[(u32, usize)]) {
        let row_bytes = (self.cfg.vocab_size * 4) as u64;
        for (j, &(_, b)) in lasts.iter().enumerate() {
            enc.copy_buffer_to_buffer(
                &self.bufs.logits,
                j as u64 * row_bytes,
                &self.bufs.staging,
                b as u64 * row_bytes,
                row_bytes,
            );
        }
    }

    /// Records and submits the passes of a forward call; the logits reach the staging
    /// buffer when the GPU is done.
    fn submit(&mut self, batch: &[(SeqId, &[u32])]) -> Result<()> {
        let mut rows = Vec::new();
        for (b, (id, tokens)) in batch.iter().enumerate() {
            let start = self.sequence_len(*id).expect("checked sequence");
            for (i, &token) in tokens.iter().enumerate() {
                let last = (i + 1 == tokens.len()).then_some(b);
                rows.push(Row { seq: *id, pos: start + i, token, last });
            }
        }
        for (id, tokens) in batch {
            let len = self.sequence_len(*id).expect("checked sequence") + tokens.len();
            self.reserve(*id, len)?;
        }
        let span = rows.iter().map(|r| r.pos + 1).max().unwrap_or(1);
        self.ensure_rope(span);
        if batch.len() > self.bufs.staging_rows {
            self.bufs.staging = staging(&self.ctx, batch.len() * self.cfg.vocab_size);
            self.bufs.staging_rows = batch.len();
            self.generation += 1;
        }
        let mut i = 0;
        let mut passes = Vec::new();
        while i < rows.len() {
            let (mut end, mut lasts) = (i, 0);
            while end < rows.len() && end - i < MAX_ROWS && (lasts < MAX_LAST || rows[end].last.is_none()) {
                lasts += rows[end].last.is_some() as usize;
                end += 1;
            }
            passes.push(self.run_pass(&rows[i..end])?);
            i = end;
        }
        // A one-pass call is a decode step: record the next one (one position further)
        // while the GPU works on this one.
        if let [shape] = &passes[..] {
            if self.profile.is_none() && shape.lasts.len() == shape.rows {
                let span = rows.iter().map(|r| r.pos + 2).max().unwrap_or(1);
                let next = PassShape { chunks: span.div_ceil(ATTENTION_CHUNK), ..shape.clone() };
                if next.chunks <= self.bufs.chunk_cap {
                    let commands = self.encode(&next);
                    self.prerecorded = Some((next, commands));
                }
            }
        }
        Ok(())
    }

    /// Prefill through the tiled matmul (on) or the matvec's 8-row slices (off); the
    /// default depends on the adapter. For tests and measurements.
    pub fn set_prefill_matmul(&mut self, on: bool) {
        if self.use_matmul != on {
            self.use_matmul = on;
            self.plan = None;
            self.prerecorded = None;
        }
    }

    /// Only with AMULET_GPU_PROFILE=2 (natively): Instant does not exist in browsers.
    fn now(&self) -> Option<std::time::Instant> {
        self.timing.is_some().then(std::time::Instant::now)
    }

    /// Adds one call's recording (t0..t1) and waiting (t1..now) times.
    fn add_timing(&mut self, t0: Option<std::time::Instant>, t1: Option<std::time::Instant>) {
        if let (Some((n, record, wait)), Some(t0), Some(t1)) = (self.timing.as_mut(), t0, t1) {
            *n += 1;
            *record += (t1 - t0).as_secs_f64();
            *wait += t1.elapsed().as_secs_f64();
        }
    }

    /// Before a call touches a cache: a valid batch on a working device.
    fn check_call(&self, batch: &[(SeqId, &[u32])]) -> Result<()> {
        check_batch(&self.cfg, batch, |id| self.sequence_len(id))?;
        if let Some(why) = self.ctx.lost() {
            return Err(AmuletError::Compute(why));
        }
        self.ctx.take_error()
    }

    /// After a call's results are back: its tokens are in the caches.
    fn advance(&mut self, batch: &[(SeqId, &[u32])]) {
        for (id, tokens) in batch {
            if let Some(s) = self.seqs[*id].as_mut() {
                s.len += tokens.len();
            }
        }
    }

    /// A forward call: submit, then wait for the readback without blocking (a browser
    /// cannot block; natively the wait happens inside the readback).
    async fn forward_gpu(&mut self, batch: &[(SeqId, &[u32])]) -> Result<Vec<Vec<f32>>> {
        self.check_call(batch)?;
        let t0 = self.now();
        self.submit(batch)?;
        let t1 = self.now();
        let vocab = self.cfg.vocab_size;
        let all = self.ctx.read_f32_async(&self.bufs.staging, batch.len() * vocab).await?;
        self.add_timing(t0, t1);
        self.advance(batch);
        if all.iter().any(|v| !v.is_finite()) {
            return Err(AmuletError::Compute("the model produced non-finite logits".into()));
        }
        Ok(all.chunks_exact(vocab).map(|c| c.to_vec()).collect())
    }
}

/// One matvec: a weight matrix, its input and output rows.
struct Mv<'a> {
    label: &'static str,
    m: &'a GpuMatrix,
    input: MatvecInput,
    x: &'a wgpu::Buffer,
    x_stride: usize,
    y: &'a wgpu::Buffer,
    y_stride: usize,
    n_off: usize,
    accumulate: bool,
    bias: Option<&'a wgpu::Buffer>,
    pass: &'a wgpu::Buffer,
}

/// Builds the steps of a plan: pipelines, parameter blocks and bind groups.
struct Recorder<'a> {
    ctx: &'a GpuContext,
    kernels: &'a mut Kernels,
    dummy: &'a wgpu::Buffer,
    eps: f32,
    use_matmul: bool,
}

impl Recorder<'_> {
    /// One dispatch per row-chunk of the matrix.
    fn matvec(&mut self, steps: &mut Vec<Step>, mv: Mv) {
        let gated = matches!(mv.input, MatvecInput::SiluGate | MatvecInput::GeluGate);
        let wg_rows = (WORKGROUP / self.kernels.matvec_lanes) as usize;
        // Prefill passes (more than 8 rows) can read W once per 64 rows through the tiled
        // matmul (same bindings) instead of once per 8-row slice of the matvec.
        let tiled = self.use_matmul.then(|| self.kernels.matmul(mv.m.format, mv.input).pipeline.clone());
        let k = self.kernels.matvec(mv.m.format, mv.input);
        for c in &mv.m.chunks {
            let params = MatvecParams {
                k: mv.m.k as u32,
                n: c.rows as u32,
                n_off: (mv.n_off + c.row0) as u32,
                x_stride: mv.x_stride as u32,
                y_stride: mv.y_stride as u32,
                up_off: if gated { mv.m.k as u32 } else { 0 },
                accumulate: mv.accumulate as u32,
                has_bias: mv.bias.is_some() as u32,
            };
            let p = uniform(self.ctx, &params);
            let bind = bind(
                &self.ctx.device,
                &k.layout,
                &[
                    (0, &p),
                    (1, &c.wq),
                    (2, &c.ws),
                    (3, mv.x),
                    (4, mv.y),
                    (5, mv.bias.unwrap_or(self.dummy)),
                    (6, mv.pass),
                ],
            );
            let tiled = tiled.clone().map(|t| (t, div_up(c.rows, MATMUL_TILE_N as usize)));
            steps.push(Step {
                label: mv.label,
                pipeline: k.pipeline.clone(),
                bind,
                grid: Grid::Matvec(div_up(c.rows, wg_rows), tiled),
            });
        }
    }

    /// RMS norm of `n` rows of t, written to out (or added to it, Gemma's post-norms).
    #[allow(clippy::too_many_arguments)]
    fn norm(
        &mut self,
        steps: &mut Vec<Step>,
        t: &wgpu::Buffer,
        w: &wgpu::Buffer,
        out: &wgpu::Buffer,
        accumulate: bool,
        d: usize,
        pass: &wgpu::Buffer,
    ) {
        let p = uniform(self.ctx, &NormParams { d: d as u32, eps: self.eps, accumulate: accumulate as u32, _pad: 0 });
        let k = &self.kernels.norm;
        let bind = bind(&self.ctx.device, &k.layout, &[(0, &p), (1, t), (2, w), (3, out), (4, pass)]);
        steps.push(Step { label: "norm", pipeline: k.pipeline.clone(), bind, grid: Grid::PerRow(1) });
    }
}

/// Records steps into one compute pass, for `n` rows whose longest attends `chunks` chunks.
fn record(enc: &mut wgpu::CommandEncoder, steps: &[Step], n: usize, chunks: usize) {
    let mut pass = enc.begin_compute_pass(&Default::default());
    for s in steps {
        pass.set_pipeline(&s.pipeline);
        pass.set_bind_group(0, &s.bind, &[]);
        match s.grid {
            Grid::Matvec(_, Some((ref tiled, x))) if n > MATVEC_ROWS as usize => {
                pass.set_pipeline(tiled);
                pass.dispatch_workgroups(x, 1, div_up(n, MATMUL_TILE_ROWS as usize))
            }
            Grid::Matvec(x, _) => pass.dispatch_workgroups(x, 1, div_up(n, MATVEC_ROWS as usize)),
            Grid::PerRow(x) => pass.dispatch_workgroups(x, n as u32, 1),
            Grid::Attention(x) => pass.dispatch_workgroups(x, n as u32, chunks as u32),
        }
    }
}

impl Drop for GpuModel {
    fn drop(&mut self) {
        if let Some((n, record, wait)) = self.timing {
            let per = |t: f64| t * 1e3 / n.max(1) as f64;
            eprintln!(
                "WebGPU: {n} forward calls; per call {:.3} ms recording + submitting, {:.3} ms waiting for the GPU and the readback",
                per(record),
                per(wait)
            );
        }
        if let Some(p) = &self.profile {
            let total: f64 = p.iter().map(|e| e.2).sum();
            eprintln!("WebGPU profile (each step submitted alone): {:.1} ms in all", total * 1e3);
            for (label, n, t) in p {
                eprintln!("  {label:<12} {n:>7} dispatches {:>10.1} ms {:>5.1}%", t * 1e3, 100.0 * t / total);
            }
        }
    }
}

fn kv_buffer(ctx: &GpuContext, bytes: u64) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("kv pool"),
        size: bytes,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
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

impl LanguageModel for GpuModel {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn device(&self) -> &'static str {
        "webgpu"
    }

    fn new_sequence(&mut self) -> SeqId {
        put_in_free_slot(&mut self.seqs, Sequence { pages: Vec::new(), len: 0 })
    }

    fn fork_sequence(&mut self, source: SeqId) -> Option<SeqId> {
        let (src_pages, len) = {
            let s = self.seqs.get(source)?.as_ref()?;
            (s.pages.clone(), s.len)
        };
        let id = self.new_sequence();
        if self.reserve(id, len).is_err() {
            self.free_sequence(id);
            return None;
        }
        let dst_pages = self.seqs[id].as_ref().expect("new sequence").pages.clone();
        let bytes = self.kv.page_bytes;
        // A buffer cannot be copied onto itself: pages go through a scratch buffer.
        let scratch = kv_buffer(&self.ctx, (bytes * src_pages.len() as u64).max(4));
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        for pool in [&self.kv.k, &self.kv.v] {
            for (i, &s) in src_pages.iter().enumerate() {
                enc.copy_buffer_to_buffer(pool, s as u64 * bytes, &scratch, i as u64 * bytes, bytes);
            }
            for (i, &d) in dst_pages.iter().enumerate() {
                enc.copy_buffer_to_buffer(&scratch, i as u64 * bytes, pool, d as u64 * bytes, bytes);
            }
        }
        self.ctx.queue.submit([enc.finish()]);
        self.seqs[id].as_mut().expect("new sequence").len = len;
        Some(id)
    }

    fn free_sequence(&mut self, id: SeqId) {
        if let Some(slot) = self.seqs.get_mut(id) {
            if let Some(seq) = slot.take() {
                self.kv.free.extend(seq.pages);
            }
        }
    }

    fn sequence_len(&self, id: SeqId) -> Option<usize> {
        self.seqs.get(id)?.as_ref().map(|s| s.len)
    }

    fn lost(&self) -> Option<String> {
        self.ctx.lost()
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn forward(&mut self, batch: &[(SeqId, &[u32])]) -> Result<Vec<Vec<f32>>> {
        pollster::block_on(self.forward_gpu(batch))
    }

    #[cfg(target_arch = "wasm32")]
    fn forward(&mut self, _: &[(SeqId, &[u32])]) -> Result<Vec<Vec<f32>>> {
        Err(AmuletError::Compute("in a browser the WebGPU backend only runs through the asynchronous step".into()))
    }

    fn forward_async<'a>(&'a mut self, batch: &'a [(SeqId, &'a [u32])]) -> LocalFuture<'a, Result<Vec<Vec<f32>>>> {
        Box::pin(self.forward_gpu(batch))
    }

    fn forward_choose<'a>(
        &'a mut self,
        batch: &'a [(SeqId, &'a [u32])],
        requests: &'a [TokenRequest],
    ) -> LocalFuture<'a, Result<StepOutput>> {
        Box::pin(self.choose_gpu(batch, requests))
    }
}

#[path = "gpu_choose.rs"]
mod choose;

#[cfg(all(test, not(target_arch = "wasm32")))] // the adapter is opened blocking
#[path = "gpu_tests.rs"]
mod tests;
