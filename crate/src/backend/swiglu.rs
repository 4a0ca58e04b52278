//! The SwiGLU activation of a feed-forward block, `silu(gate) * up`, over the CPU pool's
//! threads: with candle's element-wise ops it ran on one thread while the pool waited (a
//! 400-token prefill of the 0.5B spent about 5% of its time there at 2 threads).

use super::exp::exp_shifted;
use super::pool::{split, Shared};
use crate::error::{AmuletError, Result};

/// Fewest values a thread takes: below this the hand-over costs more than the exponentials.
const MIN_VALUES: usize = 16 * 1024;

/// `gu`: `rows` rows of `2 * d_ff` values, the gate then the up projection (the fused
/// gate/up product). Returns `rows x d_ff` values of `silu(gate) * up`, with candle's silu
/// formula, so the result is bit-identical to `candle_nn::ops::silu(gate) * up`.
pub fn silu_mul(gu: &[f32], rows: usize, d_ff: usize) -> Result<Vec<f32>> {
    if gu.len() != rows * 2 * d_ff {
        return Err(AmuletError::Compute(format!(
            "SwiGLU: {} gate/up values where {rows} rows of 2 x {d_ff} were expected",
            gu.len()
        )));
    }
    let mut out = vec![0f32; rows * d_ff];
    let shared = Shared::new(&mut out);
    split(rows * d_ff, MIN_VALUES, |range| {
        // SAFETY: the ranges of one split are disjoint.
        let out = unsafe { shared.slice(range.clone()) };
        // The range a row at a time: exp(-gate) through `exp_shifted` (the same bits as
        // `f32::exp`; called one value at a time it was most of SwiGLU's cost in wasm), then
        // candle's formula on each value.
        let mut i = range.start;
        while i < range.end {
            let (r, c) = (i / d_ff, i % d_ff);
            let n = (d_ff - c).min(range.end - i);
            let gate = &gu[r * 2 * d_ff + c..][..n];
            let up = &gu[r * 2 * d_ff + d_ff + c..][..n];
            let o = &mut out[i - range.start..][..n];
            for (o, &g) in o.iter_mut().zip(gate) {
                *o = -g;
            }
            exp_shifted(o, 0.0);
            for ((o, &g), &u) in o.iter_mut().zip(gate).zip(up) {
                *o = g / (1.0 + *o) * u;
            }
            i += n;
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
        let (rows, d_ff) = (3, 20_000);
        let mut gu: Vec<f32> = (0..rows * 2 * d_ff).map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 97.0).collect();
        // Gates where exp(-gate) overflows, underflows or is not a number.
        for (i, g) in [-100.0, 100.0, -89.0, 89.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -0.0, 1e-30]
            .into_iter()
            .enumerate()
        {
            gu[2 * d_ff + 5 * i] = g;
        }
        let t = Tensor::from_slice(&gu, (rows, 2 * d_ff), &Device::Cpu).unwrap();
        let gate = t.narrow(1, 0, d_ff).unwrap();
        let up = t.narrow(1, d_ff, d_ff).unwrap();
        let want =
            (candle_nn::ops::silu(&gate).unwrap() * up).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
            .install(|| silu_mul(&gu, rows, d_ff))
            .unwrap();
        assert_eq!(got.len(), want.len());
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert!(a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()), "value {i}: {a} vs {b}");
        }
    }
}
