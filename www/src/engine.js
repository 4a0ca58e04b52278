// AmuletEngine: one loaded model in this realm (page, worker or Node process).
//
// Generation is driven one batched decode step at a time; between steps the loop gives the
// event loop a turn, so the page stays responsive and an AbortSignal is seen within one
// token. One engine runs one generation at a time: further generate/compare/chat calls wait
// in a FIFO queue and start when the previous one has finished.

import { AmuletError, abortError, badOption, disposedError } from './errors.js';
import {
  checkSimd,
  checkThreads,
  initWasm,
  simdTier,
  strength,
  useThreads,
  wasm as wasmBuild,
  brokenWasm,
  settles,
  wasmFault,
  wasmMemoryBytes,
} from './wasm.js';
import { openSource, parseIntegrity, sourceName } from './source.js';
import { prepareRequest } from './options.js';
import { Fifo, yieldToEventLoop } from './schedule.js';
import { openaiChat } from './openai.js';
import { Chat } from './chat.js';

const DEVICES = ['auto', 'webgpu', 'cpu'];
const LOAD_OPTIONS = [
  'device',
  'onProgress',
  'cache',
  'signal',
  'model',
  'wasm',
  'fetchOptions',
  'integrity',
  'threads',
  'simd',
  'prefixCacheBytes',
];
/** Bytes of KV cache kept between requests by default (a conversation's history). */
const DEFAULT_PREFIX_CACHE_BYTES = 256 << 20;
const PRIVATE = Symbol('AmuletEngine');

/** Share of the progress bar given to download when there is one (the rest: building). */
const DOWNLOAD_SHARE = 0.9;

export function checkLoadOptions(options) {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw badOption('options', 'must be an object');
  }
  for (const k of Object.keys(options)) {
    if (!LOAD_OPTIONS.includes(k)) throw badOption(k, `is not a load option (known: ${LOAD_OPTIONS.join(', ')})`);
  }
  const device = options.device ?? 'auto';
  if (!DEVICES.includes(device))
    throw badOption('device', `must be one of ${DEVICES.join(', ')}, got ${String(device)}`);
  if (options.onProgress != null && typeof options.onProgress !== 'function') {
    throw badOption('onProgress', 'must be a function');
  }
  if (options.cache != null && typeof options.cache !== 'boolean' && typeof options.cache !== 'string') {
    throw badOption('cache', 'must be a boolean or a cache name');
  }
  if (options.model != null && typeof options.model !== 'string') throw badOption('model', 'must be a string');
  parseIntegrity(options.integrity);
  checkThreads(options.threads);
  checkSimd(options.simd);
  const budget = options.prefixCacheBytes;
  if (budget != null && !(Number.isInteger(budget) && budget >= 0)) {
    throw badOption('prefixCacheBytes', `must be a whole number of bytes >= 0, got ${String(budget)}`);
  }
  return device;
}

function checkSignal(signal) {
  if (signal?.aborted) throw abortError(signal.reason);
}

export class AmuletEngine {
  #wasm;
  /** The opened model file (a Blob, a file descriptor or bytes): closed with the engine. */
  #file;
  #info;
  #lock = new Fifo();
  #disposed = false;
  #disposing = null;

  /** @private Use `AmuletEngine.load`. */
  constructor(token, wasm, info, file) {
    if (token !== PRIVATE) throw new TypeError('use `await AmuletEngine.load(source, options)`');
    this.#wasm = wasm;
    this.#file = file;
    this.#info = Object.freeze(info);
    /** OpenAI-shaped twin of generate(): `engine.chat.completions.create({ messages, stream, amulet })`. */
    this.chat = openaiChat(
      (opts) => this.generate(opts),
      () => this.#info.model,
    );
  }

  /**
   * Downloads (or reads) a GGUF model and builds the engine.
   * @param {string | URL | Array<string | URL> | ArrayBuffer | ArrayBufferView | Blob} source
   * @param {{ device?: 'auto' | 'webgpu' | 'cpu', onProgress?: Function, cache?: boolean | string,
   *           signal?: AbortSignal, model?: string, wasm?: any, fetchOptions?: RequestInit }} [options]
   */
  static async load(source, options = {}) {
    try {
      return await AmuletEngine.#load(source, options);
    } catch (e) {
      // A trap in any call into the wasm on the way (inspecting the header, hashing, building)
      // breaks the realm, as in a request.
      throw wasmFault(e);
    }
  }

  static async #load(source, options) {
    const device = checkLoadOptions(options);
    const { onProgress, signal } = options;
    const report = (p) => {
      if (!onProgress) return;
      try {
        onProgress(p);
      } catch {
        // A throwing progress callback must not break loading.
      }
    };
    checkSignal(signal);
    if (device === 'webgpu' && !globalThis.navigator?.gpu) {
      // Before any download: this realm cannot run the WebGPU backend.
      throw new AmuletError(
        'NO_WEBGPU',
        "device 'webgpu': no WebGPU here (navigator.gpu is missing); use 'auto' or 'cpu'",
      );
    }
    await initWasm(options.wasm, { threads: options.threads, simd: options.simd });
    if (brokenWasm()) throw brokenWasm();
    const threads = useThreads(options.threads);
    const simd = simdTier(options.simd);

    let downloaded = false;
    const { file, fetched, cached, cacheNote } = await openSource(source, {
      signal,
      device,
      cache: options.cache,
      integrity: options.integrity,
      fetchOptions: options.fetchOptions,
      onProgress(loaded, total, text) {
        downloaded = true;
        const frac = total > 0 ? Math.min(1, loaded / total) : 0;
        const mb = (n) => (n / 1e6).toFixed(1);
        const detail = total > 0 ? `${mb(loaded)} / ${mb(total)} MB` : `${mb(loaded)} MB`;
        report({ phase: 'download', loaded, total, progress: frac * DOWNLOAD_SHARE, text: `${text} ${detail}` });
      },
    });
    const base = fetched && downloaded ? DOWNLOAD_SHARE : 0;
    let wasm;
    try {
      checkSignal(signal);
      // Let the last download progress paint before the synchronous build.
      await yieldToEventLoop();
      checkSignal(signal);
      // wasm reads the header, then one tensor at a time, from wherever the file is (a Blob,
      // a file descriptor, bytes), so wasm memory (which never shrinks) holds the weights
      // once. 'auto' and 'webgpu' ask the browser for an adapter (a promise); 'auto' takes the
      // CPU path when there is none or it is a software renderer, and info.deviceReason says so.
      // On WebGPU the reader stays with the engine: a lost GPU rebuilds the CPU path from it.
      wasm = await settles(
        wasmBuild().WasmEngine.loadStreamingAsync(
          file.size,
          (offset, length) => file.read(offset, length),
          (done, total) => {
            const frac = total > 0 ? done / total : 1;
            report({
              phase: 'load',
              loaded: done,
              total,
              progress: base + (1 - base) * frac,
              text: `Building the model: layer ${done} / ${total}`,
            });
          },
          device,
        ),
      );
    } catch (e) {
      file.close();
      throw wasmFault(e);
    }
    let raw;
    try {
      wasm.setPrefixBudget(options.prefixCacheBytes ?? DEFAULT_PREFIX_CACHE_BYTES);
      raw = wasm.info();
    } catch (e) {
      // First: a trap here breaks the realm, and then nothing may call into it (not even free).
      const err = wasmFault(e);
      if (!brokenWasm()) wasm.free();
      file.close();
      throw err;
    }
    const info = {
      model: options.model ?? sourceName(source) ?? raw.name,
      name: raw.name,
      architecture: raw.architecture,
      quantization: raw.quantization,
      contextLength: raw.contextLength,
      vocabSize: raw.vocabSize,
      device: raw.device ?? 'cpu',
      deviceReason: raw.deviceReason,
      chatTemplateFallback: raw.chatTemplateFallback,
      cached,
      cacheNote,
      threads: raw.device === 'webgpu' ? 1 : threads.threads,
      threadsReason: raw.device === 'webgpu' ? 'the model runs on the GPU' : threads.reason,
      simd: simd.simd,
      simdReason: simd.reason,
    };
    return new AmuletEngine(PRIVATE, wasm, info, file);
  }

  /** `{ model, name, architecture, quantization, contextLength, vocabSize, device, deviceReason, chatTemplateFallback }` */
  get info() {
    return this.#info;
  }

  /** True once dispose() has been called. */
  get disposed() {
    return this.#disposed;
  }

  /**
   * Streams one method's answer: chunks `{ token, text, logprobs? }`, then one
   * `{ done: true, text, finishReason, usage, timings, ... }`. Nothing runs until the first
   * `next()`; errors (BAD_OPTION, ABORTED, ...) are thrown from the iteration.
   */
  generate(options = {}) {
    return this.#iterate('generate', options);
  }

  /**
   * Several methods on the same question in ONE batched generation (the weights are read once
   * per step for all of them): chunks `{ method, token, text, logprobs? }`, then
   * `{ done: true, results: { [method]: { text, finishReason, tokens, usage } }, usage, timings }`.
   */
  compare(options = {}) {
    return this.#iterate('compare', options);
  }

  /**
   * A conversation on this engine: `chat.send(text)` turn after turn (see chat.js). Its
   * history's caches are kept between turns, so each turn reads only what is new.
   * @param {{ preference?: string, method?: string, system?: string, placement?: string,
   *           contextOverflow?: 'error' | 'truncate-oldest', messages?: object[] }} [options]
   */
  createChat(options = {}) {
    return new Chat(this, options);
  }

  /**
   * Memory this engine's realm holds: `{ wasmBytes }`, the wasm memory (the weights on the CPU
   * path, next to nothing on WebGPU; it only grows, so this is also the peak), and
   * `fileInMemory`: whether the model file itself is held as bytes in JS (a page's main thread)
   * rather than read from a Blob or a file as needed.
   */
  async memoryUsage() {
    const kept = this.#wasm && !brokenWasm() ? this.#wasm.prefixCacheUsage() : { bytes: 0, sequences: 0 };
    return {
      wasmBytes: wasmMemoryBytes(),
      fileInMemory: this.#file?.held === 'memory',
      prefixCacheBytes: kept.bytes,
      prefixCacheSequences: kept.sequences,
    };
  }

  /** closedFormStrength(alpha, lambda, eta, iterations), as a promise (same as the worker proxy's). */
  async strength(alpha, lambda, eta, iterations) {
    return strength(alpha, lambda, eta, iterations);
  }

  async *#iterate(kind, options) {
    const { request, signal } = prepareRequest(options, kind);
    yield* this.#run(kind, request, signal);
  }

  async *#run(kind, request, signal) {
    if (this.#disposed) throw disposedError();
    // A trap or a lost pool thread broke this realm's wasm (wasm.js `wasmFault`): every call
    // rejects with that error, and nothing calls into the instance again.
    if (brokenWasm()) throw brokenWasm();
    const release = await this.#lock.acquire(signal);
    let gen = null;
    try {
      if (this.#disposed) throw disposedError();
      if (brokenWasm()) throw brokenWasm();
      checkSignal(signal);
      try {
        gen = await settles(this.#wasm.startAsync(request));
      } catch (e) {
        throw wasmFault(e);
      }
      for (;;) {
        await yieldToEventLoop();
        if (this.#disposed) throw disposedError();
        checkSignal(signal);
        let events;
        try {
          events = await settles(gen.stepAsync());
        } catch (e) {
          throw wasmFault(e);
        }
        if (events.length === 0) break;
        for (const ev of events) yield toChunk(ev, kind);
      }
      let result;
      try {
        result = gen.finish();
      } catch (e) {
        throw wasmFault(e);
      }
      gen.free();
      gen = null;
      // Hand the engine to the next caller before the last chunk, so a consumer that stops
      // reading at `done` does not hold the queue.
      release();
      this.#afterRelease();
      yield kind === 'generate' ? finalGenerate(result) : finalCompare(result);
    } finally {
      if (gen && !brokenWasm()) {
        // Aborted, broken out of, or failed: free the KV caches now.
        try {
          gen.abort();
          gen.finish();
        } catch {
          // Already released by a failed step.
        }
        gen.free();
      }
      release();
      this.#afterRelease();
    }
  }

  #afterRelease() {
    if (this.#disposed && !this.#lock.busy && this.#wasm) {
      if (!brokenWasm()) this.#wasm.free();
      this.#wasm = null;
      this.#file?.close();
      this.#file = null;
    }
  }

  /**
   * Frees the model. Waiting generations reject with DISPOSED; a running one stops at its
   * next step with DISPOSED. Later calls reject with DISPOSED. Idempotent.
   */
  dispose() {
    if (!this.#disposing) {
      this.#disposed = true;
      this.#lock.rejectWaiting(disposedError());
      this.#disposing = this.#lock.whenIdle().then(() => this.#afterRelease());
    }
    return this.#disposing;
  }
}

function toChunk(ev, kind) {
  const chunk =
    kind === 'compare' ? { method: ev.method, token: ev.token, text: ev.text } : { token: ev.token, text: ev.text };
  if (ev.logprobs) chunk.logprobs = ev.logprobs;
  return chunk;
}

function finalGenerate(result) {
  const c = result.completions[0];
  return {
    done: true,
    method: c.method,
    text: c.text,
    tokens: c.tokens,
    finishReason: c.finishReason,
    usage: {
      promptTokens: c.usage.promptTokens,
      completionTokens: c.usage.completionTokens,
      totalTokens: c.usage.promptTokens + c.usage.completionTokens,
      promptTokensBase: result.usage.promptTokensBase,
      promptTokensPref: result.usage.promptTokensPref,
      // Of promptTokens (the context the method's prompt count is of), those kept from an
      // earlier request: a conversation's history.
      cachedTokens: c.method === 'base' ? result.usage.cachedTokensBase : result.usage.cachedTokensPref,
      cachedTokensBase: result.usage.cachedTokensBase,
      cachedTokensPref: result.usage.cachedTokensPref,
    },
    droppedTurns: result.droppedTurns,
    timings: result.timings,
  };
}

function finalCompare(result) {
  const results = {};
  for (const c of result.completions) {
    results[c.method] = { text: c.text, tokens: c.tokens, finishReason: c.finishReason, usage: c.usage };
  }
  return { done: true, results, usage: result.usage, droppedTurns: result.droppedTurns, timings: result.timings };
}
