// A bundler consumer: `vite build` of tests/vite-app must emit the package's four .wasm builds
// (single-threaded and threaded, each plain simd128 and relaxed SIMD) and its worker as assets,
// referenced from the JS. (Running the app is left to tests/browser.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { build } from 'vite';

const app = fileURLToPath(new URL('../vite-app/', import.meta.url));
const wasmPath = new URL('../../www/pkg/amulet_bg.wasm', import.meta.url);
const otherPaths = ['pkg-threads', 'pkg-relaxed', 'pkg-threads-relaxed'].map(
  (dir) => new URL(`../../www/${dir}/amulet_bg.wasm`, import.meta.url),
);

test('vite build emits the wasm and the worker of amulet-web', async () => {
  const outDir = await mkdtemp(join(tmpdir(), 'amulet-vite-'));
  try {
    await build({
      root: app,
      configFile: join(app, 'vite.config.js'),
      logLevel: 'silent',
      build: { outDir, emptyOutDir: true },
    });
    const assets = await readdir(join(outDir, 'assets'));
    const wasms = assets.filter((f) => f.endsWith('.wasm'));
    assert.equal(wasms.length, 4, `four .wasm assets: ${assets}`);
    const emitted = await Promise.all(wasms.map((f) => readFile(join(outDir, 'assets', f))));
    const single = await readFile(wasmPath);
    const wasm = [wasms[emitted.findIndex((b) => b.equals(single))]];
    assert.ok(wasm[0], 'the single-threaded .wasm is emitted as it is');
    for (const path of otherPaths) {
      const other = await readFile(path);
      assert.ok(
        emitted.some((b) => b.equals(other)),
        `${path.pathname} is emitted as it is`,
      );
    }

    const js = assets.filter((f) => f.endsWith('.js'));
    const sources = Object.fromEntries(
      await Promise.all(js.map(async (f) => [f, await readFile(join(outDir, 'assets', f), 'utf8')])),
    );
    const worker = js.find((f) => f.startsWith('worker'));
    assert.ok(worker, `a worker chunk: ${js}`);
    const main = js.find((f) => sources[f].includes(worker));
    assert.ok(main, 'the main chunk points at the worker chunk');
    assert.match(sources[main], new RegExp(`new URL\\("[^"]*${wasm[0].replace('.', '\\.')}",import\\.meta\\.url\\)`));
    assert.ok(sources[worker].includes(wasm[0]), 'the worker chunk points at the wasm asset');
    assert.match(sources[main], /closedFormStrength|chat\.completion/);

    const html = await readFile(join(outDir, 'index.html'), 'utf8');
    assert.ok(html.includes(`/assets/${main}`), 'index.html loads the main chunk');
  } finally {
    await rm(outDir, { recursive: true, force: true });
  }
});
