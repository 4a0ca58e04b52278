//! The Q6_K kernel for wasm with relaxed SIMD (the `wasm` module of q6_k.rs in that build).
//!
//! Q6_K scales sub-blocks of 16, so the byte products stop at i16: `i16x8.relaxed_dot_i8x16_
//! i7x16_s` multiplies 16 activation bytes (any i8) by 16 six-bit quants (the 7-bit operand)
//! and adds neighbouring pairs. Byte `2b + t` of a register is element `16b + 2j + t`
//! (q6_k.rs), so i16 lane `l` of a register's half `h` belongs to sub-block `8h + l`. Two
//! registers add up in i16 (4 products of at most 63 * 128; each pair sum is at most half of
//! that, so no engine saturates), then `i32x4.dot_i16x8_s` with the scales widens and scales.

use super::{Q6KMatrix, Q8KActs, D, QK_K, REC, SCALES};
use crate::backend::rows::{bytes_and as and, f16_to_f32, sum_lanes, Dot};
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

    #[inline(always)]
    unsafe fn dot<const R: usize>(&self, i: usize, r0: usize) -> [f32; R] {
        let (w, a) = (self.w, self.a);
        let nsb = w.k / QK_K;
        let mut acc = [f32x4_splat(0.0); R];
        for s in 0..nsb {
            let u = w.data.as_ptr().add((i * nsb + s) * REC);
            let d = f16_to_f32(std::ptr::read_unaligned(u.add(D) as *const u16));
            let sc16 = v128_load(u.add(SCALES) as *const v128);
            let scs = [i16x8_extend_low_i8x16(sc16), i16x8_extend_high_i8x16(sc16)];
            let mut si = [i32x4_splat(0); R];
            for (h, &sc) in scs.iter().enumerate() {
                // Three units at a time (their low 6 bits and the register their top bits
                // make), every row taking those four registers at once: all 8 of a half and
                // their 6 units live together spilled to the stack in V8.
                for g in 0..2 {
                    let v: [v128; 3] =
                        std::array::from_fn(|l| v128_load(u.add(32 * (3 * g + l) + 16 * h) as *const v128));
                    // Bits 6..7 of the three units make one register (masked before the u16 shifts).
                    let top = v128_or(
                        v128_or(u16x8_shr(and(v[0], 0xC0), 6), u16x8_shr(and(v[1], 0xC0), 4)),
                        u16x8_shr(and(v[2], 0xC0), 2),
                    );
                    let wr =
                        [(3 * g, and(v[0], 63)), (3 * g + 1, and(v[1], 63)), (3 * g + 2, and(v[2], 63)), (6 + g, top)];
                    for (r, si) in si.iter_mut().enumerate() {
                        let y = a.q.as_ptr().add(8 * ((r0 + r) * nsb + s)) as *const v128;
                        let p = |(l, w): (usize, v128)| i16x8_relaxed_dot_i8x16_i7x16(v128_load(y.add(2 * l + h)), w);
                        let pair = |i: usize| i32x4_dot_i16x8(i16x8_add(p(wr[i]), p(wr[i + 1])), sc);
                        *si = i32x4_add(*si, i32x4_add(pair(0), pair(2)));
                    }
                }
            }
            for (r, acc) in acc.iter_mut().enumerate() {
                let j = (r0 + r) * nsb + s;
                let bs = a.bsums.as_ptr().add(j) as *const v128;
                let off =
                    i32x4_add(i32x4_dot_i16x8(v128_load(bs), scs[0]), i32x4_dot_i16x8(v128_load(bs.add(1)), scs[1]));
                let sum = i32x4_sub(si[r], i32x4_shl(off, 5));
                *acc = f32x4_add(*acc, f32x4_mul(f32x4_convert_i32x4(sum), f32x4_splat(d * a.d[j])));
            }
        }
        sum_lanes(&acc)
    }
}
