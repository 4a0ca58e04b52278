//! Tests every weight kernel module runs the same way: against candle's quantized matmul and
//! its dequantization (with an f64 matmul), SIMD against scalar, row ranges, concatenation,
//! the lossless repack and the typed errors.

use std::ops::Range;

use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

use crate::error::{AmuletError, Result};
use crate::rng::Rng;

/// One matrix shape under test.
pub struct Case {
    pub n: usize,
    pub k: usize,
}

/// The face each kernel module shows the shared tests.
pub trait Kernel: Sized + Clone {
    type Acts;
    const DTYPE: GgmlDType;
    fn load(bytes: &[u8], n: usize, k: usize) -> Result<Self>;
    fn to_gguf(&self) -> Vec<u8>;
    fn concat(parts: &[Self]) -> Result<Self>;
    fn dims(&self) -> (usize, usize);
    fn storage(&self) -> usize;
    fn dequant(&self, i: usize) -> Vec<f32>;
    fn prepare(&self, x: &[f32], m: usize) -> Result<Self::Acts>;
    fn run(&self, a: &Self::Acts, rows: Range<usize>, out: &mut [f32], ld: usize) -> Result<()>;
    fn run_scalar(&self, a: &Self::Acts, rows: Range<usize>, out: &mut [f32], ld: usize) -> Result<()>;
    fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()>;
    /// `run` on an x86 tier.
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
    fn run_on(
        &self,
        tier: super::x86::Tier,
        a: &Self::Acts,
        rows: Range<usize>,
        out: &mut [f32],
        ld: usize,
    ) -> Result<()>;
}

/// `Kernel` for a matrix type with the common method names (Q4_K, Q6_K, Q5_0).
macro_rules! kernel_for_tests {
    ($ty:ident, $acts:ty, $dtype:expr) => {
        impl $crate::backend::testutil::Kernel for $ty {
            type Acts = $acts;
            const DTYPE: candle_core::quantized::GgmlDType = $dtype;
            fn load(bytes: &[u8], n: usize, k: usize) -> Result<Self> {
                $ty::from_gguf_bytes(bytes, n, k)
            }
            fn to_gguf(&self) -> Vec<u8> {
                self.to_gguf_bytes()
            }
            fn concat(parts: &[Self]) -> Result<Self> {
                $ty::concat_rows(parts)
            }
            fn dims(&self) -> (usize, usize) {
                (self.rows(), self.cols())
            }
            fn storage(&self) -> usize {
                self.storage_bytes()
            }
            fn dequant(&self, i: usize) -> Vec<f32> {
                self.dequantize_row(i)
            }
            fn prepare(&self, x: &[f32], m: usize) -> Result<$acts> {
                $ty::prepare(self, x, m)
            }
            fn run(&self, a: &$acts, rows: std::ops::Range<usize>, out: &mut [f32], ld: usize) -> Result<()> {
                $ty::run(self, a, rows, out, ld)
            }
            fn run_scalar(&self, a: &$acts, rows: std::ops::Range<usize>, out: &mut [f32], ld: usize) -> Result<()> {
                $ty::run_scalar(self, a, rows, out, ld)
            }
            fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
                $ty::matmul(self, x, m, out)
            }
            #[cfg(all(
                target_arch = "x86_64",
                target_feature = "avx2",
                target_feature = "fma",
                target_feature = "f16c"
            ))]
            fn run_on(
                &self,
                tier: $crate::backend::x86::Tier,
                a: &$acts,
                rows: std::ops::Range<usize>,
                out: &mut [f32],
                ld: usize,
            ) -> Result<()> {
                $ty::run_on(self, Some(tier), a, rows, out, ld)
            }
        }
    };
}
pub(crate) use kernel_for_tests;

/// The activations as the kernels see them: quantized (like candle) and back to f32.
pub fn roundtrip(dtype: GgmlDType, x: &[f32]) -> Vec<f32> {
    use super::acts::{quantize_q8_0_scalar, quantize_q8_k_scalar, QK8_0, QK_K};
    if matches!(dtype, GgmlDType::Q4K | GgmlDType::Q6K) {
        let mut q = [0i8; QK_K];
        x.as_chunks::<QK_K>()
            .0
            .iter()
            .flat_map(|b| {
                let d = quantize_q8_k_scalar(b, &mut q);
                q.map(|v| d * v as f32)
            })
            .collect()
    } else {
        let mut q = [0i8; QK8_0];
        x.as_chunks::<QK8_0>()
            .0
            .iter()
            .flat_map(|b| {
                let (d, _) = quantize_q8_0_scalar(b, &mut q);
                q.map(|v| d * v as f32)
            })
            .collect()
    }
}

/// Random weights quantized by candle: (GGUF bytes, candle's QTensor). Rows get offsets and
/// scales of their own so that scales, mins and signs vary.
pub fn weights(dtype: GgmlDType, n: usize, k: usize, seed: u64) -> (Vec<u8>, QTensor) {
    let mut rng = Rng::new(seed);
    let mut w = rng.vec(n * k, 0.1);
    for (i, row) in w.chunks_mut(k).enumerate() {
        let (off, mul) = (((i % 7) as f32 - 3.0) * 0.02, 1.0 + (i % 5) as f32);
        for (e, v) in row.iter_mut().enumerate() {
            // Sub-blocks of different ranges exercise the K-quant scales.
            *v = *v * mul * (1.0 + (e / 32 % 4) as f32) + off;
        }
    }
    let t = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, dtype).unwrap();
    (q.data().unwrap().into_owned(), q)
}

/// Activations with an outlier and, when there is room, an all-zero block of 256.
pub fn activations(m: usize, k: usize, seed: u64) -> Vec<f32> {
    let mut x = Rng::new(seed ^ 0xD1B5_4A32_D192_ED03).vec(m * k, 2.0);
    x[0] = 40.0;
    if m * k >= 768 {
        x[256..512].fill(0.0);
    }
    x
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn mag(v: &[f32]) -> f32 {
    v.iter().fold(0f32, |a, x| a.max(x.abs()))
}

/// candle's QMatMul on a QTensor rebuilt from GGUF bytes.
pub fn candle_matmul(dtype: GgmlDType, bytes: &[u8], n: usize, k: usize, x: &[f32], m: usize) -> Vec<f32> {
    let q = qtensor_from_ggml(dtype, bytes, vec![n, k], &Device::Cpu).unwrap();
    let mm = QMatMul::from_qtensor(q).unwrap();
    let xt = Tensor::from_vec(x.to_vec(), (m, k), &Device::Cpu).unwrap();
    mm.forward(&xt).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// f64 product of candle's dequantized weights with unquantized activations.
fn f64_matmul(w: &[f32], n: usize, k: usize, x: &[f32], m: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for r in 0..m {
        for i in 0..n {
            let s: f64 = (0..k).map(|e| w[i * k + e] as f64 * x[r * k + e] as f64).sum();
            out[r * n + i] = s as f32;
        }
    }
    out
}

pub const MS: [usize; 6] = [1, 2, 3, 5, 8, 9];

/// SIMD and scalar against candle's QMatMul (same activation quantization: tight), against an
/// f64 product of candle's dequantized weights with the activations as quantized (tight: only
/// float rounding differs), and against the f64 product with the f32 activations (within the
/// exact bound of the activation quantization error, sum |w| * |x - x_q|).
pub fn matches_candle<K: Kernel>(cases: &[Case]) {
    for (ci, c) in cases.iter().enumerate() {
        let (n, k) = (c.n, c.k);
        let (bytes, qt) = weights(K::DTYPE, n, k, 100 + ci as u64);
        let ours = K::load(&bytes, n, k).unwrap();
        let wf = qt.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for m in MS {
            let x = activations(m, k, (ci * 100 + m) as u64);
            let xq = roundtrip(K::DTYPE, &x);
            let want_q = f64_matmul(&wf, n, k, &xq, m);
            let exact = f64_matmul(&wf, n, k, &x, m);
            let mut simd = vec![0f32; m * n];
            ours.matmul(&x, m, &mut simd).unwrap();
            let a = ours.prepare(&x, m).unwrap();
            let mut scalar = vec![0f32; m * n];
            ours.run_scalar(&a, 0..n, &mut scalar, n).unwrap();
            let what = format!("{:?} {n}x{k} m={m}", K::DTYPE);
            let tol = 1e-4 * mag(&want_q) + 1e-5;
            let (ds, dc) = (max_abs_diff(&simd, &want_q), max_abs_diff(&scalar, &want_q));
            assert!(ds <= tol, "{what}: {} vs dequantized f64 {ds} (tol {tol})", super::rows::KERNEL);
            assert!(dc <= tol, "{what}: scalar vs dequantized f64 {dc} (tol {tol})");
            assert!(max_abs_diff(&simd, &scalar) <= tol, "{what}: SIMD vs scalar");
            // candle's generic Q5_0 dot debug-asserts an even block count (no SIMD path either).
            let odd_q5_0 = K::DTYPE == GgmlDType::Q5_0 && (k / 32) % 2 == 1;
            if !(cfg!(debug_assertions) && odd_q5_0) {
                let want = candle_matmul(K::DTYPE, &bytes, n, k, &x, m);
                let dc = max_abs_diff(&simd, &want);
                assert!(dc <= tol, "{what}: {} vs candle {dc} (tol {tol})", super::rows::KERNEL);
            }
            for r in 0..m {
                for i in 0..n {
                    let bound: f64 =
                        (0..k).map(|e| (wf[i * k + e] as f64 * (x[r * k + e] - xq[r * k + e]) as f64).abs()).sum();
                    let d = (simd[r * n + i] - exact[r * n + i]).abs() as f64;
                    assert!(d <= bound * 1.001 + tol as f64, "{what} [{r}, {i}]: vs f32 activations {d} > {bound}");
                }
            }
        }
    }
}

/// GGUF bytes survive the repack; rows dequantize like candle's `dequantize`.
pub fn lossless<K: Kernel>(cases: &[Case]) {
    for (ci, c) in cases.iter().enumerate() {
        let (bytes, qt) = weights(K::DTYPE, c.n, c.k, 7 + ci as u64);
        let ours = K::load(&bytes, c.n, c.k).unwrap();
        assert_eq!(ours.dims(), (c.n, c.k));
        assert!(ours.to_gguf() == bytes, "{:?} {}x{}: bytes changed", K::DTYPE, c.n, c.k);
        // Q4_K keeps its scales unpacked: 148 bytes per 144 (see q4_k.rs).
        let extra = if K::DTYPE == GgmlDType::Q4K { bytes.len() / 36 } else { 0 };
        assert_eq!(ours.storage(), bytes.len() + extra);
        let want = qt.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for i in 0..c.n {
            assert!(ours.dequant(i) == want[i * c.k..(i + 1) * c.k], "{:?} row {i}", K::DTYPE);
        }
    }
}

/// x86: `run` on every tier gives the AVX2 tier's bits, and asking for a tier this CPU lacks is
/// an error. Returns the AVX2 result and the tiers that ran.
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
pub fn tiers_give_avx2_bits(
    what: &str,
    run: impl Fn(super::x86::Tier) -> Result<Vec<f32>>,
) -> (Vec<f32>, Vec<super::x86::Tier>) {
    use super::x86::Tier;
    let avx2 = run(Tier::Avx2).unwrap();
    let mut ran = Vec::new();
    for tier in Tier::ALL {
        if !tier.here() {
            assert!(run(tier).is_err(), "{what}: {tier:?} where the CPU lacks it");
            continue;
        }
        assert_eq!(bits(&avx2), bits(&run(tier).unwrap()), "{what}: {tier:?}");
        ran.push(tier);
    }
    (avx2, ran)
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// x86: every tier gives the AVX2 tier's bits (the same integer sums, the same float steps),
/// for every activation-row count and for a range of rows (`tiers_give_avx2_bits`).
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
pub fn tiers_agree<K: Kernel>(cases: &[Case]) {
    for (ci, c) in cases.iter().enumerate() {
        let (n, k) = (c.n, c.k);
        let w = K::load(&weights(K::DTYPE, n, k, 300 + ci as u64).0, n, k).unwrap();
        for m in [1, 2, 3, 4, 5, 7, 8, 9, 17] {
            let a = w.prepare(&activations(m, k, 400 + m as u64), m).unwrap();
            let what = format!("{:?} {n}x{k}, m = {m}", K::DTYPE);
            let (avx2, ran) = tiers_give_avx2_bits(&what, |tier| {
                let mut out = vec![0f32; m * n];
                w.run_on(tier, &a, 0..n, &mut out, n).map(|_| out)
            });
            let rows = n / 3..n;
            for tier in ran {
                let mut part = vec![0f32; m * rows.len()];
                w.run_on(tier, &a, rows.clone(), &mut part, rows.len()).unwrap();
                for r in 0..m {
                    let want = &avx2[r * n + rows.start..(r + 1) * n];
                    let got = &part[r * rows.len()..(r + 1) * rows.len()];
                    assert_eq!(bits(got), bits(want), "{what}, {tier:?} rows {rows:?}");
                }
            }
        }
    }
    if !super::x86::Tier::Avx512.here() {
        eprintln!("this CPU runs only the tiers up to {}", super::x86::tier());
    }
}

/// Runs over split row ranges (into strided outputs) and concatenated matrices give what one
/// whole matmul gives, bit for bit.
pub fn ranges_and_concat<K: Kernel>(k: usize) {
    let ns = [45usize, 16, 19];
    let parts: Vec<K> = ns
        .iter()
        .enumerate()
        .map(|(p, &n)| K::load(&weights(K::DTYPE, n, k, 50 + p as u64).0, n, k).unwrap())
        .collect();
    let fused = K::concat(&parts).unwrap();
    let n: usize = ns.iter().sum();
    assert_eq!(fused.dims(), (n, k));
    assert_eq!(fused.storage(), parts.iter().map(|p| p.storage()).sum::<usize>());
    for m in [1usize, 2, 7, 11] {
        let x = activations(m, k, 90 + m as u64);
        let mut whole = vec![0f32; m * n];
        fused.matmul(&x, m, &mut whole).unwrap();
        // Three threads' worth of ranges over one prepared set, each into its own buffer.
        let a = fused.prepare(&x, m).unwrap();
        for cuts in [[0, 1, 30, n], [0, 17, 17, n], [0, 40, 79, n]] {
            let mut joined = vec![0f32; m * n];
            for w in cuts.windows(2) {
                let len = w[1] - w[0];
                let mut own = vec![f32::NAN; m * len];
                fused.run(&a, w[0]..w[1], &mut own, len).unwrap();
                for r in 0..m {
                    joined[r * n + w[0]..r * n + w[1]].copy_from_slice(&own[r * len..(r + 1) * len]);
                }
            }
            assert!(joined == whole, "{:?} m={m} cuts {cuts:?}", K::DTYPE);
        }
        // Parts written straight into their columns of a shared output.
        let mut cols = vec![f32::NAN; m * n];
        let mut off = 0;
        for p in &parts {
            let pa = p.prepare(&x, m).unwrap();
            p.run(&pa, 0..p.dims().0, &mut cols[off..], n).unwrap();
            off += p.dims().0;
        }
        assert!(cols == whole, "{:?} m={m}: parts vs fused", K::DTYPE);
    }
    let other = K::load(&weights(K::DTYPE, 3, 2 * k, 1).0, 3, 2 * k).unwrap();
    assert!(matches!(K::concat(&[parts[0].clone(), other]), Err(AmuletError::BadModel(_))));
    assert!(matches!(K::concat(&[]), Err(AmuletError::BadModel(_))));
}

/// Wrong sizes are typed errors, never panics.
pub fn bad_inputs<K: Kernel>(block: usize, block_bytes: usize) {
    let (n, k) = (8, 2 * block);
    let (bytes, _) = weights(K::DTYPE, n, k, 9);
    assert_eq!(bytes.len(), n * 2 * block_bytes);
    let bad = |r: Result<K>| match r {
        Err(AmuletError::BadModel(msg)) => msg,
        Err(e) => panic!("expected BadModel, got {e:?}"),
        Ok(_) => panic!("expected BadModel, got a matrix"),
    };
    let msg = bad(K::load(&bytes[..bytes.len() - 1], n, k));
    assert!(msg.contains(&format!("got {}", bytes.len() - 1)), "{msg}");
    bad(K::load(&bytes, n, k - 1));
    bad(K::load(&bytes, n, 0));
    bad(K::load(&bytes, 0, k));
    bad(K::load(&bytes, usize::MAX / 8, k));
    let ours = K::load(&bytes, n, k).unwrap();
    let x = vec![0.5f32; 2 * k];
    let mut out = vec![0f32; 2 * n];
    assert!(ours.matmul(&x, 2, &mut out).is_ok());
    let compute = |r: Result<()>| assert!(matches!(r, Err(AmuletError::Compute(_))), "{r:?}");
    compute(ours.matmul(&x[1..], 2, &mut out));
    compute(ours.matmul(&x, 3, &mut out));
    compute(ours.matmul(&x, 2, &mut out[1..]));
    compute(ours.matmul(&x, usize::MAX, &mut out));
    compute(ours.prepare(&x[..k - 1], 1).map(|_| ()));
    let a = ours.prepare(&x, 2).unwrap();
    compute(ours.run(&a, 0..n + 1, &mut out, n));
    #[allow(clippy::reversed_empty_ranges)]
    compute(ours.run(&a, 5..4, &mut out, n));
    compute(ours.run(&a, 0..n, &mut out, n - 1));
    compute(ours.run(&a, 0..n, &mut out[..2 * n - 1], n));
    compute(ours.run_scalar(&a, 0..n, &mut out[..2 * n - 1], n));
    compute(ours.run(&a, 0..n, &mut out, usize::MAX));
    // Activations of another width.
    let wide = K::load(&weights(K::DTYPE, 2, 2 * k, 3).0, 2, 2 * k).unwrap();
    let aw = wide.prepare(&vec![0.5; 2 * k], 1).unwrap();
    compute(ours.run(&aw, 0..n, &mut out, n));
    // Empty products are not errors.
    assert!(ours.matmul(&[], 0, &mut []).is_ok());
    assert!(ours.run(&a, 3..3, &mut [], 0).is_ok());
}
