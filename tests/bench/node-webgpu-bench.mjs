#!/usr/bin/env node
// Our npm package's WebGPU path on a real GPU without a browser: Node with Dawn (the WebGPU
// implementation inside Chrome, as the `webgpu` npm package's dawn.node) standing in for
// navigator.gpu. The wasm, the JS API and the WGSL are the browser's; only the window around
// them is missing. For machines that have a GPU but no browser (the lent GPU machine).
//
//   node node-webgpu-bench.mjs --model GGUF --webgpu-module PATH/webgpu/index.js
//        [--runs 3] [--tokens 128] [--out FILE]
//
// Measures, interleaved in one process: our CPU (wasm SIMD) path and our WebGPU path, base
// and amulet, decode tok/s, prefill ms, time to first token; checks that both paths chose the
// same greedy tokens. Without --webgpu-module (or without an adapter) the WebGPU rows say why.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { PROMPT } from './page-build.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(here, '..', '..');

function parseArgs(argv) {
  const o = {
    runs: 3,
    tokens: 128,
    model: null,
    webgpuModule: null,
    out: path.join(REPO, 'target', 'bench', 'node-webgpu.json'),
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (argv[i + 1] === undefined) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--runs') o.runs = Number(val());
    else if (a === '--tokens') o.tokens = Number(val());
    else if (a === '--model') o.model = path.resolve(val());
    else if (a === '--webgpu-module') o.webgpuModule = path.resolve(val());
    else if (a === '--out') o.out = path.resolve(val());
    else throw new Error(`unknown argument ${a}`);
  }
  if (!o.model) throw new Error('--model is required');
  for (const k of ['runs', 'tokens'])
    if (!Number.isInteger(o[k]) || o[k] < 1) throw new Error(`--${k} must be a whole number >= 1`);
  return o;
}

/** Dawn as navigator.gpu; wgpu's browser backend only looks there from a window (it tests
 *  for the global `Window` constructor) or a worker. */
async function installDawn(modulePath) {
  const { create, globals } = await import(pathToFileURL(modulePath).href);
  Object.assign(globalThis, globals);
  const gpu = create([]);
  Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  globalThis.Window ??= class Window {};
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  return adapter
    ? {
        vendor: adapter.info.vendor,
        architecture: adapter.info.architecture,
        description: adapter.info.description,
        isFallbackAdapter: adapter.info.isFallbackAdapter,
      }
    : null;
}

async function generate(engine, method, tokens) {
  const t0 = performance.now();
  let first = null;
  let final = null;
  const ids = [];
  for await (const c of engine.generate({
    prompt: PROMPT,
    preference: 'concise',
    method,
    maxTokens: tokens,
    ignoreEos: true,
    temperature: 0,
  })) {
    if (c.done) final = c;
    else {
      first ??= performance.now();
      ids.push(c.token);
    }
  }
  return {
    decodeTps: final.timings.decodeTokensPerS,
    prefillMs: final.timings.prefillMs,
    prefillTokens: final.timings.prefillTokens,
    ttftMs: first - t0,
    tokens: ids,
  };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[(s.length - 1) >> 1] : null;
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const result = {
    date: new Date().toISOString(),
    command: `node node-webgpu-bench.mjs ${process.argv.slice(2).join(' ')}`,
    machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model },
    node: process.version,
    config: { runs: o.runs, tokens: o.tokens, prompt: PROMPT, greedy: true },
  };
  result.adapter = o.webgpuModule
    ? await installDawn(o.webgpuModule).catch((e) => ({ error: String(e?.message ?? e) }))
    : { error: 'no --webgpu-module' };
  console.log(`Node ${process.version}; WebGPU adapter: ${JSON.stringify(result.adapter)}`);
  const { AmuletEngine } = await import(pathToFileURL(path.join(REPO, 'www', 'src', 'index.js')).href);
  const bytes = fs.readFileSync(o.model);
  const engines = {};
  for (const device of ['cpu', 'webgpu']) {
    const t0 = performance.now();
    try {
      engines[device] = await AmuletEngine.load(bytes, { device });
      console.log(
        `${device}: loaded in ${(performance.now() - t0).toFixed(0)} ms (${engines[device].info.device}: ${engines[device].info.deviceReason})`,
      );
    } catch (e) {
      result[`${device}Error`] = `${e.code}: ${e.message}`;
      console.log(`${device}: ${e.code}: ${e.message}`);
    }
  }
  const configs = [];
  for (const device of Object.keys(engines))
    for (const method of ['base', 'amulet'])
      configs.push({ key: `${device}.${method}`, engine: engines[device], method });
  for (const c of configs) await generate(c.engine, c.method, 8); // warm-up: V8 tier-up, pipelines
  const samples = Object.fromEntries(configs.map((c) => [c.key, []]));
  for (let r = 0; r < o.runs; r++) {
    for (let i = 0; i < configs.length; i++) {
      const c = configs[(i + r) % configs.length];
      const s = await generate(c.engine, c.method, o.tokens);
      samples[c.key].push(s);
      console.log(
        `run ${r + 1}/${o.runs} ${c.key.padEnd(13)} ${s.decodeTps.toFixed(1)} tok/s, prefill ${s.prefillMs.toFixed(1)} ms / ${s.prefillTokens} tok, TTFT ${s.ttftMs.toFixed(1)} ms`,
      );
    }
  }
  result.summary = {};
  console.log('\npath           decode tok/s (median, min-max)   prefill ms   TTFT ms');
  for (const c of configs) {
    const tps = samples[c.key].map((s) => s.decodeTps);
    const sum = {
      decodeTps: median(tps),
      min: Math.min(...tps),
      max: Math.max(...tps),
      prefillMs: median(samples[c.key].map((s) => s.prefillMs)),
      ttftMs: median(samples[c.key].map((s) => s.ttftMs)),
    };
    result.summary[c.key] = sum;
    console.log(
      `${c.key.padEnd(14)} ${sum.decodeTps.toFixed(1).padStart(8)} (${sum.min.toFixed(1)}-${sum.max.toFixed(1)})`.padEnd(
        48,
      ) + `${sum.prefillMs.toFixed(1).padStart(9)} ${sum.ttftMs.toFixed(1).padStart(9)}`,
    );
  }
  const ratio = (a, b) =>
    result.summary[a] && result.summary[b] ? result.summary[a].decodeTps / result.summary[b].decodeTps : null;
  result.ratios = {
    webgpuOverCpuBase: ratio('webgpu.base', 'cpu.base'),
    webgpuOverCpuAmulet: ratio('webgpu.amulet', 'cpu.amulet'),
    webgpuAmuletOverBase: ratio('webgpu.amulet', 'webgpu.base'),
    cpuAmuletOverBase: ratio('cpu.amulet', 'cpu.base'),
  };
  console.log(`\nratios: ${JSON.stringify(result.ratios)}`);
  if (engines.webgpu) {
    // Greedy on both paths: how long do their token sequences agree?
    result.agreement = {};
    for (const m of ['base', 'amulet']) {
      const [a, b] = [samples[`cpu.${m}`][0].tokens, samples[`webgpu.${m}`][0].tokens];
      let n = 0;
      while (n < a.length && a[n] === b[n]) n++;
      result.agreement[m] = `${n}/${a.length} leading tokens equal`;
    }
    console.log(`cpu vs webgpu greedy tokens: ${JSON.stringify(result.agreement)}`);
  }
  fs.mkdirSync(path.dirname(o.out), { recursive: true });
  fs.writeFileSync(o.out, JSON.stringify(result, null, 2) + '\n');
  for (const e of Object.values(engines)) await e.dispose();
  process.exit(0);
}

main().catch((e) => {
  console.error(`node-webgpu-bench: ${e?.stack ?? e}`);
  process.exit(1);
});
