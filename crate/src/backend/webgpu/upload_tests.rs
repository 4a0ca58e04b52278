//! Matrices streamed to the device in pieces against the whole repacked matrix uploaded at
//! once: the same row-chunks holding the same bits, for every GGUF type the loader meets
//! (kept, repacked without loss, requantized), pieces that straddle the chunks, and the
//! q/k/v stacking rule.

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::test_util::{context, read};
use super::upload::{load_stacked, stream};
use super::weights::{matrix_info, repack_tensor, row_layout, GpuMatrix, Repacked};
use super::GpuContext;
use crate::gguf::Gguf;
use crate::rng::Rng;

const K: usize = 512;

/// A GGUF file holding the named matrices (rows of K) quantized to their types.
fn gguf(tensors: &[(&str, GgmlDType, usize)]) -> Vec<u8> {
    let mut rng = Rng::new(21);
    let q: Vec<(String, QTensor)> = tensors
        .iter()
        .map(|&(name, dtype, rows)| {
            let t = Tensor::from_vec(rng.vec(rows * K, 1.0), (rows, K), &Device::Cpu).unwrap();
            (name.to_string(), QTensor::quantize(&t, dtype).unwrap())
        })
        .collect();
    let refs: Vec<(&str, &QTensor)> = q.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut out = std::io::Cursor::new(Vec::new());
    gguf_file::write(&mut out, &[], &refs).unwrap();
    out.into_inner()
}

/// The device buffers of `got` hold `want` in the row-chunks `upload_limited` makes of it.
fn same_bits(ctx: &GpuContext, got: &GpuMatrix, want: &Repacked, max_binding: u64) {
    let (wpr, spr) = row_layout(want.format, want.k);
    let whole = GpuMatrix::upload_limited(ctx, want, max_binding).unwrap();
    assert_eq!(got.format, want.format);
    let layout = |m: &GpuMatrix| m.chunks.iter().map(|c| (c.row0, c.rows)).collect::<Vec<_>>();
    assert_eq!(layout(got), layout(&whole), "{:?}: row-chunks", want.format);
    for (c, w) in got.chunks.iter().zip(&whole.chunks) {
        let bits = |b: &wgpu::Buffer, n: usize| read(ctx, b, n).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&c.wq, c.rows * wpr), bits(&w.wq, w.rows * wpr), "{:?} words", want.format);
        if spr > 0 {
            assert_eq!(bits(&c.ws, c.rows * spr), bits(&w.ws, w.rows * spr), "{:?} scales", want.format);
        }
    }
}

#[test]
fn a_matrix_streamed_in_pieces_holds_the_bits_of_the_whole_upload() {
    let ctx = context();
    // Q5_1 and Q2_K are requantized to Q8_0; the rest kept or repacked without loss.
    let types = [
        GgmlDType::F32,
        GgmlDType::F16,
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q6K,
        GgmlDType::Q5_1,
        GgmlDType::Q2K,
    ];
    let rows = 37;
    let names: Vec<String> = types.iter().map(|t| format!("{t:?}")).collect();
    let tensors: Vec<(&str, GgmlDType, usize)> = names.iter().zip(types).map(|(n, t)| (n.as_str(), t, rows)).collect();
    let bytes = gguf(&tensors);
    let g = Gguf::parse(&bytes).unwrap();
    for name in &names {
        let want = repack_tensor(&g, &bytes, name, K, rows).unwrap();
        let (wpr, spr) = row_layout(want.format, K);
        let row_bytes = 4 * wpr.max(spr);
        // Chunks of 10 rows, pieces of 3: pieces end inside chunks and at their ends.
        let (max_binding, step) = ((10 * row_bytes) as u64, 3 * 4 * (wpr + spr));
        let info = matrix_info(&g, name, K, rows).unwrap();
        let got = stream(&ctx, &bytes, &[info], K, max_binding, step).unwrap();
        assert_eq!((got.rows, got.k, got.chunks.len()), (rows, K, 4), "{name}");
        same_bits(&ctx, &got, &want, max_binding);
    }
}

#[test]
fn matrices_that_repack_alike_are_stacked_and_others_kept_apart() {
    let mut ctx = context();
    // The 0.5B Qwen's q and k are Q5_0, its v Q8_0: all three run as Q8_0, one matrix.
    let bytes = gguf(&[
        ("q", GgmlDType::Q5_0, 24),
        ("k", GgmlDType::Q5_0, 8),
        ("v", GgmlDType::Q8_0, 8),
        ("gate", GgmlDType::Q4K, 16),
        ("up", GgmlDType::Q6K, 16),
    ]);
    let g = Gguf::parse(&bytes).unwrap();
    ctx.info.max_binding_bytes = 4 * (K / 4) as u64 * 15; // 15 Q8_0 rows a chunk
    let max = ctx.info.max_binding_bytes;
    let parts = |p: &[(&str, usize)]| p.iter().map(|&(n, r)| (n.to_string(), r)).collect::<Vec<_>>();
    let qkv = load_stacked(&ctx, &g, &bytes, &parts(&[("q", 24), ("k", 8), ("v", 8)]), K).unwrap();
    assert_eq!(qkv.len(), 1);
    assert_eq!((qkv[0].0.rows, qkv[0].1), (40, 0));
    let mut all = repack_tensor(&g, &bytes, "q", K, 24).unwrap();
    for (name, rows) in [("k", 8), ("v", 8)] {
        let r = repack_tensor(&g, &bytes, name, K, rows).unwrap();
        all.rows += r.rows;
        all.words.extend(r.words);
        all.scales.extend(r.scales);
    }
    same_bits(&ctx, &qkv[0].0, &all, max);

    let gu = load_stacked(&ctx, &g, &bytes, &parts(&[("gate", 16), ("up", 16)]), K).unwrap();
    assert_eq!(gu.iter().map(|(m, off)| (m.rows, *off)).collect::<Vec<_>>(), vec![(16, 0), (16, 16)]);
    for ((m, _), name) in gu.iter().zip(["gate", "up"]) {
        same_bits(&ctx, m, &repack_tensor(&g, &bytes, name, K, 16).unwrap(), max);
    }
    // A missing tensor or a wrong shape is a typed error, before anything is uploaded.
    let err = load_stacked(&ctx, &g, &bytes, &parts(&[("q", 24), ("nope", 8)]), K).err().unwrap();
    assert_eq!(err.code(), "BAD_MODEL", "{err}");
    assert!(load_stacked(&ctx, &g, &bytes, &parts(&[("q", 25)]), K).is_err());
}
