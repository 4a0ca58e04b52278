// Starting the threaded build's pool of Web Workers without waiting forever.
//
// wasm-bindgen-rayon's `initThreadPool(n)` fetches its own snippet (`workerHelpers.js`),
// starts n module Workers from it as blob: URLs, posts each `wasm_bindgen_worker_init` and
// resolves once each has said it is ready. A helper whose script fails (a server or proxy that
// does not answer the snippet with it) or that does not get going never says so, and the
// promise never settles. So the Workers created while the pool starts are watched here; the
// ones sent that init message are the helpers: the first one's `error` event, or no pool after
// POOL_START_MS, rejects, and every helper is terminated (the caller then runs one thread).
// Where blob: Workers are refused (a CSP `worker-src` without blob:), initThreadPool rejects
// by itself.

/** Time the helpers get to load and instantiate the module (tens of milliseconds each, usually). */
export const POOL_START_MS = 15_000;

/**
 * `glue.initThreadPool(n)`, rejecting when a helper Worker fails to start.
 * @param {{ initThreadPool(n: number): Promise<unknown> }} glue the threaded build's module
 * @param {number} n
 * @param {number} [timeoutMs]
 */
export async function startPool(glue, n, timeoutMs = POOL_START_MS) {
  const helpers = [];
  let fail;
  const failed = new Promise((_, reject) => (fail = reject));
  // The helpers are created after a fetch, so the global stays replaced until the pool is up;
  // a Worker this realm creates meanwhile for anything else is only passed through.
  const Native = globalThis.Worker;
  const failedToStart = (e) => fail(new Error(`a helper Worker failed: ${e?.message || 'its script did not run'}`));
  globalThis.Worker = class extends Native {
    postMessage(message, ...rest) {
      if (message?.type === 'wasm_bindgen_worker_init' && !helpers.includes(this)) {
        helpers.push(this);
        this.addEventListener('error', failedToStart, { once: true });
      }
      return super.postMessage(message, ...rest);
    }
  };
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`the pool's ${n} Workers were not ready after ${timeoutMs / 1000} s`)),
      timeoutMs,
    );
  });
  try {
    await Promise.race([glue.initThreadPool(n), failed, late]);
  } catch (e) {
    for (const w of helpers) w.terminate();
    throw e;
  } finally {
    clearTimeout(timer);
    globalThis.Worker = Native;
  }
}
