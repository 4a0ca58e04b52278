#!/usr/bin/env python3
"""llama.cpp (through llama-cpp-python) on the same task as `amulet bench`.

    python3 tests/bench/llamacpp_bench.py [--runs 3] [--tokens 128] [--model PATH]
    python3 tests/bench/llamacpp_bench.py --interleave target/release/amulet [--rounds 3] \
        [--out target/bench/native-vs-llamacpp.json]

The task: SmolLM2-135M-Instruct Q4_1, the question "How can I improve my eating habits without
compromising on taste?" rendered through the model's own chat template (the GGUF's
tokenizer.chat_template) with the paper's system prompt, 128 new tokens, greedy (argmax of the
logits), end-of-sequence ignored, one thread (n_threads = n_threads_batch = 1), n_ctx 1024.

Figures per run: prefill ms (evaluating the prompt), decode tok/s = (tokens - 1) / (time of
the last token - time of the first token), i.e. prefill excluded. The first mode prints
{"llama_cpp": {"decode_tokens_per_s": median, "min", "max", "prefill_ms", "version", ...}}.

--interleave BIN alternates `BIN bench --runs 1 --json` (ours, RAYON_NUM_THREADS=1) with one
llama.cpp run, --rounds times, in the same process tree, and reports ours/llama.cpp per round
and the median of those ratios; the JSON goes to --out.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_MODEL = os.path.join(REPO, "models", "cache", "SmolLM2-135M-Instruct.Q4_1.gguf")
PROMPT = "How can I improve my eating habits without compromising on taste?"
# crate/src/prompt.rs DEFAULT_SYSTEM_PROMPT (the paper's system prompt)
SYSTEM_PROMPT = (
    "You are an AI designed to provide the most helpful, clear, and concise responses. Focus on "
    "giving actionable information, ensuring accuracy and detail without overwhelming the user. "
    "You should also be patient, polite, and calm. Avoid unnecessary complexity and always "
    "prioritize practical, user-friendly advice."
)


def die(msg, code=2):
    print(f"llamacpp_bench.py: {msg}", file=sys.stderr)
    sys.exit(code)


try:
    import llama_cpp
    import numpy as np
except ImportError as e:  # pragma: no cover
    die(f"{e}: install llama-cpp-python (BENCH_LLAMA_CPP=1 ./build.sh bench does, with portable CPU flags)")


def render_prompt(llm):
    template = llm.metadata.get("tokenizer.chat_template")
    if not template:
        die("the GGUF has no tokenizer.chat_template")
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    fmt = Jinja2ChatFormatter(template=template, eos_token="", bos_token="")
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": PROMPT}]
    return fmt(messages=messages).prompt


class Bench:
    def __init__(self, model, tokens):
        if not os.path.exists(model):
            die(f"no model at {model} (run models/fetch.sh)")
        t0 = time.perf_counter()
        self.llm = llama_cpp.Llama(
            model_path=model,
            n_ctx=1024,
            n_threads=1,
            n_threads_batch=1,
            n_batch=512,
            n_gpu_layers=0,
            verbose=False,
        )
        self.load_ms = (time.perf_counter() - t0) * 1e3
        self.tokens = tokens
        self.prompt_text = render_prompt(self.llm)
        self.prompt_tokens = self.llm.tokenize(self.prompt_text.encode("utf-8"), add_bos=False, special=True)

    def run(self, tokens=None):
        """One greedy generation; returns (prefill_ms, decode_tokens_per_s, text)."""
        n = tokens or self.tokens
        llm = self.llm
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(self.prompt_tokens)
        prefill_ms = (time.perf_counter() - t0) * 1e3
        out, times = [], []
        for i in range(n):
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))  # greedy; eos not special-cased
            times.append(time.perf_counter())
            out.append(tok)
            if i + 1 < n:
                llm.eval([tok])
        tps = (n - 1) / (times[-1] - times[0]) if n > 1 else float("nan")
        text = llm.detokenize(out).decode("utf-8", errors="replace")
        return prefill_ms, tps, text


def summary(b, runs):
    tps = [r[1] for r in runs]
    return {
        "decode_tokens_per_s": statistics.median(tps),
        "min": min(tps),
        "max": max(tps),
        "prefill_ms": statistics.median(r[0] for r in runs),
        "runs": tps,
        "version": llama_cpp.__version__,
        "n_threads": 1,
        "n_ctx": 1024,
        "new_tokens": b.tokens,
        "prompt_tokens": len(b.prompt_tokens),
        "load_ms": b.load_ms,
        "text_head": runs[0][2][:160],
    }


def ours_once(binary, tokens):
    env = dict(os.environ, RAYON_NUM_THREADS="1")
    p = subprocess.run([binary, "bench", "--device", "cpu", "--threads", "1", "--runs", "1", "--tokens", str(tokens), "--json"], env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        die(f"{binary} bench failed ({p.returncode}): {p.stderr.strip()[-400:]}")
    line = [l for l in p.stdout.splitlines() if l.strip().startswith("{")][-1]
    return json.loads(line)["configs"][0]


def interleave(a, b):
    rounds = []
    for i in range(a.rounds):
        ours = ours_once(a.interleave, a.tokens)
        lc = b.run()
        r = {
            "round": i + 1,
            "ours_base_tps": ours["base"]["decode_tokens_per_s"],
            "ours_amulet_tps": ours["amulet"]["decode_tokens_per_s"],
            "ours_base_prefill_ms": ours["base"]["prefill_ms"],
            "llama_cpp_tps": lc[1],
            "llama_cpp_prefill_ms": lc[0],
        }
        r["ratio_base_over_llama_cpp"] = r["ours_base_tps"] / r["llama_cpp_tps"]
        r["ratio_amulet_over_llama_cpp"] = r["ours_amulet_tps"] / r["llama_cpp_tps"]
        rounds.append(r)
        print(f"round {i + 1}/{a.rounds}: ours base {r['ours_base_tps']:.1f} tok/s, amulet {r['ours_amulet_tps']:.1f}, "
              f"llama.cpp {r['llama_cpp_tps']:.1f} -> base/llama.cpp {r['ratio_base_over_llama_cpp']:.3f}",
              file=sys.stderr, flush=True)
    med = lambda k: statistics.median(r[k] for r in rounds)
    result = {
        "task": {"model": os.path.basename(a.model), "new_tokens": a.tokens, "threads": 1, "greedy": True,
                 "ignore_eos": True, "order": "ours, llama.cpp, alternated per round"},
        "llama_cpp_version": llama_cpp.__version__,
        "ours_q4_1_kernel": ours.get("q4_1_kernel"),
        "rounds": rounds,
        "median": {k: med(k) for k in rounds[0] if k != "round"},
    }
    m = result["median"]
    print()
    print(f"{'engine':<22} {'decode tok/s (median)':>22} {'min-max':>14} {'prefill ms':>11}")
    for name, k, p in [("ours base", "ours_base_tps", "ours_base_prefill_ms"),
                       ("ours amulet", "ours_amulet_tps", None),
                       (f"llama.cpp {llama_cpp.__version__}", "llama_cpp_tps", "llama_cpp_prefill_ms")]:
        v = [r[k] for r in rounds]
        print(f"{name:<22} {m[k]:>22.1f} {f'{min(v):.1f}-{max(v):.1f}':>14} {(m[p] if p else float('nan')):>11.1f}")
    print(f"ours base / llama.cpp   = {m['ratio_base_over_llama_cpp']:.3f} (median of per-round ratios, n={len(rounds)})")
    print(f"ours amulet / llama.cpp = {m['ratio_amulet_over_llama_cpp']:.3f}")
    if a.out:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        print(f"JSON: {a.out}")
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--interleave", metavar="BIN", help="our amulet binary: alternate it with llama.cpp")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", help="write the JSON here too")
    a = ap.parse_args()
    b = Bench(a.model, a.tokens)
    b.run(8)  # warm-up, not counted
    if a.interleave:
        interleave(a, b)
        return
    runs = [b.run() for _ in range(max(1, a.runs))]
    result = {"llama_cpp": summary(b, runs)}
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
