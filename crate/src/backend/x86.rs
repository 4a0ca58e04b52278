//! The x86 kernels' three tiers, chosen at run time from what the CPU has: AVX2 (the build's
//! baseline, x86-64-v3); AVX-VNNI (Intel since Alder Lake and Sapphire Rapids, AMD since Zen 5);
//! and AVX-512 (BW, DQ, VL and VNNI, on top of AVX-VNNI: Sapphire Rapids, Zen 5).
//!
//! AVX2 multiplies bytes with `maddubs` (neighbouring products added in i16) and widens with
//! `madd` (pairs of those added in i32); `vpdpbusd` does both at once and adds into an i32
//! accumulator. Each i32 lane ends up with the same four products either way, and our AVX2
//! kernels never saturate their i16 sums, so both tiers give the same integers and, with the
//! float steps unchanged, the same bits (tested per format). What VNNI saves is instructions
//! per activation row: the second Amulet context and a prefill's rows.
//!
//! The AVX-512 tier halves them again, and keeps the bits: each 512-bit register holds two
//! 256-bit ones that AVX2 would have added into the same i32 lanes anyway (Q4_1, Q4_K, Q5_0,
//! Q6_K: integer sums are exact in any order), or the same block for two activation rows, each half
//! doing that row's AVX2 float steps (Q8_0). Attention's two-head loops use it too (attend.rs).
//!
//! Every kernel takes the tier as const parameters. Q6_K's AVX-VNNI tier runs its AVX2 body
//! (its scales differ between the two i16 halves of an i32 lane, which `vpdpbusd` cannot keep
//! apart); its AVX-512 tier does AVX2's `maddubs` and `madd` on two registers at once.

use core::arch::x86_64::*;
use std::ops::Range;

use super::rows::{self, Dot};
use crate::error::{AmuletError, Result};

/// An x86 kernel tier, slowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tier {
    Avx2,
    AvxVnni,
    Avx512,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Avx2, Tier::AvxVnni, Tier::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Tier::Avx2 => "avx2",
            Tier::AvxVnni => "avx-vnni",
            Tier::Avx512 => "avx512-vnni",
        }
    }

    /// Whether this CPU runs the tier.
    pub fn here(self) -> bool {
        self <= best()
    }
}

/// The best tier this CPU has (read once).
pub fn best() -> Tier {
    static BEST: std::sync::OnceLock<Tier> = std::sync::OnceLock::new();
    *BEST.get_or_init(|| {
        use std::arch::is_x86_feature_detected as has;
        if !has!("avxvnni") {
            Tier::Avx2
        } else if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") && has!("avx512vnni") {
            Tier::Avx512
        } else {
            Tier::AvxVnni
        }
    })
}

/// The tier the kernels run in on this CPU (`amulet bench` prints it).
pub fn tier() -> &'static str {
    best().name()
}

/// `rows::run` compiled with AVX-VNNI, so that a kernel's `dot` inlines `vpdpbusd`.
///
/// # Safety
/// The CPU has AVX-VNNI.
#[target_feature(enable = "avxvnni")]
pub(crate) unsafe fn run_vnni<D: Dot>(what: &str, d: &D, rows: Range<usize>, out: &mut [f32], ld: usize) -> Result<()> {
    rows::run(what, d, rows, out, ld)
}

/// `rows::run` compiled with AVX-512 as well.
///
/// # Safety
/// The CPU has the `Tier::Avx512` features.
#[target_feature(enable = "avxvnni,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
pub(crate) unsafe fn run_avx512<D: Dot>(
    what: &str,
    d: &D,
    rows: Range<usize>,
    out: &mut [f32],
    ld: usize,
) -> Result<()> {
    rows::run(what, d, rows, out, ld)
}

/// The tier to run: `Some` as asked, `None` this CPU's best. Asking for a tier the CPU lacks is
/// an error, not an illegal instruction.
pub(crate) fn pick(what: &str, tier: Option<Tier>) -> Result<Tier> {
    match tier {
        Some(t) if !t.here() => Err(AmuletError::Compute(format!("{what}: this CPU has no {}", t.name()))),
        Some(t) => Ok(t),
        None => Ok(best()),
    }
}

/// A kernel on the tier `pick` chooses.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_tier<A: Dot, V: Dot, W: Dot>(
    what: &str,
    tier: Option<Tier>,
    avx2: A,
    vnni: V,
    avx512: W,
    rows: Range<usize>,
    out: &mut [f32],
    ld: usize,
) -> Result<()> {
    match pick(what, tier)? {
        // SAFETY: `pick` chose only a tier the CPU has.
        Tier::Avx512 => unsafe { run_avx512(what, &avx512, rows, out, ld) },
        Tier::AvxVnni => unsafe { run_vnni(what, &vnni, rows, out, ld) },
        Tier::Avx2 => rows::run(what, &avx2, rows, out, ld),
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

/// `dot_bytes::<true, _>` over the 2N 256-bit halves of `u` (and of `s(j)`), on 512-bit
/// registers: the same i32 lanes, since integer sums do not depend on their order.
///
/// # Safety
/// The CPU has the `Tier::Avx512` features (and the caller is inlined where they are enabled).
#[inline(always)]
pub(crate) unsafe fn dot_pairs<const N: usize>(u: &[__m512i; N], s: impl Fn(usize) -> __m512i) -> __m256i {
    let mut acc = _mm512_setzero_si512();
    for (j, &u) in u.iter().enumerate() {
        acc = _mm512_dpbusd_epi32(acc, u, s(j));
    }
    _mm256_add_epi32(_mm512_castsi512_si256(acc), _mm512_extracti64x4_epi64::<1>(acc))
}

/// The 64 nibbles of `v` as bytes: the low nibbles in the low half, the high ones in the high
/// half (the order in which Q4_1 and Q4_K units unpack into two 256-bit registers).
#[inline(always)]
pub(crate) unsafe fn nibbles(v: __m256i) -> __m512i {
    let v = _mm512_srlv_epi64(_mm512_broadcast_i64x4(v), _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4));
    _mm512_and_si512(v, _mm512_set1_epi8(0x0F))
}

/// Two 256-bit registers as one 512-bit one (`a` the low half).
#[inline(always)]
pub(crate) unsafe fn join(a: __m256i, b: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(a), b)
}

/// candle's `hsum_float_8`: the eight lanes summed in its order (the last step of every kernel
/// but Q4_1's, which adds its tail units' sums in the middle of its own).
#[inline(always)]
pub(crate) unsafe fn hsum8(x: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_extractf128_ps::<1>(x), _mm256_castps256_ps128(x));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
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
