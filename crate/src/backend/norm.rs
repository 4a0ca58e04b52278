//! RMS normalisation over the CPU pool's threads, by rows. candle's own op hands more than 32
//! rows to rayon from inside the forward pass, where the pool's threads belong to our splits
//! (a rayon wait there can pick up a spinning helper of the pass and never return to the wait);
//! this one goes through `pool::split` like every other op of the pass.

use super::pool::{split, Shared};
use crate::error::{AmuletError, Result};

/// Fewest values a thread takes: below this the hand-over costs more than the sums.
const MIN_VALUES: usize = 8 * 1024;

/// `x`: rows of `alpha.len()` values. Returns each row divided by its root mean square (plus
/// `eps`) and scaled by `alpha`, with candle's formula and summation order, so the result is
/// bit-identical to `candle_nn::ops::rms_norm`.
pub fn rms_norm(x: &[f32], alpha: &[f32], eps: f32) -> Result<Vec<f32>> {
    let n = alpha.len();
    if n == 0 || !x.len().is_multiple_of(n) {
        return Err(AmuletError::Compute(format!("RMS norm: {} values are not whole rows of {n}", x.len())));
    }
    let rows = x.len() / n;
    let mut out = vec![0f32; x.len()];
    let shared = Shared::new(&mut out);
    split(rows, MIN_VALUES.div_ceil(n).max(1), |range| {
        for r in range {
            let src = &x[r * n..(r + 1) * n];
            // SAFETY: each row belongs to one range of the split.
            let dst = unsafe { shared.slice(r * n..(r + 1) * n) };
            let sum2 = src.iter().map(|&v| v * v).sum::<f32>();
            let m = (sum2 / n as f32 + eps).sqrt();
            for ((d, &s), &a) in dst.iter_mut().zip(src).zip(alpha) {
                *d = s / m * a;
            }
        }
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn same_bits_as_candle() {
        let (rows, n) = (40, 896);
        let x: Vec<f32> = (0..rows * n).map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 97.0).collect();
        let alpha: Vec<f32> = (0..n).map(|i| 0.5 + (i % 13) as f32 / 7.0).collect();
        let want = candle_nn::ops::rms_norm(
            &Tensor::from_slice(&x, (rows, n), &Device::Cpu).unwrap(),
            &Tensor::from_slice(&alpha, n, &Device::Cpu).unwrap(),
            1e-6,
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        for threads in [1, 2] {
            let got = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| rms_norm(&x, &alpha, 1e-6).unwrap());
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{threads} threads");
        }
    }

    #[test]
    fn rows_that_do_not_fit_are_an_error() {
        let e = rms_norm(&[1.0; 10], &[1.0; 4], 1e-6).unwrap_err();
        assert!(e.to_string().contains("not whole rows"), "{e}");
        assert!(rms_norm(&[1.0; 4], &[], 1e-6).is_err());
    }
}
