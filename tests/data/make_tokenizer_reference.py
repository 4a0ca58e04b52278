#!/usr/bin/env python3
"""Writes the Hugging Face tokenizer and chat-template reference of one GGUF model file, the
JSON that crate/tests/tokenizer_reference.rs compares our tokenizer and template against.

    python make_tokenizer_reference.py MODEL.gguf OUT.json [--extra-chats]

transformers loads the tokenizer from the GGUF file itself (`gguf_file=`), so the vocabulary,
merges, special tokens and chat template are the file's, not those of a hub checkpoint. The
file holds:
- `cases`: the 39 test strings below, each with `ids` (encoded with add_special_tokens=False)
  and `decoded` (those ids decoded back, special tokens kept);
- `special`: the bos and eos tokens and their ids;
- `chat`: conversations, each with add_generation_prompt, the template's rendering and its
  ids (encoded with add_special_tokens=False, as apply_chat_template does). Empty when the
  file has no chat template (a base model). `--extra-chats` adds two more conversations (a
  system prompt in a multi-turn chat; one ending on an assistant turn, without a generation
  prompt) to the three the first files were made with.
Output: `json.dumps(indent=1, ensure_ascii=False)`, no trailing newline, like the first files.

Environment (a venv outside the repository; nothing here is imported by the build):

    python3 -m venv /tmp/tokref-venv
    /tmp/tokref-venv/bin/pip install transformers==5.25.0 gguf==0.19.0 torch==2.15.0 \
        sentencepiece==0.2.3 jinja2==3.1.6

(Python 3.11; tokenizers 0.23.3 came with transformers.) torch is needed only because
transformers' GGUF reader imports it; jinja2 renders the chat templates; sentencepiece is for
SentencePiece vocabularies (Gemma). The files in tests/data/tokenizer/ were made with exactly
these versions; tests/data/README.md says which command made which file.
"""

import argparse
import json
import os
import sys

# The test strings, in order: ASCII, whitespace runs, CRLF, accented Latin, Chinese, Japanese,
# Korean, emoji with modifiers and flags, maths, code, HTML, URLs, contractions, the empty
# string, long repeats, zero-width characters, a combining mark, characters outside the BMP,
# and the paper's preference and system sentences. Escapes keep the exact code points.
CASES = [
    "Hello, world!",
    "hello world",
    " leading space",
    "trailing space ",
    "  double  spaces  ",
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France?",
    "Numbers: 0 1 12 123 1234 12345 3.14159 -42 1e10",
    "tabs\tand\nnewlines\n\nand\r\nCRLF",
    "\u00dcn\u00efc\u00f6d\u00e9 \u00e7h\u00e4r\u00e0ct\u00e9rs: na\u00efve caf\u00e9 r\u00e9sum\u00e9",
    "\u4e2d\u6587\u6d4b\u8bd5\uff1a\u4f60\u597d\uff0c\u4e16\u754c\uff01",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "\ud55c\uad6d\uc5b4 \ubb38\uc7a5\uc785\ub2c8\ub2e4",
    "Emoji \U0001f600\U0001f389\U0001f44d\U0001f3fd and flags \U0001f1eb\U0001f1f7",
    "Math \u2211\u222b\u221a\u221e \u2260 \u2264 \u2265 \u03c0",
    "Code: fn main() { println!(\"hi\"); }",
    "def f(x):\n    return x ** 2  # square",
    "<html><body>Tag soup</body></html>",
    "URL https://example.com/a?b=c&d=e",
    "email someone@example.org",
    "Don't won't can't I'm you're it's",
    "ALL CAPS SENTENCE",
    "MiXeD cAsE",
    "a",
    "",
    " ",
    "\n",
    "...!!!???",
    "\u2014\u2013- dashes",
    "\u00abquotes\u00bb \u201ccurly\u201d \u2018single\u2019",
    "Your answer should be concise as much as possible.",
    "Your answer should be uplifting as much as possible.",
    "You are an AI designed to provide the most helpful, clear, and concise responses.",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "abababababababababababababababababababababababababababababab",
    "Zero-width\u200bjoiner\u200dtest",
    "Combining e\u0301 accent",
    "Surrogate-free \U0001d518\U0001d52b\U0001d526\U0001d520\U0001d52c\U0001d521\U0001d522",
]


def msg(role, content):
    return {"role": role, "content": content}


# (messages, add_generation_prompt): no system prompt (the template's default, if any,
# applies), an explicit one, and a multi-turn chat.
CHATS = [
    ([msg("user", "What is the capital of France?")], True),
    (
        [
            msg("system", "You are helpful. Your answer should be concise as much as possible."),
            msg("user", "Give me three tips for staying focused."),
        ],
        True,
    ),
    (
        [
            msg("user", "Hi"),
            msg("assistant", "Hello! How can I help?"),
            msg("user", "Tell me a joke."),
        ],
        True,
    ),
]

EXTRA_CHATS = [
    (
        [
            msg("system", "You are a coding assistant."),
            msg("user", "Write hello world in Rust."),
            msg("assistant", 'fn main() {\n    println!("Hello, world!");\n}'),
            msg("user", "Now in Python."),
        ],
        True,
    ),
    ([msg("user", "Hi"), msg("assistant", "Hello! How can I help?")], False),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf", help="the GGUF model file")
    ap.add_argument("out", help="the JSON file to write")
    ap.add_argument("--extra-chats", action="store_true", help="add the two extra conversations")
    args = ap.parse_args()

    from transformers import AutoTokenizer

    path = os.path.abspath(args.gguf)
    tok = AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))

    cases = []
    for text in CASES:
        ids = tok.encode(text, add_special_tokens=False)
        cases.append({"text": text, "ids": ids, "decoded": tok.decode(ids)})

    chats = []
    if tok.chat_template:
        for messages, agp in CHATS + (EXTRA_CHATS if args.extra_chats else []):
            rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=agp)
            ids = tok.encode(rendered, add_special_tokens=False)
            # apply_chat_template's own tokenization must be the same encoding.
            direct = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=agp)
            direct = direct["input_ids"] if hasattr(direct, "keys") else direct
            if list(direct) != ids:
                sys.exit(f"apply_chat_template(tokenize=True) differs from encode(rendered) for {messages}")
            chats.append({"messages": messages, "add_generation_prompt": agp, "rendered": rendered, "ids": ids})

    reference = {
        "model_file": os.path.basename(path),
        "source": "Hugging Face transformers tokenizer loaded from the GGUF file",
        "add_special_tokens": False,
        "cases": cases,
        "special": {
            "bos": tok.bos_token,
            "bos_id": tok.bos_token_id,
            "eos": tok.eos_token,
            "eos_id": tok.eos_token_id,
        },
        "chat": chats,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(json.dumps(reference, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
