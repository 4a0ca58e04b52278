//! `amulet bench`: base-only vs amulet decoding on the same prompt, and the prefill of a long
//! prompt, interleaved runs, medians with min-max, on one or several backends and CPU thread
//! counts in the same run, next to a memory-read bandwidth probe at the same thread counts (the
//! bound a decode step that streams every weight once cannot beat). Speed is reported, never
//! asserted: these machines are noisy.

use std::path::PathBuf;

use amulet::align::Method;
use amulet::engine::{Engine, GenerateOutput, GenerateRequest};
use amulet::model::DeviceChoice;
use amulet::{AmuletError, Result};
use clap::Args;

#[derive(Args)]
pub struct BenchArgs {
    #[arg(long)]
    model: Option<PathBuf>,
    /// Backends to measure, each in turn (comma-separated)
    #[arg(long, value_enum, value_delimiter = ',', default_value = "auto")]
    device: Vec<DeviceChoice>,
    /// CPU thread counts to compare, interleaved (comma-separated; 0: one per core)
    #[arg(long, value_delimiter = ',', default_value = "0")]
    threads: Vec<usize>,
    /// New tokens per run
    #[arg(long, default_value_t = 128)]
    tokens: usize,
    /// Runs of each method (interleaved: base, amulet, base, amulet, ...)
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value = "How can I improve my eating habits without compromising on taste?")]
    prompt: String,
    #[arg(long, default_value = "concise")]
    preference: String,
    /// Also time the prefill of a prompt of about this many tokens (base context; 0: skip)
    #[arg(long, default_value_t = 0)]
    prefill_tokens: usize,
    /// Also time a conversation's next turn after a history of about this many tokens: on the
    /// engine that served the history (its caches kept) against a fresh one (0: skip)
    #[arg(long, default_value_t = 0)]
    history_tokens: usize,
    /// Print one JSON object instead of the table
    #[arg(long)]
    json: bool,
    /// Also write the JSON object to this file
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(serde::Serialize)]
struct Stats {
    decode_tokens_per_s: f64,
    min: f64,
    max: f64,
    prefill_ms: f64,
    prefill_tokens_per_s: f64,
    /// Prefill plus the first decode step.
    ttft_ms: f64,
    runs: Vec<f64>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn stats(outs: &[GenerateOutput]) -> Stats {
    let runs: Vec<f64> = outs.iter().map(|o| o.timings.decode_tokens_per_s).collect();
    let t = |f: &dyn Fn(&GenerateOutput) -> f64| median(outs.iter().map(f).collect());
    Stats {
        decode_tokens_per_s: median(runs.clone()),
        min: runs.iter().copied().fold(f64::INFINITY, f64::min),
        max: runs.iter().copied().fold(0.0, f64::max),
        prefill_ms: t(&|o| o.timings.prefill_ms),
        prefill_tokens_per_s: t(&|o| o.timings.prefill_tokens as f64 / (o.timings.prefill_ms / 1e3)),
        ttft_ms: t(&|o| o.timings.prefill_ms + o.timings.decode_ms / o.timings.decode_steps.max(1) as f64),
        runs,
    }
}

/// Peak resident memory of this process (VmHWM), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// What one decode step reads from memory, from the GGUF's header: the weights (every tensor
/// once, except the token embedding table when the model has its own output projection: then
/// only one row of it is read) and the shape of the key and value caches. None when the file
/// cannot be read or is one part of a split model.
struct Reads {
    weights: u64,
    config: amulet::model::ModelConfig,
}

fn model_reads(path: &std::path::Path) -> Option<Reads> {
    use std::io::Read;
    let file_len = std::fs::metadata(path).ok()?.len() as usize;
    let mut prefix = Vec::new();
    let mut want = 8usize << 20;
    let gguf = loop {
        prefix.clear();
        std::fs::File::open(path).ok()?.take(want.min(file_len) as u64).read_to_end(&mut prefix).ok()?;
        match amulet::gguf::Gguf::parse_prefix(&prefix, file_len).ok()? {
            Some(g) => break g,
            None if want < file_len => want *= 2,
            None => return None,
        }
    };
    if matches!(gguf.opt_u32("split.count"), Ok(Some(n)) if n > 1) {
        return None;
    }
    let tied = gguf.tensor_info("output.weight").is_none();
    let weights =
        gguf.tensors.iter().filter(|t| tied || t.name != "token_embd.weight").map(|t| t.byte_len as u64).sum();
    Some(Reads { weights, config: amulet::model::ModelConfig::from_gguf(&gguf).ok()? })
}

/// Bytes of keys and values (f32 caches) the attention of a decode step reads, the mean over
/// the steps that generate `tokens` after a `prompt`-token context: each layer reads both
/// caches over every position so far (over its window, in a sliding-window layer).
fn kv_bytes_per_token(c: &amulet::model::ModelConfig, prompt: usize, tokens: usize) -> u64 {
    let steps = tokens.max(1);
    let total: usize = (0..steps)
        .map(|t| {
            let seen = prompt + t + 1;
            (0..c.n_layer).map(|l| 2 * c.kv_dim() * 4 * c.layer_window(l).map_or(seen, |w| seen.min(w))).sum::<usize>()
        })
        .sum();
    (total / steps) as u64
}

/// GB/s of a plain sum over `buf` split over the CPU pool's current threads (best of 3): what
/// those threads can stream, the bound of a decode step that reads every weight once.
fn read_bandwidth(buf: &[u64]) -> f64 {
    const CHUNK: usize = 1 << 16; // u64s per split item: 512 KiB
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        amulet::backend::pool::split(buf.len() / CHUNK, 1, |r| {
            let s = buf[r.start * CHUNK..r.end * CHUNK].chunks_exact(8).fold([0u64; 8], |mut a, c| {
                for (a, &v) in a.iter_mut().zip(c) {
                    *a = a.wrapping_add(v);
                }
                a
            });
            std::hint::black_box(s);
        });
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::mem::size_of_val(buf) as f64 / best / 1e9
}

fn max_mib(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The read probes at the pool's current threads, GB/s for each of `sizes` bytes (whole 512
/// KiB chunks), on one buffer of their own as large as the largest (a smaller probe reads its
/// start), kept out of the reported peak RSS: the peak so far is folded into `peak_mib` first,
/// and the kernel's high-water mark is reset once the buffer is freed.
fn probe_bandwidths(peak_mib: &mut Option<f64>, sizes: &[u64]) -> Vec<f64> {
    *peak_mib = max_mib(*peak_mib, peak_rss_mib());
    let words = |bytes: u64| (bytes.next_multiple_of(512 << 10) / 8) as usize;
    let buf: Vec<u64> = (0..sizes.iter().map(|&b| words(b)).max().unwrap_or(0) as u64).collect();
    let gb_s = sizes.iter().map(|&b| read_bandwidth(&buf[..words(b)])).collect();
    drop(buf);
    // "5": reset the peak resident set size to the current one (Linux >= 4.0).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    gb_s
}

/// A question whose chat prompt has at least `tokens` tokens: a passage to summarise.
fn long_prompt(engine: &Engine, tokens: usize) -> Result<GenerateRequest> {
    const PASSAGE: &str = "The committee met on a rainy Tuesday to review the harbour plans, the budget for the \
        new ferry terminal, the complaints about night noise from the shipyard, and the schedule for dredging the \
        eastern channel before the spring tides. ";
    let mut text = String::from("Summarise the following minutes in two sentences.\n\n");
    loop {
        let mut req = GenerateRequest::new(&text);
        req.methods = vec![Method::Base];
        req.max_tokens = 1;
        req.ignore_eos = true;
        if engine.contexts(&req)?.0.len() >= tokens {
            return Ok(req);
        }
        text.push_str(PASSAGE);
    }
}

/// A conversation of at least `tokens` tokens (amulet, concise), and its next turn.
fn conversation(engine: &Engine, tokens: usize) -> Result<(GenerateRequest, GenerateRequest)> {
    use amulet::chat_template::ChatMessage;
    const ANSWER: &str = "The committee reviewed the harbour plans, agreed the ferry terminal budget, heard \
        complaints about night noise from the shipyard and set the dredging of the eastern channel for March. ";
    let mut messages = vec![ChatMessage::new("user", "What did the committee decide at its first meeting?")];
    let request = |messages: &[ChatMessage]| {
        let mut r = GenerateRequest::new("");
        r.conversation.messages = messages.to_vec();
        r.preference = Some("concise".into());
        r.max_tokens = 1;
        r.ignore_eos = true;
        r
    };
    for turn in 2.. {
        if engine.contexts(&request(&messages))?.1.map_or(0, |p| p.len()) >= tokens {
            break;
        }
        messages.push(ChatMessage::new("assistant", ANSWER.repeat(3)));
        messages.push(ChatMessage::new("user", format!("And at meeting number {turn}?")));
    }
    let history = request(&messages);
    messages.push(ChatMessage::new("assistant", "It decided to meet again."));
    messages.push(ChatMessage::new("user", "Summarise all of that in one sentence."));
    Ok((history, request(&messages)))
}

/// Time to first token of a conversation's next turn, with the history's caches kept and
/// without (the cache emptied first), interleaved.
#[derive(serde::Serialize)]
struct HistoryTurn {
    history_tokens: usize,
    kept: Stats,
    fresh: Stats,
    /// kept / fresh time to first token.
    ttft_ratio: f64,
    /// KV cache kept for the next request after the turn, and its budget.
    kept_bytes: usize,
    budget_bytes: usize,
}

fn measure_history(engine: &mut Engine, tokens: usize, runs: usize) -> Result<HistoryTurn> {
    let (history, next) = conversation(engine, tokens)?;
    let history_tokens = engine.contexts(&history)?.1.map_or(0, |p| p.len());
    let (mut kept, mut fresh) = (Vec::new(), Vec::new());
    let mut kept_bytes = 0;
    for _ in 0..runs.max(1) {
        engine.clear_prefix_cache();
        engine.generate(&history, &mut |_| true)?; // the turn before: its caches are kept
        kept.push(engine.generate(&next, &mut |_| true)?);
        kept_bytes = engine.prefix_cache_usage().0;
        engine.clear_prefix_cache();
        fresh.push(engine.generate(&next, &mut |_| true)?);
    }
    let (kept, fresh) = (stats(&kept), stats(&fresh));
    Ok(HistoryTurn {
        history_tokens,
        ttft_ratio: kept.ttft_ms / fresh.ttft_ms,
        kept,
        fresh,
        kept_bytes,
        budget_bytes: amulet::engine::DEFAULT_PREFIX_BYTES,
    })
}

/// One (backend, thread count)'s figures.
#[derive(serde::Serialize)]
struct Config {
    device: String,
    threads: usize,
    base: Stats,
    amulet: Stats,
    /// amulet / base decode speed.
    ratio: f64,
    /// The long prompt's prefill (base context), when asked for.
    long_prefill: Option<Stats>,
    /// A conversation's next turn with and without its history's caches, when asked for.
    history_turn: Option<HistoryTurn>,
    /// The memory-read probe at this thread count (CPU only), GB/s: best over the runs.
    read_gb_s: Option<f64>,
    /// Base decode's weight reads (weight_bytes_per_token x tok/s) over the 1 GiB probe's GB/s: the
    /// share of the bandwidth bound reached.
    base_bandwidth_fraction: Option<f64>,
    /// The same probe over a buffer the size of what a decode step reads (weights, keys and
    /// values), read again and again as decode reads them: where the last-level cache holds
    /// much of the model (a server's L3 can be larger than SmolLM2), the bound that applies, GB/s.
    working_set_gb_s: Option<f64>,
    /// Base decode's reads of weights, keys and values over `working_set_gb_s`.
    base_working_set_fraction: Option<f64>,
}

/// One backend's load.
#[derive(serde::Serialize)]
struct Backend {
    model: amulet::engine::ModelInfo,
    device: String,
    device_reason: String,
    load_ms: f64,
}

/// The whole run, as `--json` prints it and `--out` writes it.
#[derive(serde::Serialize)]
struct BenchResult {
    /// The SIMD tier the CPU kernels ran in (x86: "avx2", "avx-vnni" or "avx512-vnni", the best the CPU has).
    cpu_kernels: &'static str,
    /// The GGUF measured.
    model_path: String,
    new_tokens: usize,
    long_prompt_tokens: Option<usize>,
    /// The base context of the decode prompt and the long prompt, as token ids (a peer engine
    /// on the same GGUF can be given exactly these).
    prompt_token_ids: Vec<u32>,
    long_prompt_token_ids: Option<Vec<u32>>,
    /// Bytes of weights a decode step reads (see model_reads).
    weight_bytes_per_token: Option<u64>,
    /// Bytes of keys and values a base decode step reads, the mean over the run (see
    /// kv_bytes_per_token).
    kv_bytes_per_token: Option<u64>,
    peak_rss_mib: Option<f64>,
    backends: Vec<Backend>,
    configs: Vec<Config>,
}

/// What `measure` found besides the configs: the prompts' token ids, and the key and value
/// bytes a base decode step read.
struct Prompts {
    base: Vec<u32>,
    long: Option<Vec<u32>>,
    kv_bytes: Option<u64>,
}

/// Runs every thread count on one loaded backend, interleaved run by run.
fn measure(
    engine: &mut Engine,
    a: &BenchArgs,
    threads: &[usize],
    reads: Option<&Reads>,
    peak_mib: &mut Option<f64>,
) -> Result<(Vec<Config>, Prompts)> {
    let mut req = GenerateRequest::new(&a.prompt);
    req.preference = Some(a.preference.clone());
    req.max_tokens = a.tokens;
    req.ignore_eos = true;
    let mut base_req = req.clone();
    base_req.methods = vec![Method::Base];
    let mut amulet_req = req;
    amulet_req.methods = vec![Method::default()];
    let long = if a.prefill_tokens > 0 { Some(long_prompt(engine, a.prefill_tokens)?) } else { None };
    let base_ids = engine.contexts(&base_req)?.0;
    let prompts = Prompts {
        kv_bytes: reads.map(|r| kv_bytes_per_token(&r.config, base_ids.len(), a.tokens)),
        base: base_ids,
        long: long.as_ref().map(|r| engine.contexts(r).map(|c| c.0)).transpose()?,
    };
    let weight_bytes = reads.map(|r| r.weights);

    // Warm-up (page faults, caches, shader compilation), not counted.
    let mut warm = amulet_req.clone();
    warm.max_tokens = 8;
    engine.generate(&warm, &mut |_| true)?;
    let cpu = engine.info().device == "cpu";
    let counts: Vec<usize> = if cpu { threads.to_vec() } else { vec![threads[0]] };
    let mut outs: Vec<[Vec<GenerateOutput>; 3]> = counts.iter().map(|_| Default::default()).collect();
    // The read probes, at each count in each run: past the caches (1 GiB), and over a buffer
    // the size of a decode step's reads.
    let working_set = weight_bytes.zip(prompts.kv_bytes).map(|(w, k)| w + k);
    let mut read_gb_s = vec![0f64; counts.len()];
    let mut working_set_gb_s = vec![0f64; counts.len()];
    for i in 0..a.runs.max(1) {
        for (c, &n) in counts.iter().enumerate() {
            let n = amulet::backend::pool::set_threads(n)?;
            if !a.json {
                eprintln!("{} {n} threads: run {}/{}", engine.info().device, i + 1, a.runs.max(1));
            }
            if cpu {
                let sizes: Vec<u64> = std::iter::once(1 << 30).chain(working_set).collect();
                let got = probe_bandwidths(peak_mib, &sizes);
                read_gb_s[c] = read_gb_s[c].max(got[0]);
                if let Some(&g) = got.get(1) {
                    working_set_gb_s[c] = working_set_gb_s[c].max(g);
                }
            }
            // Every run reads its whole prompt: no caches kept from the run before.
            let mut run = |req: &GenerateRequest| {
                engine.clear_prefix_cache();
                engine.generate(req, &mut |_| true)
            };
            outs[c][0].push(run(&base_req)?);
            outs[c][1].push(run(&amulet_req)?);
            if let Some(long) = &long {
                outs[c][2].push(run(long)?);
            }
        }
    }
    let mut configs = Vec::new();
    for (((&n, [base, amulet, long]), gb_s), ws_gb_s) in counts.iter().zip(outs).zip(read_gb_s).zip(working_set_gb_s) {
        let (base, amulet) = (stats(&base), stats(&amulet));
        let read_gb_s = cpu.then_some(gb_s);
        let working_set_gb_s = (cpu && working_set.is_some()).then_some(ws_gb_s);
        let share = |bytes: Option<u64>, gb_s: Option<f64>| {
            gb_s.zip(bytes).map(|(g, b)| b as f64 * base.decode_tokens_per_s / (g * 1e9))
        };
        let base_bandwidth_fraction = share(weight_bytes, read_gb_s);
        let base_working_set_fraction = share(working_set, working_set_gb_s);
        let threads = amulet::backend::pool::set_threads(n)?;
        let history_turn =
            if a.history_tokens > 0 { Some(measure_history(engine, a.history_tokens, a.runs)?) } else { None };
        configs.push(Config {
            device: engine.info().device.clone(),
            threads,
            history_turn,
            ratio: amulet.decode_tokens_per_s / base.decode_tokens_per_s,
            long_prefill: (!long.is_empty()).then(|| stats(&long)),
            base,
            amulet,
            read_gb_s,
            base_bandwidth_fraction,
            working_set_gb_s,
            base_working_set_fraction,
        });
    }
    Ok((configs, prompts))
}

pub fn run(a: BenchArgs) -> Result<()> {
    if a.threads.is_empty() {
        return Err(AmuletError::bad_option("threads", "give at least one thread count"));
    }
    let path = crate::model_path::resolve(a.model.as_deref())?;
    amulet::backend::pool::set_threads(a.threads.iter().copied().max().unwrap_or(0))?;
    let reads = model_reads(&path);
    let (mut backends, mut configs, mut prompts, mut peak_mib) = (Vec::new(), Vec::new(), None, None);
    for &device in &a.device {
        let (mut engine, load_ms) = crate::cli::load_engine(&path, a.json, device)?;
        let (c, p) = measure(&mut engine, &a, &a.threads, reads.as_ref(), &mut peak_mib)?;
        configs.extend(c);
        prompts.get_or_insert(p);
        let info = engine.info().clone();
        backends.push(Backend {
            device: info.device.clone(),
            device_reason: info.device_reason.clone(),
            model: info,
            load_ms,
        });
    }
    let result = BenchResult {
        cpu_kernels: amulet::backend::rows::tier(),
        model_path: path.display().to_string(),
        new_tokens: a.tokens,
        long_prompt_tokens: prompts.as_ref().and_then(|p| p.long.as_ref().map(Vec::len)),
        kv_bytes_per_token: prompts.as_ref().and_then(|p| p.kv_bytes),
        prompt_token_ids: prompts.as_ref().map(|p| p.base.clone()).unwrap_or_default(),
        long_prompt_token_ids: prompts.and_then(|p| p.long),
        weight_bytes_per_token: reads.as_ref().map(|r| r.weights),
        peak_rss_mib: max_mib(peak_mib, peak_rss_mib()),
        backends,
        configs,
    };
    let json = serde_json::to_string_pretty(&result).map_err(|e| AmuletError::Io(e.to_string()))?;
    if let Some(path) = &a.out {
        std::fs::write(path, format!("{json}\n")).map_err(|e| AmuletError::Io(format!("{}: {e}", path.display())))?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&result).map_err(|e| AmuletError::Io(e.to_string()))?);
        return Ok(());
    }
    print_table(&path, &a, &result);
    Ok(())
}

fn print_table(path: &std::path::Path, a: &BenchArgs, r: &BenchResult) {
    let quantization = r.backends.first().map_or("", |b| b.model.quantization.as_str());
    println!(
        "model {}  ({quantization}, {} new tokens, greedy, {} runs each)",
        path.display(),
        a.tokens,
        a.runs.max(1)
    );
    println!(
        "{:<8} {:>7} {:<8} {:>12} {:>16} {:>11} {:>12} {:>9}",
        "device", "threads", "method", "decode tok/s", "min-max", "prefill ms", "prefill t/s", "TTFT ms"
    );
    for c in &r.configs {
        for (name, s) in [("base", &c.base), ("amulet", &c.amulet)] {
            println!(
                "{:<8} {:>7} {:<8} {:>12.1} {:>16} {:>11.1} {:>12.0} {:>9.1}",
                c.device,
                c.threads,
                name,
                s.decode_tokens_per_s,
                format!("{:.1}-{:.1}", s.min, s.max),
                s.prefill_ms,
                s.prefill_tokens_per_s,
                s.ttft_ms
            );
        }
        if let Some(s) = &c.long_prefill {
            println!(
                "{:<8} {:>7} {:<8} {:>12} {:>16} {:>11.1} {:>12.0} {:>9}",
                c.device, c.threads, "long", "-", "-", s.prefill_ms, s.prefill_tokens_per_s, "-"
            );
        }
        println!("{} {} threads: amulet / base = {:.3}", c.device, c.threads, c.ratio);
        if let (Some(g), Some(f), Some(b)) = (c.read_gb_s, c.base_bandwidth_fraction, r.weight_bytes_per_token) {
            println!(
                "{} {} threads: bandwidth: read probe {g:.1} GB/s; base decode reads {:.1} MB of weights a token: \
                 {:.1} GB/s, {:.0}% of the probe (bound {:.1} tok/s)",
                c.device,
                c.threads,
                b as f64 / 1e6,
                b as f64 * c.base.decode_tokens_per_s / 1e9,
                f * 100.0,
                g * 1e9 / b as f64
            );
        }
        if let (Some(g), Some(f), Some(w), Some(k)) =
            (c.working_set_gb_s, c.base_working_set_fraction, r.weight_bytes_per_token, r.kv_bytes_per_token)
        {
            println!(
                "{} {} threads: working set: those weights and {:.1} MB of keys and values (mean over the run), \
                 the probe over as many bytes, again and again: {g:.1} GB/s; base decode at {:.0}% of it (bound \
                 {:.1} tok/s)",
                c.device,
                c.threads,
                k as f64 / 1e6,
                f * 100.0,
                g * 1e9 / (w + k) as f64
            );
        }
        if let Some(h) = &c.history_turn {
            println!(
                "{} {} threads: next turn after a {}-token history: TTFT {:.0} ms with its caches kept, {:.0} ms \
                 fresh ({:.2}x); {:.1} MiB kept of a {:.0} MiB budget",
                c.device,
                c.threads,
                h.history_tokens,
                h.kept.ttft_ms,
                h.fresh.ttft_ms,
                h.ttft_ratio,
                h.kept_bytes as f64 / (1 << 20) as f64,
                h.budget_bytes as f64 / (1 << 20) as f64
            );
        }
    }
    if let Some(n) = r.long_prompt_tokens {
        println!("long: the prefill of a {n}-token prompt (base context)");
    }
    for b in &r.backends {
        println!("{}: load {:.0} ms; {}", b.device, b.load_ms, b.device_reason);
        if b.device == "cpu" {
            println!("cpu kernels: {}", r.cpu_kernels);
        }
    }
    let cpu: Vec<&Config> = r.configs.iter().filter(|c| c.device == "cpu").collect();
    if let [one, rest @ ..] = &cpu[..] {
        for c in rest {
            println!(
                "cpu {} threads / {} threads: decode base {:.2}x, amulet {:.2}x{}",
                c.threads,
                one.threads,
                c.base.decode_tokens_per_s / one.base.decode_tokens_per_s,
                c.amulet.decode_tokens_per_s / one.amulet.decode_tokens_per_s,
                match (&c.long_prefill, &one.long_prefill) {
                    (Some(x), Some(y)) => format!(", long prefill {:.2}x", y.prefill_ms / x.prefill_ms),
                    _ => String::new(),
                }
            );
        }
    }
    let first = |d: &str| r.configs.iter().find(|c| c.device == d);
    if let (Some(g), Some(c)) = (first("webgpu"), first("cpu")) {
        println!("base decode, webgpu / cpu = {:.2}", g.base.decode_tokens_per_s / c.base.decode_tokens_per_s);
    }
    println!("peak RSS {:.0} MiB", r.peak_rss_mib.unwrap_or(f64::NAN));
}
