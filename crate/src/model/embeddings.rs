//! The token embedding matrix on the CPU path, and the output projection when it is tied.
//!
//! Read once from the source and kept in the file's bytes: a lookup dequantizes just the rows
//! it needs. A Q8_0 matrix is one of our kernel's matrices, so a tied output projection shares
//! it; a tied matrix of another type becomes candle's tensor, which serves both.

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Tensor};

use crate::backend::linear::Linear;
use crate::backend::q8_0::Q80Matrix;
use crate::error::{AmuletError, Result};
use crate::gguf::{Gguf, TensorSource};

pub enum Embeddings {
    Q80(Arc<Q80Matrix>),
    /// Any other type, untied: the GGUF rows as they are.
    Rows {
        dtype: GgmlDType,
        data: Vec<u8>,
        row_bytes: usize,
    },
    /// Any other type, tied to the output projection.
    Candle(Arc<QTensor>),
}

const NAME: &str = "token_embd.weight";

impl Embeddings {
    /// The embedding of `vocab` rows of `d`, and the output projection (`output.weight`, or
    /// the embedding itself when the file has none).
    pub fn load<S: TensorSource + ?Sized>(g: &Gguf, src: &S, d: usize, vocab: usize) -> Result<(Embeddings, Linear)> {
        let tied = g.tensor_info("output.weight").is_none();
        let output = || Linear::load(g, src, &["output.weight".to_string()], d, &[vocab]);
        let (info, data) = g.tensor_bytes(src, NAME, &[d, vocab])?;
        let dtype = info.dtype;
        // Each keeps the only copy of the bytes read: a second would add the matrix to the
        // peak (in wasm, for good).
        Ok(match dtype {
            GgmlDType::Q8_0 => {
                let w = Arc::new(Q80Matrix::from_gguf_bytes(data, vocab, d)?);
                let out = if tied { Linear::tied_q80(w.clone()) } else { output()? };
                (Embeddings::Q80(w), out)
            }
            _ if tied => {
                let q = Arc::new(candle_tensor(dtype, data, d, vocab)?);
                (Embeddings::Candle(q.clone()), Linear::Candle(QMatMul::from_arc(q)?))
            }
            _ => (Embeddings::Rows { dtype, row_bytes: data.len() / vocab, data: data.into_owned() }, output()?),
        })
    }

    /// The rows of `ids`, [ids.len(), d].
    pub fn lookup(&self, ids: &[u32], d: usize) -> Result<Tensor> {
        match self {
            Embeddings::Candle(q) => Ok(q.embedding(&Tensor::new(ids, &Device::Cpu)?)?),
            Embeddings::Q80(w) => each_row(ids, d, |id, row| w.dequantize_row_into(id as usize, row)),
            Embeddings::Rows { dtype, data, row_bytes } => each_row(ids, d, |id, row| {
                // Checked: in wasm32 a large id times a row could wrap onto another row.
                let bytes = (id as usize)
                    .checked_mul(*row_bytes)
                    .and_then(|at| data.get(at..at.checked_add(*row_bytes)?))
                    .ok_or_else(|| AmuletError::Compute(format!("token id {id} is outside the embedding matrix")))?;
                let t = candle_tensor(*dtype, bytes.into(), d, 1)?.dequantize(&Device::Cpu)?;
                row.copy_from_slice(&t.to_vec1::<f32>()?);
                Ok(())
            }),
        }
    }
}

/// [ids.len(), d], row `i` filled by `f(ids[i], row)`.
fn each_row(ids: &[u32], d: usize, f: impl Fn(u32, &mut [f32]) -> Result<()>) -> Result<Tensor> {
    let mut out = vec![0f32; ids.len() * d];
    for (row, &id) in out.chunks_exact_mut(d).zip(ids) {
        f(id, row)?;
    }
    Ok(Tensor::from_vec(out, (ids.len(), d), &Device::Cpu)?)
}

/// candle's tensor of `rows` x `d` from GGUF bytes. candle reinterprets them as blocks in
/// place, so they must be aligned: bytes that are not are copied first.
fn candle_tensor(dtype: GgmlDType, data: Cow<[u8]>, d: usize, rows: usize) -> Result<QTensor> {
    let data: Cow<[u8]> = if (data.as_ptr() as usize).is_multiple_of(4) { data } else { Cow::Owned(data.to_vec()) };
    let shape = if rows == 1 { vec![d] } else { vec![rows, d] };
    Ok(qtensor_from_ggml(dtype, &data, shape, &Device::Cpu)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Rows kept as GGUF bytes give candle's embedding, bit for bit, in any order and repeated;
    /// an id past the matrix is an error.
    #[test]
    fn rows_match_candles_embedding() {
        let (vocab, d) = (37, 512);
        for dtype in [GgmlDType::Q5_0, GgmlDType::Q4K, GgmlDType::Q6K, GgmlDType::Q4_1] {
            let w = Tensor::from_vec(Rng::new(7).vec(vocab * d, 1.0), (vocab, d), &Device::Cpu).unwrap();
            let q = QTensor::quantize(&w, dtype).unwrap();
            let data = q.data().unwrap().into_owned();
            let rows = Embeddings::Rows { dtype, row_bytes: data.len() / vocab, data };
            let ids = [36u32, 0, 5, 5, 17];
            let ours = rows.lookup(&ids, d).unwrap().to_vec2::<f32>().unwrap();
            let want = q.embedding(&Tensor::new(&ids, &Device::Cpu).unwrap()).unwrap().to_vec2::<f32>().unwrap();
            assert_eq!(ours, want, "{dtype:?}");
            assert!(rows.lookup(&[vocab as u32], d).is_err());
        }
    }
}
