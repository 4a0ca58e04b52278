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

/** The header of a llama GGUF with one F32 embedding of d x vocab, and the file's length; a
 * `description` (general.description) makes the header as much longer. */
export function hugeHeader(d, vocab, description = '') {
  const parts = [];
  const u32 = (v) => parts.push(new Uint8Array(new Uint32Array([v]).buffer));
  const u64 = (v) => parts.push(new Uint8Array(new BigUint64Array([BigInt(v)]).buffer));
  const str = (s) => {
    const b = new TextEncoder().encode(s);
    u64(b.length);
    parts.push(b);
  };
  parts.push(new TextEncoder().encode('GGUF'));
  u32(3);
  u64(1);
  u64(description ? 8 : 7);
  str('general.architecture');
  u32(8);
  str('llama');
  for (const [k, v] of [
    ['llama.block_count', 1],
    ['llama.embedding_length', d],
    ['llama.attention.head_count', 8],
    ['llama.feed_forward_length', 4 * d],
    ['llama.context_length', 4096],
  ]) {
    str(k);
    u32(4);
    u32(v);
  }
  str('llama.attention.layer_norm_rms_epsilon');
  u32(6);
  parts.push(new Uint8Array(new Float32Array([1e-5]).buffer));
  if (description) {
    str('general.description');
    u32(8);
    str(description);
  }
  str('token_embd.weight');
  u32(2);
  u64(d);
  u64(vocab);
  u32(0);
  u64(0);
  let len = parts.reduce((n, p) => n + p.length, 0);
  parts.push(new Uint8Array((32 - (len % 32)) % 32));
  const head = Buffer.concat(parts);
  return { head, fileLength: head.length + d * vocab * 4 };
}

/** Grows a wasm memory from JS to the most it can have, so the allocator's next request for
 *  fresh memory fails and Rust traps (out of memory), as on a device with no memory left. */
export function fillMemory(memory) {
  for (let pages = 65536; pages >= 1; pages >>= 1) {
    try {
      memory.grow(pages);
    } catch {
      // Over the maximum: try a smaller step.
    }
  }
}
