//! Q6_K weight matrix times a few f32 rows (the 1.5B's output projection, 151,936 x 1,536, and
//! half of its v / down matrices).
//!
//! GGUF layout (input): `n` rows of `k / 256` super-blocks of 210 bytes, `ql: [u8; 128],
//! qh: [u8; 64], scales: [i8; 16], d: f16`. In chunk `c` (128 values), element `l < 32` is
//! `ql[64c + l] & 15 | (qh[32c + l] & 3) << 4`, `l + 32` takes `ql[64c + l + 32] & 15` and
//! qh bits 2..3, `l + 64` takes `ql[64c + l] >> 4` and bits 4..5, `l + 96` takes
//! `ql[64c + l + 32] >> 4` and bits 6..7; its value is `d * scales[e / 16] * (q - 32)`.
//!
//! Our layout (repacked losslessly at load, same 210 bytes per super-block, in the same order:
//! one forward stream, see `rows::Packed`). A super-block's record is 6 units of 32 bytes, its
//! 16 i8 scales and its f16 `d`:
//! - the units: each byte holds 6 bits of one register and 2 of
//!   another: bits 0..5 of byte `p` of unit `u` are byte `p` of register `u` (u < 6), and its
//!   bits 6..7 are bits `2u..2u + 2` of register 6 (u < 3) or `2(u - 3)..` of register 7. So
//!   6 registers take one AND each and the other two three pieces each (22 instructions for
//!   256 values, against 34 for GGUF's 4 + 2 bit planes). Byte `2b + t` of register `j` is
//!   element `16b + 2j + t`, so after `maddubs` the i16 lane `b` of every register belongs to
//!   sub-block `b`: two registers add up in i16 (4 products of at most 63 * 128), and `madd`
//!   with the 16 scales widened to i16 (no shuffle at all) scales and sums them.
//!
//! The `- 32` is taken out of the products: sum((q - 32) * y) = sum(q * y) - 32 * sum(y), and
//! the Q8_K activations carry sum(y) per sub-block (`bsums`). Activations are candle's Q8_K
//! (acts.rs), so the products are candle's up to float summation order.
//!
//! Kernels: AVX2 (x86-64-v3), simd128 (wasm32) and a portable scalar one (always reachable as
//! `run_scalar` / `matmul_scalar`). Each weight row is read once for up to 8 activation rows.

use half::f16;

use super::acts::{with_q8k, Q8KActs, QK_K};
use super::rows::{self, check_concat, expect_bytes, Dot, Packed};
use crate::error::Result;

pub use super::rows::KERNEL;

const GGUF_BYTES: usize = 210;
/// Our record: units, scales, d.
const REC: usize = 210;
const SCALES: usize = 192;
const D: usize = 208;

/// One Q6_K weight matrix of `rows()` outputs by `cols()` inputs, in the layout above.
#[derive(Clone)]
pub struct Q6KMatrix {
    n: usize,
    k: usize,
    data: Packed,
}

impl std::fmt::Debug for Q6KMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Q6KMatrix").field("rows", &self.n).field("cols", &self.k).finish()
    }
}

impl Q6KMatrix {
    /// Takes the raw GGUF tensor bytes of a Q6_K matrix with `n` rows of `k` columns.
    pub fn from_gguf_bytes(data: &[u8], n: usize, k: usize) -> Result<Self> {
        expect_bytes("Q6_K", n, k, QK_K, GGUF_BYTES, data.len())?;
        let mut packed = Packed::zeroed(data.len());
        for (blk, rec) in data.chunks_exact(GGUF_BYTES).zip(packed.bytes_mut().chunks_exact_mut(REC)) {
            let (ql, qh) = (&blk[..128], &blk[128..192]);
            rec[SCALES..].copy_from_slice(&blk[192..]);
            // Quants in element order (candle's `to_float` order), then plain loops over the
            // record bytes, so that a 1 GB model repacks in well under a second.
            let mut v = [0u8; QK_K];
            for c in 0..2 {
                for l in 0..32 {
                    let (a, b, h) = (ql[64 * c + l], ql[64 * c + l + 32], qh[32 * c + l]);
                    let e = 128 * c + l;
                    v[e] = (a & 15) | (h & 3) << 4;
                    v[e + 32] = (b & 15) | ((h >> 2) & 3) << 4;
                    v[e + 64] = (a >> 4) | ((h >> 4) & 3) << 4;
                    v[e + 96] = (b >> 4) | ((h >> 6) & 3) << 4;
                }
            }
            for p in 0..32 {
                // Register j holds element 16b + 2j + t at byte p = 2b + t.
                let e = 16 * (p / 2) + p % 2;
                for j in 0..6 {
                    rec[32 * j + p] = v[e + 2 * j];
                }
                for (h, w) in [v[e + 12], v[e + 14]].into_iter().enumerate() {
                    for piece in 0..3 {
                        rec[32 * (3 * h + piece) + p] |= ((w >> (2 * piece)) & 3) << 6;
                    }
                }
            }
        }
        Ok(Q6KMatrix { n, k, data: packed })
    }

    /// The GGUF bytes back (the repack is lossless).
    pub fn to_gguf_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.data.len()];
        for (blk, rec) in out.chunks_exact_mut(GGUF_BYTES).zip(self.data.bytes().chunks_exact(REC)) {
            let v = unpack(rec);
            for c in 0..2 {
                for l in 0..32 {
                    let e = 128 * c + l;
                    let (q1, q2, q3, q4) = (v[e], v[e + 32], v[e + 64], v[e + 96]);
                    blk[64 * c + l] = (q1 & 15) | (q3 & 15) << 4;
                    blk[64 * c + l + 32] = (q2 & 15) | (q4 & 15) << 4;
                    blk[128 + 32 * c + l] = (q1 >> 4) | (q2 >> 4) << 2 | (q3 >> 4) << 4 | (q4 >> 4) << 6;
                }
            }
            blk[192..].copy_from_slice(&rec[SCALES..]);
        }
        out
    }

    /// Stacks matrices along the output dimension, so q/k/v (or gate/up) run as one matmul.
    pub fn concat_rows(parts: &[Q6KMatrix]) -> Result<Q6KMatrix> {
        let k = check_concat("Q6_K", parts.iter().map(|p| p.k))?;
        Ok(Q6KMatrix { n: parts.iter().map(|p| p.n).sum(), k, data: Packed::concat(parts.iter().map(|p| &p.data)) })
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
        assert!(i < self.n, "Q6_K dequantize_row: row {i} out of range ({} rows)", self.n);
        let nsb = self.k / QK_K;
        let mut out = Vec::with_capacity(self.k);
        for rec in self.data.bytes()[i * nsb * REC..(i + 1) * nsb * REC].chunks_exact(REC) {
            let d = f16::from_le_bytes([rec[D], rec[D + 1]]).to_f32();
            let v = unpack(rec);
            out.extend(
                v.iter().enumerate().map(|(e, &q)| d * (rec[SCALES + e / 16] as i8) as f32 * (q as i8 - 32) as f32),
            );
        }
        out
    }
}

rows::kernel_api!(Q6KMatrix, Q8KActs, with_q8k, "Q6_K");

/// The 256 quants (0..63) of one record in element order.
fn unpack(rec: &[u8]) -> [u8; QK_K] {
    std::array::from_fn(|e| {
        let (b, j, t) = (e / 16, (e % 16) / 2, e % 2);
        let p = 2 * b + t;
        if j < 6 {
            rec[32 * j + p] & 63
        } else {
            (0..3).fold(0, |q, piece| q | (rec[32 * (3 * (j - 6) + piece) + p] >> 6) << (2 * piece))
        }
    })
}

/// The portable kernel: integer sums per sub-block, one float step per super-block.
struct Scalar<'a> {
    w: &'a Q6KMatrix,
    a: &'a Q8KActs,
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
        self.w.k / QK_K * GGUF_BYTES
    }
    unsafe fn dot<const R: usize>(&self, i: usize, r0: usize) -> [f32; R] {
        let nsb = self.w.k / QK_K;
        let mut acc = [0f32; R];
        for s in 0..nsb {
            let rec = &self.w.data.bytes()[(i * nsb + s) * REC..][..REC];
            let d = f16::from_le_bytes([rec[D], rec[D + 1]]).to_f32();
            let v = unpack(rec);
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = self.a.natural(r0 + r, s);
                let mut sumi = 0i32;
                for (b, &sc) in rec[SCALES..D].iter().enumerate() {
                    let sc = sc as i8;
                    let dot: i32 = (16 * b..16 * b + 16).map(|e| (v[e] as i32 - 32) * x[e]).sum();
                    sumi += sc as i32 * dot;
                }
                *acc += (d * self.a.d[(r0 + r) * nsb + s]) * sumi as f32;
            }
        }
        acc
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
mod x86 {
    use super::{Q6KMatrix, Q8KActs, D, QK_K, REC, SCALES};
    use crate::backend::rows::{Dot, PREFETCH};
    use crate::backend::x86::{hsum8, join};
    use core::arch::x86_64::*;

    /// The AVX-512 tier: each two neighbouring registers of a super-block side by side.
    pub(super) type Wide<'a> = Kernel<'a, true, true>;

    /// `VNNI` changes nothing: a `madd` here scales the two i16 halves of an i32 lane by two
    /// different sub-block scales, which `vpdpbusd`'s sums of four cannot keep apart, so the
    /// AVX-VNNI tier runs the AVX2 body. `WIDE`: the same `maddubs` and `madd` on 512-bit
    /// registers; AVX2 adds each two registers' i16 products before its `madd` (at most
    /// 2 * 2 * 63 * 128, no overflow), and `madd(a + b) = madd(a) + madd(b)` in exact integers,
    /// so the same i32 sums (backend/x86.rs).
    pub(super) struct Kernel<'a, const VNNI: bool, const WIDE: bool = false> {
        pub w: &'a Q6KMatrix,
        pub a: &'a Q8KActs,
    }

    // SAFETY: `dot` reads weight row `i` (< rows()) and activation rows r0..r0 + R (<= acts())
    // whole super-blocks at a time; `run` checked that the activations have the matrix's width.
    unsafe impl<const VNNI: bool, const WIDE: bool> Dot for Kernel<'_, VNNI, WIDE> {
        fn rows(&self) -> usize {
            self.w.n
        }
        fn acts(&self) -> usize {
            self.a.rows()
        }
        fn row_bytes(&self) -> usize {
            self.w.k / QK_K * REC
        }

        #[inline(always)]
        unsafe fn dot<const R: usize>(&self, i: usize, r0: usize) -> [f32; R] {
            let (w, a) = (self.w, self.a);
            let nsb = w.k / QK_K;
            let row = w.data.as_ptr().add(i * nsb * REC);
            let aq = a.q.as_ptr().add(r0 * nsb * 8) as *const __m256i;
            let ab = a.bsums.as_ptr().add(r0 * nsb) as *const __m256i;
            let ad = a.d.as_ptr().add(r0 * nsb);
            let (m6, m2) = (_mm256_set1_epi8(0x3F), _mm256_set1_epi8(0xC0u8 as i8));
            let mut acc = [_mm256_setzero_ps(); R];
            for s in 0..nsb {
                let rec = row.add(s * REC);
                // Past the end of the matrix the hints are harmless (prefetches never fault).
                for line in 0..4 {
                    _mm_prefetch::<_MM_HINT_T1>((rec as *const i8).wrapping_add(PREFETCH + 64 * line));
                }
                let v: [__m256i; 6] = std::array::from_fn(|l| _mm256_loadu_si256(rec.add(32 * l) as *const __m256i));
                // Bits 6..7 of each byte moved down by 6, 4 or 2 (masked first, so the i16
                // shifts never pull a neighbouring byte's bits in).
                let hi = |x: __m256i| _mm256_and_si256(x, m2);
                let top = |a: __m256i, b: __m256i, c: __m256i| {
                    _mm256_or_si256(
                        _mm256_or_si256(_mm256_srli_epi16::<6>(hi(a)), _mm256_srli_epi16::<4>(hi(b))),
                        _mm256_srli_epi16::<2>(hi(c)),
                    )
                };
                let wr = [
                    _mm256_and_si256(v[0], m6),
                    _mm256_and_si256(v[1], m6),
                    _mm256_and_si256(v[2], m6),
                    _mm256_and_si256(v[3], m6),
                    _mm256_and_si256(v[4], m6),
                    _mm256_and_si256(v[5], m6),
                    top(v[0], v[1], v[2]),
                    top(v[3], v[4], v[5]),
                ];
                let sc = _mm256_cvtepi8_epi16(_mm_loadu_si128(rec.add(SCALES) as *const __m128i));
                let (wp, sc2): ([__m512i; 4], __m512i) = if WIDE {
                    (std::array::from_fn(|c| join(wr[2 * c], wr[2 * c + 1])), join(sc, sc))
                } else {
                    ([_mm512_setzero_si512(); 4], _mm512_setzero_si512())
                };
                let dbits = std::ptr::read_unaligned(rec.add(D) as *const u16);
                let dv = _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(dbits as i32)));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let j = r * nsb + s;
                    let y = aq.add(8 * j);
                    let si = if WIDE {
                        let y2 = |c: usize| _mm512_loadu_si512(y.add(2 * c) as *const __m512i);
                        let q = |c: usize| _mm512_madd_epi16(_mm512_maddubs_epi16(wp[c], y2(c)), sc2);
                        let s = _mm512_add_epi32(_mm512_add_epi32(q(0), q(1)), _mm512_add_epi32(q(2), q(3)));
                        _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64::<1>(s))
                    } else {
                        let p = |l: usize| _mm256_maddubs_epi16(wr[l], _mm256_load_si256(y.add(l)));
                        let q = |c: usize| _mm256_madd_epi16(_mm256_add_epi16(p(2 * c), p(2 * c + 1)), sc);
                        _mm256_add_epi32(_mm256_add_epi32(q(0), q(1)), _mm256_add_epi32(q(2), q(3)))
                    };
                    let off = _mm256_madd_epi16(_mm256_load_si256(ab.add(j)), sc);
                    let si = _mm256_sub_epi32(si, _mm256_slli_epi32::<5>(off));
                    let dd = _mm256_mul_ps(dv, _mm256_broadcast_ss(&*ad.add(j)));
                    *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(si), dd, *acc);
                }
            }
            acc.map(|x| hsum8(x))
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128", target_feature = "relaxed-simd"))]
#[path = "relaxed/q6_k.rs"]
mod wasm;

#[cfg(all(target_arch = "wasm32", target_feature = "simd128", not(target_feature = "relaxed-simd")))]
mod wasm {
    use super::{Q6KMatrix, Q8KActs, D, QK_K, REC, SCALES};
    use crate::backend::rows::{f16_to_f32, sum_lanes, Dot};
    use core::arch::wasm32::*;

    pub(super) struct Kernel<'a> {
        pub w: &'a Q6KMatrix,
        pub a: &'a Q8KActs,
    }

    // SAFETY: as for the x86 kernel: whole super-blocks of row `i` and rows r0..r0 + R.
    unsafe impl Dot for Kernel<'_> {
        fn rows(&self) -> usize {
            self.w.n
        }
        fn acts(&self) -> usize {
            self.a.rows()
        }
        fn row_bytes(&self) -> usize {
            self.w.k / QK_K * REC
        }
        fn stream(&self) -> &[u8] {
            self.w.data.bytes()
        }

        /// Weights widened to i16 once for all rows (the activations come widened); products of
        /// at most 63 * 128 add up in i16 over 4 registers, and `i32x4.dot_i16x8_s` with the
        /// scales widens and scales in one step. Quarter `c` of a register holds sub-blocks
        /// `4c..4c + 4`.
        #[inline(always)]
        unsafe fn dot<const R: usize>(&self, i: usize, r0: usize) -> [f32; R] {
            let (w, a) = (self.w, self.a);
            let nsb = w.k / QK_K;
            let m6 = u16x8_splat(0x3F);
            let mut acc = [f32x4_splat(0.0); R];
            for s in 0..nsb {
                let u = w.data.as_ptr().add((i * nsb + s) * REC);
                let sc: &[i8; 16] = &*(u.add(SCALES) as *const [i8; 16]);
                let d = f16_to_f32(std::ptr::read_unaligned(u.add(D) as *const u16));
                let mut si = [i32x4_splat(0); R];
                for c in 0..4 {
                    let ld =
                        |unit: usize| u16x8_extend_low_u8x16(v128_load64_zero(u.add(32 * unit + 8 * c) as *const u64));
                    let v: [v128; 6] = std::array::from_fn(ld);
                    let top = |a: v128, b: v128, c: v128| {
                        v128_or(v128_or(u16x8_shr(a, 6), i16x8_shl(u16x8_shr(b, 6), 2)), i16x8_shl(u16x8_shr(c, 6), 4))
                    };
                    let wr = [
                        v128_and(v[0], m6),
                        v128_and(v[1], m6),
                        v128_and(v[2], m6),
                        v128_and(v[3], m6),
                        v128_and(v[4], m6),
                        v128_and(v[5], m6),
                        top(v[0], v[1], v[2]),
                        top(v[3], v[4], v[5]),
                    ];
                    let s4 = |b: usize| sc[4 * c + b] as i16;
                    let scv = i16x8(s4(0), s4(0), s4(1), s4(1), s4(2), s4(2), s4(3), s4(3));
                    for (r, si) in si.iter_mut().enumerate() {
                        let y = a.q.as_ptr().add(8 * ((r0 + r) * nsb + s)) as *const v128;
                        let p = |l: usize| i16x8_mul(wr[l], v128_load(y.add(4 * l + c)));
                        let lo = i16x8_add(i16x8_add(p(0), p(1)), i16x8_add(p(2), p(3)));
                        let hi = i16x8_add(i16x8_add(p(4), p(5)), i16x8_add(p(6), p(7)));
                        *si = i32x4_add(*si, i32x4_add(i32x4_dot_i16x8(lo, scv), i32x4_dot_i16x8(hi, scv)));
                    }
                }
                let sc16 = v128_load(u.add(SCALES) as *const v128);
                let (slo, shi) = (i16x8_extend_low_i8x16(sc16), i16x8_extend_high_i8x16(sc16));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let j = (r0 + r) * nsb + s;
                    let bs = a.bsums.as_ptr().add(j) as *const v128;
                    let off =
                        i32x4_add(i32x4_dot_i16x8(v128_load(bs), slo), i32x4_dot_i16x8(v128_load(bs.add(1)), shi));
                    let sum = i32x4_sub(si[r], i32x4_shl(off, 5));
                    *acc = f32x4_add(*acc, f32x4_mul(f32x4_convert_i32x4(sum), f32x4_splat(d * a.d[j])));
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

    testutil::kernel_for_tests!(Q6KMatrix, Q8KActs, GgmlDType::Q6K);

    const CASES: [Case; 4] =
        [Case { n: 37, k: 256 }, Case { n: 100, k: 768 }, Case { n: 19, k: 2816 }, Case { n: 8, k: 512 }];

    /// Q6_K has no VNNI form: every tier runs AVX2 (see its x86 module).
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    #[test]
    fn q6_k_tiers_give_the_avx2_bits() {
        testutil::tiers_agree::<Q6KMatrix>(&CASES);
    }

    #[test]
    fn q6_k_matches_candle_simd_and_scalar() {
        testutil::matches_candle::<Q6KMatrix>(&CASES);
    }

    #[test]
    fn q6_k_repack_is_lossless_and_dequantizes_like_candle() {
        testutil::lossless::<Q6KMatrix>(&CASES);
    }

    #[test]
    fn q6_k_row_ranges_and_concat() {
        testutil::ranges_and_concat::<Q6KMatrix>(768);
    }

    #[test]
    fn q6_k_bad_inputs_are_errors() {
        testutil::bad_inputs::<Q6KMatrix>(256, 210);
    }
}
