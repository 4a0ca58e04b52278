//! The fuzz targets' smoke, in the plain test suite (no nightly, no sanitizers): every target
//! (amulet::fuzzing, the bodies cargo-fuzz runs under `./build.sh fuzz`) on its committed
//! seeds (fuzz/seeds/, cut from the real models by fuzz/make_seeds.py) and on MUTANTS
//! deterministic mutants of each: bytes overwritten, cut, repeated or dropped. A panic names the
//! seed and the mutant and leaves its bytes in target/fuzz-smoke/ to replay with cargo-fuzz.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use amulet::fuzzing;
use amulet::rng::Rng;

const MUTANTS: usize = 2000;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds").join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("missing prerequisite: {} ({e}; python3 fuzz/make_seeds.py)", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

fn below(rng: &mut Rng, n: usize) -> usize {
    rng.below(n.max(1))
}

/// One mutant of `seed`: a few of the edits libFuzzer makes most.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + below(rng, 4) {
        let at = below(rng, v.len());
        match below(rng, 6) {
            0 | 1 => {
                // Overwrite a few bytes; often with the values parsers trip on.
                let magic = [0u8, 0xff, 0x7f, 0x80, 1, 0x20];
                for i in at..(at + 1 + below(rng, 8)).min(v.len()) {
                    v[i] = if below(rng, 2) == 0 { magic[below(rng, magic.len())] } else { rng.next_u64() as u8 };
                }
            }
            2 => v.truncate(at),
            3 => {
                let end = (at + 1 + below(rng, 64)).min(v.len());
                let piece = v[at..end].to_vec();
                v.splice(at..at, piece);
            }
            4 => {
                let end = (at + 1 + below(rng, 64)).min(v.len());
                v.drain(at..end);
            }
            _ => {
                // A little-endian length or count blown up.
                if at + 8 <= v.len() {
                    v[at..at + 8].copy_from_slice(&(rng.next_u64() >> below(rng, 64)).to_le_bytes());
                }
            }
        }
    }
    v
}

fn smoke(target: &str, body: fn(&[u8])) {
    let mut rng = Rng::new(0x5eed_0000 + target.len() as u64);
    let mut runs = 0;
    for (name, seed) in seeds(target) {
        for i in 0..=MUTANTS {
            let input = if i == 0 { seed.clone() } else { mutate(&mut rng, &seed) };
            if catch_unwind(AssertUnwindSafe(|| body(&input))).is_err() {
                let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/fuzz-smoke");
                std::fs::create_dir_all(&dir).unwrap();
                let file = dir.join(format!("{target}-{name}-{i}"));
                std::fs::write(&file, &input).unwrap();
                panic!("{target}: seed {name}, mutant {i} panicked; input in {}", file.display());
            }
            runs += 1;
        }
    }
    eprintln!("{target}: {runs} inputs");
}

/// The seeds reach past the first gate of their target (a smoke of parse errors alone would
/// prove little).
#[test]
fn the_seeds_are_real_inputs() {
    use amulet::gguf::Gguf;
    use amulet::tokenizer::{TextTokenizer, TokenizerSpec};
    // `-metadata`: the header without its tensor table parses; `-header`: the table without
    // the tensor data is refused by the range checks, with a typed error.
    for (name, seed) in seeds("gguf_parse") {
        let r = Gguf::parse(&seed);
        if name.ends_with("-metadata") {
            assert!(r.is_ok(), "gguf_parse/{name}");
        } else {
            assert_eq!(r.err().map(|e| e.code()), Some("BAD_MODEL"), "gguf_parse/{name}");
        }
    }
    for (name, seed) in seeds("gguf_prefix") {
        let announced = u64::from_le_bytes(seed[..8].try_into().unwrap()) as usize;
        let r = Gguf::parse_prefix(&seed[8..], seed.len() - 8 + announced);
        assert!(matches!(r, Ok(Some(_))), "gguf_prefix/{name}");
    }
    for (name, seed) in seeds("tokenizer") {
        let n = u16::from_le_bytes([seed[0], seed[1]]) as usize;
        let g = Gguf::parse(&seed[2 + n..]).unwrap_or_else(|e| panic!("tokenizer/{name}: {e}"));
        let tok = TextTokenizer::from_spec(TokenizerSpec::from_gguf(&g).unwrap()).unwrap();
        assert!(!tok.encode(&String::from_utf8_lossy(&seed[2..2 + n]), false).unwrap().is_empty(), "{name}");
    }
}

#[test]
fn gguf_parse() {
    smoke("gguf_parse", fuzzing::gguf_parse);
}

#[test]
fn gguf_prefix() {
    smoke("gguf_prefix", fuzzing::gguf_prefix);
}

#[test]
fn tokenizer() {
    smoke("tokenizer", fuzzing::tokenizer);
}

#[test]
fn chat_template() {
    smoke("chat_template", fuzzing::chat_template);
}

#[test]
fn request() {
    smoke("request", fuzzing::request);
}
