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

/** Routes the worker's messages to the request that owns their id. */
class Channel {
  #worker;
  #handlers = new Map();
  #nextId = 1;
  #broken = null;

  constructor(worker) {
    this.#worker = worker;
    const onMessage = (event) => {
      const msg = event.data;
      if (msg && typeof msg === 'object') this.#handlers.get(msg.id)?.(msg);
    };
    const onError = (event) => {
      event?.preventDefault?.();
      this.#breakAll(workerError(`the worker failed: ${event?.message ?? 'script error'}`));
    };
    const onMessageError = () => this.#breakAll(workerError('a message from the worker could not be read'));
    worker.addEventListener('message', onMessage);
    worker.addEventListener('error', onError);
    worker.addEventListener('messageerror', onMessageError);
  }

  #breakAll(error) {
    this.#broken = error;
    for (const h of [...this.#handlers.values()]) h({ type: 'error', error });
  }

  /** Starts a request; `handler(msg)` gets each reply. Returns the id. */
  open(message, handler, transfer = []) {
    const id = this.#nextId++;
    if (this.#broken) {
      queueMicrotask(() => handler({ type: 'error', error: this.#broken }));
      return id;
    }
    this.#handlers.set(id, handler);
    try {
      this.#worker.postMessage({ ...message, id }, transfer);
    } catch (e) {
      this.#handlers.delete(id);
      const err = workerError(`could not send to the worker: ${e?.message ?? e}`);
      queueMicrotask(() => handler({ type: 'error', error: err }));
    }
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
          if (this.#owned) this.#worker.terminate();
        });
    }
    return this.#disposing;
  }
}
