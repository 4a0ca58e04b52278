// Per (head, row): Gemma's per-head RMS norm of q and k (QK_NORM), the rotary embedding at
// the row's position (interleaved pairs (2i, 2i+1) or halves (i, i + rope_dim/2)), then q
// goes back into qkv and k, v go into the row's place in its sequence's KV cache.
// qkv: [rows][q_dim + 2 kv_dim]. rows_meta: ROW_META_WORDS u32 per row (token, position,
// page-table offset, -) and the page tables. KV pool: [page][layer][KV_PAGE][kv_dim] f32,
// for K and for V.
// rope: [position][cos(half) | sin(half)] for this layer's base.
// Heads 0..n_head are q, then n_kv_head k heads, then n_kv_head v heads (copied as is).
// Workgroup: 64 threads over one head (head_dim <= MAX_HEAD_DIM); grid (n_head + 2 n_kv_head, rows).

struct Params {
    n_head: u32,
    n_kv_head: u32,
    head_dim: u32,
    rope_half: u32,
    layer: u32,
    n_layer: u32,
    interleaved: u32,
    qk_norm: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> rows_meta: array<u32>;
@group(0) @binding(3) var<storage, read_write> k_pool: array<f32>;
@group(0) @binding(4) var<storage, read_write> v_pool: array<f32>;
@group(0) @binding(5) var<storage, read> rope: array<f32>;
@group(0) @binding(6) var<storage, read> qk_norm_w: array<f32>;
@group(0) @binding(7) var<uniform> pass_info: Pass;

var<workgroup> head: array<f32, MAX_HEAD_DIM>;
var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let r = wg.y;
    if (r >= pass_info.n_rows) {
        return;
    }
    let hd = p.head_dim;
    let q_dim = p.n_head * hd;
    let kv_dim = p.n_kv_head * hd;
    let stride = q_dim + 2u * kv_dim;
    let h = wg.x;
    let is_q = h < p.n_head;
    let is_v = h >= p.n_head + p.n_kv_head;
    let src = r * stride + h * hd;
    for (var i = tid; i < hd; i += 64u) {
        head[i] = qkv[src + i];
    }
    workgroupBarrier();

    if (!is_v) {
        if (p.qk_norm == 1u) {
            var s = 0.0;
            for (var i = tid; i < hd; i += 64u) {
                s += head[i] * head[i];
            }
            red[tid] = s;
            workgroupBarrier();
            for (var off = 32u; off > 0u; off >>= 1u) {
                if (tid < off) {
                    red[tid] += red[tid + off];
                }
                workgroupBarrier();
            }
            let inv = 1.0 / sqrt(red[0] / f32(hd) + p.eps);
            let w_off = select(hd, 0u, is_q);
            for (var i = tid; i < hd; i += 64u) {
                head[i] = head[i] * inv * qk_norm_w[w_off + i];
            }
            workgroupBarrier();
        }
        let pos = rows_meta[ROW_META_WORDS * r + 1u];
        let half = p.rope_half;
        for (var i = tid; i < half; i += 64u) {
            let c = rope[pos * 2u * half + i];
            let s = rope[pos * 2u * half + half + i];
            var ia = i;
            var ib = i + half;
            if (p.interleaved == 1u) {
                ia = 2u * i;
                ib = 2u * i + 1u;
            }
            let a = head[ia];
            let b = head[ib];
            head[ia] = a * c - b * s;
            head[ib] = a * s + b * c;
        }
        workgroupBarrier();
    }

    if (is_q) {
        for (var i = tid; i < hd; i += 64u) {
            qkv[src + i] = head[i];
        }
        return;
    }
    let pos = rows_meta[ROW_META_WORDS * r + 1u];
    let page = rows_meta[rows_meta[ROW_META_WORDS * r + 2u] + pos / KV_PAGE];
    let at = ((page * p.n_layer + p.layer) * KV_PAGE + pos % KV_PAGE) * kv_dim;
    if (is_v) {
        let hv = h - p.n_head - p.n_kv_head;
        for (var i = tid; i < hd; i += 64u) {
            v_pool[at + hv * hd + i] = head[i];
        }
    } else {
        let hk = h - p.n_head;
        for (var i = tid; i < hd; i += 64u) {
            k_pool[at + hk * hd + i] = head[i];
        }
    }
}
