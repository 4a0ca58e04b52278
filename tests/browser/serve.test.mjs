// www/demo/serve.mjs: MIME types, redirects, the /models/ mount, COOP/COEP, and no way out
// of its two roots. Plain HTTP, no browser.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import http from 'node:http';
import { REPO, startServer } from './helpers.mjs';

let server;
let isolated;
let models;
let parent;

/** A raw GET: the path goes on the wire exactly as given (no client-side normalisation). */
function get(port, rawPath, method = 'GET') {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: rawPath, method }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

before(async () => {
  parent = fs.mkdtempSync(path.join(os.tmpdir(), 'amulet-serve-'));
  models = path.join(parent, 'models');
  fs.mkdirSync(models);
  fs.writeFileSync(path.join(parent, 'secret.txt'), 'secret outside the model root');
  fs.writeFileSync(path.join(models, 'tiny.gguf'), 'GGUF-not-really');
  server = await startServer(['--models', models]);
  isolated = await startServer(['--isolate', '--models', models]);
});

after(async () => {
  await server?.close();
  await isolated?.close();
  fs.rmSync(parent, { recursive: true, force: true });
});

test('serves the page, the package and the wasm with the right MIME types', async () => {
  const page = await get(server.port, '/demo/');
  assert.equal(page.status, 200);
  assert.match(page.headers['content-type'], /^text\/html/);
  assert.match(page.body.toString(), /<script type="module" src="demo\.js">/);
  const js = await get(server.port, '/demo/demo.js');
  assert.match(js.headers['content-type'], /^text\/javascript/);
  const css = await get(server.port, '/demo/demo.css');
  assert.match(css.headers['content-type'], /^text\/css/);
  const glue = await get(server.port, '/pkg/amulet.js', 'HEAD');
  assert.equal(glue.status, 200);
  assert.match(glue.headers['content-type'], /^text\/javascript/);
  const wasm = await get(server.port, '/pkg/amulet_bg.wasm', 'HEAD');
  assert.equal(wasm.status, 200);
  assert.equal(wasm.headers['content-type'], 'application/wasm');
  assert.ok(Number(wasm.headers['content-length']) > 1000);
  assert.equal(wasm.headers['x-content-type-options'], 'nosniff');
});

test('redirects / to /demo/ and directories to their slash form', async () => {
  const root = await get(server.port, '/');
  assert.equal(root.status, 302);
  assert.equal(root.headers.location, '/demo/');
  const dir = await get(server.port, '/demo');
  assert.equal(dir.status, 301);
  assert.equal(dir.headers.location, '/demo/');
});

test('mounts the model directory at /models/ with a Content-Length (download progress)', async () => {
  const r = await get(server.port, '/models/tiny.gguf');
  assert.equal(r.status, 200);
  assert.equal(r.headers['content-type'], 'application/octet-stream');
  assert.equal(r.headers['content-length'], String('GGUF-not-really'.length));
  assert.equal(r.body.toString(), 'GGUF-not-really');
  assert.equal((await get(server.port, '/models/missing.gguf')).status, 404);
});

test('path traversal is impossible', async () => {
  // Files just outside the two roots: the repository's own files, and a secret next to the
  // temporary model directory.
  const forbidden = [
    path.join(REPO, 'README.md'),
    path.join(REPO, 'Cargo.toml'),
    path.join(REPO, 'models', 'fetch.sh'),
    path.join(REPO, '.gitignore'),
    path.join(parent, 'secret.txt'),
    '/etc/passwd',
  ]
    .filter((f) => fs.existsSync(f))
    .map((f) => fs.readFileSync(f));
  const attempts = [
    '/../README.md',
    '/../../README.md',
    '/demo/../../README.md',
    '/%2e%2e/README.md',
    '/%2E%2E/%2E%2E/Cargo.toml',
    '/pkg/..%2f..%2fREADME.md',
    '/pkg/%2e%2e%2f%2e%2e%2fREADME.md',
    '/models/../../README.md',
    '/models/..%2f..%2fREADME.md',
    '/models/%2e%2e/fetch.sh',
    '/models/..%5c..%5cREADME.md',
    '/models/../secret.txt',
    '/models/%2e%2e/secret.txt',
    '/models/..%2fsecret.txt',
    '/models/%2e%2e%2fsecret.txt',
    '/models/..%5csecret.txt',
    '/models/....//secret.txt',
    '/demo/serve.mjs%00.html',
    '/..',
    '//etc/passwd',
    '/%2fetc%2fpasswd',
    '/models/%2fetc%2fpasswd',
    '/.gitignore',
    '/models/.gitignore',
    '/%',
  ];
  for (const p of attempts) {
    const r = await get(server.port, p);
    assert.ok(r.status !== 500, `${p} answered 500`);
    for (const f of forbidden) assert.ok(!r.body.equals(f), `${p} served a file outside the roots (${r.status})`);
  }
  // Encoded separators, NUL and hidden names are refused outright.
  for (const p of [
    '/models/..%2fsecret.txt',
    '/models/%2e%2e%2fsecret.txt',
    '/models/..%5csecret.txt',
    '/demo/serve.mjs%00.html',
    '/.gitignore',
    '/%',
  ]) {
    assert.equal((await get(server.port, p)).status, 404, p);
  }
});

test('only GET and HEAD', async () => {
  const r = await get(server.port, '/demo/', 'POST');
  assert.equal(r.status, 405);
});

test('--isolate adds COOP/COEP (cross-origin isolation)', async () => {
  const plain = await get(server.port, '/demo/');
  assert.equal(plain.headers['cross-origin-opener-policy'], undefined);
  const r = await get(isolated.port, '/demo/');
  assert.equal(r.headers['cross-origin-opener-policy'], 'same-origin');
  assert.equal(r.headers['cross-origin-embedder-policy'], 'require-corp');
  const w = await get(isolated.port, '/pkg/amulet_bg.wasm', 'HEAD');
  assert.equal(w.headers['cross-origin-embedder-policy'], 'require-corp');
});
