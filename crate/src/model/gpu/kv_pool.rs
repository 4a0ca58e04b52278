//! The paged KV pool: one K and one V buffer of [page][layer][KV_PAGE positions][kv_dim]
//! f32. Sequences take pages as they grow and give them back when freed; the buffers double
//! (up to the adapter's binding limit) when the free pages run out; a fork copies its
//! source's pages; a sequence cut back (a kept conversation reused) keeps the pages its
//! remaining positions need.

use crate::backend::webgpu::abi::KV_PAGE;
use crate::backend::webgpu::GpuContext;
use crate::error::{AmuletError, Result};
use crate::model::config::ModelConfig;

/// KV pages allocated at load (grown by doubling up to the binding limit).
const INITIAL_PAGES: usize = 64;

/// One sequence's cache: its pages in position order, and the positions filled.
pub(super) struct Sequence {
    pub pages: Vec<u32>,
    pub len: usize,
}

pub(super) struct KvPool {
    pub k: wgpu::Buffer,
    pub v: wgpu::Buffer,
    pages: usize,
    max_pages: usize,
    page_bytes: u64,
    free: Vec<u32>,
}

impl KvPool {
    pub fn new(ctx: &GpuContext, cfg: &ModelConfig) -> Result<Self> {
        let page_bytes = (cfg.n_layer * KV_PAGE * cfg.kv_dim() * 4) as u64;
        let max_pages = (ctx.info.max_binding_bytes / page_bytes) as usize;
        if max_pages == 0 {
            return Err(AmuletError::NoWebGpu(format!(
                "a KV page of {page_bytes} bytes is above the adapter's binding limit"
            )));
        }
        let pages = INITIAL_PAGES.min(max_pages);
        Ok(KvPool {
            k: kv_buffer(ctx, pages as u64 * page_bytes),
            v: kv_buffer(ctx, pages as u64 * page_bytes),
            pages,
            max_pages,
            page_bytes,
            free: (0..pages as u32).rev().collect(),
        })
    }

    /// Gives `seq` the pages it needs for `len` positions. True when the pool's buffers
    /// were replaced (grown): commands recorded against the old ones must be rebuilt.
    pub fn reserve(&mut self, ctx: &GpuContext, seq: &mut Sequence, len: usize) -> Result<bool> {
        let need = len.div_ceil(KV_PAGE);
        let have = seq.pages.len();
        if need <= have {
            return Ok(false);
        }
        let extra = need - have;
        let grown = self.free.len() < extra;
        if grown {
            self.grow(ctx, self.pages - self.free.len() + extra)?;
        }
        for _ in 0..extra {
            seq.pages.push(self.free.pop().expect("pool grown"));
        }
        Ok(grown)
    }

    fn grow(&mut self, ctx: &GpuContext, used_after: usize) -> Result<()> {
        let pages = (self.pages * 2).max(used_after).min(self.max_pages);
        if pages < used_after {
            return Err(AmuletError::ContextOverflow(format!(
                "the KV caches would need {} positions over all sequences; this adapter's largest binding holds {}",
                used_after * KV_PAGE,
                self.max_pages * KV_PAGE
            )));
        }
        let bytes = pages as u64 * self.page_bytes;
        let (k, v) = (kv_buffer(ctx, bytes), kv_buffer(ctx, bytes));
        let old = self.pages as u64 * self.page_bytes;
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(&self.k, 0, &k, 0, old);
        enc.copy_buffer_to_buffer(&self.v, 0, &v, 0, old);
        ctx.queue.submit([enc.finish()]);
        self.free.extend((self.pages as u32..pages as u32).rev());
        self.k = k;
        self.v = v;
        self.pages = pages;
        Ok(())
    }

    /// A freed sequence's pages, for the next ones.
    pub fn release(&mut self, pages: Vec<u32>) {
        self.free.extend(pages);
    }

    /// Cuts `seq` back to its first `len` positions: the pages past them go back to the
    /// pool; the rest of its last page is stale but never read (attention stops at a row's
    /// position) and is overwritten as the sequence grows again.
    pub fn truncate(&mut self, seq: &mut Sequence, len: usize) {
        let keep = len.div_ceil(KV_PAGE);
        if seq.pages.len() > keep {
            self.free.extend(seq.pages.drain(keep..));
        }
        seq.len = len;
    }

    /// Bytes of K and V that `pages` pages hold.
    /// K+V bytes of every page this adapter's bindings allow: all the KV space there is.
    pub fn capacity_bytes(&self) -> usize {
        self.bytes_of(self.max_pages)
    }

    pub fn bytes_of(&self, pages: usize) -> usize {
        2 * pages * self.page_bytes as usize
    }

    /// Copies the K and V contents of pages `src` onto pages `dst`, in order.
    pub fn copy_pages(&self, ctx: &GpuContext, src: &[u32], dst: &[u32]) {
        let bytes = self.page_bytes;
        // A buffer cannot be copied onto itself: pages go through a scratch buffer.
        let scratch = kv_buffer(ctx, (bytes * src.len() as u64).max(4));
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        for pool in [&self.k, &self.v] {
            for (i, &s) in src.iter().enumerate() {
                enc.copy_buffer_to_buffer(pool, s as u64 * bytes, &scratch, i as u64 * bytes, bytes);
            }
            for (i, &d) in dst.iter().enumerate() {
                enc.copy_buffer_to_buffer(&scratch, i as u64 * bytes, pool, d as u64 * bytes, bytes);
            }
        }
        ctx.queue.submit([enc.finish()]);
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
