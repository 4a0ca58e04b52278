//! A whole GGUF file: the header parse, then everything a load derives from the header alone
//! (hyper-parameters, memory estimate, tokenizer spec, chat template) and every tensor's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| amulet::fuzzing::gguf_parse(data));
