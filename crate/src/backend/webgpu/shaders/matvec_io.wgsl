// The interface matvec.wgsl and matmul.wgsl share (each is built after this file), so one
// bind group serves both pipelines: the parameters, bindings 0 and 3-6 (quant.wgsl binds
// the weights at 1 and 2), the INPUT mode and the input read.
// y[m, n_off + n] (+)= Σ_k W[n, k] · in(m, k) (+ bias[n_off + n]) for the pass's rows m.
// in(m, k): INPUT_PLAIN: x[m, k] (norms run before, norm.wgsl); INPUT_SILU_GATE /
// INPUT_GELU_GATE: act(x[m, k]) · x[m, up_off + k], act = SiLU or GELU-tanh (the gated MLP
// fused into the down projection). x is read as vec4: row strides and up_off are
// multiples of 4.

struct Params {
    k: u32,
    n: u32,
    n_off: u32,
    x_stride: u32,
    y_stride: u32,
    up_off: u32,
    accumulate: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> bias: array<f32>;
@group(0) @binding(6) var<uniform> pass_info: Pass;

override INPUT: u32 = INPUT_PLAIN;

// Input elements k..k+3 of row m (k a multiple of 4).
fn in4(m: u32, k: u32) -> vec4<f32> {
    let v = x[(m * p.x_stride + k) / 4u];
    switch INPUT {
        case INPUT_SILU_GATE: {
            let up = x[(m * p.x_stride + p.up_off + k) / 4u];
            return v / (1.0 + exp(-v)) * up;
        }
        case INPUT_GELU_GATE: {
            let up = x[(m * p.x_stride + p.up_off + k) / 4u];
            let t = clamp(0.7978845608028654 * (v + 0.044715 * v * v * v), vec4<f32>(-15.0), vec4<f32>(15.0));
            return 0.5 * v * (1.0 + tanh(t)) * up;
        }
        default: { return v; }
    }
}
