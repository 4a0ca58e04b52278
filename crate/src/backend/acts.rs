//! Activation rows quantized once per matmul, then shared by every weight row, every thread
//! that takes a share of the output rows, and every matrix of the same activation kind (the
//! q/k/v parts of a layer may be of different weight types).
//!
//! Two kinds, each quantized exactly as candle quantizes activations for the weight types
//! that take it, so our products carry candle's quantization error and no other:
//! - `Q8Acts`: Q8_0 blocks of 32 (`d = amax / 127` rounded to f16, `q = round(x / d)`), for
//!   Q5_0 and Q8_0 weights (candle's `BlockQ8_0::from_float`);
//! - `Q8KActs`: Q8_K super-blocks of 256 (`d = max / -127` in f32 where `max` is the first
//!   value of largest magnitude, `q` clamped to i8, and the 16 sums of 16 quants), for Q4_K
//!   and Q6_K weights (candle's `BlockQ8K::from_float`).
//!
//! Quants are stored in 32-value lanes (`Lane`, on a 64-byte aligned base: `Lanes`), lined up
//! with the registers of the weight kernels (Q4_1's own Q8_1 activations too, q4_1.rs): i8
//! where the kernel multiplies bytes (AVX2 `maddubs`, wasm's relaxed-SIMD
//! `relaxed_dot_i8x16_i7x16`, the scalar path), i16 on plain simd128 wasm, which has no byte
//! products and widens once here instead of once per weight row. Per activation row:
//! - `Q8Acts::nat`: one lane per block, in element order (the Q8_0 kernel, the Q5_0 tail);
//! - `Q8Acts::grp`: 8 lanes per group of 8 blocks, lane `j` value `4b + t` = element
//!   `4j + t` of block `b` (the Q5_0 kernel; see q5_0.rs), and where 4 to 7 blocks are left
//!   over, one more group slot whose first 4 blocks fill the lanes' first 16 values (Q5_0's
//!   half record, the rest zeros); then `sum16[b] = 16 * sum(q_b)`;
//! - `Q8KActs::q`: 8 lanes per super-block, lane `j` value `2b + t` = element `16b + 2j + t`
//!   (sub-block `b` of 16 values sits in the i16 lane `b` of a byte-pair product; see
//!   q4_k.rs and q6_k.rs), with `bsums[b]` the sum of sub-block `b`'s quants;
//! - x86 CPUs with AVX-512 only, `Q8Acts::upair` and `dpair` (the Q8_0 kernel's AVX-512 tier,
//!   which takes activation rows in pairs 2p, 2p + 1): per pair and block two lanes, row 2p's
//!   quants then row 2p + 1's, each plus 128 as unsigned bytes (`vpdpbusd` multiplies unsigned
//!   bytes by signed ones; q8_0.rs takes the 128s back out), and 16 floats, row 2p's `d` 8 times
//!   then row 2p + 1's, so that a pair is one 64-byte load of each (zeros for a missing row);
//! - relaxed-SIMD wasm only, `Q8Acts::wide`: `nat` widened to i16. The relaxed byte product
//!   takes one operand as 7-bit unsigned (0..127), and Q8_0's signed weights are not, so the
//!   Q8_0 kernel stays on simd128's i16 products in that build too (`Q8Acts::wide_lanes`).

use super::pool::{split, Shared};
use crate::error::{AmuletError, Result};
use half::f16;

/// Fewest Q8_0 activation rows, and Q8_K super-blocks, a thread quantizes: a prefill's split
/// over the pool's threads, a decode step's one or two rows stay inline (a hand-over would
/// cost more than they do).
const MIN_ROWS: usize = 16;
const MIN_SUPER_BLOCKS: usize = 64;

pub const QK8_0: usize = 32;
pub const QK_K: usize = 256;

/// What the lanes hold: bytes, but i16 on wasm without relaxed SIMD (see the header).
#[cfg(not(all(target_arch = "wasm32", not(target_feature = "relaxed-simd"))))]
pub type Q = i8;
#[cfg(all(target_arch = "wasm32", not(target_feature = "relaxed-simd")))]
pub type Q = i16;

/// Whether the Q8_0 activations also carry `nat` widened to i16 (see the header).
const WIDE: bool = cfg!(all(target_arch = "wasm32", target_feature = "relaxed-simd"));

/// 32 activations as i16 (the relaxed-SIMD build's `Q8Acts::wide`).
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub struct Wide(pub [i16; 32]);

/// 32 quantized activations, aligned for 256-bit loads.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub struct Lane(pub [Q; 32]);

const ZERO_LANE: Lane = Lane([0; 32]);

/// Lanes on a 64-byte aligned base (read as a slice of `Lane`), so that the AVX-512 kernels'
/// 64-byte loads of two neighbouring lanes never straddle a cache line: on a 32-byte aligned
/// base half the matmuls did, and eight-row passes over the 0.5B's down projection took
/// 0.93-1.00 of AVX2's time against 0.74-0.85 aligned (measured).
pub struct Lanes(Vec<LanePair>);

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct LanePair([Lane; 2]);

impl Lanes {
    pub(super) const fn new() -> Self {
        Lanes(Vec::new())
    }

    /// `n` zeroed lanes (a whole pair more where `n` is odd).
    pub(super) fn reset(&mut self, n: usize) {
        self.0.clear();
        self.0.resize(n.div_ceil(2), LanePair([ZERO_LANE; 2]));
    }
}

impl std::ops::Deref for Lanes {
    type Target = [Lane];
    fn deref(&self) -> &[Lane] {
        // SAFETY: a LanePair is two Lanes with no padding (64 bytes, Lane's 32-byte alignment
        // divides 64).
        unsafe { std::slice::from_raw_parts(self.0.as_ptr() as *const Lane, 2 * self.0.len()) }
    }
}

impl std::ops::DerefMut for Lanes {
    fn deref_mut(&mut self) -> &mut [Lane] {
        // SAFETY: as in `deref`, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr() as *mut Lane, 2 * self.0.len()) }
    }
}

/// The 16 sub-block sums of one Q8_K super-block.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub struct BSums(pub [i16; 16]);

/// 8 floats aligned for one 256-bit load.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub struct F8(pub [f32; 8]);

/// 16 floats aligned for one 512-bit load (`Q8Acts::dpair`).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct F16x(pub [f32; 16]);

/// Whether this CPU runs Q8_0's AVX-512 tier, which reads `Q8Acts::upair` and `dpair`.
fn pairs_here() -> bool {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    return super::x86::Tier::Avx512.here();
    #[allow(unreachable_code)]
    false
}

/// Q8_0 activations for Q5_0 and Q8_0 weights (layout in the module header).
pub struct Q8Acts {
    m: usize,
    k: usize,
    pub(super) nat: Vec<Lane>,
    pub(super) grp: Lanes,
    pub(super) d: Vec<f32>,
    pub(super) sum16: Vec<i32>,
    #[allow(dead_code)]
    pub(super) upair: Lanes,
    #[allow(dead_code)]
    pub(super) dpair: Vec<F16x>,
    #[allow(dead_code)]
    wide: Vec<Wide>,
}

/// Q8_K activations for Q4_K and Q6_K weights (layout in the module header).
pub struct Q8KActs {
    m: usize,
    k: usize,
    pub(super) q: Lanes,
    pub(super) d: Vec<f32>,
    pub(super) bsums: Vec<BSums>,
    /// Per super-block, the sums of its 8 sub-blocks of 32 times `d` (Q4_K's mins term).
    pub(super) bsxd: Vec<F8>,
}

/// Group slots per row of `Q8Acts::grp` for `nb` blocks: one per 8, and one for a half
/// group of 4 when 4 to 7 blocks are left over (Q5_0's records, q5_0.rs).
pub(super) const fn grp_slots(nb: usize) -> usize {
    nb / 8 + (nb % 8 >= 4) as usize
}

/// How many of a row's `nb` blocks `Q8Acts::grp` holds (whole groups, then a half one).
pub(super) const fn grouped_blocks(nb: usize) -> usize {
    8 * (nb / 8) + if nb % 8 >= 4 { 4 } else { 0 }
}

fn check_input(kind: &str, x: &[f32], m: usize, k: usize, block: usize) -> Result<()> {
    if !k.is_multiple_of(block) {
        return Err(AmuletError::Compute(format!("{kind} activations: {k} columns are not a multiple of {block}")));
    }
    if m.checked_mul(k) != Some(x.len()) {
        return Err(AmuletError::Compute(format!(
            "{kind} activations: {} values for {m} rows of {k} columns",
            x.len()
        )));
    }
    Ok(())
}

impl Default for Q8Acts {
    fn default() -> Self {
        Self::new()
    }
}

impl Q8Acts {
    pub const fn new() -> Self {
        Q8Acts {
            m: 0,
            k: 0,
            nat: Vec::new(),
            grp: Lanes::new(),
            d: Vec::new(),
            sum16: Vec::new(),
            upair: Lanes::new(),
            dpair: Vec::new(),
            wide: Vec::new(),
        }
    }

    /// Quantizes `m` rows of `k` values (row-major); buffers are reused across calls.
    pub fn quantize(&mut self, x: &[f32], m: usize, k: usize) -> Result<()> {
        check_input("Q8_0", x, m, k, QK8_0)?;
        let nb = k / QK8_0;
        let (slots, grouped) = (grp_slots(nb), grouped_blocks(nb));
        (self.m, self.k) = (m, k);
        self.nat.clear();
        self.nat.resize(m * nb, ZERO_LANE);
        self.grp.reset(m * slots * 8);
        self.d.clear();
        self.d.resize(m * nb, 0.0);
        self.sum16.clear();
        self.sum16.resize(m * nb, 0);
        self.wide.clear();
        self.wide.resize(if WIDE { m * nb } else { 0 }, Wide([0; 32]));
        // One row never takes the pairs (q8_0.rs).
        let pairs = if m > 1 && pairs_here() { m.div_ceil(2) * nb } else { 0 };
        self.upair.reset(2 * pairs);
        self.dpair.clear();
        self.dpair.resize(pairs, F16x([0.0; 16]));
        let (nat, grp, d, sum16) = (
            Shared::new(&mut self.nat),
            Shared::new(&mut self.grp[..]),
            Shared::new(&mut self.d),
            Shared::new(&mut self.sum16),
        );
        let wide = Shared::new(&mut self.wide);
        let upair = Shared::new(&mut self.upair[..]);
        // SAFETY: F16x is 16 f32s with no padding.
        let dpair = Shared::new(unsafe {
            std::slice::from_raw_parts_mut(self.dpair.as_mut_ptr() as *mut f32, 16 * self.dpair.len())
        });
        split(m, MIN_ROWS, |rows| {
            let (blocks, lanes) = (rows.start * nb..rows.end * nb, rows.start * slots * 8..rows.end * slots * 8);
            // SAFETY: the ranges of one split are disjoint rows, and each row's blocks and
            // group lanes are its own.
            let (nat, grp, d, sum16) = unsafe {
                (nat.slice(blocks.clone()), grp.slice(lanes), d.slice(blocks.clone()), sum16.slice(blocks.clone()))
            };
            let wide = if WIDE { unsafe { wide.slice(blocks.clone()) } } else { &mut [] };
            let mut q = [0i8; QK8_0];
            for (j, xb) in x[rows.start * k..rows.end * k].as_chunks::<QK8_0>().0.iter().enumerate() {
                let (dj, sum) = quantize_q8_0(xb, &mut q);
                d[j] = dj;
                sum16[j] = 16 * sum;
                let (r, b) = (j / nb, j % nb);
                for (o, &v) in nat[j].0.iter_mut().zip(q.iter()) {
                    *o = v as Q;
                }
                if WIDE {
                    for (o, &v) in wide[j].0.iter_mut().zip(q.iter()) {
                        *o = v as i16;
                    }
                }
                if pairs > 0 {
                    let row = rows.start + r;
                    let at = 2 * (row / 2 * nb + b) + row % 2;
                    // SAFETY: lane `at` and floats 8 * at.. are this row's half of its pair's
                    // block `b`, which no other row writes.
                    unsafe {
                        upair.set(at, Lane(q.map(|v| (v as u8 ^ 0x80) as Q)));
                        dpair.slice(8 * at..8 * at + 8).fill(dj);
                    }
                }
                if b < grouped {
                    let lanes = &mut grp[(r * slots + b / 8) * 8..][..8];
                    let bb = b % 8;
                    for (l, lane) in lanes.iter_mut().enumerate() {
                        for t in 0..4 {
                            lane.0[4 * bb + t] = q[4 * l + t] as Q;
                        }
                    }
                }
            }
        });
        Ok(())
    }

    pub fn rows(&self) -> usize {
        self.m
    }

    pub fn cols(&self) -> usize {
        self.k
    }

    /// `nat` as 32 i16 per block: `nat` itself on plain simd128, `wide` with relaxed SIMD.
    #[cfg(target_arch = "wasm32")]
    pub(super) fn wide_lanes(&self) -> *const [i16; 32] {
        if WIDE {
            self.wide.as_ptr() as *const [i16; 32]
        } else {
            self.nat.as_ptr() as *const [i16; 32]
        }
    }
}

impl Default for Q8KActs {
    fn default() -> Self {
        Self::new()
    }
}

impl Q8KActs {
    pub const fn new() -> Self {
        Q8KActs { m: 0, k: 0, q: Lanes::new(), d: Vec::new(), bsums: Vec::new(), bsxd: Vec::new() }
    }

    /// Quantizes `m` rows of `k` values (row-major); buffers are reused across calls.
    pub fn quantize(&mut self, x: &[f32], m: usize, k: usize) -> Result<()> {
        check_input("Q8_K", x, m, k, QK_K)?;
        let nsb = m * (k / QK_K);
        (self.m, self.k) = (m, k);
        self.q.reset(nsb * 8);
        self.d.clear();
        self.d.resize(nsb, 0.0);
        self.bsums.clear();
        self.bsums.resize(nsb, BSums([0; 16]));
        self.bsxd.clear();
        self.bsxd.resize(nsb, F8([0.0; 8]));
        let (lanes, d, bsums, bsxd) = (
            Shared::new(&mut self.q[..]),
            Shared::new(&mut self.d),
            Shared::new(&mut self.bsums),
            Shared::new(&mut self.bsxd),
        );
        split(nsb, MIN_SUPER_BLOCKS, |sbs| {
            // SAFETY: the ranges of one split are disjoint super-blocks, each with its own 8
            // lanes and sums.
            let (lanes, d, bsums, bsxd) = unsafe {
                (
                    lanes.slice(8 * sbs.start..8 * sbs.end),
                    d.slice(sbs.clone()),
                    bsums.slice(sbs.clone()),
                    bsxd.slice(sbs.clone()),
                )
            };
            let mut q = [0i8; QK_K];
            for (s, xs) in x[sbs.start * QK_K..sbs.end * QK_K].as_chunks::<QK_K>().0.iter().enumerate() {
                d[s] = quantize_q8_k(xs, &mut q);
                for (b, sum) in bsums[s].0.iter_mut().enumerate() {
                    *sum = q[16 * b..16 * b + 16].iter().map(|&v| v as i16).sum();
                }
                let bs = &bsums[s].0;
                bsxd[s] = F8(std::array::from_fn(|c| (bs[2 * c] as i32 + bs[2 * c + 1] as i32) as f32 * d[s]));
                let lanes = &mut lanes[8 * s..8 * s + 8];
                for (e, pair) in q.as_chunks::<2>().0.iter().enumerate() {
                    // Element 2e = 16b + 2j: lane j, values 2b and 2b + 1.
                    let (b, j) = (e / 8, e % 8);
                    lanes[j].0[2 * b] = pair[0] as Q;
                    lanes[j].0[2 * b + 1] = pair[1] as Q;
                }
            }
        });
        Ok(())
    }

    pub fn rows(&self) -> usize {
        self.m
    }

    pub fn cols(&self) -> usize {
        self.k
    }

    /// The quants of row `r`, super-block `s` back in element order (scalar kernels, tests).
    pub(super) fn natural(&self, r: usize, s: usize) -> [i32; QK_K] {
        let lanes = &self.q[8 * (r * (self.k / QK_K) + s)..][..8];
        std::array::from_fn(|e| {
            let (b, j, t) = (e / 16, (e % 16) / 2, e % 2);
            lanes[j].0[2 * b + t] as i32
        })
    }
}

thread_local! {
    static Q8_SCRATCH: std::cell::RefCell<Q8Acts> = const { std::cell::RefCell::new(Q8Acts::new()) };
    static Q8K_SCRATCH: std::cell::RefCell<Q8KActs> = const { std::cell::RefCell::new(Q8KActs::new()) };
}

/// Runs `f` with this thread's reusable Q8_0 activation buffers, so that the hundreds of
/// matmuls of a decode step do not each allocate (a fresh set if they are already in use).
pub fn with_q8<T>(f: impl FnOnce(&mut Q8Acts) -> T) -> T {
    Q8_SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut a) => f(&mut a),
        Err(_) => f(&mut Q8Acts::new()),
    })
}

/// `with_q8` for Q8_K activations.
pub fn with_q8k<T>(f: impl FnOnce(&mut Q8KActs) -> T) -> T {
    Q8K_SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut a) => f(&mut a),
        Err(_) => f(&mut Q8KActs::new()),
    })
}

/// candle's `BlockQ8_0::from_float` for one block: returns `(d, sum of q)` with `d` rounded
/// through f16 (the value the dot products use).
pub(super) fn quantize_q8_0(x: &[f32; QK8_0], q: &mut [i8; QK8_0]) -> (f32, i32) {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    {
        return x86::quantize_q8_0(x, q);
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        return wasm::quantize_q8_0(x, q);
    }
    #[allow(unreachable_code)]
    quantize_q8_0_scalar(x, q)
}

/// The plain version, written like candle's; the SIMD ones must match it bit for bit.
pub(super) fn quantize_q8_0_scalar(x: &[f32; QK8_0], q: &mut [i8; QK8_0]) -> (f32, i32) {
    let mut amax = 0f32;
    for &v in x {
        amax = amax.max(v.abs());
    }
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0;
    for (o, &v) in q.iter_mut().zip(x) {
        *o = (v * id).round() as i8;
        sum += *o as i32;
    }
    (f16::from_f32(d).to_f32(), sum)
}

/// candle's `BlockQ8K::from_float` for one super-block; returns `d`.
pub(super) fn quantize_q8_k(x: &[f32; QK_K], q: &mut [i8; QK_K]) -> f32 {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    {
        return x86::quantize_q8_k(x, q);
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
    {
        return wasm::quantize_q8_k(x, q);
    }
    #[allow(unreachable_code)]
    quantize_q8_k_scalar(x, q)
}

/// The plain version, written like candle's; the SIMD ones must match it bit for bit.
pub(super) fn quantize_q8_k_scalar(x: &[f32; QK_K], q: &mut [i8; QK_K]) -> f32 {
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    if amax == 0.0 {
        q.fill(0);
        return 0.0;
    }
    let iscale = -127.0 / max;
    for (o, &v) in q.iter_mut().zip(x) {
        *o = (iscale * v).round().clamp(-128.0, 127.0) as i8;
    }
    1.0 / iscale
}

/// The first value of largest magnitude (NaNs never win), as candle's scan finds it.
#[allow(dead_code)]
fn first_max(x: &[f32; QK_K], amax: f32) -> f32 {
    x.iter().copied().find(|v| v.abs() == amax).unwrap_or(0.0)
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
mod x86 {
    use super::{first_max, QK8_0, QK_K};
    use core::arch::x86_64::*;
    use half::f16;

    /// max |x| over `x`, skipping NaNs like `f32::max` (maxps returns its second operand when
    /// the first is NaN).
    #[inline]
    fn amax(x: &[f32]) -> f32 {
        // SAFETY: AVX2 is enabled at compile time; every load reads 8 values inside `x`
        // (its length is a multiple of 8 at both call sites).
        unsafe {
            let sign = _mm256_set1_ps(-0.0);
            let mut m = _mm256_setzero_ps();
            for c in x.as_chunks::<8>().0 {
                m = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(c.as_ptr())), m);
            }
            let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            _mm_cvtss_f32(_mm_max_ss(m2, _mm_shuffle_ps::<1>(m2, m2)))
        }
    }

    /// `q = x * s` rounded like `f32::round` and saturated like `as i8` (which also sends NaN
    /// to 0), 32 values; returns the i32 lanes summed over the block.
    #[inline]
    fn round_32(x: &[f32; 32], s: f32, q: &mut [i8; 32]) -> i32 {
        // SAFETY: x and q hold exactly 32 values; AVX2 is enabled at compile time.
        unsafe {
            let p = x.as_ptr();
            let sv = _mm256_set1_ps(s);
            let sign = _mm256_set1_ps(-0.0);
            let half = _mm256_set1_ps(0.5);
            let (lo, hi) = (_mm256_set1_ps(-128.0), _mm256_set1_ps(127.0));
            let mut iv = [_mm256_setzero_si256(); 4];
            for (i, o) in iv.iter_mut().enumerate() {
                let t = _mm256_mul_ps(_mm256_loadu_ps(p.add(8 * i)), sv);
                // Half away from zero: trunc(t +- 0.5) is exact for 0.5 <= |t| < 2^23 (|t| <= 127
                // here); below 0.5 the answer is 0, and the mask also sends NaN to 0.
                let r = _mm256_add_ps(t, _mm256_or_ps(_mm256_and_ps(t, sign), half));
                let r = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(r);
                let r = _mm256_and_ps(r, _mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_andnot_ps(sign, t), half));
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

    pub(super) fn quantize_q8_0(x: &[f32; QK8_0], q: &mut [i8; QK8_0]) -> (f32, i32) {
        let d = amax(x) / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let sum = round_32(x, id, q);
        (f16::from_f32(d).to_f32(), sum)
    }

    pub(super) fn quantize_q8_k(x: &[f32; QK_K], q: &mut [i8; QK_K]) -> f32 {
        let a = amax(x);
        if a == 0.0 {
            q.fill(0);
            return 0.0;
        }
        let iscale = -127.0 / first_max(x, a);
        for (xc, qc) in x.as_chunks::<32>().0.iter().zip(q.as_chunks_mut::<32>().0) {
            round_32(xc, iscale, qc);
        }
        1.0 / iscale
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod wasm {
    use super::{first_max, QK8_0, QK_K};
    use core::arch::wasm32::*;
    use half::f16;

    /// max |x| over `x` (length a multiple of 4), skipping NaNs like `f32::max`.
    #[inline]
    fn amax(x: &[f32]) -> f32 {
        let mut m = f32x4_splat(0.0);
        for c in x.as_chunks::<4>().0 {
            // SAFETY: reads the 4 values of `c` (unaligned v128 loads are allowed).
            let v = unsafe { v128_load(c.as_ptr() as *const v128) };
            // pmax(a, b) = a < b ? b : a keeps `a` when b is NaN, like f32::max.
            m = f32x4_pmax(m, f32x4_abs(v));
        }
        f32x4_extract_lane::<0>(m)
            .max(f32x4_extract_lane::<1>(m))
            .max(f32x4_extract_lane::<2>(m).max(f32x4_extract_lane::<3>(m)))
    }

    /// `q = x * s` rounded like `f32::round` and saturated like `as i8`; returns the sum of q.
    #[inline]
    fn round_32(x: &[f32; 32], s: f32, q: &mut [i8; 32]) -> i32 {
        // SAFETY: x and q hold exactly 32 values (unaligned v128 loads/stores are allowed).
        unsafe {
            let p = x.as_ptr() as *const v128;
            let sv = f32x4_splat(s);
            let (sign, half) = (f32x4_splat(-0.0), f32x4_splat(0.5));
            let mut iv = [i32x4_splat(0); 8];
            let mut sum = i32x4_splat(0);
            for (i, o) in iv.iter_mut().enumerate() {
                let t = f32x4_mul(v128_load(p.add(i)), sv);
                // Half away from zero, exact for 0.5 <= |t| < 2^23; the mask sends |t| < 0.5
                // and NaN to 0 like `as i8`.
                let r = f32x4_trunc(f32x4_add(t, v128_or(v128_and(t, sign), half)));
                let r = v128_and(r, f32x4_ge(f32x4_abs(t), half));
                // Saturate like `as i8` (t is infinite when the scale overflows).
                *o = i32x4_max(i32x4_min(i32x4_trunc_sat_f32x4(r), i32x4_splat(127)), i32x4_splat(-128));
                sum = i32x4_add(sum, *o);
            }
            let qp = q.as_mut_ptr() as *mut v128;
            for h in 0..2 {
                let a = i16x8_narrow_i32x4(iv[4 * h], iv[4 * h + 1]);
                let b = i16x8_narrow_i32x4(iv[4 * h + 2], iv[4 * h + 3]);
                v128_store(qp.add(h), i8x16_narrow_i16x8(a, b));
            }
            i32x4_extract_lane::<0>(sum)
                + i32x4_extract_lane::<1>(sum)
                + i32x4_extract_lane::<2>(sum)
                + i32x4_extract_lane::<3>(sum)
        }
    }

    pub(super) fn quantize_q8_0(x: &[f32; QK8_0], q: &mut [i8; QK8_0]) -> (f32, i32) {
        let d = amax(x) / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let sum = round_32(x, id, q);
        (f16::from_f32(d).to_f32(), sum)
    }

    pub(super) fn quantize_q8_k(x: &[f32; QK_K], q: &mut [i8; QK_K]) -> f32 {
        let a = amax(x);
        if a == 0.0 {
            q.fill(0);
            return 0.0;
        }
        let iscale = -127.0 / first_max(x, a);
        for (xc, qc) in x.as_chunks::<32>().0.iter().zip(q.as_chunks_mut::<32>().0) {
            round_32(xc, iscale, qc);
        }
        1.0 / iscale
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// Blocks that probe rounding ties, NaN, infinities, zeros, subnormal scales and ties in
    /// magnitude between values of opposite sign.
    fn nasty_blocks(len: usize) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(42);
        let mut blocks: Vec<Vec<f32>> = (0..400)
            .map(|i| {
                let scale = [1e-3f32, 1.0, 30.0, 1e4][i % 4];
                (0..len).map(|_| rng.signed_f32() * scale).collect()
            })
            .collect();
        let below_half = f32::from_bits(0.5f32.to_bits() - 1);
        let special = [
            127.0,
            below_half,
            -below_half,
            0.5,
            -0.5,
            f32::from_bits(1.5f32.to_bits() - 1),
            f32::from_bits(0.5f32.to_bits() + 1),
            -f32::from_bits(2.5f32.to_bits() + 1),
        ];
        blocks.push((0..len).map(|e| special.get(e).copied().unwrap_or((e % 40) as f32 * 0.25 - 5.0)).collect());
        blocks.push((0..len).map(|e| if e == 3 { -127.0 } else { (e % 32) as f32 - 15.5 }).collect());
        blocks.push(vec![0.0; len]);
        blocks.push((0..len).map(|e| [f32::NAN, 1.0, -3.0, 0.0][e % 4]).collect());
        blocks.push((0..len).map(|e| [f32::INFINITY, 1.0, -3.0, 0.0][e % 4]).collect());
        blocks.push((0..len).map(|e| [f32::NEG_INFINITY, 1.0, f32::NAN, -0.0][e % 4]).collect());
        blocks.push((0..len).map(|e| (e % 32) as f32 * 1e-41 - 16e-41).collect());
        blocks.push((0..len).map(|e| (e % 32) as f32 * 1e-39 - 16e-39).collect());
        // Equal magnitudes, opposite signs: the first one sets the sign of Q8_K's scale.
        blocks.push(
            (0..len)
                .map(|e| {
                    if e == 5 {
                        -2.0
                    } else if e == 9 {
                        2.0
                    } else {
                        0.1
                    }
                })
                .collect(),
        );
        blocks.push(
            (0..len)
                .map(|e| {
                    if e == 5 {
                        2.0
                    } else if e == 9 {
                        -2.0
                    } else {
                        -0.1
                    }
                })
                .collect(),
        );
        blocks
    }

    #[test]
    fn q8_0_quantizer_matches_scalar_and_candle() {
        for (bi, xb) in nasty_blocks(QK8_0).iter().enumerate() {
            let xb: &[f32; QK8_0] = xb[..].try_into().unwrap();
            let (mut q1, mut q2) = ([0i8; QK8_0], [0i8; QK8_0]);
            let a = quantize_q8_0(xb, &mut q1);
            let b = quantize_q8_0_scalar(xb, &mut q2);
            assert_eq!(q1, q2, "quants of block {bi}: {xb:?}");
            assert_eq!((a.0.to_bits(), a.1), (b.0.to_bits(), b.1), "scale of block {bi}");
            if xb.iter().all(|v| v.is_finite()) {
                // candle's own quantizer: bytes d (f16) then 32 quants.
                let t = Tensor::from_vec(xb.to_vec(), (1, QK8_0), &Device::Cpu).unwrap();
                let bytes = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap().data().unwrap().into_owned();
                assert_eq!(f16::from_le_bytes([bytes[0], bytes[1]]).to_f32().to_bits(), a.0.to_bits(), "{bi}");
                assert!(bytes[2..].iter().zip(&q1).all(|(&c, &o)| c as i8 == o), "block {bi}");
            }
        }
    }

    #[test]
    fn q8_k_quantizer_matches_scalar() {
        for (bi, xb) in nasty_blocks(QK_K).iter().enumerate() {
            let xb: &[f32; QK_K] = xb[..].try_into().unwrap();
            let (mut q1, mut q2) = ([0i8; QK_K], [0i8; QK_K]);
            let a = quantize_q8_k(xb, &mut q1);
            let b = quantize_q8_k_scalar(xb, &mut q2);
            assert_eq!(q1, q2, "quants of super-block {bi}");
            assert_eq!(a.to_bits(), b.to_bits(), "scale of super-block {bi}");
        }
    }

    #[test]
    fn layouts_hold_the_quants() {
        // 70 rows: a prefill's, split over 2 threads (rows, and super-blocks).
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for m in [3, 70] {
            pool.install(|| layouts_of(m));
        }
    }

    fn layouts_of(m: usize) {
        let k = 512;
        let x = Rng::new(7).vec(m * k, 3.0);
        let mut a = Q8KActs::new();
        a.quantize(&x, m, k).unwrap();
        let mut q = [0i8; QK_K];
        for r in 0..m {
            for s in 0..2 {
                let xs: &[f32; QK_K] = x[r * k + s * QK_K..][..QK_K].try_into().unwrap();
                let d = quantize_q8_k_scalar(xs, &mut q);
                assert_eq!(a.d[r * 2 + s], d);
                let nat = a.natural(r, s);
                assert!(nat.iter().zip(&q).all(|(&n, &v)| n == v as i32));
                for b in 0..16 {
                    assert_eq!(a.bsums[r * 2 + s].0[b] as i32, nat[16 * b..16 * b + 16].iter().sum::<i32>());
                }
            }
        }
        // 11 blocks: a group and 3 left over; 14: a group, a half group and 2 left over.
        for (nb, slots, grouped) in [(11, 1, 8), (14, 2, 12)] {
            let k = 32 * nb;
            let x = Rng::new(8).vec(m * k, 3.0);
            let mut a = Q8Acts::new();
            a.quantize(&x, m, k).unwrap();
            assert_eq!((grp_slots(nb), grouped_blocks(nb), a.grp.len()), (slots, grouped, m * slots * 8));
            let mut q = [0i8; QK8_0];
            for r in 0..m {
                for b in 0..nb {
                    let xb: &[f32; QK8_0] = x[r * k + b * QK8_0..][..QK8_0].try_into().unwrap();
                    let (d, sum) = quantize_q8_0_scalar(xb, &mut q);
                    let j = r * nb + b;
                    assert_eq!((a.d[j], a.sum16[j]), (d, 16 * sum));
                    assert!(a.nat[j].0.iter().zip(&q).all(|(&n, &v)| n == v as Q));
                    if b < grouped {
                        for (e, &v) in q.iter().enumerate() {
                            assert_eq!(a.grp[(r * slots + b / 8) * 8 + e / 4].0[4 * (b % 8) + e % 4], v as Q);
                        }
                    }
                    if pairs_here() {
                        // Row r's half of pair r / 2: its quants plus 128, its d 8 times.
                        let at = 2 * (r / 2 * nb + b) + r % 2;
                        assert!(a.upair[at].0.iter().zip(&q).all(|(&u, &v)| u as u8 == (v as i16 + 128) as u8));
                        assert_eq!(a.dpair[at / 2].0[8 * (r % 2)..][..8], [d; 8]);
                    }
                }
            }
            if pairs_here() {
                assert_eq!((a.upair.len(), a.dpair.len()), (2 * m.div_ceil(2) * nb, m.div_ceil(2) * nb));
                // An odd row count leaves the last pair's second row zero.
                if m % 2 == 1 {
                    for b in 0..nb {
                        let at = 2 * ((m - 1) / 2 * nb + b) + 1;
                        assert!(a.upair[at].0.iter().all(|&u| u == 0) && a.dpair[at / 2].0[8..] == [0.0; 8]);
                    }
                }
            }
            // The half slot's second half stays zero.
            if grouped % 8 != 0 {
                for r in 0..m {
                    assert!(a.grp[(r * slots + slots - 1) * 8..][..8]
                        .iter()
                        .all(|l| l.0[16..].iter().all(|&v| v == 0)));
                }
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut a = Q8Acts::new();
        assert!(matches!(a.quantize(&[0.0; 64], 2, 31), Err(AmuletError::Compute(_))));
        assert!(matches!(a.quantize(&[0.0; 63], 2, 32), Err(AmuletError::Compute(_))));
        assert!(matches!(a.quantize(&[0.0; 64], usize::MAX, 32), Err(AmuletError::Compute(_))));
        assert!(a.quantize(&[], 0, 32).is_ok());
        let mut a = Q8KActs::new();
        assert!(matches!(a.quantize(&[0.0; 256], 1, 128), Err(AmuletError::Compute(_))));
        assert!(matches!(a.quantize(&[0.0; 255], 1, 256), Err(AmuletError::Compute(_))));
    }
}
