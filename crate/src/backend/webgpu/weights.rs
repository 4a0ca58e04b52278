//! Weights on the GPU. GGUF blocks are 2-byte aligned and mix scales with quants; WGSL reads
//! u32 words, so each matrix is repacked at load into packed quants (`wq`) and f32 block
//! scales (`ws`), see shaders/quant.wgsl. F32, F16, Q4_0, Q4_1 and Q8_0 are kept as they
//! are; Q5_0 becomes Q8_0, Q4_K Q4_1 and Q6_K int8 with a scale per 16 (Q8_16), all three
//! without loss; other types (Q5_1, Q5_K, Q2_K, ...) are dequantized and requantized to
//! Q8_0 (8.5 bits a weight, finer than the types they come from). A matrix larger than the
//! adapter's binding limit is split into row-chunks, each its own buffers and dispatch.
//! Repacking works on any range of whole rows, so a model streams to the device in small
//! pieces (`upload`).

use std::borrow::Cow;

use candle_core::quantized::GgmlDType;
use candle_core::Device;
use half::f16;
use wgpu::util::DeviceExt;

use super::abi::Format;
use super::GpuContext;
use crate::error::{AmuletError, Result};
use crate::gguf::{Gguf, TensorInfo, TensorSource};

/// A matrix as the kernels read it: `rows` rows of `k` elements.
pub struct Repacked {
    pub format: Format,
    pub rows: usize,
    pub k: usize,
    pub words: Vec<u32>,
    pub scales: Vec<f32>,
}

impl Repacked {
    fn words_per_row(&self) -> usize {
        self.words.len() / self.rows.max(1)
    }

    fn scales_per_row(&self) -> usize {
        self.scales.len() / self.rows.max(1)
    }

    /// GGUF bytes in one of the directly supported types; None for any other type.
    pub fn from_gguf(dtype: GgmlDType, data: &[u8], rows: usize, k: usize) -> Result<Option<Self>> {
        let bad = |m: String| AmuletError::BadModel(m);
        let (format, block_bytes, header) = match dtype {
            GgmlDType::F32 => (Format::F32, 4, 0),
            GgmlDType::F16 if k.is_multiple_of(2) => (Format::F16, 4, 0),
            GgmlDType::Q4_0 => (Format::Q4_0, 18, 2),
            GgmlDType::Q4_1 => (Format::Q4_1, 20, 4),
            GgmlDType::Q8_0 => (Format::Q8_0, 34, 2),
            GgmlDType::Q5_0 => return q5_0_as_q8_0(data, rows, k).map(Some),
            GgmlDType::Q4K => return q4_k_as_q4_1(data, rows, k).map(Some),
            GgmlDType::Q6K => return q6_k_as_q8_16(data, rows, k).map(Some),
            _ => return Ok(None),
        };
        let quantized = header > 0;
        if quantized && !k.is_multiple_of(32) {
            return Err(bad(format!("a {dtype:?} row of {k} elements is not whole blocks")));
        }
        let (blocks, expect) = if quantized {
            (rows * k / 32, rows * k / 32 * block_bytes)
        } else {
            (0, rows * k * if format == Format::F32 { 4 } else { 2 })
        };
        if data.len() != expect {
            return Err(bad(format!("{dtype:?} matrix {rows}x{k} has {} bytes, expected {expect}", data.len())));
        }
        if !quantized {
            let words = data.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            return Ok(Some(Repacked { format, rows, k, words, scales: Vec::new() }));
        }
        let mut words = Vec::with_capacity(blocks * (block_bytes - header) / 4);
        let mut scales = Vec::with_capacity(blocks * (header / 2));
        for block in data.chunks_exact(block_bytes) {
            for s in block[..header].chunks_exact(2) {
                scales.push(f16::from_le_bytes([s[0], s[1]]).to_f32());
            }
            words.extend(block[header..].chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        }
        Ok(Some(Repacked { format, rows, k, words, scales }))
    }

    /// Q8_0 with one f32 scale per 32 values (amax / 127), rounded to nearest.
    pub fn q8_0(values: &[f32], rows: usize, k: usize) -> Self {
        let mut words = Vec::with_capacity(values.len() / 4);
        let mut scales = Vec::with_capacity(values.len() / 32);
        for block in values.chunks_exact(32) {
            let amax = block.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
            scales.push(d);
            for four in block.chunks_exact(4) {
                let mut word = 0u32;
                for (i, v) in four.iter().enumerate() {
                    word |= (((v * inv).round() as i32 as i8) as u8 as u32) << (8 * i);
                }
                words.push(word);
            }
        }
        Repacked { format: Format::Q8_0, rows, k, words, scales }
    }

    pub fn f32(values: &[f32], rows: usize, k: usize) -> Self {
        Repacked {
            format: Format::F32,
            rows,
            k,
            words: values.iter().map(|v| v.to_bits()).collect(),
            scales: Vec::new(),
        }
    }

    /// Element (row, i), dequantized as the kernels do (the CPU reference in tests).
    pub fn get(&self, row: usize, i: usize) -> f32 {
        let wpr = self.words_per_row();
        let w = &self.words[row * wpr..(row + 1) * wpr];
        let nb = self.k / 32;
        match self.format {
            Format::F32 => f32::from_bits(w[i]),
            Format::F16 => {
                let word = w[i / 2];
                f16::from_bits((word >> (16 * (i % 2))) as u16).to_f32()
            }
            Format::Q8_0 => {
                let q = (w[i / 4] >> (8 * (i % 4))) as u8 as i8;
                q as f32 * self.scales[row * nb + i / 32]
            }
            Format::Q8_16 => {
                let q = (w[i / 4] >> (8 * (i % 4))) as u8 as i8;
                q as f32 * self.scales[row * self.k / 16 + i / 16]
            }
            Format::Q4_0 | Format::Q4_1 => {
                let (b, j) = (i / 32, i % 32);
                let byte = (w[b * 4 + (j % 16) / 4] >> (8 * (j % 4))) as u8;
                let q = if j < 16 { byte & 15 } else { byte >> 4 } as f32;
                if self.format == Format::Q4_1 {
                    q * self.scales[2 * (row * nb + b)] + self.scales[2 * (row * nb + b) + 1]
                } else {
                    (q - 8.0) * self.scales[row * nb + b]
                }
            }
        }
    }
}

pub struct MatrixChunk {
    pub row0: usize,
    pub rows: usize,
    pub wq: wgpu::Buffer,
    pub ws: wgpu::Buffer,
}

pub struct GpuMatrix {
    pub format: Format,
    pub rows: usize,
    pub k: usize,
    pub chunks: Vec<MatrixChunk>,
}

impl GpuMatrix {
    pub fn upload(ctx: &GpuContext, m: &Repacked) -> Result<Self> {
        Self::upload_limited(ctx, m, ctx.info.max_binding_bytes)
    }

    /// As `upload`, with chunks of at most `max_bytes` (tests split small matrices).
    pub fn upload_limited(ctx: &GpuContext, m: &Repacked, max_bytes: u64) -> Result<Self> {
        let max = max_bytes as usize;
        let (wpr, spr) = (m.words_per_row(), m.scales_per_row());
        let row_bytes = 4 * wpr.max(spr).max(1);
        if row_bytes > max {
            return Err(AmuletError::NoWebGpu(format!(
                "one weight row needs {row_bytes} bytes, above the adapter's binding limit of {max}"
            )));
        }
        let per_chunk = (max / row_bytes).max(1);
        let mut chunks = Vec::new();
        let mut row0 = 0;
        while row0 < m.rows {
            let rows = per_chunk.min(m.rows - row0);
            let wq = storage(ctx, "weights", bytemuck::cast_slice(&m.words[row0 * wpr..(row0 + rows) * wpr]));
            let ws = storage(ctx, "scales", bytemuck::cast_slice(&m.scales[row0 * spr..(row0 + rows) * spr]));
            chunks.push(MatrixChunk { row0, rows, wq, ws });
            row0 += rows;
        }
        Ok(GpuMatrix { format: m.format, rows: m.rows, k: m.k, chunks })
    }

    /// A GGUF tensor of `rows` x `k`, repacked (or requantized) and streamed to the device
    /// 1 MB at a time (`upload::stream`).
    pub fn load<S: TensorSource + ?Sized>(
        ctx: &GpuContext,
        g: &Gguf,
        src: &S,
        name: &str,
        k: usize,
        rows: usize,
    ) -> Result<Self> {
        let info = matrix_info(g, name, k, rows)?;
        super::upload::stream(ctx, src, &[info], k, ctx.info.max_binding_bytes, super::upload::STEP_BYTES)
    }
}

/// A matrix of `rows` x `k` must be whole blocks of `per_block` values, `block` bytes each.
fn check_blocks(name: &str, data: &[u8], rows: usize, k: usize, per_block: usize, block: usize) -> Result<()> {
    let expect = rows * k / per_block * block;
    if !k.is_multiple_of(per_block) || data.len() != expect {
        return Err(AmuletError::BadModel(format!(
            "{name} matrix {rows}x{k} has {} bytes, expected {expect} in whole {per_block}-value blocks",
            data.len()
        )));
    }
    Ok(())
}

/// int8 values, four to a little-endian word (Q8_0's words).
fn int8_words(values: &[i8]) -> impl Iterator<Item = u32> + '_ {
    values.chunks_exact(4).map(|c| u32::from_le_bytes([c[0] as u8, c[1] as u8, c[2] as u8, c[3] as u8]))
}

/// Q5_0 holds 32 values a block as x = d·(q − 16) with 5-bit q and an f16 d: int8 values
/// q − 16 with the f32 scale d (exact) are Q8_0, so it is repacked without loss and runs
/// through the Q8_0 kernels (and stacks with Q8_0 matrices: the 0.5B Qwen's v).
fn q5_0_as_q8_0(data: &[u8], rows: usize, k: usize) -> Result<Repacked> {
    const BLOCK: usize = 22;
    check_blocks("Q5_0", data, rows, k, 32, BLOCK)?;
    let mut words = Vec::with_capacity(rows * k / 4);
    let mut scales = Vec::with_capacity(rows * k / 32);
    let mut values = [0i8; 32];
    for block in data.chunks_exact(BLOCK) {
        scales.push(f16::from_le_bytes([block[0], block[1]]).to_f32());
        let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
        let qs = &block[6..];
        // ggml's dequantize_row_q5_0: element j is the low nibble of qs[j], element j + 16
        // its high nibble; bit j of qh is element j's fifth bit.
        let fifth = |j: usize| (((qh >> j) & 1) << 4) as u8;
        for j in 0..16 {
            values[j] = ((qs[j] & 0xF) | fifth(j)) as i8 - 16;
            values[j + 16] = ((qs[j] >> 4) | fifth(j + 16)) as i8 - 16;
        }
        words.extend(int8_words(&values));
    }
    Ok(Repacked { format: Format::Q8_0, rows, k, words, scales })
}

/// Q4_K holds 256 values a block as 8 sub-blocks of 32, each x = d·sc·q − dmin·m with
/// 6-bit sc and m: that is Q4_1 per sub-block (scale d·sc, offset −dmin·m, both exact in
/// f32), so it is repacked without loss and runs through the Q4_1 kernels.
fn q4_k_as_q4_1(data: &[u8], rows: usize, k: usize) -> Result<Repacked> {
    const BLOCK: usize = 144;
    check_blocks("Q4_K", data, rows, k, 256, BLOCK)?;
    let mut words = Vec::with_capacity(rows * k / 8);
    let mut scales = Vec::with_capacity(rows * k / 16);
    for block in data.chunks_exact(BLOCK) {
        let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
        let dmin = f16::from_le_bytes([block[2], block[3]]).to_f32();
        let (sc, qs) = (&block[4..16], &block[16..]);
        for sub in 0..8 {
            // ggml's get_scale_min_k4.
            let (scale, min) = if sub < 4 {
                (sc[sub] & 63, sc[sub + 4] & 63)
            } else {
                ((sc[sub + 4] & 0xF) | ((sc[sub - 4] >> 6) << 4), (sc[sub + 4] >> 4) | ((sc[sub] >> 6) << 4))
            };
            scales.push(d * scale as f32);
            scales.push(-dmin * min as f32);
            // Sub-block 2j is the low nibbles of qs[32j..32j+32], 2j+1 the high ones; Q4_1
            // keeps element i in byte i's low nibble and element i+16 in its high one.
            let (bytes, shift) = (&qs[32 * (sub / 2)..32 * (sub / 2) + 32], 4 * (sub % 2));
            let q = |i: usize| (bytes[i] >> shift) & 0xF;
            for four in (0..16).step_by(4) {
                let byte = |i: usize| (q(i) | (q(i + 16) << 4)) as u32;
                words.push(byte(four) | byte(four + 1) << 8 | byte(four + 2) << 16 | byte(four + 3) << 24);
            }
        }
    }
    Ok(Repacked { format: Format::Q4_1, rows, k, words, scales })
}

/// Q6_K holds 256 values a block as 16 sub-blocks of 16, x = d·sc·(q − 32) with 6-bit q
/// and an int8 sc: int8 values q − 32 with the f32 scale d·sc per 16 (exact), Q8_0's words.
fn q6_k_as_q8_16(data: &[u8], rows: usize, k: usize) -> Result<Repacked> {
    const BLOCK: usize = 210;
    check_blocks("Q6_K", data, rows, k, 256, BLOCK)?;
    let mut words = Vec::with_capacity(rows * k / 4);
    let mut scales = Vec::with_capacity(rows * k / 16);
    let mut values = [0i8; 256];
    for block in data.chunks_exact(BLOCK) {
        let (ql, qh, sc) = (&block[..128], &block[128..192], &block[192..208]);
        let d = f16::from_le_bytes([block[208], block[209]]).to_f32();
        // ggml's dequantize_row_q6_K: two halves of 128, each four runs of 32.
        for half in 0..2 {
            let (ql, qh) = (&ql[64 * half..64 * half + 64], &qh[32 * half..32 * half + 32]);
            for l in 0..32 {
                let v = &mut values[128 * half..128 * half + 128];
                v[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
                v[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                v[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                v[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
            }
        }
        scales.extend(sc.iter().map(|&s| d * s as i8 as f32));
        words.extend(int8_words(&values));
    }
    Ok(Repacked { format: Format::Q8_16, rows, k, words, scales })
}

/// The format a GGUF matrix of `dtype` with rows of `k` is repacked into (what
/// `Repacked::from_gguf` gives, or the requantization of the other types).
pub fn repacked_format(dtype: GgmlDType, k: usize) -> Format {
    match dtype {
        GgmlDType::F32 => Format::F32,
        GgmlDType::F16 if k.is_multiple_of(2) => Format::F16,
        GgmlDType::Q4_0 => Format::Q4_0,
        GgmlDType::Q4_1 | GgmlDType::Q4K => Format::Q4_1,
        GgmlDType::Q8_0 | GgmlDType::Q5_0 => Format::Q8_0,
        GgmlDType::Q6K => Format::Q8_16,
        _ if k.is_multiple_of(32) => Format::Q8_0,
        _ => Format::F32,
    }
}

/// Words and scales per row of `k` elements in `format`.
pub fn row_layout(format: Format, k: usize) -> (usize, usize) {
    match format {
        Format::F32 => (k, 0),
        Format::F16 => (k / 2, 0),
        Format::Q4_0 => (k / 8, k / 32),
        Format::Q4_1 => (k / 8, k / 16),
        Format::Q8_0 => (k / 4, k / 32),
        Format::Q8_16 => (k / 4, k / 16),
    }
}

/// The tensor `name`, checked to be a matrix of `rows` rows of `k` elements.
pub fn matrix_info<'g>(g: &'g Gguf, name: &str, k: usize, rows: usize) -> Result<&'g TensorInfo> {
    let info = g.tensor_info(name).ok_or_else(|| AmuletError::BadModel(format!("tensor `{name}` is missing")))?;
    if info.dims != [k, rows] {
        return Err(AmuletError::BadModel(format!(
            "tensor `{name}` has shape {:?}, expected {:?} from the metadata",
            info.dims,
            [k, rows]
        )));
    }
    Ok(info)
}

/// The kernel layout of a GGUF matrix, whatever its type.
pub fn repack_tensor<S: TensorSource + ?Sized>(
    g: &Gguf,
    src: &S,
    name: &str,
    k: usize,
    rows: usize,
) -> Result<Repacked> {
    repack_rows(src, matrix_info(g, name, k, rows)?, k, 0, rows)
}

/// Rows `row0..row0 + rows` of a GGUF matrix (`info`, rows of `k`) in the kernel layout, read
/// from `src` alone. Each row is whole blocks and every repack works block by block, so a
/// range comes out exactly as the same rows of the whole matrix.
pub fn repack_rows<S: TensorSource + ?Sized>(
    src: &S,
    info: &TensorInfo,
    k: usize,
    row0: usize,
    rows: usize,
) -> Result<Repacked> {
    let (block, block_bytes) = (info.dtype.block_size(), info.dtype.type_size());
    let row_bytes = k / block * block_bytes;
    let total = info.dims.get(1).copied().unwrap_or(1);
    if !k.is_multiple_of(block) || info.byte_len != total * row_bytes || row0 + rows > total {
        return Err(AmuletError::BadModel(format!(
            "tensor `{}` ({:?}, {} bytes) is not {total} rows of {k} elements in whole blocks",
            info.name, info.dtype, info.byte_len
        )));
    }
    let data = src.read(info.offset + row0 * row_bytes, rows * row_bytes)?;
    if let Some(r) = Repacked::from_gguf(info.dtype, &data, rows, k)? {
        return Ok(r);
    }
    // candle reinterprets the bytes in place: hand it an aligned copy when needed.
    let data: Cow<[u8]> = if (data.as_ptr() as usize).is_multiple_of(4) { data } else { Cow::Owned(data.to_vec()) };
    let q = candle_core::quantized::ggml_file::qtensor_from_ggml(info.dtype, &data, vec![rows, k], &Device::Cpu)?;
    let values: Vec<f32> = q.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1()?;
    Ok(if k.is_multiple_of(32) { Repacked::q8_0(&values, rows, k) } else { Repacked::f32(&values, rows, k) })
}

/// Weight buffers: bound as storage, written at load (tests also read them back).
pub const WEIGHT_USAGE: wgpu::BufferUsages = {
    let usage = wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_DST);
    if cfg!(test) {
        usage.union(wgpu::BufferUsages::COPY_SRC)
    } else {
        usage
    }
};

/// A read-only storage buffer holding `bytes` (at least 16 bytes: empty bindings are invalid).
pub fn storage(ctx: &GpuContext, label: &str, bytes: &[u8]) -> wgpu::Buffer {
    let mut padded;
    let contents = if bytes.len() < 16 || !bytes.len().is_multiple_of(4) {
        padded = bytes.to_vec();
        padded.resize(bytes.len().max(16).next_multiple_of(4), 0);
        &padded[..]
    } else {
        bytes
    };
    ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some(label),
        contents,
        usage: WEIGHT_USAGE,
    })
}

/// f32 vectors (norm weights, biases), one after the other, as one storage buffer.
pub fn vector<S: TensorSource + ?Sized>(
    ctx: &GpuContext,
    g: &Gguf,
    src: &S,
    parts: &[(String, usize)],
) -> Result<wgpu::Buffer> {
    let mut v: Vec<f32> = Vec::new();
    for (name, len) in parts {
        v.extend(g.qtensor(src, name, &[*len])?.dequantize(&Device::Cpu)?.to_vec1::<f32>()?);
    }
    Ok(storage(ctx, "vector", bytemuck::cast_slice(&v)))
}
