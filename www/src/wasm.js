// Loading the wasm module, once per realm (page, worker, Node process), in one of four builds:
// - ../pkg: single-threaded, plain simd128, runs everywhere;
// - ../pkg-threads: the CPU kernels split over a pool of Web Workers sharing the module's
//   memory (wasm threads: SharedArrayBuffer, so the page must be cross-origin isolated, i.e.
//   served with COOP/COEP headers). Chosen when the realm is isolated and more than one thread
//   is asked for (the `threads` load option; default: every core);
// - ../pkg-relaxed and ../pkg-threads-relaxed: the same two with relaxed SIMD's byte dot
//   product in the weight kernels (Chrome/Edge 114+; 1.3-1.6x faster decode on the Qwen models).
//   Chosen when the engine validates a relaxed-SIMD probe, unless the `simd` load option says
//   'simd128'. A module with relaxed instructions does not even compile where they are
//   missing, hence separate builds rather than a check inside one.
//
// The package finds its own `.wasm` next to the generated glue:
// - browsers and bundlers: `new URL('../pkg/amulet_bg.wasm', import.meta.url)` is handed to
//   the glue, which fetches it (Vite/webpack/Rollup see this pattern and emit the asset);
// - Node >= 20 (no bundler): fetch() cannot read file: URLs, so the bytes are read with
//   node:fs, imported dynamically so that browsers and bundlers never see it.

import * as single from '../pkg/amulet.js';
import { AmuletError, badOption, toAmuletError } from './errors.js';
import { startPool } from './pool.js';

let ready = null; // Promise of the chosen glue, shared by every caller of this realm
let glue = null; // the chosen build's module, once initialised
let memory = null; // its WebAssembly.Memory
let poolSize = 1; // threads the threaded build's pool was started with
let threadsReason = 'single-threaded build';
let simdReason = 'not loaded yet';

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

/** A function returning `i32x4.relaxed_dot_i8x16_i7x16_add_s` of three splats: it validates
 *  where the engine has relaxed SIMD. */
const RELAXED_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 19, 1, 17, 0, 65, 1, 253, 15, 65, 1, 253, 15, 65,
  1, 253, 15, 253, 147, 2, 11,
]);

/** Whether this realm gets a relaxed-SIMD build, and why (or why not). */
function simdHere(asked) {
  if (asked === 'simd128') return { relaxed: false, why: "the plain simd128 build was asked for (simd: 'simd128')" };
  return WebAssembly.validate(RELAXED_PROBE)
    ? { relaxed: true, why: 'this engine has relaxed SIMD' }
    : { relaxed: false, why: 'this engine has no relaxed SIMD (plain simd128 build)' };
}

/** Checks the `simd` load option: 'auto' (relaxed SIMD where the engine has it) or 'simd128'. */
export function checkSimd(simd) {
  if (simd === undefined || simd === 'auto' || simd === 'simd128') return;
  throw badOption('simd', `must be 'auto' or 'simd128', got ${String(simd)}`);
}

/** Checks the `threads` load option: a whole number >= 1, or 'auto' (every core). */
export function checkThreads(threads) {
  if (threads === undefined || threads === 'auto') return;
  if (!Number.isInteger(threads) || threads < 1)
    throw badOption('threads', `must be 'auto' or a whole number >= 1, got ${String(threads)}`);
}

/** The builds' glue, imported only when chosen (static paths, so bundlers emit each). */
const BUILDS = {
  'threads-relaxed': {
    glue: () => import('../pkg-threads-relaxed/amulet.js'),
    wasm: () => new URL('../pkg-threads-relaxed/amulet_bg.wasm', import.meta.url),
  },
  threads: {
    glue: () => import('../pkg-threads/amulet.js'),
    wasm: () => new URL('../pkg-threads/amulet_bg.wasm', import.meta.url),
  },
  relaxed: {
    glue: () => import('../pkg-relaxed/amulet.js'),
    wasm: () => new URL('../pkg-relaxed/amulet_bg.wasm', import.meta.url),
  },
  single: { glue: async () => single, wasm: () => new URL('../pkg/amulet_bg.wasm', import.meta.url) },
};

/**
 * Instantiates the wasm module (once; later calls return the same promise). `input` overrides
 * where the single-threaded plain .wasm comes from: a URL, a Response, bytes or a
 * WebAssembly.Module (e.g. when the asset is served from another path or a CDN; it also keeps
 * the realm on that build). `threads`: 'auto' (default) or a count; `simd`: 'auto' (default)
 * or 'simd128'. Both only matter on the first call.
 * @param {string | URL | Response | BufferSource | WebAssembly.Module} [input]
 * @param {{ threads?: number | 'auto', simd?: 'auto' | 'simd128' }} [options]
 */
export function initWasm(input, options = {}) {
  if (!ready) {
    ready = (async () => {
      const plan = input ? { n: 1, why: 'a custom .wasm was given' } : threadsHere(options.threads);
      const simd = input ? { relaxed: false, why: 'a custom .wasm was given' } : simdHere(options.simd);
      const plain = BUILDS[simd.relaxed ? 'relaxed' : 'single'];
      const build = plan.n > 1 ? BUILDS[simd.relaxed ? 'threads-relaxed' : 'threads'] : plain;
      try {
        let chosen = await build.glue();
        let exports = await chosen.default({
          module_or_path: input ?? (await defaultInput(build.wasm())),
        });
        if (build !== plain) {
          try {
            await startPool(chosen, plan.n);
            poolSize = chosen.setThreads(plan.n);
          } catch (e) {
            // The threaded instance is left to the collector; this realm runs one thread.
            plan.why = `the thread pool did not start (${e?.message ?? e}), so one thread runs`;
            chosen = await plain.glue();
            exports = await chosen.default({ module_or_path: await defaultInput(plain.wasm()) });
          }
        }
        glue = chosen;
        memory = exports.memory;
        threadsReason = plan.why;
        simdReason = simd.why;
        return glue;
      } catch (e) {
        ready = null; // allow a retry (e.g. the network came back)
        throw new AmuletError('IO', `could not load the wasm module: ${e?.message ?? e}`, { cause: e });
      }
    })();
  }
  return ready;
}

/**
 * The error of a trap in this realm's wasm instance (out of memory, a bug), or of a lost pool
 * thread: nothing can trust that instance's state afterwards, so every engine of the realm
 * refuses its calls with this error (a Worker engine has a realm of its own: create a new
 * one; on a page, reload it). null while none happened.
 */
let broken = null;

/** The error that broke this realm's wasm (see `broken`), or null. */
export function brokenWasm() {
  return broken;
}

/**
 * `e`, thrown by a call into the wasm, as an AmuletError; a trap (a WebAssembly.RuntimeError)
 * breaks the realm's instance: the error returned is the one every later call gets.
 */
export function wasmFault(e) {
  if (broken) return broken;
  if (!(e instanceof WebAssembly.RuntimeError)) {
    const err = toAmuletError(e);
    // The pool is the realm's: a pass that found a thread lost (ThreadLost) is every pass's fate.
    if (err.code === 'WORKER_LOST') broken = err;
    return err;
  }
  let lost = false;
  try {
    lost = glue?.poolLost?.() ?? false;
  } catch {
    // Nothing more to learn from a broken instance.
  }
  const where =
    'no engine of this page or Worker can run any more (a Worker engine: create a new one; a page: reload it)';
  broken = lost
    ? new AmuletError('WORKER_LOST', `a thread of the CPU pool stopped (its error is in the console): ${where}`, {
        cause: e,
      })
    : new AmuletError('COMPUTE', `the wasm instance trapped (${e.message}), so its state is lost: ${where}`, {
        cause: e,
      });
  return broken;
}

/** Rejects of the async wasm calls now pending (see `settles`). */
const pending = new Set();
let watching = false; // the realm's `error` listener is on (pages, Workers)
let nodeWatching = false; // the process's `uncaughtException` listener is on (Node)

/** Every pending call rejects with the realm's fault for the trap `error`. */
function rejectPending(error) {
  const err = wasmFault(error);
  for (const reject of pending) reject(err);
  pending.clear();
}

/**
 * Node's report of an uncaught error, listened to only while a call of ours waits (added by
 * `settles`, removed when none does), so that the process's own handling is untouched
 * otherwise. A trap thrown from the task queue is ours to claim; any other error goes on as
 * Node would take it without this listener: to the process's own listeners if it has any, or
 * thrown again once this listener is gone, which ends the process as before.
 */
function onNodeUncaught(error, origin) {
  if (error instanceof WebAssembly.RuntimeError && origin === 'uncaughtException' && pending.size > 0) {
    rejectPending(error);
    unwatchNode();
    return;
  }
  if (process.listenerCount('uncaughtException') > 1) return;
  unwatchNode(true);
  process.nextTick(() => {
    throw error;
  });
}

function watchNode() {
  if (nodeWatching || !isNode || typeof globalThis.addEventListener === 'function') return;
  nodeWatching = true;
  process.on('uncaughtException', onNodeUncaught);
}

function unwatchNode(now = false) {
  if (!nodeWatching || (pending.size > 0 && !now)) return;
  nodeWatching = false;
  process.removeListener('uncaughtException', onNodeUncaught);
}

/**
 * `promise` (of an async call into the wasm), also rejected if the wasm traps while it waits.
 * An async call's later work runs in wasm-bindgen's task queue, where a trap (memory that
 * cannot grow while a model is built, say) escapes as an uncaught error and would leave the
 * call unsettled for ever; a page or Worker reports it as an `error` event, Node as its
 * `uncaughtException`: either rejects the pending calls with the realm's error and breaks it
 * (before, in Node the process died). The CPU path's steps and prefills finish inside the
 * call (web.rs `promise_now`), so their traps are thrown to the caller directly.
 */
export function settles(promise) {
  if (!watching && typeof globalThis.addEventListener === 'function') {
    watching = true;
    globalThis.addEventListener('error', (event) => {
      // Only while a call of ours waits: another module's trap is not ours to claim.
      if (!(event.error instanceof WebAssembly.RuntimeError) || pending.size === 0) return;
      event.preventDefault(); // handled: the pending calls reject with it
      rejectPending(event.error);
    });
  }
  return new Promise((resolve, reject) => {
    pending.add(reject);
    watchNode();
    Promise.resolve(promise)
      .then(resolve, reject)
      .finally(() => {
        pending.delete(reject);
        unwatchNode();
      });
  });
}

/** The SIMD tier of this realm's build ('relaxed-simd' or 'simd128') and why; `asked` is the
 *  `simd` load option of this load (the realm's first load chose the build). */
export function simdTier(asked) {
  const simd = glue?.kernelTier() ?? 'none';
  if (asked === 'simd128' && simd !== 'simd128') {
    return { simd, reason: `this realm runs the relaxed-SIMD build, chosen by its first load: ${simdReason}` };
  }
  return { simd, reason: simdReason };
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
  const threaded = glue.threadedBuild();
  const used = threaded ? glue.setThreads(Math.min(asked, poolSize)) : 1;
  if (used === asked) return { threads: used, reason: threadsReason };
  // The first start of the realm chose the build (a page that initialised the wasm earlier).
  if (!threaded) return { threads: 1, reason: `this realm runs the single-threaded build: ${threadsReason}` };
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
