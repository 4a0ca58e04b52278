//! The WebGPU backend: a wgpu device (Vulkan/Metal/DX12 natively, lavapipe in CI), the
//! WGSL kernels (`shaders/`, one family per file), the numbers they share with Rust
//! (`abi`) and the weight layout they read. `model::gpu::GpuModel` drives them as the
//! second implementation of the model seam.

pub mod abi;
pub mod choose;
mod context;
pub mod kernels;
pub mod upload;
pub mod weights;

pub use context::{GpuContext, GpuInfo};

// The GPU unit tests open the adapter blocking, so they run natively only (lavapipe in CI).
#[cfg(all(test, not(target_arch = "wasm32")))]
mod choose_tests;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod matmul_tests;
#[cfg(all(test, not(target_arch = "wasm32")))]
pub(crate) mod test_util;
#[cfg(all(test, not(target_arch = "wasm32")))]
mod upload_tests;
