// Loading the wasm module, once per realm (page, worker, Node process).
//
// The package finds its own `amulet_bg.wasm` next to the generated glue:
// - browsers and bundlers: `new URL('../pkg/amulet_bg.wasm', import.meta.url)` is handed
//   to the glue, which fetches it (Vite/webpack/Rollup see this pattern and emit the asset);
// - Node >= 20 (no bundler): fetch() cannot read file: URLs, so the bytes are read with
//   node:fs, imported dynamically so that browsers and bundlers never see it.

import init, { WasmEngine, closedFormStrength as wasmStrength, inspectModel, Sha256 } from '../pkg/amulet.js';
import { AmuletError, toAmuletError } from './errors.js';

export { WasmEngine, inspectModel, Sha256 };

let ready = null; // Promise of the wasm exports, shared by every caller of this realm
let initialised = false;
let memory = null; // the module's WebAssembly.Memory, once initialised

const isNode = typeof process === 'object' && process !== null && typeof process.versions?.node === 'string';

async function defaultInput() {
  const url = new URL('../pkg/amulet_bg.wasm', import.meta.url);
  if (isNode && url.protocol === 'file:') {
    const fsName = 'node:fs/promises';
    const { readFile } = await import(/* @vite-ignore */ /* webpackIgnore: true */ fsName);
    return readFile(url);
  }
  return url;
}

/**
 * Instantiates the wasm module (once; later calls return the same promise).
 * `input` overrides where the .wasm comes from: a URL, a Response, bytes or a
 * WebAssembly.Module (e.g. when the asset is served from another path or a CDN).
 * It only matters on the first call.
 * @param {string | URL | Response | BufferSource | WebAssembly.Module} [input]
 */
export function initWasm(input) {
  if (!ready) {
    ready = (async () => {
      try {
        const exports = await init({ module_or_path: input ?? (await defaultInput()) });
        memory = exports.memory;
        initialised = true;
      } catch (e) {
        ready = null; // allow a retry (e.g. the network came back)
        throw new AmuletError('IO', `could not load amulet_bg.wasm: ${e?.message ?? e}`, { cause: e });
      }
    })();
  }
  return ready;
}

/** Bytes of this realm's wasm memory; it only grows, so this is also its peak. 0 before init. */
export function wasmMemoryBytes() {
  return memory?.buffer.byteLength ?? 0;
}

/** Whether `initWasm` has completed in this realm. */
export function wasmReady() {
  return initialised;
}

/**
 * The Amulet strength k for (alpha, lambda, eta, T): the scalar the whole T-iteration game
 * reduces to, log π = z_p + k·(z_p − z_b). Synchronous: needs the wasm initialised first
 * (`await initWasm()`, or any `AmuletEngine.load` in this realm); otherwise throws NOT_READY.
 */
export function closedFormStrength(alpha = 2, lambda = 2, eta = 10, iterations = 60) {
  if (!initialised) {
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
    return wasmStrength(alpha, lambda, eta, iterations);
  } catch (e) {
    throw toAmuletError(e);
  }
}

/** `closedFormStrength`, initialising the wasm first when needed. */
export async function strength(alpha, lambda, eta, iterations) {
  await initWasm();
  return closedFormStrength(alpha, lambda, eta, iterations);
}
