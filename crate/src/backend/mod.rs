//! Backends: where the matrix work runs. CPU: candle QMatMul plus our own SIMD kernels.
pub mod linear;
pub mod q4_1;
pub mod q8_0;
