//! The decoder-only transformer for llama, qwen2 and gemma3 on the CPU backend.
//! Hidden states are candle tensors [rows, d_model]; the rows of one call belong to any
//! number of sequences. Matmuls see all rows at once; rope and attention run per row.

use candle_core::{Device, Tensor};

use super::attention::{attend_rows, AttentionShape, KvCache, LayerKv, RopeTable};
use super::config::{Activation, Arch, ModelConfig};
use super::embeddings::Embeddings;
use super::{check_batch, insert_sequence, LanguageModel, LocalFuture, SeqId, StepOutput, TokenRequest};
use crate::backend::linear::Linear;
use crate::backend::norm;
use crate::backend::pool::on_pool;
use crate::backend::swiglu::silu_mul;
use crate::backend::view::with_f32;
use crate::error::{AmuletError, Result};
use crate::gguf::{Gguf, TensorSource};

struct Layer {
    attn_norm: Vec<f32>,
    qkv: Linear,
    qkv_bias: Option<Tensor>,
    q_norm: Option<Vec<f32>>,
    k_norm: Option<Vec<f32>>,
    attn_out: Linear,
    post_attn_norm: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    gate_up: Linear,
    down: Linear,
    post_ffn_norm: Option<Vec<f32>>,
    window: Option<usize>,
    rope: usize,
}

pub struct CpuModel {
    cfg: ModelConfig,
    embeddings: Embeddings,
    layers: Vec<Layer>,
    output_norm: Vec<f32>,
    output: Linear,
    ropes: Vec<RopeTable>,
    seqs: Vec<Option<KvCache>>,
}

fn vector<S: TensorSource + ?Sized>(g: &Gguf, bytes: &S, name: &str, len: usize) -> Result<Tensor> {
    Ok(g.qtensor(bytes, name, &[len])?.dequantize(&Device::Cpu)?)
}

/// `vector` as plain values (the norms' weights, read by `backend::norm` every token).
fn weights<S: TensorSource + ?Sized>(g: &Gguf, bytes: &S, name: &str, len: usize) -> Result<Vec<f32>> {
    Ok(vector(g, bytes, name, len)?.to_vec1::<f32>()?)
}

impl CpuModel {
    /// Builds the model from a parsed GGUF and its tensor bytes (the whole file in memory,
    /// or a reader); weights are copied out, so the source may go afterwards.
    pub fn load<S: TensorSource + ?Sized>(g: &Gguf, bytes: &S, mut progress: impl FnMut(usize, usize)) -> Result<Self> {
        let cfg = ModelConfig::from_gguf(g)?;
        Self::load_with_config(g, bytes, cfg, &mut progress)
    }

    /// As `load`, with a config the caller adjusted (tests pin details to a reference).
    pub fn load_with_config<S: TensorSource + ?Sized>(
        g: &Gguf,
        bytes: &S,
        cfg: ModelConfig,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let (d, q, kv, ff) = (cfg.d_model, cfg.q_dim(), cfg.kv_dim(), cfg.d_ff);
        let (embeddings, output) = Embeddings::load(g, bytes, d, cfg.vocab_size)?;
        let output_norm = weights(g, bytes, "output_norm.weight", d)?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        let mut bases: Vec<f32> = Vec::new();
        for i in 0..cfg.n_layer {
            progress(i, cfg.n_layer);
            let n = |s: &str| format!("blk.{i}.{s}");
            let qkv_names = [n("attn_q.weight"), n("attn_k.weight"), n("attn_v.weight")];
            let qkv_bias = match cfg.arch {
                Arch::Qwen2 => Some(Tensor::cat(
                    &[
                        vector(g, bytes, &n("attn_q.bias"), q)?,
                        vector(g, bytes, &n("attn_k.bias"), kv)?,
                        vector(g, bytes, &n("attn_v.bias"), kv)?,
                    ],
                    0,
                )?),
                _ => None,
            };
            let gemma = cfg.arch == Arch::Gemma3;
            let base = cfg.layer_rope_base(i);
            let rope = match bases.iter().position(|&b| b == base) {
                Some(r) => r,
                None => {
                    bases.push(base);
                    bases.len() - 1
                }
            };
            layers.push(Layer {
                attn_norm: weights(g, bytes, &n("attn_norm.weight"), d)?,
                qkv: Linear::load(g, bytes, &qkv_names, d, &[q, kv, kv])?,
                qkv_bias,
                q_norm: if gemma { Some(weights(g, bytes, &n("attn_q_norm.weight"), cfg.head_dim)?) } else { None },
                k_norm: if gemma { Some(weights(g, bytes, &n("attn_k_norm.weight"), cfg.head_dim)?) } else { None },
                attn_out: Linear::load(g, bytes, &[n("attn_output.weight")], q, &[d])?,
                post_attn_norm: if gemma {
                    Some(weights(g, bytes, &n("post_attention_norm.weight"), d)?)
                } else {
                    None
                },
                ffn_norm: weights(g, bytes, &n("ffn_norm.weight"), d)?,
                gate_up: Linear::load(g, bytes, &[n("ffn_gate.weight"), n("ffn_up.weight")], d, &[ff, ff])?,
                down: Linear::load(g, bytes, &[n("ffn_down.weight")], ff, &[d])?,
                post_ffn_norm: if gemma { Some(weights(g, bytes, &n("post_ffw_norm.weight"), d)?) } else { None },
                window: cfg.layer_window(i),
                rope,
            });
        }
        progress(cfg.n_layer, cfg.n_layer);
        let ropes = bases.iter().map(|&b| RopeTable::new(cfg.rope_dim, b, cfg.rope_layout)).collect();
        Ok(CpuModel { cfg, embeddings, layers, output_norm, output, ropes, seqs: Vec::new() })
    }

    /// Runs Q4_1 matmuls through the scalar kernel that sums in candle's order, and our other
    /// kernels' types through candle's own QMatMul, so logits are bit-identical to
    /// candle-transformers' (verification; our SIMD kernels differ only in float summation
    /// order).
    pub fn set_exact_kernels(&mut self, on: bool) {
        for l in &mut self.layers {
            for lin in [&mut l.qkv, &mut l.attn_out, &mut l.gate_up, &mut l.down] {
                lin.set_exact(on);
            }
        }
        self.output.set_exact(on);
    }

    /// `forward`, stopped before the output projection: each entry's last row after the output
    /// norm, what the projection takes (verification: an exact projection of these rows is
    /// what the logits and the combined scores approximate).
    pub fn forward_hidden(&mut self, batch: &[(SeqId, &[u32])]) -> Result<Vec<Vec<f32>>> {
        let d = self.cfg.d_model;
        self.guarded(batch, |m| Ok(m.forward_inner(batch)?.chunks_exact(d).map(<[f32]>::to_vec).collect()))
    }

    /// Bytes held by all KV caches (for the memory report).
    pub fn kv_bytes(&self) -> usize {
        self.seqs.iter().flatten().map(|c| c.bytes()).sum()
    }

    /// Runs the batch through every layer and returns each entry's last row after the output
    /// norm (`batch.len()` rows of `d_model` values): what the output projection takes.
    fn forward_inner(&mut self, batch: &[(SeqId, &[u32])]) -> Result<Vec<f32>> {
        let cfg = self.cfg.clone();
        // Row r of the hidden state belongs to (sequence, position).
        let mut rows: Vec<(SeqId, usize)> = Vec::new();
        let mut ids: Vec<u32> = Vec::new();
        for (id, tokens) in batch {
            let start = self.seqs[*id].as_ref().map_or(0, |c| c.len);
            rows.extend((0..tokens.len()).map(|i| (*id, start + i)));
            ids.extend_from_slice(tokens);
        }
        let n_rows = rows.len();
        let mut x = self.embeddings.lookup(&ids, cfg.d_model)?;
        if let Some(s) = cfg.embedding_scale {
            x = (x * s as f64)?;
        }
        // The residual stream as plain values: each block adds into it in place (candle's add
        // allocated a new tensor twice a block).
        let mut x = x.flatten_all()?.to_vec1::<f32>()?;
        let (q_dim, kv_dim, hd) = (cfg.q_dim(), cfg.kv_dim(), cfg.head_dim);
        let mut attn = vec![0f32; n_rows * q_dim];
        for (id, tokens) in batch {
            if let Some(c) = self.seqs[*id].as_mut() {
                c.reserve(tokens.len(), kv_dim);
            }
        }
        for (li, layer) in self.layers.iter().enumerate() {
            let h = self.rms_rows(&x, n_rows, &layer.attn_norm)?;
            let mut qkv = layer.qkv.forward(&h)?;
            if let Some(b) = &layer.qkv_bias {
                qkv = qkv.broadcast_add(b)?;
            }
            let (mut q, mut k, v) = with_f32(&qkv, |all| split_qkv(all, n_rows, [q_dim, kv_dim, kv_dim]))??;
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                // Per head: the rows of q and k are whole heads of `hd` values.
                q = norm::rms_norm(&q, qn, cfg.rms_eps)?;
                k = norm::rms_norm(&k, kn, cfg.rms_eps)?;
            }
            let rope = &mut self.ropes[layer.rope];
            for (r, &(seq, pos)) in rows.iter().enumerate() {
                rope.apply(&mut q[r * q_dim..(r + 1) * q_dim], hd, pos);
                rope.apply(&mut k[r * kv_dim..(r + 1) * kv_dim], hd, pos);
                let cache = self.seqs[seq].as_mut().expect("checked sequence");
                cache.layers[li].push(&k[r * kv_dim..(r + 1) * kv_dim], &v[r * kv_dim..(r + 1) * kv_dim]);
            }
            let shape = AttentionShape {
                n_head: cfg.n_head,
                n_kv_head: cfg.n_kv_head,
                head_dim: hd,
                scale: cfg.attn_scale,
                window: layer.window,
            };
            let caches: Vec<(&LayerKv, usize)> = rows
                .iter()
                .map(|&(seq, pos)| (&self.seqs[seq].as_ref().expect("checked sequence").layers[li], pos))
                .collect();
            attend_rows(&shape, &q, &caches, &mut attn);
            let a = Tensor::from_slice(&attn, (n_rows, q_dim), &Device::Cpu)?;
            let mut a = layer.attn_out.forward(&a)?;
            if let Some(w) = &layer.post_attn_norm {
                a = self.rms_norm_w(&a, w)?;
            }
            add_into(&mut x, &a)?;
            let h = self.rms_rows(&x, n_rows, &layer.ffn_norm)?;
            let gu = layer.gate_up.forward(&h)?;
            let act = match cfg.activation {
                Activation::Silu => {
                    let act = with_f32(&gu, |gu| silu_mul(gu, n_rows, cfg.d_ff))??;
                    Tensor::from_vec(act, (n_rows, cfg.d_ff), &Device::Cpu)?
                }
                Activation::GeluTanh => (gu.narrow(1, 0, cfg.d_ff)?.gelu()? * gu.narrow(1, cfg.d_ff, cfg.d_ff)?)?,
            };
            let mut f = layer.down.forward(&act)?;
            if let Some(w) = &layer.post_ffn_norm {
                f = self.rms_norm_w(&f, w)?;
            }
            add_into(&mut x, &f)?;
        }
        for (id, tokens) in batch {
            if let Some(c) = self.seqs[*id].as_mut() {
                c.len += tokens.len();
            }
        }
        // Only each sequence's last row goes through the (vocabulary-sized) output matmul.
        let d = cfg.d_model;
        let mut last = Vec::with_capacity(batch.len() * d);
        let mut end = 0;
        for (_, tokens) in batch {
            end += tokens.len();
            last.extend_from_slice(&x[(end - 1) * d..end * d]);
        }
        norm::rms_norm(&last, &self.output_norm, cfg.rms_eps)
    }

    /// The output projection of `rows` rows of `d_model` values: one logit row each.
    fn project(&self, x: Vec<f32>, rows: usize) -> Result<Vec<Vec<f32>>> {
        let x = Tensor::from_vec(x, (rows, self.cfg.d_model), &Device::Cpu)?;
        Ok(self.output.forward(&x)?.to_vec2::<f32>()?)
    }

    /// `forward_choose` on the CPU: each request's combine of its normalized rows, then one
    /// output projection for all of them. The projection is linear, so this is the combine
    /// of the logit rows up to rounding (docs/method.md §4), and amulet's two contexts take
    /// one vocabulary-sized row instead of two. When a request wants top candidates, the rows
    /// go through the same product (the weights are read once), and a request that takes one
    /// row takes that row's projection.
    fn choose_inner(&mut self, batch: &[(SeqId, &[u32])], requests: &[TokenRequest]) -> Result<StepOutput> {
        let d = self.cfg.d_model;
        let h = self.forward_inner(batch)?;
        let row = |i: Option<usize>| -> Result<Option<&[f32]>> {
            match i {
                Some(i) if i < batch.len() => Ok(Some(&h[i * d..(i + 1) * d])),
                Some(i) => Err(AmuletError::Compute(format!("a token request names row {i} of {}", batch.len()))),
                None => Ok(None),
            }
        };
        let with_rows = requests.iter().any(|r| r.top_n > 0);
        // Each request's scores: the projection of row i (Some(i)), or the next combined row.
        let mut which = Vec::with_capacity(requests.len());
        let mut stack: Vec<f32> = Vec::with_capacity((requests.len() + batch.len()) * d);
        for r in requests {
            match (r.base, r.pref) {
                (Some(i), None) | (None, Some(i)) if with_rows => {
                    row(Some(i))?;
                    which.push(Some(i));
                }
                _ => {
                    let at = stack.len();
                    stack.resize(at + d, 0.0);
                    r.mix(row(r.base)?, row(r.pref)?, &mut stack[at..])?;
                    which.push(None);
                }
            }
        }
        let mixed = stack.len() / d;
        if with_rows {
            stack.extend_from_slice(&h);
        }
        let m = stack.len() / d;
        let mut out = self.project(stack, m)?;
        let rows = out.split_off(mixed);
        let mut combined = out.into_iter();
        let scores = which
            .into_iter()
            .map(|w| match w {
                Some(i) => Ok(rows[i].clone()),
                None => combined.next().ok_or_else(|| AmuletError::Compute("a combined row went missing".into())),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(StepOutput::Combined { scores, rows })
    }

    fn rms_norm_w(&self, x: &Tensor, w: &[f32]) -> Result<Tensor> {
        rms_norm(x, w, self.cfg.rms_eps)
    }

    /// The RMS norm of `rows` rows of plain values, as a tensor for the next product.
    fn rms_rows(&self, x: &[f32], rows: usize, w: &[f32]) -> Result<Tensor> {
        let out = norm::rms_norm(x, w, self.cfg.rms_eps)?;
        Ok(Tensor::from_vec(out, (rows, w.len()), &Device::Cpu)?)
    }
}

impl LanguageModel for CpuModel {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn device(&self) -> &'static str {
        "cpu"
    }

    fn new_sequence(&mut self) -> SeqId {
        insert_sequence(&mut self.seqs, KvCache::new(self.cfg.n_layer))
    }

    fn fork_sequence(&mut self, source: SeqId) -> Option<SeqId> {
        let cache = self.seqs.get(source)?.as_ref()?.clone();
        let id = self.new_sequence();
        self.seqs[id] = Some(cache);
        Some(id)
    }

    fn free_sequence(&mut self, id: SeqId) {
        if let Some(s) = self.seqs.get_mut(id) {
            *s = None;
        }
    }

    fn sequence_len(&self, id: SeqId) -> Option<usize> {
        self.seqs.get(id)?.as_ref().map(|c| c.len)
    }

    fn truncate_sequence(&mut self, id: SeqId, len: usize) -> bool {
        let kv_dim = self.cfg.kv_dim();
        match self.seqs.get_mut(id).and_then(|s| s.as_mut()) {
            Some(c) if len <= c.len => {
                c.truncate(len, kv_dim);
                true
            }
            _ => false,
        }
    }

    fn shrink_sequence(&mut self, id: SeqId) {
        if let Some(c) = self.seqs.get_mut(id).and_then(|s| s.as_mut()) {
            c.shrink();
        }
    }

    fn sequence_bytes(&self, id: SeqId) -> usize {
        self.seqs.get(id).and_then(|s| s.as_ref()).map_or(0, |c| c.bytes())
    }

    fn forward(&mut self, batch: &[(SeqId, &[u32])]) -> Result<Vec<Vec<f32>>> {
        let logits = self.guarded(batch, |m| {
            let hidden = m.forward_inner(batch)?;
            m.project(hidden, batch.len())
        })?;
        finite(&logits)?;
        Ok(logits)
    }

    fn forward_choose<'a>(
        &'a mut self,
        batch: &'a [(SeqId, &'a [u32])],
        requests: &'a [TokenRequest],
    ) -> LocalFuture<'a, Result<StepOutput>> {
        let out = self.guarded(batch, |m| m.choose_inner(batch, requests));
        if let Ok(StepOutput::Combined { scores, rows }) = &out {
            if let Err(e) = finite(scores).and_then(|_| finite(rows)) {
                return Box::pin(std::future::ready(Err(e)));
            }
        }
        Box::pin(std::future::ready(out))
    }
}

impl CpuModel {
    /// Runs `step` on the pool after the batch's checks; on an error every listed cache goes
    /// back to its length before, so a failed step changes nothing.
    fn guarded<T>(&mut self, batch: &[(SeqId, &[u32])], step: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        check_batch(&self.cfg, batch, |id| self.sequence_len(id))?;
        let before: Vec<usize> = batch.iter().map(|(id, _)| self.sequence_len(*id).unwrap_or(0)).collect();
        let result = on_pool(|| step(self));
        if result.is_err() {
            let kv_dim = self.cfg.kv_dim();
            for ((id, _), len) in batch.iter().zip(before) {
                if let Some(c) = self.seqs[*id].as_mut() {
                    c.truncate(len, kv_dim);
                }
            }
        }
        result
    }
}

/// Logits with a NaN or an infinity are a compute failure, not scores to sample.
fn finite(rows: &[Vec<f32>]) -> Result<()> {
    if rows.iter().any(|row| row.iter().any(|v| !v.is_finite())) {
        return Err(AmuletError::Compute("the model produced non-finite logits".into()));
    }
    Ok(())
}

/// `x += a`, value by value (a block's output into the residual stream).
fn add_into(x: &mut [f32], a: &Tensor) -> Result<()> {
    with_f32(a, |a| {
        if a.len() != x.len() {
            return Err(AmuletError::Compute(format!("residual: {} values added to {}", a.len(), x.len())));
        }
        for (x, &a) in x.iter_mut().zip(a) {
            *x += a;
        }
        Ok(())
    })?
}

/// The rows of a fused q/k/v product (`rows` rows of `widths` summed) as three row-major
/// blocks: plain copies of each row's parts (candle's narrow and flatten took two strided
/// copies each, a tenth of a decode step's serial work for SmolLM2).
fn split_qkv(all: &[f32], rows: usize, widths: [usize; 3]) -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
    let width: usize = widths.iter().sum();
    if all.len() != rows * width {
        return Err(AmuletError::Compute(format!("q/k/v: {} values for {rows} rows of {width}", all.len())));
    }
    let mut parts = widths.map(|w| Vec::with_capacity(rows * w));
    for row in all.chunks_exact(width) {
        let mut at = 0;
        for (part, w) in parts.iter_mut().zip(widths) {
            part.extend_from_slice(&row[at..at + w]);
            at += w;
        }
    }
    let [q, k, v] = parts;
    Ok((q, k, v))
}

/// RMS norm of the rows of `x` (any shape, normalised along its last dimension of
/// `w.len()` values), on the pool's threads (`backend::norm`).
fn rms_norm(x: &Tensor, w: &[f32], eps: f32) -> Result<Tensor> {
    let last = x.dims().last().copied().unwrap_or(0);
    if last != w.len() {
        return Err(AmuletError::Compute(format!("RMS norm: rows of {last} values, {} weights", w.len())));
    }
    let out = with_f32(x, |xs| norm::rms_norm(xs, w, eps))??;
    Ok(Tensor::from_vec(out, x.shape(), x.device())?)
}
