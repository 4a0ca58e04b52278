//! A weight matrix and its product with a batch of activation rows: the CPU matmul seam.
//! Q4_1, Q4_K, Q6_K, Q5_0 and Q8_0 go through our SIMD kernels (one read of the weights for
//! every activation row); every other type through candle's QMatMul. Where our kernel would
//! only be the portable scalar one (no AVX2 / simd128 in this build), Q4_K, Q6_K and Q5_0 stay
//! with candle, which has NEON paths.

use candle_core::quantized::ggml_file::qtensor_from_ggml;
use candle_core::quantized::{GgmlDType, QMatMul};
use candle_core::{Device, Module, Tensor};

use std::sync::Arc;

use super::acts::{with_q8, with_q8k, Q8Acts, Q8KActs};
use super::pool::split_cols;
use super::q4_1::Q41Matrix;
use super::q4_k::Q4KMatrix;
use super::q5_0::Q50Matrix;
use super::q6_k::Q6KMatrix;
use super::q8_0::Q80Matrix;
use super::rows::KERNEL;
use super::view::with_f32;
use crate::error::{AmuletError, Result};
use crate::gguf::{Gguf, TensorSource};

pub enum Linear {
    /// `exact`: use the scalar kernel, which sums in candle's order (bit-exact reference runs).
    Q41 {
        w: Q41Matrix,
        exact: bool,
    },
    /// Q4_K / Q6_K / Q5_0 / Q8_0 parts through our kernels (see `Stack`).
    Ours(Box<Stack>),
    Candle(QMatMul),
    /// Parts that could not be fused into one matrix; outputs are concatenated.
    Split(Vec<Linear>),
}

/// One of our repacked matrices.
pub enum Part {
    Q4K(Q4KMatrix),
    Q6K(Q6KMatrix),
    Q50(Q50Matrix),
    /// Shared with the embedding lookup when the output projection is tied.
    Q80(Arc<Q80Matrix>),
}

impl Part {
    fn rows(&self) -> usize {
        match self {
            Part::Q4K(w) => w.rows(),
            Part::Q6K(w) => w.rows(),
            Part::Q50(w) => w.rows(),
            Part::Q80(w) => w.rows(),
        }
    }

    fn dtype(&self) -> GgmlDType {
        match self {
            Part::Q4K(_) => GgmlDType::Q4K,
            Part::Q6K(_) => GgmlDType::Q6K,
            Part::Q50(_) => GgmlDType::Q5_0,
            Part::Q80(_) => GgmlDType::Q8_0,
        }
    }

    /// Q8_K activations (K-quants) rather than Q8_0 ones.
    fn takes_q8k(&self) -> bool {
        matches!(self, Part::Q4K(_) | Part::Q6K(_))
    }

    /// Every output row of this part, split over the pool's threads by weight rows.
    fn run(&self, a8: &Q8Acts, ak: &Q8KActs, m: usize, out: &mut [f32], ld: usize) -> Result<()> {
        split_cols(self.rows(), m, out, ld, |rows, out, ld| match self {
            Part::Q4K(w) => w.run(ak, rows, out, ld),
            Part::Q6K(w) => w.run(ak, rows, out, ld),
            Part::Q50(w) => w.run(a8, rows, out, ld),
            Part::Q80(w) => w.run(a8, rows, out, ld),
        })
    }

    fn gguf_bytes(&self) -> Vec<u8> {
        match self {
            Part::Q4K(w) => w.to_gguf_bytes(),
            Part::Q6K(w) => w.to_gguf_bytes(),
            Part::Q50(w) => w.to_gguf_bytes(),
            Part::Q80(w) => w.gguf_bytes().to_vec(),
        }
    }
}

/// Matrices stacked along the outputs, each run of parts of one type fused into one matrix (so
/// q/k/v or gate/up cost one pass), with the activations quantized once per kind (Q8_K for
/// the K-quants, Q8_0 for the others) however many parts take them.
pub struct Stack {
    k: usize,
    n: usize,
    parts: Vec<Part>,
    /// The GGUF tensors the parts came from: `(type, rows)`, in output order.
    sources: Vec<(GgmlDType, usize)>,
    /// Exact mode: candle's own matrices, one per source tensor, rebuilt from our lossless
    /// layout (reference tests only; they hold a second copy of the weights). A failed rebuild
    /// is kept and reported by `forward`.
    exact: Option<Result<Vec<QMatMul>>>,
}

/// Whether our kernel takes this type in this build (see the module header).
fn ours(dtype: GgmlDType) -> bool {
    match dtype {
        GgmlDType::Q8_0 => true,
        GgmlDType::Q4K | GgmlDType::Q6K | GgmlDType::Q5_0 => KERNEL != "scalar",
        _ => false,
    }
}

impl Stack {
    fn load<S: TensorSource + ?Sized>(
        g: &Gguf,
        bytes: &S,
        names: &[String],
        k: usize,
        outs: &[usize],
    ) -> Result<Stack> {
        let mut parts: Vec<Part> = Vec::new();
        let mut sources = Vec::with_capacity(names.len());
        for (name, &n) in names.iter().zip(outs) {
            let (info, data) = g.tensor_bytes(bytes, name, &[k, n])?;
            let dtype = info.dtype;
            let part = match dtype {
                GgmlDType::Q4K => Part::Q4K(Q4KMatrix::from_gguf_bytes(&data, n, k)?),
                GgmlDType::Q6K => Part::Q6K(Q6KMatrix::from_gguf_bytes(&data, n, k)?),
                GgmlDType::Q5_0 => Part::Q50(Q50Matrix::from_gguf_bytes(&data, n, k)?),
                GgmlDType::Q8_0 => Part::Q80(Arc::new(Q80Matrix::from_gguf_bytes(data, n, k)?)),
                other => {
                    return Err(AmuletError::Unsupported(format!("tensor `{name}`: no kernel of ours for {other:?}")))
                }
            };
            sources.push((dtype, n));
            // Fuse with the previous part when of the same type.
            parts = match (parts.pop(), part) {
                (Some(Part::Q4K(a)), Part::Q4K(b)) => append(parts, Part::Q4K(Q4KMatrix::concat_rows(&[a, b])?)),
                (Some(Part::Q6K(a)), Part::Q6K(b)) => append(parts, Part::Q6K(Q6KMatrix::concat_rows(&[a, b])?)),
                (Some(Part::Q50(a)), Part::Q50(b)) => append(parts, Part::Q50(Q50Matrix::concat_rows(&[a, b])?)),
                (Some(Part::Q80(a)), Part::Q80(b)) => {
                    append(parts, Part::Q80(Arc::new(Q80Matrix::concat_rows(&[a.as_ref(), b.as_ref()])?)))
                }
                (Some(prev), part) => append(append(parts, prev), part),
                (None, part) => append(parts, part),
            };
        }
        Ok(Stack { k, n: outs.iter().sum(), parts, sources, exact: None })
    }

    fn set_exact(&mut self, on: bool) {
        if !on {
            self.exact = None;
        } else if !matches!(self.exact, Some(Ok(_))) {
            self.exact = Some(self.candle_matrices());
        }
    }

    /// candle's QMatMul for each source tensor, from our layout turned back into GGUF bytes.
    fn candle_matrices(&self) -> Result<Vec<QMatMul>> {
        let mut mats = Vec::with_capacity(self.sources.len());
        let mut src = self.sources.iter();
        for part in &self.parts {
            let bytes = part.gguf_bytes();
            let row_bytes = bytes.len() / part.rows();
            let mut at = 0;
            while at < bytes.len() {
                let &(dtype, n) = src.next().filter(|(t, _)| *t == part.dtype()).ok_or_else(|| {
                    AmuletError::Compute("exact mode: the fused parts do not match their tensors".into())
                })?;
                // An owned copy: candle reads the blocks in place and needs them aligned.
                let data = bytes[at..at + n * row_bytes].to_vec();
                mats.push(QMatMul::from_qtensor(qtensor_from_ggml(dtype, &data, vec![n, self.k], &Device::Cpu)?)?);
                at += n * row_bytes;
            }
        }
        Ok(mats)
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match &self.exact {
            Some(Ok(mats)) => {
                let outs = mats.iter().map(|w| w.forward(x)).collect::<candle_core::Result<Vec<_>>>()?;
                return Ok(Tensor::cat(&outs, 1)?);
            }
            Some(Err(e)) => return Err(e.clone()),
            None => {}
        }
        with_rows(x, self.n, self.k, |xs, m, out| {
            let need_k = self.parts.iter().any(Part::takes_q8k);
            let need_8 = self.parts.iter().any(|p| !p.takes_q8k());
            with_q8k(|ak| {
                with_q8(|a8| {
                    if need_k {
                        ak.quantize(xs, m, self.k)?;
                    }
                    if need_8 {
                        a8.quantize(xs, m, self.k)?;
                    }
                    let mut col = 0;
                    for p in &self.parts {
                        p.run(a8, ak, m, &mut out[col..], self.n)?;
                        col += p.rows();
                    }
                    Ok(())
                })
            })
        })
    }
}

fn append(mut v: Vec<Part>, p: Part) -> Vec<Part> {
    v.push(p);
    v
}

impl Linear {
    /// Loads `names` (each of GGUF shape [k, n_i]) as one matrix with sum(n_i) outputs, fused
    /// when they are all Q4_1, or all of our other types, so q/k/v or gate/up cost one pass
    /// over the activations.
    pub fn load<S: TensorSource + ?Sized>(
        g: &Gguf,
        bytes: &S,
        names: &[String],
        k: usize,
        outs: &[usize],
    ) -> Result<Linear> {
        let dtype = |n: &String| g.tensor_info(n).map(|t| t.dtype);
        if names.iter().all(|n| dtype(n) == Some(GgmlDType::Q4_1)) {
            let mut parts = Vec::with_capacity(names.len());
            for (name, &n) in names.iter().zip(outs) {
                let (_, data) = g.tensor_bytes(bytes, name, &[k, n])?;
                parts.push(Q41Matrix::from_gguf_bytes(&data, n, k)?);
            }
            let m = if parts.len() == 1 { parts.pop().expect("one part") } else { Q41Matrix::concat_rows(&parts)? };
            return Ok(Linear::Q41 { w: m, exact: false });
        }
        if names.iter().all(|n| dtype(n).is_some_and(ours)) {
            return Ok(Linear::Ours(Box::new(Stack::load(g, bytes, names, k, outs)?)));
        }
        if names.len() == 1 {
            return Ok(Linear::Candle(QMatMul::from_qtensor(g.qtensor(bytes, &names[0], &[k, outs[0]])?)?));
        }
        let mut parts = Vec::with_capacity(names.len());
        for (name, &n) in names.iter().zip(outs) {
            parts.push(Linear::load(g, bytes, std::slice::from_ref(name), k, &[n])?);
        }
        Ok(Linear::Split(parts))
    }

    /// The output projection tied to a Q8_0 embedding matrix (shared, not copied).
    pub fn tied_q80(w: Arc<Q80Matrix>) -> Linear {
        let (k, n) = (w.cols(), w.rows());
        Linear::Ours(Box::new(Stack {
            k,
            n,
            parts: vec![Part::Q80(w)],
            sources: vec![(GgmlDType::Q8_0, n)],
            exact: None,
        }))
    }

    /// Exact mode (reference runs): Q4_1 through the scalar kernel that sums in candle's order,
    /// our other types through candle's own QMatMul rebuilt from the same weights, so logits
    /// are bit-identical to candle-transformers'.
    pub fn set_exact(&mut self, on: bool) {
        match self {
            Linear::Q41 { exact, .. } => *exact = on,
            Linear::Ours(s) => s.set_exact(on),
            Linear::Split(parts) => parts.iter_mut().for_each(|p| p.set_exact(on)),
            Linear::Candle(_) => {}
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
            Linear::Ours(s) => s.forward(x),
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
    let out = with_f32(x, |xs| {
        let mut out = vec![0f32; m * n];
        kernel(xs, m, &mut out).map(|()| out)
    })??;
    Ok(Tensor::from_vec(out, (m, n), x.device())?)
}
