//! What the GPU unit tests share: the adapter, buffers from host data and back, weight
//! matrices quantized as a model file holds them, and the gated activations' CPU reference.
//! Native only: the adapter is opened blocking (lavapipe in CI).

use bytemuck::Pod;
use candle_core::quantized::{GgmlDType, QTensor};
use wgpu::util::DeviceExt;

use super::abi::MatvecInput;
use super::weights::Repacked;
use super::GpuContext;

pub fn context() -> GpuContext {
    GpuContext::open().unwrap_or_else(|e| {
        panic!("missing prerequisite: a WebGPU adapter ({e}; install mesa-vulkan-drivers: ./build.sh test does)")
    })
}

/// A storage buffer holding `data` (copies in and out allowed).
pub fn buffer(ctx: &GpuContext, data: &[f32]) -> wgpu::Buffer {
    ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(data),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
    })
}

/// A uniform buffer holding `value`.
pub fn uniform<T: Pod>(ctx: &GpuContext, value: &T) -> wgpu::Buffer {
    ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::bytes_of(value),
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
    })
}

/// A readback buffer for `floats` floats.
pub fn staging(ctx: &GpuContext, floats: usize) -> wgpu::Buffer {
    ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: (floats * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

/// The first `floats` floats of a storage buffer, after the work submitted so far.
pub fn read(ctx: &GpuContext, b: &wgpu::Buffer, floats: usize) -> Vec<f32> {
    let st = staging(ctx, floats);
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    enc.copy_buffer_to_buffer(b, 0, &st, 0, (floats * 4) as u64);
    ctx.queue.submit([enc.finish()]);
    ctx.read_f32(&st, floats).unwrap()
}

/// The GGUF types the kernel tests quantize through: every format the kernels read once
/// (Q8_16 from Q6_K), then Q5_0, which runs as Q8_0.
pub const GGUF_TYPES: [GgmlDType; 7] = [
    GgmlDType::F32,
    GgmlDType::F16,
    GgmlDType::Q4_0,
    GgmlDType::Q4_1,
    GgmlDType::Q8_0,
    GgmlDType::Q6K,
    GgmlDType::Q5_0,
];

/// A `rows` x `k` matrix quantized to `dtype` and repacked from its GGUF bytes (as a model
/// file holds them).
pub fn gguf_matrix(dtype: GgmlDType, values: &[f32], rows: usize, k: usize) -> Repacked {
    let t = candle_core::Tensor::from_slice(values, (rows, k), &candle_core::Device::Cpu).unwrap();
    let q = QTensor::quantize(&t, dtype).unwrap();
    Repacked::from_gguf(dtype, &q.data().unwrap(), rows, k).unwrap().unwrap()
}

/// Rows of whole 256-value super-blocks (the K-quants) or of 32-value blocks.
pub fn super_blocks(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4K | GgmlDType::Q6K)
}

/// The matvec's input mode on one element of the gate, as the CPU computes it (the caller
/// multiplies the gated modes by the up element).
pub fn act(input: MatvecInput, g: f32) -> f32 {
    match input {
        MatvecInput::SiluGate => g / (1.0 + (-g).exp()),
        MatvecInput::GeluGate => 0.5 * g * (1.0 + (0.797_884_6 * (g + 0.044715 * g * g * g)).tanh()),
        MatvecInput::Plain => g,
    }
}
