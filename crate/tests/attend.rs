//! The SIMD loops of CPU attention (`backend::attend`) against the plain loops, bit for bit:
//! natively (AVX2 + FMA) with `cargo test`, and in wasm (simd128 in Node, relaxed SIMD's build
//! in Chromium) with wasm-bindgen-test, as `./build.sh test` runs them.

use amulet::backend::attend::{dot_blocks, dot_blocks2, plain, scale_max, weighted_sum, weighted_sum2, LANES};
use amulet::backend::exp::exp_shifted;
use amulet::rng::Rng;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn dot_blocks_gives_the_plain_loops_bits() {
    let mut rng = Rng::new(7);
    // Head sizes of the models (64, 128, 256) and odd ones; block counts around the SIMD group.
    for hd in [1, 3, 64, 128, 256] {
        for blocks in 0..=17 {
            let stride = 3 * hd * LANES; // three kv heads per block, as a cache holds them
            let k = rng.vec(blocks.max(1) * stride, 2.0);
            let q = rng.vec(hd, 2.0);
            let (mut got, mut want) = (vec![[0f32; LANES]; blocks], vec![[1f32; LANES]; blocks]);
            // The second kv head's keys, as attention reads them for a head of its group.
            dot_blocks(&q, &k[hd * LANES..], stride, &mut got);
            plain::dot_blocks(&q, &k[hd * LANES..], stride, &mut want);
            assert_eq!(bits(got.as_flattened()), bits(want.as_flattened()), "head {hd}, {blocks} blocks");
        }
    }
}

#[test]
fn weighted_sum_gives_the_plain_loops_bits() {
    let mut rng = Rng::new(11);
    for hd in [1, 5, 64, 96, 128, 256] {
        for rows in [0, 1, 2, 17, 100] {
            let stride = 2 * hd + 3;
            let v = rng.vec(rows.max(1) * stride, 2.0);
            let w = rng.vec(rows, 2.0);
            // Going on from the outputs' values, whole and in two chunks of rows.
            let start = rng.vec(hd, 2.0);
            let (mut got, mut want, mut chunked) = (start.clone(), start.clone(), start.clone());
            weighted_sum(&w, &v, stride, &mut got);
            plain::weighted_sum(&w, &v, stride, &mut want);
            assert_eq!(bits(&got), bits(&want), "head {hd}, {rows} rows");
            let cut = rows / 3;
            weighted_sum(&w[..cut], &v, stride, &mut chunked);
            weighted_sum(&w[cut..], &v[cut * stride..], stride, &mut chunked);
            assert_eq!(bits(&chunked), bits(&want), "head {hd}, {rows} rows in two chunks");
        }
    }
}

/// The two-head forms (natively on an AVX-512 CPU, one 512-bit register for both heads) give
/// the plain loops' bits for each head.
#[test]
fn two_heads_at_once_give_the_plain_loops_bits() {
    let mut rng = Rng::new(17);
    for hd in [1, 3, 64, 96, 128, 256] {
        for blocks in 0..=17 {
            let stride = 3 * hd * LANES;
            let k = rng.vec(blocks.max(1) * stride, 2.0);
            let (q0, q1) = (rng.vec(hd, 2.0), rng.vec(hd, 2.0));
            let (mut g0, mut g1) = (vec![[0f32; LANES]; blocks], vec![[0f32; LANES]; blocks]);
            let (mut w0, mut w1) = (vec![[1f32; LANES]; blocks], vec![[1f32; LANES]; blocks]);
            dot_blocks2([&q0, &q1], &k[hd * LANES..], stride, [&mut g0, &mut g1]);
            plain::dot_blocks(&q0, &k[hd * LANES..], stride, &mut w0);
            plain::dot_blocks(&q1, &k[hd * LANES..], stride, &mut w1);
            assert_eq!(bits(g0.as_flattened()), bits(w0.as_flattened()), "head 0 of {hd}, {blocks} blocks");
            assert_eq!(bits(g1.as_flattened()), bits(w1.as_flattened()), "head 1 of {hd}, {blocks} blocks");
        }
        for rows in [0, 1, 2, 17, 100] {
            let stride = 2 * hd + 3;
            let v = rng.vec(rows.max(1) * stride, 2.0);
            let (wa, wb) = (rng.vec(rows, 2.0), rng.vec(rows, 2.0));
            let (sa, sb) = (rng.vec(hd, 2.0), rng.vec(hd, 2.0));
            let (mut ga, mut gb, mut pa, mut pb) = (sa.clone(), sb.clone(), sa, sb);
            weighted_sum2([&wa, &wb], &v, stride, [&mut ga, &mut gb]);
            plain::weighted_sum(&wa, &v, stride, &mut pa);
            plain::weighted_sum(&wb, &v, stride, &mut pb);
            assert_eq!(bits(&ga), bits(&pa), "head 0 of {hd}, {rows} rows");
            assert_eq!(bits(&gb), bits(&pb), "head 1 of {hd}, {rows} rows");
        }
    }
}

#[test]
#[should_panic(expected = "different sizes")]
fn two_heads_of_different_sizes_panic() {
    let mut o = [0.0; 4];
    weighted_sum2([&[1.0; 2], &[1.0; 3]], &[0.0; 16], 4, [&mut o.clone(), &mut o]);
}

#[test]
fn scale_max_gives_the_plain_loops_bits_and_passes_over_nan() {
    let mut rng = Rng::new(13);
    for n in [0, 1, 7, 8, 9, 31, 100] {
        let mut a = rng.vec(n, 30.0);
        if n > 3 {
            a[2] = f32::NAN;
        }
        let mut b = a.clone();
        let (ma, mb) = (scale_max(&mut a, 0.125), plain::scale_max(&mut b, 0.125));
        assert_eq!(ma.to_bits(), mb.to_bits(), "{n} scores");
        assert_eq!(bits(&a), bits(&b), "{n} scores");
    }
    assert_eq!(scale_max(&mut [f32::NAN; 9], 1.0), f32::NEG_INFINITY);
}

#[test]
#[should_panic(expected = "dot_blocks")]
#[cfg(not(target_arch = "wasm32"))] // a panic aborts the whole wasm test run
fn short_keys_panic_before_reading() {
    dot_blocks(&[1.0; 4], &[0.0; 31], 32, &mut [[0.0; LANES]]);
}

#[test]
fn exp_shifted_gives_f32_exp_bits() {
    // Every 4099th bit pattern (both signs, NaN, infinities, subnormals) and the edges of
    // libm's branches, shifted by zero (exact) and by a score maximum.
    let mut x: Vec<f32> = (0..=u32::MAX / 4099).map(|i| f32::from_bits(i * 4099)).collect();
    while !x.len().is_multiple_of(4) {
        x.push(1.0);
    }
    // Groups of four edges (both signs, each one ulp apart), so that whole lanes of the wasm
    // form's fast path (all four lanes neither tiny nor past 87.0) meet its edges too.
    for b in [0x3900_0000u32, 0x3eb1_7218, 0x3f85_1592, 0x42ae_0000, 0x42ae_ac50, 0x42b1_7218, 0x42cf_f1b5, 0x7f80_0000]
    {
        for sign in [1.0f32, -1.0] {
            for d in 0..4 {
                x.push(sign * f32::from_bits(b - 2 + d));
            }
        }
    }
    x.extend([0.0, -0.0, f32::MIN_POSITIVE, -f32::MIN_POSITIVE, f32::MAX, f32::MIN]);
    for max in [0.0f32, 3.25] {
        let mut got = x.clone();
        exp_shifted(&mut got, max);
        for (&a, &g) in x.iter().zip(&got) {
            let want = (a - max).exp();
            assert!(g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()), "exp({a} - {max}): {g} vs {want}");
        }
    }
}
