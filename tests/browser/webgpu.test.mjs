// The WebGPU backend in the browser: headless Chromium with --enable-unsafe-webgpu, whose
// adapter here is SwiftShader (software). The same WGSL as natively, through navigator.gpu,
// against the wasm CPU path on the same file in the same page.
//
// SwiftShader is slow (workgroup barriers are expensive on it: ~0.3 s a step for a tiny
// 2-layer fixture, ~10 s for SmolLM2), so the fixtures carry the numeric checks and SmolLM2
// gives one short greedy answer.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_MODEL, REPO, launchBrowser, requirePrerequisites, outFile, startServer } from './helpers.mjs';

const AMULET = path.join(REPO, 'target', 'release', 'amulet');
// One fixture through the whole npm package here: the wasm-bindgen test
// (crate/tests/wasm_webgpu.rs) compares every architecture's logits in Chromium already, and
// SwiftShader takes ~35 s a fixture.
const FIXTURES = [['llama', 'q4_1']];

requirePrerequisites([[AMULET, 'cargo build --release']]);
const opts = (timeout) => ({ timeout });

let server;
let browser;
let page;
const pageErrors = [];
const record = {};

before(async () => {
  // The fixtures (made by the native CLI) and the default model, served at /models/.
  const dir = outFile('webgpu-models');
  fs.mkdirSync(dir, { recursive: true });
  for (const [arch, quant] of FIXTURES) {
    execFileSync(AMULET, [
      'fixture',
      '--arch',
      arch,
      '--quant',
      quant,
      '--seed',
      '5',
      path.join(dir, `${arch}-${quant}.gguf`),
    ]);
  }
  const smol = path.join(dir, path.basename(DEFAULT_MODEL));
  fs.rmSync(smol, { force: true });
  fs.symlinkSync(DEFAULT_MODEL, smol);
  server = await startServer(['--models', dir]);
  browser = await launchBrowser();
  page = await browser.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
  await page.goto(server.url);
});

after(async () => {
  fs.writeFileSync(outFile('webgpu-browser.json'), JSON.stringify(record, null, 2) + '\n');
  await browser?.close();
  await server?.close();
});

/** Loads `model` on `device` in the page, runs `request` with compare() and returns the steps. */
function run(model, device, request) {
  return page.evaluate(
    async ({ model, device, request }) => {
      const { AmuletEngine } = await import('/src/index.js');
      const engine = await AmuletEngine.load(`/models/${model}`, { device, cache: false });
      try {
        const steps = [];
        let last;
        for await (const chunk of engine.compare(request)) {
          if (chunk.done) last = chunk;
          else steps.push(chunk);
        }
        return { info: engine.info, steps, results: last.results, timings: last.timings };
      } finally {
        await engine.dispose();
      }
    },
    { model, device, request },
  );
}

test('device auto passes over the software adapter and says why', opts(60_000), async () => {
  const info = await page.evaluate(async () => {
    const { AmuletEngine } = await import('/src/index.js');
    const engine = await AmuletEngine.load('/models/llama-q4_1.gguf', { cache: false });
    const info = engine.info;
    await engine.dispose();
    return info;
  });
  assert.equal(info.device, 'cpu');
  assert.match(info.deviceReason, /software/);
});

for (const [arch, quant] of FIXTURES) {
  test(
    `${arch} ${quant} fixture: WebGPU in the page gives the CPU path's tokens and probabilities`,
    opts(240_000),
    async () => {
      const model = `${arch}-${quant}.gguf`;
      const request = {
        prompt: 'Hi',
        preference: 'concise',
        methods: ['base', 'amulet'],
        maxTokens: 4,
        temperature: 0,
        topLogprobs: 5,
      };
      const cpu = await run(model, 'cpu', request);
      const gpu = await run(model, 'webgpu', request);
      record[model] = { deviceReason: gpu.info.deviceReason, cpu: cpu.timings, webgpu: gpu.timings };
      assert.equal(gpu.info.device, 'webgpu');
      assert.match(gpu.info.deviceReason, /navigator\.gpu/);
      for (const m of ['base', 'amulet']) assert.deepEqual(gpu.results[m].tokens, cpu.results[m].tokens, `${m} tokens`);
      assert.equal(gpu.steps.length, cpu.steps.length);
      let worst = 0;
      gpu.steps.forEach((g, i) => {
        const c = cpu.steps[i];
        assert.equal(g.token, c.token, `step ${i} token`);
        for (const dist of ['base', 'pref', 'combined']) {
          const [gl, cl] = [g.logprobs[dist], c.logprobs[dist]];
          if (!cl) continue;
          assert.equal(gl[0].id, cl[0].id, `step ${i} ${dist} top-1`);
          for (const cand of cl) {
            const other = gl.find((x) => x.id === cand.id);
            const diff = Math.abs((other?.prob ?? 0) - cand.prob);
            worst = Math.max(worst, diff);
            assert.ok(diff < 0.02, `step ${i} ${dist} id ${cand.id}: p ${cand.prob} (cpu) vs ${other?.prob} (webgpu)`);
          }
        }
      });
      record[model].maxProbDiff = worst;
    },
  );
}

// Several minutes on SwiftShader (30 layers through Chromium's software WebGPU): part of the
// large suite (AMULET_LARGE=1, ./build.sh test-large); the fixture above covers the same path.
const large = process.env.AMULET_LARGE === '1';
test(
  "SmolLM2: a short greedy answer on WebGPU in the page is the CPU path's answer",
  {
    ...opts(600_000),
    skip: large ? false : 'the large suite (AMULET_LARGE=1) runs it',
  },
  async (t) => {
    const request = { prompt: 'What is the capital of France?', methods: ['base'], maxTokens: 4, temperature: 0 };
    const cpu = await run(path.basename(DEFAULT_MODEL), 'cpu', request);
    const gpu = await run(path.basename(DEFAULT_MODEL), 'webgpu', request);
    record.smollm2 = { text: gpu.results.base.text, cpu: cpu.timings, webgpu: gpu.timings };
    t.diagnostic(`webgpu: ${JSON.stringify(gpu.results.base.text)} (prefill ${Math.round(gpu.timings.prefillMs)} ms)`);
    assert.equal(gpu.info.device, 'webgpu');
    assert.ok(cpu.results.base.tokens.length > 0);
    assert.deepEqual(gpu.results.base.tokens, cpu.results.base.tokens);
    assert.equal(gpu.results.base.text, cpu.results.base.text);
  },
);

test('in a Web Worker: WebGPU loads, an abort ends the request, the next one runs', opts(240_000), async () => {
  const r = await page.evaluate(async () => {
    const { createWorkerEngine } = await import('/src/index.js');
    const engine = await createWorkerEngine(null, '/models/llama-q4_1.gguf', { device: 'webgpu', cache: false });
    const ac = new AbortController();
    let aborted = null;
    let seen = 0;
    try {
      for await (const chunk of engine.generate({
        prompt: 'Hi',
        method: 'base',
        maxTokens: 50,
        temperature: 0,
        signal: ac.signal,
      })) {
        if (!chunk.done && ++seen === 2) ac.abort();
      }
    } catch (e) {
      aborted = e.code;
    }
    let last;
    for await (const chunk of engine.generate({ prompt: 'Hi', method: 'base', maxTokens: 3, temperature: 0 }))
      last = chunk;
    const info = engine.info;
    await engine.dispose();
    return { aborted, seen, info, next: last };
  });
  assert.equal(r.info.device, 'webgpu');
  assert.equal(r.aborted, 'ABORTED');
  assert.equal(r.next.done, true);
  assert.equal(r.next.tokens.length, 3);
});

test('device webgpu where there is no navigator.gpu rejects with NO_WEBGPU', opts(60_000), async () => {
  const r = await page.evaluate(async () => {
    const { AmuletEngine } = await import('/src/index.js');
    const saved = Object.getOwnPropertyDescriptor(Navigator.prototype, 'gpu');
    Object.defineProperty(Navigator.prototype, 'gpu', { configurable: true, get: () => undefined });
    try {
      await AmuletEngine.load('/models/llama-q4_1.gguf', { device: 'webgpu', cache: false });
      return { code: null };
    } catch (e) {
      return { code: e.code, message: e.message };
    } finally {
      Object.defineProperty(Navigator.prototype, 'gpu', saved);
    }
  });
  assert.equal(r.code, 'NO_WEBGPU', r.message);
});

test('no uncaught errors on the page', opts(5_000), () => {
  assert.deepEqual(pageErrors, []);
});
