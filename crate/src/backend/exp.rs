//! Exponentials of many floats at once, with this build's `f32::exp` bits: the softmax of
//! attention's scores and SwiGLU's `exp(-gate)`. Called one value at a time they were a tenth
//! of a decode step at long contexts natively, and most of SwiGLU's time in wasm. x86 with
//! glibc: glibc's `expf` on eight lanes (glibc.rs); wasm: the Rust libm port's on four
//! (libm.rs); elsewhere one call a value. Each lane form takes the scalar call's operations in
//! its order, so the same bits (tested against `f32::exp` in each build).

#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_env = "gnu"))]
mod glibc;
#[cfg(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_env = "gnu"))]
use glibc::exp_shifted as lanes;

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod libm;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
use libm::exp_shifted as lanes;

#[cfg(not(any(
    all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma", target_env = "gnu"),
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
use plain::exp_shifted as lanes;

/// `x = exp(x - max)` for every value, bit for bit as `(x - max).exp()`.
pub fn exp_shifted(xs: &mut [f32], max: f32) {
    lanes(xs, max)
}

/// The scalar loop: the reference for tests, and the lane forms' tails.
#[doc(hidden)]
pub mod plain {
    pub fn exp_shifted(xs: &mut [f32], max: f32) {
        for x in xs.iter_mut() {
            *x = (*x - max).exp();
        }
    }
}
