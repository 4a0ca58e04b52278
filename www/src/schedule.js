// Small async helpers: giving the event loop a turn between decode steps, and a FIFO lock.

import { abortError } from './errors.js';

let channel = null;
const waiting = [];

/**
 * Resolves after the event loop has run other tasks (input, rendering, messages such as an
 * abort from the page). Not setTimeout(0): browsers clamp nested timers to 4 ms.
 */
export function yieldToEventLoop() {
  if (typeof setImmediate === 'function') return new Promise((r) => setImmediate(r)); // Node
  if (typeof MessageChannel === 'function') {
    if (!channel) {
      channel = new MessageChannel();
      channel.port1.onmessage = () => waiting.shift()?.();
    }
    return new Promise((r) => {
      waiting.push(r);
      channel.port2.postMessage(0);
    });
  }
  return new Promise((r) => setTimeout(r, 0));
}

/** A first-in first-out lock: `await acquire(signal)` gives a release function. */
export class Fifo {
  #busy = false;
  #queue = []; // { grant, fail, signal, onAbort }
  #idle = [];

  get busy() {
    return this.#busy;
  }

  acquire(signal) {
    if (signal?.aborted) return Promise.reject(abortError(signal.reason));
    if (!this.#busy) {
      this.#busy = true;
      return Promise.resolve(this.#releaser());
    }
    return new Promise((resolve, reject) => {
      const entry = { grant: () => resolve(this.#releaser()), fail: reject, signal, onAbort: null };
      if (signal) {
        entry.onAbort = () => {
          const i = this.#queue.indexOf(entry);
          if (i >= 0) this.#queue.splice(i, 1);
          reject(abortError(signal.reason));
        };
        signal.addEventListener('abort', entry.onAbort, { once: true });
      }
      this.#queue.push(entry);
    });
  }

  /** Rejects everyone still waiting (the holder keeps the lock until it releases). */
  rejectWaiting(error) {
    for (const e of this.#queue.splice(0)) {
      e.signal?.removeEventListener('abort', e.onAbort);
      e.fail(error);
    }
  }

  /** Resolves when nobody holds the lock. */
  whenIdle() {
    return this.#busy ? new Promise((r) => this.#idle.push(r)) : Promise.resolve();
  }

  #releaser() {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#queue.shift();
      if (next) {
        next.signal?.removeEventListener('abort', next.onAbort);
        next.grant();
      } else {
        this.#busy = false;
        for (const r of this.#idle.splice(0)) r();
      }
    };
  }
}
