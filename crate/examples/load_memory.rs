//! Where a model's memory goes on the CPU path, natively: the heap after each part of a load
//! (header, tokenizer, weights, the whole engine) and its peak, counted by a tracking
//! allocator, the file read range by range as a browser Worker reads it.
//!
//!     cargo run --release --example load_memory -- models/cache/<file>.gguf
//!
//! wasm adds its own to these (Q4_1 scales as f32, the module), and its memory only grows, so
//! there a part's peak stays; tests/bench/memory-bench.mjs measures the page itself.

use std::alloc::{GlobalAlloc, Layout, System};
use std::borrow::Cow;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use amulet::align::Method;
use amulet::engine::{Engine, GenerateRequest};
use amulet::gguf::{Gguf, TensorSource};
use amulet::model::CpuModel;
use amulet::tokenizer::TextTokenizer;

struct Tracking;
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    PEAK.fetch_max(NOW.fetch_add(by, Relaxed) + by, Relaxed);
}

// SAFETY: every call goes straight to the system allocator; only the counters are added.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grew(l.size());
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        NOW.fetch_sub(l.size(), Relaxed);
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if n > l.size() {
            grew(n - l.size());
        } else {
            NOW.fetch_sub(l.size() - n, Relaxed);
        }
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// The file read range by range into fresh buffers, as the browser's reader hands them over.
struct Ranges(std::fs::File);

impl TensorSource for Ranges {
    fn read(&self, offset: usize, len: usize) -> amulet::Result<Cow<'_, [u8]>> {
        let mut v = vec![0u8; len];
        self.0.read_exact_at(&mut v, offset as u64).map_err(|e| amulet::AmuletError::Io(e.to_string()))?;
        Ok(Cow::Owned(v))
    }
}

/// Runs `f` and prints what it left on the heap and its peak over the start, in MB.
fn part<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = NOW.load(Relaxed);
    PEAK.store(start, Relaxed);
    let out = f();
    let mb = |n: usize| n as f64 / 1e6;
    println!(
        "{what:<10} keeps {:7.1} MB, peak {:7.1} MB",
        mb(NOW.load(Relaxed) - start),
        mb(PEAK.load(Relaxed) - start)
    );
    out
}

fn main() -> amulet::Result<()> {
    let path = std::env::args().nth(1).expect("usage: load_memory FILE.gguf");
    let src = Ranges(std::fs::File::open(&path).map_err(|e| amulet::AmuletError::Io(e.to_string()))?);
    let len = src.0.metadata().map_err(|e| amulet::AmuletError::Io(e.to_string()))?.len() as usize;
    println!("{path}: {:.1} MB", len as f64 / 1e6);
    let g = part("header", || -> amulet::Result<Gguf> {
        let head = src.read(0, len.min(64 << 20))?;
        Gguf::parse_prefix(&head, len)?.ok_or_else(|| amulet::AmuletError::BadModel("header over 64 MB".into()))
    })?;
    drop(part("tokenizer", || TextTokenizer::from_gguf(&g))?);
    drop(part("weights", || CpuModel::load(&g, &src, |_, _| {}))?);
    let mut engine = part("engine", || Engine::load_from(&g, &src, |_, _| {}))?;
    // What a first request adds (the memory bench's: two base tokens after "Hi").
    let mut req = GenerateRequest::new("Hi");
    (req.methods, req.max_tokens, req.ignore_eos) = (vec![Method::Base], 2, true);
    part("2 tokens", || engine.generate(&req, &mut |_| true))?;
    Ok(())
}
