// The generation options of generate() and compare(): one list. options.js derives its type
// checks from it and openai.js the keys of its `amulet` extension; tests/node/schema.test.mjs
// checks that index.d.ts (GenerateOptions, CompareOptions, AmuletParams) and the wasm's own
// parser (crate/src/request.rs, exported as requestOptions()) name the same options.
//
// kind: what prepareRequest accepts (null and undefined always pass: the engine's default)
//   'number'   a finite number           'whole'    a whole number >= 0
//   'string'   a string                  'strings'  a string or an array of strings
//   'boolean'  a boolean                 'messages' a non-empty array of { role, content }
//   'methods'  a non-empty array of distinct method names (compare() only)
// only: the one call that takes it ('generate' or 'compare'); absent: both.
// amulet: also accepted in chat.completions.create's `amulet: { ... }`.
// (`signal`, an AbortSignal, is a call option: held back, never part of the wasm request.)
//
// The order is the order of the checks within a kind and of the `amulet` keys in error messages.

export const REQUEST_OPTIONS = Object.freeze(
  [
    { name: 'messages', kind: 'messages' },
    { name: 'prompt', kind: 'string' },
    { name: 'preference', kind: 'string', amulet: true },
    { name: 'method', kind: 'string', only: 'generate', amulet: true },
    { name: 'methods', kind: 'methods', only: 'compare' },
    { name: 'alpha', kind: 'number', amulet: true },
    { name: 'lambda', kind: 'number', amulet: true },
    { name: 'eta', kind: 'number', amulet: true },
    { name: 'iterations', kind: 'whole', amulet: true },
    { name: 'ratio', kind: 'number', amulet: true },
    { name: 'placement', kind: 'string', amulet: true },
    { name: 'game', kind: 'string', amulet: true },
    { name: 'system', kind: 'string', amulet: true },
    { name: 'maxTokens', kind: 'whole' },
    { name: 'temperature', kind: 'number' },
    { name: 'topP', kind: 'number' },
    { name: 'topK', kind: 'whole' },
    { name: 'seed', kind: 'whole' },
    { name: 'topLogprobs', kind: 'whole' },
    { name: 'stop', kind: 'strings' },
    { name: 'ignoreEos', kind: 'boolean' },
    { name: 'contextOverflow', kind: 'string', amulet: true },
  ].map((o) => Object.freeze(o)),
);

/** The names of the options of one kind, in list order. */
export function optionsOfKind(kind) {
  return REQUEST_OPTIONS.filter((o) => o.kind === kind).map((o) => o.name);
}

/** The names of the options that generate() ('generate') or compare() ('compare') takes. */
export function optionsOf(call) {
  return REQUEST_OPTIONS.filter((o) => !o.only || o.only === call).map((o) => o.name);
}

/** The keys of chat.completions.create's `amulet` extension. */
export const AMULET_OPTIONS = Object.freeze(REQUEST_OPTIONS.filter((o) => o.amulet).map((o) => o.name));
