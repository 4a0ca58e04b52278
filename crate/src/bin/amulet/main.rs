//! `amulet`: the native face of the engine. Native only; on wasm32 the crate's face is
//! `web.rs`, and this binary is an empty stub so `cargo test --target wasm32` can build.

#[cfg(not(target_arch = "wasm32"))]
mod bench;
#[cfg(not(target_arch = "wasm32"))]
mod chat;
#[cfg(not(target_arch = "wasm32"))]
mod cli;
#[cfg(not(target_arch = "wasm32"))]
mod eval;
#[cfg(not(target_arch = "wasm32"))]
mod gguf_split;
#[cfg(not(target_arch = "wasm32"))]
mod model_path;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    // Our kernels split their work over our own pool (backend/pool.rs). candle's element-wise
    // ops have a pool of their own whose threads spin after each op, on the cores ours need:
    // at 2 threads a 400-token prefill ran 1.15x faster than at 1 with it, 1.5x without.
    // Set before any thread starts (set_var is not safe once threads read the environment).
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {}
