#!/usr/bin/env bash
# One entry point: ./build.sh build | serve | test | test-large | bench | fuzz [SECONDS]
# Each command installs what it needs when it is missing (model files, toolchain targets).
set -euo pipefail
cd "$(dirname "$0")"

START=$SECONDS
log() { printf '\033[1m==> [%dm%02ds] %s\033[0m\n' $(((SECONDS - START) / 60)) $(((SECONDS - START) % 60)) "$*" >&2; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need_models() {
  log "models: default (SmolLM2-135M-Instruct Q4_1), gemma-3-270m (Q4_K_M), Qwen2.5-Coder-0.5B (Q4_K_M)"
  models/fetch.sh >/dev/null
  models/fetch.sh gemma-3-270m-q4_k_m >/dev/null
  models/fetch.sh qwen2.5-coder-0.5b-instruct-q4_k_m >/dev/null
}

need_rust_components() {
  local c
  for c in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
      log "rustup component add $c"
      rustup component add "$c"
    fi
  done
}

need_wasm_toolchain() {
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    log "rustup target add wasm32-unknown-unknown"
    rustup target add wasm32-unknown-unknown
  fi
  if ! wasm-bindgen --version 2>/dev/null | grep -q ' 0.2.130'; then
    log "cargo install wasm-bindgen-cli 0.2.130 (a few minutes, once)"
    cargo install wasm-bindgen-cli --version 0.2.130
  fi
}

need_chromium() {
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    log "apt-get install chromium chromium-driver"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
  fi
}

# The WebGPU backend's tests run natively on lavapipe (Mesa's software Vulkan).
need_vulkan() {
  if ! ls /usr/share/vulkan/icd.d/lvp_icd.*.json >/dev/null 2>&1; then
    log "apt-get install mesa-vulkan-drivers (lavapipe, for the WebGPU backend's tests)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mesa-vulkan-drivers >/dev/null
  fi
  # Mesa asks for a runtime directory; without one it prints an error on every start.
  if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -d "$XDG_RUNTIME_DIR" ]; then
    export XDG_RUNTIME_DIR="${TMPDIR:-/tmp}/amulet-xdg-$(id -u)"
    mkdir -p -m 700 "$XDG_RUNTIME_DIR"
  fi
}

need_node_modules() {
  local dir
  for dir in "$@"; do
    if [ ! -d "$dir/node_modules" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules" ]; then
      log "npm ci in $dir"
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    fi
  done
}

# cargo-fuzz (libFuzzer, sanitizers) needs nightly with its sources.
need_fuzz() {
  if ! rustup toolchain list | grep -q '^nightly'; then
    log "rustup toolchain install nightly (for cargo-fuzz)"
    rustup toolchain install nightly --profile minimal
  fi
  if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
    log "rustup component add rust-src --toolchain nightly"
    rustup component add rust-src --toolchain nightly
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    log "cargo install cargo-fuzz (a minute, once)"
    cargo install cargo-fuzz --locked
  fi
}

FUZZ_TARGETS="gguf_parse gguf_prefix tokenizer chat_template request"

# Each target for SECONDS (or, with --runs N, N inputs after its seeds), corpus in
# fuzz/corpus/TARGET (kept, ignored by git), seeds from fuzz/seeds/TARGET (committed,
# fuzz/make_seeds.py). A crash stops the run and leaves its input in fuzz/artifacts/TARGET.
run_fuzz() {
  local limit="$1" t out
  need_fuzz
  log "cargo +nightly fuzz build (release, debug assertions, AddressSanitizer)"
  cargo +nightly fuzz build --fuzz-dir fuzz
  for t in $FUZZ_TARGETS; do
    mkdir -p "fuzz/corpus/$t"
    log "fuzz $t: $limit"
    out=$(cargo +nightly fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
      $limit -timeout=10 -rss_limit_mb=3072 -print_final_stats=1 2>&1) || {
      printf '%s\n' "$out" | tail -40 >&2
      echo "build.sh fuzz: $t crashed (input in fuzz/artifacts/$t)" >&2
      return 1
    }
    printf '%s\n' "$out" | awk -v t="$t" '/stat::number_of_executed_units/ {n=$2} /stat::peak_rss_mb/ {r=$2}
      END {printf "  %-14s %10d executions, 0 crashes, peak RSS %s MB\n", t, n, r}' >&2
  done
}

cmd_fuzz() {
  run_fuzz "-max_total_time=${1:-60}"
}

build_native() {
  log "cargo build --release (native CLI: target/release/amulet)"
  cargo build --release --bin amulet
}

RELAXED_FLAGS="-C target-feature=+simd128,+relaxed-simd"

# wasm-opt (binaryen, pinned in tests/package.json) folds the constant that rustc's code adds
# to an address into the load's own offset: LLVM leaves most as an i32.add before the load
# (loop strength reduction drops the no-wrap flag it needs), which V8 must compile as its own
# instruction, a fifth of the Q4_1 kernel's loop. Folded, SmolLM2's base decode in Chromium
# went from 57.9 to 61.0 tok/s (1 thread, three runs alternating). Only that pass runs (and
# names are kept): the rest of the code is LLVM's as it was. --low-memory-unused is what
# lets it fold: an address that wrapped past 4 GiB into the first KiB would now trap, and
# Rust code never forms one. The flags are tests/package.json's `optimize-wasm` script, which
# the wasm kernel bench runs too.
optimize_wasm() {
  need_node_modules tests
  local file
  file="$(realpath "$1")"
  (cd tests && npm run --silent optimize-wasm -- "$file" -o "$file")
}

# Four wasm builds (www/src/wasm.js picks one per realm): single-threaded or threaded, each with
# plain simd128 kernels (every engine) and with relaxed SIMD's byte dot product (Chrome 114+).
# Each has its own target dir, since the flags differ.
build_wasm() {
  need_wasm_toolchain
  log "cargo build --release --target wasm32-unknown-unknown (simd128) + wasm-bindgen -> www/pkg"
  cargo build --release --lib --target wasm32-unknown-unknown
  wasm-bindgen --target web --out-dir www/pkg --out-name amulet \
    target/wasm32-unknown-unknown/release/amulet.wasm
  optimize_wasm www/pkg/amulet_bg.wasm
  log "the same with +relaxed-simd -> www/pkg-relaxed"
  RUSTFLAGS="$RELAXED_FLAGS" cargo build --release --lib --target wasm32-unknown-unknown \
    --target-dir target/wasm-relaxed
  wasm-bindgen --target web --out-dir www/pkg-relaxed --out-name amulet \
    target/wasm-relaxed/wasm32-unknown-unknown/release/amulet.wasm
  optimize_wasm www/pkg-relaxed/amulet_bg.wasm
  build_wasm_threads www/pkg-threads target/wasm-threads "+simd128"
  build_wasm_threads www/pkg-threads-relaxed target/wasm-threads-relaxed "+simd128,+relaxed-simd"
}

# A threaded build (OUT, TARGET_DIR, SIMD features): wasm threads need std rebuilt with
# atomics (nightly, -Z build-std) and a shared memory of a fixed maximum.
build_wasm_threads() {
  local out="$1" dir="$2" simd="$3"
  if ! rustup +nightly target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown \
      || ! rustup +nightly component list --installed 2>/dev/null | grep -q '^rust-src'; then
    log "rustup: nightly with rust-src and the wasm32 target (for the threaded wasm build)"
    rustup toolchain install nightly --profile minimal --component rust-src --target wasm32-unknown-unknown
  fi
  log "cargo +nightly build -Z build-std (+atomics,$simd: a threaded wasm build) + wasm-bindgen -> $out"
  local link="-C link-arg=--shared-memory -C link-arg=--import-memory -C link-arg=--max-memory=4294967296"
  link+=" -C link-arg=--export=__wasm_init_tls -C link-arg=--export=__tls_size"
  link+=" -C link-arg=--export=__tls_align -C link-arg=--export=__tls_base"
  RUSTFLAGS="-C target-feature=+atomics,+bulk-memory,+mutable-globals,$simd $link" \
    cargo +nightly build --release --lib --target wasm32-unknown-unknown -Z build-std=panic_abort,std \
    --target-dir "$dir"
  wasm-bindgen --target web --out-dir "$out" --out-name amulet \
    "$dir/wasm32-unknown-unknown/release/amulet.wasm"
  optimize_wasm "$out/amulet_bg.wasm"
}

cmd_build() {
  log "www/src/models.js from models/models.json (models/catalogue.mjs)"
  node models/catalogue.mjs >/dev/null
  build_native
  build_wasm
}

cmd_serve() {
  build_wasm
  models/fetch.sh >/dev/null
  log "serving the demo on http://127.0.0.1:${PORT:-8080}/demo/ (Ctrl-C to stop)"
  # Cross-origin isolated (COOP/COEP), so the page runs the threaded wasm build.
  exec node www/demo/serve.mjs "${PORT:-8080}" --isolate
}

# Cheap checks first: the repository stands alone, its code is formatted and lint-free.
gates() {
  log "gates: nothing outside the repository, cargo fmt, clippy (native, wasm32, wasm32 relaxed SIMD), prettier"
  tests/check-self-contained.sh
  need_rust_components
  cargo fmt --check
  cargo clippy --release --all-targets -- -D warnings
  need_wasm_toolchain
  cargo clippy --release --target wasm32-unknown-unknown --lib --test wasm_api --test wasm_webgpu --test attend -- -D warnings
  RUSTFLAGS="$RELAXED_FLAGS" cargo clippy --release --target wasm32-unknown-unknown --target-dir target/wasm-relaxed \
    --lib --test wasm_kernels -- -D warnings
  need_node_modules tests
  (cd tests && npm run --silent format:check)
}

cmd_test() {
  # cargo runs tests side by side: one CPU thread each keeps them from fighting over the cores.
  export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-1}"
  gates
  need_models
  need_chromium
  need_vulkan
  build_wasm

  log "native: cargo test --release (unit, real-model, fixture, CLI, WebGPU-on-lavapipe tests)"
  cargo test --release --workspace

  log "wasm: wasm-bindgen-test in Node, then in headless Chromium"
  export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
  export WASM_BINDGEN_TEST_TIMEOUT=300
  cargo test --release --target wasm32-unknown-unknown --test wasm_api --test wasm_kernels --test attend
  log "wasm: the relaxed-SIMD weight kernels against their scalar path, in headless Chromium"
  RUSTFLAGS="$RELAXED_FLAGS" WASM_BINDGEN_USE_BROWSER=1 CHROMEDRIVER="$(command -v chromedriver)" \
    WASM_BINDGEN_TEST_WEBDRIVER_JSON="$PWD/crate/webdriver.json" \
    cargo test --release --target wasm32-unknown-unknown --target-dir target/wasm-relaxed --test wasm_kernels \
    --test attend
  WASM_BINDGEN_USE_BROWSER=1 CHROMEDRIVER="$(command -v chromedriver)" \
    WASM_BINDGEN_TEST_WEBDRIVER_JSON="$PWD/crate/webdriver.json" \
    cargo test --release --target wasm32-unknown-unknown --test wasm_api
  log "wasm: the WebGPU backend against the CPU backend inside headless Chromium (SwiftShader)"
  WASM_BINDGEN_USE_BROWSER=1 CHROMEDRIVER="$(command -v chromedriver)" \
    WASM_BINDGEN_TEST_WEBDRIVER_JSON="$PWD/crate/webdriver.json" \
    cargo test --release --target wasm32-unknown-unknown --test wasm_webgpu

  need_node_modules tests tests/browser
  log "node: the npm package on the real model, TypeScript types, Vite build"
  (cd tests && node --test node/)
  log "browser: the demo page in headless Chromium (Playwright)"
  (cd tests/browser && node --test)
}

cmd_bench() {
  build_native
  build_wasm
  mkdir -p target/bench
  # Models: catalogue ids (models/fetch.sh --list), fetched when missing.
  local ids="${BENCH_MODELS:-smollm2-135m-instruct-q4_1 qwen2.5-coder-0.5b-instruct-q4_k_m}"
  local runs="${BENCH_RUNS:-3}" threads="${BENCH_THREADS:-2}" id file name
  local -a files=() llama_args=() json=()
  for id in $ids; do
    file="$(models/fetch.sh "$id")"
    files+=("$file")
    llama_args+=(--model "$file")
  done
  for file in "${files[@]}"; do
    name="$(basename "$file" .gguf)"
    log "native bench, $name: base and amulet decode, threads 1 and $threads interleaved, prefill of a ~400-token prompt, memory-read probe"
    ./target/release/amulet bench --model "$file" --device cpu --threads "1,$threads" --runs "$runs" \
      --prefill-tokens 400 --out "target/bench/native-$name.json"
    json+=("target/bench/native-$name.json")
  done
  need_node_modules tests/bench
  log "native vs llama.cpp (node-llama-cpp's prebuilt CPU build): same GGUF, prompt tokens and threads (1, $threads), interleaved"
  (cd tests/bench && node llamacpp-bench.mjs --amulet ../../target/release/amulet --threads "1,$threads" \
    --rounds "$runs" --tokens 128 --prefill-tokens 400 "${llama_args[@]}" --out ../../target/bench/native-vs-llamacpp.json)
  json+=(target/bench/native-vs-llamacpp.json)
  need_vulkan
  log "native WebGPU next to CPU: SmolLM2-135M-shaped random weights (tests/bench/gpu-device.sh)"
  # On a software adapter (lavapipe) this only shows the path runs: SHAPE=tiny keeps it short.
  if ./target/release/amulet generate --device auto --method base --max-tokens 1 \
      --json hi 2>/dev/null | grep -q '"device":"webgpu"'; then
    RUNS="$runs" tests/bench/gpu-device.sh ./target/release/amulet target/bench
  else
    log "no hardware WebGPU adapter here: lavapipe smoke run on a tiny fixture (figures prove nothing about speed)"
    SHAPE=tiny RUNS=1 tests/bench/gpu-device.sh ./target/release/amulet target/bench
  fi
  json+=(target/bench/gpu-bench.json)
  need_chromium
  for file in "${files[@]}"; do
    name="$(basename "$file" .gguf)"
    log "browser bench, $name: ours at 1 and $threads threads next to wllama at the same threads, headless Chromium"
    (cd tests/bench && node browser-bench.mjs --model "$file" --runs "$runs" --tokens 128 --threads "$threads" \
      --prefill-tokens 400 --amulet ../../target/release/amulet --out "../../target/bench/browser-$name.json")
    json+=("target/bench/browser-$name.json")
  done
  log "JSON: ${json[*]}"
}

# The large suite: what needs the 1.5B model or minutes of software WebGPU (the suites check
# AMULET_LARGE=1); run on top of `test`, which it does not repeat.
cmd_test_large() {
  export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-1}"
  need_models
  models/fetch.sh qwen2.5-coder-1.5b-instruct-q4_k_m >/dev/null
  need_chromium
  need_vulkan
  build_wasm
  cargo build --release --bin amulet
  export AMULET_LARGE=1
  log "large: tokenizer and WebGPU-on-lavapipe tests of Qwen2.5-Coder-1.5B"
  cargo test --release --test tokenizer_reference --test webgpu_reference
  need_node_modules tests/browser
  log "large: SmolLM2 on WebGPU (SwiftShader) in Chromium"
  (cd tests/browser && node --test webgpu.test.mjs qwen.test.mjs)
}

case "${1:-}" in
  build) shift; cmd_build "$@" ;;
  serve) shift; cmd_serve "$@" ;;
  test)  shift; cmd_test "$@" ;;
  test-large) shift; cmd_test_large "$@" ;;
  bench) shift; cmd_bench "$@" ;;
  fuzz)  shift; cmd_fuzz "$@" ;;
  *) echo "usage: ./build.sh build | serve | test | test-large | bench | fuzz [SECONDS]" >&2; exit 64 ;;
esac
