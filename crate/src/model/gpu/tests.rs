//! Kernel tests on random data of awkward sizes (rows of W not a multiple of the 8 a
//! workgroup takes, 11 input rows across two z-slices, matrices split into row-chunks),
//! against CPU references. They need an adapter: lavapipe in CI.

use super::plan::{record, Mv, Recorder};
use crate::backend::webgpu::abi::{Format, MatvecInput};
use crate::backend::webgpu::kernels::{Kernels, PassInfo};
use crate::backend::webgpu::test_util::{act, buffer, context, gguf_matrix, read, super_blocks, uniform, GGUF_TYPES};
use crate::backend::webgpu::weights::{GpuMatrix, Repacked};
use crate::rng::Rng;

#[test]
fn matvec_matches_a_cpu_reference_for_every_format_input_and_shape() {
    let ctx = context();
    let mut kernels = Kernels::new(&ctx.device, ctx.info.software);
    let mut rng = Rng::new(5);
    for dtype in GGUF_TYPES {
        let (n, k) = (37, if super_blocks(dtype) { 256 } else { 96 });
        let w = gguf_matrix(dtype, &rng.vec(n * k, 1.0), n, k);
        for input in [MatvecInput::Plain, MatvecInput::SiluGate, MatvecInput::GeluGate] {
            for (rows, chunk_rows) in [(1, n), (11, 10), (5, 8)] {
                let gated = input != MatvecInput::Plain;
                let x_stride = if gated { 2 * k } else { k };
                let (y_stride, n_off) = (n + 6, 3);
                let x = rng.vec(rows * x_stride, 1.0);
                let bias = rng.vec(n + n_off, 1.0);
                let y0 = rng.vec(rows * y_stride, 1.0);
                let row_bytes = 4 * (w.words.len() / n).max(w.scales.len() / n);
                let gm = GpuMatrix::upload_limited(&ctx, &w, (chunk_rows * row_bytes) as u64).unwrap();
                let (xb, yb, bb) = (buffer(&ctx, &x), buffer(&ctx, &y0), buffer(&ctx, &bias));
                let pass = uniform(&ctx, &PassInfo { n_rows: rows as u32, _pad: [0; 3] });
                let dummy = buffer(&ctx, &[0.0; 4]);
                let mut steps = Vec::new();
                let mut rec =
                    Recorder { ctx: &ctx, kernels: &mut kernels, dummy: &dummy, eps: 1e-6, use_matmul: false };
                let mv = Mv {
                    label: "t",
                    m: &gm,
                    input,
                    x: &xb,
                    x_stride,
                    y: &yb,
                    y_stride,
                    n_off,
                    accumulate: true,
                    bias: Some(&bb),
                    pass: &pass,
                };
                rec.matvec(&mut steps, mv);
                assert_eq!(steps.len(), n.div_ceil(chunk_rows), "{dtype:?}: chunks");
                let mut enc = ctx.device.create_command_encoder(&Default::default());
                record(&mut enc, &steps, rows, 1);
                ctx.queue.submit([enc.finish()]);
                let got = read(&ctx, &yb, rows * y_stride);
                let mut worst = 0f32;
                for m in 0..rows {
                    #[allow(clippy::needless_range_loop)] // col indexes y, y0 and bias at different offsets
                    for col in 0..y_stride {
                        let i = m * y_stride + col;
                        let want = if col < n_off || col >= n_off + n {
                            y0[i]
                        } else {
                            let r = col - n_off;
                            let dot: f32 = (0..k)
                                .map(|c| {
                                    let v = act(input, x[m * x_stride + c]);
                                    w.get(r, c) * if gated { v * x[m * x_stride + k + c] } else { v }
                                })
                                .sum();
                            y0[i] + dot + bias[col]
                        };
                        worst = worst.max((got[i] - want).abs());
                    }
                }
                assert!(worst < 1e-4, "{dtype:?} {input:?} rows {rows}: max error {worst}");
            }
        }
    }
}

#[test]
fn norm_writes_or_adds_rms_normed_rows() {
    let ctx = context();
    let mut kernels = Kernels::new(&ctx.device, ctx.info.software);
    let mut rng = Rng::new(9);
    let (d, rows) = (300, 3);
    let (t, w, out0) = (rng.vec(rows * d, 1.0), rng.vec(d, 1.0), rng.vec(rows * d, 1.0));
    for accumulate in [false, true] {
        let (tb, wb, ob) = (buffer(&ctx, &t), buffer(&ctx, &w), buffer(&ctx, &out0));
        let pass = uniform(&ctx, &PassInfo { n_rows: rows as u32, _pad: [0; 3] });
        let dummy = buffer(&ctx, &[0.0; 4]);
        let mut steps = Vec::new();
        Recorder { ctx: &ctx, kernels: &mut kernels, dummy: &dummy, eps: 1e-5, use_matmul: false }
            .norm(&mut steps, &tb, &wb, &ob, accumulate, d, &pass);
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        record(&mut enc, &steps, rows, 1);
        ctx.queue.submit([enc.finish()]);
        let got = read(&ctx, &ob, rows * d);
        for r in 0..rows {
            let row = &t[r * d..(r + 1) * d];
            let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f32>() / d as f32 + 1e-5).sqrt();
            for i in 0..d {
                let want = row[i] * inv * w[i] + if accumulate { out0[r * d + i] } else { 0.0 };
                assert!((got[r * d + i] - want).abs() < 1e-5, "row {r} col {i}: {} vs {want}", got[r * d + i]);
            }
        }
    }
}

#[test]
fn q8_0_requantization_stays_within_half_a_step() {
    let mut rng = Rng::new(3);
    let values = rng.vec(4 * 64, 1.0);
    let q = Repacked::q8_0(&values, 4, 64);
    for r in 0..4 {
        for b in 0..2 {
            let block = &values[r * 64 + b * 32..r * 64 + b * 32 + 32];
            let step = block.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            for (i, v) in block.iter().enumerate() {
                assert!((q.get(r, b * 32 + i) - v).abs() <= step * 0.5 + 1e-7);
            }
        }
    }
}

/// A matrix repacked for the GPU against candle's dequantization of the same bytes (ggml
/// computes d·sc·q − dmin·m in f32 too; only the order of the last two may differ), and a
/// byte short of whole blocks rejected. `k`: a row's length.
fn repacks_without_loss(dtype: candle_core::quantized::GgmlDType, format: Format, k: usize, seed: u64) {
    use candle_core::quantized::QTensor;
    use candle_core::{Device, Tensor};
    let rows = 3;
    let t = Tensor::from_vec(Rng::new(seed).vec(rows * k, 1.0), (rows, k), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, dtype).unwrap();
    let want: Vec<f32> = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let bytes = q.data().unwrap();
    let r = Repacked::from_gguf(dtype, &bytes, rows, k).unwrap().expect("repacked");
    assert_eq!(r.format, format);
    for row in 0..rows {
        for i in 0..k {
            let (a, b) = (r.get(row, i), want[row * k + i]);
            assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-3), "{dtype:?} ({row}, {i}): {a} vs {b}");
        }
    }
    assert!(Repacked::from_gguf(dtype, &bytes[..bytes.len() - 1], rows, k).is_err());
}

#[test]
fn q4_k_is_repacked_as_q4_1_without_loss() {
    repacks_without_loss(candle_core::quantized::GgmlDType::Q4K, Format::Q4_1, 512, 9);
}

#[test]
fn q6_k_is_repacked_as_q8_16_without_loss() {
    repacks_without_loss(candle_core::quantized::GgmlDType::Q6K, Format::Q8_16, 512, 10);
}

#[test]
fn q5_0_is_repacked_as_q8_0_without_loss() {
    // 896: the 0.5B Qwen's rows, 28 blocks (not whole 256-value super-blocks).
    repacks_without_loss(candle_core::quantized::GgmlDType::Q5_0, Format::Q8_0, 896, 12);
}
