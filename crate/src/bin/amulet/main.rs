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
    cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {}
