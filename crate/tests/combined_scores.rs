//! The CPU backend's combined decode step (`forward_choose`): each method's combine taken on
//! the normalized hidden rows before the output projection, against the same combine taken
//! on the projected logit rows and against an exact (f64, dequantized weights) projection of
//! the same hidden rows, on the real SmolLM2 and Qwen2.5-Coder 0.5B files.

mod common;

use amulet::gguf::Gguf;
use amulet::model::{CpuModel, LanguageModel, SeqId, StepOutput, TokenRequest};
use amulet::tokenizer::TextTokenizer;
use common::*;
use std::future::Future;

const BASE: &str = "<|im_start|>user\nHow can I improve my eating habits without compromising on taste?<|im_end|>\n<|im_start|>assistant\n";
const PREF: &str = "<|im_start|>system\nAnswer concisely.<|im_end|>\n<|im_start|>user\nHow can I improve my eating habits without compromising on taste?<|im_end|>\n<|im_start|>assistant\n";
/// The default parameters' closed-form strength (α = λ = 2, η = 10, T = 60).
const K: f32 = 4.65;

fn request(top_n: usize) -> TokenRequest {
    TokenRequest {
        base: Some(0),
        pref: Some(1),
        strength: K,
        temperature: 0.0,
        top_k: None,
        top_p: None,
        uniform: None,
        top_n,
    }
}

/// The CPU backend's step completes at once.
fn ready<T>(f: impl Future<Output = amulet::Result<T>>) -> T {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(r) => r.unwrap(),
        std::task::Poll::Pending => panic!("the CPU backend's step is pending"),
    }
}

fn back_one(m: &mut CpuModel, seqs: [SeqId; 2]) {
    for s in seqs {
        assert!(m.truncate_sequence(s, m.sequence_len(s).unwrap() - 1));
    }
}

fn argmax64(v: &[f64]) -> usize {
    v.iter().enumerate().fold((0, f64::NEG_INFINITY), |m, (i, &x)| if x > m.1 { (i, x) } else { m }).0
}

/// Greedy steps of amulet's closed form. Each step runs three times from the same caches:
/// for the hidden rows, for the combined step, for the plain rows. The combined step's scores
/// must stay within `tol` logits of the exact projection's, pick its token or one that nearly
/// ties with it, and be nearer to it than the combine of the rows (whose two quantized
/// activations' errors the extrapolation multiplies by 1 + k and k), in rms and in how often
/// the token is the exact one; the rows it returns beside them, when asked, are `forward`'s
/// bit for bit.
fn agrees(file: &str, steps: usize, tol: f64) {
    let bytes = std::fs::read(model_path(file)).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    let tokenizer = TextTokenizer::from_gguf(&g).unwrap();
    let mut m = CpuModel::load(&g, &bytes, |_, _| {}).unwrap();
    let (d, vocab) = (m.config().d_model, m.config().vocab_size);
    let name = if g.tensor_info("output.weight").is_some() { "output.weight" } else { "token_embd.weight" };
    let w = g.qtensor(&bytes[..], name, &[d, vocab]).unwrap();
    let w = w.dequantize(&candle_core::Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let seqs = [m.new_sequence(), m.new_sequence()];
    let (bt, pt) = (tokenizer.encode(BASE, false).unwrap(), tokenizer.encode(PREF, false).unwrap());
    let rows = m.forward(&[(seqs[0], &bt), (seqs[1], &pt)]).unwrap();
    let mut token = argmax(&rows[0].iter().zip(&rows[1]).map(|(&b, &p)| p + K * (p - b)).collect::<Vec<_>>()) as u32;
    let (mut worst, mut rms, mut same) = (0f64, [0f64; 2], [0usize; 2]);
    for step in 0..steps {
        let t = [token];
        let batch = [(seqs[0], &t[..]), (seqs[1], &t[..])];
        let hidden = m.forward_hidden(&batch).unwrap();
        back_one(&mut m, seqs);
        let top_n = step % 2;
        let StepOutput::Combined { scores, rows: beside } = ready(m.forward_choose(&batch, &[request(top_n)])) else {
            panic!("the CPU backend combines the rows itself")
        };
        back_one(&mut m, seqs);
        let rows = m.forward(&batch).unwrap();
        assert_eq!(beside, if top_n > 0 { rows.clone() } else { Vec::new() }, "{file} step {step}: the rows beside");
        let exact: Vec<f64> = w
            .chunks_exact(d)
            .map(|wr| {
                let dot = |h: &[f32]| wr.iter().zip(h).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>();
                let (b, p) = (dot(&hidden[0]), dot(&hidden[1]));
                p + K as f64 * (p - b)
            })
            .collect();
        let of_rows: Vec<f32> = rows[0].iter().zip(&rows[1]).map(|(&b, &p)| p + K * (p - b)).collect();
        for (i, got) in [&scores[0], &of_rows].into_iter().enumerate() {
            rms[i] += got.iter().zip(&exact).map(|(&a, &e)| (a as f64 - e).powi(2)).sum::<f64>() / vocab as f64;
        }
        let diff = scores[0].iter().zip(&exact).map(|(&a, &e)| (a as f64 - e).abs()).fold(0.0, f64::max);
        worst = worst.max(diff);
        let best = argmax64(&exact);
        token = argmax(&scores[0]) as u32;
        // Another token only where the exact scores nearly tie.
        let short = exact[best] - exact[token as usize];
        assert!(short < 2.0 * tol, "{file} step {step}: token {token}, {short} under the exact best {best}");
        same[0] += (token as usize == best) as usize;
        same[1] += (argmax(&of_rows) == best) as usize;
    }
    let rms = rms.map(|r| (r / steps as f64).sqrt());
    eprintln!(
        "{file}: {steps} steps; against the exact projection, the combined step's scores: max |Δ| {worst:.3}, \
         rms {:.4}, its token {}/{steps}; the combine of the rows: rms {:.4}, its token {}/{steps}",
        rms[0], same[0], rms[1], same[1]
    );
    assert!(worst < tol, "{file}: max |Δ| {worst}");
    assert!(rms[0] < rms[1] && same[0] >= same[1], "{file}: rms {rms:?}, the exact token {same:?}");
}

#[test]
fn smollm2_combined_scores_follow_the_exact_projection() {
    // Measured: max |Δ| 0.46, rms 0.07, the exact token at 10 of 12 steps (the rows' combine:
    // rms 0.50, 10 of 12).
    agrees(SMOLLM2, 12, 1.0);
}

#[test]
fn qwen05_combined_scores_follow_the_exact_projection() {
    // Measured: max |Δ| 0.27, rms 0.04, 6 of 6 (the rows' combine: rms 0.23, 6 of 6).
    agrees(QWEN05, 6, 1.0);
}
