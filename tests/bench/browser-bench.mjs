#!/usr/bin/env node
// Browser benchmark of amulet-web in real headless Chromium, with wllama (llama.cpp in wasm)
// on the same GGUF as the peer, at the same thread counts.
//
//   cd tests/bench && npm ci && node browser-bench.mjs [--runs 3] [--tokens 128] [--threads 2]
//        [--prefill-tokens 400] [--amulet ../../target/release/amulet | --native native.json]
//        [--out ../../target/bench/browser.json] [--model PATH] [--no-wllama] [--no-mt]
//
// Measures, all in one browser and, for every comparison, interleaved in the same run:
// - ours (CPU wasm) at 1 thread (single-threaded build, page main thread, plain origin) and at
//   --threads (threaded build in the package's Worker, COOP/COEP origin: a main thread cannot
//   block, so threads only pay in a Worker): decode tok/s of method `base` and `amulet`,
//   their ratio, time to first token (generate() call -> first chunk), prefill ms, and the
//   prefill of a long prompt (about --prefill-tokens tokens, as `amulet bench --prefill-tokens`);
// - load time: first load (download + Cache API store + build; the cache is cleared before)
//   and load from the Cache API (a fresh page each time), `runs` of each, interleaved;
// - wasm Memory byteLength after load and after all generations (grow-only: the peak), over
//   the model file size;
// - wllama at 1 thread (plain origin) and --threads (COOP/COEP origin): decode tok/s on the
//   same question, and the prefill of the same long prompt; greedy, ignore_eos, cache_prompt off;
// - ours on WebGPU (device 'webgpu', base and amulet) when the adapter is hardware, in the
//   same interleaving; skipped on a software adapter unless --webgpu;
// - with --amulet (the native CLI): the native engine on the same file in the same rounds
//   (`amulet bench --runs 1` at 1 thread and at --threads, base, amulet and the long prefill),
//   so wasm / native is a ratio within each round like the others, whatever the machine's
//   speed does between rounds; with --native instead (the JSON of an earlier `amulet bench
//   --json --out`, same model and thread counts) the native figures come from that run;
// - the WebGPU adapter (navigator.gpu.requestAdapter()) for the record.
// Prints tables and writes JSON. Needs the wasm builds (./build.sh build) and the model; Chromium
// runs the relaxed-SIMD ones (engine.info.simd, printed).

import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';
import { createServer as createDemoServer } from '../../www/demo/serve.mjs';
import { CHROMIUM, CHROMIUM_ARGS } from '../chromium.mjs';
import { stats, fmt, fmtS, fmtR, table } from './report.mjs';
import { PROMPT } from './page-build.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const execFileP = promisify(execFile);
const REPO = path.resolve(here, '..', '..');
const PREFERENCE = 'concise';
// The `pref` context of our engine (crate/src/prompt.rs: the paper's system prompt plus the
// preference sentence), given to wllama as plain chat messages.
const SYSTEM =
  'You are an AI designed to provide the most helpful, clear, and concise responses. Focus on giving actionable ' +
  'information, ensuring accuracy and detail without overwhelming the user. You should also be patient, polite, ' +
  'and calm. Avoid unnecessary complexity and always prioritize practical, user-friendly advice.';
const WLLAMA_MESSAGES = [
  { role: 'system', content: `${SYSTEM} Your answer should be ${PREFERENCE} as much as possible.` },
  { role: 'user', content: PROMPT },
];
// The long prompt of `amulet bench --prefill-tokens` (crate/src/bin/amulet/bench.rs): a head and
// a passage repeated until the base context (system prompt + this question) has enough tokens.
const LONG_HEAD = 'Summarise the following minutes in two sentences.\n\n';
const PASSAGE =
  'The committee met on a rainy Tuesday to review the harbour plans, the budget for the new ferry terminal, the ' +
  'complaints about night noise from the shipyard, and the schedule for dredging the eastern channel before the ' +
  'spring tides. ';
const longText = (passages) => LONG_HEAD + PASSAGE.repeat(passages);

// ---------------------------------------------------------------------------------------
// arguments

function parseArgs(argv) {
  const o = {
    runs: 3,
    tokens: 128,
    warmupTokens: 8,
    out: path.join(REPO, 'target', 'bench', 'browser.json'),
    model: path.join(REPO, 'models', 'cache', 'SmolLM2-135M-Instruct.Q4_1.gguf'),
    wllama: true,
    mt: true,
    webgpu: 'auto',
    threads: 2,
    budgetS: 330,
    mtRuns: null, // default: every round
    prefillTokens: 400,
    native: null,
    amulet: null,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--runs') o.runs = Number(val());
    else if (a === '--tokens') o.tokens = Number(val());
    else if (a === '--warmup-tokens') o.warmupTokens = Number(val());
    else if (a === '--out') o.out = path.resolve(val());
    else if (a === '--model') o.model = path.resolve(val());
    else if (a === '--threads') o.threads = Number(val());
    else if (a === '--budget-s') o.budgetS = Number(val());
    else if (a === '--mt-runs') o.mtRuns = Number(val());
    else if (a === '--prefill-tokens') o.prefillTokens = Number(val());
    else if (a === '--native') o.native = path.resolve(val());
    else if (a === '--amulet') o.amulet = path.resolve(val());
    else if (a === '--no-wllama') o.wllama = false;
    else if (a === '--no-mt') o.mt = false;
    else if (a === '--webgpu') o.webgpu = 'force';
    else if (a === '--no-webgpu') o.webgpu = 'off';
    else if (a === '--help' || a === '-h') {
      console.log(
        'usage: node browser-bench.mjs [--runs 3] [--tokens 128] [--warmup-tokens 8] [--out FILE] [--model GGUF]\n' +
          '         [--threads 2] [--mt-runs RUNS] [--budget-s 330] [--prefill-tokens 400]\n' +
          '         [--amulet target/release/amulet | --native native.json]\n' +
          '         [--no-wllama] [--no-mt] [--webgpu | --no-webgpu]\n' +
          '--threads: ours (threaded build) and wllama on the COOP/COEP origin; 1 thread runs on the plain origin;\n' +
          '  --no-mt: 1 thread only\n' +
          '--prefill-tokens: also the prefill of a prompt of about this many tokens, ours and wllama (0: skip)\n' +
          '--amulet: the native CLI, run in the same rounds (amulet bench --runs 1 at 1 and --threads): wasm / native\n' +
          '  within each round; --native: `amulet bench --json --out` of the same model from an earlier run instead\n' +
          '--webgpu: our WebGPU path even on a software adapter (SwiftShader: ~0.1 tok/s for SmolLM2, use few --tokens);\n' +
          '  by default it runs only on a hardware adapter\n' +
          '--mt-runs: wllama multi-thread takes part in the first N rounds only (default: all; it is slow on a loaded machine)\n' +
          "--budget-s: no generation round starts once the elapsed time plus the next round's expected duration passes it\n" +
          '(the figures then come from fewer, still complete and interleaved, rounds: see n).',
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  o.mtRuns ??= o.runs;
  for (const k of ['runs', 'tokens', 'threads', 'budgetS', 'mtRuns']) {
    if (!Number.isInteger(o[k]) || o[k] < 1) throw new Error(`--${k} must be a whole number >= 1`);
  }
  if (!Number.isInteger(o.prefillTokens) || o.prefillTokens < 0)
    throw new Error('--prefill-tokens must be a whole number >= 0');
  if (o.threads < 2) o.mt = false; // 1 thread runs on the plain origin anyway
  if (o.amulet && o.native) throw new Error('--amulet and --native: give one (--amulet measures in the same rounds)');
  return o;
}

// ---------------------------------------------------------------------------------------
// server: serve.mjs's handler (www/ at /, the model folder at /models/) plus /bench/ (this
// folder's page) and /wllama/ (wllama's ESM build: index.js and wasm/wllama.wasm).

const EXTRA_MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
};

export function startServer({ isolate, modelsDir }) {
  const demo = createDemoServer({ isolate, models: modelsDir });
  const demoHandler = demo.listeners('request')[0];
  const headers = { 'X-Content-Type-Options': 'nosniff', 'Cache-Control': 'no-cache' };
  if (isolate) {
    headers['Cross-Origin-Opener-Policy'] = 'same-origin';
    headers['Cross-Origin-Embedder-Policy'] = 'require-corp';
    headers['Cross-Origin-Resource-Policy'] = 'same-origin';
  }
  const extra = [
    ['/bench/', here, new Set(['page.html', 'page.js'])],
    ['/wllama/', path.join(here, 'node_modules', '@wllama', 'wllama', 'esm'), null],
  ];
  const server = http.createServer((req, res) => {
    const pathname = new URL(req.url, 'http://localhost').pathname;
    for (const [prefix, root, allow] of extra) {
      if (!pathname.startsWith(prefix)) continue;
      const rel = decodeURIComponent(pathname.slice(prefix.length));
      const file = path.resolve(root, rel);
      if (
        (allow && !allow.has(rel)) ||
        !file.startsWith(root + path.sep) ||
        !fs.existsSync(file) ||
        !fs.statSync(file).isFile()
      ) {
        res.writeHead(404, { ...headers, 'Content-Type': 'text/plain' });
        return res.end('not found\n');
      }
      const st = fs.statSync(file);
      res.writeHead(200, {
        ...headers,
        'Content-Type': EXTRA_MIME[path.extname(file)] ?? 'application/octet-stream',
        'Content-Length': st.size,
      });
      if (req.method === 'HEAD') return res.end();
      return fs.createReadStream(file).pipe(res);
    }
    return demoHandler(req, res);
  });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const origin = `http://127.0.0.1:${server.address().port}`;
      resolve({
        origin,
        close: () =>
          new Promise((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}

// ---------------------------------------------------------------------------------------
// printing (statistics and tables: report.mjs)

const MB = (b) => b / 1e6;

// ---------------------------------------------------------------------------------------
// main

async function openBenchPage(context, origin) {
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`  [page error] ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') console.error(`  [console.error] ${m.text()}`);
  });
  await page.goto(`${origin}/bench/page.html`);
  await page.waitForFunction(() => window.benchReady === true, null, { timeout: 30_000 });
  return page;
}

async function freshPage(page) {
  await page.reload();
  await page.waitForFunction(() => window.benchReady === true, null, { timeout: 30_000 });
}

function wasmInfo(file) {
  const bytes = fs.readFileSync(file);
  return {
    bytes: bytes.length,
    sha256: crypto.createHash('sha256').update(bytes).digest('hex').slice(0, 16),
    mtime: fs.statSync(file).mtime.toISOString(),
  };
}

/** `amulet bench --json --out` of the same model: its CPU configs, for wasm / native. */
function readNative(file, model) {
  let j;
  try {
    j = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`--native ${file}: ${e.message}`);
  }
  if (!Array.isArray(j.configs)) throw new Error(`--native ${file}: no configs (not amulet bench's JSON)`);
  if (j.model_path && path.basename(j.model_path) !== path.basename(model))
    throw new Error(`--native ${file} measured ${path.basename(j.model_path)}, not ${path.basename(model)}`);
  return j;
}

/**
 * One run of the native engine on the same file and question (`amulet bench --runs 1`: its own
 * load and warm-up, then base and amulet decode and, with `prefillTokens`, the long prefill).
 */
async function nativeRun(amulet, model, threads, tokens, prefillTokens) {
  const args = ['bench', '--json', '--device', 'cpu', '--model', model, '--threads', String(threads)];
  args.push('--runs', '1', '--tokens', String(tokens), '--prefill-tokens', String(prefillTokens));
  const t0 = Date.now();
  const { stdout } = await execFileP(amulet, args, { maxBuffer: 64 << 20 });
  let j;
  try {
    j = JSON.parse(stdout);
  } catch (e) {
    throw new Error(`${amulet} ${args.join(' ')}: its output is not JSON (${e.message})`);
  }
  const c = j.configs?.find((c) => c.device === 'cpu' && c.threads === threads);
  if (!c) throw new Error(`${amulet} bench gave no cpu config at ${threads} threads`);
  return {
    native: true,
    tokens,
    decodeTps: c.base.decode_tokens_per_s,
    amuletTps: c.amulet.decode_tokens_per_s,
    prefillTps: c.long_prefill?.prefill_tokens_per_s ?? null,
    prefillTokens: j.long_prompt_tokens ?? null,
    totalMs: Date.now() - t0,
  };
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const log = (s) => console.log(`[${((Date.now() - started) / 1e3).toFixed(0).padStart(4)} s] ${s}`);

  const wasmFile = path.join(REPO, 'www', 'pkg', 'amulet_bg.wasm');
  if (!fs.existsSync(wasmFile)) throw new Error('www/pkg is missing: run ./build.sh build');
  const threadsWasmFile = path.join(REPO, 'www', 'pkg-threads', 'amulet_bg.wasm');
  if (o.mt && !fs.existsSync(threadsWasmFile))
    throw new Error('www/pkg-threads (the threaded build) is missing: run ./build.sh build, or --no-mt');
  const native = o.native ? readNative(o.native, o.model) : null;
  if (o.amulet && !fs.existsSync(o.amulet))
    throw new Error(`--amulet ${o.amulet}: no such file (cargo build --release)`);
  if (!fs.existsSync(o.model)) throw new Error(`no model at ${o.model}`);
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (set CHROMIUM_PATH)`);
  const wllamaDir = path.join(here, 'node_modules', '@wllama', 'wllama');
  if (o.wllama && !fs.existsSync(path.join(wllamaDir, 'esm', 'wasm', 'wllama.wasm'))) {
    throw new Error('node_modules/@wllama/wllama is missing: run npm ci in tests/bench');
  }
  const modelSize = fs.statSync(o.model).size;
  const modelUrlPath = `/models/${encodeURIComponent(path.basename(o.model))}`;

  const plain = await startServer({ isolate: false, modelsDir: path.dirname(o.model) });
  const isolated = await startServer({ isolate: true, modelsDir: path.dirname(o.model) });
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  const result = {
    date: new Date().toISOString(),
    command: `node browser-bench.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      memGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
      loadavgAtStart: os.loadavg(),
    },
    browser: { version: browser.version(), path: CHROMIUM, args: CHROMIUM_ARGS, headless: true },
    config: {
      runs: o.runs,
      budgetS: o.budgetS,
      wllamaMtRuns: o.mtRuns,
      tokens: o.tokens,
      warmupTokens: o.warmupTokens,
      prompt: PROMPT,
      preference: PREFERENCE,
      greedy: true,
      ignoreEos: true,
      threads: o.mt ? [1, o.threads] : [1],
      prefillTokens: o.prefillTokens,
      native: o.native && path.relative(REPO, o.native),
      amulet: o.amulet && path.relative(REPO, o.amulet),
    },
    model: { path: path.relative(REPO, o.model), bytes: modelSize },
    ours: {
      thread: 'main',
      wasm: wasmInfo(wasmFile),
      wasmThreads: o.mt ? wasmInfo(threadsWasmFile) : null,
    },
    wllama: null,
  };
  try {
    const context = await browser.newContext();
    const page = await openBenchPage(context, plain.origin);
    result.env = await page.evaluate(() => window.bench.env());
    result.webgpu = await page.evaluate(() => window.bench.gpuInfo());
    log(
      `Chromium ${browser.version()}, ${result.env.hardwareConcurrency} cores seen by the page; WebGPU: ${result.webgpu.available ? `${result.webgpu.vendor} ${result.webgpu.architecture} ${result.webgpu.description ?? ''}` : result.webgpu.reason}`,
    );

    // ---- loads: first (cache cleared: download + store + build) and from the Cache API,
    // alternating, each on a fresh page (a fresh wasm realm).
    const loads = { first: [], cached: [] };
    for (let r = 0; r < o.runs; r++) {
      await freshPage(page);
      await page.evaluate(() => window.bench.clearCache());
      await freshPage(page);
      const first = await page.evaluate((a) => window.bench.oursLoad(a), { url: modelUrlPath, cache: true });
      loads.first.push(first);
      await freshPage(page);
      const cached = await page.evaluate((a) => window.bench.oursLoad(a), { url: modelUrlPath, cache: true });
      loads.cached.push(cached);
      log(
        `load ${r + 1}/${o.runs}: first ${fmt(first.totalMs, 0)} ms (${first.source}), cached ${fmt(cached.totalMs, 0)} ms (${cached.source}); wasm memory ${fmt(MB(cached.wasmMemoryBytes))} MB`,
      );
    }

    // ---- generation: ours 1 thread (single-threaded build) and wllama 1 thread on the plain
    // page; ours and wllama at --threads on the isolated page (ours: the threaded build);
    // decode (base, amulet) and the long prompt's prefill; interleaved, the order rotated each round.
    await freshPage(page);
    const genLoad = await page.evaluate((a) => window.bench.oursLoad(a), { url: modelUrlPath, cache: true });
    const memAfterLoad = genLoad.wasmMemoryBytes;
    const oursGen = (p, method, tokens, extra = {}) =>
      p.evaluate((a) => window.bench.oursGen(a), { prompt: PROMPT, preference: PREFERENCE, method, tokens, ...extra });
    // The long prompt: as many passages as `amulet bench --prefill-tokens` takes (its token
    // count grows by the same amount a passage, so two prefills of ours tell how many).
    let long = null;
    if (o.prefillTokens > 0) {
      const count = async (k) => (await oursGen(page, 'base', 1, { prompt: longText(k) })).prefillTokens;
      const [n0, n10] = [await count(0), await count(10)];
      const passages = Math.max(0, Math.ceil((o.prefillTokens - n0) / ((n10 - n0) / 10)));
      long = { passages, text: longText(passages), tokens: await count(passages) };
      result.config.longPrompt = { passages, oursTokens: long.tokens, asked: o.prefillTokens };
      log(`long prompt: ${passages} passages, ${long.tokens} tokens (ours, base context)`);
    }
    const longMessages = long && [
      { role: 'system', content: SYSTEM },
      { role: 'user', content: long.text },
    ];
    const oursConfigs = (p, prefix) => [
      { key: `${prefix}.base`, run: (t) => oursGen(p, 'base', t) },
      { key: `${prefix}.amulet`, run: (t) => oursGen(p, 'amulet', t) },
      ...(long
        ? [{ key: `${prefix}.prefill`, prefill: true, run: () => oursGen(p, 'base', 1, { prompt: long.text }) }]
        : []),
    ];
    const wllamaConfigs = (p, key) => [
      { key, run: (t) => p.evaluate((a) => window.bench.wllamaGen(a), { messages: WLLAMA_MESSAGES, tokens: t }) },
      ...(long
        ? [
            {
              key: `${key}.prefill`,
              prefill: true,
              run: () => p.evaluate((a) => window.bench.wllamaGen(a), { messages: longMessages, tokens: 1 }),
            },
          ]
        : []),
    ];
    const configs = oursConfigs(page, 'ours');
    result.ours.threads1 = { info: genLoad.info };
    log(
      `ours 1 thread: engine.info.threads ${genLoad.info.threads} (${genLoad.info.threadsReason}), ${genLoad.info.simd}`,
    );
    let mtPage = null;
    if (o.mt) {
      mtPage = await openBenchPage(context, isolated.origin);
      const env = await mtPage.evaluate(() => window.bench.env());
      const load = await mtPage.evaluate((a) => window.bench.oursLoad(a), {
        url: modelUrlPath,
        cache: false,
        threads: o.threads,
      });
      result.ours.threadsN = { env, load };
      log(
        `ours ${o.threads} threads (crossOriginIsolated: ${env.crossOriginIsolated}) loaded in ${fmt(load.totalMs, 0)} ms: engine.info.threads ${load.info.threads} (${load.info.threadsReason})`,
      );
      if (load.info.threads !== o.threads)
        log(`  note: ours runs ${load.info.threads} threads where ${o.threads} were asked for`);
      configs.push(...oursConfigs(mtPage, 'ours.mt'));
    }
    // Our WebGPU path: on a hardware adapter (a software one, SwiftShader, decodes SmolLM2 at
    // ~0.1 tok/s: its figures would only prove that the path runs; --webgpu forces it).
    const hardware = result.webgpu.available && !result.webgpu.isFallbackAdapter;
    if (o.webgpu === 'force' || (o.webgpu === 'auto' && hardware)) {
      const gpuLoad = await page.evaluate((a) => window.bench.oursGpuLoad(a), { url: modelUrlPath });
      result.ours.webgpu = { load: gpuLoad };
      log(
        `ours on WebGPU loaded in ${fmt(gpuLoad.totalMs, 0)} ms: ${gpuLoad.info.device} (${gpuLoad.info.deviceReason})`,
      );
      for (const method of ['base', 'amulet']) {
        configs.push({ key: `ours.webgpu.${method}`, run: (t) => oursGen(page, method, t, { gpu: true }) });
      }
    } else {
      const why =
        o.webgpu === 'off'
          ? '--no-webgpu'
          : result.webgpu.available
            ? 'the only adapter is a software fallback (SwiftShader)'
            : `no adapter (${result.webgpu.reason})`;
      result.ours.webgpu = { skipped: why };
      log(`ours on WebGPU: skipped: ${why}${o.webgpu === 'auto' ? ' (--webgpu forces it)' : ''}`);
    }
    let wllamaInfo = null;
    if (o.wllama) {
      wllamaInfo = {
        version: JSON.parse(fs.readFileSync(path.join(wllamaDir, 'package.json'), 'utf8')).version,
        messages: WLLAMA_MESSAGES,
      };
      try {
        wllamaInfo.st = {
          load: await page.evaluate((a) => window.bench.wllamaLoad(a), { url: modelUrlPath, threads: 1 }),
        };
        log(
          `wllama ${wllamaInfo.version} single-thread loaded in ${fmt(wllamaInfo.st.load.totalMs, 0)} ms (multithread: ${wllamaInfo.st.load.isMultithread}, threads: ${wllamaInfo.st.load.numThreads})`,
        );
        configs.push(...wllamaConfigs(page, 'wllama.st'));
      } catch (e) {
        wllamaInfo.st = { error: String(e?.message ?? e) };
        log(`wllama single-thread failed: ${wllamaInfo.st.error}`);
      }
      if (o.mt) {
        try {
          const load = await mtPage.evaluate((a) => window.bench.wllamaLoad(a), {
            url: modelUrlPath,
            threads: o.threads,
          });
          wllamaInfo.mt = { load };
          log(
            `wllama ${o.threads} threads loaded in ${fmt(load.totalMs, 0)} ms (multithread: ${load.isMultithread}, threads: ${load.numThreads})`,
          );
          configs.push(...wllamaConfigs(mtPage, 'wllama.mt'));
        } catch (e) {
          wllamaInfo.mt = { error: String(e?.message ?? e) };
          log(`wllama multi-thread failed: ${wllamaInfo.mt.error}`);
        }
      }
    }

    // The native engine in the same rounds (each run loads and warms up on its own).
    if (o.amulet) {
      const prefill = long ? o.prefillTokens : 0;
      for (const [t, key] of o.mt
        ? [
            [1, 'native'],
            [o.threads, 'native.mt'],
          ]
        : [[1, 'native']]) {
        configs.push({ key, native: true, run: (n) => nativeRun(o.amulet, o.model, t, n, prefill) });
      }
    }
    // warm-up (wasm tier-up, first allocations, thread pools), not counted; the long prompt's
    // configs are warm from their decode twin (and ours from counting the long prompt)
    for (const c of configs.filter((c) => !c.prefill && !c.native)) {
      const w = await c.run(o.warmupTokens);
      log(`warm-up ${c.key}: ${w.tokens} tokens, ${fmt(w.decodeTps)} tok/s`);
    }
    const samples = Object.fromEntries(configs.map((c) => [c.key, []]));
    const rounds = [];
    for (let r = 0; r < o.runs; r++) {
      const active = configs.filter((c) => !c.key.startsWith('wllama.mt') || r < o.mtRuns);
      // the round's expected duration: each config's last sample
      const expectS = active.reduce((t, c) => t + (samples[c.key].at(-1)?.totalMs ?? 0) / 1e3, 0);
      const elapsedS = (Date.now() - started) / 1e3;
      if (r > 0 && elapsedS + expectS > o.budgetS) {
        log(
          `budget: ${fmt(elapsedS, 0)} s elapsed + ~${fmt(expectS, 0)} s for the next round > --budget-s ${o.budgetS}: stopping after ${r} round(s)`,
        );
        break;
      }
      const roundStart = Date.now();
      const order = active.map((_, i) => active[(i + r) % active.length]);
      for (const c of order) {
        const s = await c.run(o.tokens);
        if (!c.native) s.prefillTps = s.prefillTokens && s.prefillMs ? s.prefillTokens / (s.prefillMs / 1e3) : null;
        else if (long && s.prefillTokens !== long.tokens)
          log(`  note: the native long prompt has ${s.prefillTokens} tokens, ours in the page ${long.tokens}`);
        if (!c.prefill && s.tokens !== o.tokens)
          log(
            `  note: ${c.key} streamed ${s.tokens} chunks (completion tokens ${s.completionTokens}) for ${o.tokens} asked`,
          );
        samples[c.key].push(s);
        log(
          c.native
            ? `run ${r + 1}/${o.runs} ${c.key.padEnd(17)}: base ${fmt(s.decodeTps)} tok/s, amulet ${fmt(s.amuletTps)}, prefill ${fmt(s.prefillTps, 0)} tok/s (native)`
            : c.prefill
              ? `run ${r + 1}/${o.runs} ${c.key.padEnd(17)}: prefill ${fmt(s.prefillMs, 0)} ms / ${s.prefillTokens} tok = ${fmt(s.prefillTps, 0)} tok/s`
              : `run ${r + 1}/${o.runs} ${c.key.padEnd(17)}: ${fmt(s.decodeTps)} tok/s (wall ${fmt(s.wallTps)}), TTFT ${fmt(s.ttftMs, 0)} ms, prefill ${fmt(s.prefillMs, 0)} ms / ${s.prefillTokens} tok`,
        );
      }
      rounds.push({ order: order.map((c) => c.key), seconds: (Date.now() - roundStart) / 1e3, loadavg: os.loadavg() });
    }
    const memAfterGen = await page.evaluate(() => window.bench.wasmMemoryBytes());
    if (mtPage)
      result.ours.threadsN.memoryAfterGenerationBytes = await mtPage.evaluate(() => window.bench.wasmMemoryBytes());

    // ---- summary
    const sum = (key, f) => stats(samples[key]?.map(f) ?? []);
    const per = {};
    for (const c of configs) {
      per[c.key] = {
        decodeTps: c.prefill ? null : sum(c.key, (s) => s.decodeTps),
        wallTps: c.prefill ? null : sum(c.key, (s) => s.wallTps),
        ttftMs: sum(c.key, (s) => s.ttftMs),
        prefillMs: sum(c.key, (s) => s.prefillMs),
        prefillTps: sum(c.key, (s) => s.prefillTps),
        prefillTokens: samples[c.key][0]?.prefillTokens ?? null,
        completionTokens: samples[c.key].map((s) => s.completionTokens),
        finishReasons: samples[c.key].map((s) => s.finishReason),
        textStart: samples[c.key][0]?.text?.slice(0, 160),
      };
    }
    const pre = (s) => s.prefillTps;
    // a / b within each round that ran both (configs run in a prefix of the rounds), read by
    // `fa` and `fb` (wasm / native reads two figures of one native sample), then their median
    const ratio2 = (a, fa, b, fb) => {
      if (!samples[a]?.length || !samples[b]?.length) return null;
      const n = Math.min(samples[a].length, samples[b].length);
      return stats(samples[a].slice(0, n).map((s, i) => fa(s) / fb(samples[b][i])));
    };
    const ratio = (a, b, f = (s) => s.decodeTps) => ratio2(a, f, b, f);
    const ratios = {
      amuletOverBase: ratio('ours.amulet', 'ours.base'),
      mtAmuletOverBase: ratio('ours.mt.amulet', 'ours.mt.base'),
      baseOverWllamaSt: ratio('ours.base', 'wllama.st'),
      amuletOverWllamaSt: ratio('ours.amulet', 'wllama.st'),
      prefillOverWllamaSt: ratio('ours.prefill', 'wllama.st.prefill', pre),
      mtBaseOverWllamaMt: ratio('ours.mt.base', 'wllama.mt'),
      mtAmuletOverWllamaMt: ratio('ours.mt.amulet', 'wllama.mt'),
      mtPrefillOverWllamaMt: ratio('ours.mt.prefill', 'wllama.mt.prefill', pre),
      oursMtOverStBase: ratio('ours.mt.base', 'ours.base'),
      oursMtOverStAmulet: ratio('ours.mt.amulet', 'ours.amulet'),
      oursMtOverStPrefill: ratio('ours.mt.prefill', 'ours.prefill', pre),
      wllamaMtOverSt: ratio('wllama.mt', 'wllama.st'),
      wllamaMtOverStPrefill: ratio('wllama.mt.prefill', 'wllama.st.prefill', pre),
      wallBaseOverWllamaSt: ratio('ours.base', 'wllama.st', (s) => s.wallTps),
      wallMtBaseOverWllamaMt: ratio('ours.mt.base', 'wllama.mt', (s) => s.wallTps),
      ttftBaseOverWllamaSt: ratio('ours.base', 'wllama.st', (s) => s.ttftMs),
      webgpuAmuletOverBase: ratio('ours.webgpu.amulet', 'ours.webgpu.base'),
      webgpuOverCpuBase: ratio('ours.webgpu.base', 'ours.base'),
      webgpuOverCpuAmulet: ratio('ours.webgpu.amulet', 'ours.amulet'),
      webgpuBaseOverWllamaSt: ratio('ours.webgpu.base', 'wllama.st'),
    };
    // wasm / native within each round (--amulet), else against an earlier run's JSON (--native)
    if (o.amulet) {
      const dec = (s) => s.decodeTps;
      result.wasmOverNative = {};
      for (const [t, prefix, key] of [
        [1, 'ours', 'native'],
        [o.threads, 'ours.mt', 'native.mt'],
      ]) {
        if (!samples[key]?.length || !per[`${prefix}.base`]) continue;
        result.wasmOverNative[t] = {
          base: ratio2(`${prefix}.base`, dec, key, dec),
          amulet: ratio2(`${prefix}.amulet`, dec, key, (s) => s.amuletTps),
          prefill: ratio2(`${prefix}.prefill`, pre, key, pre),
          nativeAmuletOverBase: ratio2(key, (s) => s.amuletTps, key, dec),
        };
      }
    } else if (native) {
      const at = (t) => native.configs.find((c) => c.device === 'cpu' && c.threads === t);
      // one figure against one: stats of one value, as the within-round ratios are stats
      const over = (key, f, n) => {
        const m = per[key] && f(per[key]);
        return m != null && n ? stats([m / n]) : null;
      };
      result.wasmOverNative = {};
      if (native.new_tokens !== o.tokens)
        log(`note: --native decoded ${native.new_tokens} new tokens a run, this run ${o.tokens}`);
      if (long && native.long_prompt_tokens !== long.tokens)
        log(`note: --native's long prompt has ${native.long_prompt_tokens ?? 'no'} tokens, this run's ${long.tokens}`);
      for (const [t, prefix] of [
        [1, 'ours'],
        [o.threads, 'ours.mt'],
      ]) {
        const c = at(t);
        if (!c || !per[`${prefix}.base`]) continue;
        result.wasmOverNative[t] = {
          base: over(`${prefix}.base`, (p) => p.decodeTps?.median, c.base.decode_tokens_per_s),
          amulet: over(`${prefix}.amulet`, (p) => p.decodeTps?.median, c.amulet.decode_tokens_per_s),
          prefill: over(`${prefix}.prefill`, (p) => p.prefillTps?.median, c.long_prefill?.prefill_tokens_per_s),
          native: {
            base: c.base.decode_tokens_per_s,
            amulet: c.amulet.decode_tokens_per_s,
            prefill: c.long_prefill?.prefill_tokens_per_s ?? null,
          },
        };
      }
    }
    result.ours.loads = {
      first: {
        totalMs: stats(loads.first.map((l) => l.totalMs)),
        readMs: stats(loads.first.map((l) => l.readMs)),
        storeMs: stats(loads.first.map((l) => l.betweenMs)),
        buildMs: stats(loads.first.map((l) => l.buildMs)),
        source: loads.first.map((l) => l.source),
      },
      cached: {
        totalMs: stats(loads.cached.map((l) => l.totalMs)),
        readMs: stats(loads.cached.map((l) => l.readMs)),
        buildMs: stats(loads.cached.map((l) => l.buildMs)),
        source: loads.cached.map((l) => l.source),
      },
      raw: loads,
    };
    result.ours.info = genLoad.info;
    result.ours.memory = {
      modelBytes: modelSize,
      baselineBytes: genLoad.wasmMemoryBaselineBytes,
      atBuildStartBytes: genLoad.wasmMemoryAtBuildStartBytes,
      afterLoadBytes: memAfterLoad,
      afterGenerationBytes: memAfterGen,
      afterLoadOverModel: memAfterLoad / modelSize,
      peakOverModel: memAfterGen / modelSize,
      target: 1.5,
      withinTarget: memAfterGen / modelSize <= 1.5,
      note: 'single-threaded build (1 thread, plain page): WebAssembly.Memory buffer byteLength (grow-only, so the value after all generations is the peak); baseline: module up, no model; atBuildStart: first build progress callback (the model bytes copied in)',
    };
    result.generation = per;
    result.ratios = ratios;
    result.samples = samples;
    result.rounds = rounds;
    result.wllama = wllamaInfo;
    result.machine.loadavgAtEnd = os.loadavg();
    result.durationS = (Date.now() - started) / 1e3;

    // ---- print
    const T = o.threads;
    console.log(
      `\nChromium ${browser.version()} headless, ${result.machine.cpus} cores (${result.machine.cpuModel}); model ${path.basename(o.model)} ${fmt(MB(modelSize))} MB; ${o.tokens} tokens greedy ignoreEos${long ? `, prefill of ${long.tokens} tokens` : ''}; ${rounds.length} interleaved round(s) of ${o.runs} asked (wllama ${T} threads: first ${o.mtRuns}); median (min-max), n = samples`,
    );
    const names = {
      'ours.base': 'ours base, 1 thread',
      'ours.amulet': 'ours amulet, 1 thread',
      'ours.prefill': 'ours long prefill, 1 thread',
      'ours.mt.base': `ours base, ${T} threads`,
      'ours.mt.amulet': `ours amulet, ${T} threads`,
      'ours.mt.prefill': `ours long prefill, ${T} threads`,
      'ours.webgpu.base': 'ours base (WebGPU)',
      'ours.webgpu.amulet': 'ours amulet (WebGPU)',
      'wllama.st': 'wllama, 1 thread',
      'wllama.st.prefill': 'wllama long prefill, 1 thread',
      'wllama.mt': `wllama, ${T} threads`,
      'wllama.mt.prefill': `wllama long prefill, ${T} threads`,
      native: 'native base, 1 thread',
      'native.mt': `native base, ${T} threads`,
    };
    const rows = [
      ['engine', 'n', 'decode tok/s', 'wall tok/s', 'TTFT ms', 'prefill ms', 'prefill tok/s', 'prompt tok'],
    ];
    for (const c of configs) {
      const p = per[c.key];
      rows.push([
        names[c.key],
        String(p.prefillTps?.n ?? p.decodeTps?.n ?? 0),
        fmtS(p.decodeTps),
        fmtS(p.wallTps),
        fmtS(p.ttftMs, 0),
        fmtS(p.prefillMs, 0),
        fmtS(p.prefillTps, 0),
        String(p.prefillTokens ?? '-'),
      ]);
    }
    console.log(table(rows));
    // the comparisons, one column per thread count
    const R = ratios;
    const W = result.wasmOverNative ?? {};
    const ratioRows = [
      ['ratio (within each round, then median)', '1 thread', `${T} threads`],
      ...(o.wllama
        ? [
            ['ours / wllama, base decode', fmtR(R.baseOverWllamaSt), fmtR(R.mtBaseOverWllamaMt)],
            ['ours / wllama, amulet decode', fmtR(R.amuletOverWllamaSt), fmtR(R.mtAmuletOverWllamaMt)],
            ['ours / wllama, long prefill', fmtR(R.prefillOverWllamaSt), fmtR(R.mtPrefillOverWllamaMt)],
          ]
        : []),
      ['ours amulet / base decode', fmtR(R.amuletOverBase), fmtR(R.mtAmuletOverBase)],
      ...(o.amulet || native
        ? [
            [
              `wasm / native, base decode (${o.amulet ? 'same rounds' : 'native: --native'})`,
              fmtR(W[1]?.base),
              fmtR(W[T]?.base),
            ],
            ['wasm / native, amulet decode', fmtR(W[1]?.amulet), fmtR(W[T]?.amulet)],
            ['wasm / native, long prefill', fmtR(W[1]?.prefill), fmtR(W[T]?.prefill)],
          ]
        : []),
      ...(o.amulet
        ? [['native amulet / base decode', fmtR(W[1]?.nativeAmuletOverBase), fmtR(W[T]?.nativeAmuletOverBase)]]
        : []),
    ];
    console.log(`\n${table(ratioRows)}`);
    if (o.mt)
      console.log(
        `${T} threads / 1 thread: ours base ${fmtR(R.oursMtOverStBase)}, amulet ${fmtR(R.oursMtOverStAmulet)}, long prefill ${fmtR(R.oursMtOverStPrefill)}${o.wllama ? `; wllama decode ${fmtR(R.wllamaMtOverSt)}, long prefill ${fmtR(R.wllamaMtOverStPrefill)}` : ''}`,
      );
    if (R.webgpuOverCpuBase)
      console.log(
        `WebGPU: amulet / base ${fmtR(R.webgpuAmuletOverBase)}; WebGPU / CPU base ${fmtR(R.webgpuOverCpuBase)}, amulet ${fmtR(R.webgpuOverCpuAmulet)}; WebGPU base / wllama 1 thread ${fmtR(R.webgpuBaseOverWllamaSt)}`,
      );
    const L = result.ours.loads;
    console.log(
      `\nload (ours): first ${fmtS(L.first.totalMs, 0)} ms = read ${fmtS(L.first.readMs, 0)} + cache put & copy into wasm ${fmtS(L.first.storeMs, 0)} + build ${fmtS(L.first.buildMs, 0)}; from Cache API ${fmtS(L.cached.totalMs, 0)} ms = read ${fmtS(L.cached.readMs, 0)} + build ${fmtS(L.cached.buildMs, 0)}`,
    );
    if (wllamaInfo?.st?.load)
      console.log(
        `load (wllama 1 thread): ${fmt(wllamaInfo.st.load.totalMs, 0)} ms = fetch blob ${fmt(wllamaInfo.st.load.readMs, 0)} + load ${fmt(wllamaInfo.st.load.buildMs, 0)} (one sample)`,
      );
    const M = result.ours.memory;
    console.log(
      `wasm memory (ours): baseline ${fmt(MB(M.baselineBytes))} MB, at build start ${fmt(MB(M.atBuildStartBytes))} MB (bytes copied in), after load ${fmt(MB(M.afterLoadBytes))} MB (${fmt(M.afterLoadOverModel, 2)}x model), after generations ${fmt(MB(M.afterGenerationBytes))} MB (${fmt(M.peakOverModel, 2)}x model; target <= 1.5x: ${M.withinTarget ? 'met' : 'NOT met'})`,
    );
    console.log(`WebGPU adapter: ${JSON.stringify(result.webgpu)}`);
    console.log(
      `duration ${fmt(result.durationS, 0)} s; load average ${result.machine.loadavgAtStart.map((x) => x.toFixed(2)).join(' ')} -> ${result.machine.loadavgAtEnd.map((x) => x.toFixed(2)).join(' ')}`,
    );

    fs.mkdirSync(path.dirname(o.out), { recursive: true });
    fs.writeFileSync(o.out, JSON.stringify(result, null, 2) + '\n');
    console.log(`wrote ${path.relative(process.cwd(), o.out)}`);
  } finally {
    await browser.close().catch(() => {});
    await plain.close();
    await isolated.close();
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(`browser-bench: ${e?.stack ?? e}`);
    process.exit(1);
  });
}
