//! A CPU tensor's f32 values as one slice: borrowed where the tensor is contiguous (candle's
//! and our kernels' outputs almost always are), copied only where it is not. The transformer
//! hands tensors to our slice kernels (products, RMS norm, SwiGLU) several times a block; a copy
//! each time was about 3% of a 2-thread prefill of the 0.5B, all of it on the thread the other
//! waits for.

use candle_core::{Storage, Tensor};

use crate::error::Result;

/// `f` on the values of `t` in row-major order.
pub fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            if let Ok(all) = cpu.as_slice::<f32>() {
                return Ok(f(&all[start..end]));
            }
        }
    }
    Ok(f(&t.flatten_all()?.to_vec1::<f32>()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn borrowed_and_copied_views_agree() {
        let t = Tensor::arange(0f32, 24.0, &Device::Cpu).unwrap().reshape((4, 6)).unwrap();
        let cases = [t.clone(), t.narrow(0, 1, 2).unwrap(), t.narrow(1, 2, 3).unwrap(), t.t().unwrap()];
        for c in cases {
            let want = c.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(with_f32(&c, |v| v.to_vec()).unwrap(), want, "{:?}", c.layout());
        }
        let ints = Tensor::arange(0u32, 4, &Device::Cpu).unwrap();
        assert!(with_f32(&ints, |v| v.len()).is_err());
    }
}
