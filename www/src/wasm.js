// Loading the wasm module, once per realm (page, worker, Node process), in one of two builds:
// - ../pkg: single-threaded, runs everywhere;
// - ../pkg-threads: the CPU kernels split over a pool of Web Workers sharing the module's
//   memory (wasm threads: SharedArrayBuffer, so the page must be cross-origin isolated, i.e.
//   served with COOP/COEP headers). Chosen when the realm is isolated and more than one thread
//   is asked for (the `threads` load option; default: every core).
//
// The package finds its own `.wasm` next to the generated glue:
// - browsers and bundlers: `new URL('../pkg/amulet_bg.wasm', import.meta.url)` is handed to
//   the glue, which fetches it (Vite/webpack/Rollup see this pattern and emit the asset);
// - Node >= 20 (no bundler): fetch() cannot read file: URLs, so the bytes are read with
//   node:fs, imported dynamically so that browsers and bundlers never see it.

import * as single from '../pkg/amulet.js';
import { AmuletError, badOption, toAmuletError } from './errors.js';

let ready = null; // Promise of the chosen glue, shared by every caller of this realm
let glue = null; // the chosen build's module, once initialised
let memory = null; // its WebAssembly.Memory
let poolSize = 1; // threads the threaded build's pool was started with
let threadsReason = 'single-threaded build';

const isNode = typeof process === 'object' && process !== null && typeof process.versions?.node === 'string';

async function nodeBytes(url) {
  const fsName = 'node:fs/promises';
  const { readFile } = await import(/* @vite-ignore */ /* webpackIgnore: true */ fsName);
  return readFile(url);
}

async function defaultInput(url) {
  return isNode && url.protocol === 'file:' ? nodeBytes(url) : url;
}

/** How many threads a realm can run, and why not more. */
function threadsHere(asked) {
  const cores = Math.max(1, globalThis.navigator?.hardwareConcurrency ?? 1);
  const want = asked === undefined || asked === 'auto' ? cores : asked;
  if (want <= 1) return { n: 1, why: 'one thread was asked for' };
  if (isNode) return { n: 1, why: 'Node runs the single-threaded build' };
  if (!globalThis.crossOriginIsolated) {
    return { n: 1, why: 'the page is not cross-origin isolated (COOP/COEP headers), so wasm threads are off' };
  }
  // A window's main thread cannot block (Atomics.wait): it spins while the pool works, on a
  // core the pool needs. Measured in Chromium on 2 cores: 2 threads ran 0.8x of 1 there, and
  // 1.66-1.83x of 1 in the Worker. So 'auto' is 1 thread here; an explicit count is honoured.
  if (asked === undefined || asked === 'auto') {
    if (typeof globalThis.document !== 'undefined') {
      return { n: 1, why: "a page's main thread cannot block, so threads do not pay there: use createWorkerEngine" };
    }
  }
  return { n: want, why: `${want} threads (${cores} cores)` };
}

/** Checks the `threads` load option: a whole number >= 1, or 'auto' (every core). */
export function checkThreads(threads) {
  if (threads === undefined || threads === 'auto') return;
  if (!Number.isInteger(threads) || threads < 1)
    throw badOption('threads', `must be 'auto' or a whole number >= 1, got ${String(threads)}`);
}

/**
 * Instantiates the wasm module (once; later calls return the same promise). `input` overrides
 * where the single-threaded .wasm comes from: a URL, a Response, bytes or a WebAssembly.Module
 * (e.g. when the asset is served from another path or a CDN; it also keeps the realm on the
 * single-threaded build). `threads`: 'auto' (default) or a count; it only matters on the first
 * call.
 * @param {string | URL | Response | BufferSource | WebAssembly.Module} [input]
 * @param {{ threads?: number | 'auto' }} [options]
 */
export function initWasm(input, options = {}) {
  if (!ready) {
    ready = (async () => {
      const plan = input ? { n: 1, why: 'a custom .wasm was given' } : threadsHere(options.threads);
      try {
        if (plan.n > 1) {
          const threaded = await import('../pkg-threads/amulet.js');
          const exports = await threaded.default({
            module_or_path: await defaultInput(new URL('../pkg-threads/amulet_bg.wasm', import.meta.url)),
          });
          await threaded.initThreadPool(plan.n);
          poolSize = threaded.setThreads(plan.n);
          glue = threaded;
          memory = exports.memory;
        } else {
          const exports = await single.default({
            module_or_path: input ?? (await defaultInput(new URL('../pkg/amulet_bg.wasm', import.meta.url))),
          });
          glue = single;
          memory = exports.memory;
        }
        threadsReason = plan.why;
        return glue;
      } catch (e) {
        ready = null; // allow a retry (e.g. the network came back)
        throw new AmuletError('IO', `could not load the wasm module: ${e?.message ?? e}`, { cause: e });
      }
    })();
  }
  return ready;
}

/** The initialised build's exports (WasmEngine, inspectModel, Sha256, ...). */
export function wasm() {
  if (!glue) {
    throw new AmuletError(
      'NOT_READY',
      'the wasm module is not initialised: await initWasm() (or AmuletEngine.load) first',
    );
  }
  return glue;
}

/**
 * Threads this realm's CPU kernels use from now on: `threads` ('auto' or a count), bounded
 * by the pool the realm started with. Returns `{ threads, reason }`.
 */
export function useThreads(threads) {
  const asked = threads === undefined || threads === 'auto' ? poolSize : threads;
  const used = glue === single ? 1 : glue.setThreads(Math.min(asked, poolSize));
  if (used === asked) return { threads: used, reason: threadsReason };
  // The first start of the realm chose the build (a page that initialised the wasm earlier).
  if (glue === single) return { threads: 1, reason: `this realm runs the single-threaded build: ${threadsReason}` };
  return { threads: used, reason: `${used} threads: this realm's pool was started with ${poolSize}` };
}

/** Bytes of this realm's wasm memory; it only grows, so this is also its peak. 0 before init. */
export function wasmMemoryBytes() {
  return memory?.buffer.byteLength ?? 0;
}

/**
 * The Amulet strength k for (alpha, lambda, eta, T): the scalar the whole T-iteration game
 * reduces to, log π = z_p + k·(z_p − z_b). Synchronous: needs the wasm initialised first
 * (`await initWasm()`, or any `AmuletEngine.load` in this realm); otherwise throws NOT_READY.
 */
export function closedFormStrength(alpha = 2, lambda = 2, eta = 10, iterations = 60) {
  if (!glue) {
    throw new AmuletError(
      'NOT_READY',
      'closedFormStrength needs the wasm module: await initWasm() (or AmuletEngine.load) first',
    );
  }
  for (const [name, v] of [
    ['alpha', alpha],
    ['lambda', lambda],
    ['eta', eta],
    ['iterations', iterations],
  ]) {
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw new AmuletError('BAD_OPTION', `bad option \`${name}\`: must be a finite number, got ${String(v)}`, {
        option: name,
      });
    }
  }
  try {
    return glue.closedFormStrength(alpha, lambda, eta, iterations);
  } catch (e) {
    throw toAmuletError(e);
  }
}

/** `closedFormStrength`, initialising the wasm first when needed. */
export async function strength(alpha, lambda, eta, iterations) {
  await initWasm();
  return closedFormStrength(alpha, lambda, eta, iterations);
}
