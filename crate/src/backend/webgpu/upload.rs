//! Matrices streamed to the device. A GGUF matrix is read from its source, repacked and
//! written with `queue.write_buffer` 1 MB of rows at a time into buffers sized up front:
//! only one such piece lives in memory at once (in a page: wasm memory, which never
//! shrinks), never a whole tensor, and nothing of it stays after the upload.

use super::weights::{matrix_info, repack_rows, repacked_format, row_layout, GpuMatrix, MatrixChunk, WEIGHT_USAGE};
use super::GpuContext;
use crate::error::{AmuletError, Result};
use crate::gguf::{Gguf, TensorInfo, TensorSource};

/// Repacked bytes written per piece (the GGUF bytes read for them are about as many): 1 MB,
/// which took SmolLM2's page under 0.2x its file on WebGPU (4 MB pieces left it at 0.26x) and
/// loads no slower (the 0.5B: 1.2-2.1 s against 1.4-2.7 s on lavapipe, 22.5-22.9 s against
/// 21.3-23.0 s in Chromium on SwiftShader).
pub const STEP_BYTES: usize = 1 << 20;
/// Natively, the bytes written between waits for their staging copies to be freed.
const FLUSH_BYTES: usize = 32 << 20;

/// GGUF matrices with rows of `k` that share an input (q/k/v, gate/up), as device matrices:
/// one stacked matrix when they repack to the same format, else one each; (matrix, first row).
pub fn load_stacked<S: TensorSource + ?Sized>(
    ctx: &GpuContext,
    g: &Gguf,
    src: &S,
    parts: &[(String, usize)],
    k: usize,
) -> Result<Vec<(GpuMatrix, usize)>> {
    let infos = parts.iter().map(|(name, rows)| matrix_info(g, name, k, *rows)).collect::<Result<Vec<_>>>()?;
    let max = ctx.info.max_binding_bytes;
    let format = |i: &TensorInfo| repacked_format(i.dtype, k);
    if infos.windows(2).all(|w| format(w[0]) == format(w[1])) {
        return Ok(vec![(stream(ctx, src, &infos, k, max, STEP_BYTES)?, 0)]);
    }
    let mut out = Vec::with_capacity(infos.len());
    let mut row0 = 0;
    for info in infos {
        out.push((stream(ctx, src, &[info], k, max, STEP_BYTES)?, row0));
        row0 += info.dims[1];
    }
    Ok(out)
}

/// The matrices `parts` (rows of `k`, one repacked format), stacked in order, as one device
/// matrix in row-chunks of at most `max_binding` bytes (the layout `GpuMatrix::upload_limited`
/// gives the whole repacked matrix), written about `step_bytes` of repacked rows at a time.
pub fn stream<S: TensorSource + ?Sized>(
    ctx: &GpuContext,
    src: &S,
    parts: &[&TensorInfo],
    k: usize,
    max_binding: u64,
    step_bytes: usize,
) -> Result<GpuMatrix> {
    let format = repacked_format(parts[0].dtype, k);
    let (wpr, spr) = row_layout(format, k);
    let total: usize = parts.iter().map(|p| p.dims[1]).sum();
    let row_bytes = 4 * wpr.max(spr).max(1);
    let max = max_binding as usize;
    if row_bytes > max {
        return Err(AmuletError::NoWebGpu(format!(
            "one weight row needs {row_bytes} bytes, above the adapter's binding limit of {max}"
        )));
    }
    let per_chunk = (max / row_bytes).max(1);
    let mut chunks = Vec::new();
    let mut row0 = 0;
    while row0 < total {
        let rows = per_chunk.min(total - row0);
        let wq = device_buffer(ctx, "weights", 4 * rows * wpr);
        let ws = device_buffer(ctx, "scales", 4 * rows * spr);
        chunks.push(MatrixChunk { row0, rows, wq, ws });
        row0 += rows;
    }
    let step_rows = (step_bytes / (4 * (wpr + spr)).max(1)).max(1);
    let (mut row, mut c, mut unflushed) = (0, 0, 0);
    for info in parts {
        let rows = info.dims[1];
        let mut r = 0;
        while r < rows {
            while chunks[c].row0 + chunks[c].rows <= row {
                c += 1;
            }
            let chunk = &chunks[c];
            let n = step_rows.min(rows - r).min(chunk.row0 + chunk.rows - row);
            let piece = repack_rows(src, info, k, r, n)?;
            if piece.format != format || piece.words.len() != n * wpr || piece.scales.len() != n * spr {
                return Err(AmuletError::BadModel(format!(
                    "tensor `{}` ({:?}) repacks as {:?}, not the {format:?} of the matrices stacked with it",
                    info.name, info.dtype, piece.format
                )));
            }
            let at = (row - chunk.row0) as u64;
            ctx.queue.write_buffer(&chunk.wq, at * 4 * wpr as u64, bytemuck::cast_slice(&piece.words));
            if spr > 0 {
                ctx.queue.write_buffer(&chunk.ws, at * 4 * spr as u64, bytemuck::cast_slice(&piece.scales));
            }
            r += n;
            row += n;
            unflushed += 4 * n * (wpr + spr);
            if unflushed >= FLUSH_BYTES {
                flush(ctx);
                unflushed = 0;
            }
        }
    }
    flush(ctx);
    Ok(GpuMatrix { format, rows: total, k, chunks })
}

/// Sends the writes queued so far. Natively each write went through a staging copy, freed
/// once its submission is done: waiting here keeps those to FLUSH_BYTES. (A browser copies
/// the bytes when `writeBuffer` is called.)
fn flush(ctx: &GpuContext) {
    ctx.queue.submit(std::iter::empty::<wgpu::CommandBuffer>());
    #[cfg(not(target_arch = "wasm32"))]
    ctx.device.poll(wgpu::PollType::wait_indefinitely()).ok();
}

/// A zeroed storage buffer of `bytes` (at least 16: empty bindings are invalid) to write into.
fn device_buffer(ctx: &GpuContext, label: &str, bytes: usize) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: bytes.max(16) as u64,
        usage: WEIGHT_USAGE,
        mapped_at_creation: false,
    })
}
