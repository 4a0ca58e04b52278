//! Offline evaluation (`amulet eval`): runs a prompt set through base, pref, LA and Amulet,
//! scores every response with the signals of docs/method.md §6 and writes a report.
//!
//! Speed comes from the engine's compare mode: every method of one (prompt, preference)
//! decodes as ONE batch over a shared prompt prefix, base runs once per prompt (it does not
//! depend on the preference), and the perplexity of all responses to a prompt is computed
//! in one lock-step batch over a shared base-context cache.

pub mod metrics;
pub mod prompts;
pub mod report;
pub mod svg;
pub mod vader;

use crate::align::{closed_form_strength, log_softmax, AmuletParams, Game, Method};
use crate::engine::{Engine, GenerateRequest};
use crate::error::{AmuletError, Result};
use crate::model::{LanguageModel, SeqId};
use crate::prompt::{validate_preference, Placement};

pub use metrics::Metrics;
pub use prompts::{load_prompts, parse_prompts, PromptItem};

/// What one evaluation run generates.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    pub preferences: Vec<String>,
    /// The compared methods, in report order (any of base, pref, la, amulet).
    pub methods: Vec<Method>,
    /// Parameters of the Amulet game; the sweep varies only T.
    pub amulet: AmuletParams,
    /// Values of T for the strength sweep (empty: no sweep).
    pub sweep_iterations: Vec<u32>,
    /// Preferences the sweep runs for (those not in `preferences` are ignored).
    pub sweep_preferences: Vec<String>,
    pub max_tokens: usize,
    pub placement: Placement,
}

impl EvalConfig {
    pub fn validate(&self) -> Result<()> {
        if self.preferences.is_empty() {
            return Err(AmuletError::bad_option("preferences", "needs at least one preference"));
        }
        for (i, p) in self.preferences.iter().enumerate() {
            validate_preference(p)?;
            // A repeat would pair each prompt's responses twice in the report.
            if self.preferences[..i].iter().any(|o| o.trim().eq_ignore_ascii_case(p.trim())) {
                return Err(AmuletError::bad_option("preferences", format!("`{}` is listed twice", p.trim())));
            }
        }
        if self.methods.is_empty() {
            return Err(AmuletError::bad_option("methods", "needs at least one method"));
        }
        for m in &self.methods {
            m.validate()?;
        }
        for (i, m) in self.methods.iter().enumerate() {
            if self.methods[..i].iter().any(|o| o.name() == m.name()) {
                return Err(AmuletError::bad_option("methods", format!("`{}` is listed twice", m.name())));
            }
        }
        for &t in &self.sweep_iterations {
            AmuletParams { iterations: t, ..self.amulet }.validate().map_err(|e| match e {
                AmuletError::BadOption { message, .. } => AmuletError::bad_option("sweep-iterations", message),
                e => e,
            })?;
        }
        self.amulet.validate()?;
        if self.max_tokens == 0 {
            return Err(AmuletError::bad_option("max_tokens", "must be at least 1"));
        }
        Ok(())
    }

    /// Sweep preferences that are also evaluated, in `preferences` order.
    pub fn swept_preferences(&self) -> Vec<&str> {
        if self.sweep_iterations.is_empty() {
            return Vec::new();
        }
        self.preferences
            .iter()
            .filter(|p| self.sweep_preferences.iter().any(|s| s.trim().eq_ignore_ascii_case(p.trim())))
            .map(|p| p.as_str())
            .collect()
    }

    /// The Amulet iterations of the main comparison (None when amulet is not compared).
    pub fn main_iterations(&self) -> Option<u32> {
        self.methods.iter().find_map(|m| match m {
            Method::Amulet { params, .. } => Some(params.iterations),
            _ => None,
        })
    }
}

/// The parameters a response was generated with (only those of its method).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MethodParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lambda: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterations: Option<u32>,
    /// The strength of the extrapolation z_p + k·(z_p − z_b): k for amulet, r for la.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
}

impl MethodParams {
    pub fn of(m: &Method) -> Self {
        let mut p = MethodParams { alpha: None, lambda: None, eta: None, iterations: None, k: None, ratio: None };
        match m {
            Method::Base | Method::Pref => {}
            Method::LinearAlignment { ratio } => p.ratio = Some(*ratio),
            Method::Amulet { params, .. } => {
                p.alpha = Some(params.alpha);
                p.lambda = Some(params.lambda);
                p.eta = Some(params.eta);
                p.iterations = Some(params.iterations);
                p.k = Some(closed_form_strength(params));
            }
        }
        p
    }
}

/// One scored response: a line of responses.jsonl.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Record {
    pub prompt_id: serde_json::Value,
    /// Position in the (limited) prompt set, which pairs responses across methods.
    pub prompt_index: usize,
    pub question: String,
    /// None for base: its response does not depend on the preference and serves them all.
    pub preference: Option<String>,
    pub method: String,
    pub params: MethodParams,
    pub text: String,
    /// Generated tokens, including the end-of-turn token when the model stopped.
    pub tokens: usize,
    pub finish_reason: String,
    pub metrics: Metrics,
}

/// Work done so far, for a progress bar: one unit per request or perplexity pass.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
    pub prompt: usize,
    pub prompts: usize,
    /// Tokens decoded so far, summed over methods.
    pub generated_tokens: usize,
}

/// The method lists of the requests for one prompt: (preference, methods), base riding
/// along with the first preference, sweep variants with the preferences they are run for.
pub fn plan_requests(cfg: &EvalConfig) -> Vec<(String, Vec<Method>)> {
    let swept = cfg.swept_preferences();
    let main_t = cfg.main_iterations();
    let mut plan = Vec::new();
    for (pi, pref) in cfg.preferences.iter().enumerate() {
        let mut ms: Vec<Method> =
            cfg.methods.iter().copied().filter(|m| pi == 0 || !matches!(m, Method::Base)).collect();
        if swept.contains(&pref.as_str()) {
            for &t in &cfg.sweep_iterations {
                if main_t == Some(t)
                    || ms.iter().any(|m| matches!(m, Method::Amulet { params, .. } if params.iterations == t))
                {
                    continue; // the main amulet response doubles as this sweep point
                }
                ms.push(Method::Amulet {
                    params: AmuletParams { iterations: t, ..cfg.amulet },
                    game: Game::ClosedForm,
                });
            }
        }
        if !ms.is_empty() {
            plan.push((pref.clone(), ms));
        }
    }
    plan
}

/// Generates and scores every response. Greedy decoding, as in the paper.
pub fn run(
    engine: &mut Engine,
    prompts: &[PromptItem],
    cfg: &EvalConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Record>> {
    cfg.validate()?;
    let plan = plan_requests(cfg);
    let per_prompt = plan.len() + 1;
    let mut p =
        Progress { done: 0, total: per_prompt * prompts.len(), prompt: 0, prompts: prompts.len(), generated_tokens: 0 };
    progress(p);
    let mut records = Vec::new();
    for (index, item) in prompts.iter().enumerate() {
        p.prompt = index;
        let first = records.len();
        // Token ids of this prompt's responses, in record order, for the perplexity pass.
        let mut token_lists: Vec<Vec<u32>> = Vec::new();
        for (pref, methods) in &plan {
            let mut req = GenerateRequest::new(&item.question);
            req.preference = Some(pref.clone());
            req.placement = cfg.placement;
            req.methods = methods.clone();
            req.max_tokens = cfg.max_tokens;
            let out = engine.generate(&req, &mut |_| true)?;
            for (m, c) in methods.iter().zip(out.completions) {
                p.generated_tokens += c.tokens.len();
                records.push(Record {
                    prompt_id: item.id.clone(),
                    prompt_index: index,
                    question: item.question.clone(),
                    preference: (!matches!(m, Method::Base)).then(|| pref.clone()),
                    method: m.name().to_string(),
                    params: MethodParams::of(m),
                    metrics: metrics::text_metrics(&c.text),
                    text: c.text,
                    tokens: c.tokens.len(),
                    finish_reason: c.finish_reason.as_str().to_string(),
                });
                token_lists.push(c.tokens);
            }
            p.done += 1;
            progress(p);
        }
        let ppl = response_perplexities(engine, &item.question, cfg.placement, &token_lists)?;
        for (r, x) in records[first..].iter_mut().zip(ppl) {
            r.metrics.perplexity = x;
        }
        p.done += 1;
        progress(p);
    }
    Ok(records)
}

/// Perplexity of each response under the BASE context of `question` (the model's own
/// judgement of fluency, unaffected by the preference): log p(y_i | x_b, y_<i) for every
/// token. The responses to one prompt often share their opening words, and some are
/// identical, so they are walked as a prefix tree: each shared prefix runs once, all
/// branches advance together one token a step, and a branch forks the cache where the
/// responses diverge.
pub fn response_perplexities(
    engine: &mut Engine,
    question: &str,
    placement: Placement,
    responses: &[Vec<u32>],
) -> Result<Vec<Option<f64>>> {
    let mut req = GenerateRequest::new(question);
    req.placement = placement;
    let (base_ids, _) = engine.contexts(&req)?;
    let context = engine.info().context_length;
    if let Some(long) = responses.iter().map(|u| u.len()).max() {
        if base_ids.len() + long > context {
            return Err(AmuletError::ContextOverflow(format!(
                "prompt ({} tokens) plus response ({long}) exceed the context length {context}",
                base_ids.len()
            )));
        }
    }
    let model = engine.model_mut();
    let mut logprobs: Vec<Vec<f64>> = responses.iter().map(|r| Vec::with_capacity(r.len())).collect();
    let mut owned: Vec<SeqId> = Vec::new();
    let walked = walk_prefix_tree(model, &base_ids, responses, &mut logprobs, &mut owned);
    // On error some sequences are still live.
    for s in owned {
        model.free_sequence(s);
    }
    walked?;
    Ok(logprobs.iter().map(|lp| metrics::perplexity(lp)).collect())
}

/// Fills `out[r]` with the log-probability of every token of `seqs[r]` after `prompt`.
/// `owned` always lists the live sequences this created, so the caller can free them.
fn walk_prefix_tree(
    model: &mut dyn LanguageModel,
    prompt: &[u32],
    seqs: &[Vec<u32>],
    out: &mut [Vec<f64>],
    owned: &mut Vec<SeqId>,
) -> Result<()> {
    let members: Vec<usize> = (0..seqs.len()).filter(|&r| !seqs[r].is_empty()).collect();
    if members.is_empty() {
        return Ok(());
    }
    let root = model.new_sequence();
    owned.push(root);
    let first = model.forward(&[(root, prompt)])?.pop().ok_or_else(|| AmuletError::Compute("no logits".into()))?;
    // Each branch: a sequence holding the prompt and the first `depth` tokens its members
    // share, with the logits for token `depth`.
    let mut level: Vec<(SeqId, Vec<usize>, Vec<f32>)> = vec![(root, members, first)];
    let mut depth = 0;
    while !level.is_empty() {
        let mut next: Vec<(SeqId, Vec<usize>, u32)> = Vec::new();
        for (seq, members, logits) in level {
            let lp = log_softmax(&logits);
            // Members that go on, grouped by their next token (first-seen order).
            let mut groups: Vec<(u32, Vec<usize>)> = Vec::new();
            for r in members {
                let t = seqs[r][depth];
                out[r].push(lp[t as usize] as f64);
                if seqs[r].len() > depth + 1 {
                    match groups.iter_mut().find(|g| g.0 == t) {
                        Some(g) => g.1.push(r),
                        None => groups.push((t, vec![r])),
                    }
                }
            }
            if groups.is_empty() {
                model.free_sequence(seq);
                owned.retain(|&s| s != seq);
                continue;
            }
            for (gi, (t, ms)) in groups.into_iter().enumerate() {
                let s = if gi == 0 {
                    seq
                } else {
                    // Forked before `seq` takes its next token: the copy ends at the fork point.
                    let f = model.fork_sequence(seq).ok_or_else(|| AmuletError::Compute("a cache vanished".into()))?;
                    owned.push(f);
                    f
                };
                next.push((s, ms, t));
            }
        }
        if next.is_empty() {
            break;
        }
        let tokens: Vec<[u32; 1]> = next.iter().map(|n| [n.2]).collect();
        let batch: Vec<(SeqId, &[u32])> = next.iter().zip(&tokens).map(|(n, t)| (n.0, &t[..])).collect();
        let logits = model.forward(&batch)?;
        level = next.into_iter().zip(logits).map(|((s, ms, _), l)| (s, ms, l)).collect();
        depth += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> EvalConfig {
        let a = AmuletParams::default();
        EvalConfig {
            preferences: vec!["creative".into(), "concise".into()],
            methods: vec![
                Method::Base,
                Method::Pref,
                Method::LinearAlignment { ratio: 2.0 },
                Method::Amulet { params: a, game: Game::ClosedForm },
            ],
            amulet: a,
            sweep_iterations: vec![1, 60],
            sweep_preferences: vec!["Concise".into(), "uplifting".into()],
            max_tokens: 8,
            placement: Placement::System,
        }
    }

    #[test]
    fn base_runs_once_per_prompt_and_the_sweep_reuses_the_main_amulet() {
        let plan = plan_requests(&cfg());
        let names = |ms: &[Method]| ms.iter().map(|m| m.name()).collect::<Vec<_>>();
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[0].0, "creative");
        assert_eq!(names(&plan[0].1), ["base", "pref", "la", "amulet"]);
        assert_eq!(plan[1].0, "concise");
        assert_eq!(names(&plan[1].1), ["pref", "la", "amulet", "amulet"]);
        assert!(matches!(plan[1].1[3], Method::Amulet { params, .. } if params.iterations == 1));
        assert_eq!(cfg().swept_preferences(), vec!["concise"]);
        // Base alone: one request per prompt, none for the other preferences.
        let only_base = EvalConfig { methods: vec![Method::Base], sweep_iterations: vec![], ..cfg() };
        assert_eq!(plan_requests(&only_base).len(), 1);
    }

    fn bad_option(c: EvalConfig) -> String {
        match c.validate() {
            Err(AmuletError::BadOption { option, .. }) => option,
            other => panic!("expected a bad option, got {other:?}"),
        }
    }

    #[test]
    fn bad_configurations_name_the_option() {
        assert!(cfg().validate().is_ok());
        assert_eq!(bad_option(EvalConfig { preferences: vec![], ..cfg() }), "preferences");
        assert_eq!(
            bad_option(EvalConfig { preferences: vec!["concise".into(), " CONCISE".into()], ..cfg() }),
            "preferences"
        );
        assert_eq!(bad_option(EvalConfig { methods: vec![Method::Pref, Method::Pref], ..cfg() }), "methods");
        assert_eq!(bad_option(EvalConfig { sweep_iterations: vec![0], ..cfg() }), "sweep-iterations");
        assert_eq!(bad_option(EvalConfig { max_tokens: 0, ..cfg() }), "max_tokens");
    }
}
