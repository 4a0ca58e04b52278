// amulet-web on the real default model (CPU path), through the public package entry.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';

import { AmuletEngine, AmuletError, closedFormStrength, strength } from 'amulet-web';
import { MODEL_PATH, QUESTION, collect, requireModel, thrown } from './helpers.mjs';

// Short prompts with no system turn keep the prefill cheap where the answer does not matter.
const QUICK = { prompt: 'Name a fruit.', system: '', method: 'base' };

let engine;
const progress = [];

before(async () => {
  requireModel();
  engine = await AmuletEngine.load(MODEL_PATH, { onProgress: (p) => progress.push(p) });
});

after(() => engine?.dispose());

test('load from a file path reads it while building (no separate read of the whole file)', () => {
  const phases = new Set(progress.map((p) => p.phase));
  assert.deepEqual([...phases], ['load']);
  for (let i = 1; i < progress.length; i++)
    assert.ok(progress[i].progress >= progress[i - 1].progress, 'progress is monotonic');
  const last = progress.at(-1);
  assert.equal(last.progress, 1);
  assert.equal(last.loaded, last.total);
  assert.match(last.text, /layer/);
  assert.equal(engine.info.cached, 'off');
});

test('info describes the model and the cpu device', () => {
  const info = engine.info;
  assert.equal(info.device, 'cpu');
  assert.match(info.deviceReason, /WebGPU/);
  assert.equal(info.architecture, 'llama');
  assert.equal(info.quantization, 'Q4_1');
  assert.equal(info.vocabSize, 49152);
  assert.ok(info.contextLength >= 2048);
  assert.equal(info.model, 'SmolLM2-135M-Instruct.Q4_1.gguf');
  assert.equal(typeof info.name, 'string');
  // Node 20 has no relaxed SIMD without a flag: the plain build, and the reason says so.
  if (info.simd === 'simd128') assert.match(info.simdReason, /no relaxed SIMD/);
  else assert.deepEqual([info.simd, info.simdReason], ['relaxed-simd', 'this engine has relaxed SIMD']);
});

test('closedFormStrength matches the paper defaults', async () => {
  assert.ok(Math.abs(closedFormStrength(2, 2, 10, 60) - 4.6487) < 1e-3);
  assert.ok(Math.abs((await strength(2, 2, 10, 1)) - 0.952) < 1e-3);
  const e = await thrown(() => closedFormStrength(2, 2, 10, 0));
  assert.equal(e.code, 'BAD_OPTION');
  assert.equal(e.option, 'iterations');
  assert.ok(e instanceof AmuletError);
});

test('generate streams text and ends with a done chunk', async () => {
  const { chunks, final, text } = await collect(engine.generate({ ...QUICK, maxTokens: 8 }));
  assert.ok(chunks.length >= 1 && chunks.length <= 8);
  for (const c of chunks) {
    assert.equal(typeof c.token, 'number');
    assert.equal(typeof c.text, 'string');
  }
  assert.equal(final.done, true);
  assert.equal(final.text, text);
  assert.ok(['stop', 'length'].includes(final.finishReason));
  assert.equal(final.usage.completionTokens, chunks.length);
  assert.equal(final.usage.totalTokens, final.usage.promptTokens + final.usage.completionTokens);
  assert.ok(final.timings.prefillMs > 0);
  assert.ok(text.trim().length > 0);
});

test('topLogprobs adds the candidates to each chunk', async () => {
  const { chunks } = await collect(engine.generate({ ...QUICK, maxTokens: 2, topLogprobs: 3 }));
  const lp = chunks[0].logprobs;
  assert.equal(lp.combined.length, 3);
  assert.equal(typeof lp.combined[0].prob, 'number');
});

test('amulet answers differently from base', async () => {
  const opts = { prompt: QUESTION, preference: 'concise', maxTokens: 12 };
  const base = await collect(engine.generate({ ...opts, method: 'base' }));
  const amulet = await collect(engine.generate(opts)); // a preference makes amulet the default
  assert.equal(amulet.final.method, 'amulet');
  assert.equal(base.final.method, 'base');
  assert.notEqual(amulet.text, base.text);
});

test('abort stops within one token, throws AbortError, and the engine stays usable', async () => {
  const ac = new AbortController();
  let atAbort = -1;
  const seen = [];
  const err = await thrown(async () => {
    for await (const c of engine.generate({ ...QUICK, maxTokens: 200, ignoreEos: true, signal: ac.signal })) {
      seen.push(c);
      if (seen.length === 3) {
        // Abort from outside the loop, as a button would.
        setTimeout(() => {
          atAbort = seen.length;
          ac.abort();
        }, 0);
      }
    }
  });
  assert.equal(err.name, 'AbortError');
  assert.equal(err.code, 'ABORTED');
  assert.ok(err instanceof AmuletError);
  assert.ok(atAbort >= 3);
  assert.ok(seen.length - atAbort <= 1, `at most one token after abort (${atAbort} -> ${seen.length})`);

  const again = await collect(engine.generate({ ...QUICK, maxTokens: 3 }));
  assert.ok(again.final.done);

  // An already aborted signal never starts.
  const pre = await thrown(collect(engine.generate({ ...QUICK, signal: AbortSignal.abort() })));
  assert.equal(pre.code, 'ABORTED');
});

test('breaking out of the loop finishes the generation and frees the engine', async () => {
  let n = 0;
  for await (const c of engine.generate({ ...QUICK, maxTokens: 50, ignoreEos: true })) {
    assert.ok(!c.done);
    if (++n === 2) break;
  }
  // The lock is released: the next generation starts (it would wait forever otherwise).
  const next = await collect(engine.generate({ ...QUICK, maxTokens: 2 }));
  assert.ok(next.final.done);
});

test('two generates at once are queued first in, first out', async () => {
  const order = [];
  const run = (tag) =>
    collect(engine.generate({ ...QUICK, maxTokens: 4, ignoreEos: true }), (c) => order.push(tag + (c.done ? '!' : '')));
  const [a, b] = await Promise.all([run('a'), run('b')]);
  assert.equal(a.chunks.length, 4);
  assert.equal(b.chunks.length, 4);
  assert.deepEqual(order, ['a', 'a', 'a', 'a', 'a!', 'b', 'b', 'b', 'b', 'b!']);
});

test('chat.completions.create, non-streaming', async () => {
  const res = await engine.chat.completions.create({
    messages: [{ role: 'user', content: QUESTION }],
    max_tokens: 8,
    amulet: { preference: 'concise' },
  });
  assert.equal(res.object, 'chat.completion');
  assert.match(res.id, /^chatcmpl-/);
  assert.equal(res.model, 'SmolLM2-135M-Instruct.Q4_1.gguf');
  assert.equal(res.choices.length, 1);
  assert.equal(res.choices[0].message.role, 'assistant');
  assert.ok(res.choices[0].message.content.length > 0);
  assert.equal(res.choices[0].finish_reason, 'length');
  assert.equal(res.usage.completion_tokens, 8);
  assert.equal(res.usage.total_tokens, res.usage.prompt_tokens + 8);
});

test('chat.completions.create, streaming', async () => {
  const stream = await engine.chat.completions.create({
    messages: [
      { role: 'system', content: '' },
      { role: 'user', content: 'Name a fruit.' },
    ],
    stream: true,
    max_tokens: 6,
    temperature: 0.7,
    top_p: 0.9,
    seed: 7,
  });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  const last = chunks.at(-1);
  assert.ok(chunks.length >= 2);
  for (const c of chunks) assert.equal(c.object, 'chat.completion.chunk');
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  for (const c of chunks.slice(0, -1)) {
    assert.equal(c.choices[0].finish_reason, null);
    assert.equal(typeof c.choices[0].delta.content, 'string');
  }
  assert.ok(['stop', 'length'].includes(last.choices[0].finish_reason));
  assert.deepEqual(last.choices[0].delta, {});
  assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens);
  assert.ok(new Set(chunks.map((c) => c.id)).size === 1);

  const bad = await thrown(engine.chat.completions.create({ messages: [], frequency_penalty: 1 }));
  assert.equal(bad.code, 'BAD_OPTION');
  assert.equal(bad.option, 'frequency_penalty');
});

test('compare runs three methods in one generation with three different texts', async () => {
  const texts = { base: '', pref: '', amulet: '' };
  let final;
  for await (const c of engine.compare({ prompt: QUESTION, preference: 'concise', maxTokens: 16 })) {
    if (c.done) final = c;
    else texts[c.method] += c.text;
  }
  assert.deepEqual(Object.keys(final.results).sort(), ['amulet', 'base', 'pref']);
  for (const m of ['base', 'pref', 'amulet']) assert.equal(final.results[m].text, texts[m]);
  assert.equal(new Set(Object.values(texts)).size, 3, JSON.stringify(texts));
  assert.ok(final.timings.decodeMs > 0);
  assert.ok(final.usage.promptTokensPref > final.usage.promptTokensBase);
});

test('bad options are rejected with BAD_OPTION naming the option', async () => {
  const cases = [
    [{ ...QUICK, bogus: 1 }, 'bogus'], // rejected by the wasm
    [{ ...QUICK, temperature: 'hot' }, 'temperature'],
    [{ ...QUICK, maxTokens: 1.5 }, 'maxTokens'],
    [{ ...QUICK, method: 'amulet', preference: '   ' }, 'preference'],
    [{ ...QUICK, method: 'amulet', preference: '' }, 'preference'],
    [{ ...QUICK, method: 'sideways' }, 'method'],
    [{ ...QUICK, stop: [1] }, 'stop'],
    [{ system: '' }, 'messages'],
  ];
  for (const [opts, option] of cases) {
    const e = await thrown(collect(engine.generate(opts)));
    assert.equal(e.code, 'BAD_OPTION', `${option}: ${e.message}`);
    assert.equal(e.option, option, e.message);
  }
  const dup = await thrown(collect(engine.compare({ ...QUICK, method: undefined, methods: ['base', 'base'] })));
  assert.equal(dup.option, 'methods');
  // Still usable.
  assert.ok((await collect(engine.generate({ ...QUICK, maxTokens: 1 }))).final.done);
});

test('bad model bytes -> BAD_MODEL; device webgpu -> NO_WEBGPU', async () => {
  const bad = await thrown(AmuletEngine.load(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])));
  assert.equal(bad.code, 'BAD_MODEL');
  const gguf = await thrown(AmuletEngine.load(new TextEncoder().encode('GGUF not really a model')));
  assert.equal(gguf.code, 'BAD_MODEL');
  const gpu = await thrown(AmuletEngine.load(MODEL_PATH, { device: 'webgpu' }));
  assert.equal(gpu.code, 'NO_WEBGPU');
  assert.match(gpu.message, /navigator\.gpu/);
  const missing = await thrown(AmuletEngine.load('/nonexistent/model.gguf'));
  assert.equal(missing.code, 'IO');
  const opt = await thrown(AmuletEngine.load(MODEL_PATH, { devise: 'cpu' }));
  assert.equal(opt.option, 'devise');
  const simd = await thrown(AmuletEngine.load(MODEL_PATH, { simd: 'relaxed' }));
  assert.equal(simd.code, 'BAD_OPTION');
  assert.equal(simd.option, 'simd');
});

test('an engine loaded from bytes; dispose rejects queued and later calls with DISPOSED', async () => {
  const bytes = new Uint8Array(await readFile(MODEL_PATH));
  const phases = new Set();
  const e2 = await AmuletEngine.load(bytes, { device: 'auto', onProgress: (p) => phases.add(p.phase) });
  assert.deepEqual([...phases], ['load']);
  assert.equal(e2.info.device, 'cpu');

  const running = collect(e2.generate({ ...QUICK, maxTokens: 100, ignoreEos: true }));
  const queued = collect(e2.generate({ ...QUICK, maxTokens: 2 }));
  await new Promise((r) => setTimeout(r, 50));
  const disposed = e2.dispose();
  assert.equal(e2.dispose(), disposed, 'dispose is idempotent');
  const [r1, r2] = await Promise.allSettled([running, queued]);
  assert.equal(r1.status, 'rejected');
  assert.equal(r1.reason.code, 'DISPOSED');
  assert.equal(r2.status, 'rejected');
  assert.equal(r2.reason.code, 'DISPOSED');
  await disposed;
  const later = await thrown(collect(e2.generate({ ...QUICK })));
  assert.equal(later.code, 'DISPOSED');
  assert.ok(e2.disposed);
});
