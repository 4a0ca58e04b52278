//! The report of an evaluation run: responses.jsonl, summary.md and the SVG charts.
//!
//! Each preference is judged on its own offline signal (docs/method.md §6): concise/verbose by
//! words, uplifting by VADER compound, creative by distinct-2, always beside the fluency
//! cost (perplexity under the base context).

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use super::metrics::{
    bootstrap_mean_ci, corpus_distinct_n, mean, median, pairwise_scores, words, Direction, Estimate, Metrics,
};
use super::svg::{bar_chart, line_chart, Bar, BarPanel, LinePanel, RefLine, Series};
use super::{EvalConfig, Record};
use crate::align::{closed_form_strength, AmuletParams, Method};
use crate::error::{AmuletError, Result};

/// Bootstrap settings: fixed, so a report is reproducible from its responses.
pub const RESAMPLES: usize = 1000;
pub const LEVEL: f64 = 0.95;
pub const SEED: u64 = 20250227;

/// The offline signal a preference is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnMetric {
    /// Words; `fewer` for concise, more for verbose.
    Words {
        fewer: bool,
    },
    VaderCompound,
    Distinct2,
}

impl OwnMetric {
    /// The signal of a paper preset; None for free-text preferences (no offline signal).
    pub fn of(preference: &str) -> Option<OwnMetric> {
        match preference.trim().to_ascii_lowercase().as_str() {
            "concise" => Some(OwnMetric::Words { fewer: true }),
            "verbose" => Some(OwnMetric::Words { fewer: false }),
            "uplifting" => Some(OwnMetric::VaderCompound),
            "creative" => Some(OwnMetric::Distinct2),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            OwnMetric::Words { .. } => "words",
            OwnMetric::VaderCompound => "VADER compound",
            OwnMetric::Distinct2 => "distinct-2",
        }
    }

    pub fn direction(self) -> Direction {
        match self {
            OwnMetric::Words { fewer: true } => Direction::Lower,
            _ => Direction::Higher,
        }
    }

    pub fn value(self, m: &Metrics) -> f64 {
        match self {
            OwnMetric::Words { .. } => m.words as f64,
            OwnMetric::VaderCompound => m.vader_compound,
            OwnMetric::Distinct2 => m.distinct_2,
        }
    }

    fn better(self) -> &'static str {
        match self.direction() {
            Direction::Higher => "higher is better",
            Direction::Lower => "lower is better",
        }
    }
}

/// What the summary says about the run itself.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The command line, for reproduction (paths as `recorded_command` writes them).
    pub command: String,
    /// The prompt file (as `recorded_path` writes it).
    pub prompts_source: String,
    pub model: String,
    pub wall_s: f64,
}

/// `.` and `..` resolved without touching the file system.
fn lexically_normal(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// `path` relative to `root` with '/' separators, when it lies inside (both absolute).
fn inside(path: &Path, root: &Path) -> Option<String> {
    let rel = lexically_normal(path).strip_prefix(lexically_normal(root)).ok()?.to_path_buf();
    let parts: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    Some(if parts.is_empty() { ".".into() } else { parts.join("/") })
}

/// How a report names a file: relative to the repository root `root` when it lies inside
/// it, else by its file name alone, so that a committed report names no folder of the
/// machine it ran on. A relative `path` is taken from `cwd`; a path that reaches the
/// repository only through a symbolic link is recognised through its real location.
pub fn recorded_path(path: &Path, cwd: &Path, root: &Path) -> String {
    if let Some(rel) = inside(&cwd.join(path), root) {
        return rel;
    }
    if let Some(rel) = std::fs::canonicalize(cwd.join(path)).ok().and_then(|real| inside(&real, root)) {
        return rel;
    }
    lexically_normal(path).file_name().map_or_else(|| path.display().to_string(), |f| f.to_string_lossy().into_owned())
}

/// The command line as a report records it: the program (when given as a path) and the
/// values of `path_flags` (`--flag value` or `--flag=value`) go through `recorded_path`;
/// every other argument is kept as it was.
pub fn recorded_command(args: &[String], path_flags: &[&str], cwd: &Path, root: &Path) -> String {
    let shown = |a: &str| recorded_path(Path::new(a), cwd, root);
    let mut out = Vec::with_capacity(args.len());
    let mut value_is_path = false;
    for (i, a) in args.iter().enumerate() {
        let flag_value = a.split_once('=').filter(|(flag, _)| path_flags.contains(flag));
        out.push(if value_is_path || (i == 0 && a.contains(['/', '\\'])) {
            shown(a)
        } else if let Some((flag, value)) = flag_value {
            format!("{flag}={}", shown(value))
        } else {
            a.clone()
        });
        value_is_path = path_flags.contains(&a.as_str());
    }
    out.join(" ")
}

/// Chart colour of a method.
fn color(method: &str) -> &'static str {
    match method {
        "base" => "#9e9e9e",
        "pref" => "#4c78a8",
        "la" => "#f58518",
        "amulet" => "#e45756",
        _ => "#72b7b2",
    }
}

/// A name safe for a file: lower-case letters, digits and '-'.
fn file_stem(preference: &str) -> String {
    let s: String =
        preference.trim().to_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let s = s.split('-').filter(|p| !p.is_empty()).collect::<Vec<_>>().join("-");
    if s.is_empty() {
        "preference".into()
    } else {
        s
    }
}

fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        format!("{v}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn fmt_est(e: &Option<Estimate>) -> String {
    match e {
        Some(e) => format!("{} [{}, {}]", fmt_num(e.mean), fmt_num(e.lo), fmt_num(e.hi)),
        None => "–".into(),
    }
}

fn estimate(xs: &[f64]) -> Option<Estimate> {
    bootstrap_mean_ci(xs, RESAMPLES, LEVEL, SEED)
}

/// The responses of one method (by its name, and T for amulet) to one preference, in
/// prompt order. Base responses serve every preference.
fn responses<'a>(records: &'a [Record], pref: &str, method: &str, iterations: Option<u32>) -> Vec<&'a Record> {
    let mut v: Vec<&Record> = records
        .iter()
        .filter(|r| r.method == method)
        .filter(|r| method == "base" || r.preference.as_deref() == Some(pref))
        .filter(|r| iterations.is_none() || r.params.iterations == iterations)
        .collect();
    v.sort_by_key(|r| r.prompt_index);
    v
}

/// How a compared method is described in tables.
fn method_label(m: &Method) -> String {
    match m {
        Method::Base | Method::Pref => m.name().to_string(),
        Method::LinearAlignment { ratio } => format!("la (r={ratio})"),
        Method::Amulet { params, .. } => {
            format!("amulet (T={}, k={:.2})", params.iterations, closed_form_strength(params))
        }
    }
}

fn main_iterations(m: &Method) -> Option<u32> {
    match m {
        Method::Amulet { params, .. } => Some(params.iterations),
        _ => None,
    }
}

/// Win rate of `a` over `b` on the metric, paired by prompt: per-prompt scores.
fn paired_scores(a: &[&Record], b: &[&Record], metric: OwnMetric) -> Vec<f64> {
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for ra in a {
        if let Some(rb) = b.iter().find(|r| r.prompt_index == ra.prompt_index) {
            xs.push(metric.value(&ra.metrics));
            ys.push(metric.value(&rb.metrics));
        }
    }
    pairwise_scores(&xs, &ys, metric.direction())
}

fn perplexities(rs: &[&Record]) -> Vec<f64> {
    rs.iter().filter_map(|r| r.metrics.perplexity).collect()
}

/// Writes responses.jsonl, summary.md and the charts into `dir`; returns the files written.
pub fn write_report(dir: &Path, records: &[Record], cfg: &EvalConfig, info: &RunInfo) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| AmuletError::Io(format!("{}: {e}", dir.display())))?;
    let mut written = Vec::new();
    let mut put = |name: &str, text: &str| -> Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| AmuletError::Io(format!("{}: {e}", p.display())))?;
        written.push(p);
        Ok(())
    };
    let mut jsonl = String::new();
    for r in records {
        let line = serde_json::to_string(r).map_err(|e| AmuletError::Io(e.to_string()))?;
        jsonl.push_str(&line);
        jsonl.push('\n');
    }
    put("responses.jsonl", &jsonl)?;
    let (summary, charts) = build(records, cfg, info);
    for (name, svg) in &charts {
        put(name, svg)?;
    }
    put("summary.md", &summary)?;
    Ok(written)
}

/// summary.md and the (file name, SVG) charts.
pub fn build(records: &[Record], cfg: &EvalConfig, info: &RunInfo) -> (String, Vec<(String, String)>) {
    let mut md = String::new();
    let mut charts = Vec::new();
    let n_prompts = records.iter().map(|r| r.prompt_index).max().map_or(0, |m| m + 1);
    let generated: usize = records.iter().map(|r| r.tokens).sum();

    let _ = writeln!(md, "# Amulet offline evaluation\n");
    let _ = writeln!(md, "- command: `{}`", info.command);
    let _ = writeln!(md, "- prompts: {} from `{}`", n_prompts, info.prompts_source);
    let _ = writeln!(md, "- model: {}", info.model);
    let _ = writeln!(
        md,
        "- decoding: greedy, at most {} new tokens, preference sentence in the {} prompt",
        cfg.max_tokens,
        match cfg.placement {
            crate::prompt::Placement::System => "system",
            crate::prompt::Placement::User => "user",
        }
    );
    let labels: Vec<String> = cfg.methods.iter().map(method_label).collect();
    let a = cfg.amulet;
    let _ = writeln!(md, "- methods: {} (amulet α={}, λ={}, η={})", labels.join(", "), a.alpha, a.lambda, a.eta);
    let _ = writeln!(
        md,
        "- {} responses, {} generated tokens, wall time {:.0} s (model load, generation and perplexity)",
        records.len(),
        generated,
        info.wall_s
    );
    let _ = writeln!(
        md,
        "- intervals: 95% percentile bootstrap over prompts ({RESAMPLES} resamples, seed {SEED}); \
         perplexity is the model's own, of the response under the BASE context (fluency cost)\n"
    );

    let known: Vec<(&String, OwnMetric)> =
        cfg.preferences.iter().filter_map(|p| OwnMetric::of(p).map(|m| (p, m))).collect();
    let unknown: Vec<&String> = cfg.preferences.iter().filter(|p| OwnMetric::of(p).is_none()).collect();

    // --- own metric and fluency ---
    let _ = writeln!(md, "## Own metric and fluency\n");
    let _ = writeln!(md, "Mean [95% CI] over prompts. Own metric: concise → words (lower is better), verbose → words (higher), uplifting → VADER compound (higher), creative → distinct-2 (higher).\n");
    let _ = writeln!(md, "| preference | method | own metric | perplexity |");
    let _ = writeln!(md, "|---|---|---|---|");
    for (pref, metric) in &known {
        let mut panel_own = Vec::new();
        let mut panel_ppl = Vec::new();
        for (m, label) in cfg.methods.iter().zip(&labels) {
            let rs = responses(records, pref, m.name(), main_iterations(m));
            let own = estimate(&rs.iter().map(|r| metric.value(&r.metrics)).collect::<Vec<_>>());
            let ppl = estimate(&perplexities(&rs));
            let _ = writeln!(md, "| {pref} | {label} | {} {} | {} |", metric.name(), fmt_est(&own), fmt_est(&ppl));
            if let Some(e) = own {
                panel_own.push(Bar { label: m.name().into(), estimate: e, color: color(m.name()).into() });
            }
            if let Some(e) = ppl {
                panel_ppl.push(Bar { label: m.name().into(), estimate: e, color: color(m.name()).into() });
            }
        }
        let svg = bar_chart(
            &format!("Preference \"{pref}\": {} prompts, mean with 95% CI", n_prompts),
            &[
                BarPanel { title: metric.name().into(), note: metric.better().into(), bars: panel_own },
                BarPanel {
                    title: "perplexity under base context".into(),
                    note: "lower is more fluent".into(),
                    bars: panel_ppl,
                },
            ],
        );
        charts.push((format!("{}.svg", file_stem(pref)), svg));
    }
    if !unknown.is_empty() {
        let list: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
        let _ = writeln!(md, "\nNo offline signal for: {} (see all metrics below).", list.join(", "));
    }

    // --- win rates and verdicts ---
    let amulet = cfg.methods.iter().find(|m| matches!(m, Method::Amulet { .. }));
    let baselines: Vec<&Method> = cfg.methods.iter().filter(|m| !matches!(m, Method::Amulet { .. })).collect();
    let mut verdicts = Vec::new();
    if let (Some(am), false) = (amulet, baselines.is_empty()) {
        let _ = writeln!(md, "\n## Win rate of amulet\n");
        let _ = writeln!(md, "Share of prompts where amulet's own metric is better than the baseline's (ties count half), with 95% CI.\n");
        let head: Vec<String> = baselines.iter().map(|b| format!("vs {}", b.name())).collect();
        let _ = writeln!(md, "| preference | {} |", head.join(" | "));
        let _ = writeln!(md, "|---|{}", "---|".repeat(baselines.len()));
        for (pref, metric) in &known {
            let ra = responses(records, pref, "amulet", main_iterations(am));
            let ma = mean(&ra.iter().map(|r| metric.value(&r.metrics)).collect::<Vec<_>>());
            let pa = mean(&perplexities(&ra));
            let mut cells = Vec::new();
            let mut parts = Vec::new();
            for b in &baselines {
                let rb = responses(records, pref, b.name(), None);
                let w = estimate(&paired_scores(&ra, &rb, *metric));
                cells.push(fmt_est(&w));
                let mb = mean(&rb.iter().map(|r| metric.value(&r.metrics)).collect::<Vec<_>>());
                let pb = mean(&perplexities(&rb));
                if let (Some(w), Some(ma), Some(mb)) = (w, ma, mb) {
                    let word = if w.lo > 0.5 {
                        "**beats**"
                    } else if w.hi < 0.5 {
                        "**loses to**"
                    } else {
                        "does not clearly beat"
                    };
                    let ppl = match (pa, pb) {
                        (Some(pa), Some(pb)) => format!("; perplexity {} vs {}", fmt_num(pa), fmt_num(pb)),
                        _ => String::new(),
                    };
                    parts.push(format!(
                        "{word} {} (win rate {}; {} {} vs {}{ppl})",
                        b.name(),
                        fmt_num(w.mean),
                        metric.name(),
                        fmt_num(ma),
                        fmt_num(mb)
                    ));
                }
            }
            let _ = writeln!(md, "| {pref} | {} |", cells.join(" | "));
            if !parts.is_empty() {
                verdicts.push(format!("- **{pref}**: amulet {}.", parts.join("; ")));
            }
        }
        let _ = writeln!(md, "\n### Reading\n");
        let _ = writeln!(md, "\"beats\" / \"loses to\": the win rate's 95% interval lies above / below one half.\n");
        for v in &verdicts {
            let _ = writeln!(md, "{v}");
        }
    }

    // --- the strength sweep ---
    let swept = cfg.swept_preferences();
    if !swept.is_empty() {
        let ts = &cfg.sweep_iterations;
        let ks: Vec<f64> =
            ts.iter().map(|&t| closed_form_strength(&AmuletParams { iterations: t, ..cfg.amulet })).collect();
        let _ = writeln!(md, "\n## Amulet strength sweep\n");
        let _ = writeln!(
            md,
            "T game iterations give the strength k of z_p + k·(z_p − z_b) (docs/method.md §3; α={}, λ={}, η={}); LA uses a fixed r. Same prompts.\n",
            a.alpha, a.lambda, a.eta
        );
        let _ = writeln!(md, "| preference | T | k | own metric | perplexity |");
        let _ = writeln!(md, "|---|---|---|---|---|");
        for pref in &swept {
            let Some(metric) = OwnMetric::of(pref) else { continue };
            let mut own_pts = Vec::new();
            let mut ppl_pts = Vec::new();
            for (&t, &k) in ts.iter().zip(&ks) {
                let rs = responses(records, pref, "amulet", Some(t));
                let own = estimate(&rs.iter().map(|r| metric.value(&r.metrics)).collect::<Vec<_>>());
                let ppl = estimate(&perplexities(&rs));
                let _ =
                    writeln!(md, "| {pref} | {t} | {k:.3} | {} {} | {} |", metric.name(), fmt_est(&own), fmt_est(&ppl));
                own_pts.push(own);
                ppl_pts.push(ppl);
            }
            let mut own_refs = Vec::new();
            let mut ppl_refs = Vec::new();
            for b in &baselines {
                let rs = responses(records, pref, b.name(), None);
                let label = match b {
                    Method::LinearAlignment { ratio } => format!("la r={ratio}"),
                    m => m.name().to_string(),
                };
                if let Some(v) = mean(&rs.iter().map(|r| metric.value(&r.metrics)).collect::<Vec<_>>()) {
                    own_refs.push(RefLine { label: label.clone(), value: v, color: color(b.name()).into() });
                }
                if let Some(v) = mean(&perplexities(&rs)) {
                    ppl_refs.push(RefLine { label, value: v, color: color(b.name()).into() });
                }
            }
            let x_labels: Vec<(String, String)> =
                ts.iter().zip(&ks).map(|(t, k)| (format!("T={t}"), format!("k={k:.2}"))).collect();
            let svg = line_chart(
                &format!("Amulet strength sweep, \"{pref}\": {} prompts, mean with 95% CI", n_prompts),
                &x_labels,
                "game iterations T (strength k)",
                &[
                    LinePanel {
                        title: format!("effect: {}", metric.name()),
                        note: format!("{}; dashed: baselines", metric.better()),
                        series: vec![Series { label: "amulet".into(), color: color("amulet").into(), points: own_pts }],
                        refs: own_refs,
                    },
                    LinePanel {
                        title: "fluency: perplexity under base context".into(),
                        note: "lower is more fluent".into(),
                        series: vec![Series { label: "amulet".into(), color: color("amulet").into(), points: ppl_pts }],
                        refs: ppl_refs,
                    },
                ],
            );
            charts.push((format!("sweep-{}.svg", file_stem(pref)), svg));
        }
    }

    // --- every metric ---
    let _ = writeln!(md, "\n## All metrics (means over prompts)\n");
    let _ = writeln!(md, "TTR is the per-response type-token ratio (= distinct-1 of that response); corpus distinct-2 pools all responses of the method. \"ended\" is the share of responses that stopped before the token limit.\n");
    let _ = writeln!(md, "| preference | method | tokens | words | VADER | TTR | distinct-2 | corpus distinct-2 | perplexity (median) | ended |");
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
    for pref in &cfg.preferences {
        for (m, label) in cfg.methods.iter().zip(&labels) {
            let rs = responses(records, pref, m.name(), main_iterations(m));
            if rs.is_empty() {
                continue;
            }
            let col = |f: &dyn Fn(&Record) -> f64| {
                fmt_num(mean(&rs.iter().map(|r| f(r)).collect::<Vec<_>>()).unwrap_or(f64::NAN))
            };
            let word_lists: Vec<Vec<String>> = rs.iter().map(|r| words(&r.text)).collect();
            let corpus = corpus_distinct_n(word_lists.iter().map(|w| w.as_slice()), 2);
            let ended = rs.iter().filter(|r| r.finish_reason == "stop").count() as f64 / rs.len() as f64;
            let _ = writeln!(
                md,
                "| {pref} | {label} | {} | {} | {} | {} | {} | {} | {} | {:.0}% |",
                col(&|r| r.tokens as f64),
                col(&|r| r.metrics.words as f64),
                col(&|r| r.metrics.vader_compound),
                col(&|r| r.metrics.distinct_1),
                col(&|r| r.metrics.distinct_2),
                fmt_num(corpus),
                median(&perplexities(&rs)).map_or("–".into(), fmt_num),
                ended * 100.0
            );
        }
    }

    if !charts.is_empty() {
        let _ = writeln!(md, "\n## Charts\n");
        for (name, _) in &charts {
            let _ = writeln!(md, "![{name}]({name})\n");
        }
    }
    (md, charts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::Game;
    use crate::eval::{MethodParams, Record};
    use crate::prompt::Placement;

    fn rec(i: usize, pref: Option<&str>, m: &Method, words: usize, text: &str) -> Record {
        Record {
            prompt_id: serde_json::json!(i),
            prompt_index: i,
            question: "q".into(),
            preference: pref.map(str::to_string),
            method: m.name().into(),
            params: MethodParams::of(m),
            text: text.into(),
            tokens: words + 1,
            finish_reason: "stop".into(),
            metrics: Metrics { words, vader_compound: 0.1, distinct_1: 1.0, distinct_2: 1.0, perplexity: Some(3.0) },
        }
    }

    #[test]
    fn the_summary_judges_each_preference_on_its_own_metric() {
        let am = |t| Method::Amulet {
            params: AmuletParams { iterations: t, ..AmuletParams::default() },
            game: Game::ClosedForm,
        };
        let methods = vec![Method::Base, Method::Pref, Method::LinearAlignment { ratio: 2.0 }, am(60)];
        let cfg = EvalConfig {
            preferences: vec!["concise".into(), "formal".into()],
            methods: methods.clone(),
            amulet: AmuletParams::default(),
            sweep_iterations: vec![1, 60],
            sweep_preferences: vec!["concise".into()],
            max_tokens: 16,
            placement: Placement::System,
        };
        let mut records = Vec::new();
        for i in 0..6 {
            records.push(rec(i, None, &Method::Base, 50, "a b c"));
            for p in ["concise", "formal"] {
                records.push(rec(i, Some(p), &Method::Pref, 40, "a b"));
                records.push(rec(i, Some(p), &methods[2], 30, "a b"));
                records.push(rec(i, Some(p), &am(60), 10 + i, "a"));
            }
            records.push(rec(i, Some("concise"), &am(1), 35, "a"));
        }
        let info =
            RunInfo { command: "amulet eval".into(), prompts_source: "p.jsonl".into(), model: "m".into(), wall_s: 1.0 };
        let (md, charts) = build(&records, &cfg, &info);
        assert!(md.contains("| concise | amulet (T=60, k=4.65) | words 12.5 ["), "{md}");
        assert!(md.contains("amulet **beats** base (win rate 1.00"), "{md}");
        assert!(md.contains("No offline signal for: formal"), "{md}");
        assert!(md.contains("| concise | 1 | 0.952 | words 35.0 [35.0, 35.0]"), "{md}");
        let names: Vec<&str> = charts.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["concise.svg", "sweep-concise.svg"]);
        assert_eq!(file_stem(" Explain like I'm 5! "), "explain-like-i-m-5");
    }

    #[test]
    fn reports_name_files_relative_to_the_repository_or_by_file_name() {
        let root = Path::new("/repo");
        let at = |p: &str, cwd: &str| recorded_path(Path::new(p), Path::new(cwd), root);
        assert_eq!(at("data/prompts/personal.jsonl", "/repo"), "data/prompts/personal.jsonl");
        assert_eq!(at("../data/prompts/personal.jsonl", "/repo/crate"), "data/prompts/personal.jsonl");
        assert_eq!(at("./target/release/amulet", "/repo"), "target/release/amulet");
        assert_eq!(at("/repo/docs/eval/personal", "/elsewhere"), "docs/eval/personal");
        assert_eq!(at("/repo", "/repo"), ".");
        // Outside the repository: the file name only.
        assert_eq!(at("../elsewhere/data/prompts/personal.jsonl", "/repo"), "personal.jsonl");
        assert_eq!(at("/opt/someone/prompts.jsonl", "/repo"), "prompts.jsonl");
        assert_eq!(at("/repository/p.jsonl", "/repo"), "p.jsonl");

        let args: Vec<String> = [
            "/repo/target/release/amulet",
            "eval",
            "--prompts",
            "/srv/someone/data/personal.jsonl",
            "--limit",
            "14",
            "--preferences",
            "concise,a/b",
            "--out=/repo/docs/eval/personal",
            "--model",
            "models/cache/m.gguf",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            recorded_command(&args, &["--prompts", "--out", "--model"], Path::new("/repo"), root),
            "target/release/amulet eval --prompts personal.jsonl --limit 14 --preferences concise,a/b \
             --out=docs/eval/personal --model models/cache/m.gguf"
        );
        let bare: Vec<String> = vec!["amulet".into(), "eval".into()];
        assert_eq!(recorded_command(&bare, &[], Path::new("/repo/crate"), root), "amulet eval");
    }
}
