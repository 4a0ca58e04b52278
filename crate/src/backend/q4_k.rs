//! Q4_K weight matrix times a few f32 rows (the bulk of the Qwen2.5 1.5B q4_k_m file).
//!
//! GGUF layout (input): a matrix of GGUF shape [k, n] is `n` rows of `k / 256` super-blocks of
//! 144 bytes, `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`. The 12 scale bytes pack
//! 8 six-bit scales `sc` and 8 six-bit mins `m`, one per sub-block of 32 values; element `e`
//! of chunk `c` (64 values) is `qs[32c + e] & 15` for `e < 32`, else `qs[32c + e - 32] >> 4`,
//! and its value is `d * sc * q - dmin * m` (candle's `to_float`).
//!
//! Our layout (repacked losslessly at load; super-blocks in GGUF's order, one forward stream,
//! see `rows::Packed`): a super-block's record is 4 units of 32 bytes and its scales.
//! - The units: Unpacking unit `u` gives register `2u`
//!   (low nibbles) and `2u + 1` (high nibbles), and byte `2b + t` of register `j` holds
//!   element `16b + 2j + t`. So after `maddubs` (byte pairs) the i16 lane `b` of every
//!   register belongs to sub-block `b / 2`; the 8 registers add up lane-wise (16 products of
//!   at most 15 * 128: no i16 overflow) and one `madd` with the scales doubled per lane pair
//!   yields the 8 scaled sub-block sums, with no shuffles or horizontal adds.
//! - The scales, 20 bytes: `d, dmin` (f16) and the 8 scales and 8 mins unpacked to one byte each (a bijection of GGUF's 12 bytes, which pack exactly these 16 six-bit
//!   fields). 4 bytes more than GGUF (148 instead of 144 per super-block, +2.8%) buy a decode of
//!   two shuffles instead of about a dozen instructions per super-block and weight row, which
//!   is what the second activation row of Amulet waits on when the kernel is compute bound.
//!
//! Activations are Q8_K (candle's `BlockQ8K::from_float`, see acts.rs, in the lane order
//! above), so the products are candle's up to float summation order. The mins term,
//! `dmin * sum_c m_c * sum(y in sub-block c)`, is one FMA per activation row: `m_c * dmin`
//! per weight row against `sum(y in c) * d_y` per activation row (`bsxd`, from the
//! activations' 16-value sums).
//!
//! Kernels: AVX2 (x86-64-v3), simd128 (wasm32) and a portable scalar one (always reachable as
//! `run_scalar` / `matmul_scalar`). Each weight row is read once for up to 8 activation rows.

use half::f16;

use super::acts::{with_q8k, Q8KActs, QK_K};
use super::rows::{self, check_concat, expect_bytes, Dot, Packed};
use crate::error::Result;

pub use super::rows::KERNEL;

const GGUF_BYTES: usize = 144;
/// Our record: 128 quant bytes, then `d, dmin` (f16), the 8 scales and the 8 mins.
const REC: usize = 148;
const META: usize = 128;
const SC: usize = 132;
const MN: usize = 140;

/// One Q4_K weight matrix of `rows()` outputs by `cols()` inputs, in the layout above.
#[derive(Clone)]
pub struct Q4KMatrix {
    n: usize,
    k: usize,
    data: Packed,
}

impl std::fmt::Debug for Q4KMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Q4KMatrix").field("rows", &self.n).field("cols", &self.k).finish()
    }
}

/// Scale and min of sub-block `j` from the 12 packed bytes (ggml's `get_scale_min_k4`).
fn scale_min(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        ((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4))
    }
}

impl Q4KMatrix {
    /// Takes the raw GGUF tensor bytes of a Q4_K matrix with `n` rows of `k` columns.
    pub fn from_gguf_bytes(data: &[u8], n: usize, k: usize) -> Result<Self> {
        expect_bytes("Q4_K", n, k, QK_K, GGUF_BYTES, data.len())?;
        let mut packed = Packed::zeroed(data.len() / GGUF_BYTES * REC);
        for (blk, rec) in data.chunks_exact(GGUF_BYTES).zip(packed.bytes_mut().chunks_exact_mut(REC)) {
            rec[META..SC].copy_from_slice(&blk[..4]);
            for c in 0..8 {
                (rec[SC + c], rec[MN + c]) = scale_min(c, &blk[4..16]);
            }
            // Quants in element order, then byte p of unit u = elements 16b + 4u + t (low
            // nibble) and 16b + 4u + 2 + t (high) with p = 2b + t: plain loops, so that a 1 GB
            // model repacks in well under a second.
            let mut v = [0u8; QK_K];
            for (c, q) in blk[16..].chunks_exact(32).enumerate() {
                for (l, &x) in q.iter().enumerate() {
                    (v[64 * c + l], v[64 * c + 32 + l]) = (x & 15, x >> 4);
                }
            }
            for (u, unit) in rec[..META].chunks_exact_mut(32).enumerate() {
                for (p, o) in unit.iter_mut().enumerate() {
                    let e = 16 * (p / 2) + 4 * u + p % 2;
                    *o = v[e] | v[e + 2] << 4;
                }
            }
        }
        Ok(Q4KMatrix { n, k, data: packed })
    }

    /// The GGUF bytes back (the repack is lossless): exact-mode reference runs rebuild
    /// candle's matrices from them.
    pub fn to_gguf_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.data.len() / REC * GGUF_BYTES];
        for (blk, rec) in out.chunks_exact_mut(GGUF_BYTES).zip(self.data.bytes().chunks_exact(REC)) {
            blk[..4].copy_from_slice(&rec[META..SC]);
            // The inverse of `scale_min`.
            let (sc, m) = (&rec[SC..MN], &rec[MN..REC]);
            for j in 0..4 {
                blk[4 + j] = sc[j] | (sc[j + 4] >> 4) << 6;
                blk[8 + j] = m[j] | (m[j + 4] >> 4) << 6;
                blk[12 + j] = (sc[j + 4] & 15) | (m[j + 4] & 15) << 4;
            }
            let v = unpack(rec);
            for c in 0..4 {
                for l in 0..32 {
                    blk[16 + 32 * c + l] = v[64 * c + l] | (v[64 * c + 32 + l] << 4);
                }
            }
        }
        out
    }

    /// Stacks matrices along the output dimension, so q/k/v (or gate/up) run as one matmul.
    pub fn concat_rows(parts: &[Q4KMatrix]) -> Result<Q4KMatrix> {
        let k = check_concat("Q4_K", parts.iter().map(|p| p.k))?;
        Ok(Q4KMatrix { n: parts.iter().map(|p| p.n).sum(), k, data: Packed::concat(parts.iter().map(|p| &p.data)) })
    }

    /// Output dimension (GGUF `ne[1]`).
    pub fn rows(&self) -> usize {
        self.n
    }

    /// Input dimension (GGUF `ne[0]`).
    pub fn cols(&self) -> usize {
        self.k
    }

    /// Bytes held in memory (148 per super-block, see the layout).
    pub fn storage_bytes(&self) -> usize {
        self.data.len()
    }

    /// Row `i` as f32, computed like candle's `to_float`. Panics if `i >= rows()`.
    pub fn dequantize_row(&self, i: usize) -> Vec<f32> {
        assert!(i < self.n, "Q4_K dequantize_row: row {i} out of range ({} rows)", self.n);
        let nsb = self.k / QK_K;
        let mut out = Vec::with_capacity(self.k);
        for rec in self.data.bytes()[i * nsb * REC..(i + 1) * nsb * REC].chunks_exact(REC) {
            let (d, dmin) = d_dmin(rec);
            let v = unpack(rec);
            for (c, q) in v.chunks_exact(32).enumerate() {
                let (d1, m1) = (d * rec[SC + c] as f32, dmin * rec[MN + c] as f32);
                out.extend(q.iter().map(|&q| d1 * q as f32 - m1));
            }
        }
        out
    }
}

rows::kernel_api!(Q4KMatrix, Q8KActs, with_q8k, "Q4_K");

/// The 256 quants of one record in element order.
fn unpack(rec: &[u8]) -> [u8; QK_K] {
    std::array::from_fn(|e| {
        let (b, j, t) = (e / 16, (e % 16) / 2, e % 2);
        (rec[32 * (j / 2) + 2 * b + t] >> (4 * (j % 2))) & 15
    })
}

/// A record's `d` and `dmin` as f32.
fn d_dmin(rec: &[u8]) -> (f32, f32) {
    let h = |at: usize| f16::from_le_bytes([rec[at], rec[at + 1]]).to_f32();
    (h(META), h(META + 2))
}

/// The portable kernel: integer sums per sub-block, one float step per super-block.
struct Scalar<'a> {
    w: &'a Q4KMatrix,
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
        self.w.k / QK_K * REC
    }
    unsafe fn dot<const R: usize>(&self, i: usize, r0: usize) -> [f32; R] {
        let nsb = self.w.k / QK_K;
        let mut acc = [0f32; R];
        for s in 0..nsb {
            let rec = &self.w.data.bytes()[(i * nsb + s) * REC..][..REC];
            let (d, dmin) = d_dmin(rec);
            let v = unpack(rec);
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = self.a.natural(r0 + r, s);
                let j = (r0 + r) * nsb + s;
                let bs = &self.a.bsums[j].0;
                let (mut sumi, mut summ) = (0i32, 0i32);
                for c in 0..8 {
                    let dot: i32 = (32 * c..32 * c + 32).map(|e| v[e] as i32 * x[e]).sum();
                    sumi += rec[SC + c] as i32 * dot;
                    summ += rec[MN + c] as i32 * (bs[2 * c] as i32 + bs[2 * c + 1] as i32);
                }
                let xd = self.a.d[j];
                *acc += (d * xd) * sumi as f32 - (dmin * xd) * summ as f32;
            }
        }
        acc
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
mod x86 {
    use super::{Q4KMatrix, Q8KActs, META, QK_K, REC, SC};
    use crate::backend::rows::{Dot, PREFETCH};
    use crate::backend::x86::{dot_bytes, dot_pairs, hsum8, nibbles, sum_i16};
    use core::arch::x86_64::*;

    /// The AVX-512 tier: a super-block's eight registers as four 512-bit ones (backend/x86.rs).
    pub(super) type Wide<'a> = Kernel<'a, true, true>;

    /// `VNNI`: `vpdpbusd` in place of `maddubs` + `madd`; `WIDE` (with `VNNI`): each unit's low
    /// and high nibbles side by side in one 512-bit register, as they lie in the activations.
    pub(super) struct Kernel<'a, const VNNI: bool, const WIDE: bool = false> {
        pub w: &'a Q4KMatrix,
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
            let ab = a.bsxd.as_ptr().add(r0 * nsb) as *const f32;
            let ad = a.d.as_ptr().add(r0 * nsb);
            let m4 = _mm256_set1_epi8(0x0F);
            // i16 lane b takes sub-block b / 2 (each 128-bit half holds all 8 scales).
            let z = -1i8;
            let pairs = _mm256_setr_epi8(
                0, z, 0, z, 1, z, 1, z, 2, z, 2, z, 3, z, 3, z, 4, z, 4, z, 5, z, 5, z, 6, z, 6, z, 7, z, 7, z,
            );
            let mut acc = [_mm256_setzero_ps(); R];
            for s in 0..nsb {
                let rec = row.add(s * REC);
                // Past the end of the matrix the hints are harmless (prefetches never fault).
                for line in 0..3 {
                    _mm_prefetch::<_MM_HINT_T1>((rec as *const i8).wrapping_add(PREFETCH + 64 * line));
                }
                let mut wr = [_mm256_setzero_si256(); 8];
                let mut wp = [_mm512_setzero_si512(); 4];
                for l in 0..4 {
                    let v = _mm256_loadu_si256(rec.add(32 * l) as *const __m256i);
                    if WIDE {
                        wp[l] = nibbles(v);
                    } else {
                        wr[2 * l] = _mm256_and_si256(v, m4);
                        wr[2 * l + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
                    }
                }
                let scm = _mm_loadu_si128(rec.add(SC) as *const __m128i);
                let scp = _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(scm), pairs);
                // VNNI: the same 8 scales, one per i32 lane (lane l is sub-block l).
                let sc32 = _mm256_cvtepu8_epi32(scm);
                let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(std::ptr::read_unaligned(rec.add(META) as *const i32)));
                let dv = _mm256_broadcastss_ps(dm);
                let dminv = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
                let mins = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128::<8>(scm))), dminv);
                for (r, acc) in acc.iter_mut().enumerate() {
                    let j = r * nsb + s;
                    let y = aq.add(8 * j);
                    let y = |l: usize| _mm256_load_si256(y.add(l));
                    // i16 lanes 2l and 2l + 1 both belong to sub-block l: 16 products of at
                    // most 15 * 128 each, so the AVX2 sums never saturate.
                    let si = if WIDE {
                        let yp = |l: usize| _mm512_loadu_si512(aq.add(8 * j + 2 * l) as *const __m512i);
                        _mm256_mullo_epi32(dot_pairs(&wp, yp), sc32)
                    } else if VNNI {
                        _mm256_mullo_epi32(dot_bytes::<true, 8>(&wr, y), sc32)
                    } else {
                        _mm256_madd_epi16(sum_i16(&wr, y), scp)
                    };
                    let si = _mm256_cvtepi32_ps(si);
                    let dd = _mm256_mul_ps(dv, _mm256_broadcast_ss(&*ad.add(j)));
                    *acc = _mm256_fmadd_ps(si, dd, *acc);
                    *acc = _mm256_fnmadd_ps(mins, _mm256_load_ps(ab.add(8 * j)), *acc);
                }
            }
            acc.map(|x| hsum8(x))
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128", target_feature = "relaxed-simd"))]
#[path = "relaxed/q4_k.rs"]
mod wasm;

#[cfg(all(target_arch = "wasm32", target_feature = "simd128", not(target_feature = "relaxed-simd")))]
mod wasm {
    use super::{Q4KMatrix, Q8KActs, META, MN, QK_K, REC, SC};
    use crate::backend::rows::{f16_to_f32, sum_lanes, Dot};
    use core::arch::wasm32::*;

    pub(super) struct Kernel<'a> {
        pub w: &'a Q4KMatrix,
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

        /// simd128 has no byte products: weights are widened to i16 once for all rows (the
        /// activations come widened), products of at most 15 * 128 add up in i16 over the 8
        /// registers, and `i32x4.dot_i16x8_s` with the scales widens and scales in one step.
        /// Quarter `c` of a register holds sub-blocks `4c..4c + 4` (of 16), i.e. the scales
        /// of sub-blocks `2c` and `2c + 1` (of 32).
        #[inline(always)]
        unsafe fn dot<const R: usize>(&self, i: usize, r0: usize) -> [f32; R] {
            let (w, a) = (self.w, self.a);
            let nsb = w.k / QK_K;
            let mask = u16x8_splat(0x0F);
            let mut acc = [f32x4_splat(0.0); R];
            for s in 0..nsb {
                let rec = w.data.bytes().as_ptr().add((i * nsb + s) * REC);
                let h = |at: usize| f16_to_f32(std::ptr::read_unaligned(rec.add(at) as *const u16));
                let (d, dmin) = (h(META), h(META + 2));
                let sc: [i16; 8] = std::array::from_fn(|c| *rec.add(SC + c) as i16);
                let mut si = [i32x4_splat(0); R];
                for c in 0..4 {
                    // Bytes 8c..8c + 8 of each register, widened.
                    let mut wr = [i16x8_splat(0); 8];
                    for l in 0..4 {
                        let v = u16x8_extend_low_u8x16(v128_load64_zero(rec.add(32 * l + 8 * c) as *const u64));
                        wr[2 * l] = v128_and(v, mask);
                        wr[2 * l + 1] = u16x8_shr(v, 4);
                    }
                    let (s0, s1) = (sc[2 * c], sc[2 * c + 1]);
                    let scv = i16x8(s0, s0, s0, s0, s1, s1, s1, s1);
                    for (r, si) in si.iter_mut().enumerate() {
                        let y = a.q.as_ptr().add(8 * ((r0 + r) * nsb + s)) as *const v128;
                        let p = |l: usize| i16x8_mul(wr[l], v128_load(y.add(4 * l + c)));
                        let s16 = i16x8_add(
                            i16x8_add(i16x8_add(p(0), p(1)), i16x8_add(p(2), p(3))),
                            i16x8_add(i16x8_add(p(4), p(5)), i16x8_add(p(6), p(7))),
                        );
                        *si = i32x4_add(*si, i32x4_dot_i16x8(s16, scv));
                    }
                }
                let m = |c: usize| *rec.add(MN + c) as f32 * dmin;
                let (mlo, mhi) = (f32x4(m(0), m(1), m(2), m(3)), f32x4(m(4), m(5), m(6), m(7)));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let j = (r0 + r) * nsb + s;
                    let bs = a.bsxd.as_ptr().add(j) as *const v128;
                    let mins = f32x4_add(f32x4_mul(mlo, v128_load(bs)), f32x4_mul(mhi, v128_load(bs.add(1))));
                    let f = f32x4_mul(f32x4_convert_i32x4(si[r]), f32x4_splat(d * a.d[j]));
                    *acc = f32x4_add(*acc, f32x4_sub(f, mins));
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

    testutil::kernel_for_tests!(Q4KMatrix, Q8KActs, GgmlDType::Q4K);

    const CASES: [Case; 4] =
        [Case { n: 37, k: 256 }, Case { n: 100, k: 768 }, Case { n: 19, k: 2816 }, Case { n: 8, k: 512 }];

    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    #[test]
    fn q4_k_tiers_give_the_avx2_bits() {
        testutil::tiers_agree::<Q4KMatrix>(&CASES);
    }

    #[test]
    fn q4_k_matches_candle_simd_and_scalar() {
        testutil::matches_candle::<Q4KMatrix>(&CASES);
    }

    #[test]
    fn q4_k_repack_is_lossless_and_dequantizes_like_candle() {
        testutil::lossless::<Q4KMatrix>(&CASES);
    }

    #[test]
    fn q4_k_row_ranges_and_concat() {
        testutil::ranges_and_concat::<Q4KMatrix>(768);
    }

    #[test]
    fn q4_k_bad_inputs_are_errors() {
        testutil::bad_inputs::<Q4KMatrix>(256, 144);
    }
}
