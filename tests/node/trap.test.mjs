// A trap inside the wasm (here: out of memory) while a request runs: that request rejects with
// a typed error, and so does every later call, at once; nothing hangs. Its own file (so its
// own process): the trap leaves this realm's wasm unusable. Before, the trap happened inside
// wasm-bindgen's task queue: it escaped as an uncaught exception (in Node the process died;
// in a browser the request's promise never settled).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';

import { AmuletEngine } from 'amulet-web';
import * as glue from '../../www/pkg/amulet.js';
import { collect, fillMemory, requireModel, thrown } from './helpers.mjs';

test(
  'wasm out of memory in a prefill: COMPUTE for it and every later call, no hang, no crash',
  { timeout: 120_000 },
  async () => {
    const bytes = await readFile(requireModel());
    const engine = await AmuletEngine.load(bytes, { device: 'cpu', simd: 'simd128' });
    // The realm's instance (initialised above): its memory grown to the most it can have, from
    // JS, so the allocator's next request for fresh memory fails.
    fillMemory(glue.initSync().memory);
    // A long prompt needs tens of MB of activations the allocator does not have free.
    const prompt = 'The harbour committee met again to discuss the ferry. '.repeat(300);
    const first = await thrown(() => collect(engine.generate({ prompt, maxTokens: 4 })));
    assert.equal(first.code, 'COMPUTE', first.message);
    assert.match(first.message, /wasm instance trapped \(unreachable\), so its state is lost/);
    assert.ok(first.cause instanceof WebAssembly.RuntimeError);
    const t0 = Date.now();
    const later = await thrown(() => collect(engine.generate({ prompt: 'Hi', maxTokens: 2 })));
    assert.equal(later, first, 'a later request gets the same error');
    const load = await thrown(() => AmuletEngine.load(bytes, { device: 'cpu', simd: 'simd128' }));
    assert.equal(load, first, 'so does a new engine in this realm');
    assert.ok(Date.now() - t0 < 1000, 'at once');
    await engine.dispose();
  },
);
