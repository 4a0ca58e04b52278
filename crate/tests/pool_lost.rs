//! A pool thread that dies (in a browser: a trap in a helper's Web Worker, which sets the
//! pool's lost flag from its `error` / `unhandledrejection` event) fails the pass that waits
//! for it instead of hanging it, and every later pass with `WORKER_LOST`. Natively no thread
//! dies and lets the process go on, so a helper stuck in its part stands for the dead one and
//! the test sets the flag as the Worker's listener would. Its own process: the flag is global.

#![cfg(not(target_arch = "wasm32"))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use amulet::backend::pool::{lost, mark_lost, on_pool, split};

#[test]
fn a_lost_helper_fails_the_waiting_pass_and_every_later_one() {
    // Without the lost flag the pass waits for the dead part forever: fail instead of hanging.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(60));
        eprintln!("the pass still waits for its dead helper after 60 s");
        std::process::abort();
    });
    rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap().install(|| {
        assert_eq!(on_pool(|| Ok(1)), Ok(1), "a sound pool runs");
        let caller = std::thread::current().id();
        let helper_started = AtomicBool::new(false);
        let started = &helper_started;
        let pass = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            on_pool(|| {
                std::thread::scope(|s| {
                    // The dying Worker's listener: marks the pool lost once the helper is in.
                    s.spawn(|| {
                        let t = Instant::now();
                        while !started.load(Ordering::Acquire) && t.elapsed() < Duration::from_secs(10) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        std::thread::sleep(Duration::from_millis(20));
                        mark_lost();
                    });
                    split(2, 1, |_| {
                        if std::thread::current().id() == caller {
                            // Waits for the helper to take the other part.
                            let t = Instant::now();
                            while !started.load(Ordering::Acquire) {
                                assert!(t.elapsed() < Duration::from_secs(10), "no helper took a part");
                                std::hint::spin_loop();
                            }
                        } else {
                            // The dead helper: never counts its part done.
                            started.store(true, Ordering::Release);
                            loop {
                                std::thread::park();
                            }
                        }
                    });
                });
                Ok(())
            })
        }));
        let message = match pass {
            Ok(r) => panic!("the pass returned {r:?} with its helper's part unfinished"),
            Err(p) => p.downcast_ref::<String>().cloned().unwrap_or_default(),
        };
        assert!(message.contains("a thread of the CPU pool stopped"), "{message}");
        assert!(lost());
    });
    // Every later pass, at any thread count, fails at once with the typed error.
    for _ in 0..2 {
        let err = on_pool(|| Ok(())).unwrap_err();
        assert_eq!(err.code(), "WORKER_LOST", "{err}");
    }
}
