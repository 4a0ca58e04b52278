// amulet-web: Amulet test-time preference realignment of a small LLM, in the browser.
//
//   import { AmuletEngine } from 'amulet-web';
//   const engine = await AmuletEngine.load(url, { onProgress: (p) => console.log(p.text) });
//   for await (const chunk of engine.generate({ prompt, preference: 'concise' })) { ... }
//
// See README.md for the whole API; index.d.ts holds its types.

export { AmuletEngine } from './engine.js';
export { createWorkerEngine } from './worker-client.js';
export { AmuletError, ERROR_CODES } from './errors.js';
export { initWasm, closedFormStrength, strength, wasmMemoryBytes } from './wasm.js';
export { METHODS } from './options.js';
export { DEFAULT_CACHE_NAME } from './source.js';
export { KNOWN_MODELS, DEFAULT_MODEL_ID, knownModels } from './models.js';
