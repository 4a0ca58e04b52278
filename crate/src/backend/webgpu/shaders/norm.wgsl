// RMS norm of rows: out[r, :] (+)= t[r, :] / sqrt(mean(t[r, :]^2) + eps) · w.
// Before a matvec (accumulate 0) it writes the normed rows the matvec reads; after one
// (Gemma's post-attention / post-MLP norms, accumulate 1) it adds into the residual.
// Workgroup: 256 threads per row; grid (1, rows).

struct Params {
    d: u32,
    eps: f32,
    accumulate: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> t: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> pass_info: Pass;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let r = wg.y;
    if (r >= pass_info.n_rows) {
        return;
    }
    var s = 0.0;
    for (var i = tid; i < p.d; i += 256u) {
        let v = t[r * p.d + i];
        s += v * v;
    }
    red[tid] = s;
    workgroupBarrier();
    for (var off = 128u; off > 0u; off >>= 1u) {
        if (tid < off) {
            red[tid] += red[tid + off];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / sqrt(red[0] / f32(p.d) + p.eps);
    for (var i = tid; i < p.d; i += 256u) {
        var v = t[r * p.d + i] * inv * w[i];
        if (p.accumulate == 1u) {
            v += out[r * p.d + i];
        }
        out[r * p.d + i] = v;
    }
}
