// A trap thrown from the task queue (where wasm-bindgen runs an async call's later work: a
// WebGPU build after the adapter's promise, a WebGPU step after its readback) while a call of
// ours waits: Node reports it as `uncaughtException`, which `settles` (www/src/wasm.js) turns
// into the call's COMPUTE rejection, as a page's `error` event does. Errors that are not ours
// go on as Node takes them without the package. Each case in a process of its own, since the
// claimed trap breaks that realm and the others end their process. The trap is a real one: a
// wasm function made of `unreachable`, called from a microtask.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';

const wasmJs = new URL('../../www/src/wasm.js', import.meta.url).href;
// (module (func (export "f") unreachable))
const UNREACHABLE = '[0,97,115,109,1,0,0,0,1,4,1,96,0,0,3,2,1,0,7,5,1,1,102,0,0,10,5,1,3,0,0,11]';

/** Runs `body` as a module in a fresh Node process, with `settles` and `trap` (a function that traps). */
function run(body) {
  const script = `import { settles } from ${JSON.stringify(wasmJs)};
const bytes = new Uint8Array(${UNREACHABLE});
const trap = new WebAssembly.Instance(new WebAssembly.Module(bytes)).exports.f;
${body}`;
  return spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
}

test('a trap in the task queue while a call waits: that call rejects with COMPUTE, the process lives on', () => {
  const r = run(`
const call = settles(new Promise(() => {})); // a call of ours that would wait for ever
queueMicrotask(trap);
const e = await call.catch((e) => e);
console.log(JSON.stringify({ code: e.code, message: e.message, cause: e.cause instanceof WebAssembly.RuntimeError,
  listeners: process.listenerCount('uncaughtException') }));
const later = await settles(Promise.resolve(1)).then(() => 'resolved');
console.log(later);`);
  assert.equal(r.status, 0, r.stderr);
  const [line, later] = r.stdout.trim().split('\n');
  const got = JSON.parse(line);
  assert.equal(got.code, 'COMPUTE');
  assert.match(got.message, /wasm instance trapped \(unreachable\), so its state is lost/);
  assert.ok(got.cause);
  assert.equal(got.listeners, 0, 'the listener is gone once no call waits');
  assert.equal(later, 'resolved', 'a call that settles on its own is not touched');
});

test('any other uncaught error while a call waits ends the process as without the package', () => {
  const r = run(`
settles(new Promise(() => {}));
queueMicrotask(() => { throw new Error('not ours'); });`);
  assert.equal(r.status, 1, r.stdout);
  assert.match(r.stderr, /Error: not ours/);
});

test('a trap while no call of ours waits is not claimed: the process ends', () => {
  const r = run(`
await settles(Promise.resolve());
queueMicrotask(trap);`);
  assert.equal(r.status, 1, r.stdout);
  assert.match(r.stderr, /RuntimeError: unreachable/);
});

test("the process's own uncaughtException listener still gets errors that are not ours", () => {
  const r = run(`
process.on('uncaughtException', (e) => console.log('own listener:', e.message));
settles(new Promise(() => {}));
queueMicrotask(() => { throw new Error('not ours'); });`);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'own listener: not ours');
});
