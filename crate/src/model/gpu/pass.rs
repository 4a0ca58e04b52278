//! A forward call as passes: its rows split into passes of at most MAX_ROWS rows and
//! MAX_LAST sequence ends; per pass the rows' tokens, positions and page tables written to
//! `meta`, and ONE command buffer submitted (the plan's steps, then the copies of the last
//! rows' logits to the readback buffer). A decode step's successor is recorded while the
//! GPU runs it.

use super::buffers::{f32_buffer, staging};
use super::plan::{record, Plan};
use super::{GpuModel, MAX_LAST, MAX_ROWS};
use crate::backend::webgpu::abi::{ATTENTION_CHUNK, ROW_META_WORDS};
use crate::backend::webgpu::kernels::PassInfo;
use crate::error::Result;
use crate::model::{LanguageModel, SeqId};

/// One token of the call, at its position in its sequence.
struct Row {
    seq: SeqId,
    pos: usize,
    token: u32,
    /// Index in the batch when this is the sequence's last row.
    last: Option<usize>,
}

/// What a pass's command buffer depends on.
#[derive(Clone, PartialEq, Debug)]
pub(super) struct PassShape {
    rows: usize,
    chunks: usize,
    /// (row in the pass, index in the batch) of each sequence's last row.
    lasts: Vec<(u32, usize)>,
    generation: u64,
}

impl GpuModel {
    /// Records and submits the passes of a forward call; the logits reach the staging
    /// buffer when the GPU is done.
    pub(super) fn submit(&mut self, batch: &[(SeqId, &[u32])]) -> Result<()> {
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
        if self.weights.ensure_rope(&self.ctx, self.cfg.context_length, span) {
            self.plan = None;
        }
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
            if !self.profile.per_step() && shape.lasts.len() == shape.rows {
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
            let plan =
                Plan::build(&cfg, &self.ctx, &mut self.kernels, &self.weights, &self.bufs, &self.kv, self.use_matmul);
            self.plan = Some(plan);
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
        if self.profile.per_step() {
            let plan = self.plan.as_ref().expect("plan built");
            self.profile.run_steps(&self.ctx, &plan.body, rows.len(), chunks);
            self.profile.run_steps(&self.ctx, &plan.head, lasts.len(), chunks);
            let mut enc = self.ctx.device.create_command_encoder(&Default::default());
            self.copy_logits(&mut enc, &lasts);
            self.ctx.queue.submit([enc.finish()]);
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

    /// Copies each last row's logits to its place in the readback buffer (its index in the batch).
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
}
