//! Times the Q8_0 multi-row kernel against candle's QMatMul on the default model's output
//! projection shape (49,152 x 576), for 1, 2 and 4 rows. `RAYON_NUM_THREADS=1 cargo run
//! --release --example q8_0_bench`. Figures are printed, never asserted.
use std::time::Instant;

use amulet::backend::q8_0::Q80Matrix;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

fn main() {
    let (n, k) = (49_152, 576);
    let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919 % 2003) as f32 / 1001.0) - 1.0).collect();
    let q = QTensor::quantize(&Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap(), GgmlDType::Q8_0).unwrap();
    let ours = Q80Matrix::from_gguf_bytes(q.data().unwrap().into_owned(), n, k).unwrap();
    let theirs = QMatMul::from_qtensor(q).unwrap();
    for m in [1, 2, 4] {
        let x: Vec<f32> = (0..m * k).map(|i| ((i * 31 % 97) as f32 / 48.0) - 1.0).collect();
        let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu).unwrap();
        let mut out = vec![0f32; m * n];
        let time = |f: &mut dyn FnMut()| {
            f();
            let t = Instant::now();
            for _ in 0..10 {
                f();
            }
            t.elapsed().as_secs_f64() * 100.0
        };
        let a = time(&mut || ours.matmul(&x, m, &mut out).unwrap());
        let b = time(&mut || {
            theirs.forward(&xt).unwrap();
        });
        println!("m={m}: ours {a:.2} ms, candle {b:.2} ms ({} MB of weights)", ours.storage_bytes() / 1_000_000);
    }
}
