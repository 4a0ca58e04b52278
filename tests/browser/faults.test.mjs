// Every fault a user of the package can meet in a browser, in headless Chromium: a full
// storage quota, a download cut in the middle, a wrong `integrity`, a Worker killed from
// outside, AbortSignal.timeout(), a GPU that cannot hold the model, a model too large for
// wasm32. One loopback server (below) serves the package, the models and the faults, all from
// one origin (the Cache API, OPFS and Web Locks are per origin); every test gets a fresh
// browser context, so storage starts empty.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { createServer } from 'node:http';
import path from 'node:path';
import { DEFAULT_MODEL, REPO, launchBrowser, outFile, requirePrerequisites } from './helpers.mjs';
import { hugeHeader } from '../node/helpers.mjs';

const AMULET = path.join(REPO, 'target', 'release', 'amulet');
requirePrerequisites([[AMULET, 'cargo build --release --bin amulet']]);

const MIME = { '.js': 'text/javascript', '.wasm': 'application/wasm', '.html': 'text/html' };

/**
 * name -> bytes, served at /m/<name> with Range and an ETag. Prefixes add faults: /cut/ sends
 * half of every whole-file GET, then drops the connection (range requests are answered whole); /noresume/
 * ignores Range (200, the whole file); /slow/ sends 16 KB every 50 ms.
 */
const files = new Map();
/** Every request for a model: `${path} ${range header or '-'}`. */
const hits = [];
let server;
let origin;
let browser;
let fixtureSha;

function serveModel(req, res, pathname) {
  const range = req.headers.range;
  hits.push(`${pathname} ${range ?? '-'}`);
  // Not from Chromium's HTTP cache, which would answer a whole-file GET from the header's
  // range request and its own range requests: each request here reaches this server.
  res.setHeader('cache-control', 'no-store');
  if (pathname === '/huge.gguf') {
    // 3.9 GB of F32 embeddings says the header; only the header exists.
    const huge = hugeHeader(4096, 236_000);
    res.writeHead(206, {
      'content-range': `bytes 0-${huge.head.length - 1}/${huge.fileLength}`,
      'content-length': huge.head.length,
    });
    return res.end(huge.head);
  }
  if (pathname === '/long.gguf') {
    // The same with a header longer than the first probe (5 MB of description), by range.
    const long = hugeHeader(4096, 236_000, 'x'.repeat(5 << 20));
    const [, from, to] = /^bytes=(\d+)-(\d+)$/.exec(range).map(Number);
    const end = Math.min(to, long.head.length - 1);
    res.writeHead(206, {
      'content-range': `bytes ${from}-${end}/${long.fileLength}`,
      'content-length': end - from + 1,
    });
    return res.end(long.head.subarray(from, end + 1));
  }
  const m = /^\/((?:cut\/|noresume\/|slow\/)*)m\/([\w.-]+)$/.exec(pathname);
  const body = m && files.get(m[2]);
  if (!body) return res.writeHead(404).end('not found');
  const has = (flag) => m[1].includes(`${flag}/`);
  const r = /^bytes=(\d+)-(\d*)$/.exec(range ?? '');
  if (r && !has('noresume')) {
    const from = Number(r[1]);
    const to = r[2] ? Math.min(Number(r[2]), body.length - 1) : body.length - 1;
    res.writeHead(206, {
      'content-range': `bytes ${from}-${to}/${body.length}`,
      'content-length': to - from + 1,
      etag: '"v1"',
    });
    return res.end(body.subarray(from, to + 1));
  }
  res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length, etag: '"v1"' });
  if (has('cut')) {
    // The browser reads the first half before the connection drops (it may discard what is
    // still in flight when it does).
    return res.write(body.subarray(0, body.length >> 1), () => setTimeout(() => res.destroy(), 300));
  }
  if (has('slow')) {
    // 16 KB every 50 ms: a download that lasts.
    let at = 0;
    const timer = setInterval(() => {
      if (at >= body.length) return (clearInterval(timer), res.end());
      res.write(body.subarray(at, (at += 16 << 10)));
    }, 50);
    res.on('close', () => clearInterval(timer));
    return;
  }
  res.end(body);
}

before(async () => {
  const dir = outFile('faults-models');
  fs.mkdirSync(dir, { recursive: true });
  const fixture = path.join(dir, 'llama-q4_1.gguf');
  execFileSync(AMULET, ['fixture', '--arch', 'llama', '--quant', 'q4_1', '--seed', '3', fixture]);
  files.set('fix.gguf', fs.readFileSync(fixture));
  files.set('smol.gguf', fs.readFileSync(DEFAULT_MODEL));
  fixtureSha = createHash('sha256').update(files.get('fix.gguf')).digest();

  server = createServer((req, res) => {
    const { pathname } = new URL(req.url, 'http://x');
    if (pathname === '/')
      return res.writeHead(200, { 'content-type': MIME['.html'] }).end('<!doctype html><title>faults</title>');
    // The package and its single-threaded builds (this origin is not isolated: no threads).
    const www = /^\/(src|pkg|pkg-relaxed)\/([\w.-]+)$/.exec(pathname);
    if (www) {
      const file = path.join(REPO, 'www', www[1], www[2]);
      if (!fs.existsSync(file)) return res.writeHead(404).end();
      res.writeHead(200, { 'content-type': MIME[path.extname(file)] ?? 'application/octet-stream' });
      return res.end(fs.readFileSync(file));
    }
    // The browser asks for its icon on its own schedule: not a model request, never counted.
    if (pathname === '/favicon.ico') return res.writeHead(404).end();
    serveModel(req, res, pathname);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  origin = `http://127.0.0.1:${server.address().port}`;
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  server?.closeAllConnections();
  server?.close();
});

/** The model requests since the last call. */
const take = () => hits.splice(0);

/**
 * A page of the test origin in a fresh context (empty storage): `init` runs before any script
 * of the page (page.addInitScript); `run(fn, arg)` evaluates in it. Uncaught page errors fail.
 */
async function openPage(t, { init } = {}) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  if (init) await page.addInitScript(init);
  await page.goto(`${origin}/`);
  t.after(async () => {
    await context.close();
    assert.deepEqual(errors, [], 'no uncaught errors on the page');
  });
  return { context, page, run: (fn, arg) => page.evaluate(fn, arg) };
}

/** In the page: what a rejected promise carried (code, name, message, cause), or null. */
const CATCH = `
  globalThis.caught = async (p) => {
    try { await p; return null; } catch (e) {
      return { code: e.code, name: e.name, message: e.message, isAmulet: e.constructor?.name === 'AmuletError',
               causeName: e.cause?.name, causeIsReason: e.cause !== undefined && e.cause === globalThis.lastReason };
    }
  };
  globalThis.drain = async (it) => { let last; for await (const c of it) last = c; return last; };
  globalThis.opfsFiles = async () => {
    const root = await navigator.storage.getDirectory();
    const names = [];
    try {
      const dir = await root.getDirectoryHandle('amulet-web-downloads');
      for await (const n of dir.keys()) names.push(n);
    } catch {}
    return names;
  };
`;

// -------------------------------------------------------------------------------------------

/** In the page: grows the realm's wasm memory from JS to the most it can have, so the
 *  allocator's next request for fresh memory fails and Rust traps (out of memory), as on a
 *  device with no memory left. */
const MEMORY_FULL = `
  globalThis.memoryFiller = async () => {
    const { initWasm } = await import('/src/index.js');
    const memory = (await initWasm()).initSync().memory;
    return () => {
      for (let pages = 65536; pages >= 1; pages >>= 1) {
        try { memory.grow(pages); } catch {}
      }
    };
  };
`;

test(
  'wasm memory that cannot grow: COMPUTE, not a load that never settles (before the build and in it); later loads refuse at once',
  { timeout: 120_000 },
  async (t) => {
    const results = [];
    // Full before the load (its header inspection traps, in a plain call), then full from the
    // build's first layer on (it traps inside wasm-bindgen's task queue: that load never settled).
    for (const when of ['before', 'building']) {
      const { run } = await openPage(t, { init: CATCH + MEMORY_FULL });
      const r = await run(async (when) => {
        const { AmuletEngine } = await import('/src/index.js');
        const fill = await memoryFiller();
        if (when === 'before') fill();
        let full = false;
        const onProgress = (p) => {
          // Called from inside the build, once a layer is done.
          if (when === 'building' && p.phase === 'load' && p.loaded >= 1 && !full) {
            full = true;
            fill();
          }
        };
        const first = await caught(AmuletEngine.load('/m/smol.gguf', { device: 'cpu', cache: false, onProgress }));
        const t0 = performance.now();
        const again = await caught(AmuletEngine.load('/m/fix.gguf', { device: 'cpu', cache: false }));
        return { first, again, ms: performance.now() - t0 };
      }, when);
      results.push([when, r]);
    }
    for (const [when, r] of results) {
      assert.equal(r.first?.code, 'COMPUTE', `${when}: ${JSON.stringify(r.first)}`);
      assert.match(r.first.message, /wasm instance trapped \(unreachable\), so its state is lost/);
      assert.equal(r.first.causeName, 'RuntimeError');
      assert.deepEqual(r.again, r.first, `${when}: a later load gets the same error`);
      assert.ok(r.ms < 1000, `${when}: at once (${r.ms} ms)`);
    }
  },
);

test(
  "a trap in the engine's Worker (its memory full mid-prefill): COMPUTE on the page, for that request and the next",
  { timeout: 120_000 },
  async (t) => {
    const { page, run } = await openPage(t, { init: CATCH });
    await run(async () => {
      const { createWorkerEngine } = await import('/src/index.js');
      globalThis.engine = await createWorkerEngine(null, '/m/smol.gguf', { cache: false });
    });
    // In the Worker's realm (its own copy of the helper above): the package's own modules,
    // the same instances the engine runs on.
    const [worker] = page.workers();
    await worker.evaluate(`${MEMORY_FULL}; memoryFiller().then((fill) => fill())`);
    const r = await run(async () => {
      const prompt = 'The harbour committee met again to discuss the ferry. '.repeat(300);
      const first = await caught(drain(engine.generate({ prompt, maxTokens: 4 })));
      const t0 = performance.now();
      const again = await caught(drain(engine.generate({ prompt: 'Hi', maxTokens: 2 })));
      const ms = performance.now() - t0;
      await engine.dispose();
      return { first, again, ms };
    });
    assert.equal(r.first?.code, 'COMPUTE', JSON.stringify(r.first));
    assert.match(r.first.message, /wasm instance trapped \(unreachable\), so its state is lost/);
    assert.deepEqual(r.again, r.first, 'the next request gets the same error');
    assert.ok(r.ms < 1000, `at once (${r.ms} ms)`);
  },
);

test('storage quota exceeded while caching: the load completes uncached and says why; persistence is asked', async (t) => {
  const { context, page, run } = await openPage(t, {
    init: `${CATCH};
      globalThis.persistAsked = 0;
      const persist = StorageManager.prototype.persist;
      StorageManager.prototype.persist = function () { globalThis.persistAsked++; return persist.call(this); };`,
  });
  // The quota comes from CDP: Chromium's own cache.put then fails with QuotaExceededError.
  const cdp = await context.newCDPSession(page);
  await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 64 << 10 });
  take();
  const r = await run(async () => {
    const { AmuletEngine } = await import('/src/index.js');
    const off = await AmuletEngine.load('/m/fix.gguf', { cache: false });
    const askedWithoutCache = globalThis.persistAsked;
    await off.dispose();
    const engine = await AmuletEngine.load('/m/fix.gguf', { cache: 'quota' });
    const last = await drain(engine.generate({ prompt: 'Hi', maxTokens: 2 }));
    await engine.dispose();
    const cache = await caches.open('quota');
    return {
      askedWithoutCache,
      asked: globalThis.persistAsked,
      info: { cached: engine.info.cached, cacheNote: engine.info.cacheNote },
      done: last.done,
      kept: (await cache.keys()).length,
      usage: (await navigator.storage.estimate()).usage,
    };
  });
  assert.equal(r.askedWithoutCache, 0, 'no persistence asked without caching');
  assert.equal(r.asked, 1, 'navigator.storage.persist() was asked once caching was on');
  assert.equal(r.info.cached, 'not-stored');
  assert.match(r.info.cacheNote, /quota/);
  assert.equal(r.done, true, 'the model runs');
  assert.equal(r.kept, 0, 'nothing was cached');
  const got = take().filter((h) => h.endsWith(' -'));
  assert.ok(got.length <= 3, `downloaded once without the cache, at most twice with it: ${got.join(', ')}`);
});

test('a download cut in the middle, on the page: resumed with a Range request; where the server cannot resume, NETWORK and nothing cached', async (t) => {
  const { run } = await openPage(t, { init: CATCH });
  take();
  const r = await run(async (sha) => {
    const { AmuletEngine } = await import('/src/index.js');
    const engine = await AmuletEngine.load('/cut/m/fix.gguf', { cache: 'cut', integrity: sha });
    const resumed = { cached: engine.info.cached, last: await drain(engine.generate({ prompt: 'Hi', maxTokens: 2 })) };
    await engine.dispose();
    const failed = await caught(AmuletEngine.load('/cut/noresume/m/fix.gguf', { cache: 'cut' }));
    const cache = await caches.open('cut');
    const kept = (await cache.keys()).map((req) => new URL(req.url).pathname);
    return { resumed, failed, kept };
  }, fixtureSha.toString('hex'));
  const asked = take();
  assert.equal(r.resumed.cached, 'stored');
  assert.equal(r.resumed.last.done, true);
  assert.ok(
    asked.some((h) => /^\/cut\/m\/fix\.gguf bytes=[1-9]\d*-$/.test(h)),
    `the rest was asked for: ${asked.join(', ')}`,
  );
  assert.equal(r.failed?.code, 'NETWORK', r.failed?.message);
  assert.match(r.failed.message, /cannot resume/);
  assert.deepEqual(r.kept, ['/cut/m/fix.gguf'], 'only the resumed, whole download was cached');
});

test('a download cut in the middle, in the Worker: resumed into OPFS; NETWORK leaves neither a cache entry nor an OPFS file', async (t) => {
  const { run } = await openPage(t, { init: CATCH });
  take();
  const r = await run(async () => {
    const { createWorkerEngine } = await import('/src/index.js');
    const engine = await createWorkerEngine(null, '/cut/m/fix.gguf', { cache: false });
    const resumed = {
      memory: await engine.memoryUsage(),
      last: await drain(engine.generate({ prompt: 'Hi', maxTokens: 2 })),
      opfsWhileLoaded: (await opfsFiles()).length,
    };
    await engine.dispose();
    const out = { resumed, failed: {}, opfs: {} };
    for (const cache of [false, 'cut']) {
      const key = String(cache);
      out.failed[key] = await caught(createWorkerEngine(null, '/cut/noresume/m/fix.gguf', { cache }));
      out.opfs[key] = await opfsFiles();
    }
    out.kept = (await (await caches.open('cut')).keys()).length;
    return out;
  });
  assert.equal(r.resumed.memory.fileInMemory, false, 'the Worker reads the download from OPFS');
  assert.equal(r.resumed.opfsWhileLoaded, 1);
  assert.equal(r.resumed.last.done, true);
  const asked = take();
  assert.ok(
    asked.some((h) => /^\/cut\/m\/fix\.gguf bytes=[1-9]\d*-$/.test(h)),
    `resumed with a Range request: ${asked.join(', ')}`,
  );
  for (const key of ['false', 'cut']) {
    assert.equal(r.failed[key]?.code, 'NETWORK', `cache ${key}: ${r.failed[key]?.message}`);
    assert.deepEqual(r.opfs[key], [], `cache ${key}: the partial download left no OPFS file`);
  }
  assert.equal(r.kept, 0, 'the cut download was never cached');
});

test('integrity (SRI or hex) is checked before the model is used or cached: a mismatch is INTEGRITY and nothing is kept', async (t) => {
  const { run } = await openPage(t, { init: CATCH });
  const r = await run(
    async ({ sri, wrong }) => {
      const { AmuletEngine, createWorkerEngine } = await import('/src/index.js');
      const ok = await AmuletEngine.load('/m/fix.gguf', { cache: 'int', integrity: sri });
      const stored = { cached: ok.info.cached };
      await ok.dispose();
      const phases = new Set();
      const onProgress = (p) => phases.add(p.phase);
      const page = await caught(AmuletEngine.load('/m/fix.gguf?other', { cache: 'int', integrity: wrong, onProgress }));
      const bytes = new Uint8Array(await (await fetch('/m/fix.gguf')).arrayBuffer());
      const blob = await caught(AmuletEngine.load(new Blob([bytes]), { integrity: wrong }));
      const worker = await caught(
        createWorkerEngine(null, '/m/fix.gguf', { cache: false, integrity: wrong, onProgress }),
      );
      const workerCached = await caught(createWorkerEngine(null, '/m/fix.gguf?w', { cache: 'int', integrity: wrong }));
      const cache = await caches.open('int');
      const kept = await Promise.all(
        (await cache.keys()).map(async (req) => [
          new URL(req.url).pathname + new URL(req.url).search,
          (await cache.match(req)).headers.get('x-amulet-sha256'),
        ]),
      );
      return { stored, page, blob, worker, workerCached, phases: [...phases], kept, opfs: await opfsFiles() };
    },
    { sri: `sha256-${fixtureSha.toString('base64')}`, wrong: 'ab'.repeat(32) },
  );
  assert.equal(r.stored.cached, 'stored');
  for (const k of ['page', 'blob', 'worker', 'workerCached']) {
    assert.equal(r[k]?.code, 'INTEGRITY', `${k}: ${r[k]?.message}`);
  }
  assert.match(r.page.message, /expected abab/);
  assert.deepEqual(r.phases, ['download'], 'the model was never built from the wrong bytes');
  assert.deepEqual(
    r.kept,
    [['/m/fix.gguf', fixtureSha.toString('hex')]],
    'only the checked file is cached, with its digest',
  );
  assert.deepEqual(r.opfs, [], 'no OPFS file is left');
});

test('a Worker killed from outside: pending and later calls reject with WORKER_LOST within 2 s, and a new engine can be created', async (t) => {
  for (const locks of [true, false]) {
    await t.test(locks ? 'seen through the Web Lock' : 'seen by the heartbeat (no Web Locks)', async (t) => {
      const noLocks = `Object.defineProperty(Navigator.prototype, 'locks', { configurable: true, get: () => undefined });`;
      const { run } = await openPage(t, { init: locks ? CATCH : CATCH + noLocks });
      const r = await run(async () => {
        const { createWorkerEngine } = await import('/src/index.js');
        const out = {};
        // While a generation runs.
        let engine = await createWorkerEngine(null, '/m/fix.gguf', { cache: false });
        let seen = 0;
        let killedAt = 0;
        const generating = caught(
          (async () => {
            for await (const c of engine.generate({ prompt: 'Hi', maxTokens: 1500, ignoreEos: true })) {
              if (c.done) throw new Error('the generation ended before the kill');
              if (++seen === 3) {
                engine.worker.terminate();
                killedAt = performance.now();
              }
            }
          })(),
        );
        const running = await generating;
        out.running = { ...running, ms: performance.now() - killedAt };
        const after = performance.now();
        out.next = { ...(await caught(engine.memoryUsage())), ms: performance.now() - after };
        await engine.dispose();

        // While idle: the next calls fail.
        engine = await createWorkerEngine(null, '/m/fix.gguf', { cache: false });
        engine.worker.terminate();
        const idle = performance.now();
        const [gen, strength] = await Promise.all([
          caught(drain(engine.generate({ prompt: 'Hi', maxTokens: 2 }))),
          caught(engine.strength(2, 2, 10, 60)),
        ]);
        out.idle = { gen, strength, ms: performance.now() - idle };
        await engine.dispose();

        // A new engine works.
        const fresh = await createWorkerEngine(null, '/m/fix.gguf', { cache: false });
        out.fresh = await drain(fresh.generate({ prompt: 'Hi', maxTokens: 2 }));
        await fresh.dispose();
        return out;
      });
      assert.equal(r.running.code, 'WORKER_LOST', r.running.message);
      assert.ok(r.running.ms < 2000, `the running generation failed ${Math.round(r.running.ms)} ms after the kill`);
      assert.equal(r.next.code, 'WORKER_LOST');
      assert.ok(r.next.ms < 100, 'a call after the loss fails at once');
      assert.equal(r.idle.gen?.code, 'WORKER_LOST', r.idle.gen?.message);
      assert.equal(r.idle.strength?.code, 'WORKER_LOST');
      assert.ok(r.idle.ms < 2000, `the idle engine's calls failed after ${Math.round(r.idle.ms)} ms`);
      assert.equal(r.fresh.done, true);
    });
  }
});

test('a Worker whose script cannot load: WORKER from its error event', async (t) => {
  const { run } = await openPage(t, { init: CATCH });
  const r = await run(async () => {
    const { createWorkerEngine } = await import('/src/index.js');
    return caught(createWorkerEngine(new Worker('/src/missing.js', { type: 'module' }), '/m/fix.gguf'));
  });
  assert.equal(r?.code, 'WORKER', r?.message);
});

test("AbortSignal.timeout(): rejects as fetch does (name 'TimeoutError', the reason as cause), code ABORTED: on load, on generate, through the Worker", async (t) => {
  const { run } = await openPage(t, { init: CATCH });
  const r = await run(async () => {
    const { AmuletEngine, createWorkerEngine } = await import('/src/index.js');
    const timeout = (ms) => ((globalThis.lastReason = undefined), AbortSignal.timeout(ms));
    // Keeps the signal's reason once it fires, so `caught` can compare the cause with it.
    const watched = (signal) => (
      signal.addEventListener('abort', () => (globalThis.lastReason = signal.reason)),
      signal
    );
    const out = {};
    // What fetch does: it rejects with the reason itself, a DOMException named TimeoutError.
    const fsignal = watched(timeout(200));
    try {
      await (await fetch('/slow/m/smol.gguf', { signal: fsignal })).arrayBuffer();
    } catch (e) {
      out.fetch = { name: e.name, isReason: e === fsignal.reason, isDOMException: e instanceof DOMException };
    }
    // Loaded first, so the wasm module is ready and the timed-out load below spends its time downloading.
    const engine = await AmuletEngine.load('/m/smol.gguf', { cache: false });
    const phases = new Set();
    out.load = await caught(
      AmuletEngine.load('/slow/m/smol.gguf', {
        cache: false,
        signal: watched(timeout(1000)),
        onProgress: (p) => phases.add(p.phase),
      }),
    );
    out.loadPhases = [...phases];
    out.generate = await caught(
      drain(engine.generate({ prompt: 'Hi', maxTokens: 500, ignoreEos: true, signal: watched(timeout(300)) })),
    );
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    out.plainAbort = await caught(
      drain(engine.generate({ prompt: 'Hi', maxTokens: 500, ignoreEos: true, signal: ac.signal })),
    );
    out.after = (await drain(engine.generate({ prompt: 'Hi', maxTokens: 2 }))).done;
    await engine.dispose();
    out.workerLoad = await caught(
      createWorkerEngine(null, '/slow/m/smol.gguf', { cache: false, signal: watched(timeout(300)) }),
    );
    const w = await createWorkerEngine(null, '/m/smol.gguf', { cache: false });
    out.workerGenerate = await caught(
      drain(w.generate({ prompt: 'Hi', maxTokens: 500, ignoreEos: true, signal: watched(timeout(300)) })),
    );
    await w.dispose();
    return out;
  });
  assert.deepEqual(r.fetch, { name: 'TimeoutError', isReason: true, isDOMException: true });
  for (const k of ['load', 'generate', 'workerLoad', 'workerGenerate']) {
    assert.equal(r[k]?.code, 'ABORTED', `${k}: ${r[k]?.message}`);
    assert.equal(r[k].name, 'TimeoutError', k);
    assert.equal(r[k].isAmulet, true, k);
    assert.equal(r[k].causeName, 'TimeoutError', k);
    assert.equal(r[k].causeIsReason, true, `${k}: the cause is the signal's reason`);
  }
  assert.deepEqual(r.loadPhases, ['download'], 'the load timed out during the download');
  assert.equal(r.plainAbort?.code, 'ABORTED');
  assert.equal(r.plainAbort.name, 'AbortError', 'other aborts keep the name AbortError');
  assert.equal(r.after, true, 'the engine stays usable');
});

/**
 * Before the page's scripts: Chromium's adapter (SwiftShader here) reports storage bindings of
 * at most `binding` bytes, and, with `hardware`, presents itself as a hardware adapter, which
 * device 'auto' would use (it passes over software ones). Both are what the browser's own
 * GPUAdapter says: wgpu asks the device for these limits and the loader sizes its buffers by them.
 */
const gpuLimits = ({ binding, hardware }) => `
  const proto = GPUAdapter.prototype;
  const realLimits = Object.getOwnPropertyDescriptor(proto, 'limits').get;
  Object.defineProperty(proto, 'limits', { configurable: true, get() {
    const real = realLimits.call(this);
    const out = {};
    for (const k in real) out[k] = real[k];
    out.maxStorageBufferBindingSize = Math.min(real.maxStorageBufferBindingSize, ${binding});
    return out;
  } });
  if (${hardware}) {
    const realInfo = Object.getOwnPropertyDescriptor(proto, 'info').get;
    Object.defineProperty(proto, 'info', { configurable: true, get() {
      const real = realInfo.call(this);
      const out = {};
      for (const k in real) out[k] = real[k];
      return Object.assign(out, { description: 'a hardware adapter (test)', isFallbackAdapter: false });
    } });
  }`;

test("a GPU buffer over the adapter's limits: NO_WEBGPU on device 'webgpu'; 'auto' runs on the CPU and says why", async (t) => {
  const { run } = await openPage(t, { init: CATCH + gpuLimits({ binding: 64, hardware: true }) });
  const r = await run(async () => {
    const { AmuletEngine } = await import('/src/index.js');
    const adapter = await navigator.gpu.requestAdapter();
    const out = { binding: adapter.limits.maxStorageBufferBindingSize };
    out.forced = await caught(AmuletEngine.load('/m/fix.gguf', { device: 'webgpu', cache: false }));
    const engine = await AmuletEngine.load('/m/fix.gguf', { cache: false });
    out.auto = { info: engine.info, last: await drain(engine.generate({ prompt: 'Hi', maxTokens: 2 })) };
    await engine.dispose();
    return out;
  });
  assert.equal(r.binding, 64, 'the injected limit is what the page sees');
  assert.equal(r.forced?.code, 'NO_WEBGPU', r.forced?.message);
  assert.match(r.forced.message, /binding limit of 64/);
  assert.equal(r.auto.info.device, 'cpu');
  assert.match(r.auto.info.deviceReason, /a hardware adapter \(test\).*cannot hold this model.*binding limit of 64/);
  assert.equal(r.auto.last.done, true, 'the CPU path answers');
});

/**
 * Before the page's scripts: once `afterBytes` of storage buffers exist, the next ones are asked
 * for with a usage no buffer may have, so the device refuses them as it refuses an allocation
 * it cannot make (out of memory): invalid buffers, and an error event after the upload.
 */
const gpuRefuses = (afterBytes) => `
  const create = GPUDevice.prototype.createBuffer;
  let storageBytes = 0;
  GPUDevice.prototype.createBuffer = function (desc) {
    if (desc.usage & GPUBufferUsage.STORAGE && (storageBytes += desc.size) > ${afterBytes}) {
      desc = { ...desc, usage: desc.usage | GPUBufferUsage.MAP_READ };
    }
    return create.call(this, desc);
  };`;

test("GPU allocations refused while uploading: NO_WEBGPU on device 'webgpu'; 'auto' runs on the CPU and says why", async (t) => {
  const init = CATCH + gpuLimits({ binding: 1 << 30, hardware: true }) + gpuRefuses(64 << 10);
  const { run } = await openPage(t, { init });
  const r = await run(async () => {
    const { AmuletEngine } = await import('/src/index.js');
    const out = {};
    out.forced = await caught(AmuletEngine.load('/m/fix.gguf', { device: 'webgpu', cache: false }));
    const engine = await AmuletEngine.load('/m/fix.gguf', { cache: false });
    out.auto = { info: engine.info, last: await drain(engine.generate({ prompt: 'Hi', maxTokens: 2 })) };
    await engine.dispose();
    return out;
  });
  assert.equal(r.forced?.code, 'NO_WEBGPU', r.forced?.message);
  assert.match(r.forced.message, /failed while the model was uploaded/);
  assert.equal(r.auto.info.device, 'cpu');
  assert.match(r.auto.info.deviceReason, /failed while the model was uploaded.*running on the cpu/s);
  assert.equal(r.auto.last.done, true, 'the CPU path answers');
});

test('a model too large for wasm32 is refused from its header (TOO_LARGE), before the download', async (t) => {
  const { run } = await openPage(t, { init: CATCH });
  for (const [device, worker] of [
    ['cpu', false],
    ['auto', false],
    ['cpu', true],
  ]) {
    take();
    const r = await run(
      async ({ device, worker }) => {
        const { AmuletEngine, createWorkerEngine } = await import('/src/index.js');
        const options = { device, cache: true };
        return caught(
          worker ? createWorkerEngine(null, '/huge.gguf', options) : AmuletEngine.load('/huge.gguf', options),
        );
      },
      { device, worker },
    );
    const what = `device ${device}${worker ? ' in the Worker' : ''}`;
    assert.equal(r?.code, 'TOO_LARGE', `${what}: ${r?.message}`);
    assert.match(r.message, /4\.\d GB/);
    assert.deepEqual(take(), ['/huge.gguf bytes=0-4194303'], `${what}: only the header was asked for`);
  }
  // A header longer than the first 4 MB: only the rest is asked for (read straight into one
  // buffer where the body is a byte stream).
  take();
  const r = await run(async () => {
    const { createWorkerEngine } = await import('/src/index.js');
    return caught(createWorkerEngine(null, '/long.gguf', { device: 'cpu', cache: true }));
  });
  assert.equal(r?.code, 'TOO_LARGE', r?.message);
  assert.deepEqual(take(), ['/long.gguf bytes=0-4194303', '/long.gguf bytes=4194304-8388607']);
});
