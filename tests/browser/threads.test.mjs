// The wasm builds in Chromium: the threaded one on a cross-origin isolated page
// (serve.mjs --isolate: COOP/COEP), the single-threaded one everywhere else; on the page and in
// the package's Worker; relaxed SIMD (Chromium has it) and the plain simd128 build asked for
// with `simd: 'simd128'`; the same greedy tokens and the same probabilities, bit for bit,
// whatever the thread count or build (a kernel that sums in another order shows here).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { DEFAULT_MODEL, launchBrowser, requirePrerequisites, startServer } from './helpers.mjs';

requirePrerequisites();
const MODEL = `/models/${path.basename(DEFAULT_MODEL)}`;
const REQUEST = {
  prompt: 'What is the capital of France?',
  preference: 'concise',
  maxTokens: 12,
  ignoreEos: true,
  topLogprobs: 3,
};

let isolated;
let plain;
let browser;

before(async () => {
  isolated = await startServer(['--isolate']);
  plain = await startServer();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await isolated?.close();
  await plain?.close();
});

/** Loads the model with each `threads` in turn in one page (or its Worker): info and tokens. */
async function run(server, { threads, worker = false, simd }) {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  try {
    // Not the demo: it starts the wasm itself (with 'auto' threads, 1 on a page) as it opens,
    // and a realm's first start decides its build. A path the server lacks is an empty
    // document of the same origin, with the same COOP/COEP headers.
    await page.goto(`${server.origin}/no-page-here`);
    const out = await page.evaluate(
      async ({ model, request, threads, worker, simd }) => {
        const { AmuletEngine, createWorkerEngine } = await import('/src/index.js');
        const runs = [];
        for (const n of threads) {
          const options = { device: 'cpu', cache: false, threads: n, simd };
          const engine = worker
            ? await createWorkerEngine(null, model, options)
            : await AmuletEngine.load(model, options);
          let last;
          const logprobs = [];
          for await (const chunk of engine.generate(request)) {
            if (!chunk.done) logprobs.push(chunk.logprobs);
            last = chunk;
          }
          const info = engine.info;
          runs.push({
            threads: info.threads,
            reason: info.threadsReason,
            simd: info.simd,
            tokens: last.tokens,
            logprobs,
          });
          await engine.dispose();
        }
        return { isolated: globalThis.crossOriginIsolated, runs };
      },
      { model: MODEL, request: REQUEST, threads, worker, simd },
    );
    assert.deepEqual(errors, []);
    return out;
  } finally {
    await page.close();
  }
}

test(
  'an isolated page runs the threaded build: 2 threads give the tokens 1 thread gives',
  { timeout: 180_000 },
  async () => {
    const r = await run(isolated, { threads: [2, 1] });
    assert.equal(r.isolated, true);
    const [two, one] = r.runs;
    assert.equal(two.threads, 2, two.reason);
    assert.equal(one.threads, 1);
    assert.equal(two.simd, 'relaxed-simd');
    assert.equal(two.tokens.length, REQUEST.maxTokens);
    assert.deepEqual(two.tokens, one.tokens);
    assert.deepEqual(two.logprobs, one.logprobs);
  },
);

test('in the Worker of an isolated page too, with either SIMD build', { timeout: 180_000 }, async () => {
  const page = await run(plain, { threads: [1] });
  assert.equal(page.runs[0].simd, 'relaxed-simd');
  for (const simd of ['auto', 'simd128']) {
    const r = await run(isolated, { threads: [2], worker: true, simd });
    assert.equal(r.runs[0].threads, 2, r.runs[0].reason);
    assert.equal(r.runs[0].simd, simd === 'auto' ? 'relaxed-simd' : 'simd128');
    assert.deepEqual(r.runs[0].tokens, page.runs[0].tokens);
    assert.deepEqual(r.runs[0].logprobs, page.runs[0].logprobs, `${simd}: the page's probabilities`);
  }
});

test('a page that is not isolated runs one thread and says why', { timeout: 180_000 }, async () => {
  const r = await run(plain, { threads: ['auto'] });
  assert.equal(r.isolated, false);
  assert.equal(r.runs[0].threads, 1);
  assert.match(r.runs[0].reason, /cross-origin isolated/);
});

/**
 * Before the page's scripts: the page's fetch of wasm-bindgen-rayon's `workerHelpers` snippet
 * (the script each pool helper is started from, as a blob: URL) answers `helper(response)`.
 */
const helperScript = (helper) => `
  const nativeFetch = globalThis.fetch;
  globalThis.fetch = async (input, init) => {
    const r = await nativeFetch(input, init);
    return String(input).includes('workerHelpers') ? (${helper})(r) : r;
  };`;

/** Loads the model on an isolated page with 2 threads, under `init`, and generates twice. */
async function faultyPool(init, { csp } = {}) {
  const context = await browser.newContext();
  const page = await context.newPage();
  try {
    if (init) await page.addInitScript(init);
    if (csp) {
      await page.route('**/no-page-here', async (route) => {
        const response = await route.fetch();
        await route.fulfill({ response, headers: { ...response.headers(), 'content-security-policy': csp } });
      });
    }
    await page.goto(`${isolated.origin}/no-page-here`);
    return await page.evaluate(
      async ({ model, request }) => {
        const { AmuletEngine } = await import('/src/index.js');
        const engine = await AmuletEngine.load(model, { device: 'cpu', cache: false, threads: 2 });
        const answers = [];
        for (let i = 0; i < 2; i++) {
          const t0 = performance.now();
          try {
            let last;
            for await (const chunk of engine.generate(request)) last = chunk;
            answers.push({ tokens: last.tokens });
          } catch (e) {
            answers.push({ code: e.code, message: e.message, ms: performance.now() - t0 });
          }
        }
        const info = engine.info;
        await engine.dispose();
        return { isolated: crossOriginIsolated, threads: info.threads, reason: info.threadsReason, answers };
      },
      { model: MODEL, request: { ...REQUEST, maxTokens: 64 } },
    );
  } finally {
    await context.close();
  }
}

test(
  'a pool whose helpers cannot start runs one thread and says why: their script fails (it hung), blob: Workers refused (the load failed)',
  { timeout: 120_000 },
  async () => {
    const notFound = await faultyPool(helperScript(() => new Response('not found', { status: 404 })));
    const refused = await faultyPool(null, { csp: "worker-src 'self'" });
    for (const r of [notFound, refused]) {
      assert.equal(r.isolated, true);
      assert.equal(r.threads, 1, r.reason);
      assert.match(r.reason, /thread pool did not start/);
      for (const a of r.answers) assert.equal(a.tokens?.length, 64, JSON.stringify(a));
    }
    assert.match(notFound.reason, /a helper Worker failed/);
  },
);

test(
  'a pool thread that dies mid-generation: WORKER_LOST at once, for this request and every later one (it hung)',
  { timeout: 120_000 },
  async () => {
    // The helpers' real script, then Date.now (which a helper reads while it waits between two
    // splits) throwing: the exception ends the helper's thread, as a trap would.
    const dies = async (r) =>
      new Response(`${await r.text()}\nDate.now = () => { throw new Error('injected: a pool thread fails'); };`, {
        headers: { 'content-type': 'text/javascript' },
      });
    const r = await faultyPool(helperScript(dies));
    assert.equal(r.threads, 2, r.reason);
    const [first, second] = r.answers;
    assert.equal(first.code, 'WORKER_LOST', JSON.stringify(first));
    assert.match(first.message, /a thread of the CPU pool stopped/);
    assert.equal(second.code, 'WORKER_LOST', JSON.stringify(second));
    assert.ok(second.ms < 1000, `the later request failed at once (${second.ms} ms)`);
  },
);
