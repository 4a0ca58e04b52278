// The demo page end to end: real headless Chromium (playwright-core), the real default model
// (SmolLM2-135M Q4_1), the page served by www/demo/serve.mjs on a free port. The tests share
// one page and run in order, one conversation: model picker, load, a first turn (stream,
// inspect), a second turn that reuses the cached history, a compare turn, layout, an earlier
// turn compared afterwards, a new preference, stop, New chat, errors.

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

/** The latest run (of the latest turn, or of the turn `n`): its data attributes and figures line. */
const lastRun = (n) =>
  page.evaluate((n) => {
    const scope = n ? document.querySelector(`#history .turn[data-turn="${n}"]`) : document;
    const run = [...scope.querySelectorAll('.run')].at(-1);
    return run ? { ...run.dataset, figures: run.querySelector('.turn-stats').textContent } : null;
  }, n);

/** Token counts of the latest run's answer panels, e.g. { amulet: 12 }. */
const tokenCounts = () =>
  page.evaluate(() => {
    const run = [...document.querySelectorAll('#history .run')].at(-1);
    return Object.fromEntries(
      [...(run?.querySelectorAll('.answer') ?? [])].map((a) => [a.dataset.method, Number(a.dataset.tokens)]),
    );
  });

/** Answer texts of a run (default: the latest), by method. */
const answerTexts = (selector = '#history .run') =>
  page.evaluate((selector) => {
    const run = [...document.querySelectorAll(selector)].at(-1);
    return Object.fromEntries(
      [...run.querySelectorAll('.answer')].map((a) => [a.dataset.method, a.querySelector('.text').textContent]),
    );
  }, selector);

/** The turns of the history: number, the user's text, the outcome, runs. */
const history = () =>
  page.evaluate(() =>
    [...document.querySelectorAll('#history > .turn')].map((t) => ({
      n: Number(t.dataset.turn),
      text: t.querySelector('.user-text').textContent,
      outcome: t.dataset.outcome,
      runs: t.querySelectorAll('.run').length,
    })),
  );

/** The conversation as the page's chat holds it. */
const messages = () => page.evaluate(() => window.amuletDemo.messages());

/** Waits until the latest run has ended and the page is ready again; its outcome. */
async function waitDone(timeout = 90_000) {
  await page.waitForFunction(
    () => {
      const run = [...document.querySelectorAll('#history .run')].at(-1);
      return run?.dataset.done === 'true' && document.getElementById('app').dataset.state === 'ready';
    },
    null,
    { timeout },
  );
  return (await lastRun()).outcome;
}

/** Types a message and sends it with the Send button. */
async function send(text) {
  await page.fill('#prompt', text);
  await page.click('#send');
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

const Q1 = 'How can I improve my eating habits without compromising on taste?';
const Q2 = 'And what should I drink with my meals?';

test('the first turn streams on the CPU path, with its time to first token and tokens/s', opts(90_000), async (t) => {
  assert.match(await page.textContent('#next-turn'), /^Turn 1 · amulet · “uplifting”/);
  assert.equal(await page.isEnabled('#new-chat'), false, 'nothing to reset yet');
  assert.deepEqual(await history(), []);
  await setValue('#max-tokens', 40);
  await page.check('input[name="method"][value="amulet"]');
  assert.equal(await page.inputValue('#prompt'), Q1);
  await page.click('#send');
  const series = [];
  const t0 = Date.now();
  while (Date.now() - t0 < 80_000) {
    const s = await page.evaluate(() => ({
      n: Number(document.querySelector('#history .answer')?.dataset.tokens ?? 0),
      len: document.querySelector('#history .answer .text')?.textContent.length ?? 0,
      done: document.querySelector('#history .run')?.dataset.done === 'true',
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

  // The turn in the history, with its figures; the message box is empty for the next one.
  assert.deepEqual(await history(), [{ n: 1, text: Q1, outcome: 'done', runs: 1 }]);
  const run = await lastRun();
  assert.ok(Number(run.ttftMs) > 0, `time to first token: ${run.ttftMs}`);
  assert.equal(run.cached, '0', 'nothing to reuse on the first turn');
  assert.ok(Number(run.read) > 20, `prompt tokens read: ${run.read}`);
  assert.match(
    run.figures,
    /^First token after [\d.]+ m?s · prompt: 0 tokens reused from the cache, \d+ read · \d+ tokens/,
  );
  assert.equal(await page.inputValue('#prompt'), '');
  const m = await messages();
  assert.equal(m.length, 2);
  assert.deepEqual(m[0], { role: 'user', content: Q1 });
  assert.equal(m[1].content, (await answerTexts()).amulet, 'the answer shown is the one the chat keeps');
  assert.match(await page.textContent('#next-turn'), /^Turn 2 · amulet · “uplifting” · continues 1 turn/);
  assert.equal(await page.isEnabled('#new-chat'), true);
  t.diagnostic(`turn 1: ${n} amulet tokens, ${tps} tok/s; ${run.figures}`);
});

test(
  'hovering, focusing or clicking a token shows its candidate chart under base, pref and amulet',
  opts(30_000),
  async () => {
    const span = page.locator('#history .turn[data-turn="1"] .answer[data-method="amulet"] .tok').nth(2);
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
    await page.focus('#history .turn[data-turn="1"] .answer[data-method="amulet"] .tok[data-i="0"]');
    await page.waitForSelector('#inspector:not([hidden])');
    await page.keyboard.press('ArrowRight');
    assert.match(await page.textContent('#inspector .ins-title'), /^amulet token 2: /);
    assert.equal(await page.evaluate(() => document.activeElement.dataset.i), '1');
    await page.keyboard.press('Escape');
    await page.waitForSelector('#inspector', { state: 'hidden' });

    // A click (a touch screen's way) shows a token too.
    await page.click('#history .turn[data-turn="1"] .answer[data-method="amulet"] .tok[data-i="4"]');
    await page.waitForSelector('#inspector:not([hidden])');
    assert.match(await page.textContent('#inspector .ins-title'), /^amulet token 5: /);
    await page.keyboard.press('Escape');
    await page.waitForSelector('#inspector', { state: 'hidden' });
  },
);

test('the second turn reuses the cached conversation; the history shows both turns', opts(90_000), async (t) => {
  await setValue('#max-tokens', 16);
  // Enter in the message box sends.
  await page.fill('#prompt', Q2);
  await page.focus('#prompt');
  await page.keyboard.press('End');
  await page.keyboard.press('Enter');
  assert.equal(await waitDone(), 'done');
  const h = await history();
  assert.deepEqual(h, [
    { n: 1, text: Q1, outcome: 'done', runs: 1 },
    { n: 2, text: Q2, outcome: 'done', runs: 1 },
  ]);
  const first = await lastRun(1);
  const second = await lastRun(2);
  const cached = Number(second.cached);
  assert.ok(cached > 0, `the second turn reports cached tokens: ${JSON.stringify(second)}`);
  assert.ok(Number(second.cachedBase) > 20 && Number(second.cachedPref) > 20, 'both contexts reused');
  assert.ok(Number(second.read) < cached, `only the new turn is read: ${second.read} read, ${cached} reused`);
  assert.match(second.figures, new RegExp(`^First token after [\\d.]+ m?s · prompt: ${cached} tokens reused`));
  assert.ok(Number(second.ttftMs) > 0);
  const m = await messages();
  assert.equal(m.length, 4);
  assert.deepEqual(m[2], { role: 'user', content: Q2 });
  assert.equal(m[3].content, (await answerTexts()).amulet);
  // Both turns are on the page, in order.
  const boxes = await page.$$eval('#history > .turn', (els) => els.map((e) => e.getBoundingClientRect().toJSON()));
  assert.ok(boxes[0].bottom <= boxes[1].top + 1, 'turn 1 above turn 2');

  // The inspector works on the latest answer.
  await page.hover('#history .turn[data-turn="2"] .answer[data-method="amulet"] .tok[data-i="0"]');
  await page.waitForSelector('#inspector:not([hidden])');
  assert.match(await page.textContent('#inspector .ins-title'), /^amulet token 1: /);
  assert.equal(await page.locator('#inspector figure.chart').count(), 3);
  await page.mouse.move(5, 5);
  await page.waitForSelector('#inspector', { state: 'hidden' });
  t.diagnostic(
    `turn 1: TTFT ${first.ttftMs} ms, ${first.read} read; turn 2: TTFT ${second.ttftMs} ms, ${second.cached} reused, ${second.read} read`,
  );
});

test('a turn in compare mode streams base | pref | amulet side by side; amulet continues', opts(90_000), async (t) => {
  await page.fill('#preference', 'uplifting');
  await setValue('#max-tokens', 16);
  await page.check('#compare-mode');
  assert.match(await page.textContent('#next-turn'), /^Turn 3 · base \| pref \| amulet, amulet continues/);
  await send('Give me one recipe idea.');
  await page.uncheck('#compare-mode'); // the next turns are single again, whatever happens here
  await page.waitForFunction(() => document.querySelectorAll('#history .turn[data-turn="3"] .answer').length === 3);
  assert.equal(await waitDone(), 'done');
  const texts = await answerTexts();
  assert.deepEqual(Object.keys(texts), ['base', 'pref', 'amulet']);
  for (const [m, s] of Object.entries(texts)) assert.ok(s.trim().length > 0, `${m} answered`);
  // Deep in a conversation the preference in the prompt alone may not move the small model's
  // greedy answer; amulet does.
  assert.notEqual(texts.base, texts.amulet);
  assert.notEqual(texts.pref, texts.amulet);
  const counts = await tokenCounts();
  for (const [m, n] of Object.entries(counts)) assert.ok(n > 0 && n <= 16, `${m}: ${n} tokens`);
  const run = await lastRun();
  assert.equal(run.mode, 'compare');
  assert.ok(Number(run.cachedBase) > 0 && Number(run.cachedPref) > 0, `reused: ${JSON.stringify(run)}`);
  const m = await messages();
  assert.equal(m.length, 6);
  assert.equal(m[5].content, texts.amulet, "the chosen method's answer joins the conversation");
  // Side by side at desktop width: three columns on one row.
  const boxes = await page.$$eval('#history .turn[data-turn="3"] .answer', (els) =>
    els.map((e) => e.getBoundingClientRect().toJSON()),
  );
  assert.ok(boxes[0].x < boxes[1].x && boxes[1].x < boxes[2].x, 'three columns');
  assert.ok(Math.abs(boxes[0].y - boxes[2].y) < 2, 'on one row');
  assert.ok(Number(await page.textContent('#tps')) > 0);
  t.diagnostic(`compare: ${JSON.stringify(texts)}; ${run.figures}`);

  // A screenshot with the candidate chart of one amulet token open.
  const moved = page.locator('#history .turn[data-turn="3"] .answer[data-method="amulet"] .tok.moved');
  assert.ok((await moved.count()) > 0, "some amulet tokens differ from the base model's first choice");
  await moved.first().hover();
  await page.waitForSelector('#inspector:not([hidden])');
  await page.screenshot({ path: outFile('compare.png'), fullPage: true });
  await page.mouse.move(5, 5);
});

test('on a phone-sized screen the compare columns stack', opts(30_000), async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  try {
    const boxes = await page.$$eval('#history .turn[data-turn="3"] .answer', (els) =>
      els.map((e) => e.getBoundingClientRect().toJSON()),
    );
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

test(
  'an earlier turn compared afterwards: same history, same amulet answer, the conversation unchanged',
  opts(90_000),
  async () => {
    const before = await messages();
    const turn2 = await answerTexts('#history .turn[data-turn="2"] .run');
    assert.equal(
      await page.locator('#history .turn[data-turn="3"] button.turn-compare').isHidden(),
      true,
      'a compare turn has no compare button',
    );
    await page.click('#history .turn[data-turn="2"] button.turn-compare');
    await page.waitForFunction(() => document.querySelectorAll('#history .turn[data-turn="2"] .run').length === 2);
    assert.equal(await waitDone(), 'done');
    const run = await lastRun(2);
    assert.equal(run.mode, 'recompare');
    const texts = await answerTexts('#history .turn[data-turn="2"] .run');
    assert.deepEqual(Object.keys(texts), ['base', 'pref', 'amulet']);
    assert.equal(texts.amulet, turn2.amulet, "amulet's greedy answer is the turn's own");
    assert.notEqual(texts.base, texts.amulet);
    assert.ok(Number(run.cached) > 0, `the history before turn 2 is reused: ${JSON.stringify(run)}`);
    assert.deepEqual(await messages(), before, 'the conversation is unchanged');
    assert.equal((await history()).length, 3);
  },
);

test('a new preference mid-conversation re-reads only the preference context', opts(90_000), async (t) => {
  await page.click('.chip[data-preset="concise"]');
  assert.match(await page.textContent('#next-turn'), /^Turn 4 · amulet · “concise” · new preference/);
  await setValue('#max-tokens', 8);
  await send('Thanks!');
  assert.equal(await waitDone(), 'done');
  const run = await lastRun(4);
  assert.ok(Number(run.cachedBase) > 50, `the base context is kept: ${JSON.stringify(run)}`);
  assert.ok(Number(run.cachedPref) < Number(run.cachedBase), 'the preference context is read again');
  assert.equal((await messages()).length, 8);
  t.diagnostic(run.figures);
  await page.click('.chip[data-preset="uplifting"]');
});

test('stop ends a turn early and leaves it out of the conversation; the next turn works', opts(120_000), async () => {
  const before = await messages();
  await setValue('#max-tokens', 400);
  await page.check('input[name="method"][value="amulet"]');
  await page.fill('#prompt', 'Write a long story about a cook.');
  await page.focus('#prompt');
  await page.keyboard.press('Enter');
  await until(async () => (await tokenCounts()).amulet >= 4, { timeout: 60_000, what: 'a few tokens' });
  assert.equal(await state(), 'generating');
  assert.equal(await page.isEnabled('#stop'), true);
  assert.equal(await page.isEnabled('#send'), false);
  assert.equal(await page.isEnabled('#new-chat'), false);
  await page.click('#stop');
  assert.equal(await waitDone(10_000), 'stopped');
  const stoppedAt = (await tokenCounts()).amulet;
  assert.ok(stoppedAt < 400, `stopped early at ${stoppedAt}`);
  assert.match(await page.textContent('#run-status'), /^Stopped after /);
  await new Promise((r) => setTimeout(r, 700));
  assert.equal((await tokenCounts()).amulet, stoppedAt, 'no token after stop');
  assert.equal(await page.isEnabled('#send'), true);
  assert.equal(await page.isEnabled('#stop'), false);
  assert.equal((await errorBox()).hidden, true, 'a stop is not an error');
  assert.deepEqual(await messages(), before, 'a stopped turn leaves the conversation as it was');
  const h = await history();
  assert.equal(h.at(-1).outcome, 'stopped');
  assert.match(await page.textContent('#history > .turn:last-child'), /not part of the conversation/);
  // The message comes back to the box (Enter did not add a newline).
  assert.equal(await page.inputValue('#prompt'), 'Write a long story about a cook.');

  await setValue('#max-tokens', 8);
  await page.check('input[name="method"][value="la"]');
  await send('Now a short one.');
  assert.equal(await waitDone(), 'done');
  const c = await tokenCounts();
  assert.ok(c.la > 0 && c.la <= 8, `the next turn: ${JSON.stringify(c)}`);
  assert.ok(Number((await lastRun()).cached) > 0);
  assert.equal((await messages()).length, before.length + 2);
  await page.check('input[name="method"][value="amulet"]');
});

test('New chat resets the conversation', opts(30_000), async () => {
  assert.equal(await page.isEnabled('#new-chat'), true);
  await page.click('#new-chat');
  assert.deepEqual(await history(), []);
  assert.deepEqual(await messages(), []);
  assert.equal(await page.isHidden('#history-empty'), false);
  assert.equal(await page.isEnabled('#new-chat'), false);
  assert.match(await page.textContent('#next-turn'), /^Turn 1 · amulet/);
  assert.equal(await page.isEnabled('#send'), true);
});

test('a bad option shows its code on the page and leaves the conversation as it was', opts(30_000), async () => {
  await setValue('#max-tokens', '2.5');
  await send(Q1);
  await page.waitForSelector('#error:not([hidden])', { timeout: 20_000 });
  const box = await errorBox();
  assert.equal(box.visible, true);
  assert.equal(box.code, 'BAD_OPTION');
  assert.match(box.message, /maxTokens/);
  assert.equal(await waitDone(), 'error');
  assert.equal(await page.isEnabled('#send'), true);
  assert.deepEqual(await messages(), []);
  assert.equal((await history())[0].outcome, 'error');
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
    assert.equal(await page.isEnabled('#send'), false, 'no engine, no turn');
    assert.deepEqual(await history(), [], 'the old conversation went with its engine');
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
    await p2.check('#compare-mode');
    await p2.click('#send');
    await p2.waitForFunction(() => document.querySelector('#history .run')?.dataset.done === 'true', null, {
      timeout: 60_000,
    });
    assert.equal(await p2.evaluate(() => document.querySelector('#history .run').dataset.outcome), 'done');
    const n = await p2.$$eval('#history .answer', (els) => els.map((e) => Number(e.dataset.tokens)));
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
