// Causal attention of one row's query head over a chunk of ATTENTION_CHUNK positions of
// its own sequence's KV cache (split-K "flash decoding": a decode step has few rows, so
// the positions, not the heads, give the GPU its parallelism). GQA: query head h reads kv
// head h / (n_head / n_kv_head); Gemma 3's local layers see positions pos + 1 - window ..= pos.
// Writes, per (row, head, chunk), the chunk's max score, its sum of exp(score - max) and
// Σ exp(score - max) · v into `partial` [rows][n_head][max_chunks][head_dim + 2];
// `merge` below combines the chunks. KV pool and meta as in rope_cache.wgsl.
// Workgroup: 256 threads per (head, row, chunk). Scores: 4 threads per position, each a
// quarter of the head; weighted sum: thread (dim, group) over every (256 / head_dim)-th position.

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

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> rows_meta: array<u32>;
@group(0) @binding(3) var<storage, read> k_pool: array<f32>;
@group(0) @binding(4) var<storage, read> v_pool: array<f32>;
@group(0) @binding(5) var<storage, read_write> partial: array<f32>;
@group(0) @binding(6) var<uniform> pass_info: Pass;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

var<workgroup> q: array<f32, MAX_HEAD_DIM>;
var<workgroup> part: array<f32, 256>;
var<workgroup> prob: array<f32, ATTENTION_CHUNK>;
var<workgroup> red: array<f32, ATTENTION_CHUNK>;

// The first position a query at `pos` sees (Gemma's local layers see only `window`).
fn first_visible(pos: u32) -> u32 {
    if (p.window > 0u && pos + 1u > p.window) {
        return pos + 1u - p.window;
    }
    return 0u;
}

fn kv_at(table: u32, t: u32, kv_dim: u32) -> u32 {
    let page = rows_meta[table + t / KV_PAGE];
    return ((page * p.n_layer + p.layer) * KV_PAGE + t % KV_PAGE) * kv_dim;
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let r = wg.y;
    if (r >= pass_info.n_rows) {
        return;
    }
    let h = wg.x;
    let chunk = wg.z;
    let hd = p.head_dim;
    let q_dim = p.n_head * hd;
    let kv_dim = p.n_kv_head * hd;
    let g = h / (p.n_head / p.n_kv_head);
    let pos = rows_meta[ROW_META_WORDS * r + 1u];
    let table = rows_meta[ROW_META_WORDS * r + 2u];
    let start = first_visible(pos);
    let len = pos + 1u - start;
    let t0 = chunk * ATTENTION_CHUNK;
    if (t0 >= len) {
        return;
    }
    let count = min(ATTENTION_CHUNK, len - t0);
    for (var i = tid; i < hd; i += 256u) {
        q[i] = qkv[r * (q_dim + 2u * kv_dim) + h * hd + i];
    }
    workgroupBarrier();

    let j = tid / 4u;
    let quarter = hd / 4u;
    var s = 0.0;
    if (j < count) {
        let at = kv_at(table, start + t0 + j, kv_dim) + g * hd;
        let i0 = (tid % 4u) * quarter;
        for (var i = i0; i < i0 + quarter; i++) {
            s += q[i] * k_pool[at + i];
        }
    }
    part[tid] = s;
    workgroupBarrier();
    if (tid < ATTENTION_CHUNK) {
        var score = -3.4e38;
        if (tid < count) {
            score = (part[4u * tid] + part[4u * tid + 1u] + part[4u * tid + 2u] + part[4u * tid + 3u]) * p.scale;
        }
        prob[tid] = score;
        red[tid] = score;
    }
    workgroupBarrier();
    for (var off = ATTENTION_CHUNK / 2u; off > 0u; off >>= 1u) {
        if (tid < off) {
            red[tid] = max(red[tid], red[tid + off]);
        }
        workgroupBarrier();
    }
    let top = red[0];
    workgroupBarrier();
    if (tid < ATTENTION_CHUNK) {
        var e = 0.0;
        if (tid < count) {
            e = exp(prob[tid] - top);
        }
        prob[tid] = e;
        red[tid] = e;
    }
    workgroupBarrier();
    for (var off = ATTENTION_CHUNK / 2u; off > 0u; off >>= 1u) {
        if (tid < off) {
            red[tid] += red[tid + off];
        }
        workgroupBarrier();
    }

    let groups = 256u / hd;
    let i = tid % hd;
    let grp = tid / hd;
    var acc = 0.0;
    if (grp < groups) {
        for (var t = grp; t < count; t += groups) {
            acc += prob[t] * v_pool[kv_at(table, start + t0 + t, kv_dim) + g * hd + i];
        }
    }
    part[tid] = acc;
    workgroupBarrier();
    let base = ((r * p.n_head + h) * p.max_chunks + chunk) * (hd + 2u);
    if (tid < hd) {
        var total = 0.0;
        for (var k = 0u; k < groups; k++) {
            total += part[k * hd + tid];
        }
        partial[base + tid] = total;
    }
    if (tid == 0u) {
        partial[base + hd] = top;
        partial[base + hd + 1u] = red[0];
    }
}

// The chunks of one (row, head) combined:
// out[row, h*hd + i] = Σ_c e^(max_c - M) · acc_c[i] / Σ_c e^(max_c - M) · sum_c, M = max_c max_c.
// Workgroup: 64 threads over the head's dimensions; grid (n_head, rows).
@compute @workgroup_size(64)
fn merge(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let r = wg.y;
    if (r >= pass_info.n_rows) {
        return;
    }
    let h = wg.x;
    let hd = p.head_dim;
    let pos = rows_meta[ROW_META_WORDS * r + 1u];
    let start = first_visible(pos);
    let chunks = (pos + 1u - start + ATTENTION_CHUNK - 1u) / ATTENTION_CHUNK;
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
