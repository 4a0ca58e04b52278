// The demo page end to end: real headless Chromium (playwright-core), the real default model
// (SmolLM2-135M Q4_1), the page served by www/demo/serve.mjs on a free port. The tests share
// one page and run in order: model picker, load, stream, inspect, compare, layout, stop, errors.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { REPO, launchBrowser, requirePrerequisites, outFile, startServer, until } from './helpers.mjs';

requirePrerequisites();
const opts = (timeout) => ({ timeout });

let server;
let browser;
let page;
const pageErrors = [];
const consoleLines = [];

before(async () => {
  server = await startServer();
  browser = await launchBrowser();
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(60_000);
  page.on('pageerror', (e) => pageErrors.push(e));
  page.on('console', (m) => consoleLines.push(`[${m.type()}] ${m.text()}`));
  await page.goto(server.url);
  await page.waitForFunction(() => !document.getElementById('load').disabled, null, { timeout: 30_000 });
});

after(async () => {
  if (process.env.AMULET_TEST_VERBOSE) console.log(consoleLines.join('\n'));
  await browser?.close();
  await server?.close();
});

// ---------------------------------------------------------------- helpers

const state = () => page.evaluate(() => document.getElementById('app').dataset.state);

async function setValue(selector, value) {
  await page.fill(selector, String(value));
}

async function setRange(id, value) {
  await page.evaluate(
    ([id, value]) => {
      const el = document.getElementById(id);
      el.value = String(value);
      el.dispatchEvent(new Event('input', { bubbles: true }));
    },
    [id, value],
  );
}

/** Token counts of every answer panel, e.g. { amulet: 12 }. */
const tokenCounts = () =>
  page.evaluate(() =>
    Object.fromEntries(
      [...document.querySelectorAll('#answers .answer')].map((a) => [a.dataset.method, Number(a.dataset.tokens)]),
    ),
  );

const answerTexts = () =>
  page.evaluate(() =>
    Object.fromEntries(
      [...document.querySelectorAll('#answers .answer')].map((a) => [
        a.dataset.method,
        a.querySelector('.text').textContent,
      ]),
    ),
  );

async function waitDone(timeout = 90_000) {
  await page.waitForFunction(
    () =>
      document.getElementById('answers').dataset.done === 'true' &&
      document.getElementById('app').dataset.state === 'ready',
    null,
    { timeout },
  );
  return page.evaluate(() => document.getElementById('answers').dataset.outcome);
}

async function errorBox() {
  return page.evaluate(() => {
    const box = document.getElementById('error');
    return {
      hidden: box.hidden,
      visible: !box.hidden && box.getBoundingClientRect().height > 0,
      code: document.getElementById('error-code').textContent,
      message: document.getElementById('error-message').textContent,
    };
  });
}

// ---------------------------------------------------------------- tests

test('WebGPU: Chromium with --enable-unsafe-webgpu gives an adapter (recorded)', opts(30_000), async (t) => {
  const adapter = await page.evaluate(async () => {
    if (!navigator.gpu) return { navigatorGpu: false };
    const a = await navigator.gpu.requestAdapter();
    if (!a) return { navigatorGpu: true, adapter: null };
    const i = a.info ?? {};
    return {
      navigatorGpu: true,
      adapter: {
        vendor: i.vendor,
        architecture: i.architecture,
        device: i.device,
        description: i.description,
        isFallbackAdapter: a.isFallbackAdapter ?? i.isFallbackAdapter,
      },
      features: [...a.features].sort(),
      maxBufferSize: a.limits.maxBufferSize,
      maxStorageBufferBindingSize: a.limits.maxStorageBufferBindingSize,
      shaderF16: a.features.has('shader-f16'),
    };
  });
  fs.writeFileSync(outFile('webgpu-adapter.json'), JSON.stringify(adapter, null, 2) + '\n');
  t.diagnostic(`WebGPU adapter: ${JSON.stringify(adapter.adapter)}`);
  assert.equal(adapter.navigatorGpu, true, 'navigator.gpu exists');
  assert.ok(adapter.adapter, 'requestAdapter() gave an adapter');
});

const PICKS = [
  ['smollm2-135m-instruct-q4_1', 'SmolLM2 135M Instruct — 98 MB'],
  ['gemma-3-270m-q4_k_m', 'Gemma 3 270M — 253 MB'],
  ['qwen2.5-coder-0.5b-instruct-q4_k_m', 'Qwen2.5-Coder 0.5B Instruct — 491 MB'],
  ['qwen2.5-coder-1.5b-instruct-q4_k_m', 'Qwen2.5-Coder 1.5B Instruct — 1.1 GB'],
];

/** The picker's options, value and hint. */
const picker = (p = page) =>
  p.evaluate(() => {
    const s = document.getElementById('model-pick');
    return {
      value: s.value,
      adapter: s.dataset.adapter,
      options: [...s.options].map((o) => [o.value, o.textContent]),
      hint: document.getElementById('model-hint').textContent,
      url: document.getElementById('model-url').value,
    };
  });

test('the model picker lists the known models with their sizes; under SwiftShader SmolLM2 is the pick', async () => {
  const p = await picker();
  assert.deepEqual(p.options, [...PICKS, ['', 'Another URL or a local file']]);
  assert.equal(p.adapter, 'software', 'headless Chromium has only SwiftShader');
  assert.equal(p.value, 'smollm2-135m-instruct-q4_1');
  assert.equal(p.url, '/models/SmolLM2-135M-Instruct.Q4_1.gguf');
  assert.match(p.hint, /models\/fetch\.sh smollm2-135m-instruct-q4_1/);
  assert.match(p.hint, /CPU path/);

  // A pick sets the URL; a URL of one's own selects "another URL"; a known URL selects its model.
  await page.selectOption('#model-pick', 'qwen2.5-coder-1.5b-instruct-q4_k_m');
  assert.equal(await page.inputValue('#model-url'), '/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf');
  assert.match((await picker()).hint, /1\.5B parameters, qwen2, Q4_K_M/);
  await page.fill('#model-url', 'https://example.org/other.gguf');
  assert.equal((await picker()).value, '');
  await page.fill('#model-url', '/models/gemma-3-270m-q4_k_m.gguf');
  assert.equal((await picker()).value, 'gemma-3-270m-q4_k_m');
  await page.selectOption('#model-pick', 'smollm2-135m-instruct-q4_1');
  assert.equal(await page.inputValue('#model-url'), '/models/SmolLM2-135M-Instruct.Q4_1.gguf');
});

test(
  'the default model loads with a moving progress bar; info shows device cpu (device auto)',
  opts(120_000),
  async (t) => {
    assert.equal(await page.inputValue('#device'), 'auto');
    assert.equal(await page.inputValue('#model-url'), '/models/SmolLM2-135M-Instruct.Q4_1.gguf');
    await page.evaluate(() => {
      const bar = document.getElementById('progress');
      window.__progress = [];
      new MutationObserver(() => window.__progress.push(bar.value)).observe(bar, {
        attributes: true,
        attributeFilter: ['value'],
      });
    });
    const t0 = Date.now();
    await page.click('#load');
    await page.waitForFunction(() => document.getElementById('app').dataset.state === 'ready', null, {
      timeout: 110_000,
    });
    const loadMs = Date.now() - t0;
    const samples = await page.evaluate(() => window.__progress);
    assert.ok(
      samples.some((v) => v > 0 && v < 100),
      `progress passed through intermediate values: ${samples.slice(0, 20)}`,
    );
    assert.equal(await page.evaluate(() => document.getElementById('progress').value), 100);
    assert.ok(samples.length >= 3, `several progress updates (${samples.length})`);
    const info = await page.evaluate(() => ({
      hidden: document.getElementById('model-info').hidden,
      device: document.getElementById('info-device').textContent,
      name: document.getElementById('info-name').textContent,
      arch: document.getElementById('info-arch').textContent,
      quant: document.getElementById('info-quant').textContent,
      thread: document.getElementById('info-thread').textContent,
      badge: document.getElementById('device-badge').textContent,
      text: document.getElementById('progress-text').textContent,
    }));
    assert.equal(info.hidden, false);
    assert.equal(info.device, 'cpu');
    assert.equal(info.badge, 'cpu');
    assert.equal(info.arch, 'llama');
    assert.match(info.quant, /Q4_1/i);
    assert.match(info.text, /^Loaded /);
    assert.equal(info.thread, 'Web Worker');
    assert.equal((await errorBox()).hidden, true);
    t.diagnostic(`model loaded in ${loadMs} ms (${info.thread}): ${JSON.stringify(info)}`);
  },
);

test('the sliders show the Amulet strength k live; presets fill the preference', opts(20_000), async () => {
  const k = () => page.evaluate(() => document.getElementById('strength').value);
  assert.equal(await k(), 'k = 4.649'); // alpha 2, lambda 2, eta 10, T 60
  await setRange('iterations', 1);
  await page.waitForFunction(() => document.getElementById('strength').value === 'k = 0.952');
  await setRange('iterations', 10);
  await page.waitForFunction(() => document.getElementById('strength').value === 'k = 2.898');
  assert.equal(await page.textContent('#iterations-out'), '10');
  await setRange('iterations', 60);
  await page.waitForFunction(() => document.getElementById('strength').value === 'k = 4.649');

  await page.click('.chip[data-preset="concise"]');
  assert.equal(await page.inputValue('#preference'), 'concise');
  assert.equal(await page.getAttribute('.chip[data-preset="concise"]', 'aria-pressed'), 'true');
  assert.equal(await page.getAttribute('.chip[data-preset="uplifting"]', 'aria-pressed'), 'false');
  await page.fill('#preference', 'like a pirate');
  assert.equal(await page.locator('.chip[aria-pressed="true"]').count(), 0);
  await page.click('.chip[data-preset="uplifting"]');
});

test('text streams on the CPU path and tokens/s shows', opts(90_000), async (t) => {
  await setValue('#max-tokens', 40);
  await page.check('input[name="method"][value="amulet"]');
  await page.click('#generate');
  const series = [];
  const t0 = Date.now();
  while (Date.now() - t0 < 80_000) {
    const s = await page.evaluate(() => ({
      n: Number(document.querySelector('#answers .answer')?.dataset.tokens ?? 0),
      len: document.querySelector('#answers .answer .text')?.textContent.length ?? 0,
      done: document.getElementById('answers').dataset.done === 'true',
    }));
    series.push(s);
    if (s.done) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(await waitDone(), 'done');
  const lengths = [...new Set(series.filter((s) => !s.done && s.len > 0).map((s) => s.len))];
  assert.ok(lengths.length >= 3, `the answer grew in steps while generating: ${lengths.join(',')}`);
  for (let i = 1; i < lengths.length; i++) assert.ok(lengths[i] > lengths[i - 1], 'the answer only grows');
  const n = (await tokenCounts()).amulet;
  assert.ok(n > 5 && n <= 40, `tokens: ${n}`);
  const tps = Number(await page.textContent('#tps'));
  assert.ok(tps > 0, `tokens/s shown: ${tps}`);
  assert.match(await page.textContent('#run-status'), /^Done: /);
  assert.equal(await page.textContent('#device-badge'), 'cpu');
  t.diagnostic(`streamed ${n} amulet tokens, ${tps} tok/s`);
});

test(
  'hovering (and focusing) a token shows its candidate chart under base, pref and amulet',
  opts(30_000),
  async () => {
    const span = page.locator('#answers .answer[data-method="amulet"] .tok').nth(2);
    await span.hover();
    await page.waitForSelector('#inspector:not([hidden])');
    const chart = await page.evaluate(() => {
      const ins = document.getElementById('inspector');
      return {
        title: ins.querySelector('.ins-title').textContent,
        charts: [...ins.querySelectorAll('figure.chart')].map((f) => ({
          name: f.querySelector('figcaption').textContent,
          rows: f.querySelectorAll('li').length,
          chosen: f.querySelectorAll('li.chosen').length,
          pcts: [...f.querySelectorAll('.pct')].map((p) => p.textContent),
          widths: [...f.querySelectorAll('.bar span')].map((b) => parseFloat(b.style.width)),
        })),
        box: ins.getBoundingClientRect().toJSON(),
      };
    });
    assert.match(chart.title, /^amulet token 3: /);
    assert.deepEqual(
      chart.charts.map((c) => c.name),
      ['base', 'pref', 'amulet'],
    );
    for (const c of chart.charts) {
      assert.equal(c.rows, 5, `${c.name}: top 5 candidates`);
      assert.ok(
        c.pcts.every((p) => /^\d+\.\d%$/.test(p)),
        `${c.name}: percentages ${c.pcts}`,
      );
      assert.ok(
        c.widths.every((w, i) => i === 0 || w <= c.widths[i - 1] + 1e-9),
        `${c.name}: bars sorted`,
      );
    }
    assert.equal(
      chart.charts[2].chosen,
      1,
      'the chosen token is marked in the amulet chart (greedy: its top candidate)',
    );
    assert.ok(chart.box.width > 100 && chart.box.height > 50, 'the chart has a size');
    await page.mouse.move(5, 5);
    await page.waitForSelector('#inspector', { state: 'hidden' });

    // Keyboard: the first token is a tab stop, arrows move through the tokens.
    await page.focus('#answers .answer[data-method="amulet"] .tok[data-i="0"]');
    await page.waitForSelector('#inspector:not([hidden])');
    await page.keyboard.press('ArrowRight');
    assert.match(await page.textContent('#inspector .ins-title'), /^amulet token 2: /);
    assert.equal(await page.evaluate(() => document.activeElement.dataset.i), '1');
    await page.keyboard.press('Escape');
    await page.waitForSelector('#inspector', { state: 'hidden' });
  },
);

test('compare streams three different answers side by side (base | pref | amulet)', opts(90_000), async (t) => {
  await page.fill('#preference', 'uplifting');
  await setValue('#max-tokens', 16);
  await page.click('#compare');
  await page.waitForFunction(() => document.querySelectorAll('#answers .answer').length === 3);
  const outcome = await waitDone();
  assert.equal(outcome, 'done');
  const texts = await answerTexts();
  assert.deepEqual(Object.keys(texts), ['base', 'pref', 'amulet']);
  for (const [m, s] of Object.entries(texts)) assert.ok(s.trim().length > 0, `${m} answered`);
  assert.notEqual(texts.base, texts.pref);
  assert.notEqual(texts.base, texts.amulet);
  assert.notEqual(texts.pref, texts.amulet);
  const counts = await tokenCounts();
  for (const [m, n] of Object.entries(counts)) assert.ok(n > 0 && n <= 16, `${m}: ${n} tokens`);
  // Side by side at desktop width: three columns on one row.
  const boxes = await page.$$eval('#answers .answer', (els) => els.map((e) => e.getBoundingClientRect().toJSON()));
  assert.ok(boxes[0].x < boxes[1].x && boxes[1].x < boxes[2].x, 'three columns');
  assert.ok(Math.abs(boxes[0].y - boxes[2].y) < 2, 'on one row');
  assert.ok(Number(await page.textContent('#tps')) > 0);
  t.diagnostic(`compare: ${JSON.stringify(texts)}`);

  // A screenshot with the candidate chart of one amulet token open.
  const moved = page.locator('#answers .answer[data-method="amulet"] .tok.moved');
  assert.ok((await moved.count()) > 0, "some amulet tokens differ from the base model's first choice");
  await moved.first().hover();
  await page.waitForSelector('#inspector:not([hidden])');
  await page.screenshot({ path: outFile('compare.png'), fullPage: true });
  await page.mouse.move(5, 5);
});

test('on a phone-sized screen the compare columns stack', opts(30_000), async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  try {
    const boxes = await page.$$eval('#answers .answer', (els) => els.map((e) => e.getBoundingClientRect().toJSON()));
    assert.equal(boxes.length, 3);
    assert.ok(Math.abs(boxes[0].x - boxes[1].x) < 2 && Math.abs(boxes[1].x - boxes[2].x) < 2, 'same column');
    assert.ok(boxes[0].y < boxes[1].y && boxes[1].y < boxes[2].y, 'stacked');
    const overflow = await page.evaluate(
      () => document.documentElement.scrollWidth - document.documentElement.clientWidth,
    );
    assert.ok(overflow <= 0, `no horizontal scrolling (${overflow}px)`);
    await page.screenshot({ path: outFile('phone.png'), fullPage: true });
  } finally {
    await page.setViewportSize({ width: 1280, height: 900 });
  }
});

test('stop ends a generation early, the UI is usable again, a second generation works', opts(120_000), async () => {
  await setValue('#max-tokens', 400);
  await page.check('input[name="method"][value="amulet"]');
  // Enter in the question box generates.
  await page.focus('#prompt');
  await page.keyboard.press('End');
  await page.keyboard.press('Enter');
  await until(async () => (await tokenCounts()).amulet >= 4, { timeout: 60_000, what: 'a few tokens' });
  assert.equal(await state(), 'generating');
  assert.equal(await page.isEnabled('#stop'), true);
  assert.equal(await page.isEnabled('#generate'), false);
  await page.click('#stop');
  assert.equal(await waitDone(10_000), 'stopped');
  const stoppedAt = (await tokenCounts()).amulet;
  assert.ok(stoppedAt < 400, `stopped early at ${stoppedAt}`);
  assert.match(await page.textContent('#run-status'), /^Stopped after /);
  await new Promise((r) => setTimeout(r, 700));
  assert.equal((await tokenCounts()).amulet, stoppedAt, 'no token after stop');
  assert.equal(await page.isEnabled('#generate'), true);
  assert.equal(await page.isEnabled('#compare'), true);
  assert.equal(await page.isEnabled('#stop'), false);
  assert.equal((await errorBox()).hidden, true, 'a stop is not an error');
  // The prompt still says what it said (Enter did not add a newline).
  assert.doesNotMatch(await page.inputValue('#prompt'), /\n/);

  await setValue('#max-tokens', 8);
  await page.check('input[name="method"][value="la"]');
  await page.click('#generate');
  assert.equal(await waitDone(), 'done');
  const c = await tokenCounts();
  assert.ok(c.la > 0 && c.la <= 8, `second generation: ${JSON.stringify(c)}`);
  await page.check('input[name="method"][value="amulet"]');
});

test('a bad option shows its code on the page', opts(30_000), async () => {
  await setValue('#max-tokens', '2.5');
  await page.click('#generate');
  await page.waitForSelector('#error:not([hidden])', { timeout: 20_000 });
  const box = await errorBox();
  assert.equal(box.visible, true);
  assert.equal(box.code, 'BAD_OPTION');
  assert.match(box.message, /maxTokens/);
  await waitDone();
  assert.equal(await page.isEnabled('#generate'), true);
  await page.click('#error-close');
  assert.equal((await errorBox()).hidden, true);
  await setValue('#max-tokens', 16);
});

test('a bad model file (local file and URL) shows the error on the page', opts(60_000), async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'amulet-bad-'));
  try {
    const bad = path.join(dir, 'garbage.gguf');
    fs.writeFileSync(bad, Buffer.concat([Buffer.from('GGUF'), Buffer.alloc(60, 0xab)]));
    await page.setInputFiles('#model-file', bad);
    await page.waitForSelector('#error:not([hidden])', { timeout: 30_000 });
    await page.waitForFunction(() => document.getElementById('app').dataset.state === 'idle');
    const box = await errorBox();
    assert.equal(box.visible, true);
    assert.equal(box.code, 'BAD_MODEL');
    assert.match(box.message, /garbage\.gguf/);
    await page.screenshot({ path: outFile('bad-model.png') });
    assert.match(await page.textContent('#progress-text'), /Could not load garbage\.gguf/);
    assert.equal(await page.isEnabled('#generate'), false, 'no engine, no generate');
    assert.equal(await page.isEnabled('#load'), true, 'another model can be loaded');

    // A URL that does not exist.
    await page.fill('#model-url', '/models/no-such-model.gguf');
    await page.click('#load');
    await page.waitForFunction(
      () => document.getElementById('app').dataset.state === 'idle' && !document.getElementById('error').hidden,
    );
    const box2 = await errorBox();
    assert.ok(box2.code.length > 0, `a code: ${box2.code}`);
    assert.match(box2.message, /no-such-model\.gguf/);
    t.diagnostic(`bad file -> ${box.code}: ${box.message}`);
    t.diagnostic(`missing URL -> ${box2.code}: ${box2.message}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('when the worker cannot start, the page falls back to the main thread', opts(90_000), async () => {
  const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
  try {
    // A worker script that 404s: the Worker fires `error`, the facade rejects with WORKER.
    await context.route('**/src/worker.js', (route) => route.fulfill({ status: 404, body: 'gone' }));
    const p2 = await context.newPage();
    const errors = [];
    p2.on('pageerror', (e) => errors.push(e));
    await p2.goto(`${server.url}?autoload=1`);
    await p2.waitForFunction(
      () =>
        ['ready', 'idle'].includes(document.getElementById('app').dataset.state) &&
        document.getElementById('progress').value === 100,
      null,
      { timeout: 60_000 },
    );
    assert.equal(await p2.textContent('#info-thread'), 'main thread');
    assert.equal(await p2.textContent('#info-device'), 'cpu');
    assert.equal(await p2.evaluate(() => document.getElementById('error').hidden), true);
    await p2.fill('#max-tokens', '6');
    await p2.click('#compare');
    await p2.waitForFunction(() => document.getElementById('answers').dataset.done === 'true', null, {
      timeout: 60_000,
    });
    assert.equal(await p2.evaluate(() => document.getElementById('answers').dataset.outcome), 'done');
    const n = await p2.$$eval('#answers .answer', (els) => els.map((e) => Number(e.dataset.tokens)));
    assert.deepEqual(n.length, 3);
    assert.ok(
      n.every((x) => x > 0 && x <= 6),
      `tokens: ${n}`,
    );
    assert.deepEqual(errors.map(String), []);
  } finally {
    await context.close();
  }
});

test('the Results view shows the evaluation charts (or says plainly that there are none)', opts(30_000), async (t) => {
  // The directory state first, so that neither branch can pass vacuously.
  const dir = path.join(REPO, 'docs', 'eval', 'personal');
  const svgs = fs.existsSync(dir) ? fs.readdirSync(dir).filter((f) => f.toLowerCase().endsWith('.svg')) : [];
  t.diagnostic(`docs/eval/personal: ${fs.existsSync(dir) ? `${svgs.length} svg` : 'missing'}`);
  const toggle = page.locator('#results-toggle');
  assert.equal(await toggle.getAttribute('aria-expanded'), 'false');
  assert.equal(await page.locator('#results-view').isHidden(), true);
  // Keyboard: focus the button and press Enter.
  await toggle.focus();
  await page.keyboard.press('Enter');
  assert.equal(await toggle.getAttribute('aria-expanded'), 'true');
  await page.waitForFunction(() =>
    ['shown', 'empty', 'error'].includes(document.getElementById('results-view').dataset.state),
  );
  const viewState = await page.evaluate(() => document.getElementById('results-view').dataset.state);
  const statusText = await page.textContent('#results-status');
  if (svgs.length > 0) {
    assert.equal(viewState, 'shown', statusText);
    const imgs = page.locator('.results-folder[data-folder="personal"] .results-charts img');
    assert.equal(await imgs.count(), svgs.length);
    await page.waitForFunction(
      () =>
        [...document.querySelectorAll('.results-folder[data-folder="personal"] img')].some(
          (i) => i.complete && i.naturalWidth > 0,
        ),
      null,
      { timeout: 15_000 },
    );
    const widths = await imgs.evaluateAll((list) => list.map((i) => i.naturalWidth));
    t.diagnostic(`chart naturalWidths: ${widths.join(', ')}`);
    assert.ok(
      widths.some((w) => w > 0),
      `no chart image loaded: ${widths}`,
    );
  } else if (!fs.existsSync(dir)) {
    // No personal results: the page must say so (when no other folder has results either).
    const others = await page.locator('.results-folder').count();
    if (others === 0) {
      assert.equal(viewState, 'empty');
      assert.match(statusText, /No evaluation results yet/);
    } else {
      assert.equal(await page.locator('.results-folder[data-folder="personal"]').count(), 0);
    }
  } else {
    // docs/eval/personal exists without charts: its folder says so.
    const folder = page.locator('.results-folder[data-folder="personal"]');
    if (await folder.count()) assert.match(await folder.textContent(), /No charts/);
    else if (viewState === 'empty') assert.match(statusText, /No evaluation results yet/);
    else assert.equal(viewState, 'shown');
  }
  // The regeneration command is shown either way; the button closes the view again.
  assert.match(
    await page.textContent('#results-view'),
    /amulet eval --prompts data\/prompts\/personal\.jsonl --limit 20 --out docs\/eval\/personal/,
  );
  await toggle.press('Enter');
  assert.equal(await page.locator('#results-view').isHidden(), true);
});

test('a known model the server does not have: the error says which models/fetch.sh to run', opts(60_000), async () => {
  // A server whose models folder is empty; phone-sized, to see the picker there too.
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'amulet-no-models-'));
  const bare = await startServer(['--models', empty]);
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  try {
    const p2 = await context.newPage();
    const errors = [];
    p2.on('pageerror', (e) => errors.push(e));
    await p2.goto(bare.url);
    await p2.waitForFunction(() => !document.getElementById('load').disabled, null, { timeout: 30_000 });
    assert.equal((await picker(p2)).value, 'smollm2-135m-instruct-q4_1');
    await p2.selectOption('#model-pick', 'qwen2.5-coder-0.5b-instruct-q4_k_m');
    await p2.click('#load');
    await p2.waitForFunction(
      () => document.getElementById('app').dataset.state === 'idle' && !document.getElementById('error').hidden,
      null,
      { timeout: 30_000 },
    );
    const box = await p2.evaluate(() => ({
      code: document.getElementById('error-code').textContent,
      message: document.getElementById('error-message').textContent,
    }));
    assert.equal(box.code, 'IO');
    assert.match(box.message, /HTTP 404/);
    assert.match(box.message, /run `models\/fetch\.sh qwen2\.5-coder-0\.5b-instruct-q4_k_m`/);
    assert.match(box.message, /491 MB/);
    // The phone layout stays tidy: the picker fits, nothing scrolls sideways.
    const layout = await p2.evaluate(() => ({
      overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
      pick: document.getElementById('model-pick').getBoundingClientRect().toJSON(),
      width: document.documentElement.clientWidth,
    }));
    assert.ok(layout.overflow <= 0, `no horizontal scrolling (${layout.overflow}px)`);
    assert.ok(layout.pick.right <= layout.width, `the picker fits: ${JSON.stringify(layout.pick)}`);
    await p2.screenshot({ path: outFile('fetch-hint-phone.png'), fullPage: true });
    assert.deepEqual(errors.map(String), []);
  } finally {
    await context.close();
    await bare.close();
    fs.rmSync(empty, { recursive: true, force: true });
  }
});

test('with a hardware WebGPU adapter the 1.5B model is offered first', opts(30_000), async () => {
  const context = await browser.newContext({ viewport: { width: 1000, height: 800 } });
  try {
    // A stand-in for a hardware adapter (the page only reads its info; nothing is loaded).
    await context.addInitScript(() => {
      const adapter = { isFallbackAdapter: false, info: { vendor: 'nvidia', architecture: 'ampere' } };
      Object.defineProperty(navigator, 'gpu', { value: { requestAdapter: async () => adapter } });
    });
    const p3 = await context.newPage();
    await p3.goto(server.url);
    await p3.waitForFunction(() => !document.getElementById('load').disabled, null, { timeout: 30_000 });
    const p = await picker(p3);
    assert.equal(p.adapter, 'hardware');
    assert.equal(p.value, 'qwen2.5-coder-1.5b-instruct-q4_k_m');
    assert.deepEqual(p.options[0], PICKS[3], 'first in the list');
    assert.equal(p.url, '/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf');
    assert.match(p.hint, /hardware WebGPU adapter \(nvidia ampere\)/);
    // ?model= still wins over the pick.
    await p3.goto(`${server.url}?model=/models/gemma-3-270m-q4_k_m.gguf`);
    await p3.waitForFunction(() => !document.getElementById('load').disabled, null, { timeout: 30_000 });
    const q = await picker(p3);
    assert.equal(q.url, '/models/gemma-3-270m-q4_k_m.gguf');
    assert.equal(q.value, 'gemma-3-270m-q4_k_m');
  } finally {
    await context.close();
  }
});

test('no uncaught errors on the page', opts(5_000), () => {
  assert.deepEqual(pageErrors.map(String), []);
});
