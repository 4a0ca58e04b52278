//! The bodies of the fuzz targets (`fuzz/`, cargo-fuzz): each takes any bytes and must end
//! with a value or a typed error, never a panic, a hang or a huge allocation. They live here so
//! that the same code runs under libFuzzer (`./build.sh fuzz`) and in the plain test suite's
//! smoke (`crate/tests/fuzz_smoke.rs`: the committed seeds and their mutants), which needs no
//! nightly build. Not part of the API.

use crate::chat_template::{ChatMessage, ChatTemplate};
use crate::gguf::Gguf;
use crate::tokenizer::{StreamDecoder, TextTokenizer, TokenizerSpec};

/// A whole GGUF file: the header parse, then everything a load derives from the header alone
/// (hyper-parameters, memory estimate, tokenizer spec, chat template) and every tensor's bytes.
pub fn gguf_parse(data: &[u8]) {
    let Ok(g) = Gguf::parse(data) else { return };
    let _ = crate::model::ModelConfig::from_gguf(&g);
    let _ = crate::model::memory::cpu_estimate(&g, true);
    let _ = crate::tokenizer::TokenizerSpec::from_gguf(&g);
    for t in &g.tensors {
        let _ = g.tensor_bytes(data, &t.name, &t.dims);
    }
}

/// The streamed header: the first 8 bytes give the announced file length, the rest is the
/// prefix received so far. A prefix that parses must parse the same from every longer prefix.
pub fn gguf_prefix(data: &[u8]) {
    if data.len() < 8 {
        return;
    }
    let (len, prefix) = data.split_at(8);
    let announced = u64::from_le_bytes(len.try_into().unwrap()) % (1 << 40);
    let file_len = prefix.len().saturating_add(usize::try_from(announced).unwrap_or(usize::MAX));
    if let Ok(Some(g)) = Gguf::parse_prefix(prefix, file_len) {
        let _ = crate::model::ModelConfig::from_gguf(&g);
        let _ = crate::model::memory::check_fits_wasm32(&g);
        // Header parsing is prefix-monotone: more bytes never change the answer.
        let again = Gguf::parse_prefix(prefix, file_len).unwrap().unwrap();
        assert_eq!(again.tensors.len(), g.tensors.len());
    }
}

/// A tokenizer from GGUF metadata, then encode/decode of fuzzed text. Input: a 2-byte text
/// length, the text, then a GGUF file (seeds: the real models' tokenizer keys, vocabulary cut).
pub fn tokenizer(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let n = u16::from_le_bytes([data[0], data[1]]) as usize;
    let rest = &data[2..];
    let (text, file) = rest.split_at(n.min(rest.len()));
    let Ok(g) = Gguf::parse(file) else { return };
    let Ok(spec) = TokenizerSpec::from_gguf(&g) else { return };
    let Ok(tok) = TextTokenizer::from_spec(spec) else { return };
    let text = String::from_utf8_lossy(text);
    for special in [false, true] {
        let Ok(ids) = tok.encode(&text, special) else { continue };
        assert!(ids.iter().all(|&id| (id as usize) < tok.vocab_size()), "an id outside the vocabulary");
        let whole = tok.decode(&ids, special).expect("ids from encode decode");
        // Streaming gives the same text as decoding at once.
        let mut stream = StreamDecoder::new(&tok, special);
        let mut streamed = String::new();
        for &id in &ids {
            streamed.push_str(&stream.push(id).expect("ids from encode stream"));
        }
        streamed.push_str(&stream.finish().expect("stream finish"));
        assert_eq!(streamed, whole);
    }
    // Arbitrary ids: an error or text, never a panic.
    let ids: Vec<u32> = file.chunks_exact(4).take(64).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    let _ = tok.decode(&ids, false);
}

/// A chat template from a stranger's file, rendered with fuzzed messages inside the sandbox:
/// every input must end quickly with text or a typed error (libFuzzer's -timeout and
/// -rss_limit_mb flag an escape). Input: fields separated by NUL bytes: the template source,
/// then role, content, role, content...; add_generation_prompt when the input's length is even.
pub fn chat_template(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut fields = text.split('\0');
    let source = fields.next().unwrap_or_default();
    let rest: Vec<&str> = fields.collect();
    let messages: Vec<ChatMessage> =
        rest.chunks(2).map(|p| ChatMessage::new(p[0], p.get(1).copied().unwrap_or(""))).collect();
    let Ok(t) = ChatTemplate::new(source, "<s>", "</s>") else { return };
    let _ = t.render(&messages, data.len().is_multiple_of(2));
}

/// The JSON request a page hands to `generate`: any JSON value gives a request or a
/// BAD_OPTION naming the option, never a panic.
pub fn request(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    match crate::request::parse_request(&v) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.code(), "BAD_OPTION", "{e}"),
    }
}
