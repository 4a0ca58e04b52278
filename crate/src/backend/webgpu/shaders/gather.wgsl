// Row gather: dst[j, :] = src[index[j], :] for j < count (each sequence's last row of a
// pass, the only rows that go through the vocabulary-sized output projection).
// Workgroup: WORKGROUP threads along the row; grid (ceil(d / WORKGROUP), count).

struct Params {
    d: u32,
    count: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> index: array<u32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let j = wg.y;
    let i = wg.x * WORKGROUP + tid;
    if (j >= p.count || i >= p.d) {
        return;
    }
    dst[j * p.d + i] = src[index[j] * p.d + i];
}
