//! A whole GGUF file: the header parse, then everything a load derives from the header alone
//! (hyper-parameters, memory estimate, tokenizer spec, chat template) and every tensor's bytes.
#![no_main]

use amulet::gguf::Gguf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(g) = Gguf::parse(data) else { return };
    let _ = amulet::model::ModelConfig::from_gguf(&g);
    let _ = amulet::model::memory::cpu_estimate(&g, true);
    let _ = amulet::tokenizer::TokenizerSpec::from_gguf(&g);
    for t in &g.tensors {
        let _ = g.tensor_bytes(data, &t.name, &t.dims);
    }
});
