// Loading over HTTP: streamed download with progress, shards, the Cache API, HTTP errors.
// A local server serves the real model; a Map-backed stand-in plays the browser's `caches`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';

import { AmuletEngine, DEFAULT_CACHE_NAME } from 'amulet-web';
import { MODEL_PATH, collect, requireModel, thrown } from './helpers.mjs';

let server;
let base;
let bytes;
const hits = [];

/** The part of the Cache API the package uses, kept in memory. */
class MemoryCache {
  entries = new Map();
  async match(url) {
    const hit = this.entries.get(String(url));
    return hit && new Response(hit.body, { headers: hit.headers });
  }
  async put(url, res) {
    this.entries.set(String(url), { body: new Uint8Array(await res.arrayBuffer()), headers: [...res.headers] });
  }
}
const opened = new Map();

before(async () => {
  requireModel();
  bytes = await readFile(MODEL_PATH);
  const half = Math.floor(bytes.length / 2);
  const files = { '/model.gguf': bytes, '/part-1.gguf': bytes.subarray(0, half), '/part-2.gguf': bytes.subarray(half) };
  server = createServer((req, res) => {
    hits.push(req.url);
    const body = files[req.url];
    if (!body) {
      res.writeHead(404).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
    res.end(body);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${server.address().port}`;
  globalThis.caches = {
    async open(name) {
      if (!opened.has(name)) opened.set(name, new MemoryCache());
      return opened.get(name);
    },
  };
});

after(() => {
  delete globalThis.caches;
  server?.close();
});

test('a URL is downloaded with progress, kept in the cache, and read from it the next time', async () => {
  const events = [];
  const e1 = await AmuletEngine.load(`${base}/model.gguf`, { cache: true, onProgress: (p) => events.push(p) });
  const downloads = events.filter((p) => p.phase === 'download');
  assert.ok(downloads.length > 2, 'several download events');
  assert.equal(downloads.at(-1).loaded, bytes.length);
  assert.equal(downloads.at(-1).total, bytes.length);
  assert.match(downloads[0].text, /^Downloading/);
  assert.ok(downloads.at(-1).progress <= 0.9 + 1e-9);
  assert.equal(events.at(-1).phase, 'load');
  assert.equal(events.at(-1).progress, 1);
  assert.equal(e1.info.model, 'model.gguf');
  await e1.dispose();
  assert.deepEqual(hits, ['/model.gguf']);
  assert.ok(opened.get(DEFAULT_CACHE_NAME).entries.has(`${base}/model.gguf`));

  const again = [];
  const e2 = await AmuletEngine.load(`${base}/model.gguf`, { cache: true, onProgress: (p) => again.push(p) });
  assert.deepEqual(hits, ['/model.gguf'], 'not downloaded twice');
  assert.match(again[0].text, /^Reading from cache/);
  const { final } = await collect(e2.generate({ prompt: 'Hi', system: '', maxTokens: 2 }));
  assert.ok(final.done);
  await e2.dispose();
});

test('shards are fetched in order and concatenated', async () => {
  hits.length = 0;
  const events = [];
  const engine = await AmuletEngine.load([`${base}/part-1.gguf`, new URL(`${base}/part-2.gguf`)], {
    cache: 'shards',
    onProgress: (p) => events.push(p),
  });
  assert.deepEqual(hits, ['/part-1.gguf', '/part-2.gguf']);
  assert.ok(events.some((p) => /part 2\/2/.test(p.text)));
  assert.equal(events.filter((p) => p.phase === 'download').at(-1).loaded, bytes.length);
  assert.equal(engine.info.architecture, 'llama');
  assert.equal(opened.get('shards').entries.size, 2);
  await engine.dispose();
});

test('HTTP errors reject with IO; an aborted download rejects with ABORTED', async () => {
  const missing = await thrown(AmuletEngine.load(`${base}/nope.gguf`));
  assert.equal(missing.code, 'IO');
  assert.match(missing.message, /404/);

  const ac = new AbortController();
  const err = await thrown(
    AmuletEngine.load(`${base}/model.gguf`, {
      signal: ac.signal,
      onProgress: (p) => p.loaded > 1e6 && ac.abort(),
    }),
  );
  assert.equal(err.code, 'ABORTED');
  assert.equal(err.name, 'AbortError');
});
