//! Backends: where the matrix work runs. CPU: candle QMatMul plus our own SIMD kernels;
//! WebGPU: wgpu and our WGSL kernels (native builds for now, see README "Missing").
pub mod linear;
pub mod q4_1;
pub mod q8_0;
#[cfg(not(target_arch = "wasm32"))]
pub mod webgpu;
