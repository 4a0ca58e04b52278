//! glibc's `expf` on eight lanes, with glibc's bits: attention's softmax calls it once per
//! cached position and head, and called one score at a time it was a tenth of a decode step at
//! long contexts (natively; wasm has its own four-lane `expf`, libm.rs).
//!
//! The algorithm is ARM's optimized-routines `e_expf.c`, which glibc (since 2.27) builds with FMA
//! for x86-64-v3 CPUs (`__expf_fma`, what `f32::exp` calls there). In doubles:
//! `kd = fma(N/ln2, x, SHIFT)` rounds x·N/ln2 to an integer k held in kd's low bits,
//! `r = fma(N/ln2, x, -(kd - SHIFT))`, `s = 2^(k/N)` from a 32-entry table plus k's high bits
//! in the exponent, and `exp(x) = s · ((C0·r + C1)·r² + (C2·r + 1))`, every `a·b + c` one FMA
//! as glibc's compiled code has them (read off its disassembly), then rounded to f32 once.
//! Doing the same operations in the same order on four doubles gives the same bits (tested
//! over every f32 attention can pass it). Lanes with |x| >= 88, infinities and NaN included,
//! take glibc's own call: its overflow and underflow paths.

use core::arch::x86_64::*;

/// N / ln 2, N = 32 (`__exp2f_data.invln2_scaled`).
const INV_LN2_N: u64 = 0x4047_1547_652b_82fe;
/// 1.5 · 2^52: adding it rounds to an integer in the low bits (`shift`).
const SHIFT: u64 = 0x4338_0000_0000_0000;
/// The polynomial (`poly_scaled`), highest degree first.
const C: [u64; 3] = [0x3ebc_6af8_4b91_2394, 0x3f2e_bfce_50fa_c4f3, 0x3f96_2e42_ff0c_52d6];
/// `tab[i] = bits(2^(i/32)) - (i << 47)` (`__exp2f_data.tab`, copied from glibc 2.36's libm).
static TAB: [u64; 32] = [
    0x3ff0000000000000,
    0x3fefd9b0d3158574,
    0x3fefb5586cf9890f,
    0x3fef9301d0125b51,
    0x3fef72b83c7d517b,
    0x3fef54873168b9aa,
    0x3fef387a6e756238,
    0x3fef1e9df51fdee1,
    0x3fef06fe0a31b715,
    0x3feef1a7373aa9cb,
    0x3feedea64c123422,
    0x3feece086061892d,
    0x3feebfdad5362a27,
    0x3feeb42b569d4f82,
    0x3feeab07dd485429,
    0x3feea47eb03a5585,
    0x3feea09e667f3bcd,
    0x3fee9f75e8ec5f74,
    0x3feea11473eb0187,
    0x3feea589994cce13,
    0x3feeace5422aa0db,
    0x3feeb737b0cdc5e5,
    0x3feec49182a3f090,
    0x3feed503b23e255d,
    0x3feee89f995ad3ad,
    0x3feeff76f2fb5e47,
    0x3fef199bdd85529c,
    0x3fef3720dcef9069,
    0x3fef5818dcfba487,
    0x3fef7c97337b9b5f,
    0x3fefa4afa2a490da,
    0x3fefd0765b6e4540,
];

/// `exp` of four floats on the main path (|x| < 88).
#[inline(always)]
unsafe fn exp4(x: __m128) -> __m128 {
    let pd = |b: u64| _mm256_set1_pd(f64::from_bits(b));
    let (inv, shift) = (pd(INV_LN2_N), pd(SHIFT));
    let xd = _mm256_cvtps_pd(x);
    let kd = _mm256_fmadd_pd(inv, xd, shift);
    let ki = _mm256_castpd_si256(kd);
    let kd = _mm256_sub_pd(kd, shift);
    let r = _mm256_fmsub_pd(inv, xd, kd);
    let idx = _mm256_and_si256(ki, _mm256_set1_epi64x(31));
    let t = _mm256_i64gather_epi64::<8>(TAB.as_ptr() as *const i64, idx);
    let s = _mm256_castsi256_pd(_mm256_add_epi64(t, _mm256_slli_epi64::<47>(ki)));
    let z = _mm256_fmadd_pd(r, pd(C[0]), pd(C[1]));
    let r2 = _mm256_mul_pd(r, r);
    let y = _mm256_fmadd_pd(r, pd(C[2]), _mm256_set1_pd(1.0));
    let y = _mm256_fmadd_pd(z, r2, y);
    _mm256_cvtpd_ps(_mm256_mul_pd(y, s))
}

/// `x = exp(x - max)` for every value, as `(x - max).exp()` computes it with glibc.
pub fn exp_shifted(xs: &mut [f32], max: f32) {
    let (blocks, rest) = xs.as_chunks_mut::<8>();
    for b in blocks {
        // SAFETY: AVX2 and FMA are enabled for this build (the module's cfg); `b` is 8 floats.
        unsafe {
            let x = _mm256_sub_ps(_mm256_loadu_ps(b.as_ptr()), _mm256_set1_ps(max));
            // glibc's test: the top 12 bits of |x| at or above those of 88.0.
            let top = _mm256_srli_epi32::<20>(_mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(0x7fff_ffff)));
            if _mm256_movemask_epi8(_mm256_cmpgt_epi32(top, _mm256_set1_epi32(0x42a))) != 0 {
                _mm256_storeu_ps(b.as_mut_ptr(), x);
                for v in b.iter_mut() {
                    *v = v.exp();
                }
                continue;
            }
            let lo = exp4(_mm256_castps256_ps128(x));
            let hi = exp4(_mm256_extractf128_ps::<1>(x));
            _mm256_storeu_ps(b.as_mut_ptr(), _mm256_set_m128(hi, lo));
        }
    }
    for v in rest {
        *v = (*v - max).exp();
    }
}

#[cfg(test)]
mod tests {
    use super::exp_shifted;

    fn check(xs: &[f32], max: f32) {
        let mut got = xs.to_vec();
        exp_shifted(&mut got, max);
        for (&x, &g) in xs.iter().zip(&got) {
            let want = (x - max).exp();
            assert!(
                g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                "exp({x} - {max}): {g} against {want}"
            );
        }
    }

    /// Every f32 from 0 down to -104 (the softmax's inputs are scores minus their maximum;
    /// below about -88 glibc's own call runs), every 61st one below that and of the positive
    /// side, NaN and the infinities.
    #[test]
    fn exp_shifted_gives_glibc_bits() {
        let mut buf = Vec::with_capacity(1 << 20);
        let mut run = |bits: &mut dyn Iterator<Item = u32>| loop {
            buf.clear();
            buf.extend(bits.take(1 << 20).map(f32::from_bits));
            if buf.is_empty() {
                break;
            }
            check(&buf, 0.0);
        };
        run(&mut (0x8000_0000u32..0xc2d0_0000));
        run(&mut (0xc2d0_0000u32..=0xff80_0000).step_by(61));
        run(&mut (0u32..=0x7f80_0000).step_by(61));
        check(&[f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.5, 1.0, -3.0, 88.7, -103.0, -104.0], 0.0);
        // A shift that is not zero, and a tail shorter than 8.
        check(&[-1.0, 2.5, 3.0, 7.25, -80.0, 10.0, 0.0, 1e-30, 4.0, -0.0, 9.5], 10.0);
    }
}
