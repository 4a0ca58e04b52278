//! The CPU backend's threads: one persistent pool (rayon's global pool: natively its own
//! threads, in a browser Web Workers started by wasm-bindgen-rayon's `initThreadPool`), and
//! the one way kernels use it: split the output rows of a product (or the rows and heads of
//! attention) into one contiguous range per thread. The engine never sees any of this.
//!
//! With one thread (the default of the single-threaded wasm build) every split runs inline,
//! with no pool involved at all.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

#[cfg(not(target_arch = "wasm32"))]
use crate::error::AmuletError;
use crate::error::Result;

/// 0: not configured yet (then: the pool's size, or 1 where there are no threads).
static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Threads the CPU kernels split their work over.
pub fn threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => default_threads(),
        n => n,
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn default_threads() -> usize {
    rayon::current_num_threads()
}

#[cfg(target_arch = "wasm32")]
fn default_threads() -> usize {
    // Single-threaded build: rayon runs inline. Threaded build: initThreadPool sets the count.
    1
}

/// Natively: uses `n` threads from now on (`0`: one per core). The pool itself is started once,
/// with one thread per core (or `n` if more), so the count can change between calls (a
/// benchmark compares 1 and 2 threads in one process); it never grows past that first size.
#[cfg(not(target_arch = "wasm32"))]
pub fn set_threads(n: usize) -> Result<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |p| p.get());
    let n = if n == 0 { cores } else { n };
    // Fails when the pool already runs (started here or by a candle op): then keep its size.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n.max(cores))
        .thread_name(|i| format!("amulet-cpu-{i}"))
        .build_global();
    let size = rayon::current_num_threads();
    if n > size {
        return Err(AmuletError::bad_option(
            "threads",
            format!("{n} is more than the {size} threads of this process's CPU pool"),
        ));
    }
    THREADS.store(n, Ordering::Relaxed);
    Ok(n)
}

/// In a browser the pool is started from JS (wasm-bindgen-rayon's `initThreadPool(n)`); this
/// records how many of its threads the kernels use.
#[cfg(target_arch = "wasm32")]
pub fn set_threads(n: usize) -> Result<usize> {
    THREADS.store(n.max(1), Ordering::Relaxed);
    Ok(n.max(1))
}

/// Fewest weight rows a thread takes in a product: below this a split costs more in handing
/// work over than it saves (a 576-wide Q4_1 row is 360 bytes; 64 of them, 23 KB, take a few
/// microseconds).
pub const MIN_ROWS: usize = 64;

/// Runs `f` over `0..n` split into at most `threads()` contiguous ranges of at least `min`
/// items (so small work stays on one thread), in parallel, and returns when all are done.
pub fn split(n: usize, min: usize, f: impl Fn(Range<usize>) + Sync) {
    let parts = threads().min(n / min.max(1)).max(1);
    if parts == 1 {
        f(0..n);
        return;
    }
    let range = |p: usize| p * n / parts..(p + 1) * n / parts;
    let f = &f;
    rayon::scope(|s| {
        for p in 1..parts {
            s.spawn(move |_| f(range(p)));
        }
        f(range(0));
    });
}

/// A product's output columns `0..n` (weight rows), split over the threads: `f(cols, buf, ld)`
/// writes `buf[r * ld + (j - cols.start)]` for the `m` activation rows. With one range it
/// writes `out` (stride `ld`) directly; otherwise each range fills its thread's scratch
/// buffer, then copies it into its columns (one output row interleaves every range's columns,
/// so the ranges cannot share `out` as slices; the copy is m x n floats against m x n dot
/// products). The scratch is kept between products (a fresh buffer a product cost a page
/// fault per 4 KB in a prefill); it grows to the largest m x n / threads seen.
/// The first error of any range is returned.
pub fn split_cols(
    n: usize,
    m: usize,
    out: &mut [f32],
    ld: usize,
    f: impl Fn(Range<usize>, &mut [f32], usize) -> Result<()> + Sync,
) -> Result<()> {
    if threads() == 1 || n < 2 * MIN_ROWS {
        return f(0..n, out, ld);
    }
    if m > 0 && (m - 1) * ld + n > out.len() {
        return Err(crate::error::AmuletError::Compute(format!(
            "split_cols: output has {} values, {m} rows of stride {ld} need {}",
            out.len(),
            (m - 1) * ld + n
        )));
    }
    let first_error = std::sync::Mutex::new(None);
    let shared = Shared::new(out);
    split(n, MIN_ROWS, |cols| {
        SCRATCH.with_borrow_mut(|scratch| {
            if scratch.len() < m * cols.len() {
                scratch.resize(m * cols.len(), 0.0);
            }
            let buf = &mut scratch[..m * cols.len()];
            range_into(&f, cols, buf, &shared, ld, &first_error)
        })
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

thread_local! {
    /// `split_cols`'s per-thread output buffer.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One range of `split_cols`: `f` into `buf` (every value written by the kernel), then `buf`
/// into the range's columns of the shared output.
fn range_into(
    f: &(impl Fn(Range<usize>, &mut [f32], usize) -> Result<()> + Sync),
    cols: Range<usize>,
    buf: &mut [f32],
    shared: &Shared,
    ld: usize,
    first_error: &std::sync::Mutex<Option<crate::error::AmuletError>>,
) {
    match f(cols.clone(), buf, cols.len()) {
        Ok(()) => {
            for (r, row) in buf.chunks_exact(cols.len().max(1)).enumerate() {
                let at = r * ld + cols.start;
                // SAFETY: columns `cols` of every row belong to this range alone, and the
                // bound was checked by `split_cols`.
                unsafe { shared.slice(at..at + row.len()) }.copy_from_slice(row);
            }
        }
        Err(e) => {
            first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(e);
        }
    }
}

/// A mutable f32 slice that parallel ranges write disjoint elements of.
#[derive(Clone, Copy)]
pub struct Shared {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: `Shared` is only handed to `split` ranges that write disjoint indices (each caller
// states which), and the slice outlives the scope that `split` waits for.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    pub fn new(out: &mut [f32]) -> Self {
        Shared { ptr: out.as_mut_ptr(), len: out.len() }
    }

    /// # Safety
    /// No other range writes or reads index `i` while this one does.
    #[inline(always)]
    pub unsafe fn set(&self, i: usize, v: f32) {
        debug_assert!(i < self.len);
        *self.ptr.add(i) = v;
    }

    /// # Safety
    /// `range` is disjoint from every range other threads use meanwhile.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)] // the point of the type: disjoint ranges, stated by the caller
    pub unsafe fn slice(&self, range: Range<usize>) -> &mut [f32] {
        debug_assert!(range.end <= self.len);
        std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_every_item_once() {
        for (n, min) in [(0, 1), (1, 1), (7, 1), (100, 8), (1000, 3), (5, 100)] {
            let mut out = vec![0f32; n];
            let shared = Shared::new(&mut out);
            split(n, min, |r| {
                for i in r {
                    // SAFETY: the ranges of one split are disjoint.
                    unsafe { shared.set(i, shared.slice(i..i + 1)[0] + 1.0) };
                }
            });
            assert!(out.iter().all(|&v| v == 1.0), "n {n} min {min}");
        }
    }

    #[test]
    fn split_cols_writes_every_column_of_every_row_once() {
        // A pool of its own: the global one may hold a single thread (RAYON_NUM_THREADS=1).
        rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap().install(split_cols_cases);
    }

    fn split_cols_cases() {
        assert_eq!(threads(), 2, "the installed pool's size");
        for (n, m, ld) in [(1, 1, 1), (127, 2, 130), (128, 1, 128), (1000, 3, 1000), (4097, 8, 5000)] {
            let mut out = vec![-1f32; (m - 1) * ld + n + 3];
            split_cols(n, m, &mut out, ld, |cols, buf, bld| {
                for r in 0..m {
                    for j in cols.clone() {
                        buf[r * bld + j - cols.start] = (r * 10_000 + j) as f32;
                    }
                }
                Ok(())
            })
            .unwrap();
            for r in 0..m {
                for j in 0..ld.min(out.len() - r * ld) {
                    let want = if j < n { (r * 10_000 + j) as f32 } else { -1.0 };
                    assert_eq!(out[r * ld + j], want, "n {n} m {m} row {r} col {j}");
                }
            }
        }
        let mut out = vec![0f32; 10];
        let err = split_cols(1000, 1, &mut out, 1000, |_, _, _| Ok(())).unwrap_err();
        assert!(err.to_string().contains("split_cols"), "{err}");
        let mut out = vec![0f32; 1000];
        let err = split_cols(1000, 1, &mut out, 1000, |c, _, _| {
            if c.start > 0 {
                Err(crate::error::AmuletError::Compute("range failed".into()))
            } else {
                Ok(())
            }
        });
        assert!(err.is_err());
    }
}
