//! The tiled matmul (matmul.wgsl) against the matvec (matvec.wgsl) and a CPU reference:
//! every format (and Q5_0, repacked into Q8_0) and input mode, sizes that are not multiples
//! of the tiles, offsets and strides, bias and accumulate on and off. Both pipelines are
//! bound with one bind group.
//! They need an adapter: lavapipe in CI.

use super::abi::{MatvecInput, MATMUL_TILE_N, MATMUL_TILE_ROWS, MATVEC_ROWS, WORKGROUP};
use super::kernels::{bind, Kernels, MatvecParams, PassInfo};
use super::test_util::{act, buffer, context, gguf_matrix, staging, super_blocks, uniform, GGUF_TYPES};
use super::weights::{GpuMatrix, Repacked};
use super::GpuContext;
use crate::rng::Rng;
use candle_core::quantized::GgmlDType;

/// A matrix of `dtype`: F32 and Q8_0 through the repackers, the others through their
/// GGUF bytes (as a model file holds them).
fn matrix(dtype: GgmlDType, values: &[f32], rows: usize, k: usize) -> Repacked {
    match dtype {
        GgmlDType::F32 => Repacked::f32(values, rows, k),
        GgmlDType::Q8_0 => Repacked::q8_0(values, rows, k),
        _ => gguf_matrix(dtype, values, rows, k),
    }
}

struct Case {
    dtype: GgmlDType,
    input: MatvecInput,
    n: usize,
    k: usize,
    rows: usize,
    bias: bool,
    accumulate: bool,
}

/// Runs the matvec and the matmul on the same inputs through one bind group (y reset to
/// y0 in between); returns (matvec y, matmul y, CPU y), each with the guard row.
fn run(ctx: &GpuContext, kernels: &mut Kernels, rng: &mut Rng, c: &Case) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (n, k, rows) = (c.n, c.k, c.rows);
    let w = matrix(c.dtype, &rng.vec(n * k, 1.0), n, k);
    let gated = c.input != MatvecInput::Plain;
    // Row strides above the row length, multiples of 4 (x is read as vec4).
    let up_off = if gated { k.next_multiple_of(4) } else { 0 };
    let x_stride = (up_off + k).next_multiple_of(4) + 8;
    let n_off = 3;
    let y_stride = n_off + n + 5;
    // One row more than the pass has in x and y (buffers are sized for the longest pass):
    // rows past n_rows must be neither read into results nor written.
    let x = rng.vec((rows + 1) * x_stride, 1.0);
    let bias = rng.vec(n_off + n, 1.0);
    let y0 = rng.vec((rows + 1) * y_stride, 1.0);
    let gm = GpuMatrix::upload(ctx, &w).unwrap();
    assert_eq!(gm.chunks.len(), 1);
    let chunk = &gm.chunks[0];
    let params = MatvecParams {
        k: k as u32,
        n: n as u32,
        n_off: n_off as u32,
        x_stride: x_stride as u32,
        y_stride: y_stride as u32,
        up_off: up_off as u32,
        accumulate: c.accumulate as u32,
        has_bias: c.bias as u32,
    };
    let (pb, xb, yb, y0b, bb) =
        (uniform(ctx, &params), buffer(ctx, &x), buffer(ctx, &y0), buffer(ctx, &y0), buffer(ctx, &bias));
    let dummy = buffer(ctx, &[0.0; 4]);
    let pass = uniform(ctx, &PassInfo { n_rows: rows as u32, _pad: [0; 3] });
    let wg_rows = WORKGROUP / kernels.matvec_lanes;
    let matvec = kernels.matvec(w.format, c.input).pipeline.clone();
    let matmul = kernels.matmul(w.format, c.input);
    let group = bind(
        &ctx.device,
        &matmul.layout,
        &[
            (0, &pb),
            (1, &chunk.wq),
            (2, &chunk.ws),
            (3, &xb),
            (4, &yb),
            (5, if c.bias { &bb } else { &dummy }),
            (6, &pass),
        ],
    );
    let floats = (rows + 1) * y_stride;
    let bytes = (floats * 4) as u64;
    let (out_mv, out_mm) = (staging(ctx, floats), staging(ctx, floats));
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut cp = enc.begin_compute_pass(&Default::default());
        cp.set_pipeline(&matvec);
        cp.set_bind_group(0, &group, &[]);
        cp.dispatch_workgroups((n as u32).div_ceil(wg_rows), 1, (rows as u32).div_ceil(MATVEC_ROWS));
    }
    enc.copy_buffer_to_buffer(&yb, 0, &out_mv, 0, bytes);
    enc.copy_buffer_to_buffer(&y0b, 0, &yb, 0, bytes);
    {
        let mut cp = enc.begin_compute_pass(&Default::default());
        cp.set_pipeline(&matmul.pipeline);
        cp.set_bind_group(0, &group, &[]);
        cp.dispatch_workgroups((n as u32).div_ceil(MATMUL_TILE_N), 1, (rows as u32).div_ceil(MATMUL_TILE_ROWS));
    }
    enc.copy_buffer_to_buffer(&yb, 0, &out_mm, 0, bytes);
    ctx.queue.submit([enc.finish()]);
    let mv = ctx.read_f32(&out_mv, floats).unwrap();
    let mm = ctx.read_f32(&out_mm, floats).unwrap();
    let mut cpu = y0.clone();
    for m in 0..rows {
        for r in 0..n {
            let dot: f32 = (0..k)
                .map(|i| {
                    let v = act(c.input, x[m * x_stride + i]);
                    w.get(r, i) * if gated { v * x[m * x_stride + up_off + i] } else { v }
                })
                .sum();
            let i = m * y_stride + n_off + r;
            let b = if c.bias { bias[n_off + r] } else { 0.0 };
            cpu[i] = if c.accumulate { y0[i] } else { 0.0 } + dot + b;
        }
    }
    (mv, mm, cpu)
}

fn worst(got: &[f32], want: &[f32]) -> f32 {
    got.iter().zip(want).map(|(g, w)| (g - w).abs() / w.abs().max(1.0)).fold(0.0, f32::max)
}

#[test]
fn matmul_matches_the_matvec_and_a_cpu_reference_for_every_format_input_and_shape() {
    let ctx = context();
    let mut kernels = Kernels::new(&ctx.device, ctx.info.software);
    let mut rng = Rng::new(11);
    let mut cases = 0;
    for dtype in GGUF_TYPES {
        let mut shapes = if super_blocks(dtype) { vec![(37, 256), (100, 512)] } else { vec![(37, 64), (100, 96)] };
        if dtype == GgmlDType::Q5_0 {
            // Odd numbers of blocks, and the 0.5B Qwen's rows (896: 28 blocks).
            shapes = vec![(37, 96), (100, 160), (29, 896)];
        }
        if matches!(dtype, GgmlDType::F32 | GgmlDType::F16) {
            // Rows that are not whole 32-element blocks (nor, for 50, whole vec4s).
            shapes.push((70, 52));
            shapes.push((65, 50));
        }
        for input in [MatvecInput::Plain, MatvecInput::SiluGate, MatvecInput::GeluGate] {
            for &(n, k) in &shapes {
                if k % 4 != 0 && input != MatvecInput::Plain {
                    continue; // up_off must be a multiple of 4
                }
                for (i, rows) in [1, 9, 37, 64].into_iter().enumerate() {
                    let c = Case { dtype, input, n, k, rows, bias: i % 2 == 0, accumulate: i / 2 == 0 || n == 100 };
                    let (mv, mm, cpu) = run(&ctx, &mut kernels, &mut rng, &c);
                    let (e_mv, e_cpu, e_ref) = (worst(&mm, &mv), worst(&mm, &cpu), worst(&mv, &cpu));
                    let what =
                        format!("{dtype:?} {input:?} n {n} k {k} rows {rows} bias {} acc {}", c.bias, c.accumulate);
                    assert!(e_mv < 1e-4, "{what}: matmul vs matvec {e_mv}");
                    assert!(e_cpu < 1e-4, "{what}: matmul vs CPU {e_cpu}");
                    assert!(e_ref < 1e-4, "{what}: matvec vs CPU {e_ref}");
                    cases += 1;
                }
            }
        }
    }
    assert!(ctx.take_error().is_ok());
    eprintln!("{cases} cases");
}
