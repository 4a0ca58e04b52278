//! Times the tiled matmul (matmul.wgsl) against the matvec (matvec.wgsl) on the adapter
//! wgpu picks, for one prefill pass of 64 rows through a 1536 x 576 matrix (SmolLM2-135M's
//! ffn_gate shape) in Q8_0, Q4_0 and F32: the figures behind `AMULET_GPU_MATMUL`'s default.
//! Best of 4 runs each, printed, never asserted.
//! `cargo run --release --example gpu_matmul_bench` (on lavapipe with XDG_RUNTIME_DIR set,
//! as for the GPU tests).

use amulet::backend::webgpu::abi::{Format, MatvecInput, MATMUL_TILE_N, MATMUL_TILE_ROWS, MATVEC_ROWS, WORKGROUP};
use amulet::backend::webgpu::kernels::{bind, Kernels, MatvecParams, PassInfo};
use amulet::backend::webgpu::weights::{GpuMatrix, Repacked};
use amulet::backend::webgpu::GpuContext;
use amulet::rng::Rng;
use candle_core::quantized::{GgmlDType, QTensor};
use wgpu::util::DeviceExt;

/// A matrix of `format`: F32 and Q8_0 through the repackers, Q4_0 through its GGUF bytes.
fn matrix(format: Format, values: &[f32], rows: usize, k: usize) -> Repacked {
    match format {
        Format::F32 => Repacked::f32(values, rows, k),
        Format::Q8_0 => Repacked::q8_0(values, rows, k),
        Format::Q4_0 => {
            let t = candle_core::Tensor::from_slice(values, (rows, k), &candle_core::Device::Cpu).unwrap();
            let q = QTensor::quantize(&t, GgmlDType::Q4_0).unwrap();
            Repacked::from_gguf(GgmlDType::Q4_0, &q.data().unwrap(), rows, k).unwrap().unwrap()
        }
        other => unreachable!("{other:?} is not timed"),
    }
}

fn buffer(ctx: &GpuContext, data: &[f32]) -> wgpu::Buffer {
    ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(data),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
    })
}

fn uniform<T: bytemuck::Pod>(ctx: &GpuContext, value: &T) -> wgpu::Buffer {
    ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::bytes_of(value),
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
    })
}

fn main() {
    let ctx = GpuContext::open().unwrap_or_else(|e| panic!("{e}: install mesa-vulkan-drivers for lavapipe"));
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
        let wg_rows = WORKGROUP / kernels.matvec_lanes;
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
        println!(
            "{} ({}), {format:?} n {n} k {k} rows {rows}: matvec {t_mv:.2} ms, matmul {t_mm:.2} ms (best of 4)",
            ctx.info.name, ctx.info.backend
        );
    }
    if let Err(e) = ctx.take_error() {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
