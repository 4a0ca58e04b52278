// Runs amulet-web/worker inside a Node worker thread, dressed as a Web Worker scope:
// globalThis.addEventListener('message') and globalThis.postMessage, as in a browser.
import { parentPort } from 'node:worker_threads';

const listeners = new Set();
globalThis.addEventListener = (type, fn) => type === 'message' && listeners.add(fn);
globalThis.removeEventListener = (type, fn) => listeners.delete(fn);
globalThis.postMessage = (message, transfer) => parentPort.postMessage(message, transfer);
// Like a browser, hold messages until the worker module has been evaluated.
let early = [];
const dispatch = (data) => {
  for (const fn of listeners) fn({ data });
};
parentPort.on('message', (data) => (early ? early.push(data) : dispatch(data)));

await import('amulet-web/worker');
const held = early;
early = null;
for (const data of held) dispatch(data);
