//! The CPU backend's threads: one persistent pool (rayon's global pool: natively its own
//! threads, in a browser Web Workers started by wasm-bindgen-rayon's `initThreadPool`), and
//! the one way kernels use it: split the output rows of a product (or the rows and heads of
//! attention) into one contiguous range per thread. The engine never sees any of this.
//!
//! With one thread (the default of the single-threaded wasm build) every split runs inline,
//! with no pool involved at all.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::error::{AmuletError, Result};

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
/// Inside `on_pool` the ranges go to its team (threads that are already running); elsewhere
/// to rayon's pool.
pub fn split(n: usize, min: usize, f: impl Fn(Range<usize>) + Sync) {
    let parts = threads().min(n / min.max(1)).max(1);
    if parts == 1 {
        f(0..n);
        return;
    }
    let range = |p: usize| p * n / parts..(p + 1) * n / parts;
    if TEAM.get().is_some_and(|t| t.run(parts, &|p| f(range(p)))) {
        return;
    }
    let f = &f;
    rayon::scope(|s| {
        for p in 1..parts {
            s.spawn(move |_| f(range(p)));
        }
        f(range(0));
    });
}

/// Runs `f` (a whole forward pass) with a team: `threads() - 1` of the pool's threads wait,
/// spinning, for the ranges of every `split` inside `f` until it returns. Handing a range to a
/// sleeping thread costs a wake-up (tens of microseconds natively, more between a browser's
/// Web Workers) and a forward pass has about five splits a block; a spinning thread takes it
/// at once. The caller's thread takes ranges too, so no split waits for a thread that has
/// not arrived: the team only ever speeds a split up (llama.cpp's threads spin the same way
/// during a graph).
///
/// The helpers share the team through an `Arc` and `on_pool` does not wait for them to leave:
/// a helper that died (a trap in a browser's Web Worker ends its thread without unwinding)
/// would hold a scope open forever. Once a pool thread is lost every call fails with
/// `ThreadLost` (see [`lost`]).
pub fn on_pool<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    if lost() {
        return Err(thread_lost());
    }
    let helpers = threads() - 1;
    if helpers == 0 || TEAM.get().is_some() {
        return f();
    }
    let team = std::sync::Arc::new(Team::default());
    // `f` stays on the calling thread and its stack (in a browser a rayon thread's stack is
    // smaller than the Worker's own: a whole forward pass of the 1.5B on one trapped); the
    // helpers are queued on the pool.
    for _ in 0..helpers {
        let team = team.clone();
        rayon::spawn(move || team.help());
    }
    // Stops the helpers however `f` ends (a panic too). No split can be claimed after the last
    // one returned (its every part was), so a helper that has not seen `stop` yet touches
    // nothing of `f`'s.
    struct Stop<'a>(&'a Team);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            self.0.stop.store(true, Ordering::Release);
            TEAM.set(None);
        }
    }
    let stop = Stop(&team);
    // SAFETY (lifetime): `TEAM` is cleared by `stop` before `team` goes out of scope.
    TEAM.set(Some(unsafe { &*(&*team as *const Team) }));
    let out = f();
    drop(stop);
    // A helper lost between two splits took nothing with it, but the pool is short from now on.
    if lost() {
        return Err(thread_lost());
    }
    out
}

/// Non-zero once a thread of the pool has died. In a browser a helper's Worker sets it from
/// its `error` and `unhandledrejection` events (wasm-bindgen-rayon runs the thread inside a
/// promise, so a trap rejects it); a u32, so JavaScript can store it with `Atomics`.
static LOST: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Whether a thread of the CPU pool has died: every forward pass fails from then on.
pub fn lost() -> bool {
    LOST.load(Ordering::Acquire) != 0
}

/// Marks the pool lost, as a dying helper's Worker does: for tests (natively no thread dies
/// and lets the process go on).
#[doc(hidden)]
pub fn mark_lost() {
    LOST.store(1, Ordering::Release);
}

fn thread_lost() -> AmuletError {
    AmuletError::ThreadLost(
        "a thread of the CPU pool stopped (its error is in the console); this engine cannot run any more: \
         create a new one"
            .into(),
    )
}

/// A helper's thread, on its first team: its Worker marks the pool lost if it dies. Natively a
/// thread that dies takes the process with it (or unwinds, counting its part done).
fn watch_this_thread() {
    #[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
    {
        thread_local! {
            static WATCHED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        }
        if !WATCHED.replace(true) {
            js::watch_thread(wasm_bindgen::memory(), &LOST as *const _ as u32);
        }
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
mod js {
    use wasm_bindgen::prelude::*;

    #[wasm_bindgen(inline_js = "
        export function watch_thread(memory, at) {
            const mark = () => Atomics.store(new Int32Array(memory.buffer), at >>> 2, 1);
            self.addEventListener('error', mark);
            self.addEventListener('unhandledrejection', mark);
        }")]
    extern "C" {
        pub fn watch_thread(memory: JsValue, at: u32);
    }
}

thread_local! {
    /// The team of the `on_pool` call running on this thread, if any.
    static TEAM: std::cell::Cell<Option<&'static Team>> = const { std::cell::Cell::new(None) };
}

/// The threads of one `on_pool` call and the split they work on. `state` is one word that
/// holds all a claim depends on: the split's generation (high 32 bits), its number of parts
/// (16 bits) and the next unclaimed part (low 16). A part is claimed by a compare-and-swap of
/// the whole word, so a claim can only succeed on the split it read, with that split's own
/// part count: a helper that reads the word while the caller publishes the next split either
/// sees the old split (every part taken) or the new one, never the old generation with the
/// new count. (Kept in two fields, the count and the word, that mix let a helper claim part 0
/// of the empty split a team starts with: it ran while the caller ran the same part, and the
/// split returned with the helper still writing. crate/tests/threads.rs caught it.)
/// `job` is only read after a successful claim: the split cannot return, nor the next one
/// replace `job`, before that part is done.
#[derive(Default)]
struct Team {
    state: AtomicU64,
    done: AtomicUsize,
    job: std::sync::atomic::AtomicPtr<()>,
    stop: std::sync::atomic::AtomicBool,
}

type Job<'a> = &'a (dyn Fn(usize) + Sync);

/// Most parts one team split can have (the state's 16-bit fields).
const MAX_PARTS: usize = 0xffff;

/// The state word of part `next` of split `gen` with `parts` parts.
fn word(gen: u64, parts: usize, next: usize) -> u64 {
    (gen << 32) | ((parts as u64) << 16) | next as u64
}

impl Team {
    /// Runs `job(p)` for every `p < parts` over the team; false when the split has more parts
    /// than the state holds (the caller then uses rayon).
    fn run(&self, parts: usize, job: Job<'_>) -> bool {
        if parts > MAX_PARTS {
            return false;
        }
        let gen = (self.state.load(Ordering::Acquire) >> 32) + 1;
        let slot: *const Job<'_> = &job;
        self.job.store(slot as *mut (), Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        // Publishes the job and the reset count with the new generation.
        self.state.store(word(gen, parts, 0), Ordering::Release);
        while self.work() {}
        let mut spins = 0u32;
        while self.done.load(Ordering::Acquire) < parts {
            if lost() {
                // A helper died holding a part: it will never count it done, and the part's
                // job and output must stay where they are, so this thread cannot return
                // either. A panic aborts in wasm (a trap: the engine reports ThreadLost).
                panic!("{}", thread_lost());
            }
            spin(&mut spins);
        }
        debug_assert_eq!(self.state.load(Ordering::Acquire), word(gen, parts, parts));
        true
    }

    /// Claims and runs one part of the split the state shows; false when none is left.
    fn work(&self) -> bool {
        let state = self.state.load(Ordering::Acquire);
        let (parts, p) = ((state >> 16) & 0xffff, state & 0xffff);
        if p >= parts {
            return false;
        }
        if self.state.compare_exchange(state, state + 1, Ordering::AcqRel, Ordering::Relaxed).is_err() {
            return true; // another thread took it, or the split changed: look again
        }
        // Counts the part as done even if it panics, so the split's caller does not wait forever
        // (the panic then ends the `on_pool` scope).
        struct Done<'a>(&'a AtomicUsize);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Release);
            }
        }
        let _done = Done(&self.done);
        // SAFETY: the claim succeeded on this split's own word, so the split is still waiting
        // for this part and its `job` (stored before the word was published) is alive.
        let job = unsafe { *(self.job.load(Ordering::Relaxed) as *const Job<'_>) };
        job(p as usize);
        true
    }

    /// A helper: takes parts of every split until the team stops, or until no split has come
    /// for `IDLE_MS`. That bound is a backstop: a pool thread waiting inside some other rayon
    /// job of the pass (a library op that uses rayon) may pick this job up; it must return to
    /// its wait, or the pass would wait for it forever. Our own ops of the pass do not use
    /// rayon, so this only ever costs the rest of such a pass its helper. (It was a count of
    /// spins, about 10 ms in wasm: a long prefill's serial steps between two splits, such as
    /// quantizing 459 rows of 4,864 activations, took longer, the helper left, and the rest of
    /// the prefill ran on one thread: 2 threads prefilled no faster than 1 in the browser.)
    fn help(&self) {
        watch_this_thread();
        let mut spins = 0u32;
        let mut idle_since = None;
        while !self.stop.load(Ordering::Acquire) {
            if self.work() {
                (spins, idle_since) = (0, None);
                continue;
            }
            spin(&mut spins);
            if spins.is_multiple_of(4096) {
                let now = now_ms();
                match idle_since {
                    None => idle_since = Some(now),
                    Some(t) if now - t > IDLE_MS => return,
                    Some(_) => {}
                }
            }
        }
    }
}

/// How long a helper waits for a split before it leaves its team: far longer than the gaps
/// between the splits of a pass.
const IDLE_MS: f64 = 1000.0;

/// Milliseconds since the first call: monotonic natively; in wasm32-unknown-unknown, which has
/// no `Instant`, the wall clock (the engine's own clock there is the page's `performance.now`).
pub(crate) fn now_ms() -> f64 {
    #[cfg(target_arch = "wasm32")]
    {
        js_sys::Date::now()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64() * 1e3
    }
}

/// One round of waiting: a CPU spin hint, and natively every so often a yield so a thread that
/// shares the core (an oversubscribed machine) still runs.
#[inline]
fn spin(spins: &mut u32) {
    *spins = spins.wrapping_add(1);
    std::hint::spin_loop();
    #[cfg(not(target_arch = "wasm32"))]
    if spins.is_multiple_of(1024) {
        std::thread::yield_now();
    }
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
        return Err(AmuletError::Compute(format!(
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

/// A mutable slice (f32 unless said) that parallel ranges write disjoint elements of.
pub struct Shared<T = f32> {
    ptr: *mut T,
    len: usize,
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Shared<T> {}

// SAFETY: `Shared` is only handed to `split` ranges that write disjoint indices (each caller
// states which), and the slice outlives the scope that `split` waits for.
unsafe impl<T: Send> Send for Shared<T> {}
unsafe impl<T: Send> Sync for Shared<T> {}

impl<T> Shared<T> {
    pub fn new(out: &mut [T]) -> Self {
        Shared { ptr: out.as_mut_ptr(), len: out.len() }
    }

    /// # Safety
    /// No other range writes or reads index `i` while this one does.
    #[inline(always)]
    pub unsafe fn set(&self, i: usize, v: T) {
        debug_assert!(i < self.len);
        *self.ptr.add(i) = v;
    }

    /// # Safety
    /// `range` is disjoint from every range other threads use meanwhile.
    #[inline(always)]
    #[allow(clippy::mut_from_ref)] // the point of the type: disjoint ranges, stated by the caller
    pub unsafe fn slice(&self, range: Range<usize>) -> &mut [T] {
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
    fn a_team_runs_every_part_of_every_split_once() {
        rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap().install(|| {
            let seen = on_pool(|| {
                assert!(TEAM.get().is_some(), "on_pool with 2 threads forms a team");
                let mut seen = Vec::new();
                for n in [2, 64, 1000, 4097] {
                    for _ in 0..50 {
                        let mut out = vec![0f32; n];
                        let shared = Shared::new(&mut out);
                        split(n, 1, |r| {
                            for i in r {
                                // SAFETY: the ranges of one split are disjoint.
                                unsafe { shared.set(i, shared.slice(i..i + 1)[0] + 1.0) };
                            }
                        });
                        seen.push(out.iter().all(|&v| v == 1.0));
                    }
                }
                split_cols_cases(); // through the team
                Ok(seen)
            })
            .unwrap();
            assert!(seen.iter().all(|&ok| ok));
            assert!(TEAM.get().is_none(), "the team ends with on_pool");
            split_cols_cases();
            assert_eq!(on_pool(|| Ok(7)), Ok(7));
        });
    }

    /// Many short teams, each publishing its first split while its helper spins on the empty
    /// one: every item runs exactly once.
    #[test]
    fn a_fresh_team_runs_each_part_once() {
        use std::sync::atomic::AtomicU32;
        rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap().install(|| {
            let runs: Vec<AtomicU32> = (0..1000).map(|_| AtomicU32::new(0)).collect();
            for team in 0..10_000 {
                on_pool(|| {
                    // As a forward pass does before its first product: the helper arrives and
                    // spins on the empty split while this thread publishes the first one.
                    let t = std::time::Instant::now();
                    while t.elapsed() < std::time::Duration::from_micros(20) {}
                    for n in [1000, 1, 2, 1000] {
                        split(n, 1, |r| {
                            for i in r {
                                runs[i].fetch_add(1, Ordering::Relaxed);
                            }
                        });
                    }
                    Ok(())
                })
                .unwrap();
                let want = |i: usize| 2 + u32::from(i < 1) + u32::from(i < 2);
                for (i, c) in runs.iter().enumerate() {
                    assert_eq!(c.swap(0, Ordering::Relaxed), want(i), "team {team}: item {i}");
                }
            }
        });
    }

    /// A pass whose caller works alone for a while between two splits (a long prefill's
    /// serial steps) keeps its helper: the second split's two parts run on two threads.
    #[test]
    fn a_helper_stays_through_a_long_serial_step() {
        use std::time::Duration;
        rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap().install(|| {
            let ids = std::sync::Mutex::new(Vec::new());
            on_pool(|| {
                split(2, 1, |_| {});
                std::thread::sleep(Duration::from_millis(300));
                split(2, 1, |_| {
                    // Long parts: the spinning helper claims one while the caller runs the other.
                    std::thread::sleep(Duration::from_millis(50));
                    ids.lock().unwrap().push(std::thread::current().id());
                });
                Ok(())
            })
            .unwrap();
            let ids = ids.into_inner().unwrap();
            assert_eq!(ids.len(), 2);
            assert_ne!(ids[0], ids[1], "the helper left its team during the serial step");
        });
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
