// Getting the bytes of a GGUF file from whatever the caller has: a URL (streamed fetch with
// progress, optionally kept in the Cache API), several shard URLs, a Blob/File, bytes, or
// (in Node) a file path / file: URL.

import { AmuletError, abortError } from './errors.js';

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

/**
 * Reads a stream to one Uint8Array, reporting progress. With a known total the result is
 * written in place (one copy of the model in memory, not two).
 */
async function readStream(stream, total, report, signal) {
  const reader = stream.getReader();
  let out = total > 0 ? new Uint8Array(total) : null;
  const parts = [];
  let loaded = 0;
  const onAbort = () => reader.cancel(signal.reason).catch(() => {});
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for (;;) {
      checkSignal(signal);
      const { done, value } = await reader.read();
      if (done) break;
      if (out && loaded + value.byteLength <= out.byteLength) {
        out.set(value, loaded);
      } else {
        // Content-Length was wrong (e.g. a compressed transfer): fall back to collecting.
        if (out) {
          parts.push(out.subarray(0, loaded));
          out = null;
        }
        parts.push(value);
      }
      loaded += value.byteLength;
      report(loaded, Math.max(total, loaded));
    }
    checkSignal(signal);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  if (out) return loaded === out.byteLength ? out : out.subarray(0, loaded);
  return concat(parts, loaded);
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

async function readNodeFile(url, report, signal) {
  const fs = await nodeImport('node:fs/promises');
  let fh;
  try {
    fh = await fs.open(url, 'r');
  } catch (e) {
    throw new AmuletError('IO', `could not open the model file: ${e.message}`, { cause: e });
  }
  try {
    const { size } = await fh.stat();
    const out = new Uint8Array(size);
    const chunk = 8 << 20;
    let loaded = 0;
    report(0, size);
    while (loaded < size) {
      checkSignal(signal);
      const { bytesRead } = await fh.read(out, loaded, Math.min(chunk, size - loaded), loaded);
      if (bytesRead === 0) break;
      loaded += bytesRead;
      report(loaded, size);
    }
    return loaded === size ? out : out.subarray(0, loaded);
  } finally {
    await fh.close();
  }
}

async function openCache(cache) {
  if (!cache || typeof caches === 'undefined') return null;
  try {
    return await caches.open(typeof cache === 'string' ? cache : DEFAULT_CACHE_NAME);
  } catch {
    return null; // e.g. opaque origins, private modes: just download
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

/**
 * One URL -> bytes. `report(loaded, total, text)` is called as bytes arrive.
 * With a Cache, a hit is read from it; a miss is downloaded and then stored.
 */
async function readUrl(src, { report, signal, cache, fetchOptions }) {
  const fileUrl = await nodeFileUrl(src);
  if (fileUrl) return readNodeFile(fileUrl, (l, t) => report(l, t, 'Reading file'), signal);
  const url = absoluteUrl(src);
  if (cache) {
    const hit = await cache.match(url).catch(() => undefined);
    if (hit && hit.body) {
      const total = Number(hit.headers.get('content-length')) || 0;
      return readStream(hit.body, total, (l, t) => report(l, t, 'Reading from cache'), signal);
    }
  }
  let res;
  try {
    res = await fetch(url, { ...fetchOptions, signal });
  } catch (e) {
    if (signal?.aborted) throw abortError(signal.reason);
    throw new AmuletError('IO', `could not fetch ${url}: ${e?.message ?? e}`, { cause: e });
  }
  if (!res.ok) throw new AmuletError('IO', `could not fetch ${url}: HTTP ${res.status} ${res.statusText}`.trim());
  const encoded = res.headers.get('content-encoding');
  const total = encoded && encoded !== 'identity' ? 0 : Number(res.headers.get('content-length')) || 0;
  let bytes;
  if (res.body) {
    try {
      bytes = await readStream(res.body, total, (l, t) => report(l, t, 'Downloading'), signal);
    } catch (e) {
      if (e instanceof AmuletError) throw e;
      throw new AmuletError('IO', `download of ${url} failed: ${e?.message ?? e}`, { cause: e });
    }
  } else {
    bytes = new Uint8Array(await res.arrayBuffer());
    report(bytes.byteLength, bytes.byteLength, 'Downloading');
  }
  if (cache) {
    try {
      const headers = { 'content-type': 'application/octet-stream', 'content-length': String(bytes.byteLength) };
      await cache.put(url, new Response(bytes, { headers }));
    } catch {
      // Quota or a cache that refuses: the model still loads, it is just not kept.
    }
  }
  return bytes;
}

/**
 * Resolves any supported model source to one Uint8Array.
 * @param {*} source
 * @param {{ onProgress?: (loaded: number, total: number, text: string) => void,
 *           signal?: AbortSignal, cache?: boolean | string, fetchOptions?: RequestInit }} opts
 * @returns {Promise<{ bytes: Uint8Array, fetched: boolean }>}
 */
export async function readSource(source, opts = {}) {
  const { onProgress = () => {}, signal } = opts;
  checkSignal(signal);
  if (source instanceof Uint8Array) return { bytes: source, fetched: false };
  if (source instanceof ArrayBuffer) return { bytes: new Uint8Array(source), fetched: false };
  if (ArrayBuffer.isView(source)) {
    return { bytes: new Uint8Array(source.buffer, source.byteOffset, source.byteLength), fetched: false };
  }
  if (isBlob(source)) {
    const bytes = await readStream(source.stream(), source.size, (l, t) => onProgress(l, t, 'Reading file'), signal);
    return { bytes, fetched: true };
  }
  const list = Array.isArray(source) ? source : [source];
  if (list.length === 0 || !list.every((s) => typeof s === 'string' || s instanceof URL)) {
    throw new AmuletError(
      'BAD_OPTION',
      'bad option `source`: must be a URL (string or URL), an array of shard URLs, a Blob/File, an ArrayBuffer or a Uint8Array',
      { option: 'source' },
    );
  }
  const cache = await openCache(opts.cache);
  // Progress over all shards: sizes become known shard by shard, so the total grows.
  const done = new Array(list.length).fill(0);
  const totals = new Array(list.length).fill(0);
  const parts = [];
  for (let i = 0; i < list.length; i++) {
    const report = (loaded, total, text) => {
      done[i] = loaded;
      totals[i] = total;
      const sum = (a) => a.reduce((x, y) => x + y, 0);
      const suffix = list.length > 1 ? ` (part ${i + 1}/${list.length})` : '';
      onProgress(sum(done), sum(totals), text + suffix);
    };
    parts.push(await readUrl(list[i], { report, signal, cache, fetchOptions: opts.fetchOptions }));
  }
  return { bytes: concat(parts), fetched: true };
}
