//! The wasm weight kernels (Q4_K, Q6_K, Q5_0, Q8_0, Q4_1) of this build, plain simd128 or relaxed
//! SIMD, run by wasm-bindgen-test: each against its scalar path and against an f64 product of
//! candle's dequantized weights with the activations as candle quantizes them, on awkward
//! shapes and 1 to 9 rows.
//!
//! Run (simd128, in Node): `CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
//! cargo test --release --target wasm32-unknown-unknown --test wasm_kernels`; the relaxed-SIMD
//! kernels need `RUSTFLAGS="-C target-feature=+simd128,+relaxed-simd"` and an engine that
//! has them (Chromium: `WASM_BINDGEN_USE_BROWSER=1`; `./build.sh test` runs both).
#![cfg(target_arch = "wasm32")]

use amulet::backend::q4_1::{self, Q41Matrix};
use amulet::backend::q4_k::Q4KMatrix;
use amulet::backend::q5_0::Q50Matrix;
use amulet::backend::q6_k::Q6KMatrix;
use amulet::backend::q8_0::Q80Matrix;
use amulet::backend::rows::KERNEL;
use amulet::rng::Rng;
use amulet::Result;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use wasm_bindgen_test::*;

/// What the test needs of a kernel module.
trait Kernel: Sized {
    const DTYPE: GgmlDType;
    /// The activation quantization it uses (Q8_K or Q8_0).
    const ACTS: GgmlDType;
    /// Tolerance against the f64 product, relative to its largest output.
    const DEQUANT_TOL: f32 = 1e-4;
    fn load(bytes: &[u8], n: usize, k: usize) -> Result<Self>;
    fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()>;
    fn matmul_scalar(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()>;
}

macro_rules! kernel {
    ($t:ty, $dtype:expr, $acts:expr $(, $tol:expr)?) => {
        impl Kernel for $t {
            const DTYPE: GgmlDType = $dtype;
            const ACTS: GgmlDType = $acts;
            $(const DEQUANT_TOL: f32 = $tol;)?
            fn load(bytes: &[u8], n: usize, k: usize) -> Result<Self> {
                <$t>::from_gguf_bytes(bytes, n, k)
            }
            fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
                <$t>::matmul(self, x, m, out)
            }
            fn matmul_scalar(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
                <$t>::matmul_scalar(self, x, m, out)
            }
        }
    };
}

kernel!(Q4KMatrix, GgmlDType::Q4K, GgmlDType::Q8K);
kernel!(Q6KMatrix, GgmlDType::Q6K, GgmlDType::Q8K);
kernel!(Q50Matrix, GgmlDType::Q5_0, GgmlDType::Q8_0);
kernel!(Q80Matrix, GgmlDType::Q8_0, GgmlDType::Q8_0);
// Q4_1 quantizes its activations to Q8_1, whose values are Q8_0's, but a block's `m` term
// takes the activations' sum as Q8_1 keeps it (an f16), which the f64 product does not round.
kernel!(Q41Matrix, GgmlDType::Q4_1, GgmlDType::Q8_0, 2e-3);

/// `values` quantized to `dtype` by candle and back to f32.
fn roundtrip(dtype: GgmlDType, values: &[f32], rows: usize, cols: usize) -> (Vec<u8>, Vec<f32>) {
    let t = Tensor::from_vec(values.to_vec(), (rows, cols), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, dtype).unwrap();
    let back = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (q.data().unwrap().into_owned(), back)
}

fn check<K: Kernel>(shapes: &[(usize, usize)]) {
    let want = if cfg!(target_feature = "relaxed-simd") { "relaxed-simd" } else { "simd128" };
    assert_eq!(KERNEL, want);
    for (si, &(n, k)) in shapes.iter().enumerate() {
        let mut rng = Rng::new(si as u64 + 11);
        let mut w = rng.vec(n * k, 0.1);
        for (i, row) in w.chunks_mut(k).enumerate() {
            let (off, mul) = (((i % 7) as f32 - 3.0) * 0.02, 1.0 + (i % 5) as f32);
            row.iter_mut().enumerate().for_each(|(e, v)| *v = *v * mul * (1.0 + (e / 32 % 4) as f32) + off);
        }
        let (bytes, wf) = roundtrip(K::DTYPE, &w, n, k);
        let ours = K::load(&bytes, n, k).unwrap();
        for m in [1usize, 2, 3, 5, 8, 9] {
            let mut x = rng.vec(m * k, 2.0);
            x[0] = 40.0;
            let (_, xq) = roundtrip(K::ACTS, &x, m, k);
            let mut want = vec![0f32; m * n];
            for r in 0..m {
                for i in 0..n {
                    let s: f64 = (0..k).map(|e| wf[i * k + e] as f64 * xq[r * k + e] as f64).sum();
                    want[r * n + i] = s as f32;
                }
            }
            let (mut simd, mut scalar) = (vec![0f32; m * n], vec![0f32; m * n]);
            ours.matmul(&x, m, &mut simd).unwrap();
            ours.matmul_scalar(&x, m, &mut scalar).unwrap();
            let mag = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            let (tol, dtol) = (1e-4 * mag + 1e-5, K::DEQUANT_TOL * mag + 1e-5);
            let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            let what = format!("{:?} {n}x{k} m={m}", K::DTYPE);
            assert!(diff(&simd, &scalar) <= tol, "{what}: {KERNEL} vs scalar {}", diff(&simd, &scalar));
            assert!(diff(&simd, &want) <= dtol, "{what}: {KERNEL} vs dequantized {}", diff(&simd, &want));
            assert!(diff(&scalar, &want) <= dtol, "{what}: scalar vs dequantized {}", diff(&scalar, &want));
        }
    }
}

#[wasm_bindgen_test]
fn q4_k_simd_matches_scalar_and_dequantized() {
    check::<Q4KMatrix>(&[(37, 256), (100, 768), (19, 2816)]);
}

#[wasm_bindgen_test]
fn q6_k_simd_matches_scalar_and_dequantized() {
    check::<Q6KMatrix>(&[(37, 256), (100, 768), (19, 2816)]);
}

#[wasm_bindgen_test]
fn q5_0_simd_matches_scalar_and_dequantized() {
    // Block counts 1 (a tail only), 4 (a half group only), 7 and 21 (a half group and a tail
    // after none or two groups), 11 (a group and a tail of 3), 28 (896: groups and a half) and
    // 16 (groups only).
    check::<Q50Matrix>(&[(13, 32), (11, 128), (29, 224), (33, 672), (17, 352), (70, 896), (20, 512)]);
}

#[wasm_bindgen_test]
fn q8_0_simd_matches_scalar_and_dequantized() {
    check::<Q80Matrix>(&[(13, 32), (29, 224), (33, 672), (70, 896)]);
}

#[wasm_bindgen_test]
fn q4_1_simd_matches_scalar_and_dequantized() {
    // Its own kernel name (the others share rows::KERNEL); blocks 1 and 7 (tail units only,
    // one padded), 21 (groups and a padded tail), 18 (SmolLM2's 576) and 48 (groups only).
    assert_eq!(q4_1::KERNEL, KERNEL);
    check::<Q41Matrix>(&[(13, 32), (29, 224), (33, 672), (70, 576), (20, 1536)]);
}

/// The kernels' f16 scales: the vector conversion equals `half`'s for all 65,536 bit patterns
/// (subnormals, whose old conversion multiplied an f32 subnormal, included).
#[wasm_bindgen_test]
fn f16_scales_convert_exactly() {
    for h in (0..=u16::MAX).step_by(4) {
        let hs = [h, h + 1, h + 2, h + 3];
        let got = amulet::backend::rows::f16x4_lanes(hs);
        for (g, &h) in got.iter().zip(&hs) {
            let want = half::f16::from_bits(h).to_f32();
            assert!(g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()), "{h:#06x}: {g} vs {want}");
        }
    }
}

/// Eight scales at once (Q5_0's groups): all 65,536 bit patterns, in runs of eight normal
/// numbers (the short path) and in runs where one of the eight is zero, subnormal, infinite or
/// NaN (then every lane takes the full conversion).
#[wasm_bindgen_test]
fn f16_scales_convert_exactly_eight_at_once() {
    let odd = [0x0000u16, 0x8000, 0x0001, 0x83ff, 0x7c00, 0xfc00, 0x7e00, 0x0400];
    for h in (0..=u16::MAX).step_by(8) {
        let run: [u16; 8] = std::array::from_fn(|i| h + i as u16);
        for (j, hs) in
            [run, std::array::from_fn(|i| if i == (h as usize / 8) % 8 { odd[(h as usize / 64) % 8] } else { run[i] })]
                .into_iter()
                .enumerate()
        {
            let got = amulet::backend::rows::f16x8_lanes(hs);
            for (g, &h) in got.iter().zip(&hs) {
                let want = half::f16::from_bits(h).to_f32();
                assert!(
                    g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                    "{h:#06x} (run {j}): {g} vs {want}"
                );
            }
        }
    }
}
