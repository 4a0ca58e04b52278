#!/usr/bin/env python3
"""The other side of the trade, from an `amulet eval` folder's responses.jsonl: per preference
and method, how many answers ended before the token cap, were very short (under 15 words: a
concise answer that may have dropped its content), name the preference word itself (the
preference leaking into the text), or repeat themselves (distinct-2 under 0.5 in 16 words or
more). The main run's answers only (the strength sweep's are left out).

    python3 docs/eval/costs.py docs/eval/qwen2.5-coder-1.5b
"""
import json
import re
import sys
from collections import defaultdict

METHODS = ["base", "pref", "la", "amulet"]


def main(folder):
    rows = [json.loads(line) for line in open(f"{folder}/responses.jsonl")]
    base = [r for r in rows if r["method"] == "base"]
    # The main amulet run: T = 60 (the default) when present; the sweep's records carry other T.
    ts = sorted({r["params"].get("iterations") for r in rows if r["method"] == "amulet"})
    main_t = 60 if 60 in ts else ts[0]
    groups = defaultdict(list)
    for r in rows:
        if r["method"] == "amulet" and r["params"].get("iterations") != main_t:
            continue
        if r["preference"] is not None:
            groups[(r["preference"], r["method"])].append(r)
    prefs = sorted({p for p, _ in groups})
    print(f"{folder}: {len({r['prompt_index'] for r in base})} prompts\n")
    print("| preference | method | ended before the cap | under 15 words | names the preference | repetitive |")
    print("|---|---|---|---|---|---|")
    for p in prefs:
        word = re.compile(rf"\b{re.escape(p)}\b", re.IGNORECASE)
        for m in METHODS:
            rs = base if m == "base" else groups.get((p, m), [])
            if not rs:
                continue
            n = len(rs)
            stop = sum(r["finish_reason"] == "stop" for r in rs)
            short = sum(r["metrics"]["words"] < 15 for r in rs)
            named = sum(bool(word.search(r["text"])) for r in rs)
            rep = sum(r["metrics"]["words"] >= 16 and r["metrics"]["distinct_2"] < 0.5 for r in rs)
            print(f"| {p} | {m} | {stop}/{n} | {short} | {named} | {rep} |")


if __name__ == "__main__":
    for folder in sys.argv[1:] or ["docs/eval/qwen2.5-coder-0.5b"]:
        main(folder)
        print()
