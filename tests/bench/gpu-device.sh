#!/usr/bin/env bash
# The WebGPU benchmark on a machine with a real GPU, through wgpu's Vulkan backend:
# a random-weight GGUF with SmolLM2-135M-Instruct Q4_1's exact shapes and types is made on
# the spot (speed depends on shapes only; the real file is too big to carry), then
# `amulet bench` measures the WebGPU and CPU paths in the same run, and a short profiled
# generation splits the GPU time by kernel.
#   tests/bench/gpu-device.sh [AMULET_BINARY] [OUT_DIR]     (SHAPE=tiny for a quick check)
set -uo pipefail
bin=${1:-target/release/amulet}
out=${2:-target/bench}
mkdir -p "$out"
# The device machines ship the NVIDIA driver but no Vulkan loader: unpack carried debs.
if [ -d .gl ] && ! ldconfig -p | grep -q libvulkan.so.1; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES=$icd
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
nproc
model=/tmp/amulet-gpu-fixture.gguf
"$bin" fixture --arch llama --shape "${SHAPE:-smollm2-135m}" --quant q4_1 --seed 1 "$model" || exit 1
ls -la "$model"
# One CPU thread is our CPU path's fastest setting on small machines; the second run gives
# the CPU path every core, so the WebGPU figure is compared against the better of the two.
RAYON_NUM_THREADS=1 timeout 300 "$bin" bench --model "$model" --device webgpu,cpu --runs "${RUNS:-3}" --tokens 128 \
  --out "$out/gpu-bench.json" 2>&1 | grep -v XDG_RUNTIME
# What drawing the token on the GPU saves: the same WebGPU bench reading the two vocabulary
# rows back each step instead (the engine then combines and samples on the CPU).
AMULET_GPU_CHOOSE=0 RAYON_NUM_THREADS=1 timeout 300 "$bin" bench --model "$model" --device webgpu --runs "${RUNS:-3}" \
  --tokens 128 --out "$out/gpu-bench-rows-read-back.json" 2>&1 | grep -v XDG_RUNTIME
# The tiled matmul for prefill against the matvec's 8-row slices (the default on hardware
# adapters: on an H200 the matmul was 6x slower).
AMULET_GPU_MATMUL=1 RAYON_NUM_THREADS=1 timeout 300 "$bin" bench --model "$model" --device webgpu --runs "${RUNS:-3}" \
  --tokens 128 --out "$out/gpu-bench-matmul-prefill.json" 2>&1 | grep -v XDG_RUNTIME
RAYON_NUM_THREADS=$(nproc) timeout 300 "$bin" bench --model "$model" --device cpu --runs "${RUNS:-3}" --tokens 128 \
  --out "$out/cpu-all-threads.json" 2>&1 | grep -v XDG_RUNTIME | grep -E "^(device|cpu)"
AMULET_GPU_PROFILE=2 timeout 120 "$bin" generate --model "$model" --device webgpu --method amulet \
  --preference concise --max-tokens 64 --json "How can I improve my eating habits?" 2>&1 | grep -v XDG_RUNTIME | tail -1
AMULET_GPU_PROFILE=1 timeout 120 "$bin" generate --model "$model" --device webgpu --method amulet \
  --preference concise --max-tokens 16 --json "How can I improve my eating habits?" 2>&1 | grep -v XDG_RUNTIME | grep -v '^{' 
