//! Our Q4_1 kernel vs candle's QMatMul on the SmolLM2-135M layer shapes.
//!
//! Run: `RAYON_NUM_THREADS=1 cargo run --release --example q4_1_bench`
//!
//! "hot" repeats one matrix, so its weights sit in L2/L3: that measures the kernel.
//! "model" walks 30 layers' worth of distinct matrices the way one decode step does (about
//! 66 MB, more than L3), so the weights come from DRAM: that is what decode speed sees.

use amulet::backend::q4_1::{Q41Matrix, KERNEL};
use amulet::rng::Rng;
use candle_core::quantized::{ggml_file::qtensor_from_ggml, GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use std::time::Instant;

const SHAPES: [(&str, usize, usize); 6] = [
    ("q/o 576x576", 576, 576),
    ("k 192x576", 192, 576),
    ("v 192x576", 192, 576),
    ("gate 1536x576", 1536, 576),
    ("up 1536x576", 1536, 576),
    ("down 576x1536", 576, 1536),
];
const LAYERS: usize = 30;

fn gguf_bytes(n: usize, k: usize, rng: &mut Rng) -> Vec<u8> {
    let t = Tensor::from_vec(rng.vec(n * k, 0.1), (n, k), &Device::Cpu).unwrap();
    QTensor::quantize(&t, GgmlDType::Q4_1).unwrap().data().unwrap().into_owned()
}

/// Seconds per call of `f` after a warm-up: the best of 7 batches of at least `batch_s` each,
/// so that other processes on the machine inflate the figure as little as possible.
fn time(batch_s: f64, mut f: impl FnMut()) -> f64 {
    for _ in 0..3 {
        f();
    }
    let mut iters = 1usize;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        if t.elapsed().as_secs_f64() >= batch_s {
            break;
        }
        iters *= 2;
    }
    (0..7)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                f();
            }
            t.elapsed().as_secs_f64() / iters as f64
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let dev = Device::Cpu;
    let mut rng = Rng::new(0x1234_5678_9abc_def1);
    println!("kernel: {KERNEL}; RAYON_NUM_THREADS={:?}", std::env::var("RAYON_NUM_THREADS").ok());
    println!("GB/s counts GGUF weight bytes (20 per 32 weights) once per call; times are best of 7.\n");
    println!("`exact` is matmul_scalar (candle's summation order, bit-identical to candle).\n");
    println!(
        "{:<16} {:>2} {:>9} {:>9} {:>9} {:>10} {:>9} {:>8}",
        "hot", "m", "ours us", "ours GB/s", "exact us", "candle us", "cand GB/s", "speedup"
    );
    let bytes: Vec<Vec<u8>> = SHAPES.iter().map(|&(_, n, k)| gguf_bytes(n, k, &mut rng)).collect();
    for (&(name, n, k), b) in SHAPES.iter().zip(&bytes) {
        let ours = Q41Matrix::from_gguf_bytes(b, n, k).unwrap();
        let qmm = QMatMul::from_qtensor(qtensor_from_ggml(GgmlDType::Q4_1, b, vec![n, k], &dev).unwrap()).unwrap();
        for m in [1usize, 2] {
            let x = rng.vec(m * k, 1.0);
            let xt = Tensor::from_vec(x.clone(), (m, k), &dev).unwrap();
            let mut out = vec![0f32; m * n];
            let t_ours = time(0.05, || ours.matmul(&x, m, &mut out).unwrap());
            let t_exact = time(0.05, || ours.matmul_scalar(&x, m, &mut out).unwrap());
            let t_candle = time(0.05, || {
                qmm.forward(&xt).unwrap();
            });
            let gb = b.len() as f64 / 1e9;
            println!(
                "{:<16} {:>2} {:>9.2} {:>9.2} {:>9.2} {:>10.2} {:>9.2} {:>7.2}x",
                name,
                m,
                t_ours * 1e6,
                gb / t_ours,
                t_exact * 1e6,
                t_candle * 1e6,
                gb / t_candle,
                t_candle / t_ours
            );
        }
    }

    // One decode step's worth of matrices: distinct copies per layer so nothing stays cached.
    let mut ours_layers = Vec::new();
    let mut fused_layers = Vec::new();
    let mut candle_layers = Vec::new();
    let mut total = 0usize;
    for _ in 0..LAYERS {
        let mut o = Vec::new();
        let mut c = Vec::new();
        // q, k, v, o, gate, up, down (o shares the q shape)
        for &si in &[0usize, 1, 2, 0, 3, 4, 5] {
            let (_, n, k) = SHAPES[si];
            let b = bytes[si].clone();
            total += b.len();
            o.push(Q41Matrix::from_gguf_bytes(&b, n, k).unwrap());
            c.push(QMatMul::from_qtensor(qtensor_from_ggml(GgmlDType::Q4_1, &b, vec![n, k], &dev).unwrap()).unwrap());
        }
        let qkv = Q41Matrix::concat_rows(&o[0..3]).unwrap();
        let gate_up = Q41Matrix::concat_rows(&o[4..6]).unwrap();
        fused_layers.push([qkv, o[3].clone(), gate_up, o[6].clone()]);
        ours_layers.push(o);
        candle_layers.push(c);
    }
    println!("\nmodel: {LAYERS} layers x 7 matrices, {:.1} MB of Q4_1 weights, all from DRAM", total as f64 / 1e6);
    println!("{:<16} {:>2} {:>11} {:>9}", "", "m", "ms/step", "GB/s");
    for m in [1usize, 2] {
        let x576 = rng.vec(m * 576, 1.0);
        let x1536 = rng.vec(m * 1536, 1.0);
        let mut out = vec![0f32; m * 1536 * 2];
        let t = time(0.1, || {
            for layer in &ours_layers {
                for w in layer {
                    let x = if w.cols() == 576 { &x576 } else { &x1536 };
                    w.matmul(x, m, &mut out[..m * w.rows()]).unwrap();
                }
            }
        });
        println!("{:<16} {:>2} {:>11.3} {:>9.2}", "ours", m, t * 1e3, total as f64 / 1e9 / t);
        let t = time(0.1, || {
            for layer in &fused_layers {
                for w in layer {
                    let x = if w.cols() == 576 { &x576 } else { &x1536 };
                    w.matmul(x, m, &mut out[..m * w.rows()]).unwrap();
                }
            }
        });
        println!("{:<16} {:>2} {:>11.3} {:>9.2}", "ours fused", m, t * 1e3, total as f64 / 1e9 / t);
        let xt576 = Tensor::from_vec(x576.clone(), (m, 576), &dev).unwrap();
        let xt1536 = Tensor::from_vec(x1536.clone(), (m, 1536), &dev).unwrap();
        let t = time(0.1, || {
            for layer in &candle_layers {
                for (j, w) in layer.iter().enumerate() {
                    w.forward(if j == 6 { &xt1536 } else { &xt576 }).unwrap();
                }
            }
        });
        println!("{:<16} {:>2} {:>11.3} {:>9.2}", "candle", m, t * 1e3, total as f64 / 1e9 / t);
    }
}
