//! A tokenizer from GGUF metadata, then encode/decode of fuzzed text. Input: a 2-byte text
//! length, the text, then a GGUF file (seeds: the real models' tokenizer keys, vocabulary cut).
#![no_main]

use amulet::gguf::Gguf;
use amulet::tokenizer::{StreamDecoder, TextTokenizer, TokenizerSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let n = u16::from_le_bytes([data[0], data[1]]) as usize;
    let rest = &data[2..];
    let (text, file) = rest.split_at(n.min(rest.len()));
    let Ok(g) = Gguf::parse(file) else { return };
    let Ok(spec) = TokenizerSpec::from_gguf(&g) else { return };
    let Ok(tok) = TextTokenizer::from_spec(&spec) else { return };
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
});
