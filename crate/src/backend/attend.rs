//! The inner loops of CPU attention, in SIMD: one query head's dot products with the cached
//! keys, eight positions at a time; the scores' scale and maximum (their exponentials are
//! `backend::exp`'s); the probability-weighted sum of the cached values. Each
//! keeps every output's own chain of operations in the plain loops' order (`scalar` below:
//! fused multiply-adds where the build has FMA, as candle's gemm; `a * b + c` in wasm, which
//! has none), so the SIMD forms give the same bits; crate/tests/attend.rs compares them.
//!
//! Before (plain loops left to the compiler) a decode step of SmolLM2 at a 1,700-token
//! context spent most of its time here: the value sum read and wrote its output once per
//! position, the key loop vectorized across the wrong axis, and wasm called `expf` per score.

/// Positions per key block: the cache stores keys `[block][kv_head][head_dim][lane]`.
pub const LANES: usize = 8;

/// Dot products of `q` with the keys of `out.len()` consecutive key blocks, each
/// `[q.len()][LANES]` floats, the first at `k[0]` and each next `stride` floats on:
/// `out[b][i]` for position `LANES * b + i`, one chain of `fma(q[j], key[j], acc)` over `j`.
/// Panics if `k` is shorter than the blocks.
pub fn dot_blocks(q: &[f32], k: &[f32], stride: usize, out: &mut [[f32; LANES]]) {
    check_keys(q, k, stride, out);
    // SAFETY: every block read lies in `k`, checked above.
    unsafe { simd::dot_blocks(q, k.as_ptr(), stride, out) }
}

fn check_keys(q: &[f32], k: &[f32], stride: usize, out: &[[f32; LANES]]) {
    if let Some(n) = out.len().checked_sub(1) {
        assert!(k.len() >= n * stride + q.len() * LANES, "dot_blocks: {} keys for {} blocks", k.len(), out.len());
    }
}

/// `out[d] += sum over i of w[i] * v[i * stride + d]`, for each `d` one chain of `fma` over
/// `i` in order that goes on from `out[d]`: a sum taken in chunks of rows gives the bits of
/// one taken whole (from zeros: the plain sum). Panics if `v` is shorter than the rows.
pub fn weighted_sum(w: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
    check_values(w, v, stride, out);
    // SAFETY: every row read lies in `v`, checked above.
    unsafe { simd::weighted_sum(w, v.as_ptr(), stride, out) }
}

fn check_values(w: &[f32], v: &[f32], stride: usize, out: &[f32]) {
    if let Some(n) = w.len().checked_sub(1) {
        assert!(v.len() >= n * stride + out.len(), "weighted_sum: {} values for {} rows", v.len(), w.len());
    }
}

/// `dot_blocks` for two query heads of one kv head at once (`out[h]` takes head `q[h]`): the
/// same bits as two calls, and on the x86 AVX-512 tier half the multiply-adds (one 512-bit
/// register holds both heads' lanes of a block). Panics if `k` is shorter than the blocks or
/// the heads' sizes differ.
pub fn dot_blocks2(q: [&[f32]; 2], k: &[f32], stride: usize, out: [&mut [[f32; LANES]]; 2]) {
    assert!(q[0].len() == q[1].len() && out[0].len() == out[1].len(), "dot_blocks2: heads of different sizes");
    check_keys(q[0], k, stride, out[0]);
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    if wide::here() {
        // SAFETY: the CPU has the tier's features; every block read lies in `k`, checked above.
        return unsafe { wide::dot_blocks2(q, k.as_ptr(), stride, out) };
    }
    let [o0, o1] = out;
    // SAFETY: as in `dot_blocks`.
    unsafe {
        simd::dot_blocks(q[0], k.as_ptr(), stride, o0);
        simd::dot_blocks(q[1], k.as_ptr(), stride, o1);
    }
}

/// `weighted_sum` for two heads' weights over the same values (`out[h]` takes `w[h]`): the
/// same bits as two calls, and on the x86 AVX-512 tier 16-float registers, both heads' chains
/// keeping the multiply-add pipes busy. Panics if `v` is shorter than the rows or the heads'
/// sizes differ.
pub fn weighted_sum2(w: [&[f32]; 2], v: &[f32], stride: usize, out: [&mut [f32]; 2]) {
    assert!(w[0].len() == w[1].len() && out[0].len() == out[1].len(), "weighted_sum2: heads of different sizes");
    check_values(w[0], v, stride, out[0]);
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    if wide::here() {
        // SAFETY: the CPU has the tier's features; every row read lies in `v`, checked above.
        return unsafe { wide::weighted_sum2(w, v.as_ptr(), stride, out) };
    }
    let [o0, o1] = out;
    // SAFETY: as in `weighted_sum`.
    unsafe {
        simd::weighted_sum(w[0], v.as_ptr(), stride, o0);
        simd::weighted_sum(w[1], v.as_ptr(), stride, o1);
    }
}

/// Multiplies every score by `scale` and returns the largest (NaN scores are passed over, as
/// `f32::max` does; -inf when there are none).
pub fn scale_max(scores: &mut [f32], scale: f32) -> f32 {
    simd::scale_max(scores, scale)
}

/// A fused multiply-add where the hardware has one (candle's gemm uses it); plain a*b+c on
/// targets without FMA, where `mul_add` would fall back to a slow software routine.
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(target_feature = "fma")]
    {
        a.mul_add(b, c)
    }
    #[cfg(not(target_feature = "fma"))]
    {
        a * b + c
    }
}

/// The plain loops, as the reference for tests of the SIMD forms (in wasm too).
#[doc(hidden)]
pub mod plain {
    use super::{check_keys, check_values, scalar, LANES};

    pub fn dot_blocks(q: &[f32], k: &[f32], stride: usize, out: &mut [[f32; LANES]]) {
        check_keys(q, k, stride, out);
        // SAFETY: every block read lies in `k`, checked above.
        unsafe { scalar::dot_blocks(q, k.as_ptr(), stride, out) }
    }

    pub fn weighted_sum(w: &[f32], v: &[f32], stride: usize, out: &mut [f32]) {
        check_values(w, v, stride, out);
        // SAFETY: every row read lies in `v`, checked above.
        unsafe { scalar::weighted_sum(w, v.as_ptr(), stride, out) }
    }

    pub use scalar::scale_max;
}

/// The plain loops: the build's form where it has no SIMD one.
#[allow(dead_code)]
mod scalar {
    use super::{fma, LANES};

    /// # Safety
    /// `k` holds `out.len()` blocks of `q.len() * LANES` floats, `stride` apart.
    pub unsafe fn dot_blocks(q: &[f32], k: *const f32, stride: usize, out: &mut [[f32; LANES]]) {
        for (b, o) in out.iter_mut().enumerate() {
            let kb = std::slice::from_raw_parts(k.add(b * stride), q.len() * LANES);
            *o = [0.0; LANES];
            for (j, &qj) in q.iter().enumerate() {
                for (i, acc) in o.iter_mut().enumerate() {
                    *acc = fma(qj, kb[j * LANES + i], *acc);
                }
            }
        }
    }

    pub fn scale_max(scores: &mut [f32], scale: f32) -> f32 {
        let mut max = f32::NEG_INFINITY;
        for x in scores.iter_mut() {
            *x *= scale;
            max = max.max(*x);
        }
        max
    }

    /// # Safety
    /// `v` holds `w.len()` rows of `out.len()` floats, `stride` apart.
    pub unsafe fn weighted_sum(w: &[f32], v: *const f32, stride: usize, out: &mut [f32]) {
        for (i, &wi) in w.iter().enumerate() {
            let row = std::slice::from_raw_parts(v.add(i * stride), out.len());
            for (o, &x) in out.iter_mut().zip(row) {
                *o = fma(wi, x, *o);
            }
        }
    }
}

#[cfg(not(any(
    all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"),
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
use scalar as simd;

/// Runs `$call` with the const `$G` equal to `$n`, for the counts listed (none for others):
/// a run-time count of key blocks, the last ones of a chunk, to a const generic, so that
/// they are scored together in one pass.
#[allow(unused_macros)]
macro_rules! for_count {
    ($n:expr, [$($g:literal)*], $G:ident => $call:expr) => {
        match $n {
            $($g => {
                const $G: usize = $g;
                $call
            })*
            _ => {}
        }
    };
}

/// Key blocks scored together by the SIMD forms: one chain of multiply-adds each, `GROUP`
/// chains in flight (x86: 8 of its 16 registers; wasm: a block takes two registers there).
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
const GROUP: usize = 8;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
const GROUP: usize = 4;

/// `dot_blocks` of the SIMD forms: `GROUP` blocks at a time, then the rest together in one
/// pass (one block at a time, each pass was a single chain of the multiply-add's latency:
/// half the time of a 110-position head went to its last few blocks).
///
/// # Safety
/// As `scalar::dot_blocks`.
#[cfg(any(
    all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"),
    all(target_arch = "wasm32", target_feature = "simd128")
))]
unsafe fn by_groups(q: &[f32], k: *const f32, stride: usize, out: &mut [[f32; LANES]]) {
    let (groups, rest) = out.as_chunks_mut::<GROUP>();
    for (i, o) in groups.iter_mut().enumerate() {
        simd::score(q, k.add(i * GROUP * stride), stride, o);
    }
    let k = k.add(groups.len() * GROUP * stride);
    #[cfg(target_arch = "x86_64")]
    for_count!(rest.len(), [1 2 3 4 5 6 7], G => simd::score::<G>(q, k, stride, rest.try_into().expect("G blocks")));
    #[cfg(target_arch = "wasm32")]
    for_count!(rest.len(), [1 2 3], G => simd::score::<G>(q, k, stride, rest.try_into().expect("G blocks")));
}

/// AVX2 + FMA: `_mm256_fmadd_ps` rounds once, as `f32::mul_add` does.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
mod simd {
    use super::LANES;
    use std::arch::x86_64::*;

    /// Output floats summed together: 8 registers, one chain each.
    const CHUNK: usize = 64;

    pub(super) use super::by_groups as dot_blocks;

    /// `G` blocks, one chain each per lane.
    #[inline(always)]
    pub unsafe fn score<const G: usize>(q: &[f32], k: *const f32, stride: usize, out: &mut [[f32; LANES]; G]) {
        let mut acc = [_mm256_setzero_ps(); G];
        for (j, &qj) in q.iter().enumerate() {
            let qv = _mm256_set1_ps(qj);
            for (g, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k.add(g * stride + j * LANES)), *acc);
            }
        }
        for (o, acc) in out.iter_mut().zip(acc) {
            _mm256_storeu_ps(o.as_mut_ptr(), acc);
        }
    }

    /// `max_ps(x, m)` returns `m` when `x` is NaN, and `m` never is one: `f32::max`'s answer.
    pub fn scale_max(scores: &mut [f32], scale: f32) -> f32 {
        let (blocks, rest) = scores.as_chunks_mut::<8>();
        // SAFETY: AVX2 is enabled for this build (cfg above); each block is 8 floats.
        let max = unsafe {
            let (sv, mut m) = (_mm256_set1_ps(scale), _mm256_set1_ps(f32::NEG_INFINITY));
            for b in blocks.iter_mut() {
                let x = _mm256_mul_ps(_mm256_loadu_ps(b.as_ptr()), sv);
                _mm256_storeu_ps(b.as_mut_ptr(), x);
                m = _mm256_max_ps(x, m);
            }
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), m);
            lanes.into_iter().fold(f32::NEG_INFINITY, f32::max)
        };
        max.max(super::scalar::scale_max(rest, scale))
    }

    /// # Safety
    /// As `scalar::weighted_sum`.
    pub unsafe fn weighted_sum(w: &[f32], v: *const f32, stride: usize, out: &mut [f32]) {
        let mut d = 0;
        while d + CHUNK <= out.len() {
            let mut acc: [__m256; CHUNK / 8] = std::array::from_fn(|c| _mm256_loadu_ps(out.as_ptr().add(d + 8 * c)));
            for (i, &wi) in w.iter().enumerate() {
                let (wv, row) = (_mm256_set1_ps(wi), v.add(i * stride + d));
                for (c, acc) in acc.iter_mut().enumerate() {
                    *acc = _mm256_fmadd_ps(wv, _mm256_loadu_ps(row.add(8 * c)), *acc);
                }
            }
            for (c, acc) in acc.iter().enumerate() {
                _mm256_storeu_ps(out.as_mut_ptr().add(d + 8 * c), *acc);
            }
            d += CHUNK;
        }
        if d < out.len() {
            super::scalar::weighted_sum(w, v.add(d), stride, &mut out[d..]);
        }
    }
}

/// The x86 AVX-512 tier's forms of the two-head loops (backend/x86.rs chooses it at run time):
/// each lane's chain of `_mm512_fmadd_ps` is the AVX2 lane's, so the same bits.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
mod wide {
    use super::{scalar, LANES};
    use std::arch::x86_64::*;

    pub fn here() -> bool {
        crate::backend::x86::Tier::Avx512.here()
    }

    /// # Safety
    /// The CPU has the AVX-512 tier; `k` holds `out[0].len()` blocks of `q[0].len() * LANES`
    /// floats, `stride` apart; both heads have the same sizes.
    #[target_feature(enable = "avx512f,avx512dq,avx512vl")]
    pub unsafe fn dot_blocks2(q: [&[f32]; 2], k: *const f32, stride: usize, mut out: [&mut [[f32; LANES]]; 2]) {
        let n = out[0].len();
        let mut b = 0;
        // Eight blocks at a time (eight independent chains hide the multiply-add latency),
        // then the rest in one pass.
        while b + 8 <= n {
            score2::<8>(q, k.add(b * stride), stride, &mut out, b);
            b += 8;
        }
        let k = k.add(b * stride);
        for_count!(n - b, [1 2 3 4 5 6 7], G => score2::<G>(q, k, stride, &mut out, b));
    }

    /// Blocks `b0..b0 + G`: the low half of each register head 0's lanes, the high half head 1's.
    #[inline(always)]
    unsafe fn score2<const G: usize>(
        q: [&[f32]; 2],
        k: *const f32,
        stride: usize,
        out: &mut [&mut [[f32; LANES]]; 2],
        b0: usize,
    ) {
        let mut acc = [_mm512_setzero_ps(); G];
        for (j, (&q0, &q1)) in q[0].iter().zip(q[1]).enumerate() {
            let qv = _mm512_insertf32x8::<1>(_mm512_set1_ps(q0), _mm256_set1_ps(q1));
            for (g, acc) in acc.iter_mut().enumerate() {
                let kv = _mm512_broadcast_f32x8(_mm256_loadu_ps(k.add(g * stride + j * LANES)));
                *acc = _mm512_fmadd_ps(qv, kv, *acc);
            }
        }
        for (g, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(out[0][b0 + g].as_mut_ptr(), _mm512_castps512_ps256(*acc));
            _mm256_storeu_ps(out[1][b0 + g].as_mut_ptr(), _mm512_extractf32x8_ps::<1>(*acc));
        }
    }

    /// Output floats a head sums together: four registers, one chain each (eight with both).
    const CHUNK: usize = 64;

    /// # Safety
    /// The CPU has the AVX-512 tier; `v` holds `w[0].len()` rows of `out[0].len()` floats,
    /// `stride` apart; both heads have the same sizes.
    #[target_feature(enable = "avx512f,avx512dq,avx512vl")]
    pub unsafe fn weighted_sum2(w: [&[f32]; 2], v: *const f32, stride: usize, out: [&mut [f32]; 2]) {
        let [o0, o1] = out;
        let mut d = 0;
        while d + CHUNK <= o0.len() {
            let load = |o: &[f32]| -> [__m512; CHUNK / 16] {
                std::array::from_fn(|c| _mm512_loadu_ps(o.as_ptr().add(d + 16 * c)))
            };
            let (mut a0, mut a1) = (load(o0), load(o1));
            for (i, (&w0, &w1)) in w[0].iter().zip(w[1]).enumerate() {
                let (x0, x1, row) = (_mm512_set1_ps(w0), _mm512_set1_ps(w1), v.add(i * stride + d));
                for c in 0..CHUNK / 16 {
                    let x = _mm512_loadu_ps(row.add(16 * c));
                    a0[c] = _mm512_fmadd_ps(x0, x, a0[c]);
                    a1[c] = _mm512_fmadd_ps(x1, x, a1[c]);
                }
            }
            for c in 0..CHUNK / 16 {
                _mm512_storeu_ps(o0.as_mut_ptr().add(d + 16 * c), a0[c]);
                _mm512_storeu_ps(o1.as_mut_ptr().add(d + 16 * c), a1[c]);
            }
            d += CHUNK;
        }
        if d < o0.len() {
            scalar::weighted_sum(w[0], v.add(d), stride, &mut o0[d..]);
            scalar::weighted_sum(w[1], v.add(d), stride, &mut o1[d..]);
        }
    }
}

/// simd128: no FMA in wasm, so `a * b + c` in two roundings, as the plain loops there.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd {
    use super::LANES;
    use core::arch::wasm32::*;

    /// Output floats summed together: 8 registers (V8 on x64 has 16).
    const CHUNK: usize = 32;

    #[inline(always)]
    unsafe fn madd(a: v128, b: *const f32, c: v128) -> v128 {
        f32x4_add(f32x4_mul(a, v128_load(b as *const v128)), c)
    }

    pub(super) use super::by_groups as dot_blocks;

    /// `G` blocks, two registers each, one chain per lane.
    #[inline(always)]
    pub unsafe fn score<const G: usize>(q: &[f32], k: *const f32, stride: usize, out: &mut [[f32; LANES]; G]) {
        let mut acc = [[f32x4_splat(0.0); 2]; G];
        for (j, &qj) in q.iter().enumerate() {
            let qv = f32x4_splat(qj);
            for (g, acc) in acc.iter_mut().enumerate() {
                let p = k.add(g * stride + j * LANES);
                *acc = [madd(qv, p, acc[0]), madd(qv, p.add(4), acc[1])];
            }
        }
        for (o, acc) in out.iter_mut().zip(acc) {
            v128_store(o.as_mut_ptr() as *mut v128, acc[0]);
            v128_store(o.as_mut_ptr().add(4) as *mut v128, acc[1]);
        }
    }

    /// `pmax(m, x)` is `m < x ? x : m`: `m` when `x` is NaN, and `m` never is one.
    pub fn scale_max(scores: &mut [f32], scale: f32) -> f32 {
        let (blocks, rest) = scores.as_chunks_mut::<4>();
        // SAFETY: simd128 is enabled for this build (cfg above); each block is 4 floats.
        let max = unsafe {
            let (sv, mut m) = (f32x4_splat(scale), f32x4_splat(f32::NEG_INFINITY));
            for b in blocks.iter_mut() {
                let x = f32x4_mul(v128_load(b.as_ptr() as *const v128), sv);
                v128_store(b.as_mut_ptr() as *mut v128, x);
                m = f32x4_pmax(m, x);
            }
            [
                f32x4_extract_lane::<0>(m),
                f32x4_extract_lane::<1>(m),
                f32x4_extract_lane::<2>(m),
                f32x4_extract_lane::<3>(m),
            ]
            .into_iter()
            .fold(f32::NEG_INFINITY, f32::max)
        };
        max.max(super::scalar::scale_max(rest, scale))
    }

    /// # Safety
    /// As `scalar::weighted_sum`.
    pub unsafe fn weighted_sum(w: &[f32], v: *const f32, stride: usize, out: &mut [f32]) {
        let mut d = 0;
        while d + CHUNK <= out.len() {
            let mut acc: [v128; CHUNK / 4] =
                core::array::from_fn(|c| v128_load(out.as_ptr().add(d + 4 * c) as *const v128));
            for (i, &wi) in w.iter().enumerate() {
                let (wv, row) = (f32x4_splat(wi), v.add(i * stride + d));
                for (c, acc) in acc.iter_mut().enumerate() {
                    *acc = madd(wv, row.add(4 * c), *acc);
                }
            }
            for (c, acc) in acc.iter().enumerate() {
                v128_store(out.as_mut_ptr().add(d + 4 * c) as *mut v128, *acc);
            }
            d += CHUNK;
        }
        if d < out.len() {
            super::scalar::weighted_sum(w, v.add(d), stride, &mut out[d..]);
        }
    }
}
