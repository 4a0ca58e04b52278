//! The x86 kernels' two tiers: AVX2 (the build's baseline, x86-64-v3) and AVX-VNNI, chosen at
//! run time where the CPU has it (Intel since Alder Lake and Sapphire Rapids, AMD since Zen 5).
//!
//! AVX2 multiplies bytes with `maddubs` (neighbouring products added in i16) and widens with
//! `madd` (pairs of those added in i32); `vpdpbusd` does both at once and adds into an i32
//! accumulator. Each i32 lane ends up with the same four products either way, and our AVX2
//! kernels never saturate their i16 sums, so both tiers give the same integers and, with the
//! float steps unchanged, the same bits (tested per format). What VNNI saves is instructions
//! per activation row: the second Amulet context and a prefill's rows.
//!
//! Every kernel takes the tier as a const parameter; Q6_K's ignores it (its scales differ
//! between the two i16 halves of an i32 lane, which `vpdpbusd` cannot keep apart).

use core::arch::x86_64::*;
use std::ops::Range;

use super::rows::{self, Dot};
use crate::error::Result;

/// Whether this CPU has AVX-VNNI (read once).
pub(crate) fn vnni() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| std::arch::is_x86_feature_detected!("avxvnni"))
}

/// The tier the kernels run in on this CPU (`amulet bench` prints it).
pub fn tier() -> &'static str {
    if vnni() {
        "avx-vnni"
    } else {
        "avx2"
    }
}

/// `rows::run` compiled with AVX-VNNI, so that a kernel's `dot` inlines `vpdpbusd`.
///
/// # Safety
/// The CPU has AVX-VNNI (`vnni()`).
#[target_feature(enable = "avxvnni")]
pub(crate) unsafe fn run_vnni<D: Dot>(what: &str, d: &D, rows: Range<usize>, out: &mut [f32], ld: usize) -> Result<()> {
    rows::run(what, d, rows, out, ld)
}

/// Whether to run the VNNI tier: `Some(vnni)` as asked, `None` this CPU's best. Asking for
/// VNNI where the CPU has none is an error, not an illegal instruction.
pub(crate) fn pick(what: &str, tier: Option<bool>) -> Result<bool> {
    match tier {
        Some(true) if !vnni() => Err(crate::error::AmuletError::Compute(format!("{what}: this CPU has no AVX-VNNI"))),
        Some(v) => Ok(v),
        None => Ok(vnni()),
    }
}

/// A kernel on the tier `pick` chooses.
pub(crate) fn run_tier<A: Dot, V: Dot>(
    what: &str,
    tier: Option<bool>,
    avx2: A,
    vnni_kernel: V,
    rows: Range<usize>,
    out: &mut [f32],
    ld: usize,
) -> Result<()> {
    if pick(what, tier)? {
        // SAFETY: `pick` chose VNNI only where the CPU has it.
        unsafe { run_vnni(what, &vnni_kernel, rows, out, ld) }
    } else {
        rows::run(what, &avx2, rows, out, ld)
    }
}

/// i32 lane `l` of the result: the sum over `j < N` of the products of bytes `4l..4l + 4` of
/// `u[j]` (unsigned) and of `s(j)` (signed). With AVX2 the products go through i16 in one sum
/// of all `N`: the caller keeps it below `i16::MAX`.
#[inline(always)]
pub(crate) unsafe fn dot_bytes<const VNNI: bool, const N: usize>(
    u: &[__m256i; N],
    s: impl Fn(usize) -> __m256i,
) -> __m256i {
    if VNNI {
        // One chain: with two or four accumulators a row, eight activation rows (a prefill)
        // ran out of registers and the Q4_K and Q5_0 kernels fell behind AVX2 (measured).
        let mut acc = _mm256_setzero_si256();
        for (j, &u) in u.iter().enumerate() {
            acc = _mm256_dpbusd_avx_epi32(acc, u, s(j));
        }
        acc
    } else {
        _mm256_madd_epi16(sum_i16(u, s), _mm256_set1_epi16(1))
    }
}

/// AVX2's half of `dot_bytes`: the `maddubs` products of every `j` added in i16 lanes, as a
/// balanced tree.
#[inline(always)]
pub(crate) unsafe fn sum_i16<const N: usize>(u: &[__m256i; N], s: impl Fn(usize) -> __m256i) -> __m256i {
    let mut p: [__m256i; N] = std::array::from_fn(|j| _mm256_maddubs_epi16(u[j], s(j)));
    let mut n = N;
    while n > 1 {
        for j in 0..n / 2 {
            p[j] = _mm256_add_epi16(p[2 * j], p[2 * j + 1]);
        }
        if n % 2 == 1 {
            p[n / 2] = p[n - 1];
        }
        n = n.div_ceil(2);
    }
    p[0]
}

/// The f16 at `p` as f32 in all 8 lanes. Converted as a scalar, LLVM inserts the bits into
/// whatever register is at hand (`vpinsrw`), and a VNNI kernel then waited on the previous
/// block's accumulator there at every block; a broadcast load starts from nothing.
#[inline(always)]
pub(crate) unsafe fn f16_splat(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi16(std::ptr::read_unaligned(p as *const i16)))
}
