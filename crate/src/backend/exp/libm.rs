//! libm's `expf` (compiler-builtins, from FreeBSD's `e_expf.c`) on four wasm lanes: every
//! branch of it computed and the lane's own chosen (or, when all four lanes are ordinary, only
//! the branch they all take), with the same f32 operations, so the same bits as `f32::exp` in
//! wasm (tested over every 4099th f32 and the branches' edges, crate/tests/attend.rs, in Node
//! and Chromium).

use core::arch::wasm32::*;

/// `x = exp(x - max)` for every value, as `(x - max).exp()` computes it in wasm.
pub fn exp_shifted(scores: &mut [f32], max: f32) {
    let (blocks, rest) = scores.as_chunks_mut::<4>();
    let m = f32x4_splat(max);
    for b in blocks.iter_mut() {
        // SAFETY: simd128 is enabled for this build (the module's cfg); each block is 4 floats.
        unsafe {
            let x = f32x4_sub(v128_load(b.as_ptr() as *const v128), m);
            v128_store(b.as_mut_ptr() as *mut v128, expf4(x));
        }
    }
    super::plain::exp_shifted(rest, max);
}

/// Above this |x| (87.0) `k` could leave -126..=126, where `scalbn4` has more to do.
const FAST_MAX: u32 = 0x42ae_0000;
/// At or below this |x| (2^-13) libm returns `1 + x`.
const TINY: u32 = 0x3900_0000;

#[inline(always)]
fn expf4(x: v128) -> v128 {
    // Most lanes of a softmax or a SwiGLU are neither tiny nor near a limit, nor NaN: when all
    // four are, the special cases would all choose `y`, and with k in -126..=126 `scalbn4`
    // is one product by 2^k, so this path skips both (about half of the operations) with the
    // same bits.
    let hx = v128_and(x, u32x4_splat(0x7fff_ffff));
    if u32x4_all_true(u32x4_lt(i32x4_sub(hx, u32x4_splat(TINY + 1)), u32x4_splat(FAST_MAX - TINY - 1))) {
        let (y, k) = reduced(x, hx);
        return f32x4_mul(y, i32x4_shl(i32x4_add(k, i32x4_splat(0x7f)), 23));
    }
    expf4_full(x, hx)
}

/// libm's argument reduction and polynomial: `(y, k)` with exp(x) = y * 2^k, for lanes that
/// are not special cases (those `expf4_full` chooses afterwards).
#[inline(always)]
fn reduced(x: v128, hx: v128) -> (v128, v128) {
    // libm's constants, by their bits.
    let ln2_hi = f32x4_splat(f32::from_bits(0x3f31_7200));
    let ln2_lo = f32x4_splat(f32::from_bits(0x35bf_be8e));
    let inv_ln2 = f32x4_splat(f32::from_bits(0x3fb8_aa3b));
    let (p1, p2) = (f32x4_splat(f32::from_bits(0x3e2a_aa8f)), f32x4_splat(f32::from_bits(0xbb35_5215)));
    let u = |v: u32| u32x4_splat(v);
    let neg = i32x4_shr(x, 31); // all ones where the sign bit is set
                                // k: round(x / ln2) above 1.5 ln2 (`as i32`: toward zero, saturating), else +-1 above
                                // 0.5 ln2, else 0; then x - k ln2 in two parts.
    let big = u32x4_gt(hx, u(0x3f85_1592));
    let reduce = u32x4_gt(hx, u(0x3eb1_7218));
    let half = v128_bitselect(f32x4_splat(-0.5), f32x4_splat(0.5), neg);
    let k_big = i32x4_trunc_sat_f32x4(f32x4_add(f32x4_mul(inv_ln2, x), half));
    let k_mid = v128_bitselect(i32x4_splat(-1), i32x4_splat(1), neg);
    let k = v128_and(v128_bitselect(k_big, k_mid, big), reduce);
    let kf = f32x4_convert_i32x4(k);
    let hi = v128_bitselect(f32x4_sub(x, f32x4_mul(kf, ln2_hi)), x, reduce);
    let lo = v128_and(f32x4_mul(kf, ln2_lo), reduce);
    let r = f32x4_sub(hi, lo);
    let xr = v128_bitselect(r, x, reduce);
    let xx = f32x4_mul(xr, xr);
    let c = f32x4_sub(xr, f32x4_mul(xx, f32x4_add(p1, f32x4_mul(xx, p2))));
    let q = f32x4_div(f32x4_mul(xr, c), f32x4_sub(f32x4_splat(2.0), c));
    let y = f32x4_add(f32x4_splat(1.0), f32x4_add(f32x4_sub(q, lo), hi));
    (y, k)
}

/// Every lane, special cases included.
#[inline(always)]
fn expf4_full(x: v128, hx: v128) -> v128 {
    let u = |v: u32| u32x4_splat(v);
    let neg = i32x4_shr(x, 31);
    let (y, k) = reduced(x, hx);
    let y = scalbn4(y, k);
    // The special cases, as the scalar code returns them before the above.
    let tiny = v128_not(u32x4_gt(hx, u(TINY)));
    let y = v128_bitselect(f32x4_add(f32x4_splat(1.0), x), y, tiny);
    let under = v128_and(neg, u32x4_ge(hx, u(0x42cf_f1b5)));
    let y = v128_andnot(y, under);
    let over = v128_andnot(u32x4_ge(hx, u(0x42b1_7218)), neg);
    let y = v128_bitselect(f32x4_mul(x, f32x4_splat(f32::from_bits(0x7f00_0000))), y, over);
    v128_bitselect(x, y, u32x4_gt(hx, u(0x7f80_0000)))
}

/// libm's `scalbnf(y, k)` for |k| below 3 x 127, lane by lane.
#[inline(always)]
fn scalbn4(mut y: v128, mut k: v128) -> v128 {
    let pow2 = |k: v128| i32x4_shl(i32x4_add(k, i32x4_splat(0x7f)), 23);
    for _ in 0..2 {
        let up = i32x4_gt(k, i32x4_splat(127));
        y = v128_bitselect(f32x4_mul(y, f32x4_splat(f32::from_bits(0x7f00_0000))), y, up);
        k = v128_bitselect(i32x4_sub(k, i32x4_splat(127)), k, up);
        let down = i32x4_lt(k, i32x4_splat(-126));
        y = v128_bitselect(f32x4_mul(y, f32x4_splat(f32::from_bits(0x0c80_0000))), y, down);
        k = v128_bitselect(i32x4_add(k, i32x4_splat(102)), k, down);
    }
    let k = i32x4_max(i32x4_min(k, i32x4_splat(127)), i32x4_splat(-126));
    f32x4_mul(y, pow2(k))
}
