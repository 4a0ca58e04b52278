// The in-page half of the browser benchmark: window.bench, driven by browser-bench.mjs
// through page.evaluate. Served by browser-bench.mjs's own server at /bench/page.js, next to
// the package (/src/, /pkg/), the models (/models/) and wllama's ESM build (/wllama/).
//
// At 1 thread our engine runs on the page's MAIN THREAD (AmuletEngine): that is where its wasm
// Memory can be read at every phase (the package's wasmMemoryBytes()). With more threads it
// runs in the package's Worker (createWorkerEngine): a main thread cannot block, so it spins
// while the pool works, on a core the pool needs (2 threads ran 0.8x of 1 there); its Memory
// then comes from the Worker's memoryUsage(). wllama always runs in its own worker.

import { AmuletEngine, createWorkerEngine, initWasm, wasmMemoryBytes as packageMemoryBytes } from '/src/index.js';
import { Wllama } from '/wllama/index.js';

const status = document.getElementById('status');
const now = () => performance.now();

let engine = null;
/** Our engine on device 'webgpu' (a second model instance, beside the CPU one). */
let gpuEngine = null;
let wllama = null;

/** byteLength of our wasm Memory (grow-only, so after a generation it is the peak); the
 * Worker's when the engine runs there. */
async function wasmMemoryBytes() {
  return engine?.memoryUsage && !(engine instanceof AmuletEngine)
    ? (await engine.memoryUsage()).wasmBytes
    : packageMemoryBytes();
}

/** oursLoad with more than one thread: the engine in the package's Worker (see the header). */
async function oursWorkerLoad({ url, cache, threads }) {
  const t0 = now();
  engine = await createWorkerEngine(null, url, { cache, threads, prefixCacheBytes: 0 });
  const t1 = now();
  return {
    totalMs: t1 - t0,
    readMs: null,
    betweenMs: null,
    buildMs: null,
    source: 'Worker',
    wasmMemoryBaselineBytes: null,
    wasmMemoryAtBuildStartBytes: null,
    wasmMemoryBytes: await wasmMemoryBytes(),
    jsHeap: jsHeap(),
    info: { ...engine.info },
  };
}

function jsHeap() {
  const m = performance.memory;
  return m ? { usedJSHeapSize: m.usedJSHeapSize, totalJSHeapSize: m.totalJSHeapSize } : null;
}

async function gpuInfo() {
  if (!('gpu' in navigator)) return { available: false, reason: 'navigator.gpu is undefined' };
  try {
    const adapter = await navigator.gpu.requestAdapter();
    if (!adapter) return { available: false, reason: 'requestAdapter() returned null' };
    const i = adapter.info ?? (adapter.requestAdapterInfo ? await adapter.requestAdapterInfo() : {});
    return {
      available: true,
      vendor: i.vendor,
      architecture: i.architecture,
      device: i.device,
      description: i.description,
      isFallbackAdapter: adapter.isFallbackAdapter ?? i.isFallbackAdapter,
      features: [...adapter.features].sort(),
      maxBufferSize: adapter.limits.maxBufferSize,
      maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
    };
  } catch (e) {
    return { available: false, reason: String(e?.message ?? e) };
  }
}

window.bench = {
  env() {
    return {
      userAgent: navigator.userAgent,
      hardwareConcurrency: navigator.hardwareConcurrency,
      crossOriginIsolated: self.crossOriginIsolated,
      jspi: typeof WebAssembly.promising === 'function',
    };
  },

  gpuInfo,

  async clearCache(name = 'amulet-web-models') {
    return caches.delete(name);
  },

  /**
   * Loads our engine; phase times from onProgress (download / [cache store] / build), and the
   * wasm Memory at three points: once the module is up (before any model byte), at the first
   * build callback (the model's bytes have been copied in) and after the build.
   */
  async oursLoad({ url, cache, threads = 1 }) {
    if (threads > 1) return oursWorkerLoad({ url, cache, threads });
    let firstDownload = null;
    let lastDownload = null;
    let firstBuild = null;
    let downloadText = '';
    let memAtBuildStart = null;
    const t0 = now();
    await initWasm(undefined, { threads }); // what load() does first; timed as part of the load
    const memBaseline = packageMemoryBytes();
    engine = await AmuletEngine.load(url, {
      cache,
      threads,
      // No prompt caches kept between requests: every run reads its whole prompt (as
      // `amulet bench`, and wllama with cache_prompt off).
      prefixCacheBytes: 0,
      onProgress(p) {
        const t = now();
        if (p.phase === 'download') {
          firstDownload ??= t;
          lastDownload = t;
          downloadText = p.text;
        } else if (p.phase === 'load' && firstBuild == null) {
          firstBuild = t;
          memAtBuildStart = packageMemoryBytes();
        }
      },
    });
    const t1 = now();
    return {
      totalMs: t1 - t0,
      // from the call to the last download byte (fetch or Cache API read)
      readMs: lastDownload != null ? lastDownload - t0 : null,
      // between the last byte and the first layer built: the Cache API put (first load with
      // cache: true), the copy into wasm memory and a yield
      betweenMs: lastDownload != null && firstBuild != null ? firstBuild - lastDownload : null,
      buildMs: firstBuild != null ? t1 - firstBuild : null,
      source: downloadText.startsWith('Reading from cache') ? 'Cache API' : downloadText.split(' ')[0],
      wasmMemoryBaselineBytes: memBaseline,
      wasmMemoryAtBuildStartBytes: memAtBuildStart,
      wasmMemoryBytes: packageMemoryBytes(),
      jsHeap: jsHeap(),
      info: { ...engine.info },
    };
  },

  /** Our engine again on device 'webgpu' (from the Cache API the CPU load filled). */
  async oursGpuLoad({ url }) {
    const t0 = now();
    gpuEngine = await AmuletEngine.load(url, { cache: true, device: 'webgpu', prefixCacheBytes: 0 });
    return { totalMs: now() - t0, info: { ...gpuEngine.info } };
  },

  /** One generation of `tokens` tokens; TTFT from the generate() call to the first chunk. */
  async oursGen({ prompt, preference, method, tokens, gpu = false }) {
    const t0 = now();
    const it = (gpu ? gpuEngine : engine).generate({
      prompt,
      preference,
      method,
      maxTokens: tokens,
      ignoreEos: true,
      temperature: 0,
    });
    let tFirst = null;
    let tLast = null;
    let n = 0;
    let final = null;
    for await (const c of it) {
      if (c.done) {
        final = c;
        break;
      }
      const t = now();
      tFirst ??= t;
      tLast = t;
      n++;
    }
    return {
      ttftMs: tFirst - t0,
      prefillMs: final.timings.prefillMs,
      prefillTokens: final.timings.prefillTokens,
      decodeMs: final.timings.decodeMs,
      decodeTps: final.timings.decodeTokensPerS,
      // same measure as wllama's: (tokens - 1) / (last chunk - first chunk)
      wallTps: n > 1 ? (n - 1) / ((tLast - tFirst) / 1e3) : null,
      totalMs: now() - t0,
      tokens: n,
      completionTokens: final.usage.completionTokens,
      promptTokens: final.usage.promptTokens,
      finishReason: final.finishReason,
      text: final.text,
      wasmMemoryBytes: await wasmMemoryBytes(),
    };
  },

  async wasmMemoryBytes() {
    return wasmMemoryBytes();
  },

  /** wllama on the same GGUF: fetched as a Blob here (no OPFS cache), then loadModel. */
  async wllamaLoad({ url, threads, nCtx = 1024 }) {
    const t0 = now();
    const blob = await (await fetch(url)).blob();
    const t1 = now();
    wllama = new Wllama(
      { default: '/wllama/wasm/wllama.wasm' },
      { suppressNativeLog: true, logger: { ...console, debug() {}, log() {}, info() {} } },
    );
    await wllama.loadModel([blob], { n_threads: threads, n_gpu_layers: 0, n_ctx: nCtx, n_parallel: 1 });
    const t2 = now();
    return {
      totalMs: t2 - t0,
      readMs: t1 - t0,
      buildMs: t2 - t1,
      isMultithread: wllama.isMultithread(),
      numThreads: wllama.getNumThreads(),
      libllama: typeof Wllama.getLibllamaVersion === 'function' ? Wllama.getLibllamaVersion() : null,
    };
  },

  /**
   * One wllama chat completion of `tokens` tokens, greedy, ignore_eos, no prompt cache reuse.
   * messages: the same conversation our `pref` context renders (system prompt + preference
   * sentence, user question): what a plain engine is given for "be concise".
   */
  async wllamaGen({ messages, tokens }) {
    const t0 = now();
    const stream = await wllama.createChatCompletion({
      messages,
      stream: true,
      max_tokens: tokens,
      temperature: 0,
      top_k: 1,
      ignore_eos: true,
      cache_prompt: false,
    });
    let tFirst = null;
    let tLast = null;
    let n = 0;
    let text = '';
    let timings = null;
    let usage = null;
    let finishReason = null;
    for await (const c of stream) {
      const content = c.choices?.[0]?.delta?.content;
      if (content) {
        const t = now();
        tFirst ??= t;
        tLast = t;
        n++;
        text += content;
      }
      if (c.timings) timings = c.timings;
      if (c.usage) usage = c.usage;
      if (c.choices?.[0]?.finish_reason) finishReason = c.choices[0].finish_reason;
    }
    return {
      ttftMs: tFirst - t0,
      prefillMs: timings?.prompt_ms ?? null,
      prefillTokens: timings?.prompt_n ?? null,
      decodeMs: timings?.predicted_ms ?? null,
      decodeTps: timings?.predicted_per_second ?? null,
      wallTps: n > 1 ? (n - 1) / ((tLast - tFirst) / 1e3) : null,
      totalMs: now() - t0,
      tokens: n,
      completionTokens: usage?.completion_tokens ?? timings?.predicted_n ?? null,
      promptTokens: usage?.prompt_tokens ?? timings?.prompt_n ?? null,
      finishReason,
      text,
    };
  },
};

status.textContent = 'ready';
window.benchReady = true;
