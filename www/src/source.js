// A model file, opened from whatever the caller has: a URL, shard URLs, a Blob/File, bytes,
// or in Node a file path. The wasm loader then reads ranges of it (the header, then one
// tensor at a time), so the file need not be held in JS memory: see files.js for where the
// bytes live, download.js for how a download is checked, resumed and hashed.
//
// A model that cannot fit where it would run is refused from its header before any download
// (TOO_LARGE). With `cache`, a download streams into the Cache API, which keeps it only when
// it is whole and checked; a cache that refuses it (the quota) leaves the load uncached, and
// engine.info.cached says so.

import { AmuletError, abortError } from './errors.js';
import { READ_PIECE, blobFile, canReadBlobSync, concat, downloadStore, memoryFile, nodeFile } from './files.js';
import { checkBlob, hasher, parseIntegrity } from './integrity.js';
import { drainInto, openDownload, probe } from './download.js';
import { wasm } from './wasm.js';

export { parseIntegrity };

export const DEFAULT_CACHE_NAME = 'amulet-web-models';

const isNode = typeof process === 'object' && process !== null && typeof process.versions?.node === 'string';

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

/** In Node: file: URLs, and strings without a URL scheme (file paths), as a file: URL. */
async function nodeFileUrl(src) {
  if (!isNode) return null;
  if (src instanceof URL) return src.protocol === 'file:' ? src : null;
  if (src.startsWith('file:')) return new URL(src);
  if (hasScheme(src)) return null;
  const { pathToFileURL } = await import(/* @vite-ignore */ /* webpackIgnore: true */ 'node:url');
  return pathToFileURL(src);
}

function checkSignal(signal) {
  if (signal?.aborted) throw abortError(signal.reason);
}

function absoluteUrl(src) {
  const base = typeof location !== 'undefined' ? location.href : undefined;
  try {
    return new URL(src, base).href;
  } catch {
    throw new AmuletError('IO', `not a valid URL: ${src}`);
  }
}

/**
 * Whether the model would run on the CPU path: device 'cpu', no WebGPU, or 'auto' with no
 * hardware adapter (the loader passes over a software one, crate/src/model/select.rs, by the
 * same signs: a fallback adapter, SwiftShader).
 */
async function runsOnCpu(device) {
  if (device === 'cpu' || !globalThis.navigator?.gpu) return true;
  if (device !== 'auto') return false;
  try {
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) return true;
    const info = adapter.info ?? {};
    return (info.isFallbackAdapter ?? adapter.isFallbackAdapter) === true || /swiftshader/i.test(info.description);
  } catch {
    return false; // not known here: the loader decides
  }
}

/** Refuses a model the CPU path could not hold (wasm32's memory) when it would run there. */
async function checkFits(info, device) {
  if (!info || info.cpuBytes <= info.wasmLimit || !(await runsOnCpu(device))) return;
  const gb = (n) => (n / 1e9).toFixed(1);
  throw new AmuletError(
    'TOO_LARGE',
    `too large: this model needs about ${gb(info.cpuBytes)} GB on the CPU path (weights and two contexts ` +
      `of KV cache); WebAssembly (wasm32) holds at most ${gb(info.wasmLimit)} GB: use WebGPU or a smaller model`,
  );
}

/** The header of an opened file, inspected (null: longer than 64 MB, left to the loader). */
function inspectFile(file) {
  return wasm().inspectFile((o, n) => file.read(o, n), file.size);
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

/** A cached response (checked against `expected` by the digest stored with it), or null. */
async function cachedResponse(cache, url, expected) {
  const hit = await cache?.match(url).catch(() => undefined);
  if (!hit) return null;
  if (expected && hit.headers.get('x-amulet-sha256') !== expected) return null;
  return hit;
}

/** A cached response as a file: a Blob in a Worker, else its bytes. */
async function fromCache(hit, report, signal) {
  const total = Number(hit.headers.get('content-length')) || 0;
  report(0, total, 'Reading from cache');
  if (canReadBlobSync) {
    const blob = await hit.blob();
    report(blob.size, blob.size, 'Reading from cache');
    return blobFile(blob);
  }
  const store = await downloadStore(total);
  const reader = hit.body.getReader();
  let loaded = 0;
  for (;;) {
    checkSignal(signal);
    const { done, value } = await reader.read();
    if (done) break;
    loaded += value.byteLength;
    store.write(value); // which may free `value`
    report(loaded, total, 'Reading from cache');
  }
  return store.finish();
}

// ---------------------------------------------------------------------------------------------

/**
 * One URL -> `{ file, cached, cacheNote }`. With a cache, the download streams into it (kept
 * only whole and checked) and is read back from it; a cache that refuses it is reported and
 * the file downloaded again to where it can be read.
 */
async function fetchOne(url, { report, signal, cache, fetchOptions, expected }) {
  const hit = await cachedResponse(cache, url, expected);
  if (hit) return { file: await fromCache(hit, report, signal), cached: 'hit', cacheNote: '' };
  const open = () =>
    openDownload(url, { fetchOptions, signal, expected, report: (l, t) => report(l, t, 'Downloading') });
  let cacheNote = '';
  if (cache) {
    const download = await open();
    const headers = { 'content-type': 'application/octet-stream' };
    if (download.total > 0) headers['content-length'] = String(download.total);
    if (expected) headers['x-amulet-sha256'] = expected;
    const response = new Response(download.stream, { headers });
    try {
      await cache.put(url, response);
      const stored = await cache.match(url);
      if (stored) return { file: await fromCache(stored, () => {}, signal), cached: 'stored', cacheNote: '' };
      cacheNote = 'the cache did not keep the file';
    } catch (e) {
      checkSignal(signal);
      if (download.failure()) throw download.failure();
      await response.body?.cancel().catch(() => {}); // a cache that refused before reading
      cacheNote =
        e?.name === 'QuotaExceededError' ? 'storage quota exceeded' : `the cache refused the file: ${e?.message ?? e}`;
    }
  }
  const download = await open();
  const store = await downloadStore(download.total);
  try {
    await drainInto(download, store, signal);
  } catch (e) {
    store.discard();
    throw e;
  }
  return { file: store.finish(), cached: cache ? 'not-stored' : 'off', cacheNote };
}

/** Several URLs whose bytes, concatenated, are the file (a file split for hosting). */
async function fetchShards(urls, { report, signal, cache, fetchOptions }) {
  const done = new Array(urls.length).fill(0);
  const totals = new Array(urls.length).fill(0);
  const files = [];
  let cached = 'hit';
  let cacheNote = '';
  for (let i = 0; i < urls.length; i++) {
    const part = (loaded, total, text) => {
      done[i] = loaded;
      totals[i] = total;
      const sum = (a) => a.reduce((x, y) => x + y, 0);
      report(sum(done), sum(totals), `${text} (part ${i + 1}/${urls.length})`);
    };
    const got = await fetchOne(urls[i], { report: part, signal, cache, fetchOptions, expected: null });
    files.push(got.file);
    if (got.cached !== 'hit') cached = got.cached;
    cacheNote ||= got.cacheNote;
  }
  // One file over the parts: reads may straddle a boundary.
  const starts = [];
  let size = 0;
  for (const f of files) {
    starts.push(size);
    size += f.size;
  }
  const read = (o, n) => {
    const pieces = [];
    for (let i = 0; i < files.length && n > 0; i++) {
      const end = starts[i] + files[i].size;
      if (o >= end) continue;
      const take = Math.min(n, end - o);
      pieces.push(files[i].read(o - starts[i], take));
      o += take;
      n -= take;
    }
    return concat(pieces);
  };
  const held = files.every((f) => f.held === 'memory') ? 'memory' : files[0].held;
  const file = { size, held, read, close: () => files.forEach((f) => f.close()) };
  return { file, cached, cacheNote };
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
  const { onProgress = () => {}, signal, device = 'auto', fetchOptions } = opts;
  const expected = parseIntegrity(opts.integrity);
  checkSignal(signal);
  const opened = async (file, extra = {}) => {
    try {
      await checkFits(inspectFile(file), device);
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
    if (expected) await checkBlob(source, expected, sourceName(source) ?? 'the model file', signal);
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
  if (list.length > 1 && expected) {
    throw new AmuletError('BAD_OPTION', 'bad option `integrity`: give it for a single file, not shards', {
      option: 'integrity',
    });
  }
  if (list.length === 1) {
    const fileUrl = await nodeFileUrl(list[0]);
    if (fileUrl) {
      const file = await nodeFile(fileUrl);
      if (expected) {
        const h = hasher(expected);
        for (let o = 0; o < file.size; o += READ_PIECE) h.update(file.read(o, Math.min(READ_PIECE, file.size - o)));
        h.check(fileUrl.pathname);
      }
      return opened(file, { fetched: true });
    }
  }
  const urls = list.map(absoluteUrl);
  const cache = await openCache(opts.cache);
  if (cache) askPersistence();
  if (urls.length === 1 && !(await cachedResponse(cache, urls[0], expected))) {
    await checkFits(await probe(urls[0], fetchOptions, signal), device);
  }
  const got =
    urls.length === 1
      ? await fetchOne(urls[0], { report: onProgress, signal, cache, fetchOptions, expected })
      : await fetchShards(urls, { report: onProgress, signal, cache, fetchOptions });
  if (signal?.aborted) {
    got.file.close();
    throw abortError(signal.reason);
  }
  return opened(got.file, { fetched: true, cached: cache ? got.cached : 'off', cacheNote: got.cacheNote });
}
