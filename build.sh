#!/usr/bin/env bash
# One entry point: ./build.sh build | serve | test | bench
# Each command installs what it needs when it is missing (model files, toolchain targets).
set -euo pipefail
cd "$(dirname "$0")"
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-1}"   # one thread is fastest on 2-core machines

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

need_models() {
  log "models: default (SmolLM2-135M-Instruct Q4_1) and gemma-3-270m (Q4_K_M)"
  models/fetch.sh >/dev/null
  models/fetch.sh gemma-3-270m-q4_k_m >/dev/null
}

build_native() {
  log "cargo build --release (native CLI: target/release/amulet)"
  cargo build --release --bin amulet
}

cmd_build() {
  build_native
}

cmd_serve() {
  # The browser build lands with the browser issue; until then the main job is the CLI demo.
  build_native
  models/fetch.sh >/dev/null
  local q="${1:-How can I improve my eating habits without compromising on taste?}"
  log "base answer"
  ./target/release/amulet generate --method base --max-tokens 96 "$q"
  log "amulet answer, preference: concise"
  ./target/release/amulet generate --method amulet --preference concise --max-tokens 96 "$q"
  log "amulet answer, preference: uplifting"
  ./target/release/amulet generate --method amulet --preference uplifting --max-tokens 96 "$q"
}

cmd_test() {
  need_models
  log "cargo test --release (unit tests, real-model tests, CLI tests)"
  cargo test --release --workspace 2>&1 | tee /tmp/amulet-cargo-test.log
  local rc=${PIPESTATUS[0]}
  [ "$rc" -eq 0 ] || { log "tests failed"; exit "$rc"; }
}

cmd_bench() {
  build_native
  models/fetch.sh >/dev/null
  log "native bench: base vs amulet, SmolLM2-135M Q4_1, 128 new tokens, RAYON_NUM_THREADS=$RAYON_NUM_THREADS"
  mkdir -p target/bench
  ./target/release/amulet bench --runs "${BENCH_RUNS:-5}" --json > target/bench/native.json
  ./target/release/amulet bench --runs "${BENCH_RUNS:-5}"
  log "JSON: target/bench/native.json"
}

case "${1:-}" in
  build) shift; cmd_build "$@" ;;
  serve) shift; cmd_serve "$@" ;;
  test)  shift; cmd_test "$@" ;;
  bench) shift; cmd_bench "$@" ;;
  *) echo "usage: ./build.sh build | serve | test | bench" >&2; exit 64 ;;
esac
