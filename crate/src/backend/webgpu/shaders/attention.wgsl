// Causal attention of one row's query head over its own sequence's KV cache, with GQA
// (query head h reads kv head h / (n_head / n_kv_head)) and an optional sliding window
// (Gemma 3's local layers: positions pos + 1 - window ..= pos).
// out[row, h*hd + i] = Σ_t softmax_t(scale · q·k_t) · v_t[i].
// Scores go to a scratch row scores[(row * n_head + h) * score_cap + t - start].
// KV pool and rows_meta as in rope_cache.wgsl.
// Workgroup: 64 threads per (head, row): threads take positions for the scores and
// dimensions for the weighted sum of values (coalesced reads of v).

struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    layer: u32,
    n_layer: u32,
    window: u32,
    score_cap: u32,
    scale: f32,
}

struct Pass {
    n_rows: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const PAGE: u32 = 16u;

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> rows_meta: array<u32>;
@group(0) @binding(3) var<storage, read> k_pool: array<f32>;
@group(0) @binding(4) var<storage, read> v_pool: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
@group(0) @binding(6) var<storage, read_write> scores: array<f32>;
@group(0) @binding(7) var<uniform> pass_info: Pass;

var<workgroup> q: array<f32, 256>;
var<workgroup> red: array<f32, 64>;

fn slot(table: u32, t: u32, kv_dim: u32) -> u32 {
    let page = rows_meta[table + t / PAGE];
    return ((page * p.n_layer + p.layer) * PAGE + t % PAGE) * kv_dim;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let r = wg.y;
    if (r >= pass_info.n_rows) {
        return;
    }
    let h = wg.x;
    let hd = p.head_dim;
    let q_dim = p.n_head * hd;
    let kv_dim = p.n_kv_head * hd;
    let g = h / (p.n_head / p.n_kv_head);
    let pos = rows_meta[4u * r + 1u];
    let table = rows_meta[4u * r + 2u];
    var start = 0u;
    if (p.window > 0u && pos + 1u > p.window) {
        start = pos + 1u - p.window;
    }
    let len = pos + 1u - start;
    let base = (r * p.n_head + h) * p.score_cap;
    for (var i = tid; i < hd; i += 64u) {
        q[i] = qkv[r * (q_dim + 2u * kv_dim) + h * hd + i];
    }
    workgroupBarrier();

    var best = -3.4e38;
    for (var j = tid; j < len; j += 64u) {
        let at = slot(table, start + j, kv_dim) + g * hd;
        var s = 0.0;
        for (var i = 0u; i < hd; i++) {
            s += q[i] * k_pool[at + i];
        }
        s *= p.scale;
        scores[base + j] = s;
        best = max(best, s);
    }
    red[tid] = best;
    workgroupBarrier();
    for (var off = 32u; off > 0u; off >>= 1u) {
        if (tid < off) {
            red[tid] = max(red[tid], red[tid + off]);
        }
        workgroupBarrier();
    }
    let top = red[0];
    workgroupBarrier();

    var sum = 0.0;
    for (var j = tid; j < len; j += 64u) {
        let e = exp(scores[base + j] - top);
        scores[base + j] = e;
        sum += e;
    }
    red[tid] = sum;
    storageBarrier();
    workgroupBarrier();
    for (var off = 32u; off > 0u; off >>= 1u) {
        if (tid < off) {
            red[tid] += red[tid + off];
        }
        workgroupBarrier();
    }
    let total = red[0];

    for (var i = tid; i < hd; i += 64u) {
        var acc = 0.0;
        for (var j = 0u; j < len; j++) {
            acc += scores[base + j] * v_pool[slot(table, start + j, kv_dim) + g * hd + i];
        }
        out[r * q_dim + h * hd + i] = acc / total;
    }
}
