//! Q8_0 weight matrix times a few f32 rows: the (tied) output projection of the default
//! model, 49,152 x 576, the single largest matrix of a decode step.
//!
//! candle's QMatMul runs its dot product once per (row, output), so with the two Amulet
//! contexts it streams these 30 MB twice per step. Here each weight block is loaded once
//! and used for up to four activation rows. Per (row, output) the arithmetic is candle's
//! own (Q8_0 activation quantisation, AVX2 `maddubs` block sums, one FMA per block, the
//! same horizontal sum), so results are bit-identical to candle.
//!
//! Layout: GGUF's, kept as is: n rows of k/32 blocks of 34 bytes (d: f16, qs: [i8; 32]).

use half::f16;

use crate::error::{AmuletError, Result};

const QK: usize = 32;
const BLOCK: usize = 34;
/// Rows sharing one pass over the weights.
const TILE: usize = 4;

pub struct Q80Matrix {
    n: usize,
    k: usize,
    data: Vec<u8>,
}

impl Q80Matrix {
    /// Takes the bytes as they are (owned bytes are kept without a copy: the 30 MB
    /// embedding read from JS would otherwise exist twice at the load peak).
    pub fn from_gguf_bytes<'a>(data: impl Into<std::borrow::Cow<'a, [u8]>>, n: usize, k: usize) -> Result<Self> {
        let data = data.into();
        if !k.is_multiple_of(QK) {
            return Err(AmuletError::BadModel(format!("Q8_0 rows of {k} are not a multiple of {QK}")));
        }
        let want = n * (k / QK) * BLOCK;
        if data.len() != want {
            return Err(AmuletError::BadModel(format!(
                "Q8_0 matrix {n}x{k} has {} bytes, expected {want}",
                data.len()
            )));
        }
        Ok(Q80Matrix { n, k, data: data.into_owned() })
    }

    pub fn rows(&self) -> usize {
        self.n
    }

    pub fn cols(&self) -> usize {
        self.k
    }

    pub fn storage_bytes(&self) -> usize {
        self.data.len()
    }

    fn block(&self, row: usize, b: usize) -> (f32, &[u8]) {
        let off = (row * (self.k / QK) + b) * BLOCK;
        let d = f16::from_le_bytes([self.data[off], self.data[off + 1]]).to_f32();
        (d, &self.data[off + 2..off + BLOCK])
    }

    /// Row `i` as f32 (d * q): the embedding lookup of a tied embedding matrix.
    pub fn dequantize_row_into(&self, i: usize, out: &mut [f32]) -> Result<()> {
        if i >= self.n || out.len() != self.k {
            return Err(AmuletError::Compute(format!("embedding row {i} of {} (width {})", self.n, self.k)));
        }
        for b in 0..self.k / QK {
            let (d, qs) = self.block(i, b);
            for (o, &q) in out[b * QK..(b + 1) * QK].iter_mut().zip(qs) {
                *o = d * (q as i8) as f32;
            }
        }
        Ok(())
    }

    /// x: m rows of k -> out: m rows of n.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        if x.len() != m * self.k || out.len() != m * self.n {
            return Err(AmuletError::Compute(format!(
                "Q8_0 matmul: {} inputs and {} outputs for {m} rows of a {}x{} matrix",
                x.len(),
                out.len(),
                self.n,
                self.k
            )));
        }
        let nb = self.k / QK;
        let (xd, xq) = quantize_rows(x, m, self.k);
        for r0 in (0..m).step_by(TILE) {
            let rows = (m - r0).min(TILE);
            for col in 0..self.n {
                let mut acc = [0f32; TILE];
                self.dot_tile(col, nb, &xd[r0 * nb..], &xq[r0 * self.k..], rows, &mut acc);
                for (r, &a) in acc[..rows].iter().enumerate() {
                    out[(r0 + r) * self.n + col] = a;
                }
            }
        }
        Ok(())
    }

    #[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))]
    fn dot_tile(&self, col: usize, nb: usize, xd: &[f32], xq: &[i8], rows: usize, acc: &mut [f32; TILE]) {
        use std::arch::x86_64::*;
        // SAFETY: the target features are enabled at compile time (cfg above); every load
        // reads 32 bytes inside a block (weights: offset 2..34 of 34; activations: 32 i8).
        unsafe {
            let mut sums = [_mm256_setzero_ps(); TILE];
            for b in 0..nb {
                let (dw, qs) = self.block(col, b);
                let bw = _mm256_loadu_si256(qs.as_ptr() as *const __m256i);
                let aw = _mm256_sign_epi8(bw, bw);
                for r in 0..rows {
                    let bx = _mm256_loadu_si256(xq[r * self.k + b * QK..].as_ptr() as *const __m256i);
                    let d = _mm256_set1_ps(dw * xd[r * nb + b]);
                    let sy = _mm256_sign_epi8(bx, bw);
                    let dot = _mm256_maddubs_epi16(aw, sy);
                    let q = _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_set1_epi16(1), dot));
                    sums[r] = _mm256_fmadd_ps(d, q, sums[r]);
                }
            }
            for r in 0..rows {
                let x = sums[r];
                let res = _mm256_extractf128_ps(x, 1);
                let res = _mm_add_ps(res, _mm256_castps256_ps128(x));
                let res = _mm_add_ps(res, _mm_movehl_ps(res, res));
                let res = _mm_add_ss(res, _mm_movehdup_ps(res));
                acc[r] = _mm_cvtss_f32(res);
            }
        }
    }

    /// Portable path (and wasm): candle's generic order, one sum per block.
    #[cfg(not(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma")))]
    fn dot_tile(&self, col: usize, nb: usize, xd: &[f32], xq: &[i8], rows: usize, acc: &mut [f32; TILE]) {
        for b in 0..nb {
            let (dw, qs) = self.block(col, b);
            for r in 0..rows {
                let xs = &xq[r * self.k + b * QK..][..QK];
                let sumi: i32 = qs.iter().zip(xs).map(|(&w, &x)| (w as i8) as i32 * x as i32).sum();
                acc[r] += sumi as f32 * (dw * xd[r * nb + b]);
            }
        }
    }
}

/// Activations to Q8_0 exactly as candle's `BlockQ8_0::from_float` does (d rounded to f16).
fn quantize_rows(x: &[f32], m: usize, k: usize) -> (Vec<f32>, Vec<i8>) {
    let nb = k / QK;
    let mut d = vec![0f32; m * nb];
    let mut q = vec![0i8; m * k];
    for (j, (xs, qs)) in x.chunks_exact(QK).zip(q.chunks_exact_mut(QK)).enumerate() {
        let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
        let dj = amax / 127.0;
        let id = if dj != 0.0 { 1.0 / dj } else { 0.0 };
        d[j] = f16::from_f32(dj).to_f32();
        for (o, &v) in qs.iter_mut().zip(xs) {
            *o = (v * id).round() as i8;
        }
    }
    (d, q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_candle_bit_for_bit_for_any_row_count() {
        let (n, k) = (200, 576);
        let w = Tensor::from_vec(data(n * k, 1), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let ours = Q80Matrix::from_gguf_bytes(q.data().unwrap(), n, k).unwrap();
        let theirs = QMatMul::from_qtensor(q).unwrap();
        for m in [1, 2, 3, 4, 5, 9] {
            let x = data(m * k, 7 + m as u32);
            let want = theirs.forward(&Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap()).unwrap();
            let want = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let mut got = vec![0f32; m * n];
            ours.matmul(&x, m, &mut got).unwrap();
            assert_eq!(got, want, "m = {m}");
        }
    }

    #[test]
    fn rows_dequantize_like_candle() {
        let (n, k) = (5, 64);
        let w = Tensor::from_vec(data(n * k, 3), (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
        let want = q.dequantize(&Device::Cpu).unwrap().to_vec2::<f32>().unwrap();
        let ours = Q80Matrix::from_gguf_bytes(q.data().unwrap(), n, k).unwrap();
        let mut row = vec![0f32; k];
        for (i, w) in want.iter().enumerate() {
            ours.dequantize_row_into(i, &mut row).unwrap();
            assert_eq!(&row, w);
        }
        assert!(ours.dequantize_row_into(n, &mut row).is_err());
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(Q80Matrix::from_gguf_bytes(&[0u8; 33][..], 1, 32).is_err());
        assert!(Q80Matrix::from_gguf_bytes(&[0u8; 34][..], 1, 31).is_err());
        let m = Q80Matrix::from_gguf_bytes(&[0u8; 34][..], 1, 32).unwrap();
        assert!(m.matmul(&[0.0; 31], 1, &mut [0.0]).is_err());
    }
}
