//! End-to-end test of `amulet eval` on the real default model: a tiny run must write a
//! report whose files exist and parse.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn model() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/cache/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "run models/fetch.sh first (./build.sh test does)");
    p
}

fn amulet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amulet")).args(args).env("RAYON_NUM_THREADS", "1").output().unwrap()
}

/// A fresh folder under cargo's per-target temporary directory.
fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("eval-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_small_run_writes_a_report_that_parses() {
    let m = model();
    let dir = scratch("run");
    let prompts = dir.join("prompts.jsonl");
    std::fs::write(
        &prompts,
        "{\"id\": 0, \"question\": \"What is the capital of France?\"}\n\
         {\"id\": \"b\", \"question\": \"How can I sleep better?\"}\n\
         {\"id\": 2, \"question\": \"Not used: beyond the limit.\"}\n",
    )
    .unwrap();
    let out_dir = dir.join("out");
    let out = amulet(&[
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--prompts",
        prompts.to_str().unwrap(),
        "--limit",
        "2",
        "--max-tokens",
        "8",
        "--preferences",
        "concise",
        "--sweep-iterations",
        "1,60",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));

    let jsonl = std::fs::read_to_string(out_dir.join("responses.jsonl")).unwrap();
    let rows: Vec<serde_json::Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // Per prompt: base, pref, la, amulet (T=60, doubling as a sweep point) and amulet T=1.
    assert_eq!(rows.len(), 2 * 5, "{jsonl}");
    for r in &rows {
        let tokens = r["tokens"].as_u64().unwrap();
        assert!((1..=8).contains(&tokens), "{r}");
        let m = &r["metrics"];
        assert!(m["perplexity"].as_f64().unwrap() >= 1.0, "{r}");
        assert!(m["vader_compound"].as_f64().unwrap().abs() <= 1.0, "{r}");
        for k in ["words", "distinct_1", "distinct_2"] {
            assert!(m[k].is_number(), "{k}: {r}");
        }
        let method = r["method"].as_str().unwrap();
        assert_eq!(r["preference"].is_null(), method == "base", "{r}");
    }
    assert_eq!(rows.iter().filter(|r| r["params"]["iterations"] == 1).count(), 2);
    assert_eq!(rows[0]["prompt_id"], 0);

    let summary = std::fs::read_to_string(out_dir.join("summary.md")).unwrap();
    assert!(summary.contains("| concise | amulet (T=60, k=4.65) | words "), "{summary}");
    assert!(summary.contains("## Win rate of amulet") && summary.contains("## Amulet strength sweep"), "{summary}");
    for svg in ["concise.svg", "sweep-concise.svg"] {
        let s = std::fs::read_to_string(out_dir.join(svg)).unwrap();
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"), "{svg}");
        assert!(summary.contains(&format!("]({svg})")), "{svg} not linked");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_bad_prompt_line_is_named_before_the_model_loads() {
    let dir = scratch("bad");
    let prompts = dir.join("bad.jsonl");
    std::fs::write(&prompts, "{\"id\": 0, \"question\": \"ok\"}\n{\"id\": 1, \"q\": \"typo\"}\n").unwrap();
    // A model path that does not exist: the prompt error must come first.
    let out = amulet(&["eval", "--model", "/nonexistent.gguf", "--prompts", prompts.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BAD_OPTION") && err.contains("line 2") && err.contains("question"), "{err}");

    let out = amulet(&[
        "eval",
        "--model",
        "/nonexistent.gguf",
        "--prompts",
        prompts.to_str().unwrap(),
        "--methods",
        "base,sideways",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("sideways"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The prefix-tree perplexity pass on the real model: the base method's greedy response
/// scores exactly what generation saw (the top-1 base probability at each step), and a
/// batch with shared prefixes, duplicates and an empty response matches scoring each alone.
#[test]
fn perplexity_under_the_base_context_matches_generation() {
    use amulet::align::Method;
    use amulet::engine::{Engine, GenerateRequest};
    use amulet::eval::response_perplexities;
    use amulet::prompt::Placement;

    let bytes = std::fs::read(model()).unwrap();
    let mut e = Engine::load(&bytes, |_, _| {}).unwrap();
    let q = "How can I sleep better?";
    let mut req = GenerateRequest::new(q);
    req.methods = vec![Method::Base];
    req.max_tokens = 12;
    req.top_logprobs = 1;
    let out = e.generate(&req, &mut |_| true).unwrap();
    let c = &out.completions[0];
    let nll: f64 = c.steps.iter().map(|s| -(s.combined[0].prob as f64).ln()).sum::<f64>() / c.steps.len() as f64;
    let want = nll.exp();

    let a = c.tokens.clone();
    let b: Vec<u32> = a[..5].iter().copied().chain([a[5] + 1, a[6]]).collect();
    let batch = vec![a.clone(), b.clone(), Vec::new(), a.clone(), a[..3].to_vec()];
    let together = response_perplexities(&mut e, q, Placement::System, &batch).unwrap();
    assert!((together[0].unwrap() / want - 1.0).abs() < 1e-3, "{together:?} vs {want}");
    assert_eq!(together[2], None);
    assert_eq!(together[0], together[3]);
    for (i, r) in batch.iter().enumerate().filter(|(_, r)| !r.is_empty()) {
        let alone = response_perplexities(&mut e, q, Placement::System, std::slice::from_ref(r)).unwrap()[0].unwrap();
        assert!((together[i].unwrap() / alone - 1.0).abs() < 1e-4, "response {i}: {together:?} vs {alone}");
    }
    // Nothing leaks: a later request still runs.
    assert!(e.generate(&req, &mut |_| true).is_ok());
}
