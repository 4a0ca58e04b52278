//! Turning the two next-token logit rows (base context, preference context) into the one
//! score row the sampler draws from: the baselines and Amulet (docs/method.md §2-4).
//!
//! Pure functions over `&[f32]` so the same code runs natively and in wasm32, and so the
//! closed form can be checked against the faithful game without a model.

use std::fmt;
use std::str::FromStr;

use crate::error::{AmuletError, Result};

/// Upper bound on every real-valued knob and on the resulting strength: beyond this the
/// combined logits lose all precision in f32, so such a value is a typo, not a setting.
const MAX_VALUE: f64 = 1e6;
/// Keeps the per-request recursion (and the faithful game) cheap and bounded.
const MAX_ITERATIONS: u32 = 10_000;

/// Parameters of the per-token online-learning game (docs/method.md §2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AmuletParams {
    /// Utility weight α.
    pub alpha: f64,
    /// KL weight λ towards the preference-context distribution π_1.
    pub lambda: f64,
    /// Learning rate η of the proximal term.
    pub eta: f64,
    /// Number of game iterations T.
    pub iterations: u32,
}

impl Default for AmuletParams {
    /// The reference code's defaults: α = 2, λ = 2, η = 10, T = 60.
    fn default() -> Self {
        AmuletParams { alpha: 2.0, lambda: 2.0, eta: 10.0, iterations: 60 }
    }
}

fn check_positive(option: &str, value: f64) -> Result<()> {
    if !value.is_finite() || value <= 0.0 {
        return Err(AmuletError::bad_option(option, format!("must be a finite number > 0, got {value}")));
    }
    if value > MAX_VALUE {
        return Err(AmuletError::bad_option(option, format!("must be at most {MAX_VALUE:e}, got {value}")));
    }
    Ok(())
}

impl AmuletParams {
    /// Rejects values that would make the game meaningless or the scores non-finite.
    /// α > λ is accepted (the game diverges only as T → ∞) as long as the strength k
    /// reached after T iterations stays finite and at most 1e6.
    pub fn validate(&self) -> Result<()> {
        check_positive("alpha", self.alpha)?;
        check_positive("lambda", self.lambda)?;
        check_positive("eta", self.eta)?;
        if self.iterations == 0 || self.iterations > MAX_ITERATIONS {
            return Err(AmuletError::bad_option(
                "iterations",
                format!("must be between 1 and {MAX_ITERATIONS}, got {}", self.iterations),
            ));
        }
        let k = closed_form_strength(self);
        if !k.is_finite() || k > MAX_VALUE {
            return Err(AmuletError::bad_option(
                "alpha",
                format!(
                    "alpha={} > lambda={} diverges: after {} iterations the strength k is {k}, \
                     above {MAX_VALUE:e}; lower alpha or iterations",
                    self.alpha, self.lambda, self.iterations
                ),
            ));
        }
        Ok(())
    }
}

/// Which implementation of the Amulet game runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum Game {
    /// The T iterations over the whole vocabulary (verification, or a changed utility).
    Iterative,
    /// The exact scalar reduction of §3: one fused pass per token.
    #[default]
    ClosedForm,
}

impl FromStr for Game {
    type Err = AmuletError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "iterative" => Ok(Game::Iterative),
            "closed-form" | "closed_form" | "closedform" | "closed" => Ok(Game::ClosedForm),
            other => Err(AmuletError::bad_option(
                "game",
                format!("unknown game `{other}`; expected one of: closed-form, iterative"),
            )),
        }
    }
}

impl fmt::Display for Game {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Game::Iterative => "iterative",
            Game::ClosedForm => "closed-form",
        })
    }
}

/// How the next-token scores are formed (docs/method.md §4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    /// z_b: the model without the preference.
    Base,
    /// z_p: the preference stated in the prompt only.
    Pref,
    /// z_p + r·(z_p − z_b) (Linear Alignment, Gao et al. 2024).
    LinearAlignment { ratio: f64 },
    /// z_p + k(α,λ,η,T)·(z_p − z_b), or the faithful game.
    Amulet { params: AmuletParams, game: Game },
}

impl Default for Method {
    fn default() -> Self {
        Method::Amulet { params: AmuletParams::default(), game: Game::default() }
    }
}

impl Method {
    /// The ratio of Linear Alignment used in the paper's comparison.
    pub const DEFAULT_LA_RATIO: f64 = 2.0;
    /// The names accepted by `from_str`, for help texts and error messages.
    pub const NAMES: [&'static str; 4] = ["base", "pref", "la", "amulet"];

    /// Whether the base context must be run; lets the engine skip a forward row.
    pub fn needs_base(&self) -> bool {
        !matches!(self, Method::Pref)
    }

    /// Whether the preference context must be run.
    pub fn needs_pref(&self) -> bool {
        !matches!(self, Method::Base)
    }

    /// The short name, as parsed by `from_str`.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Base => "base",
            Method::Pref => "pref",
            Method::LinearAlignment { .. } => "la",
            Method::Amulet { .. } => "amulet",
        }
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            Method::Base | Method::Pref => Ok(()),
            Method::LinearAlignment { ratio } => {
                // r = 0 is allowed: it is `pref`, a useful sanity point of a sweep.
                if !ratio.is_finite() || *ratio < 0.0 {
                    return Err(AmuletError::bad_option("ratio", format!("must be a finite number >= 0, got {ratio}")));
                }
                if *ratio > MAX_VALUE {
                    return Err(AmuletError::bad_option(
                        "ratio",
                        format!("must be at most {MAX_VALUE:e}, got {ratio}"),
                    ));
                }
                Ok(())
            }
            Method::Amulet { params, .. } => params.validate(),
        }
    }
}

impl FromStr for Method {
    type Err = AmuletError;

    /// Parses a method name into that method with its default parameters.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "base" => Ok(Method::Base),
            "pref" => Ok(Method::Pref),
            "la" => Ok(Method::LinearAlignment { ratio: Self::DEFAULT_LA_RATIO }),
            "amulet" => Ok(Method::default()),
            other => Err(AmuletError::bad_option(
                "method",
                format!("unknown method `{other}`; expected one of: {}", Self::NAMES.join(", ")),
            )),
        }
    }
}

/// The command line lists and parses methods by name, each with its default parameters (the
/// CLI then applies its own --alpha, --ratio, ... as the JS face does).
#[cfg(not(target_arch = "wasm32"))]
impl clap::ValueEnum for Method {
    fn value_variants<'a>() -> &'a [Self] {
        const DEFAULT_AMULET: AmuletParams = AmuletParams { alpha: 2.0, lambda: 2.0, eta: 10.0, iterations: 60 };
        &[
            Method::Base,
            Method::Pref,
            Method::LinearAlignment { ratio: Method::DEFAULT_LA_RATIO },
            Method::Amulet { params: DEFAULT_AMULET, game: Game::ClosedForm },
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The strength k_{T+1} of docs/method.md §3: the T-iteration game collapses to
/// `z_p + k·(z_p − z_b)`, and k depends on the parameters only, never on the logits.
/// No validation here (callers sweeping parameters may want raw values); may return
/// inf or NaN for divergent settings.
pub fn closed_form_strength(p: &AmuletParams) -> f64 {
    let mut k = 0.0f64; // k_1
    let mut sum = 0.0f64; // Σ_{i≤t} (1 + k_i)
    for t in 1..=p.iterations {
        let t = t as f64;
        sum += 1.0 + k;
        let prox = 1.0 / (p.eta * t);
        k = (p.alpha * sum / t + k * prox) / (p.lambda + prox);
    }
    k
}

fn log_softmax_f64_in_place(v: &mut [f64]) {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + v.iter().map(|&x| (x - max).exp()).sum::<f64>().ln();
    for x in v.iter_mut() {
        *x -= lse;
    }
}

/// The faithful game of docs/method.md §2 in f64, returning log π_{T+1}.
/// Costs T passes over the vocabulary and allocates; it exists to verify the closed form
/// and as the starting point for anyone who changes the utility.
///
/// Panics if the rows differ in length (a caller bug; `Aligner::combine` checks first).
pub fn iterative_game(z_base: &[f32], z_pref: &[f32], p: &AmuletParams) -> Vec<f64> {
    assert_eq!(z_base.len(), z_pref.len(), "iterative_game: base and pref rows differ in length");
    let mut log_ref: Vec<f64> = z_base.iter().map(|&x| x as f64).collect();
    log_softmax_f64_in_place(&mut log_ref);
    let mut log_pi1: Vec<f64> = z_pref.iter().map(|&x| x as f64).collect();
    log_softmax_f64_in_place(&mut log_pi1);

    let mut log_pi = log_pi1.clone(); // π_t, starting at π_1
    let mut utility_sum = vec![0.0f64; log_pi.len()]; // Σ_{i≤t} U_i
    for t in 1..=p.iterations {
        let t = t as f64;
        let prox = 1.0 / (p.eta * t);
        let denom = p.lambda + prox;
        for i in 0..log_pi.len() {
            utility_sum[i] += p.alpha * (log_pi[i] - log_ref[i]);
            log_pi[i] = (p.lambda * log_pi1[i] + utility_sum[i] / t + prox * log_pi[i]) / denom;
        }
        log_softmax_f64_in_place(&mut log_pi);
    }
    log_pi
}

/// Numerically stable log-softmax (max subtracted, sum in f64).
/// A row whose entries are all -inf has no distribution and yields NaN.
pub fn log_softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = scores.iter().map(|&x| ((x - max) as f64).exp()).sum();
    let lse = max as f64 + sum.ln();
    scores.iter().map(|&x| (x as f64 - lse) as f32).collect()
}

/// Numerically stable softmax (max subtracted, sum in f64).
pub fn softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = scores.iter().map(|&x| ((x - max) as f64).exp()).sum();
    scores.iter().map(|&x| (((x - max) as f64).exp() / sum) as f32).collect()
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Base,
    Pref,
    /// z_p + k·(z_p − z_b): Linear Alignment and the Amulet closed form share this pass.
    Extrapolate {
        k: f32,
    },
    Iterative {
        params: AmuletParams,
    },
}

/// A method validated and prepared once per request, so the per-token call does no
/// parsing, validation or recursion, and (closed form) no allocation.
#[derive(Debug, Clone)]
pub struct Aligner {
    method: Method,
    kind: Kind,
    strength: Option<f64>,
}

impl Aligner {
    pub fn new(method: Method) -> Result<Self> {
        method.validate()?;
        let (kind, strength) = match method {
            Method::Base => (Kind::Base, None),
            Method::Pref => (Kind::Pref, None),
            Method::LinearAlignment { ratio } => (Kind::Extrapolate { k: ratio as f32 }, Some(ratio)),
            Method::Amulet { params, game } => {
                let k = closed_form_strength(&params);
                match game {
                    Game::ClosedForm => (Kind::Extrapolate { k: k as f32 }, Some(k)),
                    Game::Iterative => (Kind::Iterative { params }, Some(k)),
                }
            }
        };
        Ok(Aligner { method, kind, strength })
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The extrapolation strength (r for la, k for amulet) to report with results;
    /// None for base and pref.
    pub fn strength(&self) -> Option<f64> {
        self.strength
    }

    /// The combine as (uses base, uses pref, strength) when it is linear in the rows (all
    /// but the iterative game): a backend can then apply it where the rows are.
    pub fn linear_form(&self) -> Option<(bool, bool, f32)> {
        match self.kind {
            Kind::Base => Some((true, false, 0.0)),
            Kind::Pref => Some((false, true, 0.0)),
            Kind::Extrapolate { k } => Some((true, true, k)),
            Kind::Iterative { .. } => None,
        }
    }

    pub fn needs_base(&self) -> bool {
        self.method.needs_base()
    }

    pub fn needs_pref(&self) -> bool {
        self.method.needs_pref()
    }

    /// Writes the combined score row into `out` (logits up to a constant; for the
    /// iterative game, log-probabilities). Rows the method does not need are ignored.
    ///
    /// Model logits are always finite, so any NaN or infinity is reported as a compute
    /// failure rather than passed on to the sampler.
    pub fn combine(&self, base: Option<&[f32]>, pref: Option<&[f32]>, out: &mut [f32]) -> Result<()> {
        match self.kind {
            Kind::Base => copy_checked("base", need("base", base, out.len())?, out),
            Kind::Pref => copy_checked("pref", need("pref", pref, out.len())?, out),
            Kind::Extrapolate { k } => {
                let base = need("base", base, out.len())?;
                let pref = need("pref", pref, out.len())?;
                let mut finite = true;
                for ((o, &p), &b) in out.iter_mut().zip(pref).zip(base) {
                    let v = p + k * (p - b);
                    finite &= v.is_finite();
                    *o = v;
                }
                if finite {
                    Ok(())
                } else {
                    Err(diagnose(base, pref, k))
                }
            }
            Kind::Iterative { params } => {
                let base = need("base", base, out.len())?;
                let pref = need("pref", pref, out.len())?;
                if let Some(e) = first_non_finite("base", base).or_else(|| first_non_finite("pref", pref)) {
                    return Err(e);
                }
                let log_pi = iterative_game(base, pref, &params);
                for (o, &v) in out.iter_mut().zip(&log_pi) {
                    *o = v as f32;
                }
                Ok(())
            }
        }
    }
}

fn need<'a>(name: &str, row: Option<&'a [f32]>, len: usize) -> Result<&'a [f32]> {
    let row = row.ok_or_else(|| {
        AmuletError::Compute(format!("the selected method needs the {name} logits, but none were given"))
    })?;
    if row.len() != len {
        return Err(AmuletError::Compute(format!(
            "{name} logits have {} entries but the output row has {len}",
            row.len()
        )));
    }
    Ok(row)
}

fn copy_checked(name: &str, row: &[f32], out: &mut [f32]) -> Result<()> {
    out.copy_from_slice(row);
    match first_non_finite(name, row) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cold]
fn first_non_finite(name: &str, row: &[f32]) -> Option<AmuletError> {
    row.iter()
        .position(|x| !x.is_finite())
        .map(|i| AmuletError::Compute(format!("{} in the {name} logits at token id {i}", describe(row[i]))))
}

fn describe(x: f32) -> &'static str {
    if x.is_nan() {
        "NaN"
    } else {
        "infinity"
    }
}

/// Only reached when the fused pass produced a non-finite value: find out why.
#[cold]
fn diagnose(base: &[f32], pref: &[f32], k: f32) -> AmuletError {
    if let Some(e) = first_non_finite("base", base).or_else(|| first_non_finite("pref", pref)) {
        return e;
    }
    let i = base.iter().zip(pref).position(|(&b, &p)| !(p + k * (p - b)).is_finite()).unwrap_or(0);
    AmuletError::Compute(format!(
        "combined score overflowed f32 at token id {i} (strength {k}, base {}, pref {})",
        base[i], pref[i]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(alpha: f64, lambda: f64, eta: f64, iterations: u32) -> AmuletParams {
        AmuletParams { alpha, lambda, eta, iterations }
    }

    fn softmax64(v: &[f64]) -> Vec<f64> {
        let mut l = v.to_vec();
        log_softmax_f64_in_place(&mut l);
        l.into_iter().map(f64::exp).collect()
    }

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
    }

    #[test]
    fn closed_form_matches_documented_values() {
        let d = AmuletParams::default();
        assert_eq!((d.alpha, d.lambda, d.eta, d.iterations), (2.0, 2.0, 10.0, 60));
        assert!((closed_form_strength(&d) - 4.6487).abs() < 5e-5, "{}", closed_form_strength(&d));
        for (t, want) in [(1, 0.952), (10, 2.898), (100, 5.156)] {
            let k = closed_form_strength(&params(2.0, 2.0, 10.0, t));
            assert!((k - want).abs() < 5e-4, "T={t}: k={k}, doc says {want}");
        }
        // T=1 by hand: k_2 = α·1 / (λ + 1/η) = 2 / 2.1.
        assert!((closed_form_strength(&params(2.0, 2.0, 10.0, 1)) - 2.0 / 2.1).abs() < 1e-15);
    }

    #[test]
    fn closed_form_converges_when_alpha_below_lambda() {
        for (alpha, lambda) in [(1.0, 2.0), (0.5, 2.0)] {
            let limit = alpha / (lambda - alpha);
            let mut prev_err = f64::INFINITY;
            for t in [10, 100, 1000, 10_000] {
                let err = (closed_form_strength(&params(alpha, lambda, 10.0, t)) - limit).abs();
                assert!(err < prev_err, "alpha={alpha}: error not shrinking at T={t}");
                prev_err = err;
            }
            assert!(prev_err < 0.01 * limit, "alpha={alpha}: k(T=1e4) off the limit by {prev_err}");
        }
        // α > λ grows without bound.
        let k60 = closed_form_strength(&params(3.0, 2.0, 10.0, 60));
        let k200 = closed_form_strength(&params(3.0, 2.0, 10.0, 200));
        assert!(k200 > 1.5 * k60 && k60 > 10.0);
    }

    #[test]
    fn closed_form_agrees_with_iterative_game() {
        let mut rng = crate::rng::Rng::new(42);
        let sets = [
            params(2.0, 2.0, 10.0, 60),  // defaults, α == λ
            params(2.0, 2.0, 10.0, 1),   // T = 1
            params(2.0, 2.0, 10.0, 200), // T = 200
            params(1.0, 2.0, 10.0, 60),  // α < λ
            params(0.5, 3.0, 1.0, 200),  // α < λ, small η
            params(3.0, 2.0, 10.0, 60),  // α > λ
            params(2.5, 2.0, 10.0, 200), // α > λ, T = 200
            params(2.0, 2.0, 0.1, 60),   // strong proximal term
        ];
        for p in sets {
            p.validate().unwrap();
            for _ in 0..3 {
                let zb = rng.vec(500, 8.0);
                let zp = rng.vec(500, 8.0);
                let game = iterative_game(&zb, &zp, &p);
                let game_prob: Vec<f64> = game.iter().map(|x| x.exp()).collect();
                assert!((game_prob.iter().sum::<f64>() - 1.0).abs() < 1e-12);

                let k = closed_form_strength(&p);
                let closed: Vec<f64> =
                    zb.iter().zip(&zp).map(|(&b, &q)| q as f64 + k * (q as f64 - b as f64)).collect();
                let closed_prob = softmax64(&closed);
                let d = max_abs_diff(&game_prob, &closed_prob);
                assert!(d < 1e-9, "{p:?}: max |Δprob| = {d}");

                // The engine's f32 fused pass and its iterative path agree too.
                let mut fused = vec![0.0f32; zb.len()];
                Aligner::new(Method::Amulet { params: p, game: Game::ClosedForm })
                    .unwrap()
                    .combine(Some(&zb), Some(&zp), &mut fused)
                    .unwrap();
                let fused_prob = softmax64(&fused.iter().map(|&x| x as f64).collect::<Vec<_>>());
                let d = max_abs_diff(&game_prob, &fused_prob);
                assert!(d < 1e-4, "{p:?}: f32 fused path off by {d}");

                let mut iter_out = vec![0.0f32; zb.len()];
                Aligner::new(Method::Amulet { params: p, game: Game::Iterative })
                    .unwrap()
                    .combine(Some(&zb), Some(&zp), &mut iter_out)
                    .unwrap();
                for (o, g) in iter_out.iter().zip(&game) {
                    assert_eq!(*o, *g as f32);
                }
            }
        }
    }

    #[test]
    fn game_moves_away_from_base() {
        // Two tokens: pref likes token 0 a bit more than base does; Amulet must amplify that.
        let zb = [0.0f32, 0.0];
        let zp = [1.0f32, 0.0];
        let p_pref = 1.0f64.exp() / (1.0f64.exp() + 1.0);
        let p_amulet = iterative_game(&zb, &zp, &AmuletParams::default())[0].exp();
        assert!(p_amulet > p_pref + 0.1, "pref {p_pref}, amulet {p_amulet}");
        // Equal rows leave nothing to extrapolate.
        let same = iterative_game(&zp, &zp, &AmuletParams::default());
        assert!((same[0].exp() - p_pref).abs() < 1e-12);
    }

    #[test]
    fn baselines_combine_as_specified() {
        let zb = [1.0f32, -2.0, 0.5, 3.0];
        let zp = [2.0f32, -1.0, 0.0, 3.5];
        let mut out = [0.0f32; 4];

        Aligner::new(Method::Base).unwrap().combine(Some(&zb), None, &mut out).unwrap();
        assert_eq!(out, zb);
        Aligner::new(Method::Pref).unwrap().combine(None, Some(&zp), &mut out).unwrap();
        assert_eq!(out, zp);

        let la = Aligner::new("la".parse().unwrap()).unwrap();
        assert_eq!(la.strength(), Some(2.0));
        la.combine(Some(&zb), Some(&zp), &mut out).unwrap();
        for i in 0..4 {
            assert_eq!(out[i], zp[i] + 2.0 * (zp[i] - zb[i]));
        }
        // r = 0 is pref.
        let la0 = Aligner::new(Method::LinearAlignment { ratio: 0.0 }).unwrap();
        la0.combine(Some(&zb), Some(&zp), &mut out).unwrap();
        assert_eq!(out, zp);
    }

    #[test]
    fn combine_uses_the_base_row() {
        let zp = [2.0f32, -1.0, 0.0, 3.5];
        let zb1 = [1.0f32, -2.0, 0.5, 3.0];
        let zb2 = [0.0f32, 0.0, 0.0, 0.0];
        for method in ["la", "amulet"] {
            let a = Aligner::new(method.parse().unwrap()).unwrap();
            let (mut o1, mut o2) = ([0.0f32; 4], [0.0f32; 4]);
            a.combine(Some(&zb1), Some(&zp), &mut o1).unwrap();
            a.combine(Some(&zb2), Some(&zp), &mut o2).unwrap();
            let s1 = softmax(&o1);
            let s2 = softmax(&o2);
            assert!(
                max_abs_diff(
                    &s1.iter().map(|&x| x as f64).collect::<Vec<_>>(),
                    &s2.iter().map(|&x| x as f64).collect::<Vec<_>>()
                ) > 1e-3,
                "{method} ignores the base row"
            );
            // And amulet extrapolates by k, not by anything else.
            if method == "amulet" {
                let k = closed_form_strength(&AmuletParams::default()) as f32;
                for i in 0..4 {
                    assert!((o1[i] - (zp[i] + k * (zp[i] - zb1[i]))).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn needs_rows() {
        let m = |s: &str| s.parse::<Method>().unwrap();
        assert!(m("base").needs_base() && !m("base").needs_pref());
        assert!(!m("pref").needs_base() && m("pref").needs_pref());
        assert!(m("la").needs_base() && m("la").needs_pref());
        assert!(m("amulet").needs_base() && m("amulet").needs_pref());
        assert_eq!(m(" Amulet "), Method::default());
        for name in Method::NAMES {
            assert_eq!(m(name).name(), name);
        }
    }

    #[test]
    fn combine_reports_missing_rows_mismatch_and_nan() {
        let zb = [1.0f32, 2.0, 3.0];
        let zp = [1.0f32, 2.0, 4.0];
        let mut out = [0.0f32; 3];
        let amulet = Aligner::new(Method::default()).unwrap();
        let iter = Aligner::new(Method::Amulet { params: AmuletParams::default(), game: Game::Iterative }).unwrap();
        for a in [&amulet, &iter] {
            assert!(matches!(a.combine(None, Some(&zp), &mut out), Err(AmuletError::Compute(_))));
            assert!(matches!(a.combine(Some(&zb), None, &mut out), Err(AmuletError::Compute(_))));
            assert!(matches!(a.combine(Some(&zb[..2]), Some(&zp), &mut out), Err(AmuletError::Compute(_))));
            let nan = [1.0f32, f32::NAN, 3.0];
            match a.combine(Some(&zb), Some(&nan), &mut out) {
                Err(AmuletError::Compute(m)) => {
                    assert!(m.contains("NaN") && m.contains("pref") && m.contains('1'), "{m}")
                }
                other => panic!("expected Compute error, got {other:?}"),
            }
            match a.combine(Some(&nan), Some(&zp), &mut out) {
                Err(AmuletError::Compute(m)) => assert!(m.contains("NaN") && m.contains("base"), "{m}"),
                other => panic!("expected Compute error, got {other:?}"),
            }
        }
        let nan = [f32::NAN, 0.0, 0.0];
        assert!(matches!(
            Aligner::new(Method::Base).unwrap().combine(Some(&nan), None, &mut out),
            Err(AmuletError::Compute(_))
        ));
        assert!(matches!(
            Aligner::new(Method::Pref).unwrap().combine(None, Some(&zb[..2]), &mut out),
            Err(AmuletError::Compute(_))
        ));
        // Finite inputs that overflow f32 are caught, not handed to the sampler.
        let big = Aligner::new(Method::LinearAlignment { ratio: 1e6 }).unwrap();
        match big.combine(Some(&[-1e38f32, 0.0, 0.0]), Some(&[1e38f32, 0.0, 0.0]), &mut out) {
            Err(AmuletError::Compute(m)) => assert!(m.contains("overflow"), "{m}"),
            other => panic!("expected overflow error, got {other:?}"),
        }
    }

    fn bad_option(r: Result<impl fmt::Debug>) -> (String, String) {
        match r {
            Err(AmuletError::BadOption { option, message }) => (option, message),
            other => panic!("expected BadOption, got {other:?}"),
        }
    }

    #[test]
    fn validation_rejects_bad_parameters() {
        let d = AmuletParams::default();
        d.validate().unwrap();
        let cases = [
            (AmuletParams { alpha: f64::NAN, ..d }, "alpha", "NaN"),
            (AmuletParams { alpha: 0.0, ..d }, "alpha", "0"),
            (AmuletParams { alpha: -1.0, ..d }, "alpha", "-1"),
            (AmuletParams { alpha: f64::INFINITY, ..d }, "alpha", "inf"),
            (AmuletParams { lambda: 0.0, ..d }, "lambda", "0"),
            (AmuletParams { lambda: -2.0, ..d }, "lambda", "-2"),
            (AmuletParams { lambda: 1e9, ..d }, "lambda", "1000000000"),
            (AmuletParams { eta: f64::NAN, ..d }, "eta", "NaN"),
            (AmuletParams { eta: 0.0, ..d }, "eta", "0"),
            (AmuletParams { eta: 1e7, ..d }, "eta", "10000000"),
            (AmuletParams { iterations: 0, ..d }, "iterations", "0"),
            (AmuletParams { iterations: 10_001, ..d }, "iterations", "10001"),
            // Divergent: α > λ over many iterations.
            (AmuletParams { alpha: 10.0, lambda: 1.0, ..d }, "alpha", "diverges"),
            (AmuletParams { alpha: 1e5, lambda: 1e-3, ..d }, "alpha", "diverges"),
        ];
        for (p, option, needle) in cases {
            let (o, m) = bad_option(p.validate());
            assert_eq!(o, option, "{p:?}");
            assert!(m.contains(needle), "{p:?}: message `{m}` lacks `{needle}`");
            // The Aligner refuses too.
            bad_option(Aligner::new(Method::Amulet { params: p, game: Game::ClosedForm }));
        }
        // Mild divergence is allowed: α > λ grows only polynomially in T.
        AmuletParams { alpha: 3.0, iterations: 10_000, ..d }.validate().unwrap();
        AmuletParams { iterations: 10_000, ..d }.validate().unwrap();

        for r in [f64::NAN, -0.5, f64::INFINITY, 1e7] {
            let (o, _) = bad_option(Aligner::new(Method::LinearAlignment { ratio: r }));
            assert_eq!(o, "ratio");
        }

        let (o, m) = bad_option("amulett".parse::<Method>());
        assert_eq!(o, "method");
        for name in Method::NAMES {
            assert!(m.contains(name), "{m}");
        }
        assert_eq!("iterative".parse::<Game>().unwrap(), Game::Iterative);
        assert_eq!("closed-form".parse::<Game>().unwrap(), Game::ClosedForm);
        assert_eq!(bad_option("fast".parse::<Game>()).0, "game");
    }

    #[test]
    fn softmax_helpers_are_stable() {
        let x = [1000.0f32, 1000.0, -1000.0];
        let p = softmax(&x);
        assert!((p[0] - 0.5).abs() < 1e-7 && (p[1] - 0.5).abs() < 1e-7 && p[2] == 0.0);
        let lp = log_softmax(&x);
        assert!((lp[0] - (0.5f32).ln()).abs() < 1e-6);
        assert!(lp[2] < -1999.0 && lp[2].is_finite());
        let y = [0.3f32, -1.2, 2.5, 0.0];
        let s: f32 = softmax(&y).iter().sum();
        assert!((s - 1.0).abs() < 1e-6);
        for (a, b) in log_softmax(&y).iter().zip(softmax(&y)) {
            assert!((a.exp() - b).abs() < 1e-6);
        }
    }
}
