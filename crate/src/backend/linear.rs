//! A weight matrix and its product with a batch of activation rows: the CPU matmul seam.
//! Q4_1 goes through our SIMD kernel (candle's is scalar); every other type through
//! candle's QMatMul, which has SIMD dot products for Q4_0, Q8_0 and the K-quants.

use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{Module, Tensor};

use std::sync::Arc;

use super::q4_1::Q41Matrix;
use super::q8_0::Q80Matrix;
use crate::error::{AmuletError, Result};
use crate::gguf::{Gguf, TensorSource};

pub enum Linear {
    /// `exact`: use the scalar kernel, which sums in candle's order (bit-exact reference runs).
    Q41 {
        w: Q41Matrix,
        exact: bool,
    },
    /// Q8_0 through our multi-row kernel (bit-identical to candle's); shared with the
    /// embedding lookup when the output projection is tied.
    Q80(Arc<Q80Matrix>),
    Candle(QMatMul),
    /// Parts that could not be fused into one matrix; outputs are concatenated.
    Split(Vec<Linear>),
}

impl Linear {
    /// Loads `names` (each of GGUF shape [k, n_i]) as one matrix with sum(n_i) outputs, fused
    /// when they are all Q4_1 so q/k/v or gate/up cost one pass over the activations.
    pub fn load<S: TensorSource + ?Sized>(
        g: &Gguf,
        bytes: &S,
        names: &[String],
        k: usize,
        outs: &[usize],
    ) -> Result<Linear> {
        let all_q41 = names.iter().all(|n| g.tensor_info(n).is_some_and(|t| t.dtype == GgmlDType::Q4_1));
        if all_q41 {
            let mut parts = Vec::with_capacity(names.len());
            for (name, &n) in names.iter().zip(outs) {
                let (_, data) = g.tensor_bytes(bytes, name, &[k, n])?;
                parts.push(Q41Matrix::from_gguf_bytes(&data, n, k)?);
            }
            let m = if parts.len() == 1 { parts.pop().expect("one part") } else { Q41Matrix::concat_rows(&parts)? };
            return Ok(Linear::Q41 { w: m, exact: false });
        }
        let mut parts = Vec::with_capacity(names.len());
        for (name, &n) in names.iter().zip(outs) {
            let (info, data) = g.tensor_bytes(bytes, name, &[k, n])?;
            parts.push(if info.dtype == GgmlDType::Q8_0 {
                Linear::Q80(Arc::new(Q80Matrix::from_gguf_bytes(data, n, k)?))
            } else {
                Linear::Candle(QMatMul::from_qtensor(g.qtensor(bytes, name, &[k, n])?)?)
            });
        }
        Ok(if parts.len() == 1 { parts.pop().expect("one part") } else { Linear::Split(parts) })
    }

    /// Switches Q4_1 matrices between the SIMD kernel and the candle-ordered scalar one.
    pub fn set_exact(&mut self, on: bool) {
        match self {
            Linear::Q41 { exact, .. } => *exact = on,
            Linear::Split(parts) => parts.iter_mut().for_each(|p| p.set_exact(on)),
            Linear::Candle(_) | Linear::Q80(_) => {}
        }
    }

    /// x: [m, k] -> [m, n].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Linear::Candle(w) => Ok(w.forward(x)?),
            Linear::Q41 { w, exact } => with_rows(x, w.rows(), w.cols(), |xs, m, out| {
                if *exact {
                    w.matmul_scalar(xs, m, out)
                } else {
                    w.matmul(xs, m, out)
                }
            }),
            Linear::Q80(w) => with_rows(x, w.rows(), w.cols(), |xs, m, out| w.matmul(xs, m, out)),
            Linear::Split(parts) => {
                let outs = parts.iter().map(|p| p.forward(x)).collect::<Result<Vec<_>>>()?;
                Ok(Tensor::cat(&outs, 1)?)
            }
        }
    }
}

/// Runs one of our slice kernels on a [m, k] tensor: checks k, hands it the rows as f32, and
/// wraps its [m, n] output back into a tensor.
fn with_rows(
    x: &Tensor,
    n: usize,
    k: usize,
    kernel: impl FnOnce(&[f32], usize, &mut [f32]) -> Result<()>,
) -> Result<Tensor> {
    let (m, cols) = x.dims2()?;
    if cols != k {
        return Err(AmuletError::Compute(format!("matmul: input has {cols} columns, weights {k}")));
    }
    let xs = x.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; m * n];
    kernel(&xs, m, &mut out)?;
    Ok(Tensor::from_vec(out, (m, n), x.device())?)
}
