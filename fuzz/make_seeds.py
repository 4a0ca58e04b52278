#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, cut from the real models' GGUF headers (models/cache/):
SmolLM2-135M-Instruct Q4_1, gemma-3-270m Q4_K_M, Qwen2.5-Coder 0.5B and 1.5B Q4_K_M.

Each header keeps its metadata (hyper-parameters, chat template, special-token ids) and its
tensor table, but the vocabulary is cut to its first 512 tokens (merges kept only where all
three tokens survive, special ids past the cut moved to the last kept token) and no tensor
data follows: a few KB a model. Deterministic: `python3 fuzz/make_seeds.py` rewrites
fuzz/seeds/ from the files, byte for byte.
"""

import json
import os
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = [
    ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("gemma3", "gemma-3-270m-q4_k_m.gguf"),
    ("qwen05", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"),
    ("qwen15", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"),
]
VOCAB = 512
SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
STR, ARR = 8, 9


class Reader:
    def __init__(self, f):
        self.f = f

    def take(self, fmt):
        return struct.unpack(fmt, self.f.read(struct.calcsize(fmt)))[0]

    def string(self):
        return self.f.read(self.take("<Q")).decode("utf-8", "surrogatepass")

    def value(self, ty):
        if ty in SCALARS:
            return self.take(SCALARS[ty])
        if ty == STR:
            return self.string()
        if ty == ARR:
            et, n = self.take("<I"), self.take("<Q")
            return (et, [self.value(et) for _ in range(n)])
        raise ValueError(f"unknown metadata type {ty}")


def read_header(path):
    with open(path, "rb") as f:
        r = Reader(f)
        assert f.read(4) == b"GGUF"
        version, n_tensors, n_kv = r.take("<I"), r.take("<Q"), r.take("<Q")
        meta = []
        for _ in range(n_kv):
            key = r.string()
            ty = r.take("<I")
            meta.append((key, ty, r.value(ty)))
        tensors = []
        for _ in range(n_tensors):
            name = r.string()
            dims = [r.take("<Q") for _ in range(r.take("<I"))]
            tensors.append((name, dims, r.take("<I"), r.take("<Q")))
        return version, meta, tensors, os.path.getsize(path)


def put_str(out, s):
    b = s.encode("utf-8", "surrogatepass")
    out += struct.pack("<Q", len(b)) + b


def put_value(out, ty, v):
    if ty in SCALARS:
        out += struct.pack(SCALARS[ty], v)
    elif ty == STR:
        put_str(out, v)
    else:
        et, items = v
        out += struct.pack("<IQ", et, len(items))
        for item in items:
            put_value(out, et, item)


def cut(meta):
    """The vocabulary cut to VOCAB tokens, consistently."""
    tokens = dict((k, v) for k, _, v in meta).get("tokenizer.ggml.tokens", (STR, []))[1][:VOCAB]
    kept = set(tokens)
    out = []
    for key, ty, v in meta:
        if ty == ARR and key == "tokenizer.ggml.merges":
            merges = [m for m in v[1] if len(m.split(" ")) == 2 and all(p in kept for p in m.split(" "))]
            v = (v[0], [m for m in merges if m.replace(" ", "") in kept])
        elif ty == ARR and len(v[1]) > VOCAB:
            v = (v[0], v[1][:VOCAB])
        elif key.startswith("tokenizer.ggml.") and key.endswith("_token_id") and v >= VOCAB:
            v = VOCAB - 1
        out.append((key, ty, v))
    return out


def header_bytes(version, meta, tensors):
    out = bytearray(b"GGUF")
    out += struct.pack("<IQQ", version, len(tensors), len(meta))
    for key, ty, v in meta:
        put_str(out, key)
        out += struct.pack("<I", ty)
        put_value(out, ty, v)
    for name, dims, ty, offset in tensors:
        put_str(out, name)
        out += struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        out += struct.pack("<IQ", ty, offset)
    return bytes(out)


def write(target, name, data):
    d = os.path.join(ROOT, "fuzz", "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    cache = os.path.join(ROOT, "models", "cache")
    for short, file in MODELS:
        path = os.path.join(cache, file)
        if not os.path.exists(path):
            print(f"make_seeds: {file} missing (models/fetch.sh), skipped", file=sys.stderr)
            continue
        version, meta, tensors, size = read_header(path)
        meta = cut(meta)
        with_table = header_bytes(version, meta, tensors)
        no_table = header_bytes(version, meta, [])
        # The whole-file parser: the header alone (tensor data missing: the ranges check) and
        # the metadata alone (parses: the config, memory and tokenizer checks run).
        write("gguf_parse", f"{short}-header", with_table)
        write("gguf_parse", f"{short}-metadata", no_table)
        # The streamed reader: the file's real length, then the header as the prefix so far.
        write("gguf_prefix", f"{short}-header", struct.pack("<Q", size - len(with_table)) + with_table)
        # The tokenizer: a text, then the metadata.
        text = "Hello, world! <|im_start|>user\n café 123\t<end_of_turn>".encode()
        write("tokenizer", f"{short}", struct.pack("<H", len(text)) + text + no_table)
        template = dict((k, v) for k, _, v in meta).get("tokenizer.chat_template")
        if template:
            convo = "\0system\0You are helpful.\0user\0Hi\0assistant\0Hello!\0user\0A joke?"
            write("chat_template", short, (template + convo).encode())
    # Gemma's file has no template (the runtime's fallback serves it): a ChatML one instead.
    chatml = (
        "{%- for message in messages -%}{{- '<|im_start|>' + message['role'] + '\\n' + message['content']"
        " + '<|im_end|>' + '\\n' -}}{%- endfor -%}{%- if add_generation_prompt -%}"
        "{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )
    write("chat_template", "chatml", (chatml + "\0user\0Hi").encode())
    requests = {
        "prompt": {"prompt": "Hi", "maxTokens": 8},
        "chat": {
            "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
            "system": "Be brief.",
            "preference": "concise",
            "methods": ["base", "amulet"],
            "temperature": 0.7,
            "topP": 0.9,
            "topK": 40,
            "seed": 7,
            "topLogprobs": 3,
            "stop": ["\n\n"],
            "ignoreEos": False,
            "contextOverflow": "truncate-oldest",
        },
        "amulet": {"prompt": "x", "method": "amulet", "alpha": 1.5, "lambda": 2, "eta": 5, "iterations": 25, "ratio": 0.5, "game": "closed-form", "placement": "user"},
    }
    for name, body in requests.items():
        write("request", name, json.dumps(body, separators=(",", ":")).encode())


if __name__ == "__main__":
    main()
