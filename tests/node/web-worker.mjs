// A Web-Worker-shaped wrapper (postMessage, addEventListener, terminate) around a Node
// worker thread, recording the traffic so tests can see what crossed the boundary.
import { Worker } from 'node:worker_threads';

export class NodeWebWorker extends EventTarget {
  sent = [];
  received = [];

  constructor(url = new URL('./worker-shim.mjs', import.meta.url), options) {
    super();
    this.thread = new Worker(url, options);
    this.thread.on('message', (data) => {
      this.received.push(data);
      this.dispatchEvent(new MessageEvent('message', { data }));
    });
    this.thread.on('error', (err) => {
      const ev = new Event('error', { cancelable: true });
      ev.message = err.message;
      this.dispatchEvent(ev);
    });
  }

  postMessage(message, transfer) {
    this.sent.push(message);
    this.thread.postMessage(message, transfer);
  }

  terminate() {
    return this.thread.terminate();
  }
}
