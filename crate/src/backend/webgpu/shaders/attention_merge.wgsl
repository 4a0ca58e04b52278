// Combines attention.wgsl's per-chunk partial results of one (row, head):
// out[row, h*hd + i] = Σ_c e^(max_c - M) · acc_c[i] / Σ_c e^(max_c - M) · sum_c, M = max_c max_c.
// Workgroup: 64 threads over the head's dimensions; grid (n_head, rows).

struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    layer: u32,
    n_layer: u32,
    window: u32,
    max_chunks: u32,
    scale: f32,
}

struct Pass {
    n_rows: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const CHUNK: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> rows_meta: array<u32>;
@group(0) @binding(2) var<storage, read> partial: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> pass_info: Pass;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let r = wg.y;
    if (r >= pass_info.n_rows) {
        return;
    }
    let h = wg.x;
    let hd = p.head_dim;
    let pos = rows_meta[4u * r + 1u];
    var start = 0u;
    if (p.window > 0u && pos + 1u > p.window) {
        start = pos + 1u - p.window;
    }
    let chunks = (pos + 1u - start + CHUNK - 1u) / CHUNK;
    let base = (r * p.n_head + h) * p.max_chunks * (hd + 2u);
    var top = -3.4e38;
    for (var c = 0u; c < chunks; c++) {
        top = max(top, partial[base + c * (hd + 2u) + hd]);
    }
    var total = 0.0;
    for (var c = 0u; c < chunks; c++) {
        let at = base + c * (hd + 2u);
        total += exp(partial[at + hd] - top) * partial[at + hd + 1u];
    }
    for (var i = tid; i < hd; i += 64u) {
        var acc = 0.0;
        for (var c = 0u; c < chunks; c++) {
            let at = base + c * (hd + 2u);
            acc += exp(partial[at + hd] - top) * partial[at + i];
        }
        out[r * p.n_head * hd + h * hd + i] = acc / total;
    }
}
