// Opened model files: what the wasm loader reads ranges of, synchronously (`read(offset,
// length)` -> Uint8Array), wherever the bytes are. Each has `size`, `held` (where the bytes
// live: 'memory' | 'blob' | 'file' | 'opfs') and `close()`.
//
// A range is valid until the next read of the same file: every reader copies it out at once
// (the wasm loader into its own memory). So the readers reuse one buffer, or free the last
// one, instead of leaving each range to the collector: loading a 1 GB model read that way
// left hundreds of MB of dead buffers in the Worker's heap.
//
// Only 'memory' keeps the file in JS memory. A Worker reads a Blob with FileReaderSync, and a
// download it has no Blob for goes to the origin's private file system (OPFS), which a
// Worker reads and writes synchronously: a Blob assembled from a large download lives in the
// browser's blob storage, which refuses reads past its limits.

import { AmuletError } from './errors.js';

/** Dedicated workers can read a Blob synchronously. */
export const canReadBlobSync = typeof FileReaderSync === 'function';
/** ... and own OPFS files with synchronous reads and writes. */
export const hasOpfs =
  typeof FileSystemSyncAccessHandle === 'function' && typeof globalThis.navigator?.storage?.getDirectory === 'function';

export function memoryFile(bytes) {
  return { size: bytes.byteLength, held: 'memory', read: (o, n) => bytes.subarray(o, o + n), close() {} };
}

/** A Blob (a File, the Cache API's copy) read range by range; Workers only. */
export function blobFile(blob) {
  const reader = new FileReaderSync();
  let last = null;
  // FileReaderSync makes a new buffer each time: detaching the last one frees it now.
  const freeLast = () => {
    last?.transfer?.(0);
    last = null;
  };
  return {
    size: blob.size,
    held: 'blob',
    read(o, n) {
      freeLast();
      try {
        last = reader.readAsArrayBuffer(blob.slice(o, o + n));
        return new Uint8Array(last);
      } catch (e) {
        throw new AmuletError('IO', `could not read bytes ${o}..${o + n} of the model: ${e?.message ?? e}`, {
          cause: e,
        });
      }
    },
    close: freeLast,
  };
}

/** Frees a download's chunk once copied, when it is a whole buffer of its own. */
export function freeChunk(chunk) {
  if (chunk.byteOffset === 0 && chunk.byteLength === chunk.buffer.byteLength) chunk.buffer.transfer?.(0);
}

/** The wasm loader's largest read (crate/src/web.rs: READ_PIECE), and other readers' piece. */
export const READ_PIECE = 2 << 20;

/** `take(n)`: n bytes of a buffer kept for the next call, up to the loader's reads (a longer
 * one gets a buffer of its own). */
function scratch() {
  let buf = new Uint8Array(0);
  return (n) => {
    if (n > READ_PIECE) return new Uint8Array(n);
    if (buf.byteLength < n) buf = new Uint8Array(READ_PIECE);
    return buf.subarray(0, n);
  };
}

function nodeImport(name) {
  return import(/* @vite-ignore */ /* webpackIgnore: true */ name);
}

/** A local file in Node, read through its descriptor. */
export async function nodeFile(url) {
  const fs = await nodeImport('node:fs');
  let fd;
  try {
    fd = fs.openSync(url, 'r');
  } catch (e) {
    throw new AmuletError('IO', `could not open the model file: ${e.message}`, { cause: e });
  }
  const size = fs.fstatSync(fd).size;
  const take = scratch();
  return {
    size,
    held: 'file',
    read(o, n) {
      const out = take(n);
      let at = 0;
      while (at < n) {
        const got = fs.readSync(fd, out, at, n - at, o + at);
        if (got === 0) throw new AmuletError('IO', `the model file ended at byte ${o + at} of ${size}`);
        at += got;
      }
      return out;
    },
    close() {
      if (fd !== undefined) fs.closeSync(fd);
      fd = undefined;
    },
  };
}

/**
 * Where a download goes when there is no Blob to read: `write(chunk)` appends, `finish()`
 * returns the opened file, `discard()` drops what was written. An OPFS file in a Worker
 * (removed when the file is closed), else one Uint8Array (`total` bytes when known). A chunk
 * written is freed once copied: read its length before.
 */
export async function downloadStore(total) {
  if (hasOpfs) {
    try {
      return await opfsStore();
    } catch {
      // No OPFS here after all (a private mode, a storage error): hold the bytes.
    }
  }
  return memoryStore(total);
}

function memoryStore(total) {
  let out = total > 0 ? new Uint8Array(total) : null;
  const parts = [];
  let loaded = 0;
  return {
    write(chunk) {
      const n = chunk.byteLength;
      if (out && loaded + n <= out.byteLength) {
        out.set(chunk, loaded);
        freeChunk(chunk);
      } else {
        // The length was not known, or was wrong (a compressed transfer): collect instead.
        if (out) parts.push(out.subarray(0, loaded));
        out = null;
        parts.push(chunk);
      }
      loaded += n;
    },
    finish() {
      if (out) return memoryFile(loaded === out.byteLength ? out : out.subarray(0, loaded));
      return memoryFile(concat(parts, loaded));
    },
    discard() {
      out = null;
      parts.length = 0;
    },
  };
}

export function concat(parts, length = parts.reduce((n, p) => n + p.byteLength, 0)) {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

const OPFS_DIR = 'amulet-web-downloads';

async function opfsStore() {
  const root = await navigator.storage.getDirectory();
  const dir = await root.getDirectoryHandle(OPFS_DIR, { create: true });
  // Files left by an earlier page that did not close them: gone unless still open elsewhere.
  for await (const name of dir.keys()) await dir.removeEntry(name).catch(() => {});
  const name = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}.gguf`;
  const handle = await (await dir.getFileHandle(name, { create: true })).createSyncAccessHandle();
  let size = 0;
  const remove = () => {
    handle.close();
    dir.removeEntry(name).catch(() => {});
  };
  return {
    write(chunk) {
      const n = handle.write(chunk, { at: size });
      if (n !== chunk.byteLength)
        throw new AmuletError('IO', `the browser's file storage took ${n} of ${chunk.byteLength} bytes`);
      size += n;
      freeChunk(chunk);
    },
    finish() {
      handle.flush();
      const take = scratch();
      return {
        size,
        held: 'opfs',
        read(o, n) {
          const out = take(n);
          const got = handle.read(out, { at: o });
          if (got !== n) throw new AmuletError('IO', `read ${got} of ${n} bytes at ${o} from the stored download`);
          return out;
        },
        close: remove,
      };
    },
    discard: remove,
  };
}
