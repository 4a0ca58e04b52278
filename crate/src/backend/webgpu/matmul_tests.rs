//! The tiled matmul (matmul.wgsl) against the matvec (matvec.wgsl) and a CPU reference:
//! every format and input mode, sizes that are not multiples of the tiles, offsets and
//! strides, bias and accumulate on and off. Both pipelines are bound with one bind group.
//! They need an adapter: lavapipe in CI.

use wgpu::util::DeviceExt;

use super::*;
use crate::backend::webgpu::weights::{GpuMatrix, Repacked};
use crate::backend::webgpu::GpuContext;
use crate::rng::Rng;

fn context() -> GpuContext {
    GpuContext::open().unwrap_or_else(|e| panic!("{e}: install mesa-vulkan-drivers (./build.sh test does)"))
}

fn buffer(ctx: &GpuContext, data: &[f32]) -> wgpu::Buffer {
    ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(data),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
    })
}

fn uniform<T: Pod>(ctx: &GpuContext, value: &T) -> wgpu::Buffer {
    ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::bytes_of(value),
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
    })
}

fn staging(ctx: &GpuContext, floats: usize) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (floats * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// A matrix of `format`: F32 and Q8_0 through the repackers, the others through their
/// GGUF bytes (as a model file holds them).
fn matrix(format: Format, values: &[f32], rows: usize, k: usize) -> Repacked {
    use candle_core::quantized::{GgmlDType, QTensor};
    let dtype = match format {
        Format::F32 => return Repacked::f32(values, rows, k),
        Format::Q8_0 => return Repacked::q8_0(values, rows, k),
        Format::F16 => GgmlDType::F16,
        Format::Q4_0 => GgmlDType::Q4_0,
        Format::Q4_1 => GgmlDType::Q4_1,
        Format::Q8_16 => GgmlDType::Q6K,
    };
    let t = candle_core::Tensor::from_slice(values, (rows, k), &candle_core::Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, dtype).unwrap();
    Repacked::from_gguf(dtype, &q.data().unwrap(), rows, k).unwrap().unwrap()
}

fn act(input: MatvecInput, g: f32) -> f32 {
    match input {
        MatvecInput::SiluGate => g / (1.0 + (-g).exp()),
        MatvecInput::GeluGate => 0.5 * g * (1.0 + (0.797_884_6 * (g + 0.044715 * g * g * g)).tanh()),
        MatvecInput::Plain => g,
    }
}

struct Case {
    format: Format,
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
    let w = matrix(c.format, &rng.vec(n * k, 1.0), n, k);
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
    let wg_rows = 256 / kernels.matvec_lanes;
    let matvec = kernels.matvec(c.format, c.input).pipeline.clone();
    let matmul = kernels.matmul(c.format, c.input);
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
    for format in [Format::F32, Format::F16, Format::Q4_0, Format::Q4_1, Format::Q8_0, Format::Q8_16] {
        // Q8_16 comes from Q6_K, whose rows are whole 256-value blocks.
        let mut shapes = if format == Format::Q8_16 { vec![(37, 256), (100, 512)] } else { vec![(37, 64), (100, 96)] };
        if matches!(format, Format::F32 | Format::F16) {
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
                    let c = Case { format, input, n, k, rows, bias: i % 2 == 0, accumulate: i / 2 == 0 || n == 100 };
                    let (mv, mm, cpu) = run(&ctx, &mut kernels, &mut rng, &c);
                    let (e_mv, e_cpu, e_ref) = (worst(&mm, &mv), worst(&mm, &cpu), worst(&mv, &cpu));
                    let what =
                        format!("{format:?} {input:?} n {n} k {k} rows {rows} bias {} acc {}", c.bias, c.accumulate);
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

/// `cargo test --release -p amulet --lib matmul_timing -- --ignored --nocapture`
#[test]
#[ignore]
fn matmul_timing_against_the_matvec() {
    let ctx = context();
    let mut kernels = Kernels::new(&ctx.device, ctx.info.software);
    let mut rng = Rng::new(3);
    let (n, k, rows) = (1536usize, 576usize, 64usize);
    for format in [Format::Q8_0, Format::Q4_0, Format::F32] {
        let w = matrix(format, &rng.vec(n * k, 1.0), n, k);
        let gm = GpuMatrix::upload(&ctx, &w).unwrap();
        let chunk = &gm.chunks[0];
        let params =
            MatvecParams { k: k as u32, n: n as u32, x_stride: k as u32, y_stride: n as u32, ..Default::default() };
        let (pb, xb, yb) =
            (uniform(&ctx, &params), buffer(&ctx, &rng.vec(rows * k, 1.0)), buffer(&ctx, &vec![0.0; rows * n]));
        let dummy = buffer(&ctx, &[0.0; 4]);
        let pass = uniform(&ctx, &PassInfo { n_rows: rows as u32, _pad: [0; 3] });
        let wg_rows = 256 / kernels.matvec_lanes;
        let matvec = kernels.matvec(format, MatvecInput::Plain).pipeline.clone();
        let matmul = kernels.matmul(format, MatvecInput::Plain);
        let group = bind(
            &ctx.device,
            &matmul.layout,
            &[(0, &pb), (1, &chunk.wq), (2, &chunk.ws), (3, &xb), (4, &yb), (5, &dummy), (6, &pass)],
        );
        let time = |pipeline: &wgpu::ComputePipeline, grid: (u32, u32)| {
            let mut best = f64::MAX;
            for _ in 0..4 {
                let t = std::time::Instant::now();
                let mut enc = ctx.device.create_command_encoder(&Default::default());
                {
                    let mut cp = enc.begin_compute_pass(&Default::default());
                    cp.set_pipeline(pipeline);
                    cp.set_bind_group(0, &group, &[]);
                    cp.dispatch_workgroups(grid.0, 1, grid.1);
                }
                ctx.queue.submit([enc.finish()]);
                ctx.device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
                best = best.min(t.elapsed().as_secs_f64());
            }
            best * 1e3
        };
        let t_mv = time(&matvec, ((n as u32).div_ceil(wg_rows), (rows as u32).div_ceil(MATVEC_ROWS)));
        let t_mm =
            time(&matmul.pipeline, ((n as u32).div_ceil(MATMUL_TILE_N), (rows as u32).div_ceil(MATMUL_TILE_ROWS)));
        eprintln!(
            "{} ({}), {format:?} n {n} k {k} rows {rows}: matvec {t_mv:.2} ms, matmul {t_mm:.2} ms (best of 4)",
            ctx.info.name, ctx.info.backend
        );
    }
}
