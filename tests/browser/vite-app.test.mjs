// The tiny app in tests/vite-app, built by Vite (from tests/node_modules) and RUN in headless
// Chromium: the bundled package must find its emitted .wasm and worker chunk and generate.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';

import { DEFAULT_MODEL, REPO, launchBrowser, requirePrerequisites } from './helpers.mjs';

const VITE = path.join(REPO, 'tests', 'node_modules', '.bin', 'vite');
requirePrerequisites([[VITE, 'run npm ci in tests/; ./build.sh test does']]);

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.css': 'text/css' };
let dist;
let server;
let browser;

before(async () => {
  dist = fs.mkdtempSync(path.join(os.tmpdir(), 'amulet-vite-run-'));
  const r = spawnSync(
    VITE,
    ['build', '--config', path.join(REPO, 'tests', 'vite-app', 'vite.config.js'), '--outDir', dist, '--emptyOutDir'],
    {
      cwd: path.join(REPO, 'tests'),
      encoding: 'utf8',
    },
  );
  assert.equal(r.status, 0, `vite build failed:\n${r.stdout}\n${r.stderr}`);
  // dist/ at /, the default model at /model.gguf; nothing else.
  server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const file =
      url.pathname === '/model.gguf'
        ? DEFAULT_MODEL
        : path.join(dist, path.normalize(url.pathname === '/' ? '/index.html' : url.pathname));
    if (!file.startsWith(dist) && file !== DEFAULT_MODEL) return res.writeHead(403).end();
    fs.stat(file, (err, st) => {
      if (err || !st.isFile()) return res.writeHead(404).end();
      res.writeHead(200, {
        'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
        'content-length': st.size,
      });
      fs.createReadStream(file).pipe(res);
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await new Promise((r) => (server ? server.close(r) : r()));
  if (dist) fs.rmSync(dist, { recursive: true, force: true });
});

for (const mode of ['main thread', 'worker']) {
  test(`the Vite-built app generates (${mode})`, { timeout: 180_000 }, async () => {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e));
    const { port } = server.address();
    const q = `?model=/model.gguf&maxTokens=6${mode === 'worker' ? '&worker' : ''}`;
    await page.goto(`http://127.0.0.1:${port}/${q}`);
    await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.state), null, {
      timeout: 170_000,
    });
    const result = await page.evaluate(() => window.amuletResult);
    assert.equal(await page.evaluate(() => document.body.dataset.state), 'done', JSON.stringify(result.error));
    assert.ok(Math.abs(result.k - 4.6487) < 1e-3, `k = ${result.k}`);
    assert.equal(result.info.device, 'cpu');
    assert.equal(result.info.architecture, 'llama');
    assert.ok(result.text.trim().length > 0, 'generated text');
    assert.deepEqual(errors, []);
    await page.close();
  });
}
