//! The Q4_K kernel for wasm with relaxed SIMD (the `wasm` module of q4_k.rs in that build).
//!
//! `i16x8.relaxed_dot_i8x16_i7x16_s` multiplies 16 activation bytes (any i8) by 16 weight
//! nibbles (the 7-bit operand) and adds neighbouring pairs: one `pmaddubsw` on x86 hosts.
//! Byte `2b + t` of a register is element `16b + 2j + t` (q4_k.rs), so i16 lane `l` of a
//! register's half `h` belongs to sub-block `8h + l` of 16, i.e. sub-block `4h + l / 2` of
//! 32: the 8 registers add up lane-wise in i16 (16 products of at most 15 * 128; each pair
//! sum is far from saturating, so every engine gives the exact integer), and one
//! `i32x4.dot_i16x8_s` with the scales doubled per lane pair yields 4 scaled sub-block sums.

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

    #[inline(always)]
    unsafe fn dot<const R: usize>(&self, i: usize, r0: usize) -> [f32; R] {
        let (w, a) = (self.w, self.a);
        let nsb = w.k / QK_K;
        let m4 = u8x16_splat(0x0F);
        let mut acc = [f32x4_splat(0.0); R];
        for s in 0..nsb {
            let rec = w.data.as_ptr().add((i * nsb + s) * REC);
            let h16 = |at: usize| f16_to_f32(std::ptr::read_unaligned(rec.add(at) as *const u16));
            let (d, dmin) = (h16(META), h16(META + 2));
            // The 8 scales, each on the two i16 lanes of its sub-block of 32, per half.
            let sc16 = u16x8_extend_low_u8x16(v128_load64_zero(rec.add(SC) as *const u64));
            let scs = [
                i16x8_shuffle::<0, 0, 1, 1, 2, 2, 3, 3>(sc16, sc16),
                i16x8_shuffle::<4, 4, 5, 5, 6, 6, 7, 7>(sc16, sc16),
            ];
            let mut si = [i32x4_splat(0); R];
            for (h, &sc) in scs.iter().enumerate() {
                // Unit by unit, every row taking its two registers at once: the 8 registers
                // of a half all live together spilled to the stack in V8 from 2 rows on.
                let mut s16 = [i16x8_splat(0); R];
                for u in 0..4 {
                    let v = v128_load(rec.add(32 * u + 16 * h) as *const v128);
                    let (lo, hi) = (v128_and(v, m4), v128_and(u16x8_shr(v, 4), m4));
                    for (r, s16) in s16.iter_mut().enumerate() {
                        let y = a.q.as_ptr().add(8 * ((r0 + r) * nsb + s)) as *const v128;
                        let p = |l: usize, w: v128| i16x8_relaxed_dot_i8x16_i7x16(v128_load(y.add(2 * l + h)), w);
                        *s16 = i16x8_add(*s16, i16x8_add(p(2 * u, lo), p(2 * u + 1, hi)));
                    }
                }
                for (si, &s16) in si.iter_mut().zip(&s16) {
                    *si = i32x4_add(*si, i32x4_dot_i16x8(s16, sc));
                }
            }
            // The 8 mins times dmin, widened in lanes rather than one byte at a time.
            let m16 = u16x8_extend_low_u8x16(v128_load64_zero(rec.add(MN) as *const u64));
            let dm = f32x4_splat(dmin);
            let mlo = f32x4_mul(f32x4_convert_u32x4(u32x4_extend_low_u16x8(m16)), dm);
            let mhi = f32x4_mul(f32x4_convert_u32x4(u32x4_extend_high_u16x8(m16)), dm);
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
