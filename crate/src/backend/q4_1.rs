//! Q4_1 weight matrix times f32 activations: the decode hot path.
//!
//! GGUF layout (input): a matrix of GGUF shape [k, n] is `n` rows of `k / 32` blocks of 20 bytes,
//! `d: f16, m: f16, qs: [u8; 16]`; element `e < 16` is `qs[e] & 15`, element `e + 16` is
//! `qs[e] >> 4`, and its value is `d * q + m`.
//!
//! Our layout (repacked losslessly at load; values never change). Each row is split into
//! 32-byte *units* (one unit = the 64 nibbles of two blocks) and two streams:
//! - `qs`: `ppr` units per row, 32-byte aligned;
//! - `scales`: `d` and `m`, 4 per unit (f16 bits; f32 on wasm, see `Scale`).
//!
//! The first `8 * groups` blocks of a row form groups of 8 blocks (4 units). Within a group the
//! nibbles are ordered for AVX2: unpacking unit `u` gives register `j = 2u` (low nibbles) and
//! `j = 2u + 1` (high nibbles), and byte lane `4b + t` of register `j` holds element `4j + t`
//! of block `b`. So after `maddubs` every i16 lane belongs to a single block, the 8 registers
//! of a group add up lane-wise (at most 16 products of 15 * 127 per lane: no i16 overflow), and
//! one `madd` yields the 8 block sums in block order, with no shuffles or horizontal adds.
//! The group's scales are `[d0..d7, m0..m7]`, which F16C turns into two f32x8 in one step each.
//!
//! The 0 to 4 leftover units (`tail`) keep GGUF's byte order: unit = `qs_A ++ qs_B` of blocks
//! A, B, scales `[dA, dB, mA, mB]`; a row with an odd block count gets a zero pad block
//! (`d = m = 0`), which adds exactly zero.
//!
//! Why f16 scales rather than pre-converted f32 on x86: decode streams every weight once per
//! token and is memory bound, so we keep GGUF's 20 bytes per block. wasm has no f16 conversion
//! and is compute bound, so there the scales are converted once at load (24 bytes per block).
//!
//! Activations are quantized row by row to Q8_1 exactly like candle's `BlockQ8_1::from_float`
//! (so results equal candle's up to float summation order; the scalar path sums in candle's
//! order and matches it bit for bit), then scattered into the same unit order as the weights.
//!
//! Kernels: AVX2 (x86_64 with AVX2 + FMA + F16C, i.e. x86-64-v3), simd128 (wasm32), relaxed
//! SIMD (wasm32 where the engine has it: relaxed/q4_1.rs), and a portable scalar one (everywhere
//! else, and always reachable as `matmul_scalar`). Each weight row is read once for up to 4
//! activation rows; more rows are tiled so a block of weight rows stays in L1 while the
//! activation rows pass over it.

use super::acts::{Lane, Lanes, Q};
use super::pool::{split, threads, Shared};
use crate::{AmuletError, Result};
use half::f16;
use std::ops::Range;

const QK: usize = 32;
const GGUF_BLOCK_BYTES: usize = 20;
/// Blocks per group.
const GB: usize = 8;

/// Which kernel `Q41Matrix::matmul` runs in this build (for logs and benchmarks).
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
pub const KERNEL: &str = "avx2";
#[cfg(all(target_arch = "wasm32", target_feature = "simd128", not(target_feature = "relaxed-simd")))]
pub const KERNEL: &str = "simd128";
#[cfg(all(target_arch = "wasm32", target_feature = "simd128", target_feature = "relaxed-simd"))]
pub const KERNEL: &str = "relaxed-simd";
#[cfg(not(any(
    all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"),
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
pub const KERNEL: &str = "scalar";

/// How a block's `d` / `m` are stored: f16 bits where F16C converts 8 of them in one step; f32
/// on wasm, which would spend about a quarter of the kernel converting them (measured under
/// Node) while its 4 extra bytes per block cost nothing there, the kernel being compute bound.
#[cfg(not(target_arch = "wasm32"))]
type Scale = u16;
#[cfg(target_arch = "wasm32")]
type Scale = f32;

#[inline]
fn scale_from_f16_bits(bits: u16) -> Scale {
    #[cfg(not(target_arch = "wasm32"))]
    return bits;
    #[cfg(target_arch = "wasm32")]
    return f16::from_bits(bits).to_f32();
}

#[inline]
fn scale_to_f32(s: Scale) -> f32 {
    #[cfg(not(target_arch = "wasm32"))]
    return f16::from_bits(s).to_f32();
    #[cfg(target_arch = "wasm32")]
    return s;
}

/// 32 nibble bytes; aligned so a 256-bit load never splits a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Unit([u8; 32]);

/// One Q4_1 weight matrix of `rows()` outputs by `cols()` inputs, in the layout above.
#[derive(Clone)]
pub struct Q41Matrix {
    n: usize,
    k: usize,
    /// Full 8-block groups per row.
    groups: usize,
    /// Units per row after the groups (0..=4).
    tail: usize,
    qs: Vec<Unit>,
    scales: Vec<Scale>,
}

impl std::fmt::Debug for Q41Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Q41Matrix").field("rows", &self.n).field("cols", &self.k).finish()
    }
}

impl Q41Matrix {
    /// Takes the raw GGUF tensor bytes of a Q4_1 matrix with `n` rows of `k` columns.
    pub fn from_gguf_bytes(data: &[u8], n: usize, k: usize) -> Result<Self> {
        if k == 0 || !k.is_multiple_of(QK) {
            return Err(AmuletError::BadModel(format!(
                "Q4_1 matrix {n}x{k}: the column count must be a positive multiple of {QK}"
            )));
        }
        if n == 0 {
            return Err(AmuletError::BadModel(format!("Q4_1 matrix {n}x{k}: no rows")));
        }
        let nb = k / QK;
        let expected = n
            .checked_mul(nb)
            .and_then(|b| b.checked_mul(GGUF_BLOCK_BYTES))
            .ok_or_else(|| AmuletError::BadModel(format!("Q4_1 matrix {n}x{k}: size overflows")))?;
        if data.len() != expected {
            return Err(AmuletError::BadModel(format!(
                "Q4_1 matrix {n}x{k}: expected {expected} bytes of data, got {}",
                data.len()
            )));
        }
        let groups = nb / GB;
        let tail = (nb - GB * groups).div_ceil(2);
        let ppr = 4 * groups + tail;
        let mut qs = vec![Unit([0; 32]); n * ppr];
        let mut scales = vec![scale_from_f16_bits(0); n * 4 * ppr];
        for (row, src) in data.chunks_exact(nb * GGUF_BLOCK_BYTES).enumerate() {
            let units = &mut qs[row * ppr..(row + 1) * ppr];
            let sc = &mut scales[row * 4 * ppr..(row + 1) * 4 * ppr];
            for (b, blk) in src.chunks_exact(GGUF_BLOCK_BYTES).enumerate() {
                let (di, mi) = scale_pos(groups, b);
                sc[di] = scale_from_f16_bits(u16::from_le_bytes([blk[0], blk[1]]));
                sc[mi] = scale_from_f16_bits(u16::from_le_bytes([blk[2], blk[3]]));
                let q = &blk[4..GGUF_BLOCK_BYTES];
                if b < GB * groups {
                    let (g, bb) = (b / GB, b % GB);
                    for j in 0..8 {
                        let u = &mut units[4 * g + j / 2].0[4 * bb..4 * bb + 4];
                        for (t, dst) in u.iter_mut().enumerate() {
                            let e = 4 * j + t;
                            let v = if e < 16 { q[e] & 15 } else { q[e - 16] >> 4 };
                            *dst |= v << (4 * (j % 2));
                        }
                    }
                } else {
                    let tb = b - GB * groups;
                    let h = tb % 2;
                    units[4 * groups + tb / 2].0[16 * h..16 * h + 16].copy_from_slice(q);
                }
            }
        }
        Ok(Self { n, k, groups, tail, qs, scales })
    }

    /// Stacks matrices along the output dimension, so q/k/v (or gate/up) run as one matmul
    /// that quantizes the activations once.
    pub fn concat_rows(parts: &[Q41Matrix]) -> Result<Q41Matrix> {
        let first = parts.first().ok_or_else(|| AmuletError::BadModel("Q4_1 concat_rows: no matrices given".into()))?;
        let k = first.k;
        if let Some(p) = parts.iter().find(|p| p.k != k) {
            return Err(AmuletError::BadModel(format!("Q4_1 concat_rows: column counts differ ({k} vs {})", p.k)));
        }
        let n = parts.iter().map(|p| p.n).sum();
        let mut qs = Vec::with_capacity(n * first.ppr());
        let mut scales = Vec::with_capacity(n * 4 * first.ppr());
        for p in parts {
            qs.extend_from_slice(&p.qs);
            scales.extend_from_slice(&p.scales);
        }
        Ok(Q41Matrix { n, k, groups: first.groups, tail: first.tail, qs, scales })
    }

    /// Output dimension (GGUF `ne[1]`).
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Input dimension (GGUF `ne[0]`).
    pub fn cols(&self) -> usize {
        self.k
    }

    /// Bytes held in memory (quants + scales, including the pad block of odd rows).
    pub fn storage_bytes(&self) -> usize {
        self.qs.len() * std::mem::size_of::<Unit>() + self.scales.len() * std::mem::size_of::<Scale>()
    }

    /// Row `i` as f32, computed like candle's `to_float` (`q * d + m`). Panics if `i >= rows()`,
    /// like slice indexing.
    pub fn dequantize_row(&self, i: usize) -> Vec<f32> {
        assert!(i < self.n, "Q4_1 dequantize_row: row {i} out of range ({} rows)", self.n);
        let nb = self.k / QK;
        let (mut q, mut dm) = (vec![[0u8; QK]; nb], vec![(0f32, 0f32); nb]);
        self.unpack_row(i, &mut q, &mut dm);
        q.iter().zip(&dm).flat_map(|(qb, &(d, m))| qb.iter().map(move |&v| v as f32 * d + m)).collect()
    }

    /// `out[r][i] = dot(row i, x[r])` for `m` activation rows of `cols()` values (row-major);
    /// `out` is `m` rows of `rows()` values. Runs this build's SIMD kernel (see `KERNEL`).
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        self.check_io(x, m, out)?;
        #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
        return x86::matmul(self, x, m, out, None);
        #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
        {
            wasm::matmul(self, x, m, out);
            return Ok(());
        }
        #[allow(unreachable_code)]
        {
            self.scalar_matmul(x, m, out);
            Ok(())
        }
    }

    /// `matmul` on an x86 tier (an error where the CPU lacks it). Tests and kernels_bench
    /// compare the tiers.
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    #[doc(hidden)]
    pub fn matmul_on(&self, tier: crate::backend::x86::Tier, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        self.check_io(x, m, out)?;
        x86::matmul(self, x, m, out, Some(tier))
    }

    /// Portable path (the fallback where no SIMD kernel exists); public so tests and tools can
    /// check the SIMD kernels against it. Sums in candle's order.
    pub fn matmul_scalar(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        self.check_io(x, m, out)?;
        self.scalar_matmul(x, m, out);
        Ok(())
    }

    /// Units (and groups of 4 scale values) per row.
    fn ppr(&self) -> usize {
        4 * self.groups + self.tail
    }

    /// `rows::touch` ahead of row `i` in both streams, the units and the scales.
    #[cfg(target_arch = "wasm32")]
    #[inline(always)]
    fn touch(&self, i: usize) {
        fn bytes<T>(v: &[T]) -> &[u8] {
            // SAFETY: the same memory as `v` (plain numbers and byte arrays), as bytes.
            unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
        }
        let (q, s) = (bytes(&self.qs), bytes(&self.scales));
        // A row's units and scales (see `dot_rows`' pointers).
        let (qr, sr) = (self.ppr() * std::mem::size_of::<Unit>(), 4 * self.ppr() * std::mem::size_of::<Scale>());
        super::rows::touch(q, i * qr, (i + 1) * qr);
        super::rows::touch(s, i * sr, (i + 1) * sr);
    }

    /// Row `i` back in GGUF terms: each block's 32 quants in element order and its `(d, m)`.
    /// Works on 4-byte words (4 elements of one block, in both layouts) to stay cheap.
    fn unpack_row(&self, i: usize, q: &mut [[u8; QK]], dm: &mut [(f32, f32)]) {
        let (groups, ppr) = (self.groups, self.ppr());
        let units = &self.qs[i * ppr..(i + 1) * ppr];
        let sc = &self.scales[i * 4 * ppr..(i + 1) * 4 * ppr];
        const LO: u32 = 0x0F0F_0F0F;
        for (b, dmb) in dm.iter_mut().enumerate() {
            let (di, mi) = scale_pos(groups, b);
            *dmb = (scale_to_f32(sc[di]), scale_to_f32(sc[mi]));
        }
        for (qg, ug) in q.chunks_mut(GB).zip(units.as_chunks::<4>().0).take(groups) {
            for (l, u) in ug.iter().enumerate() {
                // Word bb of unit l: elements 8l..8l+4 (low nibbles) and 8l+4..8l+8 (high) of block bb.
                for (bb, word) in u.0.as_chunks::<4>().0.iter().enumerate() {
                    let w = u32::from_le_bytes(*word);
                    qg[bb][8 * l..8 * l + 4].copy_from_slice(&(w & LO).to_le_bytes());
                    qg[bb][8 * l + 4..8 * l + 8].copy_from_slice(&((w >> 4) & LO).to_le_bytes());
                }
            }
        }
        for (b, qb) in q.iter_mut().enumerate().skip(GB * groups) {
            let tb = b - GB * groups;
            let u = &units[4 * groups + tb / 2].0[16 * (tb % 2)..16 * (tb % 2) + 16];
            for (c, word) in u.as_chunks::<4>().0.iter().enumerate() {
                let w = u32::from_le_bytes(*word);
                qb[4 * c..4 * c + 4].copy_from_slice(&(w & LO).to_le_bytes());
                qb[16 + 4 * c..16 + 4 * c + 4].copy_from_slice(&((w >> 4) & LO).to_le_bytes());
            }
        }
    }

    fn check_io(&self, x: &[f32], m: usize, out: &[f32]) -> Result<()> {
        if m.checked_mul(self.k) != Some(x.len()) {
            return Err(AmuletError::Compute(format!(
                "Q4_1 matmul: input has {} values, expected {m} rows x {} cols",
                x.len(),
                self.k
            )));
        }
        if m.checked_mul(self.n) != Some(out.len()) {
            return Err(AmuletError::Compute(format!(
                "Q4_1 matmul: output has {} values, expected {m} rows x {} cols",
                out.len(),
                self.n
            )));
        }
        Ok(())
    }

    fn scalar_matmul(&self, x: &[f32], m: usize, out: &mut [f32]) {
        let (n, k) = (self.n, self.k);
        let nb = k / QK;
        let mut qx = vec![0i8; m * k];
        let mut dx = vec![0f32; m * nb];
        let mut sx = vec![0f32; m * nb];
        for (j, (xb, qb)) in x.as_chunks::<QK>().0.iter().zip(qx.as_chunks_mut::<QK>().0).enumerate() {
            (dx[j], sx[j]) = quantize_q8_1(xb, qb);
        }
        let qx = qx.as_chunks::<QK>().0;
        // One weight row unpacked once, then dotted with every activation row.
        let mut wq = vec![[0u8; QK]; nb];
        let mut wdm = vec![(0f32, 0f32); nb];
        for i in 0..n {
            self.unpack_row(i, &mut wq, &mut wdm);
            for r in 0..m {
                // Candle's order: one running f32 sum over the blocks, same expression per block.
                let mut sumf = 0f32;
                for (b, (q, &(dw, mw))) in wq.iter().zip(&wdm).enumerate() {
                    let j = r * nb + b;
                    let sumi: i32 = q.iter().zip(&qx[j]).map(|(&a, &c)| a as i32 * c as i32).sum();
                    sumf += sumi as f32 * dw * dx[j] + mw * sx[j];
                }
                out[r * n + i] = sumf;
            }
        }
    }
}

/// Indices of block `b`'s `d` and `m` within its row's scales.
fn scale_pos(groups: usize, b: usize) -> (usize, usize) {
    if b < GB * groups {
        let base = 16 * (b / GB) + b % GB;
        (base, base + 8)
    } else {
        let tb = b - GB * groups;
        let base = 16 * groups + 4 * (tb / 2) + tb % 2;
        (base, base + 2)
    }
}

/// Quantizes 32 activations to Q8_1 into `q`, returning `(d, s)` as f32, with the same
/// arithmetic as candle's `BlockQ8_1::from_float` (`d = amax / 127` as f16, `q = round(x / d)`,
/// `s = f16(sum q) * d` rounded to f16), which is what makes our outputs match candle's.
#[inline]
fn quantize_q8_1(x: &[f32; QK], q: &mut [i8; QK]) -> (f32, f32) {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    {
        return x86::quantize_block(x, q);
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        return wasm::quantize_block(x, q);
    }
    #[allow(unreachable_code)]
    quantize_q8_1_scalar(x, q)
}

/// `quantize_q8_1` for a whole row (`k` values into `k` quants and `k / 32` scales). The blocks
/// are independent, so the SIMD build works in passes (all maxima, then all scales, then all
/// quants): each block's long chain of max, two divisions and rounding then overlaps with
/// its neighbours' instead of running back to back.
fn quantize_row(x: &[f32], q: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    let (xb, qb) = (x.as_chunks::<QK>().0, q.as_chunks_mut::<QK>().0);
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    {
        for (db, xb) in d.iter_mut().zip(xb) {
            *db = x86::block_amax(xb);
        }
        for (db, ib) in d.iter_mut().zip(s.iter_mut()) {
            *db /= 127.0;
            *ib = if *db != 0.0 { 1.0 / *db } else { 0.0 };
        }
        for (((xb, qb), db), sb) in xb.iter().zip(qb).zip(d.iter_mut()).zip(s.iter_mut()) {
            let sum = x86::quantize_with(xb, *sb, qb);
            (*db, *sb) = finish_q8_1(*db, sum);
        }
        return;
    }
    #[allow(unreachable_code)]
    for (((xb, qb), db), sb) in xb.iter().zip(qb).zip(d.iter_mut()).zip(s.iter_mut()) {
        (*db, *sb) = quantize_q8_1(xb, qb);
    }
}

/// The plain version of `quantize_q8_1`, written like candle's; the SIMD ones must match it.
fn quantize_q8_1_scalar(x: &[f32; QK], q: &mut [i8; QK]) -> (f32, f32) {
    let mut amax = 0f32;
    for &v in x {
        amax = amax.max(v.abs());
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (qv, &v) in q.iter_mut().zip(x) {
        *qv = (v * id).round() as i8;
        sum += *qv as i32;
    }
    finish_q8_1(d, sum)
}

/// `(d, s)` from the f32 scale and the quant sum, rounded through f16 as candle does.
#[inline]
fn finish_q8_1(d: f32, sum: i32) -> (f32, f32) {
    let d16 = f16::from_f32(d);
    (d16.to_f32(), (f16::from_f32(sum as f32) * d16).to_f32())
}

/// Activation scales for one group: `[d0..d7, s0..s7]`; for a tail unit:
/// `[dA x4, dB x4, 0, 0, sA, sB, 0 x4]`, so that slices of it line up with the kernels' lanes.
#[allow(dead_code)]
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Scale16([f32; 16]);

/// Buffers for the quantized activations, kept per thread (see `run_tiles!`) so that the
/// hundreds of matmuls of a decode step do not each allocate.
#[allow(dead_code)]
struct Scratch {
    /// 32 quantized activations a lane, lined up with one unpacked weight register, on the
    /// shared 64-byte aligned lanes (`acts::Lanes`: the AVX-512 body loads two at once).
    xq: Lanes,
    xs: Vec<Scale16>,
    q: Vec<i8>,
    d: Vec<f32>,
    s: Vec<f32>,
}

#[allow(dead_code)]
impl Scratch {
    const fn new() -> Self {
        Scratch { xq: Lanes::new(), xs: Vec::new(), q: Vec::new(), d: Vec::new(), s: Vec::new() }
    }
}

/// Quantizes `m` activation rows into `sc.xq` / `sc.xs` in the unit order of `w`: per row
/// `2 * ppr` lanes (register `j` of group `g` is lane `8g + j`; tail unit `u` gives lanes `2u`
/// and `2u + 1`) and `groups + tail` scale entries. Everything is rewritten or zeroed, so the
/// pad block of an odd row sees zeros, never a previous call's values.
#[allow(dead_code)]
fn prepare_x(w: &Q41Matrix, x: &[f32], m: usize, sc: &mut Scratch) {
    let (k, ppr) = (w.k, w.ppr());
    let nsc = w.groups + w.tail;
    let nb = k / QK;
    sc.xq.reset(m * 2 * ppr);
    sc.xs.clear();
    sc.xs.resize(m * nsc, Scale16([0.0; 16]));
    // A decode step's rows on this thread with the scratch's row buffers; a prefill's split
    // over the pool's threads, each range with row buffers of its own.
    if m < 2 * MIN_PREPARE_ROWS || threads() == 1 {
        sc.q.resize(k, 0);
        sc.d.resize(nb, 0.0);
        sc.s.resize(nb, 0.0);
        prepare_rows(w, x, &mut sc.xq[..m * 2 * ppr], &mut sc.xs, (&mut sc.q, &mut sc.d, &mut sc.s));
        return;
    }
    let (lanes, scales) = (Shared::new(&mut sc.xq[..m * 2 * ppr]), Shared::new(&mut sc.xs[..]));
    split(m, MIN_PREPARE_ROWS, |rows| {
        // SAFETY: the ranges of one split are disjoint rows, each with its own lanes and scales.
        let (lanes, scales) = unsafe {
            (lanes.slice(rows.start * 2 * ppr..rows.end * 2 * ppr), scales.slice(rows.start * nsc..rows.end * nsc))
        };
        let bufs = (&mut vec![0i8; k][..], &mut vec![0f32; nb][..], &mut vec![0f32; nb][..]);
        prepare_rows(w, &x[rows.start * k..rows.end * k], lanes, scales, bufs);
    });
}

/// Fewest activation rows a thread prepares (a decode step's one or two stay inline).
const MIN_PREPARE_ROWS: usize = 16;

/// `prepare_x` for the rows of `x`, into their lanes and scales, with one row's buffers.
fn prepare_rows(
    w: &Q41Matrix,
    x: &[f32],
    lanes: &mut [Lane],
    scales: &mut [Scale16],
    bufs: (&mut [i8], &mut [f32], &mut [f32]),
) {
    let (k, groups, ppr) = (w.k, w.groups, w.ppr());
    let nsc = groups + w.tail;
    let (qs, ds, ss) = bufs;
    for (r, xr) in x.chunks_exact(k).enumerate() {
        let lanes = &mut lanes[r * 2 * ppr..(r + 1) * 2 * ppr];
        let scales = &mut scales[r * nsc..(r + 1) * nsc];
        quantize_row(xr, qs, ds, ss);
        for (b, q) in qs.as_chunks::<QK>().0.iter().enumerate() {
            let (d, s) = (ds[b], ss[b]);
            let q: [Q; QK] = std::array::from_fn(|e| Q::from(q[e]));
            if b < GB * groups {
                let (g, bb) = (b / GB, b % GB);
                for j in 0..8 {
                    lanes[8 * g + j].0[4 * bb..4 * bb + 4].copy_from_slice(&q[4 * j..4 * j + 4]);
                }
                scales[g].0[bb] = d;
                scales[g].0[8 + bb] = s;
            } else {
                let tb = b - GB * groups;
                let (u, h) = (4 * groups + tb / 2, tb % 2);
                lanes[2 * u].0[16 * h..16 * h + 16].copy_from_slice(&q[..16]);
                lanes[2 * u + 1].0[16 * h..16 * h + 16].copy_from_slice(&q[16..]);
                let e = &mut scales[groups + tb / 2].0;
                e[4 * h..4 * h + 4].fill(d);
                e[10 + h] = s;
            }
        }
    }
}

/// Rows of weights processed per pass over the quantized activations when `m` is large:
/// about 16 KiB of weights, so a tile stays in L1 while every group of activation rows
/// streams past it (prefill).
const TILE_BYTES: usize = 16 * 1024;

/// Activation rows sharing one read of each weight unit.
const ROWS_PER_PASS: usize = 4;

/// Calls `f(i0, i1, r0, rows)` over tiles of the weight rows `range` x activation-row groups
/// of at most `ROWS_PER_PASS`, weights outermost so each weight tile is read once per group.
#[allow(dead_code)]
fn for_each_tile(w: &Q41Matrix, range: Range<usize>, m: usize, mut f: impl FnMut(usize, usize, usize, usize)) {
    let tile = (TILE_BYTES / (w.ppr() * 40)).max(1);
    let mut i0 = range.start;
    while i0 < range.end {
        let i1 = (i0 + tile).min(range.end);
        let mut r0 = 0;
        while r0 < m {
            let rows = (m - r0).min(ROWS_PER_PASS);
            f(i0, i1, r0, rows);
            r0 += rows;
        }
        i0 = i1;
    }
}

/// Runs `dot_rows::<R>` for weight row `i` and activation rows `r0..r0 + rows`, writing `out`.
/// A macro so that each kernel module instantiates it with its own `dot_rows` (natively, with
/// the tier's flags as `dot_rows`'s const parameters).
#[allow(unused_macros)]
macro_rules! run_tiles {
    ($w:expr, $x:expr, $m:expr, $out:expr $(, $tier:expr)*) => {{
        thread_local! {
            static SCRATCH: std::cell::RefCell<Scratch> = const { std::cell::RefCell::new(Scratch::new()) };
        }
        let (w, m, out) = ($w, $m, $out);
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut sc) => run_tiles!(@run w, $x, m, out, &mut *sc $(, $tier)*),
            // Only if a matmul ever ran inside another on the same thread.
            Err(_) => run_tiles!(@run w, $x, m, out, &mut Scratch::new() $(, $tier)*),
        })
    }};
    (@run $w:expr, $x:expr, $m:expr, $out:expr, $sc:expr $(, $tier:expr)*) => {{
        let (w, m, out, sc) = ($w, $m, $out, $sc);
        let (n, ppr, nsc) = (w.n, w.ppr(), w.groups + w.tail);
        prepare_x(w, $x, m, sc);
        let (xq, xs) = (&sc.xq, &sc.xs);
        let out = $crate::backend::pool::Shared::new(out);
        // Weight rows split over the pool's threads, each writing only its own output columns.
        $crate::backend::pool::split(n, $crate::backend::pool::MIN_ROWS, |range| for_each_tile(w, range, m, |i0, i1, r0, rows| {
            // SAFETY: r0 + rows <= m and i < n, so every pointer below starts a whole row.
            let q = |r: usize| unsafe { xq.as_ptr().add((r0 + r) * 2 * ppr) };
            let s = |r: usize| unsafe { xs.as_ptr().add((r0 + r) * nsc) };
            for i in i0..i1 {
                #[cfg(target_arch = "wasm32")]
                w.touch(i);
                let put = |v: &[f32]| {
                    for (j, &a) in v.iter().enumerate() {
                        // SAFETY: column i belongs to this range alone; out holds m x n values.
                        unsafe { out.set((r0 + j) * n + i, a) };
                    }
                };
                unsafe {
                    match rows {
                        1 => put(&dot_rows::<1 $(, $tier)*>(w, i, [q(0)], [s(0)])),
                        2 => put(&dot_rows::<2 $(, $tier)*>(w, i, [q(0), q(1)], [s(0), s(1)])),
                        3 => put(&dot_rows::<3 $(, $tier)*>(w, i, [q(0), q(1), q(2)], [s(0), s(1), s(2)])),
                        _ => put(&dot_rows::<4 $(, $tier)*>(w, i, [q(0), q(1), q(2), q(3)], [s(0), s(1), s(2), s(3)])),
                    }
                }
            }
        }));
    }};
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
mod x86 {
    use super::{finish_q8_1, for_each_tile, prepare_x, Lane, Q41Matrix, Scale16, Scratch, QK};
    use crate::backend::x86::{dot_bytes, dot_pairs, nibbles, pick, Tier};
    use crate::error::Result;
    use core::arch::x86_64::*;

    /// Prefetch distance in bytes of the quant stream.
    const PREFETCH: usize = 4096;

    /// Dot products of weight row `i` against `R` activation rows, reading each weight unit once.
    /// `VNNI`: `vpdpbusd` (backend/x86.rs); `WIDE` (with `VNNI`): a group's eight registers as
    /// four 512-bit ones, each unit's low and high nibbles side by side, as they lie in the
    /// activations too.
    ///
    /// # Safety
    /// `i < w.n`; each `xq[r]` / `xs[r]` starts a full row from `prepare_x` for `w`.
    #[inline(always)]
    unsafe fn dot_rows<const R: usize, const VNNI: bool, const WIDE: bool>(
        w: &Q41Matrix,
        i: usize,
        xq: [*const Lane; R],
        xs: [*const Scale16; R],
    ) -> [f32; R] {
        let (groups, ppr) = (w.groups, w.ppr());
        let qs = w.qs.as_ptr().add(i * ppr) as *const __m256i;
        let sc = w.scales.as_ptr().add(i * 4 * ppr);
        let mask = _mm256_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_ps(); R];
        for g in 0..groups {
            let u = qs.add(4 * g);
            // On the decode path every matrix streams once from DRAM and the hardware prefetcher
            // alone left 15-20% of the bandwidth unused. 4 KiB ahead in the quants (1 KiB in the
            // scales, which advance 4x slower) runs into the next rows; past the end of the
            // matrix the hints are harmless (prefetches never fault, hence wrapping_add).
            _mm_prefetch::<_MM_HINT_T0>((u as *const i8).wrapping_add(PREFETCH));
            _mm_prefetch::<_MM_HINT_T0>((u as *const i8).wrapping_add(PREFETCH + 64));
            _mm_prefetch::<_MM_HINT_T0>((sc.add(16 * g) as *const i8).wrapping_add(PREFETCH / 4));
            let mut wr = [_mm256_setzero_si256(); 8];
            let mut wp = [_mm512_setzero_si512(); 4];
            for l in 0..4 {
                let v = _mm256_load_si256(u.add(l));
                if WIDE {
                    wp[l] = nibbles(v);
                } else {
                    wr[2 * l] = _mm256_and_si256(v, mask);
                    wr[2 * l + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
                }
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(sc.add(16 * g) as *const __m128i));
            let mw = _mm256_cvtph_ps(_mm_loadu_si128(sc.add(16 * g + 8) as *const __m128i));
            for r in 0..R {
                let y = xq[r].add(8 * g) as *const __m256i;
                // Each i16 lane: 16 products of at most 15 * 127, below i16::MAX.
                let s = if WIDE {
                    dot_pairs(&wp, |l| _mm512_loadu_si512(y.add(2 * l) as *const __m512i))
                } else {
                    dot_bytes::<VNNI, 8>(&wr, |j| _mm256_load_si256(y.add(j)))
                };
                let f = _mm256_cvtepi32_ps(s);
                let xsc = (*xs[r].add(g)).0.as_ptr();
                acc[r] = _mm256_fmadd_ps(f, _mm256_mul_ps(dw, _mm256_load_ps(xsc)), acc[r]);
                // The m * s terms share the accumulator: every lane is summed at the end anyway,
                // and one accumulator per row keeps R = 4 within the 16 registers.
                acc[r] = _mm256_fmadd_ps(mw, _mm256_load_ps(xsc.add(8)), acc[r]);
            }
        }
        // Tail units: each 128-bit lane holds one block; scales [dA, dB, mA, mB].
        let spread = _mm256_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1);
        let mut acct = [_mm_setzero_ps(); R];
        for t in 0..w.tail {
            let v = _mm256_load_si256(qs.add(4 * groups + t));
            let lo = _mm256_and_si256(v, mask);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask);
            let w4 = _mm_cvtph_ps(_mm_loadl_epi64(sc.add(16 * groups + 4 * t) as *const __m128i));
            let wd = _mm256_permutevar8x32_ps(_mm256_castps128_ps256(w4), spread);
            for r in 0..R {
                let y = xq[r].add(8 * groups + 2 * t) as *const __m256i;
                let f = _mm256_cvtepi32_ps(dot_bytes::<VNNI, 2>(&[lo, hi], |j| _mm256_load_si256(y.add(j))));
                let xsc = (*xs[r].add(groups + t)).0.as_ptr();
                acc[r] = _mm256_fmadd_ps(f, _mm256_mul_ps(wd, _mm256_load_ps(xsc)), acc[r]);
                // [0, 0, mA * sA, mB * sB]
                acct[r] = _mm_fmadd_ps(w4, _mm_load_ps(xsc.add(8)), acct[r]);
            }
        }
        let mut res = [0f32; R];
        for r in 0..R {
            let a = _mm_add_ps(_mm256_castps256_ps128(acc[r]), _mm256_extractf128_ps::<1>(acc[r]));
            let a = _mm_add_ps(a, _mm_movehl_ps(a, a));
            let a = _mm_add_ps(a, _mm_movehl_ps(acct[r], acct[r]));
            let a = _mm_add_ss(a, _mm_shuffle_ps::<1>(a, a));
            res[r] = _mm_cvtss_f32(a);
        }
        res
    }

    /// On `tier` (backend/x86.rs), or on this CPU's best.
    pub(super) fn matmul(w: &Q41Matrix, x: &[f32], m: usize, out: &mut [f32], tier: Option<Tier>) -> Result<()> {
        match pick("Q4_1", tier)? {
            // SAFETY: `pick` chose only a tier the CPU has.
            Tier::Avx512 => unsafe { matmul_avx512(w, x, m, out) },
            Tier::AvxVnni => unsafe { matmul_vnni(w, x, m, out) },
            Tier::Avx2 => run_tiles!(w, x, m, out, false, false),
        }
        Ok(())
    }

    /// `matmul` compiled with AVX-VNNI (the closures inside inherit it).
    ///
    /// # Safety
    /// The CPU has AVX-VNNI.
    #[target_feature(enable = "avxvnni")]
    unsafe fn matmul_vnni(w: &Q41Matrix, x: &[f32], m: usize, out: &mut [f32]) {
        run_tiles!(w, x, m, out, true, false)
    }

    /// `matmul` compiled with AVX-512 as well.
    ///
    /// # Safety
    /// The CPU has the `Tier::Avx512` features.
    #[target_feature(enable = "avxvnni,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
    unsafe fn matmul_avx512(w: &Q41Matrix, x: &[f32], m: usize, out: &mut [f32]) {
        run_tiles!(w, x, m, out, true, true)
    }

    /// `quantize_q8_1` for AVX2; bit-identical to the scalar one (tested) and much faster,
    /// which matters because for m = 1 quantizing the activations was a fifth of the matmul.
    #[inline]
    pub(super) fn quantize_block(x: &[f32; QK], q: &mut [i8; QK]) -> (f32, f32) {
        let d = block_amax(x) / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        finish_q8_1(d, quantize_with(x, id, q))
    }

    /// max |x| over a block, skipping NaNs like `f32::max`.
    #[inline]
    pub(super) fn block_amax(x: &[f32; QK]) -> f32 {
        // SAFETY: x holds 32 values; AVX2 is enabled at compile time.
        unsafe {
            let p = x.as_ptr();
            let sign = _mm256_set1_ps(-0.0);
            let mut amax = _mm256_setzero_ps();
            for i in 0..4 {
                // maxps returns its second operand when the first is NaN.
                amax = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(p.add(8 * i))), amax);
            }
            let m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps::<1>(amax));
            let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps::<1>(m2, m2)))
        }
    }

    /// `q = x * id` rounded like `f32::round` and saturated like `as i8`; returns the sum of `q`.
    #[inline]
    pub(super) fn quantize_with(x: &[f32; QK], id: f32, q: &mut [i8; QK]) -> i32 {
        // SAFETY: x and q hold exactly 32 values; AVX2 is enabled at compile time.
        unsafe {
            let p = x.as_ptr();
            let idv = _mm256_set1_ps(id);
            let sign = _mm256_set1_ps(-0.0);
            let half = _mm256_set1_ps(0.5);
            let (lo, hi) = (_mm256_set1_ps(-128.0), _mm256_set1_ps(127.0));
            let mut iv = [_mm256_setzero_si256(); 4];
            for (i, o) in iv.iter_mut().enumerate() {
                let t = _mm256_mul_ps(_mm256_loadu_ps(p.add(8 * i)), idv);
                // Half away from zero: trunc(t +- 0.5) is exact for 0.5 <= |t| < 2^23 (|t| <= 127
                // here); below 0.5 the answer is 0, and the mask also sends NaN to 0 like `as i8`.
                let r = _mm256_add_ps(t, _mm256_or_ps(_mm256_and_ps(t, sign), half));
                let r = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(r);
                let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_andnot_ps(sign, t), half));
                // Saturate like `as i8` (t is infinite when d is subnormal).
                *o = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi));
            }
            let packed = _mm256_packs_epi16(_mm256_packs_epi32(iv[0], iv[1]), _mm256_packs_epi32(iv[2], iv[3]));
            // packs works per 128-bit lane: put the 4-byte groups back in order.
            let packed = _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, packed);
            let s = _mm256_add_epi32(_mm256_add_epi32(iv[0], iv[1]), _mm256_add_epi32(iv[2], iv[3]));
            let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
            let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<1>(s));
            _mm_cvtsi128_si32(s)
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128", target_feature = "relaxed-simd"))]
#[path = "relaxed/q4_1.rs"]
mod relaxed;

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm {
    use super::{finish_q8_1, QK};
    #[cfg(not(target_feature = "relaxed-simd"))]
    use super::{for_each_tile, prepare_x, Lane, Q41Matrix, Scale16, Scratch};
    use core::arch::wasm32::*;

    #[cfg(target_feature = "relaxed-simd")]
    pub(super) use super::relaxed::matmul;

    /// Dot products of weight row `i` against `R` activation rows, reading each weight unit once.
    /// `VNNI`: `vpdpbusd` (backend/x86.rs); `WIDE` (with `VNNI`): a group's eight registers as
    /// four 512-bit ones, each unit's low and high nibbles side by side, as they lie in the
    /// activations too.
    /// simd128 has no u8 x i8 dot, so the weights are widened to i16 (once for all rows) and
    /// the activations come pre-widened: `i32x4.dot_i16x8_s` is a single `pmaddwd` on x86 hosts.
    ///
    /// # Safety
    /// `i < w.n`; each `xq[r]` / `xs[r]` starts a full row from `prepare_x` for `w`.
    #[cfg(not(target_feature = "relaxed-simd"))]
    #[inline(always)]
    unsafe fn dot_rows<const R: usize>(
        w: &Q41Matrix,
        i: usize,
        xq: [*const Lane; R],
        xs: [*const Scale16; R],
    ) -> [f32; R] {
        let (groups, ppr) = (w.groups, w.ppr());
        let qs = w.qs.as_ptr().add(i * ppr) as *const v128;
        let sc = w.scales.as_ptr().add(i * 4 * ppr);
        let mask = u8x16_splat(0x0F);
        let mask16 = u16x8_splat(0x0F);
        let zero = i32x4_splat(0);
        let mut acc = [f32x4_splat(0.0); R];
        for g in 0..groups {
            // Quarter c of a register covers blocks (2c, 2c + 1) as i32 lanes [b, b, b+1, b+1].
            let mut part = [[zero; 4]; R];
            for l in 0..4 {
                for h in 0..2 {
                    // Widen the bytes first, then split the nibbles in 16-bit lanes: cheaper
                    // than splitting bytes (u8x16_shr needs a mask on x86 hosts) and widening twice.
                    let v = v128_load(qs.add(8 * g + 2 * l + h));
                    let (e0, e1) = (u16x8_extend_low_u8x16(v), u16x8_extend_high_u8x16(v));
                    for nib in 0..2 {
                        let (w0, w1) = if nib == 0 {
                            (v128_and(e0, mask16), v128_and(e1, mask16))
                        } else {
                            (u16x8_shr(e0, 4), u16x8_shr(e1, 4))
                        };
                        for r in 0..R {
                            let y = xq[r].add(8 * g + 2 * l + nib) as *const v128;
                            part[r][2 * h] = i32x4_add(part[r][2 * h], i32x4_dot_i16x8(w0, v128_load(y.add(2 * h))));
                            part[r][2 * h + 1] =
                                i32x4_add(part[r][2 * h + 1], i32x4_dot_i16x8(w1, v128_load(y.add(2 * h + 1))));
                        }
                    }
                }
            }
            let s = sc.add(16 * g) as *const v128;
            let (d03, d47) = (v128_load(s), v128_load(s.add(1)));
            let (m03, m47) = (v128_load(s.add(2)), v128_load(s.add(3)));
            for r in 0..R {
                let p = part[r];
                let b03 = i32x4_add(i32x4_shuffle::<0, 2, 4, 6>(p[0], p[1]), i32x4_shuffle::<1, 3, 5, 7>(p[0], p[1]));
                let b47 = i32x4_add(i32x4_shuffle::<0, 2, 4, 6>(p[2], p[3]), i32x4_shuffle::<1, 3, 5, 7>(p[2], p[3]));
                let x4 = (*xs[r].add(g)).0.as_ptr() as *const v128;
                let a = f32x4_add(
                    f32x4_mul(f32x4_convert_i32x4(b03), f32x4_mul(d03, v128_load(x4))),
                    f32x4_mul(f32x4_convert_i32x4(b47), f32x4_mul(d47, v128_load(x4.add(1)))),
                );
                let mt = f32x4_add(f32x4_mul(m03, v128_load(x4.add(2))), f32x4_mul(m47, v128_load(x4.add(3))));
                acc[r] = f32x4_add(acc[r], f32x4_add(a, mt));
            }
        }
        // Tail units: bytes 0..16 are block A's GGUF quants, 16..32 block B's.
        let mut acct = [f32x4_splat(0.0); R];
        for t in 0..w.tail {
            let u = qs.add(8 * groups + 2 * t);
            let (va, vb) = (v128_load(u), v128_load(u.add(1)));
            let (la, ha) = (v128_and(va, mask), u8x16_shr(va, 4));
            let (lb, hb) = (v128_and(vb, mask), u8x16_shr(vb, 4));
            let wa = [
                u16x8_extend_low_u8x16(la),
                u16x8_extend_high_u8x16(la),
                u16x8_extend_low_u8x16(ha),
                u16x8_extend_high_u8x16(ha),
            ];
            let wb = [
                u16x8_extend_low_u8x16(lb),
                u16x8_extend_high_u8x16(lb),
                u16x8_extend_low_u8x16(hb),
                u16x8_extend_high_u8x16(hb),
            ];
            // [dA, dB, mA, mB]
            let w4 = v128_load(sc.add(16 * groups + 4 * t) as *const v128);
            let wd = i32x4_shuffle::<0, 0, 1, 1>(w4, w4);
            for r in 0..R {
                // Low-nibble lane: A0..15 then B0..15; high-nibble lane: A16..31 then B16..31.
                let lo = xq[r].add(8 * groups + 2 * t) as *const v128;
                let hi = lo.add(4);
                let dot = |a: v128, p: *const v128| i32x4_dot_i16x8(a, v128_load(p));
                let da = i32x4_add(
                    i32x4_add(dot(wa[0], lo), dot(wa[1], lo.add(1))),
                    i32x4_add(dot(wa[2], hi), dot(wa[3], hi.add(1))),
                );
                let db = i32x4_add(
                    i32x4_add(dot(wb[0], lo.add(2)), dot(wb[1], lo.add(3))),
                    i32x4_add(dot(wb[2], hi.add(2)), dot(wb[3], hi.add(3))),
                );
                // [A, A, B, B]
                let sum = i32x4_add(i32x4_shuffle::<0, 1, 4, 5>(da, db), i32x4_shuffle::<2, 3, 6, 7>(da, db));
                let xsc = (*xs[r].add(groups + t)).0.as_ptr();
                // xsc[2..6] = [dA, dA, dB, dB]; xsc[8..12] = [0, 0, sA, sB]
                let dd = f32x4_mul(wd, v128_load(xsc.add(2) as *const v128));
                acc[r] = f32x4_add(acc[r], f32x4_mul(f32x4_convert_i32x4(sum), dd));
                acct[r] = f32x4_add(acct[r], f32x4_mul(w4, v128_load(xsc.add(8) as *const v128)));
            }
        }
        let mut res = [0f32; R];
        for r in 0..R {
            let (a, t) = (acc[r], acct[r]);
            res[r] = (f32x4_extract_lane::<0>(a) + f32x4_extract_lane::<1>(a))
                + (f32x4_extract_lane::<2>(a) + f32x4_extract_lane::<3>(a))
                + (f32x4_extract_lane::<2>(t) + f32x4_extract_lane::<3>(t));
        }
        res
    }

    #[cfg(not(target_feature = "relaxed-simd"))]
    pub(super) fn matmul(w: &Q41Matrix, x: &[f32], m: usize, out: &mut [f32]) {
        run_tiles!(w, x, m, out)
    }

    /// `quantize_q8_1` for simd128; bit-identical to the scalar one (tested).
    #[inline]
    pub(super) fn quantize_block(x: &[f32; QK], q: &mut [i8; QK]) -> (f32, f32) {
        // SAFETY: x and q hold exactly 32 values (unaligned v128 loads/stores are allowed).
        unsafe {
            let p = x.as_ptr() as *const v128;
            let mut v = [f32x4_splat(0.0); 8];
            let mut amax = f32x4_splat(0.0);
            for (i, vi) in v.iter_mut().enumerate() {
                *vi = v128_load(p.add(i));
                // pmax(a, b) = a < b ? b : a keeps `a` when b is NaN, like f32::max.
                amax = f32x4_pmax(amax, f32x4_abs(*vi));
            }
            let amax = f32x4_extract_lane::<0>(amax)
                .max(f32x4_extract_lane::<1>(amax))
                .max(f32x4_extract_lane::<2>(amax).max(f32x4_extract_lane::<3>(amax)));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let idv = f32x4_splat(id);
            let (sign, half) = (f32x4_splat(-0.0), f32x4_splat(0.5));
            let mut iv = [i32x4_splat(0); 8];
            let mut sum = i32x4_splat(0);
            for (o, &vi) in iv.iter_mut().zip(&v) {
                let t = f32x4_mul(vi, idv);
                // Half away from zero: trunc(t +- 0.5) is exact for 0.5 <= |t| < 2^23 (|t| <= 127
                // here); below 0.5 the answer is 0, and the mask also sends NaN to 0 like `as i8`.
                let r = f32x4_trunc(f32x4_add(t, v128_or(v128_and(t, sign), half)));
                let r = v128_and(r, f32x4_ge(f32x4_abs(t), half));
                // Saturate like `as i8` (t is infinite when d is subnormal).
                *o = i32x4_max(i32x4_min(i32x4_trunc_sat_f32x4(r), i32x4_splat(127)), i32x4_splat(-128));
                sum = i32x4_add(sum, *o);
            }
            let qp = q.as_mut_ptr() as *mut v128;
            for h in 0..2 {
                let a = i16x8_narrow_i32x4(iv[4 * h], iv[4 * h + 1]);
                let b = i16x8_narrow_i32x4(iv[4 * h + 2], iv[4 * h + 3]);
                v128_store(qp.add(h), i8x16_narrow_i16x8(a, b));
            }
            let s = i32x4_extract_lane::<0>(sum)
                + i32x4_extract_lane::<1>(sum)
                + i32x4_extract_lane::<2>(sum)
                + i32x4_extract_lane::<3>(sum);
            finish_q8_1(d, s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    /// Random weights quantized by candle: (ours, candle's QTensor, candle's bytes).
    fn weights(n: usize, k: usize, seed: u64) -> (Q41Matrix, QTensor, Vec<u8>) {
        let mut rng = Rng::new(seed);
        // Per-row offsets so that m (the min) varies in sign and size.
        let mut w = rng.vec(n * k, 0.1);
        for (i, row) in w.chunks_mut(k).enumerate() {
            let off = ((i % 7) as f32 - 3.0) * 0.02;
            row.iter_mut().for_each(|v| *v += off);
        }
        let t = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
        let qt = QTensor::quantize(&t, GgmlDType::Q4_1).unwrap();
        let bytes = qt.data().unwrap().into_owned();
        let ours = Q41Matrix::from_gguf_bytes(&bytes, n, k).unwrap();
        (ours, qt, bytes)
    }

    fn activations(m: usize, k: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed ^ 0xD1B5_4A32_D192_ED03);
        let mut x = rng.vec(m * k, 2.0);
        // An outlier, and an all-zero block (d = 0) when there is room.
        x[0] = 40.0;
        if m * k >= 96 {
            x[32..64].fill(0.0);
        }
        x
    }

    fn candle_matmul(mm: &QMatMul, x: &[f32], m: usize, k: usize) -> Vec<f32> {
        let xt = Tensor::from_vec(x.to_vec(), (m, k), &Device::Cpu).unwrap();
        mm.forward(&xt).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    const SHAPES: [(usize, usize); 5] = [(576, 576), (192, 576), (1536, 576), (576, 1536), (49, 64)];
    const MS: [usize; 6] = [1, 2, 3, 4, 7, 33];

    #[test]
    fn q4_1_matches_candle_simd_and_scalar() {
        for (si, &(n, k)) in SHAPES.iter().enumerate() {
            let (ours, qt, _) = weights(n, k, si as u64 + 1);
            let mm = QMatMul::from_qtensor(qt).unwrap();
            for &m in &MS {
                let x = activations(m, k, (si * 100 + m) as u64);
                let want = candle_matmul(&mm, &x, m, k);
                let mut simd = vec![0f32; m * n];
                let mut scalar = vec![0f32; m * n];
                ours.matmul(&x, m, &mut simd).unwrap();
                ours.matmul_scalar(&x, m, &mut scalar).unwrap();
                let mag = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                let tol = 1e-4 * mag + 1e-5;
                let d_simd = max_abs_diff(&simd, &want);
                let d_scalar = max_abs_diff(&scalar, &want);
                assert!(d_simd < tol, "{KERNEL} vs candle {n}x{k} m={m}: {d_simd} (max |out| {mag})");
                // The scalar path sums in candle's order: identical results.
                assert!(d_scalar == 0.0, "scalar vs candle {n}x{k} m={m}: {d_scalar}");
                assert!(max_abs_diff(&simd, &scalar) < tol);
            }
        }
    }

    /// Every tier gives the AVX2 tier's bits (backend/x86.rs), tail units included; asking for
    /// a tier this CPU lacks is an error.
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    #[test]
    fn q4_1_tiers_give_the_avx2_bits() {
        for (si, &(n, k)) in SHAPES.iter().chain(&[(7, 96), (3, 288), (2, 544)]).enumerate() {
            let (ours, _, _) = weights(n, k, si as u64 + 40);
            for m in [1usize, 2, 3, 4, 5, 8, 9, 33] {
                let x = activations(m, k, (si * 50 + m) as u64);
                crate::backend::testutil::tiers_give_avx2_bits(&format!("{n}x{k} m={m}"), |tier| {
                    let mut out = vec![0f32; m * n];
                    ours.matmul_on(tier, &x, m, &mut out).map(|_| out)
                });
            }
        }
    }

    /// Odd block counts get a pad block; check against a plain f64 evaluation of the Q4_1 x Q8_1
    /// formula (candle's own vec_dot debug-asserts on odd block counts).
    #[test]
    fn q4_1_odd_block_counts() {
        for &(n, k) in &[(5usize, 32usize), (7, 96), (3, 160), (3, 288), (4, 480), (2, 544)] {
            let (ours, _, bytes) = weights(n, k, (n * k) as u64);
            for &m in &[1usize, 2, 5] {
                let x = activations(m, k, (m + k) as u64);
                let mut want = vec![0f32; m * n];
                let mut q = [0i8; QK];
                for r in 0..m {
                    for i in 0..n {
                        let mut acc = 0f64;
                        for b in 0..k / QK {
                            let xb = x[r * k + b * QK..r * k + (b + 1) * QK].as_chunks::<QK>().0[0];
                            let (dx, sx) = quantize_q8_1_scalar(&xb, &mut q);
                            let blk = &bytes[(i * (k / QK) + b) * 20..][..20];
                            let dw = f16::from_le_bytes([blk[0], blk[1]]).to_f64();
                            let mw = f16::from_le_bytes([blk[2], blk[3]]).to_f64();
                            let mut sumi = 0i64;
                            for j in 0..16 {
                                sumi += (blk[4 + j] & 15) as i64 * q[j] as i64;
                                sumi += (blk[4 + j] >> 4) as i64 * q[j + 16] as i64;
                            }
                            acc += sumi as f64 * dw * dx as f64 + mw * sx as f64;
                        }
                        want[r * n + i] = acc as f32;
                    }
                }
                let mut simd = vec![0f32; m * n];
                let mut scalar = vec![0f32; m * n];
                ours.matmul(&x, m, &mut simd).unwrap();
                ours.matmul_scalar(&x, m, &mut scalar).unwrap();
                let mag = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                let tol = 1e-5 * mag + 1e-6;
                assert!(max_abs_diff(&simd, &want) < tol, "{KERNEL} odd {n}x{k} m={m}");
                assert!(max_abs_diff(&scalar, &want) < tol, "scalar odd {n}x{k} m={m}");
            }
        }
    }

    /// The SIMD quantizer must be bit-identical to the candle-style scalar one, including
    /// rounding ties, NaN, infinities, zeros and subnormal scales.
    #[test]
    fn q4_1_quantizer_matches_scalar() {
        let mut rng = Rng::new(42);
        let mut blocks: Vec<[f32; QK]> = (0..2000)
            .map(|i| {
                let scale = [1e-3f32, 1.0, 30.0, 1e4][i % 4];
                std::array::from_fn(|_| rng.signed_f32() * scale)
            })
            .collect();
        // amax = 127 gives d = 1 and x * id = x: ties both ways and the float just below 0.5.
        let below_half = f32::from_bits(0.5f32.to_bits() - 1);
        blocks.push(std::array::from_fn(|e| match e {
            0 => 127.0,
            1 => below_half,
            2 => -below_half,
            3 => 0.5,
            4 => -0.5,
            5 => f32::from_bits(1.5f32.to_bits() - 1),
            6 => f32::from_bits(0.5f32.to_bits() + 1),
            7 => -f32::from_bits(2.5f32.to_bits() + 1),
            _ => (e as f32 - 20.0) * 0.25,
        }));
        blocks.push(std::array::from_fn(|e| if e == 0 { 127.0 } else { (e as f32 - 16.0) + 0.5 }));
        blocks.push([0.0; QK]);
        blocks.push(std::array::from_fn(|e| [f32::NAN, 1.0, -3.0, 0.0][e % 4]));
        blocks.push(std::array::from_fn(|e| [f32::INFINITY, 1.0, -3.0, 0.0][e % 4]));
        blocks.push(std::array::from_fn(|e| [f32::NEG_INFINITY, 1.0, f32::NAN, -0.0][e % 4]));
        // d subnormal: 1 / d overflows to infinity and `as i8` saturates.
        blocks.push(std::array::from_fn(|e| (e as f32 - 16.0) * 1e-41));
        blocks.push(std::array::from_fn(|e| (e as f32 - 16.0) * 1e-39));
        for (bi, xb) in blocks.iter().enumerate() {
            let (mut q1, mut q2) = ([0i8; QK], [0i8; QK]);
            let a = quantize_q8_1(xb, &mut q1);
            let b = quantize_q8_1_scalar(xb, &mut q2);
            assert_eq!(q1, q2, "quants of block {bi}: {xb:?}");
            assert_eq!((a.0.to_bits(), a.1.to_bits()), (b.0.to_bits(), b.1.to_bits()), "scales of block {bi}");
        }
    }

    /// The activation scratch is reused across calls on a thread: a pad block must never see a
    /// previous call's values (an infinite scale times a zero weight would give NaN).
    #[test]
    fn q4_1_scratch_reuse_is_clean() {
        let (a, _, _) = weights(3, 128, 21);
        let (b, _, _) = weights(3, 96, 22);
        let mut xa = activations(1, 128, 1);
        xa[100] = f32::INFINITY;
        let mut oa = vec![0f32; 3];
        a.matmul(&xa, 1, &mut oa).unwrap();
        let xb = activations(1, 96, 2);
        let (mut ob, mut want) = (vec![0f32; 3], vec![0f32; 3]);
        b.matmul(&xb, 1, &mut ob).unwrap();
        b.matmul_scalar(&xb, 1, &mut want).unwrap();
        assert!(ob.iter().all(|v| v.is_finite()), "{ob:?}");
        assert!(max_abs_diff(&ob, &want) < 1e-4, "{ob:?} vs {want:?}");
    }

    #[test]
    fn q4_1_concat_rows_equals_separate() {
        let k = 576;
        let parts: Vec<Q41Matrix> =
            [(576, 11u64), (192, 12), (192, 13)].iter().map(|&(n, s)| weights(n, k, s).0).collect();
        let fused = Q41Matrix::concat_rows(&parts).unwrap();
        assert_eq!((fused.rows(), fused.cols()), (960, k));
        assert_eq!(fused.storage_bytes(), parts.iter().map(|p| p.storage_bytes()).sum::<usize>());
        for &m in &[1usize, 3, 6] {
            let x = activations(m, k, 77 + m as u64);
            let mut all = vec![0f32; m * 960];
            fused.matmul(&x, m, &mut all).unwrap();
            let mut off = 0;
            for p in &parts {
                let mut o = vec![0f32; m * p.rows()];
                p.matmul(&x, m, &mut o).unwrap();
                for r in 0..m {
                    assert_eq!(&all[r * 960 + off..r * 960 + off + p.rows()], &o[r * p.rows()..(r + 1) * p.rows()]);
                }
                off += p.rows();
            }
        }
        let other = weights(4, 64, 5).0;
        assert!(matches!(Q41Matrix::concat_rows(&[parts[0].clone(), other]), Err(AmuletError::BadModel(_))));
        assert!(matches!(Q41Matrix::concat_rows(&[]), Err(AmuletError::BadModel(_))));
    }

    #[test]
    fn q4_1_dequantize_matches_candle() {
        for &(n, k) in &[(49usize, 64usize), (7, 96), (192, 576)] {
            let (ours, qt, _) = weights(n, k, 3);
            let want = qt.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for i in 0..n {
                assert_eq!(ours.dequantize_row(i), &want[i * k..(i + 1) * k], "row {i} of {n}x{k}");
            }
            assert_eq!(ours.storage_bytes(), n * k.div_ceil(64) * (32 + 4 * std::mem::size_of::<Scale>()));
        }
    }

    #[test]
    fn q4_1_bad_inputs_are_errors() {
        let (ours, _, bytes) = weights(8, 64, 9);
        let bad = |r: Result<Q41Matrix>| match r {
            Err(AmuletError::BadModel(msg)) => msg,
            other => panic!("expected BadModel, got {other:?}"),
        };
        let msg = bad(Q41Matrix::from_gguf_bytes(&bytes[..bytes.len() - 1], 8, 64));
        assert!(msg.contains("expected 320") && msg.contains("got 319"), "{msg}");
        bad(Q41Matrix::from_gguf_bytes(&bytes, 8, 60));
        bad(Q41Matrix::from_gguf_bytes(&bytes, 8, 0));
        bad(Q41Matrix::from_gguf_bytes(&bytes, 0, 64));
        bad(Q41Matrix::from_gguf_bytes(&bytes, usize::MAX / 8, 64));
        let x = vec![0.5f32; 2 * 64];
        let mut out = vec![0f32; 2 * 8];
        assert!(ours.matmul(&x, 2, &mut out).is_ok());
        assert!(matches!(ours.matmul(&x[1..], 2, &mut out), Err(AmuletError::Compute(_))));
        assert!(matches!(ours.matmul(&x, 3, &mut out), Err(AmuletError::Compute(_))));
        assert!(matches!(ours.matmul(&x, 2, &mut out[1..]), Err(AmuletError::Compute(_))));
        assert!(matches!(ours.matmul_scalar(&x, 1, &mut out), Err(AmuletError::Compute(_))));
        assert!(matches!(ours.matmul(&x, usize::MAX, &mut out), Err(AmuletError::Compute(_))));
        // m = 0 is an empty product, not an error.
        assert!(ours.matmul(&[], 0, &mut []).is_ok());
    }
}
