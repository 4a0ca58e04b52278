// createWorkerEngine: the AmuletEngine API, proxied to a Web Worker running ./worker.js.
// The page never runs the model: it posts requests and receives streamed chunks.

import { AmuletError, abortError, badOption, deserializeError, disposedError } from './errors.js';
import { checkLoadOptions } from './engine.js';
import { prepareRequest } from './options.js';
import { openaiChat } from './openai.js';
import { Chat } from './chat.js';

function workerError(message) {
  return new AmuletError('WORKER', message);
}

function lostError(why) {
  return new AmuletError('WORKER_LOST', `the worker is gone (${why}): its requests failed; create a new engine`);
}

/** While requests are pending, the worker is pinged this often (it answers between steps). */
const PING_MS = 400;
/**
 * Silence after which a worker is taken for lost, where no Web Lock tells of its end (see
 * worker.js). A live worker acknowledges each request as it arrives and answers pings within
 * milliseconds whenever its event loop turns, and a generation's steps come this close (or
 * within 3 times the longest step seen so far)...
 */
const QUIET_MS = 1200;
/**
 * ... but not inside one long synchronous call it has acknowledged: building a model, a long
 * prompt's prefill (a generation until its first chunk).
 */
const BUSY_QUIET_MS = 120_000;
const LONG = ['load', 'generate', 'compare'];

/**
 * Routes the worker's messages to the request that owns their id, and notices a worker that
 * is gone: its 'error' event fails every pending request with WORKER; its end (terminate(),
 * the browser reclaiming it) with WORKER_LOST, seen at once through a Web Lock the worker
 * holds, else by the heartbeat (within about QUIET_MS of its last word).
 */
class Channel {
  #worker;
  #handlers = new Map(); // id -> { handler, long, accepted, lastChunk, gap }
  #nextId = 1;
  #broken = null;
  /** When the worker last said anything, or the heartbeat started (the silence counted). */
  #lastHeard = 0;
  /** Whether the worker has said anything yet (before, its script may still be loading). */
  #heard = false;
  #timer = null;
  /** Aborts the wait for the worker's lock; set once the worker holds it. */
  #watching = null;

  constructor(worker) {
    this.#worker = worker;
    const onMessage = (event) => {
      this.#lastHeard = Date.now();
      this.#heard = true;
      const msg = event.data;
      if (!msg || typeof msg !== 'object') return;
      const entry = this.#handlers.get(msg.id);
      if (!entry) return;
      if (msg.type === 'accepted') {
        entry.accepted = true;
        return;
      }
      if (msg.type === 'chunk') {
        if (entry.lastChunk) entry.gap = Math.max(entry.gap, this.#lastHeard - entry.lastChunk);
        entry.lastChunk = this.#lastHeard;
        entry.long = false;
      }
      entry.handler(msg);
    };
    const onError = (event) => {
      event?.preventDefault?.();
      this.#breakAll(workerError(`the worker failed: ${event?.message ?? 'script error'}`));
    };
    const onMessageError = () => this.#breakAll(workerError('a message from the worker could not be read'));
    worker.addEventListener('message', onMessage);
    worker.addEventListener('error', onError);
    worker.addEventListener('messageerror', onMessageError);
    this.#watch();
  }

  #breakAll(error) {
    if (!this.#broken) this.#broken = error;
    this.shutdown();
    for (const { handler } of [...this.#handlers.values()]) handler({ type: 'error', error });
  }

  /** Asks the worker to hold a Web Lock for its life, and waits for the lock to learn of its end. */
  #watch() {
    const locks = globalThis.navigator?.locks;
    if (typeof locks?.request !== 'function') return;
    const lock = `amulet-web-worker-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
    const id = this.open({ type: 'watch', lock }, (msg) => {
      this.close(id);
      if (msg.type !== 'watching' || !msg.held || this.#broken) return; // no lock there: the heartbeat
      const ac = new AbortController();
      this.#watching = ac;
      locks
        .request(lock, { signal: ac.signal }, () => {
          if (this.#watching === ac) this.#breakAll(lostError('it ended'));
        })
        .catch(() => {}); // aborted by shutdown()
    });
  }

  /** How long the worker may stay silent with these requests pending. */
  #quietLimit() {
    let limit = QUIET_MS;
    for (const h of this.#handlers.values()) {
      if (h.accepted) limit = Math.max(limit, h.long ? BUSY_QUIET_MS : 3 * h.gap);
    }
    return limit;
  }

  /** Pings while requests are pending; a worker silent too long is lost. */
  #beat() {
    if (this.#timer || this.#broken) return;
    this.#lastHeard = Date.now();
    this.send({ type: 'ping' });
    this.#timer = setInterval(() => {
      if (this.#handlers.size === 0) {
        clearInterval(this.#timer);
        this.#timer = null;
        return;
      }
      // A worker that holds its lock is alive, however busy: the lock will tell when it is not.
      // One not heard from yet may still be loading its script: its 'error' event tells.
      const quiet = Date.now() - this.#lastHeard;
      if (!this.#watching && this.#heard && quiet > this.#quietLimit()) {
        this.#breakAll(lostError(`no answer for ${(quiet / 1000).toFixed(1)} s`));
        return;
      }
      this.send({ type: 'ping' });
    }, PING_MS);
  }

  /** Stops the heartbeat and the wait for the worker's lock (the engine is done with it). */
  shutdown() {
    clearInterval(this.#timer);
    this.#timer = null;
    this.#watching?.abort();
    this.#watching = null;
  }

  /** Starts a request; `handler(msg)` gets each reply. Returns the id. */
  open(message, handler, transfer = []) {
    const id = this.#nextId++;
    if (this.#broken) {
      queueMicrotask(() => handler({ type: 'error', error: this.#broken }));
      return id;
    }
    this.#handlers.set(id, { handler, long: LONG.includes(message.type), accepted: false, lastChunk: 0, gap: 0 });
    try {
      this.#worker.postMessage({ ...message, id }, transfer);
    } catch (e) {
      this.#handlers.delete(id);
      const err = workerError(`could not send to the worker: ${e?.message ?? e}`);
      queueMicrotask(() => handler({ type: 'error', error: err }));
      return id;
    }
    this.#beat();
    return id;
  }

  close(id) {
    this.#handlers.delete(id);
  }

  send(message) {
    if (this.#broken) return;
    try {
      this.#worker.postMessage(message);
    } catch {
      // The worker is gone; nothing to tell it.
    }
  }

  /** One request, one reply (`expect` type), as a promise. */
  call(message, expect, { transfer, onProgress, signal } = {}) {
    return new Promise((resolve, reject) => {
      let id = 0;
      const onAbort = () => {
        this.send({ type: 'abort', id });
        finish();
        reject(abortError(signal.reason));
      };
      const finish = () => {
        this.close(id);
        signal?.removeEventListener('abort', onAbort);
      };
      id = this.open(
        message,
        (msg) => {
          if (msg.type === 'progress') {
            try {
              onProgress?.(msg.progress);
            } catch {
              // A throwing progress callback must not break loading.
            }
          } else if (msg.type === expect) {
            finish();
            resolve(msg);
          } else if (msg.type === 'error') {
            finish();
            reject(msg.error instanceof Error ? msg.error : deserializeError(msg.error));
          }
        },
        transfer,
      );
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}

/** Model sources that can cross to the worker: bytes are transferred, URLs made absolute. */
function transferable(source) {
  const base = typeof location !== 'undefined' ? location.href : undefined;
  const url = (u) => {
    if (u instanceof URL) return u.href;
    try {
      return base ? new URL(u, base).href : u;
    } catch {
      return u;
    }
  };
  if (typeof source === 'string' || source instanceof URL) return { source: url(source), transfer: [] };
  if (Array.isArray(source)) return { source: source.map(url), transfer: [] };
  if (source instanceof ArrayBuffer) return { source, transfer: [source] };
  if (ArrayBuffer.isView(source)) {
    const whole =
      source.byteOffset === 0 && source.byteLength === source.buffer.byteLength && source.buffer instanceof ArrayBuffer;
    const bytes = whole
      ? new Uint8Array(source.buffer)
      : new Uint8Array(source.buffer, source.byteOffset, source.byteLength).slice();
    return { source: bytes, transfer: [bytes.buffer] };
  }
  return { source, transfer: [] }; // Blob / File: structured clone shares the data
}

/**
 * Loads a model in `worker` and returns an object with AmuletEngine's API whose calls run there.
 * ArrayBuffer / Uint8Array sources are transferred (the page's buffer is detached).
 * @param {Worker | null | undefined} worker a module Worker running amulet-web/worker
 *   (null: one is created from this package's worker.js, and terminated by dispose())
 * @param {*} source see AmuletEngine.load
 * @param {object} [options] see AmuletEngine.load (`wasm` is not forwarded: the worker finds its own)
 */
export async function createWorkerEngine(worker, source, options = {}) {
  checkLoadOptions(options);
  const { onProgress, signal, wasm: _wasm, fetchOptions, ...rest } = options;
  if (signal?.aborted) throw abortError(signal.reason);
  let owned = false;
  if (worker == null) {
    if (typeof Worker !== 'function') throw badOption('worker', 'no Worker constructor here: pass a worker');
    worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
    owned = true;
  }
  if (typeof worker.postMessage !== 'function' || typeof worker.addEventListener !== 'function') {
    throw badOption('worker', 'must be a Worker (postMessage, addEventListener)');
  }
  const channel = new Channel(worker);
  const moved = transferable(source);
  const loadOptions = { ...rest };
  if (fetchOptions) loadOptions.fetchOptions = { ...fetchOptions, signal: undefined };
  let loaded;
  try {
    loaded = await channel.call({ type: 'load', source: moved.source, options: loadOptions }, 'loaded', {
      transfer: moved.transfer,
      onProgress,
      signal,
    });
  } catch (e) {
    channel.shutdown();
    if (owned) worker.terminate();
    throw e;
  }
  return new WorkerEngine(channel, worker, owned, Object.freeze(loaded.info));
}

class WorkerEngine {
  #channel;
  #worker;
  #owned;
  #info;
  #disposing = null;

  constructor(channel, worker, owned, info) {
    this.#channel = channel;
    this.#worker = worker;
    this.#owned = owned;
    this.#info = info;
    this.chat = openaiChat(
      (opts) => this.generate(opts),
      () => this.#info.model,
    );
  }

  get info() {
    return this.#info;
  }

  get disposed() {
    return this.#disposing !== null;
  }

  /** The Worker this engine runs in. */
  get worker() {
    return this.#worker;
  }

  generate(options = {}) {
    return this.#stream('generate', options);
  }

  compare(options = {}) {
    return this.#stream('compare', options);
  }

  /** A conversation on the worker's engine (see AmuletEngine.createChat). */
  createChat(options = {}) {
    return new Chat(this, options);
  }

  /** The worker engine's memoryUsage(). */
  async memoryUsage() {
    if (this.#disposing) throw disposedError();
    return (await this.#channel.call({ type: 'memory' }, 'result')).value;
  }

  /** closedFormStrength, computed in the worker. */
  async strength(alpha, lambda, eta, iterations) {
    if (this.#disposing) throw disposedError();
    const msg = await this.#channel.call({ type: 'strength', args: [alpha, lambda, eta, iterations] }, 'result');
    return msg.value;
  }

  async *#stream(kind, options) {
    if (this.#disposing) throw disposedError();
    const { request, signal } = prepareRequest(options, kind);
    if (signal?.aborted) throw abortError(signal.reason);

    const inbox = [];
    let wake = null;
    const deliver = (msg) => {
      inbox.push(msg);
      wake?.();
    };
    const onAbort = () => {
      inbox.length = 0; // stop now: drop chunks not yet read
      deliver({ type: 'error', error: abortError(signal.reason) });
    };
    const id = this.#channel.open({ type: kind, options: request }, deliver);
    signal?.addEventListener('abort', onAbort, { once: true });
    let settled = false; // the worker has nothing more to do for this id
    try {
      for (;;) {
        while (inbox.length === 0) await new Promise((r) => (wake = r));
        wake = null;
        const msg = inbox.shift();
        if (msg.type === 'chunk') {
          if (msg.chunk.done) settled = true;
          yield msg.chunk;
        } else if (msg.type === 'end') {
          settled = true;
          return;
        } else if (msg.type === 'error') {
          if (!(msg.error instanceof Error)) settled = true; // from the worker, not local
          throw msg.error instanceof Error ? msg.error : deserializeError(msg.error);
        }
      }
    } finally {
      signal?.removeEventListener('abort', onAbort);
      this.#channel.close(id);
      // Aborted here, broken out of, or failed locally: the worker must stop too.
      if (!settled) this.#channel.send({ type: 'abort', id });
    }
  }

  /** Frees the model in the worker (and terminates the worker when it was created here). */
  dispose() {
    if (!this.#disposing) {
      this.#disposing = this.#channel
        .call({ type: 'dispose' }, 'disposed')
        .catch(() => {}) // a dead worker has nothing left to free
        .then(() => {
          this.#channel.shutdown();
          if (this.#owned) this.#worker.terminate();
        });
    }
    return this.#disposing;
  }
}
