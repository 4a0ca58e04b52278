//! A tokenizer from GGUF metadata, then encode/decode of fuzzed text. Input: a 2-byte text
//! length, the text, then a GGUF file (seeds: the real models' tokenizer keys, vocabulary cut).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| amulet::fuzzing::tokenizer(data));
