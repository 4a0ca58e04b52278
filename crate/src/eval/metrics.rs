//! Offline signals of a response (docs/method.md §6), pure functions so they can be tested
//! without a model: length, lexicon sentiment, lexical diversity, and the statistics
//! (bootstrap intervals, win rates) the summary is built from.

use std::collections::HashSet;

use crate::rng::Rng;

/// Lower-cased words: runs of letters and digits, with an apostrophe kept inside a word
/// ("don't"). Markdown bullets, numbering dots and emoji are not words, so a list and the
/// same sentences as prose count alike.
pub fn words(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_alphanumeric() {
            cur.extend(c.to_lowercase());
        } else if (c == '\'' || c == '\u{2019}')
            && !cur.is_empty()
            && chars.get(i + 1).is_some_and(|n| n.is_alphanumeric())
        {
            cur.push('\'');
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Distinct-n (Li et al., 2016): distinct n-grams over all n-grams. 0 when the text has no
/// n-gram at all (an empty or one-word answer shows no diversity).
pub fn distinct_n(words: &[String], n: usize) -> f64 {
    if n == 0 || words.len() < n {
        return 0.0;
    }
    let grams: HashSet<&[String]> = words.windows(n).collect();
    grams.len() as f64 / (words.len() - n + 1) as f64
}

/// Distinct-n pooled over several texts: the corpus-level figure of Li et al., which
/// also catches a method repeating the same phrasing across prompts.
pub fn corpus_distinct_n<'a>(texts: impl IntoIterator<Item = &'a [String]>, n: usize) -> f64 {
    let mut grams: HashSet<&[String]> = HashSet::new();
    let mut total = 0usize;
    for w in texts {
        if n == 0 || w.len() < n {
            continue;
        }
        total += w.len() - n + 1;
        grams.extend(w.windows(n));
    }
    if total == 0 {
        0.0
    } else {
        grams.len() as f64 / total as f64
    }
}

/// Type-token ratio: distinct words over words (for one response, distinct-1).
pub fn type_token_ratio(words: &[String]) -> f64 {
    distinct_n(words, 1)
}

/// exp of the mean negative log-probability (natural log); None for no tokens.
pub fn perplexity(logprobs: &[f64]) -> Option<f64> {
    if logprobs.is_empty() {
        return None;
    }
    let mean_nll = -logprobs.iter().sum::<f64>() / logprobs.len() as f64;
    Some(mean_nll.exp())
}

/// The metrics of one response; `perplexity` is filled by the runner (it needs the model).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Metrics {
    pub words: usize,
    pub vader_compound: f64,
    pub distinct_1: f64,
    pub distinct_2: f64,
    /// Perplexity of the response under the base context (lower = more fluent for the model).
    pub perplexity: Option<f64>,
}

/// Every text metric of a response (perplexity left empty).
pub fn text_metrics(text: &str) -> Metrics {
    let w = words(text);
    Metrics {
        words: w.len(),
        vader_compound: crate::eval::vader::compound(text),
        distinct_1: distinct_n(&w, 1),
        distinct_2: distinct_n(&w, 2),
        perplexity: None,
    }
}

pub fn mean(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        None
    } else {
        Some(xs.iter().sum::<f64>() / xs.len() as f64)
    }
}

pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 })
}

/// A mean with its percentile-bootstrap confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Estimate {
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
}

/// Mean of `xs` with a percentile bootstrap interval at `level` (e.g. 0.95) from
/// `resamples` resamples drawn with `seed`. None for no data.
pub fn bootstrap_mean_ci(xs: &[f64], resamples: usize, level: f64, seed: u64) -> Option<Estimate> {
    let m = mean(xs)?;
    if xs.len() == 1 || resamples == 0 {
        return Some(Estimate { mean: m, lo: m, hi: m, n: xs.len() });
    }
    let mut rng = Rng::new(seed);
    let mut means: Vec<f64> =
        (0..resamples).map(|_| (0..xs.len()).map(|_| xs[rng.below(xs.len())]).sum::<f64>() / xs.len() as f64).collect();
    means.sort_by(f64::total_cmp);
    let tail = (1.0 - level.clamp(0.0, 1.0)) / 2.0;
    let q = |p: f64| {
        // Linear interpolation between order statistics (numpy's default).
        let pos = p * (means.len() - 1) as f64;
        let (i, f) = (pos.floor() as usize, pos.fract());
        let j = (i + 1).min(means.len() - 1);
        means[i] * (1.0 - f) + means[j] * f
    };
    // Floating-point sums can put the sample mean a hair outside a degenerate interval.
    let (lo, hi) = (q(tail).min(m), q(1.0 - tail).max(m));
    Some(Estimate { mean: m, lo, hi, n: xs.len() })
}

/// Which way a metric should move for a preference to count as followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Higher,
    Lower,
}

/// Per-pair outcome of A against B: 1 win, 0.5 tie, 0 loss.
pub fn pairwise_scores(a: &[f64], b: &[f64], dir: Direction) -> Vec<f64> {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            if x == y {
                0.5
            } else if (x > y) == (dir == Direction::Higher) {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        words(s)
    }

    #[test]
    fn words_ignore_markup_and_keep_contractions() {
        assert_eq!(w("**Tip 1:** Don't   skip breakfast!"), vec!["tip", "1", "don't", "skip", "breakfast"]);
        assert_eq!(w("- a\n- b"), vec!["a", "b"]);
        assert_eq!(w("'quoted' it’s"), vec!["quoted", "it's"]);
        assert!(w("  ... 🎉 ").is_empty());
    }

    #[test]
    fn distinct_n_on_small_strings() {
        let x = w("the cat the cat the dog");
        assert_eq!(distinct_n(&x, 1), 3.0 / 6.0);
        // bigrams: the-cat, cat-the, the-cat, cat-the, the-dog -> 3 distinct of 5
        assert_eq!(distinct_n(&x, 2), 3.0 / 5.0);
        assert_eq!(type_token_ratio(&x), 0.5);
        assert_eq!(distinct_n(&w("a b c d"), 2), 1.0);
        assert_eq!(distinct_n(&w("hello"), 2), 0.0);
        assert_eq!(distinct_n(&[], 1), 0.0);
        let (a, b) = (w("a b a"), w("a b c"));
        // pooled unigrams: a b a a b c -> {a, b, c} = 3 of 6
        assert_eq!(corpus_distinct_n([a.as_slice(), b.as_slice()], 1), 0.5);
    }

    #[test]
    fn perplexity_of_uniform_tokens_is_the_vocabulary_size() {
        let lp = vec![(0.25f64).ln(); 7];
        assert!((perplexity(&lp).unwrap() - 4.0).abs() < 1e-12);
        assert_eq!(perplexity(&[]), None);
    }

    #[test]
    fn text_metrics_fill_every_field_but_perplexity() {
        let m = text_metrics("VADER is smart, handsome, and funny.");
        assert_eq!(m.words, 6);
        assert!((m.vader_compound - 0.8316).abs() < 1e-4);
        assert_eq!(m.distinct_1, 1.0);
        assert_eq!(m.perplexity, None);
    }

    #[test]
    fn bootstrap_interval_contains_the_mean_and_is_deterministic() {
        let xs: Vec<f64> = (0..40).map(|i| ((i * 37) % 11) as f64).collect();
        let a = bootstrap_mean_ci(&xs, 1000, 0.95, 7).unwrap();
        let b = bootstrap_mean_ci(&xs, 1000, 0.95, 7).unwrap();
        let c = bootstrap_mean_ci(&xs, 1000, 0.95, 8).unwrap();
        assert_eq!(a, b);
        assert_ne!((a.lo, a.hi), (c.lo, c.hi));
        assert!(a.lo < a.mean && a.mean < a.hi, "{a:?}");
        assert_eq!(a.mean, mean(&xs).unwrap());
        // Roughly mean ± 2 standard errors (sd ≈ 3.2, n = 40 -> se ≈ 0.5).
        assert!(a.hi - a.lo > 1.2 && a.hi - a.lo < 2.8, "{a:?}");
        let one = bootstrap_mean_ci(&[3.0], 1000, 0.95, 1).unwrap();
        assert_eq!((one.lo, one.mean, one.hi), (3.0, 3.0, 3.0));
        assert_eq!(bootstrap_mean_ci(&[], 1000, 0.95, 1), None);
        let flat = bootstrap_mean_ci(&[0.1; 9], 1000, 0.95, 1).unwrap();
        assert!(flat.lo <= flat.mean && flat.mean <= flat.hi);
    }

    #[test]
    fn rng_below_stays_in_range() {
        let mut r = Rng::new(0);
        let mut seen = [false; 5];
        for _ in 0..200 {
            seen[r.below(5)] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn wins_ties_and_losses() {
        assert_eq!(pairwise_scores(&[1.0, 2.0, 3.0], &[2.0, 2.0, 1.0], Direction::Higher), vec![0.0, 0.5, 1.0]);
        assert_eq!(pairwise_scores(&[1.0, 2.0, 3.0], &[2.0, 2.0, 1.0], Direction::Lower), vec![1.0, 0.5, 0.0]);
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), Some(2.5));
    }
}
