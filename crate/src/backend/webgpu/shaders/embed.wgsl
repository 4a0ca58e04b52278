// Embedding lookup: x[r, i] = scale · E[token(r), i], dequantized (quant.wgsl formats).
// A large embedding matrix is split into row-chunks (binding-size limits); each chunk's
// dispatch fills the rows whose token falls inside it.
// rows_meta: per pass row r, ROW_META_WORDS (4) u32 from ROW_META_WORDS · r: token, position,
// page-table offset, unused.
// Workgroup: WORKGROUP threads along the hidden dimension; grid (ceil(d / WORKGROUP), rows).

struct Params {
    d: u32,
    row0: u32,
    n: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(3) var<storage, read> rows_meta: array<u32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;
@group(0) @binding(5) var<uniform> pass_info: Pass;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let r = wg.y;
    let i = wg.x * WORKGROUP + tid;
    if (r >= pass_info.n_rows || i >= p.d) {
        return;
    }
    let token = rows_meta[ROW_META_WORDS * r];
    if (token < p.row0 || token >= p.row0 + p.n) {
        return;
    }
    x[r * p.d + i] = dequant(token - p.row0, i, p.d) * p.scale;
}
