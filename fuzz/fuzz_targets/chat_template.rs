//! A chat template from a stranger's file, rendered with fuzzed messages inside the sandbox:
//! every input must end quickly with text or a typed error (libFuzzer's -timeout and
//! -rss_limit_mb flag an escape). Input: fields separated by NUL bytes: the template source,
//! then role, content, role, content...; add_generation_prompt when the input's length is even.
#![no_main]

use amulet::chat_template::{ChatMessage, ChatTemplate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\0');
    let source = fields.next().unwrap_or_default();
    let rest: Vec<&str> = fields.collect();
    let messages: Vec<ChatMessage> =
        rest.chunks(2).map(|p| ChatMessage::new(p[0], p.get(1).copied().unwrap_or(""))).collect();
    let Ok(t) = ChatTemplate::new(source, "<s>", "</s>") else { return };
    let _ = t.render(&messages, data.len() % 2 == 0);
});
