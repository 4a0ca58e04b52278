//! The Q5_0 kernel for wasm with relaxed SIMD (the `wasm` module of q5_0.rs in that build).
//!
//! `i16x8.relaxed_dot_i8x16_i7x16_s` multiplies 16 activation bytes (any i8) by 16 weight
//! bytes (the 7-bit operand: our quants are 0..31) and adds neighbouring pairs: one
//! `pmaddubsw` on x86 hosts, the AVX2 kernel's `maddubs` at half the width. Byte `4b + t` of
//! register `j` is element `4j + t` of block `b` (q5_0.rs), so i16 lanes `2b, 2b + 1` of a
//! register's half `h` belong to block `4h + b`: four registers add up in i16 (8 products of
//! at most 31 * 128; each pair sum is far from saturating, so every engine gives the exact
//! integer), and one pairwise widening per four registers gives the block sums, with no
//! shuffles. (The i32 variant of the dot, `relaxed_dot_i8x16_i7x16_add`, widens inside every
//! instruction: V8 emits three instructions and a constant for it, and it ran no faster than
//! plain simd128. Where the CPU has AVX-VNNI, V8 now emits one `vpdpbusd`: in Chromium 156 on
//! such a CPU, the 0.5B at 1 thread, two runs alternating, it took the prefill from 86-87 to
//! 89-95 tok/s and left decode where it was, 14.8-16.6 against 16.0-16.1 tok/s, so one body
//! serves both.)

use super::{Q50Matrix, Q8Acts, GB, GROUP, GROUP_D, HALF, HALF_D, QK8_0, TAIL};
use crate::backend::acts::{grouped_blocks, grp_slots};
use crate::backend::rows::{bytes_and as and, f16_to_f32, f16x8, sum_lanes, Dot};
use core::arch::wasm32::*;

pub(super) struct Kernel<'a> {
    pub w: &'a Q50Matrix,
    pub a: &'a Q8Acts,
}

/// 16 bytes: 0x10 where bit `e` of `bits` (16 of them) is set.
#[inline(always)]
fn high_bits(bits: u32) -> v128 {
    let x = u16x8_splat(bits as u16);
    let spread = i8x16_swizzle(x, i8x16(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1));
    let one = u8x16(1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128);
    and(i8x16_eq(v128_and(spread, one), one), 16)
}

// SAFETY: as for the x86 kernel: whole groups and blocks of row `i`, rows r0..r0 + R.
unsafe impl Dot for Kernel<'_> {
    fn rows(&self) -> usize {
        self.w.n
    }
    fn acts(&self) -> usize {
        self.a.rows()
    }
    fn row_bytes(&self) -> usize {
        self.w.k / QK8_0 * 22
    }
    fn stream(&self) -> &[u8] {
        self.w.data.bytes()
    }

    #[inline(always)]
    unsafe fn dot<const R: usize>(&self, i: usize, r0: usize) -> [f32; R] {
        let (w, a) = (self.w, self.a);
        let (nb, groups, half) = (w.k / QK8_0, w.groups, w.half());
        let (slots, grouped) = (grp_slots(nb), grouped_blocks(nb));
        let tb = nb - grouped;
        let row = w.data.as_ptr().add(i * nb * 22);
        let mut acc = [f32x4_splat(0.0); R];
        // Half `h` of slot `g`, whose units of `unit` bytes start at `u`: four blocks' sums
        // for each row.
        let sums = |u: *const u8, unit: usize, g: usize, h: usize| -> [v128; R] {
            let v: [v128; 5] = std::array::from_fn(|l| v128_load(u.add(unit * l + 16 * h) as *const v128));
            // The pieces of registers 5..7 (see PIECES), masked before the u16 shifts so
            // that no neighbouring byte's bits come along.
            let wr = [
                and(v[0], 31),
                and(v[1], 31),
                and(v[2], 31),
                and(v[3], 31),
                and(v[4], 31),
                v128_or(u16x8_shr(and(v[0], 0xE0), 5), u16x8_shr(and(v[1], 0x60), 2)),
                v128_or(
                    v128_or(u16x8_shr(and(v[1], 0x80), 7), u16x8_shr(and(v[2], 0xE0), 4)),
                    u16x8_shr(and(v[3], 0x20), 1),
                ),
                v128_or(u16x8_shr(and(v[3], 0xC0), 6), u16x8_shr(and(v[4], 0xE0), 3)),
            ];
            std::array::from_fn(|r| {
                let y = a.grp.as_ptr().add(((r0 + r) * slots + g) * GB) as *const v128;
                let p = |l: usize| i16x8_relaxed_dot_i8x16_i7x16(v128_load(y.add(2 * l + h)), wr[l]);
                let h0 = i16x8_add(i16x8_add(p(0), p(1)), i16x8_add(p(2), p(3)));
                let h1 = i16x8_add(i16x8_add(p(4), p(5)), i16x8_add(p(6), p(7)));
                i32x4_add(i32x4_extadd_pairwise_i16x8(h0), i32x4_extadd_pairwise_i16x8(h1))
            })
        };
        // Four blocks' sums times their weight and activation scales, into the accumulators.
        let apply = |acc: &mut [v128; R], s: [v128; R], d: v128, b: usize| {
            for (r, acc) in acc.iter_mut().enumerate() {
                let j = (r0 + r) * nb + b;
                let si = f32x4_convert_i32x4(i32x4_sub(s[r], v128_load(a.sum16.as_ptr().add(j) as *const v128)));
                let xd = v128_load(a.d.as_ptr().add(j) as *const v128);
                *acc = f32x4_add(*acc, f32x4_mul(si, f32x4_mul(d, xd)));
            }
        };
        for g in 0..groups {
            let u = row.add(g * GROUP);
            let (s03, s47) = (sums(u, 32, g, 0), sums(u, 32, g, 1));
            let [d03, d47] = f16x8(v128_load(u.add(GROUP_D) as *const v128));
            let mut f = [f32x4_splat(0.0); R];
            apply(&mut f, s03, d03, GB * g);
            apply(&mut f, s47, d47, GB * g + 4);
            for (acc, f) in acc.iter_mut().zip(f) {
                *acc = f32x4_add(*acc, f);
            }
        }
        if half {
            let u = row.add(groups * GROUP);
            // Four scales, twice over: f16x8's short path sees eight normal numbers.
            let [d03, _] = f16x8(v128_load64_splat(u.add(HALF_D) as *const u64));
            apply(&mut acc, sums(u, 16, groups, 0), d03, GB * groups);
        }
        for t in 0..tb {
            let b = grouped + t;
            let rec = row.add(groups * GROUP + HALF * half as usize + t * TAIL);
            let q = v128_load(rec as *const v128);
            let qh = std::ptr::read_unaligned(rec.add(16) as *const u32);
            // Elements 0..16 and 16..32 as quants 0..31.
            let lo = v128_or(and(q, 15), high_bits(qh & 0xFFFF));
            let hi = v128_or(u8x16_shr(q, 4), high_bits(qh >> 16));
            let dw = f16_to_f32(std::ptr::read_unaligned(rec.add(20) as *const u16));
            for (r, acc) in acc.iter_mut().enumerate() {
                let j = (r0 + r) * nb + b;
                let x = a.nat.as_ptr().add(j) as *const v128;
                let p = i16x8_add(
                    i16x8_relaxed_dot_i8x16_i7x16(v128_load(x), lo),
                    i16x8_relaxed_dot_i8x16_i7x16(v128_load(x.add(1)), hi),
                );
                let s = i32x4_add(i32x4_extadd_pairwise_i16x8(p), i32x4(-a.sum16[j], 0, 0, 0));
                *acc = f32x4_add(*acc, f32x4_mul(f32x4_convert_i32x4(s), f32x4_splat(dw * a.d[j])));
            }
        }
        sum_lanes(&acc)
    }
}
