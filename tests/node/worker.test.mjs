// createWorkerEngine + amulet-web/worker, with a Node worker thread dressed as a Web Worker
// (tests/browser runs the real thing in a browser). Same API as AmuletEngine, proxied.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';

import { createWorkerEngine } from 'amulet-web';
import { NodeWebWorker } from './web-worker.mjs';
import { MODEL_PATH, QUESTION, collect, requireModel, thrown } from './helpers.mjs';

const QUICK = { prompt: 'Name a fruit.', system: '', method: 'base' };

let worker;
let engine;
let buffer;
const progress = [];

before(async () => {
  requireModel();
  worker = new NodeWebWorker();
  const bytes = new Uint8Array(await readFile(MODEL_PATH));
  buffer = bytes.buffer;
  engine = await createWorkerEngine(worker, bytes, { onProgress: (p) => progress.push(p) });
});

after(async () => {
  await engine?.dispose();
  await worker?.terminate();
});

test('load in the worker: bytes are transferred, progress and info come back', () => {
  assert.equal(buffer.byteLength, 0, 'the page buffer was transferred, not copied');
  assert.ok(progress.length > 2);
  assert.equal(progress.at(-1).phase, 'load');
  assert.equal(progress.at(-1).progress, 1);
  assert.equal(engine.info.device, 'cpu');
  assert.equal(engine.info.architecture, 'llama');
});

test('generate streams through the worker', async () => {
  const { chunks, final, text } = await collect(engine.generate({ ...QUICK, maxTokens: 6 }));
  assert.ok(chunks.length >= 1);
  assert.equal(final.text, text);
  assert.equal(final.usage.completionTokens, chunks.length);
});

test('abort crosses the boundary: the page throws at once, the worker stops within one token', async () => {
  const ac = new AbortController();
  let n = 0;
  const err = await thrown(async () => {
    for await (const c of engine.generate({ ...QUICK, maxTokens: 300, ignoreEos: true, signal: ac.signal })) {
      assert.ok(!c.done);
      if (++n === 3) ac.abort();
    }
  });
  assert.equal(err.name, 'AbortError');
  assert.equal(err.code, 'ABORTED');
  assert.equal(n, 3, 'no chunk is delivered after abort');

  const abortMsg = worker.sent.find((m) => m.type === 'abort');
  assert.ok(abortMsg, 'an abort message was sent');
  // The worker answers the aborted request with ABORTED after at most one more step.
  const mine = () => worker.received.filter((m) => m.id === abortMsg.id);
  const deadline = Date.now() + 10_000;
  while (!mine().some((m) => m.type === 'error') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  const msgs = mine();
  const end = msgs.find((m) => m.type === 'error');
  assert.equal(end?.error.code, 'ABORTED');
  const chunks = msgs.filter((m) => m.type === 'chunk').length;
  assert.ok(chunks <= 3 + 5, `the worker stopped soon after the abort (${chunks} chunks)`);

  const again = await collect(engine.generate({ ...QUICK, maxTokens: 2 }));
  assert.ok(again.final.done);
});

test('breaking out of the loop stops the worker-side generation', async () => {
  let n = 0;
  for await (const _ of engine.generate({ ...QUICK, maxTokens: 300, ignoreEos: true })) if (++n === 2) break;
  const next = await collect(engine.generate({ ...QUICK, maxTokens: 2 }));
  assert.ok(next.final.done);
  const last = worker.sent.filter((m) => m.type === 'abort').at(-1);
  const stopped = worker.received.find((m) => m.id === last.id && m.type === 'error');
  assert.equal(stopped?.error.code, 'ABORTED');
});

test('compare and chat.completions.create work through the worker', async () => {
  const { final } = await collect(
    engine.compare({ prompt: QUESTION, preference: 'concise', methods: ['base', 'amulet'], maxTokens: 4 }),
  );
  assert.deepEqual(Object.keys(final.results).sort(), ['amulet', 'base']);

  const res = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: 3 });
  assert.equal(res.object, 'chat.completion');
  assert.equal(
    res.usage.completion_tokens,
    res.choices[0].finish_reason === 'length' ? 3 : res.usage.completion_tokens,
  );

  const stream = await engine.chat.completions.create({
    messages: [{ role: 'user', content: 'Hi' }],
    max_tokens: 3,
    stream: true,
  });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.ok(chunks.at(-1).usage);

  assert.ok(Math.abs((await engine.strength(2, 2, 10, 60)) - 4.6487) < 1e-3);
});

test('errors come back with their code', async () => {
  const unknown = await thrown(collect(engine.generate({ ...QUICK, bogus: true })));
  assert.equal(unknown.code, 'BAD_OPTION');
  assert.equal(unknown.option, 'bogus');
  const empty = await thrown(collect(engine.generate({ ...QUICK, method: 'amulet', preference: ' ' })));
  assert.equal(empty.code, 'BAD_OPTION');
  const k = await thrown(engine.strength(2, 2, 10, 0));
  assert.equal(k.code, 'BAD_OPTION');
});

test('a worker that fails to start rejects with WORKER; bad bytes with BAD_MODEL', async () => {
  const broken = new NodeWebWorker(new URL('data:text/javascript,throw new Error("boom")'));
  const err = await thrown(createWorkerEngine(broken, new Uint8Array(8)));
  assert.equal(err.code, 'WORKER');
  await broken.terminate();

  const w = new NodeWebWorker();
  const bad = await thrown(createWorkerEngine(w, new Uint8Array([1, 2, 3])));
  assert.equal(bad.code, 'BAD_MODEL');
  const gpu = await thrown(createWorkerEngine(w, new Uint8Array(8), { device: 'webgpu' }));
  assert.equal(gpu.code, 'NO_WEBGPU');
  await w.terminate();
});

test('dispose: later calls reject with DISPOSED (model given as a file: URL)', async () => {
  const w = new NodeWebWorker();
  const e = await createWorkerEngine(w, pathToFileURL(MODEL_PATH));
  assert.equal(e.info.model, 'SmolLM2-135M-Instruct.Q4_1.gguf');
  const running = collect(e.generate({ ...QUICK, maxTokens: 200, ignoreEos: true }));
  await new Promise((r) => setTimeout(r, 50));
  await e.dispose();
  const r = await thrown(running);
  assert.equal(r.code, 'DISPOSED');
  const later = await thrown(collect(e.generate(QUICK)));
  assert.equal(later.code, 'DISPOSED');
  await w.terminate();
});

test('a chat through the worker keeps its caches between turns', async () => {
  const chat = engine.createChat({ system: '', method: 'base' });
  await collect(chat.send('Name a fruit.', { maxTokens: 8 }));
  const second = await collect(chat.send('And a vegetable?', { maxTokens: 8 }));
  assert.ok(second.final.usage.cachedTokens > 8, JSON.stringify(second.final.usage));
  assert.equal(chat.messages.length, 4);
  const mem = await engine.memoryUsage();
  assert.ok(mem.prefixCacheBytes > 0);
});

test('a worker terminated from outside: its pending and later calls reject with WORKER_LOST within 2 s (heartbeat)', async () => {
  // Node has no Web Locks: the page learns of the end from the missing answers to its pings.
  assert.equal(globalThis.navigator?.locks, undefined);
  const w = new NodeWebWorker();
  const e = await createWorkerEngine(w, pathToFileURL(MODEL_PATH));
  let killed = 0;
  const running = thrown(
    collect(e.generate({ ...QUICK, maxTokens: 2000, ignoreEos: true }), (c, n) => {
      if (n === 3) {
        w.terminate();
        killed = Date.now();
      }
    }),
  );
  const err = await running;
  const ms = Date.now() - killed;
  assert.equal(err.code, 'WORKER_LOST', err.message);
  assert.ok(killed > 0 && ms < 2000, `failed ${ms} ms after the kill`);
  const t0 = Date.now();
  const later = await thrown(e.memoryUsage());
  assert.equal(later.code, 'WORKER_LOST');
  assert.ok(Date.now() - t0 < 100, 'a call after the loss fails at once');
  await e.dispose();
  // A worker that dies while idle: the next call finds it gone.
  const w2 = new NodeWebWorker();
  const e2 = await createWorkerEngine(w2, pathToFileURL(MODEL_PATH));
  await w2.terminate();
  const t1 = Date.now();
  const idle = await thrown(collect(e2.generate(QUICK)));
  assert.equal(idle.code, 'WORKER_LOST', idle.message);
  assert.ok(Date.now() - t1 < 2000, `the idle engine's call failed after ${Date.now() - t1} ms`);
  await e2.dispose();
});
