// Peak memory of a page that loads each model, on the CPU path and on the WebGPU path.
//
//   cd tests/bench && node memory-bench.mjs [--models id,id] [--paths worker-cpu,page-cpu,worker-webgpu]
//                                           [--out ../../target/bench/memory.json]
//
// Each (model, path) runs in a fresh headless Chromium, served by www/demo/serve.mjs from
// models/cache (the models present there; models/fetch.sh ID fetches one). It loads the model
// (cache off: the file comes over HTTP), generates two tokens on the CPU paths (WebGPU here is
// SwiftShader: load only), and reports, as multiples of the file:
// - wasm: the realm's wasm memory (engine.memoryUsage(); grow-only, so the peak);
// - heap: the JS heaps of the page and its Worker with their ArrayBuffers at their peak (CDP
//   Runtime.getHeapUsage: usedSize + backingStorageSize, sampled every 100 ms);
// - renderer / gpu: the peak resident memory (VmHWM) of Chromium's renderer and GPU processes;
//   the renderer's as a multiple of the file over a baseline page that only starts the wasm.
// Paths: worker-cpu (createWorkerEngine: the file stays a Blob), page-cpu (AmuletEngine.load on
// the page's main thread: the file is held as bytes), worker-webgpu (weights on the GPU).
// Targets: CPU path <= 1.2x the file (worker), WebGPU <= 0.2x the file plus the GPU buffers.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS } from '../chromium.mjs';
import { startServer } from '../browser/helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(here, '..', '..');
const manifest = JSON.parse(fs.readFileSync(path.join(REPO, 'models', 'models.json'), 'utf8'));

function args() {
  const o = { models: null, paths: ['worker-cpu', 'page-cpu', 'worker-webgpu'], out: null };
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i++) {
    if (a[i] === '--models') o.models = a[++i].split(',');
    else if (a[i] === '--paths') o.paths = a[++i].split(',');
    else if (a[i] === '--out') o.out = path.resolve(a[++i]);
    else throw new Error(`unknown argument ${a[i]}`);
  }
  return o;
}

/** Chromium processes (pid -> type) that are not in `before`. */
function chromiumProcesses(before = new Set()) {
  const out = new Map();
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    if (before.has(pid)) continue;
    let cmd;
    try {
      cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      continue;
    }
    if (!cmd.includes('chromium')) continue;
    out.set(pid, /--type=([a-z-]+)/.exec(cmd)?.[1] ?? 'browser');
  }
  return out;
}

/** Peak resident bytes (VmHWM) of a process, 0 when it is gone. */
function peakRss(pid) {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

async function measure(server, model, pathName) {
  const before = new Set(chromiumProcesses().keys());
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  try {
    const page = await browser.newPage();
    const cdp = await page.context().newCDPSession(page);
    // The JS heap and the ArrayBuffer backing stores (where a file held as bytes lives).
    const heap = async () => {
      const h = await cdp.send('Runtime.getHeapUsage');
      return h.usedSize + (h.backingStorageSize ?? 0);
    };
    // The Worker's heap too (where the CPU path reads the file), through the page's session
    // attached to its dedicated workers.
    const workers = new Set();
    const pending = new Map();
    let nextId = 1;
    cdp.on('Target.attachedToTarget', (e) => {
      if (e.targetInfo.type === 'worker') workers.add(e.sessionId);
    });
    cdp.on('Target.detachedFromTarget', (e) => workers.delete(e.sessionId));
    cdp.on('Target.receivedMessageFromTarget', (e) => {
      const m = JSON.parse(e.message);
      pending.get(m.id)?.(m);
      pending.delete(m.id);
    });
    await cdp.send('Target.setAutoAttach', { autoAttach: true, waitForDebuggerOnStart: false, flatten: false });
    const workerHeap = async (sessionId) => {
      const id = nextId++;
      const reply = new Promise((resolve) => pending.set(id, resolve));
      await cdp.send('Target.sendMessageToTarget', {
        sessionId,
        message: JSON.stringify({ id, method: 'Runtime.getHeapUsage' }),
      });
      const m = await reply;
      return m.result ? m.result.usedSize + (m.result.backingStorageSize ?? 0) : 0;
    };
    let heapPeak = 0;
    let workerPeak = 0;
    const sampler = setInterval(async () => {
      try {
        const [own, ...others] = await Promise.all([heap(), ...[...workers].map(workerHeap)]);
        const w = others.reduce((a, b) => a + b, 0);
        heapPeak = Math.max(heapPeak, own + w);
        workerPeak = Math.max(workerPeak, w);
      } catch {
        // the page is busy or gone
      }
    }, 100);
    await page.goto(server.url);
    const t0 = Date.now();
    const r = await page.evaluate(
      async ({ file, pathName }) => {
        const { AmuletEngine, createWorkerEngine } = await import('/src/index.js');
        const url = `/models/${file}`;
        if (pathName === 'baseline') {
          await (await import('/src/index.js')).initWasm();
          return { mem: { wasmBytes: 0, fileInMemory: false }, device: null, text: null };
        }
        const device = pathName.endsWith('webgpu') ? 'webgpu' : 'cpu';
        const engine = pathName.startsWith('worker')
          ? await createWorkerEngine(null, url, { device, cache: false })
          : await AmuletEngine.load(url, { device, cache: false });
        let text = null;
        if (device === 'cpu') {
          text = '';
          for await (const c of engine.generate({ prompt: 'Hi', method: 'base', maxTokens: 2, ignoreEos: true }))
            if (!c.done) text += c.text;
        }
        const mem = await engine.memoryUsage();
        const info = engine.info;
        await engine.dispose();
        return { mem, device: info.device, text };
      },
      { file: model.file, pathName },
    );
    clearInterval(sampler);
    heapPeak = Math.max(heapPeak, await heap());
    const rss = { renderer: 0, gpu: 0 };
    for (const [pid, type] of chromiumProcesses(before)) {
      if (type === 'renderer') rss.renderer = Math.max(rss.renderer, peakRss(pid));
      if (type === 'gpu-process') rss.gpu = Math.max(rss.gpu, peakRss(pid));
    }
    return { ...r, heapPeak, workerPeak, rss, seconds: (Date.now() - t0) / 1e3 };
  } finally {
    await browser.close();
  }
}

const o = args();
const present = manifest.models.filter(
  (m) => fs.existsSync(path.join(REPO, 'models', 'cache', m.file)) && (!o.models || o.models.includes(m.id)),
);
if (present.length === 0) throw new Error('no model in models/cache: run models/fetch.sh [ID]');
const server = await startServer();
const rows = [];
try {
  // Chromium's own share: a page that only starts the wasm module.
  const base = await measure(server, present[0], 'baseline');
  console.log(`baseline (no model): renderer peak RSS ${(base.rss.renderer / 1e6).toFixed(0)} MB`);
  for (const model of present) {
    for (const p of o.paths) {
      const m = await measure(server, model, p);
      const x = (n) => n / model.bytes;
      const row = {
        model: model.id,
        fileBytes: model.bytes,
        path: p,
        device: m.device,
        wasmBytes: m.mem.wasmBytes,
        fileInMemory: m.mem.fileInMemory,
        heapPeakBytes: m.heapPeak,
        workerHeapPeakBytes: m.workerPeak,
        rendererPeakRssBytes: m.rss.renderer,
        gpuPeakRssBytes: m.rss.gpu,
        pageBytes: m.mem.wasmBytes + m.heapPeak,
        pageOverFile: x(m.mem.wasmBytes + m.heapPeak),
        rendererBaselineBytes: base.rss.renderer,
        rendererOverFile: x(m.rss.renderer - base.rss.renderer),
        seconds: m.seconds,
      };
      rows.push(row);
      const mb = (n) => (n / 1e6).toFixed(0);
      console.log(
        `${model.id} ${p}: wasm ${mb(row.wasmBytes)} MB + JS heap ${mb(row.heapPeakBytes)} MB (Worker ${mb(row.workerHeapPeakBytes)}) = ` +
          `${row.pageOverFile.toFixed(2)}x the file (${mb(model.bytes)} MB); renderer peak RSS ${mb(row.rendererPeakRssBytes)} MB ` +
          `(${row.rendererOverFile.toFixed(2)}x over the baseline), GPU process ${mb(row.gpuPeakRssBytes)} MB; ${row.seconds.toFixed(0)} s`,
      );
    }
  }
} finally {
  await server.close();
}
if (o.out) {
  fs.mkdirSync(path.dirname(o.out), { recursive: true });
  fs.writeFileSync(o.out, JSON.stringify({ date: new Date().toISOString(), rows }, null, 2) + '\n');
}
