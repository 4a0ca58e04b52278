//! The recorded dispatches of a pass (a plan): for each step its pipeline, bind group
//! (parameter blocks included) and grid, built once over the model's buffers and replayed
//! by every pass until a buffer they bind is replaced; `record` turns steps into one
//! compute pass for a given number of rows.

use super::buffers::{uniform, Buffers};
use super::kv_pool::KvPool;
use super::weights::Weights;
use super::MAX_LAST;
use crate::backend::webgpu::abi::{MatvecInput, MATMUL_TILE_N, MATMUL_TILE_ROWS, MATVEC_ROWS, WORKGROUP};
use crate::backend::webgpu::kernels::{
    bind, AttentionParams, EmbedParams, GatherParams, Kernels, MatvecParams, NormParams, RopeCacheParams,
};
use crate::backend::webgpu::weights::GpuMatrix;
use crate::backend::webgpu::GpuContext;
use crate::model::config::{Activation, ModelConfig, RopeLayout};

#[derive(Clone)]
pub(super) enum Grid {
    /// (x, 1, one z-slice per MATVEC_ROWS rows); with more rows than that, the tiled matmul
    /// when the step has one: (its x, 1, one z-slice per MATMUL_TILE_ROWS rows).
    Matvec(u32, Option<(wgpu::ComputePipeline, u32)>),
    /// (x, one y per row, 1).
    PerRow(u32),
    /// (x, one y per row, one z per attention chunk of the longest row).
    Attention(u32),
}

pub(super) struct Step {
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))] // for the native profiler
    pub label: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub bind: wgpu::BindGroup,
    pub grid: Grid,
}

/// The recorded dispatches of a pass; rebuilt when a buffer they bind is replaced.
pub(super) struct Plan {
    /// Every row of the pass through the layers.
    pub body: Vec<Step>,
    /// The sequences' last rows through the final norm and the output projection.
    pub head: Vec<Step>,
}

impl Plan {
    /// Records every step of a pass over the model's weights and buffers.
    pub fn build(
        cfg: &ModelConfig,
        ctx: &GpuContext,
        kernels: &mut Kernels,
        w: &Weights,
        b: &Buffers,
        pool: &KvPool,
        use_matmul: bool,
    ) -> Plan {
        let (d, q, kv, ff) = (cfg.d_model, cfg.q_dim(), cfg.kv_dim(), cfg.d_ff);
        let dev = &ctx.device;
        let mut body = Vec::new();
        let scale = cfg.embedding_scale.unwrap_or(1.0);
        let mut rec = Recorder { ctx, kernels, dummy: &b.dummy, eps: cfg.rms_eps, use_matmul };
        let ek = rec.kernels.embed(w.embed.format);
        for c in &w.embed.chunks {
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
        for (li, l) in w.layers.iter().enumerate() {
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
                    (3, &pool.k),
                    (4, &pool.v),
                    (5, &w.ropes[l.rope].buffer),
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
                &[(0, &p), (1, &b.qkv), (2, &b.meta), (3, &pool.k), (4, &pool.v), (5, &b.partial), (6, rows)],
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
        let out = w.output();
        let vocab = cfg.vocab_size;
        rec.norm(&mut head, &b.last_x, &w.output_norm, &b.xn, false, d, &b.pass_last);
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
}

fn div_up(a: usize, b: usize) -> u32 {
    a.div_ceil(b) as u32
}

/// One matvec: a weight matrix, its input and output rows.
pub(super) struct Mv<'a> {
    pub label: &'static str,
    pub m: &'a GpuMatrix,
    pub input: MatvecInput,
    pub x: &'a wgpu::Buffer,
    pub x_stride: usize,
    pub y: &'a wgpu::Buffer,
    pub y_stride: usize,
    pub n_off: usize,
    pub accumulate: bool,
    pub bias: Option<&'a wgpu::Buffer>,
    pub pass: &'a wgpu::Buffer,
}

/// Builds the steps of a plan: pipelines, parameter blocks and bind groups.
pub(super) struct Recorder<'a> {
    pub ctx: &'a GpuContext,
    pub kernels: &'a mut Kernels,
    pub dummy: &'a wgpu::Buffer,
    pub eps: f32,
    pub use_matmul: bool,
}

impl Recorder<'_> {
    /// One dispatch per row-chunk of the matrix.
    pub fn matvec(&mut self, steps: &mut Vec<Step>, mv: Mv) {
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
    pub fn norm(
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
pub(super) fn record(enc: &mut wgpu::CommandEncoder, steps: &[Step], n: usize, chunks: usize) {
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
