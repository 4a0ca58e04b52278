//! The decoder-only transformer (llama, qwen2, gemma3) on the WebGPU backend: `GpuModel`
//! and its side of the model seam (sequences, forward calls, device state).
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
//!
//! The rooms: `weights` (the model on the device), `buffers` (activations), `kv_pool`
//! (the paged caches), `plan` (the recorded dispatches), `pass` (a call as passes),
//! `choose` (a decode step that draws its tokens on the GPU), `profile` (measuring).

mod buffers;
mod choose;
mod kv_pool;
mod pass;
mod plan;
mod profile;
#[cfg(all(test, not(target_arch = "wasm32")))] // the adapter is opened blocking
mod tests;
mod weights;

use buffers::Buffers;
use kv_pool::{KvPool, Sequence};
use pass::PassShape;
use plan::Plan;
use profile::Profiler;
use weights::Weights;

use crate::backend::webgpu::abi::MAX_HEAD_DIM;
use crate::backend::webgpu::choose::Chooser;
use crate::backend::webgpu::kernels::Kernels;
use crate::backend::webgpu::GpuContext;
use crate::error::{AmuletError, Result};
use crate::gguf::{Gguf, TensorSource};
use crate::model::config::ModelConfig;
use crate::model::{check_batch, insert_sequence, LanguageModel, LocalFuture, SeqId, StepOutput, TokenRequest};

/// Rows per pass (prefill is split into passes of this many tokens).
const MAX_ROWS: usize = 64;
/// Sequence ends (logit rows) per pass.
const MAX_LAST: usize = 8;

pub struct GpuModel {
    cfg: ModelConfig,
    ctx: GpuContext,
    kernels: Kernels,
    weights: Weights,
    bufs: Buffers,
    kv: KvPool,
    seqs: Vec<Option<Sequence>>,
    plan: Option<Plan>,
    /// AMULET_GPU_PROFILE=1|2 (printed when the model is dropped).
    profile: Profiler,
    /// Bumped whenever a buffer that recorded commands bind is replaced.
    generation: u64,
    /// The next decode step's command buffer, recorded while the GPU ran this one (a step's
    /// commands depend on its shape, not on its tokens, which travel in `meta`).
    prerecorded: Option<(PassShape, wgpu::CommandBuffer)>,
    /// Draws the tokens of a decode step on the GPU (built at its first use).
    chooser: Option<Chooser>,
    /// AMULET_GPU_CHOOSE=0: read the rows back instead (to measure what the chooser saves).
    choose_on_gpu: bool,
    /// Prefill through the tiled matmul (software adapters; AMULET_GPU_MATMUL=1|0 forces).
    use_matmul: bool,
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
        let weights = Weights::load(&ctx, g, src, &cfg, progress)?;
        let bufs = Buffers::new(&ctx, &cfg);
        let kv = KvPool::new(&ctx, &cfg)?;
        let software = ctx.info.software;
        let kernels = Kernels::new(&ctx.device, software);
        let model = GpuModel {
            cfg,
            ctx,
            kernels,
            weights,
            bufs,
            kv,
            seqs: Vec::new(),
            plan: None,
            profile: Profiler::from_env(),
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

    /// Prefill through the tiled matmul (on) or the matvec's 8-row slices (off); the
    /// default depends on the adapter. For tests and measurements.
    pub fn set_prefill_matmul(&mut self, on: bool) {
        if self.use_matmul != on {
            self.use_matmul = on;
            self.plan = None;
            self.prerecorded = None;
        }
    }

    /// Makes room in the KV pool for `len` positions of sequence `id`.
    fn reserve(&mut self, id: SeqId, len: usize) -> Result<()> {
        let seq = self.seqs[id].as_mut().expect("checked sequence");
        if self.kv.reserve(&self.ctx, seq, len)? {
            self.plan = None;
        }
        Ok(())
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
        let t0 = self.profile.now();
        self.submit(batch)?;
        let t1 = self.profile.now();
        let vocab = self.cfg.vocab_size;
        let all = self.ctx.read_f32_async(&self.bufs.staging, batch.len() * vocab).await?;
        self.profile.add_timing(t0, t1);
        self.advance(batch);
        if all.iter().any(|v| !v.is_finite()) {
            return Err(AmuletError::Compute("the model produced non-finite logits".into()));
        }
        Ok(all.chunks_exact(vocab).map(|c| c.to_vec()).collect())
    }
}

impl LanguageModel for GpuModel {
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn device(&self) -> &'static str {
        "webgpu"
    }

    fn new_sequence(&mut self) -> SeqId {
        insert_sequence(&mut self.seqs, Sequence { pages: Vec::new(), len: 0 })
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
        self.kv.copy_pages(&self.ctx, &src_pages, &dst_pages);
        self.seqs[id].as_mut().expect("new sequence").len = len;
        Some(id)
    }

    fn free_sequence(&mut self, id: SeqId) {
        if let Some(entry) = self.seqs.get_mut(id) {
            if let Some(seq) = entry.take() {
                self.kv.release(seq.pages);
            }
        }
    }

    fn sequence_len(&self, id: SeqId) -> Option<usize> {
        self.seqs.get(id)?.as_ref().map(|s| s.len)
    }

    fn truncate_sequence(&mut self, id: SeqId, len: usize) -> bool {
        match self.seqs.get_mut(id).and_then(|s| s.as_mut()) {
            Some(seq) if len <= seq.len => {
                self.kv.truncate(seq, len);
                true
            }
            _ => false,
        }
    }

    fn kv_capacity_bytes(&self) -> Option<usize> {
        Some(self.kv.capacity_bytes())
    }

    fn sequence_bytes(&self, id: SeqId) -> usize {
        self.seqs.get(id).and_then(|s| s.as_ref()).map_or(0, |s| self.kv.bytes_of(s.pages.len()))
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
