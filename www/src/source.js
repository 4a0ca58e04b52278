// A model file, opened from whatever the caller has (a URL, shard URLs, a Blob/File, bytes,
// or in Node a file path), as something the wasm loader reads ranges of: the header, then
// one tensor at a time.
//
// The file is not held in JS memory where that can be avoided: in a Worker a Blob (a File,
// the Cache API's copy, or the download itself) is read range by range with FileReaderSync,
// and in Node a file is read through its descriptor; so the page holds the weights once, in
// wasm (CPU path) or on the GPU. A page's main thread cannot read a Blob synchronously: there
// the file is held as bytes (use the Worker engine for large models).
//
// A download is checked before it starts (its GGUF header, fetched with a Range request,
// says whether the model can fit: TOO_LARGE otherwise), resumed with Range requests when the
// connection breaks (NETWORK when it cannot be), hashed as it arrives when `integrity` is
// given (INTEGRITY on a mismatch), and put in the Cache API only once it is whole and checked.

import { AmuletError, abortError } from './errors.js';
import { inspectModel, Sha256 } from './wasm.js';

export const DEFAULT_CACHE_NAME = 'amulet-web-models';

const isNode = typeof process === 'object' && process !== null && typeof process.versions?.node === 'string';
/** Dedicated workers can read a Blob synchronously: the file then stays out of JS memory. */
const canReadBlobSync = typeof FileReaderSync === 'function';
/** Bytes of a header asked for before a download (grown when the header is longer). */
const PROBE_BYTES = 4 << 20;
/** Downloaded chunks are folded into a Blob every this many bytes (a Worker keeps no copy). */
const BLOB_FOLD = 32 << 20;
/** Resumptions of a broken download before it fails with NETWORK. */
const RESUMES = 3;

function isBlob(x) {
  return typeof Blob !== 'undefined' && x instanceof Blob;
}

/** A printable name for the model source (used as the OpenAI `model` field fallback). */
export function sourceName(source) {
  const one = Array.isArray(source) ? source[0] : source;
  if (typeof one === 'string' || one instanceof URL) {
    const s = String(one).split(/[?#]/)[0];
    return decodeURIComponent(s.slice(s.lastIndexOf('/') + 1)) || s;
  }
  if (isBlob(one) && typeof one.name === 'string') return one.name;
  return null;
}

const hasScheme = (s) => /^[a-z][a-z0-9+.-]+:/i.test(s) && !/^[a-z]:[\\/]/i.test(s);

function nodeImport(name) {
  return import(/* @vite-ignore */ /* webpackIgnore: true */ name);
}

/** In Node: file: URLs, and strings without a URL scheme (file paths), as a file: URL. */
async function nodeFileUrl(src) {
  if (!isNode) return null;
  if (src instanceof URL) return src.protocol === 'file:' ? src : null;
  if (src.startsWith('file:')) return new URL(src);
  if (hasScheme(src)) return null;
  const { pathToFileURL } = await nodeImport('node:url');
  return pathToFileURL(src);
}

function checkSignal(signal) {
  if (signal?.aborted) throw abortError(signal.reason);
}

// ---------------------------------------------------------------------------------------------
// The opened file: `size`, `read(offset, length)` (synchronous, what wasm calls), `close()`.

function memoryFile(bytes) {
  return { size: bytes.byteLength, held: 'memory', read: (o, n) => bytes.subarray(o, o + n), close() {} };
}

function blobFile(blob) {
  const reader = new FileReaderSync();
  return {
    size: blob.size,
    held: 'blob',
    blob,
    read: (o, n) => new Uint8Array(reader.readAsArrayBuffer(blob.slice(o, o + n))),
    close() {},
  };
}

async function nodeFile(url) {
  const fs = await nodeImport('node:fs');
  let fd;
  try {
    fd = fs.openSync(url, 'r');
  } catch (e) {
    throw new AmuletError('IO', `could not open the model file: ${e.message}`, { cause: e });
  }
  const size = fs.fstatSync(fd).size;
  return {
    size,
    held: 'file',
    read(o, n) {
      const out = new Uint8Array(n);
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

// ---------------------------------------------------------------------------------------------
// Integrity (`sha256-<base64>` as in SRI, or 64 hex digits), hashed as bytes arrive.

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

/** `integrity` -> the expected digest in hex, or null. */
export function parseIntegrity(integrity) {
  if (integrity == null) return null;
  if (typeof integrity === 'string') {
    if (/^[0-9a-f]{64}$/i.test(integrity)) return integrity.toLowerCase();
    const m = /^sha256-([A-Za-z0-9+/]{43}=)$/.exec(integrity.trim());
    if (m) return hex(Uint8Array.from(atob(m[1]), (c) => c.charCodeAt(0)));
  }
  throw new AmuletError(
    'BAD_OPTION',
    'bad option `integrity`: must be "sha256-<base64>" (as in SRI) or 64 hex digits of SHA-256',
    { option: 'integrity' },
  );
}

function hasher(expected) {
  if (!expected) return { update() {}, check() {} };
  const h = new Sha256();
  return {
    update: (bytes) => h.update(bytes),
    check(what) {
      const got = hex(h.digest());
      h.free();
      if (got !== expected) {
        throw new AmuletError('INTEGRITY', `${what} has SHA-256 ${got}, expected ${expected} (integrity)`);
      }
    },
  };
}

/** Hashes a Blob (a cached copy, a File) in pieces. */
async function hashBlob(blob, expected, what, signal) {
  const h = hasher(expected);
  const reader = blob.stream().getReader();
  for (;;) {
    checkSignal(signal);
    const { done, value } = await reader.read();
    if (done) break;
    h.update(value);
  }
  h.check(what);
}

// ---------------------------------------------------------------------------------------------
// Downloads.

/** Collects downloaded chunks: a Blob in a Worker (no copy kept in JS), else one Uint8Array. */
function sink(total) {
  if (canReadBlobSync) {
    const blobs = [];
    let pending = [];
    let pendingBytes = 0;
    const fold = () => {
      if (pending.length) blobs.push(new Blob(pending));
      pending = [];
      pendingBytes = 0;
    };
    return {
      push(chunk) {
        pending.push(chunk);
        pendingBytes += chunk.byteLength;
        if (pendingBytes >= BLOB_FOLD) fold();
      },
      finish() {
        fold();
        return new Blob(blobs, { type: 'application/octet-stream' });
      },
    };
  }
  let out = total > 0 ? new Uint8Array(total) : null;
  const parts = [];
  let loaded = 0;
  return {
    push(chunk) {
      if (out && loaded + chunk.byteLength <= out.byteLength) {
        out.set(chunk, loaded);
      } else {
        // The length was not known, or was wrong (a compressed transfer): collect instead.
        if (out) parts.push(out.subarray(0, loaded));
        out = null;
        parts.push(chunk);
      }
      loaded += chunk.byteLength;
    },
    finish() {
      if (out) return loaded === out.byteLength ? out : out.subarray(0, loaded);
      return concat(parts, loaded);
    },
  };
}

function concat(parts, length = parts.reduce((n, p) => n + p.byteLength, 0)) {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** Reads a response body into `into`, reporting progress; resolves to the bytes read. */
async function drain(body, into, h, onBytes, signal) {
  const reader = body.getReader();
  const onAbort = () => reader.cancel(signal.reason).catch(() => {});
  signal?.addEventListener('abort', onAbort, { once: true });
  let n = 0;
  try {
    for (;;) {
      checkSignal(signal);
      const { done, value } = await reader.read();
      if (done) return n;
      into.push(value);
      h.update(value);
      n += value.byteLength;
      onBytes(value.byteLength);
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}

async function request(url, init, signal) {
  try {
    return await fetch(url, { ...init, signal });
  } catch (e) {
    if (signal?.aborted) throw abortError(signal.reason);
    throw new AmuletError('NETWORK', `could not fetch ${url}: ${e?.message ?? e}`, { cause: e });
  }
}

function httpError(url, res) {
  return new AmuletError('IO', `could not fetch ${url}: HTTP ${res.status} ${res.statusText}`.trim());
}

/** The total size from a 206's Content-Range (`bytes a-b/total`), else NaN. */
const rangeTotal = (res) => Number(/\/(\d+)\s*$/.exec(res.headers.get('content-range') ?? '')?.[1]);

/**
 * The GGUF header of a file on a server, read before its download: `{ fileBytes, cpuBytes,
 * wasmLimit, ... }` from inspectModel, or null when the server gives no size.
 */
async function probe(url, fetchOptions, signal) {
  for (let want = PROBE_BYTES; ; want *= 4) {
    const headers = new Headers(fetchOptions?.headers);
    headers.set('range', `bytes=0-${want - 1}`);
    const res = await request(url, { ...fetchOptions, headers }, signal);
    if (!res.ok) throw httpError(url, res);
    const total = res.status === 206 ? rangeTotal(res) : Number(res.headers.get('content-length'));
    if (!(total > 0) || !res.body) {
      await res.body?.cancel().catch(() => {});
      return null;
    }
    // A server without Range support sends the whole file: read the start, then stop.
    const head = sink(0);
    const reader = res.body.getReader();
    let got = 0;
    while (got < Math.min(want, total)) {
      const { done, value } = await reader.read();
      if (done) break;
      head.push(value);
      got += value.byteLength;
    }
    await reader.cancel().catch(() => {});
    const prefix = head.finish();
    const bytes = prefix instanceof Uint8Array ? prefix : new Uint8Array(await prefix.arrayBuffer());
    const info = inspectModel(bytes.subarray(0, Math.min(bytes.byteLength, total)), total);
    if (info || got >= total) return info;
  }
}

/**
 * Downloads `url` whole, resuming with Range requests when the connection breaks.
 * Resolves to a Blob (in a Worker) or a Uint8Array.
 */
async function download(url, { fetchOptions, signal, report, expected }) {
  let res = await request(url, fetchOptions, signal);
  if (!res.ok) throw httpError(url, res);
  const encoded = res.headers.get('content-encoding');
  const total = encoded && encoded !== 'identity' ? 0 : Number(res.headers.get('content-length')) || 0;
  const into = sink(total);
  const h = hasher(expected);
  let loaded = 0;
  const onBytes = (n) => {
    loaded += n;
    report(loaded, Math.max(total, loaded));
  };
  for (let resumes = 0; ;) {
    try {
      await drain(res.body, into, h, onBytes, signal);
      if (total > 0 && loaded < total) throw new Error(`the body ended at ${loaded} of ${total} bytes`);
      break;
    } catch (e) {
      if (e instanceof AmuletError) throw e;
      checkSignal(signal);
      if (resumes++ >= RESUMES || !(total > 0)) {
        throw new AmuletError('NETWORK', `download of ${url} broke at byte ${loaded}: ${e?.message ?? e}`, {
          cause: e,
        });
      }
      const headers = new Headers(fetchOptions?.headers);
      headers.set('range', `bytes=${loaded}-`);
      const validator = res.headers.get('etag') ?? res.headers.get('last-modified');
      if (validator) headers.set('if-range', validator);
      res = await request(url, { ...fetchOptions, headers }, signal);
      const from = Number(/^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '')?.[1]);
      if (res.status !== 206 || from !== loaded) {
        await res.body?.cancel().catch(() => {});
        throw new AmuletError(
          'NETWORK',
          `download of ${url} broke at byte ${loaded} and the server cannot resume it (HTTP ${res.status})`,
          { cause: e },
        );
      }
    }
  }
  h.check(url);
  return into.finish();
}

// ---------------------------------------------------------------------------------------------
// The Cache API.

async function openCache(cache) {
  if (!cache || typeof caches === 'undefined') return null;
  try {
    return await caches.open(typeof cache === 'string' ? cache : DEFAULT_CACHE_NAME);
  } catch {
    return null; // e.g. opaque origins, private modes: just download
  }
}

/** Asks once that the origin's storage not be evicted under pressure (models are large). */
let persistAsked = false;
function askPersistence() {
  if (persistAsked) return;
  persistAsked = true;
  globalThis.navigator?.storage?.persist?.().catch(() => {});
}

/** Stores a whole, checked file; a refusal (quota, a private mode) is reported, not thrown. */
async function store(cache, url, data, digest) {
  const headers = {
    'content-type': 'application/octet-stream',
    'content-length': String(data.size ?? data.byteLength),
  };
  if (digest) headers['x-amulet-sha256'] = digest;
  try {
    await cache.put(url, new Response(data, { headers }));
    return { cached: 'stored', cacheNote: '' };
  } catch (e) {
    const quota = e?.name === 'QuotaExceededError';
    return {
      cached: 'not-stored',
      cacheNote: quota ? 'storage quota exceeded' : `the cache refused the file: ${e?.message ?? e}`,
    };
  }
}

function absoluteUrl(src) {
  const base = typeof location !== 'undefined' ? location.href : undefined;
  try {
    return new URL(src, base).href;
  } catch {
    throw new AmuletError('IO', `not a valid URL: ${src}`);
  }
}

/** One URL -> `{ data: Blob | Uint8Array, cached, cacheNote }`. */
async function fetchOne(src, { report, signal, cache, fetchOptions, expected }) {
  const url = absoluteUrl(src);
  if (cache) {
    const hit = await cache.match(url).catch(() => undefined);
    const stale = expected && hit && hit.headers.get('x-amulet-sha256') !== expected;
    if (hit && !stale) {
      const total = Number(hit.headers.get('content-length')) || 0;
      if (canReadBlobSync) {
        report(0, total, 'Reading from cache');
        const blob = await hit.blob();
        report(blob.size, blob.size, 'Reading from cache');
        return { data: blob, cached: 'hit', cacheNote: '' };
      }
      const into = sink(total);
      let loaded = 0;
      await drain(hit.body, into, hasher(null), (n) => report((loaded += n), total, 'Reading from cache'), signal);
      return { data: into.finish(), cached: 'hit', cacheNote: '' };
    }
  }
  const data = await download(url, {
    fetchOptions,
    signal,
    expected,
    report: (l, t) => report(l, t, 'Downloading'),
  });
  if (!cache) return { data, cached: 'off', cacheNote: '' };
  return { data, ...(await store(cache, url, data, expected)) };
}

// ---------------------------------------------------------------------------------------------

/** Refuses, before any download, a model the CPU path could not hold (wasm32's memory). */
function checkFits(info, device) {
  if (!info) return;
  const cpuOnly = device === 'cpu' || !globalThis.navigator?.gpu;
  if (cpuOnly && info.cpuBytes > info.wasmLimit) {
    const gb = (n) => (n / 1e9).toFixed(1);
    throw new AmuletError(
      'TOO_LARGE',
      `too large: this model needs about ${gb(info.cpuBytes)} GB on the CPU path (weights and two contexts ` +
        `of KV cache); WebAssembly (wasm32) holds at most ${gb(info.wasmLimit)} GB: use WebGPU or a smaller model`,
    );
  }
}

/** The first bytes of an opened file, inspected (null: the header did not fit PROBE_BYTES x 16). */
function inspectFile(file) {
  for (let want = PROBE_BYTES; want <= 16 * PROBE_BYTES; want *= 4) {
    const n = Math.min(want, file.size);
    const info = inspectModel(file.read(0, n), file.size);
    if (info || n === file.size) return info;
  }
  return null;
}

/**
 * Opens any supported model source for the wasm loader.
 * @param {*} source
 * @param {{ onProgress?: (loaded: number, total: number, text: string) => void, signal?: AbortSignal,
 *           cache?: boolean | string, fetchOptions?: RequestInit, integrity?: string,
 *           device?: string }} opts
 * @returns {Promise<{ file: { size, read, close, held }, fetched: boolean, cached: string, cacheNote: string }>}
 */
export async function openSource(source, opts = {}) {
  const { onProgress = () => {}, signal, device = 'auto' } = opts;
  const expected = parseIntegrity(opts.integrity);
  checkSignal(signal);
  const opened = (file, extra = {}) => {
    try {
      checkFits(inspectFile(file), device);
    } catch (e) {
      file.close();
      throw e;
    }
    return { file, fetched: false, cached: 'off', cacheNote: '', ...extra };
  };
  if (source instanceof ArrayBuffer || ArrayBuffer.isView(source)) {
    const bytes =
      source instanceof ArrayBuffer
        ? new Uint8Array(source)
        : new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
    if (expected) {
      const h = hasher(expected);
      h.update(bytes);
      h.check('the model bytes');
    }
    return opened(memoryFile(bytes));
  }
  if (isBlob(source)) {
    if (expected) await hashBlob(source, expected, sourceName(source) ?? 'the model file', signal);
    if (canReadBlobSync) return opened(blobFile(source), { fetched: true });
    onProgress(0, source.size, 'Reading file');
    const bytes = new Uint8Array(await source.arrayBuffer());
    onProgress(bytes.byteLength, bytes.byteLength, 'Reading file');
    return opened(memoryFile(bytes), { fetched: true });
  }
  const list = Array.isArray(source) ? source : [source];
  if (list.length === 0 || !list.every((s) => typeof s === 'string' || s instanceof URL)) {
    throw new AmuletError(
      'BAD_OPTION',
      'bad option `source`: must be a URL (string or URL), an array of shard URLs, a Blob/File, an ArrayBuffer or a Uint8Array',
      { option: 'source' },
    );
  }
  if (list.length === 1) {
    const fileUrl = await nodeFileUrl(list[0]);
    if (fileUrl) {
      const file = await nodeFile(fileUrl);
      if (expected) {
        const h = hasher(expected);
        for (let o = 0; o < file.size; o += 8 << 20) h.update(file.read(o, Math.min(8 << 20, file.size - o)));
        h.check(fileUrl.pathname);
      }
      return opened(file, { fetched: true });
    }
  }
  const cache = await openCache(opts.cache);
  if (cache) askPersistence();
  if (list.length === 1 && !(cache && (await cache.match(absoluteUrl(list[0])).catch(() => undefined)))) {
    checkFits(await probe(absoluteUrl(list[0]), opts.fetchOptions, signal), device);
  }
  if (list.length > 1 && expected) {
    throw new AmuletError('BAD_OPTION', 'bad option `integrity`: give it for a single file, not shards', {
      option: 'integrity',
    });
  }
  // Progress over all shards: sizes become known shard by shard, so the total grows.
  const done = new Array(list.length).fill(0);
  const totals = new Array(list.length).fill(0);
  const parts = [];
  let cached = 'hit';
  let cacheNote = '';
  for (let i = 0; i < list.length; i++) {
    const report = (loaded, total, text) => {
      done[i] = loaded;
      totals[i] = total;
      const sum = (a) => a.reduce((x, y) => x + y, 0);
      const suffix = list.length > 1 ? ` (part ${i + 1}/${list.length})` : '';
      onProgress(sum(done), sum(totals), text + suffix);
    };
    const got = await fetchOne(list[i], { report, signal, cache, fetchOptions: opts.fetchOptions, expected });
    parts.push(got.data);
    if (got.cached !== 'hit') cached = got.cached;
    cacheNote ||= got.cacheNote;
  }
  let file;
  if (parts.every(isBlob)) file = blobFile(parts.length === 1 ? parts[0] : new Blob(parts));
  else file = memoryFile(concat(parts));
  return opened(file, { fetched: true, cached: cache ? cached : 'off', cacheNote });
}
