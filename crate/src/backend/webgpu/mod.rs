//! The WebGPU backend: a wgpu device (Vulkan/Metal/DX12 natively, lavapipe in CI), the
//! WGSL kernels (`shaders/`, one family per file) and the weight layout they read.
//! `model::gpu::GpuModel` drives them as the second implementation of the model seam.

pub mod choose;
mod context;
pub mod kernels;
pub mod weights;

pub use context::{GpuContext, GpuInfo};
