// Per-row RMS scale: scale[r] = 1 / sqrt(mean_i(x[r, i]^2) + eps). The matvecs that follow
// a norm read it (matvec.wgsl INPUT 1), so the norm is computed once per row, not once
// per workgroup of the matvec.
// Workgroup: 256 threads per row; grid (1, rows).

struct Params {
    d: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
}

struct Pass {
    n_rows: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> scale: array<f32>;
@group(0) @binding(3) var<uniform> pass_info: Pass;

var<workgroup> red: array<f32, 256>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let r = wg.y;
    if (r >= pass_info.n_rows) {
        return;
    }
    var s = 0.0;
    for (var i = tid; i < p.d; i += 256u) {
        let v = x[r * p.d + i];
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
    if (tid == 0u) {
        scale[r] = 1.0 / sqrt(red[0] / f32(p.d) + p.eps);
    }
}
