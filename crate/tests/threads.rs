//! The CPU threads give the tokens one thread gives, bit for bit, on the real models: every
//! output value is computed by the same kernel on the same inputs whichever thread takes its
//! range (`backend::pool`: products split by weight rows, attention by (row, head), SwiGLU by
//! values). It caught a race in the team of spinning helpers (`pool::on_pool`, fixed since:
//! a helper could claim part 0 of a team's empty first split), which crashed one run in four.

#![cfg(not(target_arch = "wasm32"))]

mod common;

use amulet::align::Method;
use amulet::engine::{Engine, GenerateRequest};
use common::*;

/// Greedy tokens of amulet and base for a long question at `threads` threads of the global
/// pool, from this (non-pool) thread, as the CLI and a browser Worker run them.
fn tokens(bytes: &[u8], threads: usize) -> Vec<Vec<u32>> {
    // A long question, so the prefill runs products of many rows and SwiGLU splits too.
    let mut q = String::from("Summarise, then answer: ");
    for _ in 0..6 {
        q.push_str("the committee reviewed the harbour plans, the ferry budget and the dredging schedule; ");
    }
    q.push_str("what should they do first?");
    let mut req = GenerateRequest::new(&q);
    req.preference = Some("concise".into());
    req.methods = vec![Method::default(), Method::Base];
    req.max_tokens = 16;
    req.ignore_eos = true;
    assert_eq!(amulet::backend::pool::set_threads(threads).unwrap(), threads);
    let mut engine = Engine::load(bytes, |_, _| {}).unwrap();
    let out = engine.generate(&req, &mut |_| true).unwrap();
    out.completions.iter().map(|c| c.tokens.clone()).collect()
}

/// One test for both models: the thread count is the process's, so runs must not overlap.
#[test]
fn two_threads_give_one_threads_tokens() {
    // The global pool is sized by the first call (2 threads at least), whatever
    // RAYON_NUM_THREADS says; the suites set 1 and this test needs 2.
    amulet::backend::pool::set_threads(2).unwrap();
    for file in [SMOLLM2, QWEN05] {
        let bytes = std::fs::read(model_path(file)).unwrap();
        let one = tokens(&bytes, 1);
        let two = tokens(&bytes, 2);
        assert_eq!(one[0].len(), 16);
        assert_eq!(one, two, "{file}: 2 threads chose other tokens than 1");
    }
}
