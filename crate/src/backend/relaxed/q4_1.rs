//! The Q4_1 kernel for wasm with relaxed SIMD (`wasm::matmul` of q4_1.rs in that build).
//!
//! `i16x8.relaxed_dot_i8x16_i7x16_s` multiplies 16 activation bytes (any i8) by 16 weight
//! nibbles (the 7-bit operand) and adds neighbouring pairs: one `pmaddubsw` on x86 hosts,
//! where simd128 needs two `pmaddwd` on widened halves. In a group, byte `4b + t` of half `h`
//! of register `j` is element `4j + t` of block `4h + b` (q4_1.rs), so i16 lane `l` belongs
//! to block `4h + l / 2`: the 8 registers add up lane-wise in i16 (16 products of at most
//! 15 * 128 a lane, so every engine gives the exact integer), and
//! `i32x4.extadd_pairwise_i16x8_s` gives the half's 4 block sums in block order.

use super::{for_each_tile, prepare_x, Lane, Q41Matrix, Scale16, Scratch};
use core::arch::wasm32::*;

/// Dot products of weight row `i` against `R` activation rows, reading each weight unit once.
///
/// # Safety
/// `i < w.n`; each `xq[r]` / `xs[r]` starts a full row from `prepare_x` for `w`.
#[inline(always)]
unsafe fn dot_rows<const R: usize>(w: &Q41Matrix, i: usize, xq: [*const Lane; R], xs: [*const Scale16; R]) -> [f32; R] {
    let (groups, ppr) = (w.groups, w.ppr());
    let qs = w.qs.as_ptr().add(i * ppr) as *const v128;
    let sc = w.scales.as_ptr().add(i * 4 * ppr);
    let m4 = u8x16_splat(0x0F);
    let nibbles = |v: v128| (v128_and(v, m4), v128_and(u16x8_shr(v, 4), m4));
    // Half `h` of register `j` of row `r` (two v128 to a 32-byte lane).
    let act = |r: usize, j: usize, h: usize| v128_load((xq[r].add(j) as *const v128).add(h));
    let dot = |a: v128, w: v128| i16x8_relaxed_dot_i8x16_i7x16(a, w);
    let mut acc = [f32x4_splat(0.0); R];
    for g in 0..groups {
        let mut sums = [[i32x4_splat(0); 2]; R];
        for h in 0..2 {
            // Unit by unit, every row taking its two registers at once (few live registers:
            // V8 spills to the stack otherwise).
            let mut s16 = [i16x8_splat(0); R];
            for u in 0..4 {
                let (lo, hi) = nibbles(v128_load(qs.add(8 * g + 2 * u + h)));
                for (r, s16) in s16.iter_mut().enumerate() {
                    let j = 8 * g + 2 * u;
                    *s16 = i16x8_add(*s16, i16x8_add(dot(act(r, j, h), lo), dot(act(r, j + 1, h), hi)));
                }
            }
            for (r, s) in sums.iter_mut().enumerate() {
                s[h] = i32x4_extadd_pairwise_i16x8(s16[r]);
            }
        }
        let s = sc.add(16 * g) as *const v128;
        let (d03, d47) = (v128_load(s), v128_load(s.add(1)));
        let (m03, m47) = (v128_load(s.add(2)), v128_load(s.add(3)));
        for (r, acc) in acc.iter_mut().enumerate() {
            let [b03, b47] = sums[r];
            let x4 = (*xs[r].add(g)).0.as_ptr() as *const v128;
            let a = f32x4_add(
                f32x4_mul(f32x4_convert_i32x4(b03), f32x4_mul(d03, v128_load(x4))),
                f32x4_mul(f32x4_convert_i32x4(b47), f32x4_mul(d47, v128_load(x4.add(1)))),
            );
            let mt = f32x4_add(f32x4_mul(m03, v128_load(x4.add(2))), f32x4_mul(m47, v128_load(x4.add(3))));
            *acc = f32x4_add(*acc, f32x4_add(a, mt));
        }
    }
    // Tail units: bytes 0..16 are block A's GGUF quants, 16..32 block B's; register 2t holds
    // the activations of both blocks' low nibbles (A in half 0, B in half 1), 2t + 1 the high.
    let mut acct = [f32x4_splat(0.0); R];
    for t in 0..w.tail {
        let u = qs.add(8 * groups + 2 * t);
        let (la, ha) = nibbles(v128_load(u));
        let (lb, hb) = nibbles(v128_load(u.add(1)));
        // [dA, dB, mA, mB]
        let w4 = v128_load(sc.add(16 * groups + 4 * t) as *const v128);
        let wd = i32x4_shuffle::<0, 0, 1, 1>(w4, w4);
        for r in 0..R {
            let j = 8 * groups + 2 * t;
            // i16 lane l holds the products of elements 2l, 2l + 1 (and 16 on). A block's sum
            // goes to two f32 lanes as in the other kernels (elements 4i, 4i + 1 in the first,
            // 4i + 2, 4i + 3 in the second), so every build rounds the same: even i16 lanes
            // are gathered before odd ones.
            let split = |s16: v128| i32x4_extadd_pairwise_i16x8(i16x8_shuffle::<0, 2, 4, 6, 1, 3, 5, 7>(s16, s16));
            let sa = split(i16x8_add(dot(act(r, j, 0), la), dot(act(r, j + 1, 0), ha)));
            let sb = split(i16x8_add(dot(act(r, j, 1), lb), dot(act(r, j + 1, 1), hb)));
            // [A, A, B, B]
            let sum = i32x4_add(i32x4_shuffle::<0, 2, 4, 6>(sa, sb), i32x4_shuffle::<1, 3, 5, 7>(sa, sb));
            let xsc = (*xs[r].add(groups + t)).0.as_ptr();
            // xsc[2..6] = [dA, dA, dB, dB]; xsc[8..12] = [0, 0, sA, sB]
            let dd = f32x4_mul(wd, v128_load(xsc.add(2) as *const v128));
            acc[r] = f32x4_add(acc[r], f32x4_mul(f32x4_convert_i32x4(sum), dd));
            acct[r] = f32x4_add(acct[r], f32x4_mul(w4, v128_load(xsc.add(8) as *const v128)));
        }
    }
    std::array::from_fn(|r| {
        let (a, t) = (acc[r], acct[r]);
        (f32x4_extract_lane::<0>(a) + f32x4_extract_lane::<1>(a))
            + (f32x4_extract_lane::<2>(a) + f32x4_extract_lane::<3>(a))
            + (f32x4_extract_lane::<2>(t) + f32x4_extract_lane::<3>(t))
    })
}

pub(super) fn matmul(w: &Q41Matrix, x: &[f32], m: usize, out: &mut [f32]) {
    run_tiles!(w, x, m, out)
}
