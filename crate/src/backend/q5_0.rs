//! Q5_0 weight matrix times a few f32 rows (most of the Qwen2.5 0.5B q4_k_m file; candle has
//! no SIMD Q5_0 dot product at all).
//!
//! GGUF layout (input): `n` rows of `k / 32` blocks of 22 bytes, `d: f16, qh: u32 (LE),
//! qs: [u8; 16]`. Element `e < 16` is `qs[e] & 15`, element `e + 16` is `qs[e] >> 4`, bit 4 of
//! element `e` is bit `e` of `qh`, and the value is `d * (q - 16)`.
//!
//! Our layout (repacked losslessly at load, same 22 bytes per block, rows in GGUF's order: one
//! forward stream, see `rows::Packed`). The first `8 * groups` blocks of a row form groups of
//! 8 blocks, each a record of 5 units of 32 bytes and the 8 f16 scales `d`; the units hold 40
//! bits per byte position for 8 registers of 5 bits: bits 0..4 of byte `p` of unit `u` are byte `p` of
//! register `u` (u < 5), and bits 5..7 of the 5 units carry registers 5, 6 and 7 in pieces
//! (`PIECES`). So 5 registers take one AND each and 3 are put together from 2 or 3 pieces
//! (23 instructions per group, against 35 for GGUF's nibbles plus a bit plane). Byte `4b + t`
//! of register `j` is element `4j + t` of block `b`, so after `maddubs` the i16 lanes
//! `2b, 2b + 1` belong to block `b`: four registers add up in i16 (8 products of at most
//! 31 * 128), one `madd` per half gives the 8 block sums in block order, and one FMA applies
//! the 8 scales (which F16C converts in one step). Where 4 to 7 blocks are left over, the
//! first 4 form a half record (`HALF`: the same layout on units of 16 bytes, then 4 scales),
//! which the kernels take like the first half of a group: the 0.5B's rows of 896 are 28
//! blocks, and its 4 leftover blocks one at a time had cost about as much as 8 in a group. The
//! 0..3 blocks still left follow as records of GGUF's `qs, qh` and `d` (22 bytes each) and
//! take the activations in element order.
//!
//! The `- 16` is taken out of the products: sum((q - 16) * y) = sum(q * y) - 16 * sum(y), and
//! the Q8_0 activations carry 16 * sum(y) per block. Activations are candle's Q8_0 (acts.rs);
//! the scalar path sums in candle's order (bit-identical to candle's generic Q5_0 dot), the
//! SIMD ones differ only in float summation order.
//!
//! Kernels: AVX2 (x86-64-v3), simd128 (wasm32) and a portable scalar one (always reachable as
//! `run_scalar` / `matmul_scalar`). Each weight row is read once for up to 8 activation rows.

use half::f16;

use super::acts::{grouped_blocks, with_q8, Q8Acts, QK8_0};
use super::rows::{self, check_concat, expect_bytes, Dot, Packed};
use crate::error::Result;

pub use super::rows::KERNEL;

const GGUF_BYTES: usize = 22;
/// Blocks per group.
const GB: usize = 8;
/// A group's record: 5 units, then 8 f16 scales.
const GROUP: usize = 176;
const GROUP_D: usize = 160;
/// A half group's record: 5 units of 16 bytes, then 4 f16 scales.
const HALF: usize = 88;
const HALF_D: usize = 80;
/// A leftover block's record: `qs` (16 bytes), `qh` (4), `d` (2).
const TAIL: usize = 22;

/// Where registers 5, 6 and 7 keep their bits: `(unit, first bit in the unit byte, bits,
/// first bit of the value)`.
const PIECES: [&[(usize, u32, u32, u32)]; 3] =
    [&[(0, 5, 3, 0), (1, 5, 2, 3)], &[(1, 7, 1, 0), (2, 5, 3, 1), (3, 5, 1, 4)], &[(3, 6, 2, 0), (4, 5, 3, 2)]];

/// Quant of register `j` at byte `p` of a record whose units are `unit` bytes.
fn take(rec: &[u8], unit: usize, j: usize, p: usize) -> u8 {
    if j < 5 {
        rec[unit * j + p] & 31
    } else {
        PIECES[j - 5]
            .iter()
            .fold(0, |q, &(u, at, bits, from)| q | ((rec[unit * u + p] >> at) & ((1 << bits) - 1)) << from)
    }
}

/// Writes `unit / 4` GGUF blocks (`blks`) as one record with units of `unit` bytes: byte
/// `p = 4b + t` of register `j` is element `4j + t` of block `b`; registers 5..7 go in pieces
/// (see PIECES), written out so that loading stays fast; the scales follow the units.
fn pack(blks: &[u8], rec: &mut [u8], unit: usize) {
    let mut q = [[0u8; 32]; GB];
    for (b, blk) in blks.chunks_exact(GGUF_BYTES).enumerate() {
        q[b] = gguf_quants(&blk[6..], u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]));
        rec[5 * unit + 2 * b..5 * unit + 2 * b + 2].copy_from_slice(&blk[..2]);
    }
    for p in 0..unit {
        let w: [u8; 8] = std::array::from_fn(|j| q[p / 4][4 * j + p % 4]);
        rec[p] = w[0] | (w[5] & 7) << 5;
        rec[unit + p] = w[1] | (w[5] >> 3) << 5 | (w[6] & 1) << 7;
        rec[2 * unit + p] = w[2] | ((w[6] >> 1) & 7) << 5;
        rec[3 * unit + p] = w[3] | (w[6] >> 4) << 5 | (w[7] & 3) << 6;
        rec[4 * unit + p] = w[4] | (w[7] >> 2) << 5;
    }
}

/// Whether a row of `nb` blocks has a half record after its groups (read off the activations'
/// group slots, so that both sides agree).
fn half_record(nb: usize) -> bool {
    !grouped_blocks(nb).is_multiple_of(GB)
}

/// One Q5_0 weight matrix of `rows()` outputs by `cols()` inputs, in the layout above.
#[derive(Clone)]
pub struct Q50Matrix {
    n: usize,
    k: usize,
    groups: usize,
    data: Packed,
}

impl std::fmt::Debug for Q50Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Q50Matrix").field("rows", &self.n).field("cols", &self.k).finish()
    }
}

/// The 32 quants (0..31) of a GGUF block.
fn gguf_quants(qs: &[u8], qh: u32) -> [u8; 32] {
    std::array::from_fn(|e| {
        let nib = if e < 16 { qs[e] & 15 } else { qs[e - 16] >> 4 };
        nib | (((qh >> e) & 1) as u8) << 4
    })
}

impl Q50Matrix {
    /// Takes the raw GGUF tensor bytes of a Q5_0 matrix with `n` rows of `k` columns.
    pub fn from_gguf_bytes(data: &[u8], n: usize, k: usize) -> Result<Self> {
        expect_bytes("Q5_0", n, k, QK8_0, GGUF_BYTES, data.len())?;
        let nb = k / QK8_0;
        let (groups, half) = (nb / GB, half_record(nb));
        let mut packed = Packed::zeroed(data.len());
        for (src, dst) in data.chunks_exact(nb * GGUF_BYTES).zip(packed.bytes_mut().chunks_exact_mut(nb * GGUF_BYTES)) {
            let (gsrc, tsrc) = src.split_at(groups * GB * GGUF_BYTES);
            let (gdst, tdst) = dst.split_at_mut(groups * GROUP);
            for (blks, rec) in gsrc.chunks_exact(GB * GGUF_BYTES).zip(gdst.chunks_exact_mut(GROUP)) {
                pack(blks, rec, 32);
            }
            let (tsrc, tdst) = if half {
                pack(&tsrc[..HALF], &mut tdst[..HALF], 16);
                (&tsrc[HALF..], &mut tdst[HALF..])
            } else {
                (tsrc, tdst)
            };
            for (blk, rec) in tsrc.chunks_exact(GGUF_BYTES).zip(tdst.chunks_exact_mut(TAIL)) {
                rec[..16].copy_from_slice(&blk[6..]);
                rec[16..20].copy_from_slice(&blk[2..6]);
                rec[20..22].copy_from_slice(&blk[..2]);
            }
        }
        Ok(Q50Matrix { n, k, groups, data: packed })
    }

    /// Whether a half record follows the groups.
    fn half(&self) -> bool {
        half_record(self.k / QK8_0)
    }

    /// Where block `b` of row `i` lives: the byte offset of its record and the record's unit
    /// width (32 a group, 16 the half group, 0 a tail record).
    fn at(&self, i: usize, b: usize) -> (usize, usize) {
        let nb = self.k / QK8_0;
        let (row, grouped) = (i * nb * GGUF_BYTES, grouped_blocks(nb));
        let past = row + self.groups * GROUP;
        if b < GB * self.groups {
            (row + b / GB * GROUP, 32)
        } else if b < grouped {
            (past, 16)
        } else {
            (past + HALF * self.half() as usize + (b - grouped) * TAIL, 0)
        }
    }

    /// The GGUF bytes back (the repack is lossless).
    pub fn to_gguf_bytes(&self) -> Vec<u8> {
        let nb = self.k / QK8_0;
        let mut out = vec![0u8; self.n * nb * GGUF_BYTES];
        for (j, blk) in out.chunks_exact_mut(GGUF_BYTES).enumerate() {
            let (d, qs, qh) = self.block(j / nb, j % nb);
            blk[..2].copy_from_slice(&d.to_le_bytes());
            blk[2..6].copy_from_slice(&qh.to_le_bytes());
            blk[6..].copy_from_slice(&qs);
        }
        out
    }

    /// Block `b` of row `i` in GGUF terms: `(d bits, qs, qh)`.
    fn block(&self, i: usize, b: usize) -> (u16, [u8; 16], u32) {
        let (off, unit) = self.at(i, b);
        let rec = &self.data.bytes()[off..];
        if unit == 0 {
            let qs = rec[..16].try_into().expect("16 bytes");
            return (
                u16::from_le_bytes([rec[20], rec[21]]),
                qs,
                u32::from_le_bytes([rec[16], rec[17], rec[18], rec[19]]),
            );
        }
        let q: [u8; 32] = std::array::from_fn(|e| take(rec, unit, e / 4, 4 * (b % GB) + e % 4));
        let qs = std::array::from_fn(|e| (q[e] & 15) | (q[e + 16] & 15) << 4);
        let qh = q.iter().enumerate().fold(0u32, |h, (e, &v)| h | ((v >> 4) as u32) << e);
        let d = 5 * unit + 2 * (b % GB);
        (u16::from_le_bytes([rec[d], rec[d + 1]]), qs, qh)
    }

    /// Stacks matrices along the output dimension, so q/k/v (or gate/up) run as one matmul.
    pub fn concat_rows(parts: &[Q50Matrix]) -> Result<Q50Matrix> {
        let k = check_concat("Q5_0", parts.iter().map(|p| p.k))?;
        Ok(Q50Matrix {
            n: parts.iter().map(|p| p.n).sum(),
            k,
            groups: parts[0].groups,
            data: Packed::concat(parts.iter().map(|p| &p.data)),
        })
    }

    /// Output dimension (GGUF `ne[1]`).
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Input dimension (GGUF `ne[0]`).
    pub fn cols(&self) -> usize {
        self.k
    }

    /// Bytes held in memory (the GGUF size).
    pub fn storage_bytes(&self) -> usize {
        self.data.len()
    }

    /// Row `i` as f32, computed like candle's `to_float`. Panics if `i >= rows()`.
    pub fn dequantize_row(&self, i: usize) -> Vec<f32> {
        assert!(i < self.n, "Q5_0 dequantize_row: row {i} out of range ({} rows)", self.n);
        let nb = self.k / QK8_0;
        let mut out = Vec::with_capacity(self.k);
        for b in 0..nb {
            let (d, qs, qh) = self.block(i, b);
            let d = f16::from_bits(d).to_f32();
            out.extend(gguf_quants(&qs, qh).iter().map(|&q| (q as i32 - 16) as f32 * d));
        }
        out
    }
}

rows::kernel_api!(Q50Matrix, Q8Acts, with_q8, "Q5_0");

/// The portable kernel, in candle's order: one running sum, `sumi * d_w * d_x` per block.
struct Scalar<'a> {
    w: &'a Q50Matrix,
    a: &'a Q8Acts,
}

// SAFETY: `dot` indexes slices (bounds-checked); it reads nothing through raw pointers.
unsafe impl Dot for Scalar<'_> {
    fn rows(&self) -> usize {
        self.w.n
    }
    fn acts(&self) -> usize {
        self.a.rows()
    }
    fn row_bytes(&self) -> usize {
        self.w.k / QK8_0 * GGUF_BYTES
    }
    unsafe fn dot<const R: usize>(&self, i: usize, r0: usize) -> [f32; R] {
        let nb = self.w.k / QK8_0;
        let mut acc = [0f32; R];
        for b in 0..nb {
            let (dw, qs, qh) = self.w.block(i, b);
            let dw = f16::from_bits(dw).to_f32();
            let q = gguf_quants(&qs, qh);
            for (r, acc) in acc.iter_mut().enumerate() {
                let j = (r0 + r) * nb + b;
                let sumi: i32 = q.iter().zip(&self.a.nat[j].0).map(|(&w, &x)| (w as i32 - 16) * x as i32).sum();
                *acc += sumi as f32 * dw * self.a.d[j];
            }
        }
        acc
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
mod x86 {
    use super::{Q50Matrix, Q8Acts, GB, GROUP, GROUP_D, HALF, HALF_D, QK8_0, TAIL};
    use crate::backend::acts::{grouped_blocks, grp_slots};
    use crate::backend::rows::{Dot, PREFETCH};
    use crate::backend::x86::{dot_bytes, dot_pairs, f16_splat, hsum8, join};
    use core::arch::x86_64::*;

    /// The AVX-512 tier: a group's eight registers as four 512-bit ones (backend/x86.rs).
    pub(super) type Wide<'a> = Kernel<'a, true, true>;

    /// `VNNI`: `vpdpbusd` in place of `maddubs` + `madd`; `WIDE` (with `VNNI`): on 512-bit
    /// registers, each two neighbouring ones of a group (backend/x86.rs).
    pub(super) struct Kernel<'a, const VNNI: bool, const WIDE: bool = false> {
        pub w: &'a Q50Matrix,
        pub a: &'a Q8Acts,
    }

    /// 0xFF in byte `e` where bit `e` of `x` is set (llama.cpp's `bytes_from_bits_32`).
    #[inline(always)]
    unsafe fn bytes_from_bits(x: u32) -> __m256i {
        let shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
        let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
        _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
    }

    /// A group's (or the half group's) eight registers from its five units: five take one
    /// AND each, and 5..7 are put together from their pieces (see PIECES), masked before the
    /// i16 shifts so that no neighbouring byte's bits come along.
    #[inline(always)]
    unsafe fn unpack(v: [__m256i; 5]) -> [__m256i; 8] {
        let and = |x: __m256i, m: u8| _mm256_and_si256(x, _mm256_set1_epi8(m as i8));
        [
            and(v[0], 31),
            and(v[1], 31),
            and(v[2], 31),
            and(v[3], 31),
            and(v[4], 31),
            _mm256_or_si256(_mm256_srli_epi16::<5>(and(v[0], 0xE0)), _mm256_srli_epi16::<2>(and(v[1], 0x60))),
            _mm256_or_si256(
                _mm256_or_si256(_mm256_srli_epi16::<7>(and(v[1], 0x80)), _mm256_srli_epi16::<4>(and(v[2], 0xE0))),
                _mm256_srli_epi16::<1>(and(v[3], 0x20)),
            ),
            _mm256_or_si256(_mm256_srli_epi16::<6>(and(v[3], 0xC0)), _mm256_srli_epi16::<3>(and(v[4], 0xE0))),
        ]
    }

    /// A group's four register pairs for the AVX-512 tier straight from its units, on 512 bits
    /// (the same bytes as `unpack` then joins): pairs (0, 1) and (2, 3) are units 0-1 and 2-3
    /// as they lie, masked; the pieces of 5, 6 and 7 are masked and shifted with each half's own
    /// mask and count (`vpsrlvw`). 17 vector instructions against `unpack`'s 23 and 4 joins.
    ///
    /// # Safety
    /// `rec` points at a group's record (176 bytes); the CPU has the AVX-512 tier.
    #[inline(always)]
    unsafe fn unpack_wide(rec: *const u8) -> [__m512i; 4] {
        let unit = |u: usize| _mm256_loadu_si256(rec.add(32 * u) as *const __m256i);
        let two = |lo: usize, hi: usize| join(unit(lo), unit(hi));
        // A mask or shift count a half: `lo` in the low 256 bits, `hi` in the high.
        let bytes = |lo: u8, hi: u8| join(_mm256_set1_epi8(lo as i8), _mm256_set1_epi8(hi as i8));
        let words = |lo: u16, hi: u16| join(_mm256_set1_epi16(lo as i16), _mm256_set1_epi16(hi as i16));
        let shift = |x: __m512i, m: __m512i, s: __m512i| _mm512_srlv_epi16(_mm512_and_si512(x, m), s);
        let (u01, u23) = (_mm512_loadu_si512(rec as *const _), _mm512_loadu_si512(rec.add(64) as *const _));
        let low5 = _mm512_set1_epi8(31);
        // 4 | 5: unit 4's low bits | bits 5-7 of unit 0 and 5-6 of unit 1.
        let p45 = _mm512_or_si512(
            shift(two(4, 0), bytes(31, 0xE0), words(0, 5)),
            _mm512_srli_epi16::<2>(_mm512_and_si512(u01, bytes(0, 0x60))),
        );
        // 6 | 7: bit 7 of unit 1, bits 5-7 of unit 2 and bit 5 of unit 3 | bits 6-7 of unit 3
        // and 5-7 of unit 4.
        let u33 = _mm512_broadcast_i64x4(unit(3));
        let p67 = _mm512_ternarylogic_epi32::<0xFE>(
            shift(two(1, 3), bytes(0x80, 0xC0), words(7, 6)),
            shift(two(2, 4), bytes(0xE0, 0xE0), words(4, 3)),
            _mm512_srli_epi16::<1>(_mm512_and_si512(u33, bytes(0x20, 0))),
        );
        [_mm512_and_si512(u01, low5), _mm512_and_si512(u23, low5), p45, p67]
    }

    /// The AVX-512 tier's registers: each two neighbouring ones joined (zeros that nothing
    /// reads on the tiers below it).
    #[inline(always)]
    unsafe fn pairs<const WIDE: bool>(wr: &[__m256i; 8]) -> [__m512i; 4] {
        std::array::from_fn(|q| if WIDE { join(wr[2 * q], wr[2 * q + 1]) } else { _mm512_setzero_si512() })
    }

    // SAFETY: `dot` reads weight row `i` (< rows()) and activation rows r0..r0 + R (<= acts())
    // whole groups and blocks at a time; `run` checked that the activations have the
    // matrix's width (so the same group / tail split).
    unsafe impl<const VNNI: bool, const WIDE: bool> Dot for Kernel<'_, VNNI, WIDE> {
        fn rows(&self) -> usize {
            self.w.n
        }
        fn acts(&self) -> usize {
            self.a.rows()
        }
        fn row_bytes(&self) -> usize {
            self.w.k / QK8_0 * 22
        }

        #[inline(always)]
        unsafe fn dot<const R: usize>(&self, i: usize, r0: usize) -> [f32; R] {
            let (w, a) = (self.w, self.a);
            let (nb, groups, half) = (w.k / QK8_0, w.groups, w.half());
            let (slots, grouped) = (grp_slots(nb), grouped_blocks(nb));
            let tb = nb - grouped;
            let row = w.data.as_ptr().add(i * nb * 22);
            let ag = a.grp.as_ptr().add(r0 * slots * GB) as *const __m256i;
            let an = a.nat.as_ptr().add(r0 * nb) as *const __m256i;
            let ad = a.d.as_ptr().add(r0 * nb);
            let asum = a.sum16.as_ptr().add(r0 * nb);
            let (m4, bit4, ones) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(0x10), _mm256_set1_epi16(1));
            let mut acc = [_mm256_setzero_ps(); R];
            // Slot `g`'s eight block sums of row `r` (the half slot's last four are zeros: its
            // units' high halves are).
            let sums = |wr: &[__m256i; 8], wp: &[__m512i; 4], r: usize, g: usize| {
                let y = ag.add((r * slots + g) * GB);
                let yp = |q: usize| _mm512_loadu_si512(y.add(2 * q) as *const __m512i);
                let y = |l: usize| _mm256_load_si256(y.add(l));
                // With AVX2 two sums of four: eight products of 31 * 128 would saturate i16.
                if WIDE {
                    dot_pairs(wp, yp)
                } else if VNNI {
                    dot_bytes::<true, 8>(wr, y)
                } else {
                    let (w0, w1) = ([wr[0], wr[1], wr[2], wr[3]], [wr[4], wr[5], wr[6], wr[7]]);
                    _mm256_add_epi32(dot_bytes::<false, 4>(&w0, y), dot_bytes::<false, 4>(&w1, |l| y(4 + l)))
                }
            };
            for g in 0..groups {
                let rec = row.add(g * GROUP);
                // Past the end of the matrix the hints are harmless (prefetches never fault).
                for line in 0..3 {
                    _mm_prefetch::<_MM_HINT_T1>((rec as *const i8).wrapping_add(PREFETCH + 64 * line));
                }
                // Each tier's registers, zeros for the other's (nothing reads them).
                let (wr, wp) = if WIDE {
                    ([_mm256_setzero_si256(); 8], unpack_wide(rec))
                } else {
                    let units = std::array::from_fn(|l| _mm256_loadu_si256(rec.add(32 * l) as *const __m256i));
                    (unpack(units), [_mm512_setzero_si512(); 4])
                };
                let dw = _mm256_cvtph_ps(_mm_loadu_si128(rec.add(GROUP_D) as *const __m128i));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let j = r * nb + GB * g;
                    let s = _mm256_sub_epi32(sums(&wr, &wp, r, g), _mm256_loadu_si256(asum.add(j) as *const __m256i));
                    let dd = _mm256_mul_ps(dw, _mm256_loadu_ps(ad.add(j)));
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), dd, *acc);
                }
            }
            if half {
                // The group steps on zero-extended registers: 4 blocks, 4 lanes of sums.
                let rec = row.add(groups * GROUP);
                let wr = unpack(std::array::from_fn(|l| {
                    _mm256_zextsi128_si256(_mm_loadu_si128(rec.add(16 * l) as *const __m128i))
                }));
                let wp = pairs::<WIDE>(&wr);
                let dw = _mm256_zextps128_ps256(_mm_cvtph_ps(_mm_loadl_epi64(rec.add(HALF_D) as *const __m128i)));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let j = r * nb + GB * groups;
                    let s4 = _mm256_zextsi128_si256(_mm_loadu_si128(asum.add(j) as *const __m128i));
                    let s = _mm256_sub_epi32(sums(&wr, &wp, r, groups), s4);
                    let dd = _mm256_mul_ps(dw, _mm256_zextps128_ps256(_mm_loadu_ps(ad.add(j))));
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), dd, *acc);
                }
            }
            let sixteen = _mm256_set1_epi8(16);
            for t in 0..tb {
                let b = grouped + t;
                let rec = row.add(groups * GROUP + HALF * half as usize + t * TAIL);
                let q = _mm_loadu_si128(rec as *const __m128i);
                let nib = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(q), q), m4);
                let hb = _mm256_and_si256(bytes_from_bits(std::ptr::read_unaligned(rec.add(16) as *const u32)), bit4);
                let wv = _mm256_or_si256(nib, hb);
                let dw = f16_splat(rec.add(20));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let x = _mm256_load_si256(an.add(r * nb + b));
                    let s = if VNNI {
                        let z = _mm256_setzero_si256();
                        _mm256_sub_epi32(_mm256_dpbusd_avx_epi32(z, wv, x), _mm256_dpbusd_avx_epi32(z, sixteen, x))
                    } else {
                        let p = _mm256_sub_epi16(_mm256_maddubs_epi16(wv, x), _mm256_maddubs_epi16(sixteen, x));
                        _mm256_madd_epi16(p, ones)
                    };
                    let s = _mm256_cvtepi32_ps(s);
                    *acc = _mm256_fmadd_ps(s, _mm256_mul_ps(dw, _mm256_broadcast_ss(&*ad.add(r * nb + b))), *acc);
                }
            }
            acc.map(|x| hsum8(x))
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128", target_feature = "relaxed-simd"))]
#[path = "relaxed/q5_0.rs"]
mod wasm;

#[cfg(all(target_arch = "wasm32", target_feature = "simd128", not(target_feature = "relaxed-simd")))]
mod wasm {
    use super::{Q50Matrix, Q8Acts, GB, GROUP, GROUP_D, HALF, HALF_D, QK8_0, TAIL};
    use crate::backend::acts::{grouped_blocks, grp_slots};
    use crate::backend::rows::{f16_to_f32, f16x8, sum_lanes, Dot};
    use core::arch::wasm32::*;

    pub(super) struct Kernel<'a> {
        pub w: &'a Q50Matrix,
        pub a: &'a Q8Acts,
    }

    // SAFETY: as for the x86 kernel: whole groups and blocks of row `i`, rows r0..r0 + R.
    unsafe impl Dot for Kernel<'_> {
        fn rows(&self) -> usize {
            self.w.n
        }
        fn acts(&self) -> usize {
            self.a.rows()
        }
        fn row_bytes(&self) -> usize {
            self.w.k / QK8_0 * 22
        }
        fn stream(&self) -> &[u8] {
            self.w.data.bytes()
        }

        /// Weights widened to i16 once for all rows (the activations come widened); products of
        /// at most 31 * 128 add up in i16 over the 8 registers, then `i32x4.dot_i16x8_s` with
        /// ones widens. Quarter `c` of a register holds blocks `2c` and `2c + 1`.
        #[inline(always)]
        unsafe fn dot<const R: usize>(&self, i: usize, r0: usize) -> [f32; R] {
            let (w, a) = (self.w, self.a);
            let (nb, groups, half) = (w.k / QK8_0, w.groups, w.half());
            let (slots, grouped) = (grp_slots(nb), grouped_blocks(nb));
            let tb = nb - grouped;
            let row = w.data.as_ptr().add(i * nb * 22);
            let m5 = u16x8_splat(31);
            let ones = i16x8_splat(1);
            let mut acc = [f32x4_splat(0.0); R];
            // Quarter `c` of slot `g`, whose units of `unit` bytes start at `u`: each row's two
            // blocks' sums in pairs of i32 lanes.
            let quarter = |u: *const u8, unit: usize, g: usize, c: usize| -> [v128; R] {
                let ld = |l: usize| u16x8_extend_low_u8x16(v128_load64_zero(u.add(unit * l + 8 * c) as *const u64));
                let v: [v128; 5] = std::array::from_fn(ld);
                // Widened to u16 lanes, the pieces shift without masks (see PIECES).
                let bits = |x: v128, at: u32, n: u32| v128_and(u16x8_shr(x, at), u16x8_splat((1 << n) - 1));
                let wr = [
                    v128_and(v[0], m5),
                    v128_and(v[1], m5),
                    v128_and(v[2], m5),
                    v128_and(v[3], m5),
                    v128_and(v[4], m5),
                    v128_or(u16x8_shr(v[0], 5), i16x8_shl(bits(v[1], 5, 2), 3)),
                    v128_or(
                        v128_or(u16x8_shr(v[1], 7), i16x8_shl(u16x8_shr(v[2], 5), 1)),
                        i16x8_shl(bits(v[3], 5, 1), 4),
                    ),
                    v128_or(u16x8_shr(v[3], 6), i16x8_shl(u16x8_shr(v[4], 5), 2)),
                ];
                std::array::from_fn(|r| {
                    let y = a.grp.as_ptr().add(((r0 + r) * slots + g) * GB) as *const v128;
                    let p = |l: usize| i16x8_mul(wr[l], v128_load(y.add(4 * l + c)));
                    let s = i16x8_add(
                        i16x8_add(i16x8_add(p(0), p(1)), i16x8_add(p(2), p(3))),
                        i16x8_add(i16x8_add(p(4), p(5)), i16x8_add(p(6), p(7))),
                    );
                    i32x4_dot_i16x8(s, ones)
                })
            };
            // Blocks b..b + 4 from two quarters' sums, times their scales, for each row.
            let four = |p0: &[v128; R], p1: &[v128; R], d: v128, b: usize| -> [v128; R] {
                std::array::from_fn(|r| {
                    let s =
                        i32x4_add(i32x4_shuffle::<0, 2, 4, 6>(p0[r], p1[r]), i32x4_shuffle::<1, 3, 5, 7>(p0[r], p1[r]));
                    let j = (r0 + r) * nb + b;
                    let s = f32x4_convert_i32x4(i32x4_sub(s, v128_load(a.sum16.as_ptr().add(j) as *const v128)));
                    f32x4_mul(s, f32x4_mul(d, v128_load(a.d.as_ptr().add(j) as *const v128)))
                })
            };
            for g in 0..groups {
                let u = row.add(g * GROUP);
                let p: [[v128; R]; 4] = std::array::from_fn(|c| quarter(u, 32, g, c));
                let [d03, d47] = f16x8(v128_load(u.add(GROUP_D) as *const v128));
                let (f03, f47) = (four(&p[0], &p[1], d03, GB * g), four(&p[2], &p[3], d47, GB * g + 4));
                for (r, acc) in acc.iter_mut().enumerate() {
                    *acc = f32x4_add(*acc, f32x4_add(f03[r], f47[r]));
                }
            }
            if half {
                let u = row.add(groups * GROUP);
                // Four scales, twice over: f16x8's short path sees eight normal numbers.
                let [d03, _] = f16x8(v128_load64_splat(u.add(HALF_D) as *const u64));
                let f = four(&quarter(u, 16, groups, 0), &quarter(u, 16, groups, 1), d03, GB * groups);
                for (acc, f) in acc.iter_mut().zip(f) {
                    *acc = f32x4_add(*acc, f);
                }
            }
            let bits = i16x8(1, 2, 4, 8, 16, 32, 64, 128);
            let sixteen = i16x8_splat(16);
            for t in 0..tb {
                let b = grouped + t;
                let rec = row.add(groups * GROUP + HALF * half as usize + t * TAIL);
                let q = v128_load(rec as *const v128);
                let qh = std::ptr::read_unaligned(rec.add(16) as *const u32);
                // Elements 8v..8v + 8, minus 16.
                let wv: [v128; 4] = std::array::from_fn(|v| {
                    let bytes = if v < 2 { v128_and(q, u8x16_splat(15)) } else { u8x16_shr(q, 4) };
                    let e = if v % 2 == 0 { u16x8_extend_low_u8x16(bytes) } else { u16x8_extend_high_u8x16(bytes) };
                    let hb = v128_and(i16x8_splat(((qh >> (8 * v)) & 0xFF) as i16), bits);
                    let hb = v128_and(v128_not(i16x8_eq(hb, i16x8_splat(0))), sixteen);
                    i16x8_sub(v128_or(e, hb), sixteen)
                });
                let dw = f16_to_f32(std::ptr::read_unaligned(rec.add(20) as *const u16));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let j = (r0 + r) * nb + b;
                    let x = a.nat.as_ptr().add(j) as *const v128;
                    let dot = |v: usize| i32x4_dot_i16x8(wv[v], v128_load(x.add(v)));
                    let s = i32x4_add(i32x4_add(dot(0), dot(1)), i32x4_add(dot(2), dot(3)));
                    *acc = f32x4_add(*acc, f32x4_mul(f32x4_convert_i32x4(s), f32x4_splat(dw * a.d[j])));
                }
            }
            sum_lanes(&acc)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::testutil::{self, Case};
    use candle_core::quantized::GgmlDType;

    testutil::kernel_for_tests!(Q50Matrix, Q8Acts, GgmlDType::Q5_0);

    /// Block counts: 1 (a tail only), 4 (a half group only), 7 and 21 (a half group and a tail
    /// after none or two groups), 16 (groups only), 11 (a group and a tail of 3), 28 (the 0.5B's
    /// 896: groups and a half), 152 (its 4,864).
    const CASES: [Case; 8] = [
        Case { n: 13, k: 32 },
        Case { n: 11, k: 128 },
        Case { n: 29, k: 224 },
        Case { n: 33, k: 672 },
        Case { n: 20, k: 512 },
        Case { n: 17, k: 352 },
        Case { n: 70, k: 896 },
        Case { n: 9, k: 4864 },
    ];

    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    #[test]
    fn q5_0_tiers_give_the_avx2_bits() {
        testutil::tiers_agree::<Q50Matrix>(&CASES);
    }

    #[test]
    fn q5_0_matches_candle_simd_and_scalar() {
        testutil::matches_candle::<Q50Matrix>(&CASES);
    }

    /// The scalar path sums in candle's order: bit-identical to candle's generic Q5_0 dot
    /// (even block counts: candle's dot debug-asserts them).
    #[test]
    fn q5_0_scalar_is_candle_bit_for_bit() {
        for &(n, k) in &[(21usize, 512usize), (7, 896)] {
            let (bytes, _) = testutil::weights(GgmlDType::Q5_0, n, k, 3);
            let ours = Q50Matrix::from_gguf_bytes(&bytes, n, k).unwrap();
            for m in [1, 2, 9] {
                let x = testutil::activations(m, k, m as u64);
                let mut got = vec![0f32; m * n];
                ours.matmul_scalar(&x, m, &mut got).unwrap();
                assert!(got == testutil::candle_matmul(GgmlDType::Q5_0, &bytes, n, k, &x, m), "{n}x{k} m={m}");
            }
        }
    }

    #[test]
    fn q5_0_repack_is_lossless_and_dequantizes_like_candle() {
        testutil::lossless::<Q50Matrix>(&CASES);
    }

    #[test]
    fn q5_0_row_ranges_and_concat() {
        testutil::ranges_and_concat::<Q50Matrix>(896);
    }

    #[test]
    fn q5_0_bad_inputs_are_errors() {
        testutil::bad_inputs::<Q50Matrix>(32, 22);
    }
}
