// The package's list of known models (www/src/models.js) is generated from models/models.json
// by models/catalogue.mjs: this fails while the generated file is out of date.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

// The file itself, so that the staleness check needs no www/pkg; the facade's re-export is checked below.
import { KNOWN_MODELS, DEFAULT_MODEL_ID, knownModels } from '../../www/src/models.js';
import { MANIFEST, OUTPUT, renderCatalogue } from '../../models/catalogue.mjs';

const manifest = JSON.parse(fs.readFileSync(MANIFEST, 'utf8'));
const cache = fileURLToPath(new URL('../../models/cache/', import.meta.url));

test('www/src/models.js is what models/catalogue.mjs makes of models/models.json', () => {
  const expected = renderCatalogue(manifest);
  const actual = fs.readFileSync(OUTPUT, 'utf8');
  assert.ok(actual === expected, 'www/src/models.js is out of date: run `node models/catalogue.mjs`');
});

test('KNOWN_MODELS lists every manifest entry with its size, sha256 and https source', () => {
  assert.deepEqual(
    KNOWN_MODELS.map((m) => m.id),
    manifest.models.map((m) => m.id),
  );
  for (const [i, m] of KNOWN_MODELS.entries()) {
    const e = manifest.models[i];
    for (const k of ['file', 'parameters', 'architecture', 'quantization', 'bytes', 'sha256', 'license']) {
      assert.equal(m[k], e[k], `${m.id}.${k}`);
    }
    assert.equal(typeof m.name, 'string');
    assert.ok(Number.isInteger(m.bytes) && m.bytes > 0, `${m.id}: bytes`);
    assert.match(m.sha256, /^[0-9a-f]{64}$/, `${m.id}: sha256`);
    const https = e.sources.find((s) => s.startsWith('https://')) ?? null;
    assert.equal(m.url, https, `${m.id}: url`);
    if (m.url) assert.ok(m.url.endsWith(`/${m.file}`), `${m.id}: the url names the file`);
    assert.ok(Object.isFrozen(m), `${m.id} is frozen`);
  }
  assert.ok(Object.isFrozen(KNOWN_MODELS));
  assert.equal(DEFAULT_MODEL_ID, manifest.default);
  assert.ok(KNOWN_MODELS.some((m) => m.id === DEFAULT_MODEL_ID));
});

test('the package facade exports the catalogue', async () => {
  const api = await import('amulet-web');
  assert.equal(api.KNOWN_MODELS, KNOWN_MODELS);
  assert.equal(api.DEFAULT_MODEL_ID, DEFAULT_MODEL_ID);
  assert.equal(api.knownModels, knownModels);
});

test('knownModels() gives fresh copies', () => {
  const a = knownModels();
  a[0].name = 'changed';
  a.pop();
  assert.notEqual(KNOWN_MODELS[0].name, 'changed');
  assert.equal(knownModels().length, KNOWN_MODELS.length);
  assert.deepEqual(knownModels(), KNOWN_MODELS);
});

test('the model files already in models/cache/ have the size the catalogue says', (t) => {
  let seen = 0;
  for (const m of KNOWN_MODELS) {
    const file = `${cache}${m.file}`;
    if (!fs.existsSync(file)) continue;
    seen++;
    assert.equal(fs.statSync(file).size, m.bytes, m.file);
  }
  t.diagnostic(`${seen} of ${KNOWN_MODELS.length} known models are in models/cache/`);
});
