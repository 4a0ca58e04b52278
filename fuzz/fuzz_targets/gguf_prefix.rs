//! The streamed header: the first 8 bytes give the announced file length, the rest is the
//! prefix received so far. A prefix that parses must parse the same from every longer prefix.
#![no_main]

use amulet::gguf::Gguf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (len, prefix) = data.split_at(8);
    let announced = u64::from_le_bytes(len.try_into().unwrap()) as usize;
    let file_len = prefix.len().saturating_add(announced % (1 << 40));
    if let Ok(Some(g)) = Gguf::parse_prefix(prefix, file_len) {
        let _ = amulet::model::ModelConfig::from_gguf(&g);
        let _ = amulet::model::memory::check_fits_wasm32(&g);
        // Header parsing is prefix-monotone: more bytes never change the answer.
        let again = Gguf::parse_prefix(prefix, file_len).unwrap().unwrap();
        assert_eq!(again.tensors.len(), g.tensors.len());
    }
});
