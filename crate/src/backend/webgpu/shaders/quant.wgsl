// Weight formats as the WebGPU backend stores them (repacked at load by weights.rs).
// `wq`: each row's quants as little-endian u32 words, in GGUF order (so a Q8_0 block is 8
// words, a Q4_0/Q4_1 block 4 words: byte i holds element i in its low nibble and element
// i + 16 in its high one). F16 rows are packed in pairs, F32 rows are the float bits.
// `ws`: f32 block scales, one per 32 elements (Q4_1: d then m; Q8_16, Q6_K's int8 values
// in Q8_0's words: one per 16 elements). Q5_0 arrives as Q8_0 and Q4_K as Q4_1. FORMAT is fixed per
// pipeline (an override constant), so every switch below folds away.
// The FMT_* values come from the prelude (abi.rs).
// Prepended to matvec.wgsl, matmul.wgsl and embed.wgsl, which bind wq at 1 and ws at 2.

override FORMAT: u32 = FMT_Q8_0;

// Elements per f32 scale of the int8 formats.
fn q8_group() -> u32 {
    return select(32u, 16u, FORMAT == FMT_Q8_16);
}

@group(0) @binding(1) var<storage, read> wq: array<u32>;
@group(0) @binding(2) var<storage, read> ws: array<f32>;

fn words_per_row(k: u32) -> u32 {
    switch FORMAT {
        case FMT_F32: { return k; }
        case FMT_F16: { return k / 2u; }
        case FMT_Q8_0, FMT_Q8_16: { return k / 4u; }
        default: { return k / 8u; }
    }
}

// Element i of row `row` (k elements a row), dequantized.
fn dequant(row: u32, i: u32, k: u32) -> f32 {
    let wpr = words_per_row(k);
    switch FORMAT {
        case FMT_F32: { return bitcast<f32>(wq[row * wpr + i]); }
        case FMT_F16: {
            let pair = unpack2x16float(wq[row * wpr + i / 2u]);
            return select(pair.x, pair.y, (i & 1u) == 1u);
        }
        case FMT_Q8_0, FMT_Q8_16: {
            let word = wq[row * wpr + i / 4u];
            let q = extractBits(bitcast<i32>(word), (i % 4u) * 8u, 8u);
            return f32(q) * ws[row * (k / q8_group()) + i / q8_group()];
        }
        default: {
            let block = row * (k / 32u) + i / 32u;
            let j = i % 32u;
            let byte = j % 16u;
            let word = wq[block * 4u + byte / 4u];
            let q = f32(extractBits(word, (byte % 4u) * 8u + (j / 16u) * 4u, 4u));
            if (FORMAT == FMT_Q4_1) {
                return q * ws[2u * block] + ws[2u * block + 1u];
            }
            return (q - 8.0) * ws[block];
        }
    }
}
