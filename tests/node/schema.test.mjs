// One request schema: www/src/schema.js lists the generation options; the hand-written types
// (www/src/index.d.ts) and the wasm's parser (crate/src/request.rs, requestOptions()) must name
// the same ones, so that an option added or dropped on one side fails here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

import { AMULET_OPTIONS, REQUEST_OPTIONS, optionsOf } from '../../www/src/schema.js';

const sorted = (names) => [...names].sort();
const INDEX_DTS = fileURLToPath(new URL('../../www/src/index.d.ts', import.meta.url));

// The TypeScript checker over index.d.ts: property types with inherited members (extends).
const program = ts.createProgram([INDEX_DTS], { strict: true, noEmit: true, types: [] });
const checker = program.getTypeChecker();
const exported = checker.getExportsOfModule(checker.getSymbolAtLocation(program.getSourceFile(INDEX_DTS)));

/** name -> type (undefined stripped) of every property of an exported interface. */
function tsProperties(name) {
  const symbol = exported.find((s) => s.name === name);
  assert.ok(symbol, `index.d.ts exports ${name}`);
  const props = checker.getPropertiesOfType(checker.getDeclaredTypeOfSymbol(symbol));
  return new Map(props.map((p) => [p.name, checker.getNonNullableType(checker.getTypeOfSymbol(p))]));
}

const isStringLike = (t) =>
  !!(t.flags & (ts.TypeFlags.String | ts.TypeFlags.StringLiteral)) ||
  (t.isUnion() && t.types.every((u) => u.flags & ts.TypeFlags.StringLiteral));

// What TypeScript type each schema kind is declared with.
const TS_KIND = {
  number: (t) => !!(t.flags & ts.TypeFlags.Number),
  whole: (t) => !!(t.flags & ts.TypeFlags.Number),
  string: isStringLike,
  strings: (t) => checker.typeToString(t) === 'string | string[]',
  boolean: (t) => !!(t.flags & ts.TypeFlags.Boolean),
  messages: (t) => checker.isArrayType(t),
  methods: (t) => checker.isArrayType(t),
};

test('the schema names each option once, with a known kind', () => {
  const names = REQUEST_OPTIONS.map((o) => o.name);
  assert.equal(new Set(names).size, names.length, `a repeated name: ${names}`);
  for (const o of REQUEST_OPTIONS) {
    assert.ok(o.kind in TS_KIND, `${o.name}: unknown kind ${o.kind}`);
    assert.ok(o.only === undefined || o.only === 'generate' || o.only === 'compare', `${o.name}: only ${o.only}`);
  }
});

for (const [iface, call] of [
  ['GenerateOptions', 'generate'],
  ['CompareOptions', 'compare'],
]) {
  test(`index.d.ts ${iface} has the schema's ${call}() options (and signal), with matching types`, () => {
    const props = tsProperties(iface);
    assert.deepEqual(sorted(props.keys()), sorted([...optionsOf(call), 'signal']));
    for (const o of REQUEST_OPTIONS.filter((o) => props.has(o.name))) {
      const t = props.get(o.name);
      assert.ok(TS_KIND[o.kind](t), `${iface}.${o.name}: ${checker.typeToString(t)} is not of kind ${o.kind}`);
    }
  });
}

test('index.d.ts AmuletParams (chat.completions.create) has the schema amulet options', () => {
  assert.deepEqual(sorted(tsProperties('AmuletParams').keys()), sorted(AMULET_OPTIONS));
});

test("the wasm's request parser (crate/src/request.rs) knows the schema's options", async () => {
  // The wasm-bindgen glue itself (www/pkg, built by ./build.sh build): requestOptions is not public API.
  const { default: init, requestOptions } = await import('../../www/pkg/amulet.js');
  await init({ module_or_path: await readFile(new URL('../../www/pkg/amulet_bg.wasm', import.meta.url)) });
  const rust = requestOptions();
  assert.equal(new Set(rust).size, rust.length, `a repeated name: ${rust}`);
  assert.deepEqual(sorted(rust), sorted(REQUEST_OPTIONS.map((o) => o.name)));
});
