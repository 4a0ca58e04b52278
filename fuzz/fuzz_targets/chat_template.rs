//! A chat template from a stranger's file, rendered with fuzzed messages inside the sandbox:
//! every input must end quickly with text or a typed error (libFuzzer's -timeout and
//! -rss_limit_mb flag an escape). Input: fields separated by NUL bytes: the template source,
//! then role, content, role, content...; add_generation_prompt when the input's length is even.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| amulet::fuzzing::chat_template(data));
