// Loading over HTTP: the header checked before the download, streamed download with progress,
// resumption after a broken connection, integrity, shards, the Cache API (and its quota), HTTP
// errors. A local server serves the real model (with Range support, and faults on demand); a
// Map-backed stand-in plays the browser's `caches`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';

import { AmuletEngine, DEFAULT_CACHE_NAME } from 'amulet-web';
import { MODEL_PATH, collect, hugeHeader, requireModel, thrown } from './helpers.mjs';

let server;
let base;
let bytes;
let sha256;
/** Every request: `${url} ${range header or '-'}`. */
const hits = [];
/** url -> how the next GET of it misbehaves: 'cut' (drop the connection half-way, once). */
const faults = new Map();

/** The part of the Cache API the package uses, kept in memory; `refuse` plays a full quota. */
class MemoryCache {
  entries = new Map();
  refuse = false;
  async match(url) {
    const hit = this.entries.get(String(url));
    return hit && new Response(hit.body, { headers: hit.headers });
  }
  async put(url, res) {
    if (this.refuse) throw new DOMException('the quota is exceeded', 'QuotaExceededError');
    this.entries.set(String(url), { body: new Uint8Array(await res.arrayBuffer()), headers: [...res.headers] });
  }
}
const opened = new Map();

before(async () => {
  requireModel();
  bytes = await readFile(MODEL_PATH);
  sha256 = createHash('sha256').update(bytes).digest('hex');
  const half = Math.floor(bytes.length / 2);
  // 3.9 GB of embeddings: the file fits wasm32's offsets, the weights plus KV cache do not.
  const huge = hugeHeader(4096, 236_000);
  // The same with a header longer than the first probe (5 MB of description).
  const long = hugeHeader(4096, 236_000, 'x'.repeat(5 << 20));
  const files = {
    '/model.gguf': bytes,
    '/copy.gguf': bytes,
    '/part-1.gguf': bytes.subarray(0, half),
    '/part-2.gguf': bytes.subarray(half),
  };
  server = createServer((req, res) => {
    const range = req.headers.range;
    hits.push(`${req.url} ${range ?? '-'}`);
    if (req.url === '/huge.gguf') {
      // Only the header exists; the size is what the header says (3.9 GB).
      res.writeHead(206, {
        'content-range': `bytes 0-${huge.head.length - 1}/${huge.fileLength}`,
        'content-length': huge.head.length,
      });
      res.end(huge.head);
      return;
    }
    if (req.url === '/long.gguf') {
      // Only the header exists, served by range.
      const [, from, to] = /^bytes=(\d+)-(\d+)$/.exec(range).map(Number);
      const end = Math.min(to, long.head.length - 1);
      res.writeHead(206, {
        'content-range': `bytes ${from}-${end}/${long.fileLength}`,
        'content-length': end - from + 1,
      });
      res.end(long.head.subarray(from, end + 1));
      return;
    }
    const body = files[req.url.replace(/^\/noresume/, '')];
    if (!body) {
      res.writeHead(404).end('not found');
      return;
    }
    const resumable = !req.url.startsWith('/noresume');
    const m = /^bytes=(\d+)-(\d*)$/.exec(range ?? '');
    if (m && resumable) {
      const from = Number(m[1]);
      const to = m[2] ? Math.min(Number(m[2]), body.length - 1) : body.length - 1;
      res.writeHead(206, {
        'content-range': `bytes ${from}-${to}/${body.length}`,
        'content-length': to - from + 1,
        etag: '"v1"',
      });
      res.end(body.subarray(from, to + 1));
      return;
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length, etag: '"v1"' });
    if (faults.get(req.url) === 'cut' && !range) {
      faults.delete(req.url);
      res.write(body.subarray(0, half), () => res.destroy());
      return;
    }
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

/** The requests since the last call. */
function take() {
  return hits.splice(0);
}

test('a URL: its header is checked first, then it is downloaded with progress, cached, and read from the cache next time', async () => {
  take();
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
  assert.equal(e1.info.cached, 'stored');
  await e1.dispose();
  assert.deepEqual(take(), ['/model.gguf bytes=0-4194303', '/model.gguf -'], 'a header probe, then the download');
  assert.ok(opened.get(DEFAULT_CACHE_NAME).entries.has(`${base}/model.gguf`));

  const again = [];
  const e2 = await AmuletEngine.load(`${base}/model.gguf`, { cache: true, onProgress: (p) => again.push(p) });
  assert.deepEqual(take(), [], 'not downloaded twice');
  assert.match(again[0].text, /^Reading from cache/);
  assert.equal(e2.info.cached, 'hit');
  const { final } = await collect(e2.generate({ prompt: 'Hi', system: '', maxTokens: 2 }));
  assert.ok(final.done);
  await e2.dispose();
});

test('shards are fetched in order and concatenated', async () => {
  take();
  const events = [];
  const engine = await AmuletEngine.load([`${base}/part-1.gguf`, new URL(`${base}/part-2.gguf`)], {
    cache: 'shards',
    onProgress: (p) => events.push(p),
  });
  assert.deepEqual(take(), ['/part-1.gguf -', '/part-2.gguf -']);
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

test('a model too large for wasm32 is refused from its header, before the download', async () => {
  take();
  const err = await thrown(AmuletEngine.load(`${base}/huge.gguf`, { device: 'cpu', cache: true }));
  assert.equal(err.code, 'TOO_LARGE');
  assert.match(err.message, /4\.\d GB/);
  assert.deepEqual(take(), ['/huge.gguf bytes=0-4194303'], 'only the header was asked for');
  // A header longer than the first 4 MB: only the rest is asked for.
  const long = await thrown(AmuletEngine.load(`${base}/long.gguf`, { device: 'cpu', cache: true }));
  assert.equal(long.code, 'TOO_LARGE');
  assert.deepEqual(take(), ['/long.gguf bytes=0-4194303', '/long.gguf bytes=4194304-8388607']);
});

test('a download cut in the middle resumes with a Range request; one that cannot resume is a NETWORK error', async () => {
  take();
  faults.set('/copy.gguf', 'cut');
  const engine = await AmuletEngine.load(`${base}/copy.gguf`, { cache: 'cut', integrity: sha256 });
  const asked = take();
  assert.equal(asked.length, 3, asked.join(', '));
  assert.match(asked[2], /^\/copy\.gguf bytes=\d+-$/, 'the rest was asked for');
  assert.equal(engine.info.cached, 'stored');
  await engine.dispose();

  faults.set('/noresume/copy.gguf', 'cut');
  const err = await thrown(AmuletEngine.load(`${base}/noresume/copy.gguf`, { cache: 'cut' }));
  assert.equal(err.code, 'NETWORK');
  assert.equal(opened.get('cut').entries.has(`${base}/noresume/copy.gguf`), false, 'partial data is never cached');
});

test('integrity: a match loads, a mismatch is INTEGRITY and nothing is cached', async () => {
  const sri = `sha256-${Buffer.from(sha256, 'hex').toString('base64')}`;
  const ok = await AmuletEngine.load(`${base}/model.gguf`, { cache: 'sri', integrity: sri });
  assert.equal(ok.info.cached, 'stored');
  await ok.dispose();
  // The cached copy carries its digest: a different integrity does not trust it.
  const wrong = '0'.repeat(64);
  const err = await thrown(AmuletEngine.load(`${base}/copy.gguf`, { cache: 'sri', integrity: wrong }));
  assert.equal(err.code, 'INTEGRITY');
  assert.equal(opened.get('sri').entries.has(`${base}/copy.gguf`), false);
  const local = await thrown(AmuletEngine.load(new Uint8Array(bytes), { integrity: wrong }));
  assert.equal(local.code, 'INTEGRITY');
  const bad = await thrown(AmuletEngine.load(`${base}/model.gguf`, { integrity: 'md5-xyz' }));
  assert.equal(bad.code, 'BAD_OPTION');
  assert.equal(bad.option, 'integrity');
});

test('storage quota exceeded while caching: the load completes uncached and info says so', async () => {
  await caches.open('full');
  opened.get('full').refuse = true;
  const engine = await AmuletEngine.load(`${base}/model.gguf`, { cache: 'full' });
  assert.equal(engine.info.cached, 'not-stored');
  assert.match(engine.info.cacheNote, /quota/);
  const { final } = await collect(engine.generate({ prompt: 'Hi', system: '', maxTokens: 2 }));
  assert.ok(final.done);
  await engine.dispose();
});
