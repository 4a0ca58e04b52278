// A trap inside the wasm (out of memory) while a model is built, in Node: the load rejects with
// a typed error, and so does every later load in this realm, at once. Its own file (so its own
// process): the trap leaves this realm's wasm unusable. Before, the CPU build ran inside
// wasm-bindgen's task queue, where Node has no handler for a trap: the process died.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';

import { AmuletEngine } from 'amulet-web';
import * as glue from '../../www/pkg/amulet.js';
import { fillMemory, requireModel, thrown } from './helpers.mjs';

test(
  'wasm out of memory inside a model build: COMPUTE for that load and every later one, no crash',
  {
    timeout: 120_000,
  },
  async () => {
    const bytes = await readFile(requireModel());
    let full = false;
    const onProgress = (p) => {
      // Called from inside the build, once its first layer is done: the realm's memory grown
      // from JS to the most it can have, so the allocator's next request for fresh memory fails.
      if (p.phase !== 'load' || p.loaded < 1 || full) return;
      full = true;
      fillMemory(glue.initSync().memory);
    };
    const first = await thrown(() => AmuletEngine.load(bytes, { device: 'cpu', simd: 'simd128', onProgress }));
    assert.ok(full, 'the memory was filled inside the build');
    assert.equal(first.code, 'COMPUTE', first.message);
    assert.match(first.message, /wasm instance trapped \(unreachable\), so its state is lost/);
    assert.ok(first.cause instanceof WebAssembly.RuntimeError);
    const t0 = Date.now();
    const again = await thrown(() => AmuletEngine.load(bytes, { device: 'cpu', simd: 'simd128' }));
    assert.equal(again, first, 'a later load gets the same error');
    assert.ok(Date.now() - t0 < 1000, 'at once');
  },
);
