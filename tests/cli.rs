//! End-to-end tests of the `amulet` binary on the real default model and on fixtures.

use std::path::PathBuf;
use std::process::{Command, Output};

fn model() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/cache/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(p.exists(), "missing prerequisite: {} (run models/fetch.sh; ./build.sh test does)", p.display());
    p
}

fn amulet(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_amulet")).args(args).env("RAYON_NUM_THREADS", "1").output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn generate_json_reports_text_tokens_and_timings() {
    let m = model();
    let out = amulet(&[
        "generate",
        "--model",
        m.to_str().unwrap(),
        "--preference",
        "concise",
        "--max-tokens",
        "12",
        "--top-logprobs",
        "3",
        "--json",
        "What is the capital of France?",
    ]);
    let v = json(&out);
    assert!(v["text"].as_str().unwrap().contains("Paris"), "{v}");
    assert!(!v["tokens"].as_array().unwrap().is_empty());
    assert!(["stop", "length"].contains(&v["finish_reason"].as_str().unwrap()));
    for k in ["load_ms", "prefill_ms", "decode_tokens_per_s"] {
        assert!(v["timings"][k].as_f64().unwrap() > 0.0, "{k}");
    }
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), v["tokens"].as_array().unwrap().len());
    for d in ["base", "pref", "combined"] {
        assert_eq!(steps[0][d].as_array().unwrap().len(), 3, "{d}");
    }
}

#[test]
fn generate_streams_the_text_it_reports() {
    let m = model();
    let args = ["generate", "--model", m.to_str().unwrap(), "--method", "base", "--max-tokens", "12"];
    let q = "What is the capital of France?";
    // Without XDG_RUNTIME_DIR, as on a fresh machine: probing the GPU must stay quiet.
    let streamed = Command::new(env!("CARGO_BIN_EXE_amulet"))
        .args([&args[..], &[q]].concat())
        .env("RAYON_NUM_THREADS", "1")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    assert!(streamed.status.success(), "{}", String::from_utf8_lossy(&streamed.stderr));
    let v = json(&amulet(&[&args[..], &["--json", q]].concat()));
    let text = String::from_utf8_lossy(&streamed.stdout);
    assert_eq!(text.trim_end(), v["text"].as_str().unwrap().trim_end(), "streamed text == --json text");
    assert!(text.contains("Paris"), "{text}");
    assert_eq!(v["method"], "base");
    assert_eq!(v["model"]["architecture"], "llama");
    assert_eq!(v["model"]["quantization"], "Q4_1");
    assert!(v["usage"]["prompt_tokens_pref"] == 0 && v["usage"]["prompt_tokens_base"].as_u64().unwrap() > 5, "{v}");
    assert!(String::from_utf8_lossy(&streamed.stderr).trim().is_empty(), "a good run prints nothing on stderr");
}

#[test]
fn bad_options_and_files_exit_with_a_typed_message_naming_the_option() {
    let m = model();
    let m = m.to_str().unwrap();
    for (args, code, named) in [
        (vec!["generate", "--model", m, "--method", "sideways", "hi"], "BAD_OPTION", "--method"),
        (vec!["generate", "--model", m, "--alpha", "NaN", "--preference", "x", "hi"], "BAD_OPTION", "alpha"),
        (vec!["generate", "--model", m, "--top-p", "1.5", "--preference", "x", "hi"], "BAD_OPTION", "top_p"),
        (vec!["generate", "--model", m, "--placement", "middle", "hi"], "BAD_OPTION", "--placement"),
        (vec!["generate", "--model", m, "--preference", " ", "hi"], "BAD_OPTION", "preference"),
        (vec!["generate", "--model", m, "--temprature", "1", "hi"], "BAD_OPTION", "--temprature"),
        (vec!["bench", "--model", m, "--device", "cpu,tpu"], "BAD_OPTION", "--device"),
        (vec!["eval", "--model", m, "--prompts", "x.jsonl", "--methods", "base,up"], "BAD_OPTION", "--methods"),
        (vec!["fixture", "--quant", "q3", "out.gguf"], "BAD_OPTION", "--quant"),
        (vec!["fixture", "--arch", "qwen2", "--shape", "smollm2-135m", "out.gguf"], "BAD_OPTION", "shape"),
        (vec!["generate", "--model", "/nonexistent.gguf", "hi"], "IO", "/nonexistent.gguf"),
    ] {
        let out = amulet(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("error [{code}]")), "{args:?}: {err}");
        assert!(err.contains(named), "{args:?} should name {named}: {err}");
    }
    let dir = std::env::temp_dir().join(format!("amulet-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.gguf");
    std::fs::write(&bad, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    let out = amulet(&["generate", "--model", bad.to_str().unwrap(), "hi"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("error [BAD_MODEL]"));
}

#[test]
fn chat_turns_reuse_the_history_and_commands_work() {
    use std::io::Write;
    let m = model();
    let mut child = Command::new(env!("CARGO_BIN_EXE_amulet"))
        .args(["chat", "--model", m.to_str().unwrap(), "--max-tokens", "12", "--device", "cpu"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = "What is the capital of France?\n/preference concise\nAnd of Italy?\n/method sideways\n/quit\n";
    child.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let turns: Vec<&str> = err.lines().filter(|l| l.starts_with("[turn ")).collect();
    assert_eq!(turns.len(), 2, "{err}");
    assert!(turns[0].contains(" 0 reused"), "{}", turns[0]);
    // Turn 2 adds a preference: the base context comes back from turn 1.
    let reused: usize = turns[1].split(", ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(reused > 20, "{}", turns[1]);
    assert!(err.contains("(preference: concise)"));
    assert!(err.contains("error [BAD_OPTION]"), "a bad /method is reported and the chat goes on: {err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Paris"));
}

#[test]
fn help_lists_the_choices() {
    let out = amulet(&["generate", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for choice in ["base, pref, la, amulet", "auto, cpu, webgpu", "system, user", "- iterative:", "- closed-form:"] {
        assert!(help.contains(choice), "generate --help should list [{choice}]:\n{help}");
    }
}

#[test]
fn fixtures_are_written_and_run() {
    let dir = std::env::temp_dir().join(format!("amulet-fixture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for arch in ["llama", "qwen2", "gemma3"] {
        let f = dir.join(format!("{arch}.gguf"));
        let out = amulet(&["fixture", "--arch", arch, "--quant", "q8_0", f.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v = json(&amulet(&[
            "generate",
            "--model",
            f.to_str().unwrap(),
            "--preference",
            "terse",
            "--max-tokens",
            "5",
            "--json",
            "hello",
        ]));
        assert_eq!(v["model"]["architecture"], arch);
    }
}

#[test]
fn bench_json_has_both_methods_thread_counts_and_backends() {
    let m = model();
    let v = json(&amulet(&[
        "bench",
        "--model",
        m.to_str().unwrap(),
        "--tokens",
        "8",
        "--runs",
        "1",
        "--threads",
        "1,2",
        "--prefill-tokens",
        "64",
        "--json",
    ]));
    let configs = v["configs"].as_array().unwrap();
    assert_eq!(configs.len(), 2, "one config per thread count: {v}");
    for (c, threads) in configs.iter().zip([1, 2]) {
        assert_eq!(c["device"], "cpu");
        assert_eq!(c["threads"], threads);
        let b = c["base"]["decode_tokens_per_s"].as_f64().unwrap();
        let a = c["amulet"]["decode_tokens_per_s"].as_f64().unwrap();
        assert!(b > 0.0 && a > 0.0);
        assert!((c["ratio"].as_f64().unwrap() - a / b).abs() < 1e-9);
        assert!(c["long_prefill"]["prefill_ms"].as_f64().unwrap() > 0.0);
        // The working-set probe's share: weights, keys and values a token x base tok/s over it.
        let reads = v["weight_bytes_per_token"].as_f64().unwrap() + v["kv_bytes_per_token"].as_f64().unwrap();
        let share = reads * b / (c["working_set_gb_s"].as_f64().unwrap() * 1e9);
        assert!((c["base_working_set_fraction"].as_f64().unwrap() - share).abs() < 1e-9 * share, "{c}");
    }
    assert!(v["long_prompt_tokens"].as_u64().unwrap() >= 64);
    // SmolLM2: 30 layers, 3 kv heads of 64, f32 caches; the 8 tokens see prompt + 1 ..= prompt + 8
    // positions (a mean of prompt + 4.5).
    let prompt = v["prompt_token_ids"].as_array().unwrap().len() as u64;
    assert_eq!(v["kv_bytes_per_token"].as_u64().unwrap(), 30 * 2 * 3 * 64 * 4 * (8 * prompt + 36) / 8);
    // Both backends in one run (a tiny fixture: lavapipe runs SmolLM2 at about a token a second).
    let f = fixture("llama");
    let v = json(&amulet(&[
        "bench",
        "--model",
        f.to_str().unwrap(),
        "--device",
        "cpu,webgpu",
        "--prompt",
        "hi",
        "--tokens",
        "8",
        "--runs",
        "1",
        "--json",
    ]));
    let backends = v["backends"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    for ((b, c), device) in backends.iter().zip(v["configs"].as_array().unwrap()).zip(["cpu", "webgpu"]) {
        assert_eq!(b["device"], device);
        assert_eq!(c["device"], device);
        assert!(c["base"]["decode_tokens_per_s"].as_f64().unwrap() > 0.0);
        assert!(c["amulet"]["ttft_ms"].as_f64().unwrap() > 0.0);
    }
}

fn fixture(arch: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("amulet-cli-fixture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join(format!("{arch}.gguf"));
    if !f.exists() {
        let out = amulet(&["fixture", "--arch", arch, "--quant", "q4_1", f.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    f
}

#[test]
fn device_choice_is_reported_and_checked() {
    let m = fixture("gemma3");
    let v = json(&amulet(&[
        "generate",
        "--model",
        m.to_str().unwrap(),
        "--device",
        "webgpu",
        "--preference",
        "terse",
        "--max-tokens",
        "3",
        "--json",
        "hello",
    ]));
    assert_eq!(v["model"]["device"], "webgpu");
    assert!(v["model"]["device_reason"].as_str().unwrap().contains("WebGPU on "));
    // lavapipe is a software adapter: auto passes it over for the CPU and says why.
    let v = json(&amulet(&[
        "generate",
        "--model",
        m.to_str().unwrap(),
        "--method",
        "base",
        "--max-tokens",
        "3",
        "--json",
        "hello",
    ]));
    assert_eq!(v["model"]["device"], "cpu");
    assert!(!v["model"]["device_reason"].as_str().unwrap().is_empty());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_amulet"))
        .args(["generate", "--model", m.to_str().unwrap(), "--device", "tpu", "hello"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("device"));
}
