//! The choose kernel against the CPU path it replaces: `Aligner::combine`,
//! `Sampler::sample_with` with the same uniform, `sample::top_candidates`. Random rows of
//! awkward vocabulary sizes, many requests (base-only, pref-only, extrapolated) per
//! dispatch. They need an adapter: lavapipe in CI.

use super::abi::{CHOOSE_WORDS, MAX_SORTED, MAX_TOP_N, NO_ROW};
use super::choose::{Choice, ChooseParams, Chooser};
use super::test_util::{buffer, context};
use super::GpuContext;
use crate::align::{Aligner, Method};
use crate::rng::Rng;
use crate::sample::{top_candidates, Sampler, SamplingParams};

/// f32 on the GPU may pick the neighbour when u·total lies within this fraction of the
/// total weight of a CDF (or nucleus) boundary of the CPU's f64 computation.
const BOUNDARY: f64 = 1e-5;
const K: f32 = 4.0 / 3.0;

fn range(rng: &mut Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.next_f64() as f32
}

/// Logit-like: a flat cold mass in [-10, 0] and `hot` ids in [4, 12]; hot = 0: a
/// flatter row in [-4, 4].
fn row(rng: &mut Rng, n: usize, hot: usize) -> Vec<f32> {
    if hot == 0 {
        return (0..n).map(|_| range(rng, -4.0, 4.0)).collect();
    }
    let mut row: Vec<f32> = (0..n).map(|_| range(rng, -10.0, 0.0)).collect();
    for _ in 0..hot {
        let i = (rng.next_f64() * n as f64) as usize;
        row[i] = range(rng, 4.0, 12.0);
    }
    row
}

/// `rows` rows of `vocab` logits, row r at r·vocab.
struct Logits {
    vocab: usize,
    data: Vec<f32>,
}

impl Logits {
    fn row(&self, r: u32) -> &[f32] {
        &self.data[r as usize * self.vocab..(r as usize + 1) * self.vocab]
    }
}

fn run(ctx: &GpuContext, chooser: &mut Chooser, logits: &Logits, requests: &[ChooseParams]) -> Vec<Choice> {
    let rows = buffer(ctx, &logits.data);
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    chooser.encode(&ctx.device, &ctx.queue, &mut enc, &rows, logits.vocab as u32, requests);
    ctx.queue.submit([enc.finish()]);
    let words = ctx.read_f32(chooser.readback(), Chooser::result_words(requests.len())).unwrap();
    Chooser::parse(&words, requests.len())
}

/// The combined row the CPU would sample from.
fn combine(logits: &Logits, p: &ChooseParams) -> Vec<f32> {
    let method = match (p.base_row, p.pref_row) {
        (_, NO_ROW) => Method::Base,
        (NO_ROW, _) => Method::Pref,
        _ => Method::LinearAlignment { ratio: p.k as f64 },
    };
    let row = |r: u32| (r != NO_ROW).then(|| logits.row(r));
    let mut out = vec![0.0; logits.vocab];
    Aligner::new(method).unwrap().combine(row(p.base_row), row(p.pref_row), &mut out).unwrap();
    out
}

fn cpu_choice(row: &[f32], p: &ChooseParams) -> u32 {
    let params = SamplingParams {
        temperature: p.temperature as f64,
        top_k: (p.top_k > 0).then_some(p.top_k as usize),
        top_p: (p.top_p < 1.0).then_some(p.top_p as f64),
        seed: 0,
    };
    let uniform = (p.temperature > 0.0).then_some(p.u as f64);
    Sampler::new(params).unwrap().sample_with(row, uniform).unwrap()
}

#[derive(Debug, PartialEq)]
enum Expect {
    Id(u32),
    TooMany,
    /// Within float noise of a boundary: either neighbour is right.
    Unsure,
}

/// Whether `target` lies within BOUNDARY·total of a partial sum of `weights`.
fn near_boundary(weights: &[f64], target: f64, total: f64) -> bool {
    let mut cum = 0.0;
    for &w in weights {
        let next = cum + w;
        if (next - target).abs() < BOUNDARY * total || (cum - target).abs() < BOUNDARY * total {
            return true;
        }
        if next > target + BOUNDARY * total {
            return false;
        }
        cum = next;
    }
    false
}

/// What the kernel must answer, from an f64 replay of sample.rs that also measures how
/// close the draw (and the nucleus cut) is to a boundary.
fn expect(row: &[f32], p: &ChooseParams) -> Expect {
    if p.temperature == 0.0 {
        return Expect::Id(cpu_choice(row, p));
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let weight = |i: u32| ((row[i as usize] - max) as f64 / p.temperature as f64).exp();
    let n = row.len();
    let top_k = (p.top_k > 0 && (p.top_k as usize) < n).then_some(p.top_k as usize);
    let mut ids: Vec<u32> = (0..n as u32).collect();
    if top_k.is_some() || p.top_p < 1.0 {
        ids.sort_by(|&a, &b| row[b as usize].partial_cmp(&row[a as usize]).unwrap().then(a.cmp(&b)));
        ids.truncate(top_k.unwrap_or(n));
        if p.top_p < 1.0 {
            let w: Vec<f64> = ids.iter().map(|&i| weight(i)).collect();
            let total: f64 = w.iter().sum();
            let target = p.top_p as f64 * total;
            if near_boundary(&w, target, total) {
                return Expect::Unsure;
            }
            let mut cum = 0.0;
            let keep = w.iter().position(|x| {
                cum += x;
                cum >= target
            });
            ids.truncate(keep.map_or(ids.len(), |j| j + 1));
        }
        if ids.len() > MAX_SORTED {
            return Expect::TooMany;
        }
    }
    let w: Vec<f64> = ids.iter().map(|&i| weight(i)).collect();
    let total: f64 = w.iter().sum();
    if near_boundary(&w, p.u as f64 * total, total) {
        return Expect::Unsure;
    }
    Expect::Id(cpu_choice(row, p))
}

/// Checks every answer; returns how many were Unsure (not checked).
fn check(logits: &Logits, requests: &[ChooseParams], got: &[Choice]) -> usize {
    let mut unsure = 0;
    for (p, choice) in requests.iter().zip(got) {
        let row = combine(logits, p);
        match (expect(&row, p), choice) {
            (Expect::Unsure, _) => unsure += 1,
            (Expect::TooMany, Choice::TooManyCandidates) => {}
            (Expect::Id(want), Choice::Token { id, top }) => {
                assert_eq!(*id, want, "vocab {}: {p:?}", logits.vocab);
                let want_top = top_candidates(&row, p.top_n as usize);
                let ids = |t: &[(u32, f32)]| t.iter().map(|c| c.0).collect::<Vec<_>>();
                assert_eq!(ids(top), ids(&want_top), "vocab {}: top {} of {p:?}", logits.vocab, p.top_n);
                for (g, w) in top.iter().zip(&want_top) {
                    assert!((g.1 - w.1).abs() < 1e-4, "vocab {}: p({}) {} vs {}", logits.vocab, g.0, g.1, w.1);
                }
            }
            (want, got) => panic!("vocab {}: {p:?}: expected {want:?}, got {got:?}", logits.vocab),
        }
    }
    unsure
}

/// Base-only, pref-only and extrapolated requests over rows 0 (base) and 1 (pref).
fn methods(p: ChooseParams) -> [ChooseParams; 3] {
    [
        ChooseParams { base_row: 0, pref_row: NO_ROW, ..p },
        ChooseParams { base_row: NO_ROW, pref_row: 1, ..p },
        ChooseParams { base_row: 0, pref_row: 1, k: K, ..p },
    ]
}

fn params(temperature: f32, top_k: u32, top_p: f32, top_n: u32) -> ChooseParams {
    ChooseParams { temperature, top_k, top_p, top_n, ..Default::default() }
}

#[test]
fn greedy_and_top_n_match_the_cpu_including_ties() {
    let ctx = context();
    let mut chooser = Chooser::new(&ctx.device);
    let mut rng = Rng::new(1);
    for (vocab, hot) in [(1000, 0), (49_152, 40), (151_936, 50), (262_144, 60)] {
        let (base, pref) = (row(&mut rng, vocab, hot), row(&mut rng, vocab, hot));
        // Rows 2 (base) and 3 (pref): the best combined score shared by four ids, given
        // highest id first, and a tie further down that top_n must order by id too.
        let (mut tied_base, mut tied_pref) = (base.clone(), pref.clone());
        // 7, 263 and 519 are read by the same thread, 7 and vocab - 2 by different ones.
        for (ids, b, p) in [([vocab - 2, 519, 263, 7], 10.0, 30.0), ([vocab - 1, 3, vocab / 3, vocab / 2], 9.0, 28.5)] {
            for i in ids {
                (tied_base[i], tied_pref[i]) = (b, p);
            }
        }
        let data = [base, pref, tied_base, tied_pref].concat();
        let logits = Logits { vocab, data };
        let mut requests = Vec::new();
        for top_n in [0, 1, 7, MAX_TOP_N as u32] {
            requests.extend(methods(params(0.0, 0, 1.0, top_n)));
            let tied = methods(params(0.0, 0, 1.0, top_n)).map(|p| ChooseParams {
                base_row: p.base_row.saturating_add(2),
                pref_row: p.pref_row.saturating_add(2),
                ..p
            });
            requests.extend(tied);
        }
        let got = run(&ctx, &mut chooser, &logits, &requests);
        assert_eq!(check(&logits, &requests, &got), 0, "greedy is never unsure");
        let tied_winner = |c: &Choice| match c {
            Choice::Token { id, .. } => *id,
            other => panic!("{other:?}"),
        };
        assert_eq!(tied_winner(&got[5]), 7, "vocab {vocab}: lowest id among tied maxima");
    }
}

#[test]
fn sampling_matches_the_cpu_draw_for_draw() {
    let ctx = context();
    let mut chooser = Chooser::new(&ctx.device);
    let mut rng = Rng::new(2);
    let settings = [
        params(1.0, 0, 1.0, 0),
        params(0.5, 0, 1.0, 3),
        params(1.0, 40, 1.0, 0),
        params(2.0, 1000, 1.0, 5),
        params(1.0, 0, 0.875, 0),
        params(0.75, 200, 0.75, 2),
        params(1.0, 5000, 0.5, 0), // a top-k universe larger than MAX_SORTED
        params(1.0, 1, 1.0, 0),
        params(1.0, 2000, 1.0, 0), // top-k alone beyond MAX_SORTED: the CPU's job
    ];
    let (mut total, mut unsure) = (0, 0);
    for (vocab, hot, draws, quantized) in [
        (1000, 0, 24, false),
        (1000, 0, 24, true),
        (49_152, 40, 8, false),
        (151_936, 50, 4, false),
        (262_144, 60, 4, false),
    ] {
        let mut data = [row(&mut rng, vocab, hot), row(&mut rng, vocab, hot)].concat();
        if quantized {
            // Coarse scores: top-k cuts and sorted order both go through ties.
            data.iter_mut().for_each(|x| *x = (*x * 2.0).round() / 2.0);
        }
        let logits = Logits { vocab, data };
        let mut requests = Vec::new();
        for s in settings {
            for p in methods(s) {
                for _ in 0..draws {
                    requests.push(ChooseParams { u: rng.next_f64() as f32, ..p });
                }
            }
        }
        let got = run(&ctx, &mut chooser, &logits, &requests);
        unsure += check(&logits, &requests, &got);
        total += requests.len();
    }
    assert!(unsure * 20 < total, "{unsure} of {total} draws too close to a boundary to check");
}

#[test]
fn bad_rows_and_oversized_nuclei_are_reported() {
    let ctx = context();
    let mut chooser = Chooser::new(&ctx.device);
    let mut rng = Rng::new(3);
    for vocab in [49_152, 151_936] {
        bad_rows_at(&ctx, &mut chooser, &mut rng, vocab);
    }
}

fn bad_rows_at(ctx: &GpuContext, chooser: &mut Chooser, rng: &mut Rng, vocab: usize) {
    let (mut base, mut pref) = (row(rng, vocab, 40), row(rng, vocab, 40));
    pref[12_345] = f32::NAN;
    base[777] = f32::INFINITY;
    let mut flat = vec![0.0f32; vocab];
    flat[0] = -0.0; // the same score as +0: still first among the ties
    let logits = Logits { vocab, data: [base, pref, flat].concat() };
    let greedy = params(0.0, 0, 1.0, 3);
    let sampled = params(1.0, 0, 0.9, 0);
    let flat_row = |p: ChooseParams| ChooseParams { base_row: 2, pref_row: NO_ROW, ..p };
    let requests = [
        methods(greedy).to_vec(),
        methods(sampled).to_vec(),
        vec![
            flat_row(params(1.0, 0, 0.999, 0)),
            flat_row(params(1.0, 2000, 1.0, 0)),
            flat_row(params(1.0, 3, 1.0, 4)),
            ChooseParams { base_row: NO_ROW, pref_row: NO_ROW, ..params(0.0, 0, 1.0, 0) },
        ],
    ]
    .concat();
    let got = run(ctx, chooser, &logits, &requests);
    use Choice::*;
    // Row 0 holds +inf, row 1 NaN: only the flat row is usable.
    assert_eq!(&got[..6], &[NonFinite, NonFinite, NonFinite, NonFinite, NonFinite, NonFinite], "vocab {vocab}");
    assert_eq!(&got[6..8], &[TooManyCandidates, TooManyCandidates], "vocab {vocab}");
    // A flat row: top-3 is ids 0..3 (lower ids win ties), drawn with u = 0 -> id 0; the
    // alternatives are 1/vocab each.
    match &got[8] {
        Token { id: 0, top } => {
            assert_eq!(top.iter().map(|c| c.0).collect::<Vec<_>>(), vec![0, 1, 2, 3]);
            assert!(top.iter().all(|c| (c.1 - 1.0 / vocab as f32).abs() < 1e-9));
        }
        other => panic!("vocab {vocab}: {other:?}"),
    }
    assert_eq!(got[9], NonFinite, "vocab {vocab}: no row at all");
}

#[test]
fn results_parse_from_their_words() {
    let mut words = vec![0.0f32; Chooser::result_words(3)];
    let w = |x: u32| f32::from_bits(x);
    words[..6].copy_from_slice(&[w(0), w(42), w(1), w(0), w(42), 0.75]);
    words[CHOOSE_WORDS] = w(1);
    words[2 * CHOOSE_WORDS] = w(2);
    let want = vec![Choice::Token { id: 42, top: vec![(42, 0.75)] }, Choice::NonFinite, Choice::TooManyCandidates];
    assert_eq!(Chooser::parse(&words, 3), want);
}
