// Shared by the node tests: where the real model is, and small utilities.
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The default real model (models/fetch.sh downloads it); AMULET_MODEL overrides. */
export const MODEL_PATH =
  process.env.AMULET_MODEL ??
  fileURLToPath(new URL('../../models/cache/SmolLM2-135M-Instruct.Q4_1.gguf', import.meta.url));

export function requireModel() {
  if (!existsSync(MODEL_PATH)) {
    throw new Error(`missing prerequisite: ${MODEL_PATH} (run models/fetch.sh, or set AMULET_MODEL)`);
  }
  return MODEL_PATH;
}

export const QUESTION = 'How can I improve my eating habits without compromising on taste?';

/** Runs an async iterable to its end: { chunks, final, text } (text = concatenated chunk texts). */
export async function collect(iterable, onChunk) {
  const chunks = [];
  let final = null;
  for await (const c of iterable) {
    if (c.done) final = c;
    else chunks.push(c);
    onChunk?.(c, chunks.length);
  }
  return { chunks, final, text: chunks.map((c) => c.text).join('') };
}

/** Rejects with the thrown error, or fails when nothing was thrown. */
export async function thrown(promiseOrFn) {
  try {
    await (typeof promiseOrFn === 'function' ? promiseOrFn() : promiseOrFn);
  } catch (e) {
    return e;
  }
  throw new Error('expected an error, nothing was thrown');
}
