// Quantized matrix times a few rows: y[m, n_off + n] (+)= Σ_k W[n, k] · in(m, k) (+ bias).
// Decode runs 1-8 rows (the Amulet contexts) through one pass over W; prefill dispatches
// one z-slice per 8 rows, so W is read once per 8 prompt tokens.
// W: one row-chunk of a weight matrix, p.n rows of p.k elements (quant.wgsl layout).
// in(m, k): INPUT 0: x[m, k] (norms run before, norm.wgsl); 2/3: act(x[m, k]) ·
// x[m, up_off + k], act = SiLU or GELU-tanh (the gated MLP fused into the down
// projection). x is read as vec4: row strides and up_off are multiples of 4.
// Workgroup: 256 threads = 8 rows of W × 32 lanes; lanes stride over a row's u32 words
// (coalesced), keep 8 per-input sums, then reduce across the 32 lanes in shared memory.
// All loops over input rows have the constant bound MT and a guard (m < mc), so they
// unroll and the sums stay in registers.

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

override INPUT: u32 = 0u;
// Lanes per row of W: 32 on GPUs; 1 on software adapters (lavapipe), where every
// barrier costs a context switch and one invocation per row runs fastest.
override LANES: u32 = 32u;
const MT: u32 = 8u;
override WG_ROWS: u32 = 256u / LANES;

var<workgroup> red: array<f32, 2048>;

// Input elements k..k+3 of row m (k a multiple of 4).
fn in4(m: u32, k: u32) -> vec4<f32> {
    let v = x[(m * p.x_stride + k) / 4u];
    switch INPUT {
        case 2u: {
            let up = x[(m * p.x_stride + p.up_off + k) / 4u];
            return v / (1.0 + exp(-v)) * up;
        }
        case 3u: {
            let up = x[(m * p.x_stride + p.up_off + k) / 4u];
            let t = clamp(0.7978845608028654 * (v + 0.044715 * v * v * v), vec4<f32>(-15.0), vec4<f32>(15.0));
            return 0.5 * v * (1.0 + tanh(t)) * up;
        }
        default: { return v; }
    }
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let m0 = wg.z * MT;
    let mc = min(MT, pass_info.n_rows - min(m0, pass_info.n_rows));
    let row_l = tid / LANES;
    let lane = tid % LANES;
    let n = wg.x * WG_ROWS + row_l;
    var acc: array<f32, 8>;
    for (var m = 0u; m < MT; m++) {
        acc[m] = 0.0;
    }
    if (n < p.n) {
        let wpr = words_per_row(p.k);
        let nb = p.k / 32u;
        for (var w = lane; w < wpr; w += LANES) {
            let word = wq[n * wpr + w];
            switch FORMAT {
                case 4u, 5u: {
                    // 8 words a scale (Q8_0) or 4 (Q8_16).
                    let d = ws[n * (p.k / q8_group()) + w / (q8_group() / 4u)];
                    let wi = bitcast<i32>(word);
                    let q = vec4<f32>(f32(extractBits(wi, 0u, 8u)), f32(extractBits(wi, 8u, 8u)),
                                      f32(extractBits(wi, 16u, 8u)), f32(extractBits(wi, 24u, 8u)));
                    for (var m = 0u; m < MT; m++) {
                        if (m < mc) {
                            acc[m] += d * dot(q, in4(m0 + m, w * 4u));
                        }
                    }
                }
                case 2u, 3u: {
                    let b = n * nb + w / 4u;
                    let klo = (w / 4u) * 32u + (w % 4u) * 4u;
                    let lo = vec4<f32>(f32(extractBits(word, 0u, 4u)), f32(extractBits(word, 8u, 4u)),
                                       f32(extractBits(word, 16u, 4u)), f32(extractBits(word, 24u, 4u)));
                    let hi = vec4<f32>(f32(extractBits(word, 4u, 4u)), f32(extractBits(word, 12u, 4u)),
                                       f32(extractBits(word, 20u, 4u)), f32(extractBits(word, 28u, 4u)));
                    for (var m = 0u; m < MT; m++) {
                        if (m < mc) {
                            let xlo = in4(m0 + m, klo);
                            let xhi = in4(m0 + m, klo + 16u);
                            if (FORMAT == FMT_Q4_1) {
                                let sx = dot(xlo + xhi, vec4<f32>(1.0));
                                acc[m] += ws[2u * b] * (dot(lo, xlo) + dot(hi, xhi)) + ws[2u * b + 1u] * sx;
                            } else {
                                acc[m] += ws[b] * (dot(lo - 8.0, xlo) + dot(hi - 8.0, xhi));
                            }
                        }
                    }
                }
                case 1u: {
                    let pair = unpack2x16float(word);
                    for (var m = 0u; m < MT; m++) {
                        if (m < mc) {
                            let v = in4(m0 + m, (2u * w) & ~3u);
                            acc[m] += dot(pair, select(v.xy, v.zw, (w & 1u) == 1u));
                        }
                    }
                }
                default: {
                    let f = bitcast<f32>(word);
                    for (var m = 0u; m < MT; m++) {
                        if (m < mc) {
                            acc[m] += f * in4(m0 + m, w & ~3u)[w & 3u];
                        }
                    }
                }
            }
        }
    }
    for (var m = 0u; m < MT; m++) {
        if (m < mc) {
            red[tid * MT + m] = acc[m];
        }
    }
    workgroupBarrier();
    for (var off = LANES / 2u; off > 0u; off >>= 1u) {
        if (lane < off) {
            for (var m = 0u; m < MT; m++) {
                if (m < mc) {
                    red[tid * MT + m] += red[(tid + off) * MT + m];
                }
            }
        }
        workgroupBarrier();
    }
    if (n < p.n) {
        for (var m = lane; m < mc; m += LANES) {
            var v = red[row_l * LANES * MT + m];
            if (p.has_bias == 1u) {
                v += bias[p.n_off + n];
            }
            let idx = (m0 + m) * p.y_stride + p.n_off + n;
            if (p.accumulate == 1u) {
                v += y[idx];
            }
            y[idx] = v;
        }
    }
}
