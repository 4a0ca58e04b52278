// Worker entry (a module worker): runs an AmuletEngine off the page's thread.
//
//   new Worker(new URL('amulet-web/worker', import.meta.url), { type: 'module' })
//
// and drive it with `createWorkerEngine(worker, source, options)` from the main entry.
// Protocol (every message carries the `id` of its request; each request is first answered
// `{ type: 'accepted', id }` as it arrives, before any work):
//   page -> worker  { type: 'load', id, source, options }      -> progress*, loaded | error
//                   { type: 'generate' | 'compare', id, options } -> chunk*, end | error
//                   { type: 'strength', id, args }              -> result | error
//                   { type: 'memory', id }                      -> result | error
//                   { type: 'abort', id }   (a load or a generation; also sent on early break)
//                   { type: 'dispose', id }                     -> disposed
//                   { type: 'ping' }                            -> pong (the page's heartbeat)
//                   { type: 'watch', id, lock }                 -> watching { held }
// The engine loop yields between decode steps, so an abort message is handled within one token.
//
// A worker can die without a word (terminate(), the browser reclaiming it): `watch` has it hold
// a Web Lock for the rest of its life, which the browser releases when the worker ends, so the
// page, waiting for that lock, learns of it at once even while the worker is busy in wasm.
// Where there are no Web Locks the page has only the heartbeat: pings answered between steps,
// and the acceptance, which tells a busy worker (a model being built) from a dead one.

import { AmuletEngine } from './engine.js';
import { serializeError } from './errors.js';
import { strength } from './wasm.js';

const scope = globalThis;
let engine = null;
const controllers = new Map(); // request id -> AbortController

function post(message, transfer) {
  scope.postMessage(message, transfer ?? []);
}

function fail(id, e) {
  post({ type: 'error', id, error: serializeError(e) });
}

async function load(id, source, options) {
  const ac = new AbortController();
  controllers.set(id, ac);
  try {
    if (engine) {
      await engine.dispose();
      engine = null;
    }
    engine = await AmuletEngine.load(source, {
      ...options,
      signal: ac.signal,
      onProgress: (progress) => post({ type: 'progress', id, progress }),
    });
    post({ type: 'loaded', id, info: engine.info });
  } catch (e) {
    fail(id, e);
  } finally {
    controllers.delete(id);
  }
}

async function run(id, kind, options) {
  const ac = new AbortController();
  controllers.set(id, ac);
  try {
    if (!engine) throw Object.assign(new Error('no model is loaded in this worker'), { code: 'NOT_READY' });
    const chunks =
      kind === 'compare'
        ? engine.compare({ ...options, signal: ac.signal })
        : engine.generate({ ...options, signal: ac.signal });
    for await (const chunk of chunks) post({ type: 'chunk', id, chunk });
    post({ type: 'end', id });
  } catch (e) {
    fail(id, e);
  } finally {
    controllers.delete(id);
  }
}

async function dispose(id) {
  try {
    await engine?.dispose();
    engine = null;
    post({ type: 'disposed', id });
  } catch (e) {
    fail(id, e);
  }
}

async function memoryUsage(id) {
  try {
    if (!engine) throw Object.assign(new Error('no model is loaded in this worker'), { code: 'NOT_READY' });
    post({ type: 'result', id, value: await engine.memoryUsage() });
  } catch (e) {
    fail(id, e);
  }
}

/** Holds the Web Lock `lock` until this worker ends; says whether it could. */
function watch(id, lock) {
  const locks = scope.navigator?.locks;
  if (typeof lock !== 'string' || typeof locks?.request !== 'function') {
    post({ type: 'watching', id, held: false });
    return;
  }
  locks
    .request(lock, () => {
      post({ type: 'watching', id, held: true });
      return new Promise(() => {}); // released only when the worker ends
    })
    .catch(() => post({ type: 'watching', id, held: false }));
}

async function computeStrength(id, args) {
  try {
    post({ type: 'result', id, value: await strength(...args) });
  } catch (e) {
    fail(id, e);
  }
}

scope.addEventListener('message', (event) => {
  const msg = event.data;
  if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') return;
  if (msg.id !== undefined && msg.type !== 'abort') post({ type: 'accepted', id: msg.id });
  switch (msg.type) {
    case 'load':
      return void load(msg.id, msg.source, msg.options ?? {});
    case 'generate':
    case 'compare':
      return void run(msg.id, msg.type, msg.options ?? {});
    case 'abort':
      return void controllers.get(msg.id)?.abort();
    case 'dispose':
      return void dispose(msg.id);
    case 'strength':
      return void computeStrength(msg.id, msg.args ?? []);
    case 'memory':
      return void memoryUsage(msg.id);
    case 'ping':
      return post({ type: 'pong' });
    case 'watch':
      return watch(msg.id, msg.lock);
    default:
      return fail(msg.id, Object.assign(new Error(`unknown message type ${msg.type}`), { code: 'WORKER' }));
  }
});
