// Quantized matrix times many rows (prefill): exactly what matvec.wgsl computes (both are
// built after matvec_io.wgsl: one Params, bindings and INPUT modes, so one bind group
// serves both pipelines), tiled so W is read once per MATMUL_TILE_ROWS input rows.
// W: one row-chunk of a weight matrix, p.n rows of p.k elements (quant.wgsl layout).
// Tiling: a workgroup computes TM = MATMUL_TILE_ROWS (64) input rows × TN = MATMUL_TILE_N
// (64) rows of W (TM covers a whole pass, at most 64 rows, so W is streamed exactly once
// per pass). WORKGROUP (256) threads as 16 × 16, each a 4 × 4 register block, rows
// tm + 16i and columns tn + 16j (i, j < 4): the tile reads below are then consecutive (W)
// or broadcast (x) across a warp. k advances one quant block (TK = 32) at a time: each
// thread dequantizes 8 elements of one W row and loads 8 elements (2 vec4) of one input
// row, both stored k-major ([TK][TN], [TK][TM], 2 × 8 KiB = 16 KiB, WebGPU's default
// workgroup-storage limit), barrier, 32 × 16 FMAs, barrier.
// Elements past p.k (F32/F16 rows need not be whole blocks) load as 0; rows m ≥ n_rows
// and n ≥ p.n load as 0 and are never written. Every barrier is reached by all threads:
// the k loop bound comes from the uniform p only.

// The tile shape: TM and TN are the grid's divisors in kernels.rs; TK is one quant block.
const TM: u32 = MATMUL_TILE_ROWS;
const TN: u32 = MATMUL_TILE_N;
const TK: u32 = 32u;

// W tile: wt[kk * TN + n], dequantized. x tile: xt[kk * TM + m], after the input mode.
var<workgroup> wt: array<f32, TK * TN>;
var<workgroup> xt: array<f32, TK * TM>;

// Part `part` (0-3, 8 elements) of block kb of W row `row` into column nl of the tile.
// Q4: word `part` holds elements 4·part..+3 (low nibbles) and 16 + 4·part..+3 (high);
// the others take elements 8·part..+7.
fn load_w(nl: u32, row: u32, valid: bool, kb: u32, part: u32) {
    if (!valid) {
        for (var j = 0u; j < 8u; j++) {
            wt[(part * 8u + j) * TN + nl] = 0.0;
        }
        return;
    }
    let wpr = words_per_row(p.k);
    let nb = p.k / 32u;
    switch FORMAT {
        case FMT_Q8_0, FMT_Q8_16: {
            // Q8_16: the part's 8 elements share one 16-element group.
            let d = ws[row * (p.k / q8_group()) + (kb * TK + part * 8u) / q8_group()];
            for (var j = 0u; j < 2u; j++) {
                let wi = bitcast<i32>(wq[row * wpr + kb * 8u + part * 2u + j]);
                for (var c = 0u; c < 4u; c++) {
                    wt[(part * 8u + j * 4u + c) * TN + nl] = d * f32(extractBits(wi, c * 8u, 8u));
                }
            }
        }
        case FMT_Q4_0, FMT_Q4_1: {
            let b = row * nb + kb;
            let word = wq[b * 4u + part];
            for (var c = 0u; c < 4u; c++) {
                let lo = f32(extractBits(word, c * 8u, 4u));
                let hi = f32(extractBits(word, c * 8u + 4u, 4u));
                if (FORMAT == FMT_Q4_1) {
                    wt[(part * 4u + c) * TN + nl] = ws[2u * b] * lo + ws[2u * b + 1u];
                    wt[(16u + part * 4u + c) * TN + nl] = ws[2u * b] * hi + ws[2u * b + 1u];
                } else {
                    wt[(part * 4u + c) * TN + nl] = ws[b] * (lo - 8.0);
                    wt[(16u + part * 4u + c) * TN + nl] = ws[b] * (hi - 8.0);
                }
            }
        }
        case FMT_F16: {
            // k is even: a pair starting below p.k lies wholly inside the row.
            for (var j = 0u; j < 4u; j++) {
                let kk = part * 8u + 2u * j;
                var pair = vec2<f32>(0.0);
                if (kb * TK + kk < p.k) {
                    pair = unpack2x16float(wq[row * wpr + (kb * TK + kk) / 2u]);
                }
                wt[kk * TN + nl] = pair.x;
                wt[(kk + 1u) * TN + nl] = pair.y;
            }
        }
        default: {
            for (var j = 0u; j < 8u; j++) {
                let kk = part * 8u + j;
                var f = 0.0;
                if (kb * TK + kk < p.k) {
                    f = bitcast<f32>(wq[row * wpr + kb * TK + kk]);
                }
                wt[kk * TN + nl] = f;
            }
        }
    }
}

// Elements q·4..+3 and 16 + q·4..+3 of block kb of input row m into row ml of the tile.
fn load_x(ml: u32, m: u32, valid: bool, kb: u32, q: u32) {
    for (var j = 0u; j < 2u; j++) {
        let kk = j * 16u + q * 4u;
        let gk = kb * TK + kk;
        var v = vec4<f32>(0.0);
        if (valid && gk < p.k) {
            v = in4(m, gk);
            v = select(vec4<f32>(0.0), v, vec4<u32>(gk) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.k));
        }
        for (var c = 0u; c < 4u; c++) {
            xt[(kk + c) * TM + ml] = v[c];
        }
    }
}

@compute @workgroup_size(WORKGROUP)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let n0 = wg.x * TN;
    let m0 = wg.z * TM;
    let n_rows = pass_info.n_rows;
    // Loading: thread tid owns tile row/column tid % 64 and part tid / 64 of the block.
    let ll = tid % 64u;
    let part = tid / 64u;
    let w_row = n0 + ll;
    let x_row = m0 + ll;
    // Computing: a 4 × 4 block, rows tm + 16i, columns tn + 16j.
    let tm = tid / 16u;
    let tn = tid % 16u;
    var acc: array<vec4<f32>, 4>;
    for (var i = 0u; i < 4u; i++) {
        acc[i] = vec4<f32>(0.0);
    }
    let nkb = (p.k + TK - 1u) / TK;
    for (var kb = 0u; kb < nkb; kb++) {
        load_w(ll, w_row, w_row < p.n, kb, part);
        load_x(ll, x_row, x_row < n_rows, kb, part);
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let wb = kk * TN + tn;
            let b = vec4<f32>(wt[wb], wt[wb + 16u], wt[wb + 32u], wt[wb + 48u]);
            let xb = kk * TM + tm;
            for (var i = 0u; i < 4u; i++) {
                acc[i] += xt[xb + 16u * i] * b;
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let m = m0 + tm + 16u * i;
        if (m < n_rows) {
            for (var j = 0u; j < 4u; j++) {
                let n = n0 + tn + 16u * j;
                if (n < p.n) {
                    var v = acc[i][j];
                    if (p.has_bias == 1u) {
                        v += bias[p.n_off + n];
                    }
                    let idx = m * p.y_stride + p.n_off + n;
                    if (p.accumulate == 1u) {
                        v += y[idx];
                    }
                    y[idx] = v;
                }
            }
        }
    }
}
