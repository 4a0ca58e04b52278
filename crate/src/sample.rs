//! Choosing the next token from a combined score row: greedy (the paper's setting) or
//! temperature / top-k / top-p sampling with a seeded generator.
//!
//! The generator is written here rather than taken from `rand` so a seed gives the same
//! token sequence natively and in wasm32, and across dependency upgrades.

use std::cmp::Ordering;

use crate::error::{AmuletError, Result};
use crate::rng::Rng;

/// Temperatures above this make every token equally likely to within float noise; a larger
/// value is almost certainly a unit mistake.
const MAX_TEMPERATURE: f64 = 100.0;
/// First guess at how many sorted candidates hold the top-p mass; grows x4 when short, so
/// a peaked distribution never pays for sorting the whole vocabulary.
const NUCLEUS_FIRST_GUESS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax); otherwise scores are divided by it before softmax.
    pub temperature: f64,
    /// Keep only the k highest-scoring tokens.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches p.
    pub top_p: Option<f64>,
    pub seed: u64,
}

impl Default for SamplingParams {
    /// Greedy, as in the paper's evaluation.
    fn default() -> Self {
        SamplingParams { temperature: 0.0, top_k: None, top_p: None, seed: 0 }
    }
}

impl SamplingParams {
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    pub fn validate(&self) -> Result<()> {
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 {
            return Err(AmuletError::bad_option(
                "temperature",
                format!("must be a finite number >= 0 (0 = greedy), got {t}"),
            ));
        }
        if t > MAX_TEMPERATURE {
            return Err(AmuletError::bad_option("temperature", format!("must be at most {MAX_TEMPERATURE}, got {t}")));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(AmuletError::bad_option("top_p", format!("must be in (0, 1], got {p}")));
            }
        }
        if self.top_k == Some(0) {
            return Err(AmuletError::bad_option("top_k", "must be at least 1, got 0"));
        }
        Ok(())
    }
}

/// Higher score first, lower id on ties, so candidate order (and hence each draw) is a
/// function of the scores alone, not of the selection algorithm.
#[inline]
fn by_score_desc(scores: &[f32], a: u32, b: u32) -> Ordering {
    scores[b as usize].partial_cmp(&scores[a as usize]).unwrap_or(Ordering::Equal).then(a.cmp(&b))
}

/// Draws tokens for one request. Scratch buffers are kept between calls so the per-token
/// path does not allocate after the first token.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    /// Candidate ids (empty: every id, in id order).
    idx: Vec<u32>,
    /// Unnormalised probabilities, aligned with `idx` (or with the ids when `idx` is empty).
    weights: Vec<f64>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        Ok(Sampler { params, rng: Rng::new(params.seed), idx: Vec::new(), weights: Vec::new() })
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token id. Scores of -inf mark impossible tokens; NaN, +inf, an empty
    /// row or a row with no possible token are compute failures upstream and are reported,
    /// never sampled from.
    pub fn sample(&mut self, scores: &[f32]) -> Result<u32> {
        self.sample_from(scores, None)
    }

    /// The uniform in [0, 1) that the next `sample` call would draw, taken from the
    /// generator now (None for greedy, which draws nothing). For choosing on the GPU:
    /// the draw goes with the request, and `sample_with` replays it on the CPU if needed.
    pub fn next_uniform(&mut self) -> Option<f64> {
        if self.params.is_greedy() {
            None
        } else {
            Some(self.rng.next_f64())
        }
    }

    /// `sample` with the uniform given instead of drawn (from `next_uniform`); greedy
    /// ignores it, a sampling sampler without one is a compute error.
    pub fn sample_with(&mut self, scores: &[f32], uniform: Option<f64>) -> Result<u32> {
        if uniform.is_none() && !self.params.is_greedy() {
            return Err(AmuletError::Compute("a sampling (temperature > 0) draw needs its uniform".into()));
        }
        self.sample_from(scores, uniform)
    }

    /// `uniform` None draws from the generator, after the row passed its checks, so a
    /// rejected row consumes no draw (as before `next_uniform` existed).
    fn sample_from(&mut self, scores: &[f32], uniform: Option<f64>) -> Result<u32> {
        let (argmax, max) = scan(scores)?;
        if self.params.is_greedy() {
            return Ok(argmax);
        }
        let u = uniform.unwrap_or_else(|| self.rng.next_f64());
        self.prepare(scores, max);
        Ok(self.draw(u))
    }

    /// Fills `idx` / `weights` with the tokens that survive top-k and top-p, weighted by
    /// exp((score − max) / T).
    fn prepare(&mut self, scores: &[f32], max: f32) {
        let n = scores.len();
        let t = self.params.temperature;
        let weight = |x: f32| ((x - max) as f64 / t).exp();
        let top_k = self.params.top_k.filter(|&k| k < n);
        let top_p = self.params.top_p.filter(|&p| p < 1.0);

        self.idx.clear();
        self.weights.clear();
        if top_k.is_none() && top_p.is_none() {
            // Plain temperature sampling needs no ordering at all.
            self.weights.extend(scores.iter().map(|&x| weight(x)));
            return;
        }

        self.idx.extend(0..n as u32);
        if let Some(k) = top_k {
            self.idx.select_nth_unstable_by(k - 1, |&a, &b| by_score_desc(scores, a, b));
            self.idx.truncate(k);
        }

        match top_p {
            None => {
                self.idx.sort_unstable_by(|&a, &b| by_score_desc(scores, a, b));
            }
            Some(p) => {
                let total: f64 = self.idx.iter().map(|&i| weight(scores[i as usize])).sum();
                let target = p * total;
                let len = self.idx.len();
                let mut m = NUCLEUS_FIRST_GUESS.min(len);
                loop {
                    if m < len {
                        self.idx.select_nth_unstable_by(m - 1, |&a, &b| by_score_desc(scores, a, b));
                    }
                    self.idx[..m].sort_unstable_by(|&a, &b| by_score_desc(scores, a, b));
                    let mut cum = 0.0;
                    let mut keep = None;
                    for (j, &i) in self.idx[..m].iter().enumerate() {
                        cum += weight(scores[i as usize]);
                        if cum >= target {
                            keep = Some(j + 1);
                            break;
                        }
                    }
                    match keep {
                        Some(j) => {
                            self.idx.truncate(j);
                            break;
                        }
                        // Rounding left the sum a hair short of p·total: keep everything.
                        None if m == len => break,
                        None => m = (m * 4).min(len),
                    }
                }
            }
        }
        let idx = &self.idx;
        self.weights.extend(idx.iter().map(|&i| weight(scores[i as usize])));
    }

    /// Inverse-CDF draw over the prepared weights with a uniform `u` in [0, 1).
    fn draw(&self, u: f64) -> u32 {
        let total: f64 = self.weights.iter().sum();
        let target = u * total;
        let mut acc = 0.0;
        let mut last_possible = 0;
        for (j, &w) in self.weights.iter().enumerate() {
            if w > 0.0 {
                acc += w;
                last_possible = j;
                if target < acc {
                    break;
                }
            }
        }
        if self.idx.is_empty() {
            last_possible as u32
        } else {
            self.idx[last_possible]
        }
    }
}

/// One pass: argmax (lowest id on ties) and its value, rejecting rows nothing can be
/// drawn from.
fn scan(scores: &[f32]) -> Result<(u32, f32)> {
    if scores.is_empty() {
        return Err(AmuletError::Compute("cannot sample from an empty score row".into()));
    }
    if scores.len() > u32::MAX as usize {
        return Err(AmuletError::Compute(format!("score row of {} entries exceeds u32 ids", scores.len())));
    }
    let mut best = 0usize;
    let mut max = f32::NEG_INFINITY;
    let mut bad = false;
    for (i, &x) in scores.iter().enumerate() {
        bad |= x.is_nan() | (x == f32::INFINITY);
        if x > max {
            max = x;
            best = i;
        }
    }
    if bad {
        let i = scores.iter().position(|x| x.is_nan() || *x == f32::INFINITY).unwrap_or(0);
        let what = if scores[i].is_nan() { "NaN" } else { "+infinity" };
        return Err(AmuletError::Compute(format!("{what} in the next-token scores at token id {i}")));
    }
    if max == f32::NEG_INFINITY {
        return Err(AmuletError::Compute("every token has score -inf: nothing can be sampled".into()));
    }
    Ok((best as u32, max))
}

/// The `n` most likely ids with their probabilities under softmax of the whole row, most
/// likely first (lower id on ties): for showing alternatives next to the chosen token.
/// NaN scores count as impossible here; an empty or all -inf row gives an empty list.
pub fn top_candidates(scores: &[f32], n: usize) -> Vec<(u32, f32)> {
    let max = scores.iter().copied().filter(|x| !x.is_nan()).fold(f32::NEG_INFINITY, f32::max);
    if n == 0 || max == f32::NEG_INFINITY {
        return Vec::new();
    }
    if max == f32::INFINITY {
        // Infinitely more likely than anything finite: those tokens share all the mass.
        let inf: Vec<u32> = (0..scores.len() as u32).filter(|&i| scores[i as usize] == f32::INFINITY).collect();
        let p = 1.0 / inf.len() as f32;
        return inf.into_iter().take(n).map(|i| (i, p)).collect();
    }
    let prob = |x: f32| if x.is_nan() { 0.0 } else { ((x - max) as f64).exp() };
    let total: f64 = scores.iter().map(|&x| prob(x)).sum();
    // NaN sorts as the lowest score so it never displaces a real candidate.
    let key = |i: u32| {
        let x = scores[i as usize];
        if x.is_nan() {
            f32::NEG_INFINITY
        } else {
            x
        }
    };
    let cmp = |a: &u32, b: &u32| key(*b).partial_cmp(&key(*a)).unwrap_or(Ordering::Equal).then(a.cmp(b));
    let mut idx: Vec<u32> = (0..scores.len() as u32).collect();
    let n = n.min(idx.len());
    if n < idx.len() {
        idx.select_nth_unstable_by(n - 1, cmp);
        idx.truncate(n);
    }
    idx.sort_unstable_by(cmp);
    idx.into_iter().map(|i| (i, (prob(scores[i as usize]) / total) as f32)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(temperature: f64, top_k: Option<usize>, top_p: Option<f64>, seed: u64) -> Sampler {
        Sampler::new(SamplingParams { temperature, top_k, top_p, seed }).unwrap()
    }

    /// Deterministic test rows, independent of the sampler's own generator.
    fn random_row(seed: u64, n: usize, scale: f32) -> Vec<f32> {
        let mut r = Rng::new(seed ^ 0xDEAD_BEEF);
        (0..n).map(|_| (r.next_f64() as f32 * 2.0 - 1.0) * scale).collect()
    }

    fn argmax(scores: &[f32]) -> u32 {
        let mut best = 0;
        for i in 1..scores.len() {
            if scores[i] > scores[best] {
                best = i;
            }
        }
        best as u32
    }

    /// The candidate set the sampler would draw from, for comparison with brute force.
    fn candidate_ids(s: &mut Sampler, scores: &[f32]) -> Vec<u32> {
        let (_, max) = scan(scores).unwrap();
        s.prepare(scores, max);
        let mut ids: Vec<u32> = if s.idx.is_empty() {
            (0..scores.len() as u32).filter(|&i| s.weights[i as usize] > 0.0).collect()
        } else {
            s.idx.clone()
        };
        ids.sort_unstable();
        ids
    }

    /// Straightforward reference: full sort, cut to k, cut to the nucleus.
    fn brute_force_set(scores: &[f32], t: f64, k: Option<usize>, p: Option<f64>) -> Vec<u32> {
        let mut ids: Vec<u32> = (0..scores.len() as u32).collect();
        ids.sort_by(|&a, &b| by_score_desc(scores, a, b));
        if let Some(k) = k {
            ids.truncate(k);
        }
        // p = 1 keeps everything by definition, even tokens whose mass rounds away.
        if let Some(p) = p.filter(|&p| p < 1.0) {
            let max = scores[ids[0] as usize];
            let w: Vec<f64> = ids.iter().map(|&i| ((scores[i as usize] - max) as f64 / t).exp()).collect();
            let total: f64 = w.iter().sum();
            let mut cum = 0.0;
            let mut keep = ids.len();
            for (j, wj) in w.iter().enumerate() {
                cum += wj;
                if cum >= p * total {
                    keep = j + 1;
                    break;
                }
            }
            ids.truncate(keep);
        }
        ids.sort_unstable();
        ids
    }

    #[test]
    fn greedy_is_argmax_with_lowest_id_on_ties() {
        let mut s = Sampler::new(SamplingParams::default()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, -2.0, 2.9]).unwrap(), 1);
        assert_eq!(s.sample(&[-5.0, -1.0, -1.0, -3.0]).unwrap(), 1);
        assert_eq!(s.sample(&[7.0, 7.0, 7.0]).unwrap(), 0);
        assert_eq!(s.sample(&[f32::NEG_INFINITY, -100.0, f32::NEG_INFINITY]).unwrap(), 1);
        for seed in 0..20 {
            let row = random_row(seed, 1000, 10.0);
            assert_eq!(s.sample(&row).unwrap(), argmax(&row));
        }
    }

    #[test]
    fn seeds_reproduce_and_differ() {
        let row = vec![0.0f32; 1000];
        let run = |seed: u64, top_k: Option<usize>| {
            let mut s = sampler(1.0, top_k, None, seed);
            (0..64).map(|_| s.sample(&row).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(run(7, None), run(7, None));
        assert_ne!(run(7, None), run(8, None));
        assert_eq!(run(0, Some(100)), run(0, Some(100)));
        assert_ne!(run(0, Some(100)), run(1, Some(100)));
        // The stream is pinned: a change to the generator would silently change every
        // seeded result users have recorded.
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0x99EC_5F36_CB75_F2B4);
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy() {
        for seed in 0..30 {
            let row = random_row(seed, 5000, 5.0);
            let want = argmax(&row);
            for t in [0.1, 1.0, 5.0, 100.0] {
                assert_eq!(sampler(t, Some(1), None, seed).sample(&row).unwrap(), want);
                assert_eq!(sampler(t, None, Some(1e-9), seed).sample(&row).unwrap(), want);
            }
        }
        // Ties resolve like greedy too.
        let tied = [1.0f32, 4.0, 4.0, 0.0];
        assert_eq!(sampler(2.0, Some(1), None, 3).sample(&tied).unwrap(), 1);
        assert_eq!(sampler(2.0, None, Some(1e-6), 3).sample(&tied).unwrap(), 1);
    }

    fn frequencies(s: &mut Sampler, scores: &[f32], draws: usize) -> Vec<f64> {
        let mut counts = vec![0usize; scores.len()];
        for _ in 0..draws {
            counts[s.sample(scores).unwrap() as usize] += 1;
        }
        counts.into_iter().map(|c| c as f64 / draws as f64).collect()
    }

    fn softmax_t(scores: &[f32], t: f64) -> Vec<f64> {
        let e: Vec<f64> = scores.iter().map(|&x| (x as f64 / t).exp()).collect();
        let total: f64 = e.iter().sum();
        e.into_iter().map(|x| x / total).collect()
    }

    fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() < tol, "{what}: token {i} drawn {g:.4}, expected {w:.4}");
        }
    }

    #[test]
    fn frequencies_match_softmax_over_temperature() {
        let scores = [1.0f32, 0.5, 0.0, -1.0];
        let draws = 200_000;
        for (t, seed) in [(0.7, 1), (1.0, 2), (1.5, 3)] {
            let got = frequencies(&mut sampler(t, None, None, seed), &scores, draws);
            assert_close(&got, &softmax_t(&scores, t), 0.005, &format!("T={t}"));
        }
        // top-k renormalises over the survivors and never draws the rest.
        let got = frequencies(&mut sampler(1.0, Some(3), None, 4), &scores, draws);
        let mut want = softmax_t(&scores[..3], 1.0);
        want.push(0.0);
        assert_close(&got, &want, 0.005, "top_k=3");
        assert_eq!(got[3], 0.0);
        // Probabilities at T=1 are .474, .288, .174, .064: p = 0.7 keeps exactly {0, 1}.
        let got = frequencies(&mut sampler(1.0, None, Some(0.7), 5), &scores, draws);
        let mut want = softmax_t(&scores[..2], 1.0);
        want.extend([0.0, 0.0]);
        assert_close(&got, &want, 0.005, "top_p=0.7");
        assert_eq!((got[2], got[3]), (0.0, 0.0));
        // Top-p applies after temperature: at T=3 the same p keeps three tokens.
        let got = frequencies(&mut sampler(3.0, None, Some(0.7), 6), &scores, draws);
        let mut want = softmax_t(&scores[..3], 3.0);
        want.push(0.0);
        assert_close(&got, &want, 0.005, "T=3 top_p=0.7");
    }

    #[test]
    fn candidate_sets_match_brute_force_on_a_large_vocabulary() {
        let n = 49_152;
        let cases: [(f64, Option<usize>, Option<f64>); 9] = [
            (1.0, Some(5), None),
            (1.0, Some(40), Some(0.9)),
            (1.0, None, Some(0.5)),
            (1.0, None, Some(0.95)),
            (0.3, None, Some(0.9)),
            (2.0, Some(1000), Some(0.8)),
            (1.0, Some(n), Some(0.99)),
            (1.0, Some(n + 10), None),
            (0.8, None, Some(1.0)),
        ];
        for (case, &(t, k, p)) in cases.iter().enumerate() {
            // A peaked row (few candidates) and a flat one (the nucleus outgrows the
            // first guess and the selection must widen).
            for scale in [20.0f32, 1.0] {
                let row = random_row(case as u64 * 10 + scale as u64, n, scale);
                let mut s = sampler(t, k, p, 9);
                let got = candidate_ids(&mut s, &row);
                let want = brute_force_set(&row, t, k, p);
                assert_eq!(got.len(), want.len(), "case {case} scale {scale}");
                assert_eq!(got, want, "case {case} scale {scale}");
                if scale == 1.0 && p == Some(0.95) {
                    assert!(want.len() > NUCLEUS_FIRST_GUESS * 4, "flat row should widen twice");
                }
                for _ in 0..50 {
                    let id = s.sample(&row).unwrap();
                    assert!(want.binary_search(&id).is_ok(), "case {case}: drew {id} outside the set");
                }
            }
        }
    }

    #[test]
    fn masked_tokens_are_never_drawn() {
        let ninf = f32::NEG_INFINITY;
        let scores = [ninf, 0.0, ninf, 0.0, ninf];
        for (k, p) in [(None, None), (Some(4), None), (None, Some(0.99)), (Some(5), Some(1.0))] {
            let mut s = sampler(1.0, k, p, 11);
            let f = frequencies(&mut s, &scores, 20_000);
            assert_eq!((f[0], f[2], f[4]), (0.0, 0.0, 0.0), "k={k:?} p={p:?}");
            assert!((f[1] - 0.5).abs() < 0.02 && (f[3] - 0.5).abs() < 0.02);
        }
    }

    #[test]
    fn bad_rows_are_errors_not_panics() {
        for params in
            [SamplingParams::default(), SamplingParams { temperature: 1.0, top_k: Some(2), top_p: Some(0.9), seed: 0 }]
        {
            let mut s = Sampler::new(params).unwrap();
            let msg = |r: Result<u32>| match r {
                Err(AmuletError::Compute(m)) => m,
                other => panic!("expected Compute error, got {other:?}"),
            };
            assert!(msg(s.sample(&[])).contains("empty"));
            let m = msg(s.sample(&[0.0, f32::NAN, 1.0]));
            assert!(m.contains("NaN") && m.contains('1'), "{m}");
            assert!(msg(s.sample(&[0.0, f32::INFINITY])).contains("infinity"));
            assert!(msg(s.sample(&[f32::NEG_INFINITY; 3])).contains("-inf"));
            // Still usable afterwards.
            assert_eq!(Sampler::new(SamplingParams::default()).unwrap().sample(&[0.0, 1.0]).unwrap(), 1);
        }
    }

    #[test]
    fn next_uniform_then_sample_with_replays_sample() {
        let row = random_row(3, 2000, 4.0);
        for (t, k, p) in [(0.0, None, None), (1.0, None, None), (0.7, Some(50), None), (1.3, Some(300), Some(0.8))] {
            let (mut a, mut b) = (sampler(t, k, p, 42), sampler(t, k, p, 42));
            for _ in 0..50 {
                let u = b.next_uniform();
                assert_eq!(u.is_none(), t == 0.0);
                assert_eq!(a.sample(&row).unwrap(), b.sample_with(&row, u).unwrap(), "T={t} k={k:?} p={p:?}");
            }
        }
        let mut greedy = sampler(0.0, None, None, 1);
        assert_eq!(greedy.sample_with(&[0.0, 2.0, 1.0], Some(0.99)).unwrap(), 1);
        assert!(matches!(sampler(1.0, None, None, 1).sample_with(&row, None), Err(AmuletError::Compute(_))));
    }

    #[test]
    fn validation_rejects_bad_parameters() {
        let d = SamplingParams::default();
        d.validate().unwrap();
        SamplingParams { temperature: 100.0, top_k: Some(1), top_p: Some(1.0), ..d }.validate().unwrap();
        let cases = [
            (SamplingParams { temperature: f64::NAN, ..d }, "temperature"),
            (SamplingParams { temperature: -0.5, ..d }, "temperature"),
            (SamplingParams { temperature: f64::INFINITY, ..d }, "temperature"),
            (SamplingParams { temperature: 101.0, ..d }, "temperature"),
            (SamplingParams { top_p: Some(0.0), ..d }, "top_p"),
            (SamplingParams { top_p: Some(1.5), ..d }, "top_p"),
            (SamplingParams { top_p: Some(-0.1), ..d }, "top_p"),
            (SamplingParams { top_p: Some(f64::NAN), ..d }, "top_p"),
            (SamplingParams { top_k: Some(0), ..d }, "top_k"),
        ];
        for (p, option) in cases {
            match Sampler::new(p) {
                Err(AmuletError::BadOption { option: o, message }) => {
                    assert_eq!(o, option, "{p:?}");
                    assert!(message.contains("got"), "{message}");
                }
                other => panic!("{p:?}: expected BadOption, got {other:?}"),
            }
        }
    }

    #[test]
    fn top_candidates_are_softmax_of_the_whole_row() {
        let scores = [1.0f32, 0.5, 0.0, -1.0, 1.0];
        let probs = softmax_t(&scores, 1.0);
        let top = top_candidates(&scores, 3);
        assert_eq!(top.iter().map(|c| c.0).collect::<Vec<_>>(), vec![0, 4, 1]);
        for (id, p) in &top {
            assert!((*p as f64 - probs[*id as usize]).abs() < 1e-6);
        }
        assert_eq!(top_candidates(&scores, 99).len(), 5);
        assert!(top_candidates(&scores, 0).is_empty());
        assert!(top_candidates(&[], 3).is_empty());
        let with_nan = top_candidates(&[f32::NAN, 2.0, 1.0], 3);
        assert_eq!(with_nan[0].0, 1);
        assert_eq!(with_nan[2], (0, 0.0));

        let row = random_row(5, 49_152, 8.0);
        let top = top_candidates(&row, 10);
        assert_eq!(top[0].0, argmax(&row));
        assert!(top.windows(2).all(|w| w[0].1 >= w[1].1));
        let all = crate::align::softmax(&row);
        for (id, p) in top {
            assert!((p - all[id as usize]).abs() < 1e-6);
        }
    }
}
