//! Q8_0 weight matrix times a few f32 rows: the (tied) output projection of the default
//! model, 49,152 x 576, the single largest matrix of a decode step; the 0.5B's output
//! projection (151,936 x 896) and some of its v matrices.
//!
//! candle's QMatMul runs its dot product once per (row, output), so with the two Amulet
//! contexts it streams the weights twice per step. Here each weight block is loaded once
//! and used for up to 8 activation rows. Per (row, output) the AVX2 arithmetic is candle's
//! own (Q8_0 activation quantisation, `maddubs` block sums, one FMA per block, the same
//! horizontal sum), so results are bit-identical to candle's AVX2 tier; the scalar path sums
//! in candle's generic order (bit-identical to its portable dot), and simd128 differs from it
//! only in float summation order.
//!
//! Layout: GGUF's, kept as is: n rows of k/32 blocks of 34 bytes (d: f16, qs: [i8; 32]).
//! (Its values already are whole bytes in element order, which is what the kernels want.)
//!
//! Kernels: AVX2 (x86-64-v3; its AVX-512 tier takes two or more rows in pairs from the
//! activations' own pair layout, see `Wide`), simd128 (wasm32, weights widened to i16 once
//! for all rows) and a portable scalar one (always reachable as `run_scalar` /
//! `matmul_scalar`).

use half::f16;

use super::acts::{with_q8, Q8Acts, QK8_0};
use super::rows::{self, check_concat, expect_bytes, Dot};
use crate::error::{AmuletError, Result};

pub use super::rows::KERNEL;

const QK: usize = QK8_0;
const BLOCK: usize = 34;

pub struct Q80Matrix {
    n: usize,
    k: usize,
    data: Vec<u8>,
}

impl std::fmt::Debug for Q80Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Q80Matrix").field("rows", &self.n).field("cols", &self.k).finish()
    }
}

impl Q80Matrix {
    /// Takes the bytes as they are (owned bytes are kept without a copy: the 30 MB
    /// embedding read from JS would otherwise exist twice at the load peak).
    pub fn from_gguf_bytes<'a>(data: impl Into<std::borrow::Cow<'a, [u8]>>, n: usize, k: usize) -> Result<Self> {
        let data = data.into();
        expect_bytes("Q8_0", n, k, QK, BLOCK, data.len())?;
        Ok(Q80Matrix { n, k, data: data.into_owned() })
    }

    /// The GGUF bytes (kept as they are).
    pub fn gguf_bytes(&self) -> &[u8] {
        &self.data
    }

    /// Stacks matrices along the output dimension, so q/k/v (or gate/up) run as one matmul.
    pub fn concat_rows(parts: &[&Q80Matrix]) -> Result<Q80Matrix> {
        let k = check_concat("Q8_0", parts.iter().map(|p| p.k))?;
        Ok(Q80Matrix {
            n: parts.iter().map(|p| p.n).sum(),
            k,
            data: parts.iter().flat_map(|p| p.data.iter().copied()).collect(),
        })
    }

    pub fn rows(&self) -> usize {
        self.n
    }

    pub fn cols(&self) -> usize {
        self.k
    }

    pub fn storage_bytes(&self) -> usize {
        self.data.len()
    }

    fn block(&self, row: usize, b: usize) -> (f32, &[u8]) {
        let off = (row * (self.k / QK) + b) * BLOCK;
        let d = f16::from_le_bytes([self.data[off], self.data[off + 1]]).to_f32();
        (d, &self.data[off + 2..off + BLOCK])
    }

    /// Row `i` as f32 (d * q): the embedding lookup of a tied embedding matrix.
    pub fn dequantize_row_into(&self, i: usize, out: &mut [f32]) -> Result<()> {
        if i >= self.n || out.len() != self.k {
            return Err(AmuletError::Compute(format!("embedding row {i} of {} (width {})", self.n, self.k)));
        }
        for b in 0..self.k / QK {
            let (d, qs) = self.block(i, b);
            for (o, &q) in out[b * QK..(b + 1) * QK].iter_mut().zip(qs) {
                *o = d * (q as i8) as f32;
            }
        }
        Ok(())
    }
}

rows::kernel_api!(Q80Matrix, Q8Acts, with_q8, "Q8_0");

/// Portable path: candle's generic order, one running sum, `sumi * d_w * d_x` per block.
struct Scalar<'a> {
    w: &'a Q80Matrix,
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
        self.w.k / QK * BLOCK
    }
    unsafe fn dot<const R: usize>(&self, i: usize, r0: usize) -> [f32; R] {
        let nb = self.w.k / QK;
        let mut acc = [0f32; R];
        for b in 0..nb {
            let (dw, qs) = self.w.block(i, b);
            for (r, acc) in acc.iter_mut().enumerate() {
                let j = (r0 + r) * nb + b;
                let sumi: i32 = qs.iter().zip(&self.a.nat[j].0).map(|(&w, &x)| (w as i8) as i32 * x as i32).sum();
                *acc += sumi as f32 * dw * self.a.d[j];
            }
        }
        acc
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
mod x86 {
    use super::{Q80Matrix, Q8Acts, BLOCK, QK};
    use crate::backend::rows::{Dot, MAX_ROWS, PREFETCH};
    use crate::backend::x86::{f16_splat, hsum8};
    use core::arch::x86_64::*;

    /// `VNNI`: `vpdpbusd` in place of `maddubs` + `madd`; `WIDE`: `Wide` (backend/x86.rs).
    pub(super) struct Kernel<'a, const VNNI: bool, const WIDE: bool = false> {
        pub w: &'a Q80Matrix,
        pub a: &'a Q8Acts,
    }

    // SAFETY: `dot` reads the blocks of weight row `i` (< rows()), each load 32 bytes inside
    // a block (offset 2..34 of 34), and whole blocks of activation rows r0..r0 + R (<= acts()),
    // on the AVX-512 tier those of pairs r0 / 2.. (r0 + R - 1) / 2 (< acts().div_ceil(2), which
    // `Q8Acts::quantize` lays out wherever the tier runs); `run` checked that the activations
    // have the matrix's width.
    unsafe impl<const VNNI: bool, const WIDE: bool> Dot for Kernel<'_, VNNI, WIDE> {
        fn rows(&self) -> usize {
            self.w.n
        }
        fn acts(&self) -> usize {
            self.a.rows()
        }
        fn row_bytes(&self) -> usize {
            self.w.k / QK * BLOCK
        }

        #[inline(always)]
        unsafe fn dot<const R: usize>(&self, i: usize, r0: usize) -> [f32; R] {
            if WIDE {
                return if R == 1 { [self.dot_one(i, r0); R] } else { self.dot_wide(i, r0) };
            }
            let (w, a) = (self.w, self.a);
            let nb = w.k / QK;
            let row = w.data.as_ptr().add(i * nb * BLOCK);
            let an = a.nat.as_ptr().add(r0 * nb) as *const __m256i;
            let ad = a.d.as_ptr().add(r0 * nb);
            let ones = _mm256_set1_epi16(1);
            let mut sums = [_mm256_setzero_ps(); R];
            for b in 0..nb {
                let blk = row.add(b * BLOCK);
                // Past the end of the matrix the hint is harmless (prefetches never fault).
                _mm_prefetch::<_MM_HINT_T1>((blk as *const i8).wrapping_add(PREFETCH));
                let dw = f16_splat(blk);
                let bw = _mm256_loadu_si256(blk.add(2) as *const __m256i);
                let aw = _mm256_sign_epi8(bw, bw);
                for (r, sum) in sums.iter_mut().enumerate() {
                    let j = r * nb + b;
                    let bx = _mm256_load_si256(an.add(j));
                    let d = _mm256_mul_ps(dw, _mm256_broadcast_ss(&*ad.add(j)));
                    let sy = _mm256_sign_epi8(bx, bw);
                    let dot = if VNNI {
                        _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), aw, sy)
                    } else {
                        _mm256_madd_epi16(ones, _mm256_maddubs_epi16(aw, sy))
                    };
                    *sum = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot), *sum);
                }
            }
            sums.map(|x| hsum8(x))
        }
    }

    /// The AVX-512 tier: one 512-bit register holds the same block for two activation rows,
    /// and each half takes its row's AVX2 steps (the same bits); with an odd row count the
    /// last row takes them on 256 bits, and one row alone takes `dot_one`. The rows come in pairs from `Q8Acts::upair` and
    /// `dpair` (one 64-byte load each; `rows::run` starts every pass on an even row), their
    /// quants plus 128 as unsigned bytes: `vpdpbusd` takes them against the signed weights
    /// directly, and each i32 lane starts from minus 128 times its four weights (shared by
    /// every row), which leaves the lane exactly AVX2's sum of products. AVX2's sign trick
    /// (|w| against x negated where w < 0) cost a mask and a masked subtraction a block, and
    /// the pair two inserts: 12 vector instructions a block for two rows where this takes 9.
    pub(super) type Wide<'a> = Kernel<'a, true, true>;

    /// A block on the AVX-512 tier: its scale in 16 lanes and its 32 quants in both halves, the
    /// stream prefetched ahead of it.
    ///
    /// # Safety
    /// `blk` points at a whole block; the CPU has the tier.
    #[inline(always)]
    unsafe fn wide_block(blk: *const u8) -> (__m512, __m512i) {
        // Past the end of the matrix the hint is harmless (prefetches never fault).
        _mm_prefetch::<_MM_HINT_T1>((blk as *const i8).wrapping_add(PREFETCH));
        let dw = _mm512_cvtph_ps(_mm256_set1_epi16(std::ptr::read_unaligned(blk as *const i16)));
        (dw, _mm512_broadcast_i64x4(_mm256_loadu_si256(blk.add(2) as *const __m256i)))
    }

    impl<const VNNI: bool, const WIDE: bool> Kernel<'_, VNNI, WIDE> {
        /// `dot` of one row on the AVX-512 tier: AVX2's sign trick on 256 bits, the activations
        /// as they are (`Q8Acts` lays out no pairs for one row). The AVX-VNNI body is slower
        /// here: the 0.5B's output projection streamed at 8.8-9.6 GB/s against 11.8-12.1.
        ///
        /// # Safety
        /// As `dot`'s, and the CPU has the tier (backend/x86.rs).
        #[inline(always)]
        unsafe fn dot_one(&self, i: usize, r0: usize) -> f32 {
            let (w, a) = (self.w, self.a);
            let nb = w.k / QK;
            let row = w.data.as_ptr().add(i * nb * BLOCK);
            let an = a.nat.as_ptr().add(r0 * nb) as *const __m256i;
            let ad = a.d.as_ptr().add(r0 * nb);
            let mut sum = _mm256_setzero_ps();
            for b in 0..nb {
                let (dw, bw) = wide_block(row.add(b * BLOCK));
                let aw = _mm512_castsi512_si256(_mm512_abs_epi8(bw));
                let sy = _mm256_sign_epi8(_mm256_load_si256(an.add(b)), _mm512_castsi512_si256(bw));
                let dot = _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), aw, sy);
                let d = _mm256_mul_ps(_mm512_castps512_ps256(dw), _mm256_broadcast_ss(&*ad.add(b)));
                sum = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot), sum);
            }
            hsum8(sum)
        }

        /// `dot` on the AVX-512 tier.
        ///
        /// # Safety
        /// As `dot`'s, `r0` is even, the CPU has the tier (backend/x86.rs), and so the
        /// activations carry their pairs (acts.rs).
        #[inline(always)]
        unsafe fn dot_wide<const R: usize>(&self, i: usize, r0: usize) -> [f32; R] {
            let (w, a) = (self.w, self.a);
            let nb = w.k / QK;
            let row = w.data.as_ptr().add(i * nb * BLOCK);
            // Pair r0 / 2 + p, block b: lanes 2 * ((r0 / 2 + p) * nb + b) and the next.
            let up = a.upair.as_ptr().add(r0 * nb) as *const __m512i;
            let dp = a.dpair.as_ptr().add(r0 / 2 * nb) as *const __m512;
            let zero = _mm512_setzero_si512();
            let k128 = _mm512_set1_epi8(-128);
            // Pairs of rows (2p, 2p + 1); R <= MAX_ROWS. An odd last row is the low half of
            // its pair.
            let mut pairs = [_mm512_setzero_ps(); MAX_ROWS / 2];
            let mut last = _mm256_setzero_ps();
            for b in 0..nb {
                let (dw, bw) = wide_block(row.add(b * BLOCK));
                // -128 * (sum of the lane's 4 weights): the 128s the unsigned quants carry.
                let base = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, k128, bw));
                for (p, sum) in pairs.iter_mut().enumerate().take(R / 2) {
                    let j = p * nb + b;
                    let dot = _mm512_dpbusd_epi32(base, _mm512_load_si512(up.add(j) as *const _), bw);
                    let d = _mm512_mul_ps(dw, _mm512_load_ps(dp.add(j) as *const f32));
                    *sum = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(dot), *sum);
                }
                if R % 2 == 1 {
                    let j = (R / 2) * nb + b;
                    let x = _mm256_load_si256(up.add(j) as *const __m256i);
                    let dot = _mm256_dpbusd_avx_epi32(_mm512_castsi512_si256(base), x, _mm512_castsi512_si256(bw));
                    let d = _mm256_mul_ps(_mm512_castps512_ps256(dw), _mm256_load_ps(dp.add(j) as *const f32));
                    last = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(dot), last);
                }
            }
            std::array::from_fn(|r| match (r % 2, r / 2) {
                _ if r == R - 1 && R % 2 == 1 => hsum8(last),
                (0, p) => hsum8(_mm512_castps512_ps256(pairs[p])),
                (_, p) => hsum8(_mm512_extractf32x8_ps::<1>(pairs[p])),
            })
        }
    }
}

/// Both wasm builds: relaxed SIMD's byte product needs one operand in 0..127, and Q8_0's
/// signed weights are not (the relaxed build's activations come widened too, see acts.rs).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm {
    use super::{Q80Matrix, Q8Acts, BLOCK, QK};
    use crate::backend::rows::{f16_to_f32, sum_lanes, Dot};
    use core::arch::wasm32::*;

    pub(super) struct Kernel<'a> {
        pub w: &'a Q80Matrix,
        pub a: &'a Q8Acts,
    }

    // SAFETY: the scale's 2 bytes and 8-byte loads at offsets 2, 10, 18 and 26 of each 34-byte
    // block of row `i`; whole blocks of activation rows r0..r0 + R and their scales (`a.d`
    // holds one per block of every row).
    unsafe impl Dot for Kernel<'_> {
        fn rows(&self) -> usize {
            self.w.n
        }
        fn acts(&self) -> usize {
            self.a.rows()
        }
        fn row_bytes(&self) -> usize {
            self.w.k / QK * BLOCK
        }
        fn stream(&self) -> &[u8] {
            &self.w.data
        }

        /// Weights widened to i16 once for all rows (the activations come widened), then
        /// `i32x4.dot_i16x8_s` (one `pmaddwd` on x86 hosts) per 8 values. Each 8 weights come
        /// in one `v128.load8x8_s` (one `pmovsxbw` from memory), where loading 16 bytes and
        /// widening both halves took three instructions more per half in V8; the scale is one
        /// u16 load and the activation scales are read unchecked (`run` checked their count):
        /// a block's loop in Chromium went from about 50 instructions to about 38. (Gathering
        /// four blocks' sums to scale them in one vector ran slower in Chromium, likely because
        /// 16 live weight registers spill.)
        #[inline(always)]
        unsafe fn dot<const R: usize>(&self, i: usize, r0: usize) -> [f32; R] {
            let (w, a) = (self.w, self.a);
            let nb = w.k / QK;
            let row = w.data.as_ptr().add(i * nb * BLOCK);
            let lanes = a.wide_lanes();
            let ad = a.d.as_ptr();
            let mut acc = [f32x4_splat(0.0); R];
            for b in 0..nb {
                let blk = row.add(b * BLOCK);
                let dw = f16_to_f32(std::ptr::read_unaligned(blk as *const u16));
                let wv: [v128; 4] = std::array::from_fn(|v| i16x8_load_extend_i8x8(blk.add(2 + 8 * v) as *const i8));
                for (r, acc) in acc.iter_mut().enumerate() {
                    let j = (r0 + r) * nb + b;
                    let x = lanes.add(j) as *const v128;
                    let dot = |v: usize| i32x4_dot_i16x8(wv[v], v128_load(x.add(v)));
                    let s = i32x4_add(i32x4_add(dot(0), dot(1)), i32x4_add(dot(2), dot(3)));
                    *acc = f32x4_add(*acc, f32x4_mul(f32x4_convert_i32x4(s), f32x4_splat(dw * *ad.add(j))));
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

    impl Clone for Q80Matrix {
        fn clone(&self) -> Self {
            Q80Matrix { n: self.n, k: self.k, data: self.data.clone() }
        }
    }

    impl testutil::Kernel for Q80Matrix {
        type Acts = Q8Acts;
        const DTYPE: GgmlDType = GgmlDType::Q8_0;
        fn load(bytes: &[u8], n: usize, k: usize) -> Result<Self> {
            Q80Matrix::from_gguf_bytes(bytes, n, k)
        }
        fn to_gguf(&self) -> Vec<u8> {
            self.data.clone()
        }
        fn concat(parts: &[Self]) -> Result<Self> {
            Q80Matrix::concat_rows(&parts.iter().collect::<Vec<_>>())
        }
        fn dims(&self) -> (usize, usize) {
            (self.n, self.k)
        }
        fn storage(&self) -> usize {
            self.storage_bytes()
        }
        fn dequant(&self, i: usize) -> Vec<f32> {
            let mut row = vec![0f32; self.k];
            self.dequantize_row_into(i, &mut row).unwrap();
            row
        }
        fn prepare(&self, x: &[f32], m: usize) -> Result<Q8Acts> {
            Q80Matrix::prepare(self, x, m)
        }
        fn run(&self, a: &Q8Acts, rows: std::ops::Range<usize>, out: &mut [f32], ld: usize) -> Result<()> {
            Q80Matrix::run(self, a, rows, out, ld)
        }
        fn run_scalar(&self, a: &Q8Acts, rows: std::ops::Range<usize>, out: &mut [f32], ld: usize) -> Result<()> {
            Q80Matrix::run_scalar(self, a, rows, out, ld)
        }
        fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
            Q80Matrix::matmul(self, x, m, out)
        }
        #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
        fn run_on(
            &self,
            tier: crate::backend::x86::Tier,
            a: &Q8Acts,
            rows: std::ops::Range<usize>,
            out: &mut [f32],
            ld: usize,
        ) -> Result<()> {
            Q80Matrix::run_on(self, Some(tier), a, rows, out, ld)
        }
    }

    /// Column counts that are not multiples of 256: there candle runs its own dot product on
    /// every x86 tier (it repacks Q8_0 for AVX512-VNNI otherwise, with other activations).
    const CASES: [Case; 5] = [
        Case { n: 13, k: 32 },
        Case { n: 29, k: 224 },
        Case { n: 33, k: 672 },
        Case { n: 70, k: 896 },
        Case { n: 9, k: 1568 },
    ];

    #[test]
    fn q8_0_matches_candle_simd_and_scalar() {
        testutil::matches_candle::<Q80Matrix>(&CASES);
    }

    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    #[test]
    fn matches_candle_bit_for_bit_for_any_row_count() {
        for (n, k) in [(200, 576), (37, 896)] {
            let (bytes, _) = testutil::weights(GgmlDType::Q8_0, n, k, 1);
            let ours = Q80Matrix::from_gguf_bytes(&bytes[..], n, k).unwrap();
            for m in [1, 2, 3, 4, 5, 8, 9, 17] {
                let x = testutil::activations(m, k, 7 + m as u64);
                let want = testutil::candle_matmul(GgmlDType::Q8_0, &bytes, n, k, &x, m);
                // candle's AVX2 arithmetic, per (row, output); every tier gives the AVX2 bits.
                let mut got = vec![0f32; m * n];
                ours.matmul(&x, m, &mut got).unwrap();
                assert!(got == want, "{}, m = {m}", crate::backend::x86::tier());
            }
        }
    }

    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    #[test]
    fn q8_0_tiers_give_the_avx2_bits() {
        testutil::tiers_agree::<Q80Matrix>(&CASES);
    }

    #[test]
    fn q8_0_rows_dequantize_like_candle() {
        testutil::lossless::<Q80Matrix>(&CASES);
        let ours = Q80Matrix::from_gguf_bytes(&testutil::weights(GgmlDType::Q8_0, 5, 64, 3).0[..], 5, 64).unwrap();
        let mut row = vec![0f32; 64];
        assert!(ours.dequantize_row_into(5, &mut row).is_err());
        assert!(ours.dequantize_row_into(0, &mut row[1..]).is_err());
    }

    #[test]
    fn q8_0_row_ranges_and_concat() {
        testutil::ranges_and_concat::<Q80Matrix>(896);
    }

    #[test]
    fn q8_0_bad_inputs_are_errors() {
        testutil::bad_inputs::<Q80Matrix>(32, 34);
    }
}
