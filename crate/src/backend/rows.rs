//! The walk our weight kernels share: a range of output rows (weight rows), each read once
//! for up to `MAX_ROWS` activation rows, and the checks that keep the kernels' raw pointer
//! reads in bounds. A thread pool can hand each thread its own output-row range over one set
//! of prepared activations; every output value is written by exactly one call.

use std::ops::Range;

use crate::error::{AmuletError, Result};

/// Which SIMD tier our Q4_K / Q6_K / Q5_0 / Q8_0 kernels run in this build.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
pub const KERNEL: &str = "avx2";
#[cfg(all(target_arch = "wasm32", target_feature = "simd128", not(target_feature = "relaxed-simd")))]
pub const KERNEL: &str = "simd128";
/// simd128 plus relaxed SIMD's byte dot product (builds of their own, which www/src/wasm.js
/// picks where the engine has it; the kernels are in backend/relaxed/).
#[cfg(all(target_arch = "wasm32", target_feature = "simd128", target_feature = "relaxed-simd"))]
pub const KERNEL: &str = "relaxed-simd";
#[cfg(not(any(
    all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"),
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
pub const KERNEL: &str = "scalar";

/// The tier the kernels run in on this CPU: `KERNEL`, or natively "avx-vnni" or "avx512-vnni"
/// where the CPU has them (backend/x86.rs).
pub fn tier() -> &'static str {
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    return super::x86::tier();
    #[allow(unreachable_code)]
    KERNEL
}

/// Activation rows served by one read of a weight row.
pub const MAX_ROWS: usize = 8;

/// How far ahead (bytes) the x86 kernels prefetch their weight stream, and into L2 only
/// (`_MM_HINT_T1`): on the decode path every matrix streams once from DRAM and the hardware
/// prefetcher alone leaves bandwidth unused (see q4_1.rs), while prefetching into L1 pushed out
/// the activations, which reach 18 KB for two rows of 8,960 (the 1.5B's down projection).
#[allow(dead_code)]
pub(crate) const PREFETCH: usize = 4096;

/// Weight bytes per tile when more than `MAX_ROWS` activation rows need several passes: a tile
/// stays in L1 while the passes go over it (prefill).
const TILE_BYTES: usize = 16 * 1024;

/// One kernel bound to its weights and prepared activations.
///
/// # Safety
/// `dot` may assume `i < rows()` and `r0 + R <= acts()`, and must read only inside the
/// weights and activations it was built from when that holds.
pub(crate) unsafe trait Dot {
    /// Weight (output) rows.
    fn rows(&self) -> usize;
    /// Prepared activation rows.
    fn acts(&self) -> usize;
    /// Bytes of one weight row (for tiling).
    fn row_bytes(&self) -> usize;
    /// Dot products of weight row `i` with activation rows `r0..r0 + R`.
    ///
    /// # Safety
    /// `i < rows()`, `r0 + R <= acts()`, and `r0` is even (`run` starts every pass on an even
    /// row).
    unsafe fn dot<const R: usize>(&self, i: usize, r0: usize) -> [f32; R];
    /// The weight rows as one stream, row `i` at `i * row_bytes()`: the wasm kernels give it
    /// so that `pass` can touch it ahead (`touch`); natively the kernels prefetch.
    #[cfg(target_arch = "wasm32")]
    fn stream(&self) -> &[u8] {
        &[]
    }
}

/// How far ahead (bytes) the wasm kernels touch their weight stream.
#[cfg(target_arch = "wasm32")]
pub(crate) const TOUCH_AHEAD: usize = 4096;

/// Wasm has no prefetch instruction, so before a kernel reads bytes `at..to` of its weight
/// stream, one byte in every 64 of `at + TOUCH_AHEAD..to + TOUCH_AHEAD` (clamped to the
/// stream) is loaded: a load whose value goes unused, which the engine still has to issue (a
/// load may trap), and which sets the line on its way from memory while the kernel works. On
/// a 2-core Intel Xeon VM (Node, 1 thread, relaxed SIMD) the 0.5B's decode went from 9.6-9.7
/// to 15.3-15.4 tok/s with it, SmolLM2's from 48-52 to 59; 1 to 8 KB ahead made no difference.
#[cfg(target_arch = "wasm32")]
#[inline(always)]
pub(crate) fn touch(stream: &[u8], at: usize, to: usize) {
    let end = (to + TOUCH_AHEAD).min(stream.len());
    let mut p = at + TOUCH_AHEAD;
    while p < end {
        // SAFETY: p < stream.len().
        unsafe { std::ptr::read_volatile(stream.as_ptr().add(p)) };
        p += 64;
    }
}

/// Repacked weights: one byte stream (row after row, each row its records in order, as in
/// GGUF) on a 32-byte aligned base. A single forward stream is what the hardware prefetcher
/// follows best: split into separate quant and scale arrays, the kernels lost most of their
/// bandwidth whenever the software prefetch was off.
#[derive(Clone)]
pub(crate) struct Packed {
    buf: Vec<Block32>,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Block32([u8; 32]);

impl Packed {
    pub(crate) fn zeroed(len: usize) -> Packed {
        Packed { buf: vec![Block32([0; 32]); len.div_ceil(32)], len }
    }

    pub(crate) fn concat<'a>(parts: impl Iterator<Item = &'a Packed> + Clone) -> Packed {
        let mut out = Packed::zeroed(parts.clone().map(|p| p.len).sum());
        let mut at = 0;
        for p in parts {
            out.bytes_mut()[at..at + p.len].copy_from_slice(p.bytes());
            at += p.len;
        }
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `buf` holds at least `len` initialized bytes (Block32 is plain bytes).
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr() as *const u8, self.len) }
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `self` is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.buf.as_mut_ptr() as *mut u8, self.len) }
    }

    #[allow(dead_code)]
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.buf.as_ptr() as *const u8
    }
}

/// Checks that a matrix of `k` columns meets activations of `ak` columns.
pub(crate) fn check_cols(what: &str, k: usize, ak: usize) -> Result<()> {
    if k != ak {
        return Err(AmuletError::Compute(format!("{what}: activations have {ak} columns, weights {k}")));
    }
    Ok(())
}

/// `out[r * ld + (i - rows.start)] = dot(weight row i, activation row r)` for every prepared
/// activation row `r` and every `i` in `rows`.
// Inlined so that x86::run_vnni and run_avx512 compile the kernels inside them with their tier.
#[inline(always)]
pub(crate) fn run<D: Dot>(what: &str, d: &D, rows: Range<usize>, out: &mut [f32], ld: usize) -> Result<()> {
    let (n, m) = (d.rows(), d.acts());
    if rows.start > rows.end || rows.end > n {
        return Err(AmuletError::Compute(format!("{what}: output rows {rows:?} of a matrix with {n}")));
    }
    let len = rows.len();
    if len > ld {
        return Err(AmuletError::Compute(format!("{what}: {len} output rows with a stride of {ld}")));
    }
    if m > 0 && len > 0 {
        let need = (m - 1).checked_mul(ld).and_then(|v| v.checked_add(len));
        if need.is_none_or(|need| need > out.len()) {
            return Err(AmuletError::Compute(format!(
                "{what}: output has {} values, {m} rows of stride {ld} need {}",
                out.len(),
                (m - 1).saturating_mul(ld).saturating_add(len)
            )));
        }
    }
    let tile = if m > MAX_ROWS { (TILE_BYTES / d.row_bytes().max(1)).max(1) } else { len.max(1) };
    let passes = m.div_ceil(MAX_ROWS);
    let mut i0 = rows.start;
    while i0 < rows.end {
        let i1 = (i0 + tile).min(rows.end);
        // Passes as even as possible: 9 rows run as 4 + 5, not 8 + 1. Every pass but the last
        // takes an even count, so each starts on an even row: Q8_0's AVX-512 kernel reads
        // activation rows in pairs (2p, 2p + 1) laid out side by side (acts.rs).
        let mut r0 = 0;
        for p in 0..passes {
            let even = |rr: usize| if p + 1 < passes { rr.next_multiple_of(2) } else { rr };
            let rr = even((m - r0) / (passes - p));
            let base = i0 - rows.start;
            match rr {
                1 => pass::<D, 1>(d, i0..i1, r0, &mut out[r0 * ld + base..], ld),
                2 => pass::<D, 2>(d, i0..i1, r0, &mut out[r0 * ld + base..], ld),
                3 => pass::<D, 3>(d, i0..i1, r0, &mut out[r0 * ld + base..], ld),
                4 => pass::<D, 4>(d, i0..i1, r0, &mut out[r0 * ld + base..], ld),
                5 => pass::<D, 5>(d, i0..i1, r0, &mut out[r0 * ld + base..], ld),
                6 => pass::<D, 6>(d, i0..i1, r0, &mut out[r0 * ld + base..], ld),
                7 => pass::<D, 7>(d, i0..i1, r0, &mut out[r0 * ld + base..], ld),
                _ => pass::<D, 8>(d, i0..i1, r0, &mut out[r0 * ld + base..], ld),
            }
            r0 += rr;
        }
        i0 = i1;
    }
    Ok(())
}

/// One pass: weight rows `rows` against activation rows `r0..r0 + R`; `out[r * ld + j]` takes
/// activation row `r0 + r` and weight row `rows.start + j`.
#[inline(always)]
fn pass<D: Dot, const R: usize>(d: &D, rows: Range<usize>, r0: usize, out: &mut [f32], ld: usize) {
    let start = rows.start;
    #[cfg(target_arch = "wasm32")]
    let (stream, rb) = (d.stream(), d.row_bytes());
    for i in rows {
        #[cfg(target_arch = "wasm32")]
        touch(stream, i * rb, (i + 1) * rb);
        // SAFETY: `run` checked rows.end <= d.rows(), and r0 + R <= d.acts() and r0 is even by
        // construction.
        let v = unsafe { d.dot::<R>(i, r0) };
        for (r, &x) in v.iter().enumerate() {
            out[r * ld + i - start] = x;
        }
    }
}

/// The public face every repacked format shares (`prepare`, `run`, `run_scalar`, `matmul`,
/// `matmul_scalar`), for a matrix type with fields `n` and `k` whose module has `x86::Kernel`,
/// `wasm::Kernel` and `Scalar` (each `{ w, a }`, implementing `Dot`). `$acts` is the
/// activation type the format takes, `$with` its thread-local scratch, `$name` the format's
/// name in errors.
macro_rules! kernel_api {
    ($matrix:ident, $acts:ident, $with:ident, $name:literal) => {
        impl $matrix {
            /// Quantizes `m` activation rows of `cols()` values for `run`.
            pub fn prepare(&self, x: &[f32], m: usize) -> $crate::error::Result<$acts> {
                let mut a = $acts::new();
                a.quantize(x, m, self.k)?;
                Ok(a)
            }

            /// `out[r * ld + (i - rows.start)] = dot(row i, activation row r)` for the prepared
            /// rows `r` and `i` in `rows`, with this build's kernel (see `KERNEL`).
            pub fn run(
                &self,
                a: &$acts,
                rows: std::ops::Range<usize>,
                out: &mut [f32],
                ld: usize,
            ) -> $crate::error::Result<()> {
                $crate::backend::rows::check_cols($name, self.k, a.cols())?;
                #[cfg(all(
                    target_arch = "x86_64",
                    target_feature = "avx2",
                    target_feature = "fma",
                    target_feature = "f16c"
                ))]
                return self.run_on(None, a, rows, out, ld);
                #[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
                return $crate::backend::rows::run($name, &wasm::Kernel { w: self, a }, rows, out, ld);
                #[allow(unreachable_code)]
                $crate::backend::rows::run($name, &Scalar { w: self, a }, rows, out, ld)
            }

            /// `run` on an x86 tier (`None`: this CPU's best; one it lacks is an error). Each
            /// module's `x86::Wide` is its AVX-512 body. Tests compare the tiers.
            #[cfg(all(
                target_arch = "x86_64",
                target_feature = "avx2",
                target_feature = "fma",
                target_feature = "f16c"
            ))]
            pub(crate) fn run_on(
                &self,
                tier: Option<$crate::backend::x86::Tier>,
                a: &$acts,
                rows: std::ops::Range<usize>,
                out: &mut [f32],
                ld: usize,
            ) -> $crate::error::Result<()> {
                $crate::backend::rows::check_cols($name, self.k, a.cols())?;
                $crate::backend::x86::run_tier(
                    $name,
                    tier,
                    x86::Kernel::<false> { w: self, a },
                    x86::Kernel::<true> { w: self, a },
                    x86::Wide { w: self, a },
                    rows,
                    out,
                    ld,
                )
            }

            /// `matmul` on an x86 tier (an error where the CPU lacks it), for kernels_bench.
            #[cfg(all(
                target_arch = "x86_64",
                target_feature = "avx2",
                target_feature = "fma",
                target_feature = "f16c"
            ))]
            #[doc(hidden)]
            pub fn matmul_on(
                &self,
                tier: $crate::backend::x86::Tier,
                x: &[f32],
                m: usize,
                out: &mut [f32],
            ) -> $crate::error::Result<()> {
                $with(|a| {
                    a.quantize(x, m, self.k)?;
                    self.run_on(Some(tier), a, 0..self.n, out, self.n)
                })
            }

            /// `run` on the portable path (tests and tools check the SIMD kernels against it).
            pub fn run_scalar(
                &self,
                a: &$acts,
                rows: std::ops::Range<usize>,
                out: &mut [f32],
                ld: usize,
            ) -> $crate::error::Result<()> {
                $crate::backend::rows::check_cols($name, self.k, a.cols())?;
                $crate::backend::rows::run($name, &Scalar { w: self, a }, rows, out, ld)
            }

            /// x: `m` rows of `cols()` -> out: `m` rows of `rows()`.
            pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> $crate::error::Result<()> {
                $with(|a| {
                    a.quantize(x, m, self.k)?;
                    self.run(a, 0..self.n, out, self.n)
                })
            }

            /// `matmul` on the portable path.
            pub fn matmul_scalar(&self, x: &[f32], m: usize, out: &mut [f32]) -> $crate::error::Result<()> {
                let a = self.prepare(x, m)?;
                self.run_scalar(&a, 0..self.n, out, self.n)
            }
        }
    };
}
pub(crate) use kernel_api;

/// Concatenation of matrices along the output dimension: all must share `k`.
pub(crate) fn check_concat(what: &str, ks: impl Iterator<Item = usize>) -> Result<usize> {
    let mut k0 = None;
    for k in ks {
        match k0 {
            None => k0 = Some(k),
            Some(k0) if k0 != k => {
                return Err(AmuletError::BadModel(format!("{what} concat_rows: column counts differ ({k0} vs {k})")))
            }
            _ => {}
        }
    }
    k0.ok_or_else(|| AmuletError::BadModel(format!("{what} concat_rows: no matrices given")))
}

/// The byte count `n` rows of `blocks_per_row` blocks of `block_bytes` must have, or a typed
/// error naming the matrix.
pub(crate) fn expect_bytes(
    what: &str,
    n: usize,
    k: usize,
    block: usize,
    block_bytes: usize,
    got: usize,
) -> Result<usize> {
    if k == 0 || !k.is_multiple_of(block) {
        return Err(AmuletError::BadModel(format!(
            "{what} matrix {n}x{k}: the column count must be a positive multiple of {block}"
        )));
    }
    if n == 0 {
        return Err(AmuletError::BadModel(format!("{what} matrix {n}x{k}: no rows")));
    }
    let want = n
        .checked_mul(k / block)
        .and_then(|b| b.checked_mul(block_bytes))
        .ok_or_else(|| AmuletError::BadModel(format!("{what} matrix {n}x{k}: size overflows")))?;
    if got != want {
        return Err(AmuletError::BadModel(format!("{what} matrix {n}x{k}: expected {want} bytes of data, got {got}")));
    }
    Ok(want)
}

/// f16 bits to f32 without a table, exact for every value, and with no arithmetic on an f32
/// subnormal: x86 takes a microcode assist of about a hundred cycles for each such operand, and
/// a super-block's `d` (Q6_K) or `dmin` (Q4_K) is often an f16 subnormal. (The former version
/// rescaled every value by a product with 2^112, whose operand is subnormal exactly then: that
/// one multiply per super-block was 18% of the wasm Q6_K kernel's samples.) Normals are
/// rebiased in the bits; subnormals, `m * 2^-24`, converted from their integer mantissa.
/// Used where `half` would fall back to a slow software conversion (wasm).
#[allow(dead_code)]
#[inline(always)]
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let e = h & 0x7c00;
    // One unsigned compare picks the normals (exponent 1 to 30), the path that runs: a
    // kernel converts a scale per block, and this way it costs about half the instructions.
    let v = if e.wrapping_sub(0x400) < 0x7800 {
        ((h & 0x7fff) << 13) + (112 << 23)
    } else if e == 0 {
        ((h & 0x3ff) as f32 * f32::from_bits(0x3380_0000)).to_bits() // m * 2^-24
    } else {
        0x7f80_0000 | ((h & 0x3ff) << 13)
    };
    f32::from_bits(v | ((h & 0x8000) << 16))
}

/// Four f16 (as the low halves of u32 lanes) to f32, exactly as `f16_to_f32`.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
pub(crate) fn f16x4(h: core::arch::wasm32::v128) -> core::arch::wasm32::v128 {
    use core::arch::wasm32::*;
    let e = v128_and(h, u32x4_splat(0x7c00));
    let m = v128_and(h, u32x4_splat(0x03ff));
    // Normals: the exponent rebiased in the bits (infinities and NaNs are patched below).
    let sub = f32x4_mul(f32x4_convert_i32x4(m), f32x4_splat(f32::from_bits(0x3380_0000)));
    let v = v128_bitselect(sub, rebiased(h), i32x4_eq(e, u32x4_splat(0)));
    let v = v128_bitselect(v128_or(i32x4_shl(m, 13), u32x4_splat(0x7f80_0000)), v, i32x4_eq(e, u32x4_splat(0x7c00)));
    v128_or(v, sign(h))
}

/// The magnitude of normal f16 (u32 lanes) as f32 bits: the exponent rebiased.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn rebiased(h: core::arch::wasm32::v128) -> core::arch::wasm32::v128 {
    use core::arch::wasm32::*;
    i32x4_add(i32x4_shl(v128_and(h, u32x4_splat(0x7fff)), 13), u32x4_splat(112 << 23))
}

/// The f16 sign bit (u32 lanes) moved to f32's.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
fn sign(h: core::arch::wasm32::v128) -> core::arch::wasm32::v128 {
    use core::arch::wasm32::*;
    i32x4_shl(v128_and(h, u32x4_splat(0x8000)), 16)
}

/// Eight f16 (u16 lanes) to two f32x4, exactly as `f16_to_f32`, for the Q5_0 kernels' eight
/// scales a group: where all eight are normal numbers (a group's scales nearly always are) the
/// exponent is rebiased in the bits and nothing else, about a third of `f16x4`'s instructions;
/// otherwise `f16x4` on each half.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
pub(crate) fn f16x8(h: core::arch::wasm32::v128) -> [core::arch::wasm32::v128; 2] {
    use core::arch::wasm32::*;
    let halves = [u32x4_extend_low_u16x8(h), u32x4_extend_high_u16x8(h)];
    let e = v128_and(h, u16x8_splat(0x7c00));
    if v128_any_true(v128_or(i16x8_eq(e, u16x8_splat(0)), i16x8_eq(e, u16x8_splat(0x7c00)))) {
        return halves.map(f16x4);
    }
    halves.map(|h| v128_or(rebiased(h), sign(h)))
}

/// `f16x8` on plain values, for the wasm kernel tests.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[doc(hidden)]
pub fn f16x8_lanes(h: [u16; 8]) -> [f32; 8] {
    use core::arch::wasm32::*;
    let v = f16x8(u16x8(h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]));
    std::array::from_fn(|i| {
        let x = v[i / 4];
        match i % 4 {
            0 => f32x4_extract_lane::<0>(x),
            1 => f32x4_extract_lane::<1>(x),
            2 => f32x4_extract_lane::<2>(x),
            _ => f32x4_extract_lane::<3>(x),
        }
    })
}

/// `f16x4` on plain values, for the wasm kernel tests.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[doc(hidden)]
pub fn f16x4_lanes(h: [u16; 4]) -> [f32; 4] {
    use core::arch::wasm32::*;
    let v = f16x4(u32x4(h[0] as u32, h[1] as u32, h[2] as u32, h[3] as u32));
    [f32x4_extract_lane::<0>(v), f32x4_extract_lane::<1>(v), f32x4_extract_lane::<2>(v), f32x4_extract_lane::<3>(v)]
}

/// `x & m` in every byte (the relaxed-SIMD kernels' unpacking).
#[cfg(all(target_arch = "wasm32", target_feature = "relaxed-simd"))]
#[inline(always)]
pub(crate) fn bytes_and(x: core::arch::wasm32::v128, m: u8) -> core::arch::wasm32::v128 {
    use core::arch::wasm32::*;
    v128_and(x, u8x16_splat(m))
}

/// Each accumulator's four lanes summed, `(l0 + l1) + (l2 + l3)`: the wasm kernels' last step.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[inline(always)]
pub(crate) fn sum_lanes<const R: usize>(acc: &[core::arch::wasm32::v128; R]) -> [f32; R] {
    use core::arch::wasm32::*;
    std::array::from_fn(|r| {
        let x = acc[r];
        (f32x4_extract_lane::<0>(x) + f32x4_extract_lane::<1>(x))
            + (f32x4_extract_lane::<2>(x) + f32x4_extract_lane::<3>(x))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn f16_conversion_is_exact() {
        for h in 0..=u16::MAX {
            let (a, b) = (f16_to_f32(h), f16::from_bits(h).to_f32());
            assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "{h:#06x}: {a} vs {b}");
        }
    }
}
