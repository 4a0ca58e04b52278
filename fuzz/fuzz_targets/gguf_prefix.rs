//! The streamed header: the first 8 bytes give the announced file length, the rest is the
//! prefix received so far. A prefix that parses must parse the same from every longer prefix.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| amulet::fuzzing::gguf_prefix(data));
