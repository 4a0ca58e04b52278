// Quantized matrix times a few rows (what matvec_io.wgsl describes, its Params and
// bindings). Decode runs 1-8 rows (the Amulet contexts) through one pass over W; prefill
// dispatches one z-slice per MATVEC_ROWS rows, so W is read once per 8 prompt tokens.
// W: one row-chunk of a weight matrix, p.n rows of p.k elements (quant.wgsl layout).
// Workgroup: WORKGROUP (256) threads = 8 rows of W × 32 lanes; lanes stride over a row's
// u32 words (coalesced), keep MATVEC_ROWS per-input sums, then reduce across the 32 lanes
// in shared memory. All loops over input rows have the constant bound MATVEC_ROWS and a
// guard (m < mc), so they unroll and the sums stay in registers.

// Lanes per row of W: 32 on GPUs; 1 on software adapters (lavapipe), where every
// barrier costs a context switch and one invocation per row runs fastest.
override LANES: u32 = 32u;
override WG_ROWS: u32 = WORKGROUP / LANES;

var<workgroup> red: array<f32, WORKGROUP * MATVEC_ROWS>;

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let m0 = wg.z * MATVEC_ROWS;
    let mc = min(MATVEC_ROWS, pass_info.n_rows - min(m0, pass_info.n_rows));
    let row_l = tid / LANES;
    let lane = tid % LANES;
    let n = wg.x * WG_ROWS + row_l;
    var acc: array<f32, MATVEC_ROWS>;
    for (var m = 0u; m < MATVEC_ROWS; m++) {
        acc[m] = 0.0;
    }
    if (n < p.n) {
        let wpr = words_per_row(p.k);
        let nb = p.k / 32u;
        for (var w = lane; w < wpr; w += LANES) {
            let word = wq[n * wpr + w];
            switch FORMAT {
                case FMT_Q8_0, FMT_Q8_16: {
                    // 8 words a scale (Q8_0) or 4 (Q8_16).
                    let d = ws[n * (p.k / q8_group()) + w / (q8_group() / 4u)];
                    let wi = bitcast<i32>(word);
                    let q = vec4<f32>(f32(extractBits(wi, 0u, 8u)), f32(extractBits(wi, 8u, 8u)),
                                      f32(extractBits(wi, 16u, 8u)), f32(extractBits(wi, 24u, 8u)));
                    for (var m = 0u; m < MATVEC_ROWS; m++) {
                        if (m < mc) {
                            acc[m] += d * dot(q, in4(m0 + m, w * 4u));
                        }
                    }
                }
                case FMT_Q4_0, FMT_Q4_1: {
                    let b = n * nb + w / 4u;
                    let klo = (w / 4u) * 32u + (w % 4u) * 4u;
                    let lo = vec4<f32>(f32(extractBits(word, 0u, 4u)), f32(extractBits(word, 8u, 4u)),
                                       f32(extractBits(word, 16u, 4u)), f32(extractBits(word, 24u, 4u)));
                    let hi = vec4<f32>(f32(extractBits(word, 4u, 4u)), f32(extractBits(word, 12u, 4u)),
                                       f32(extractBits(word, 20u, 4u)), f32(extractBits(word, 28u, 4u)));
                    for (var m = 0u; m < MATVEC_ROWS; m++) {
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
                case FMT_F16: {
                    let pair = unpack2x16float(word);
                    for (var m = 0u; m < MATVEC_ROWS; m++) {
                        if (m < mc) {
                            let v = in4(m0 + m, (2u * w) & ~3u);
                            acc[m] += dot(pair, select(v.xy, v.zw, (w & 1u) == 1u));
                        }
                    }
                }
                default: {
                    let f = bitcast<f32>(word);
                    for (var m = 0u; m < MATVEC_ROWS; m++) {
                        if (m < mc) {
                            acc[m] += f * in4(m0 + m, w & ~3u)[w & 3u];
                        }
                    }
                }
            }
        }
    }
    for (var m = 0u; m < MATVEC_ROWS; m++) {
        if (m < mc) {
            red[tid * MATVEC_ROWS + m] = acc[m];
        }
    }
    workgroupBarrier();
    for (var off = LANES / 2u; off > 0u; off >>= 1u) {
        if (lane < off) {
            for (var m = 0u; m < MATVEC_ROWS; m++) {
                if (m < mc) {
                    red[tid * MATVEC_ROWS + m] += red[(tid + off) * MATVEC_ROWS + m];
                }
            }
        }
        workgroupBarrier();
    }
    if (n < p.n) {
        for (var m = lane; m < mc; m += LANES) {
            var v = red[row_l * LANES * MATVEC_ROWS + m];
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
