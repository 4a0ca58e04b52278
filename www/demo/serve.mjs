#!/usr/bin/env node
// A tiny dependency-free static server for the amulet-web demo.
//
//   node www/demo/serve.mjs [PORT] [--port N] [--isolate] [--models DIR] [--quiet]
//
// Serves the repository's www/ at / (page: /demo/, package: /src/, wasm: /pkg/) and the
// model cache (models/cache/, or --models DIR) at /models/, and the evaluation results
// (docs/eval/, or --results DIR) at /results/, with /results/index.json generated on the fly
// (every subfolder's .svg charts, summary.md and responses.jsonl). Binds 127.0.0.1 only.
// PORT comes from the argument, else $PORT, else 8080; 0 picks a free port. --isolate (or
// AMULET_ISOLATE=1) adds COOP/COEP headers (cross-origin isolation: SharedArrayBuffer).
// Prints "amulet-web demo: http://127.0.0.1:PORT/demo/" once listening.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');

const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.gguf': 'application/octet-stream',
  '.bin': 'application/octet-stream',
  '.ts': 'text/plain; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
  '.jsonl': 'application/x-ndjson; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

function parseArgs(argv) {
  const o = {
    port: process.env.PORT ?? '8080',
    isolate: process.env.AMULET_ISOLATE === '1',
    models: path.join(repo, 'models', 'cache'),
    results: path.join(repo, 'docs', 'eval'),
    quiet: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--port' || a === '-p') o.port = argv[++i];
    else if (a.startsWith('--port=')) o.port = a.slice(7);
    else if (a === '--isolate' || a === '--coop-coep') o.isolate = true;
    else if (a === '--models') o.models = path.resolve(argv[++i]);
    else if (a.startsWith('--models=')) o.models = path.resolve(a.slice(9));
    else if (a === '--results') o.results = path.resolve(argv[++i]);
    else if (a.startsWith('--results=')) o.results = path.resolve(a.slice(10));
    else if (a === '--quiet' || a === '-q') o.quiet = true;
    else if (a === '--help' || a === '-h') {
      console.log(
        'usage: node www/demo/serve.mjs [PORT] [--port N] [--isolate] [--models DIR] [--results DIR] [--quiet]',
      );
      process.exit(0);
    } else if (/^\d+$/.test(a)) o.port = a;
    else {
      console.error(`serve.mjs: unknown argument ${a}`);
      process.exit(64);
    }
  }
  const port = Number(o.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`serve.mjs: bad port ${o.port}`);
    process.exit(64);
  }
  o.port = port;
  return o;
}

/// URL path -> absolute file path inside one of the roots, or null. Lexical: every segment
/// is decoded and checked, dot-segments and hidden names are refused, and the joined path
/// must stay under its root.
export function resolvePath(urlPath, roots) {
  let segments;
  try {
    segments = urlPath.split('/').map(decodeURIComponent);
  } catch {
    return null;
  }
  if (segments.some((s) => s.includes('\0') || s.includes('\\') || s.includes('/') || s.startsWith('.'))) return null;
  segments = segments.filter((s) => s !== '');
  let root = roots.www;
  if (segments[0] === 'models') {
    root = roots.models;
    segments = segments.slice(1);
  } else if (segments[0] === 'results' && roots.results) {
    root = roots.results;
    segments = segments.slice(1);
  }
  const file = path.resolve(root, ...segments);
  if (file !== root && !file.startsWith(root + path.sep)) return null;
  return file;
}

/// The evaluation results under `dir` (docs/eval/): one entry per subfolder (sorted) that
/// holds any of *.svg, summary.md, responses.jsonl; URLs relative to /results/.
export function resultsIndex(dir) {
  const folders = [];
  let names = [];
  try {
    names = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return { exists: false, folders };
  }
  for (const d of names
    .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
    .sort((a, b) => a.name.localeCompare(b.name))) {
    let files = [];
    try {
      files = fs
        .readdirSync(path.join(dir, d.name), { withFileTypes: true })
        .filter((e) => e.isFile() && !e.name.startsWith('.'))
        .map((e) => e.name)
        .sort();
    } catch {
      continue;
    }
    const url = (f) => `/results/${encodeURIComponent(d.name)}/${encodeURIComponent(f)}`;
    const charts = files.filter((f) => f.toLowerCase().endsWith('.svg')).map((f) => ({ name: f, url: url(f) }));
    const summary = files.includes('summary.md') ? url('summary.md') : null;
    const responses = files.includes('responses.jsonl') ? url('responses.jsonl') : null;
    if (charts.length || summary || responses) folders.push({ name: d.name, charts, summary, responses });
  }
  return { exists: true, folders };
}

function send(res, status, body, headers = {}) {
  res.writeHead(status, {
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    ...headers,
  });
  res.end(body);
}

export function createServer({
  isolate = false,
  models = path.join(repo, 'models', 'cache'),
  www = path.join(repo, 'www'),
  results = path.join(repo, 'docs', 'eval'),
} = {}) {
  const roots = { www: path.resolve(www), models: path.resolve(models), results: path.resolve(results) };
  const common = { 'X-Content-Type-Options': 'nosniff', 'Cache-Control': 'no-cache' };
  if (isolate) {
    common['Cross-Origin-Opener-Policy'] = 'same-origin';
    common['Cross-Origin-Embedder-Policy'] = 'require-corp';
    common['Cross-Origin-Resource-Policy'] = 'same-origin';
  }
  return http.createServer((req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      return send(res, 405, 'method not allowed\n', { ...common, Allow: 'GET, HEAD' });
    }
    let pathname;
    try {
      pathname = new URL(req.url, 'http://localhost').pathname;
    } catch {
      return send(res, 400, 'bad request\n', common);
    }
    if (pathname === '/') return send(res, 302, 'see /demo/\n', { ...common, Location: '/demo/' });
    if (pathname === '/results/index.json') {
      const body = JSON.stringify(resultsIndex(roots.results), null, 1) + '\n';
      return send(res, 200, req.method === 'HEAD' ? '' : body, { ...common, 'Content-Type': MIME['.json'] });
    }
    const file = resolvePath(pathname, roots);
    if (!file) return send(res, 404, 'not found\n', common);
    fs.stat(file, (err, st) => {
      if (err) return send(res, 404, 'not found\n', common);
      if (st.isDirectory()) {
        if (!pathname.endsWith('/')) return send(res, 301, 'moved\n', { ...common, Location: pathname + '/' });
        const index = path.join(file, 'index.html');
        return fs.stat(index, (e2, st2) =>
          e2 || !st2.isFile() ? send(res, 404, 'not found\n', common) : stream(index, st2),
        );
      }
      if (!st.isFile()) return send(res, 404, 'not found\n', common);
      stream(file, st);
    });
    function stream(file, st) {
      const type = MIME[path.extname(file).toLowerCase()] ?? 'application/octet-stream';
      res.writeHead(200, {
        ...common,
        'Content-Type': type,
        'Content-Length': st.size,
        'Last-Modified': st.mtime.toUTCString(),
      });
      if (req.method === 'HEAD') return res.end();
      const rs = fs.createReadStream(file);
      rs.on('error', () => res.destroy());
      rs.pipe(res);
    }
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const o = parseArgs(process.argv.slice(2));
  const server = createServer({ isolate: o.isolate, models: o.models, results: o.results });
  server.on('error', (e) => {
    console.error(`serve.mjs: ${e.message}`);
    process.exit(1);
  });
  server.listen(o.port, '127.0.0.1', () => {
    const { port } = server.address();
    console.log(`amulet-web demo: http://127.0.0.1:${port}/demo/${o.isolate ? ' (cross-origin isolated)' : ''}`);
    if (!o.quiet) {
      if (!fs.existsSync(path.join(repo, 'www', 'pkg', 'amulet_bg.wasm')))
        console.log('  note: www/pkg is missing: run ./build.sh build first');
      if (!fs.existsSync(o.models)) console.log(`  note: no model directory at ${o.models}`);
    }
  });
  const stop = () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
