//! Backends: where the matrix work runs. CPU: candle QMatMul plus our own SIMD kernels;
//! WebGPU: wgpu and our WGSL kernels (natively through Vulkan/Metal/DX12, in browsers on navigator.gpu).
pub mod acts;
pub mod attend;
pub mod exp;
pub mod linear;
pub mod norm;
pub mod pool;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q6_k;
pub mod q8_0;
pub mod rows;
pub mod swiglu;
#[cfg(test)]
mod testutil;
pub mod view;
pub mod webgpu;
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_feature = "f16c"))]
pub mod x86;
