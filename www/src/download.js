// Downloads of model files: the header first (a Range request), then the whole file as one
// stream that resumes with Range requests when the connection breaks, is hashed as it
// arrives (`integrity`), and errors at its end when it came short or hashed wrong, so that
// whatever consumes it (the Cache API, a file) never keeps a partial or wrong file.

import { AmuletError, abortError } from './errors.js';
import { hasher } from './integrity.js';
import { wasm } from './wasm.js';

/** Bytes of a header asked for before a download (grown when the header is longer). */
const PROBE_BYTES = 4 << 20;
/** Resumptions of a broken download before it fails with NETWORK. */
const RESUMES = 3;

function checkSignal(signal) {
  if (signal?.aborted) throw abortError(signal.reason);
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

function withRange(fetchOptions, range, validator) {
  const headers = new Headers(fetchOptions?.headers);
  headers.set('range', range);
  if (validator) headers.set('if-range', validator);
  return { ...fetchOptions, headers };
}

/** The total size from a 206's Content-Range (`bytes a-b/total`), else NaN. */
const rangeTotal = (res) => Number(/\/(\d+)\s*$/.exec(res.headers.get('content-range') ?? '')?.[1]);

/**
 * What the file on a server will need, from its GGUF header, before the download:
 * inspectModel's `{ fileBytes, cpuBytes, wasmLimit, ... }`, or null when the server gives
 * no size or the header could not be read. A server without Range support sends the whole
 * file: the start is read, the rest cancelled.
 */
export async function probe(url, fetchOptions, signal) {
  for (let want = PROBE_BYTES; ; want *= 4) {
    const res = await request(url, withRange(fetchOptions, `bytes=0-${want - 1}`), signal);
    if (!res.ok) throw httpError(url, res);
    const total = res.status === 206 ? rangeTotal(res) : Number(res.headers.get('content-length'));
    if (!(total > 0) || !res.body) {
      await res.body?.cancel().catch(() => {});
      return null;
    }
    const reader = res.body.getReader();
    const parts = [];
    let got = 0;
    try {
      while (got < Math.min(want, total)) {
        const { done, value } = await reader.read();
        if (done) break;
        parts.push(value);
        got += value.byteLength;
      }
    } catch {
      // The header could not be read (a connection cut): the download, resumable or not, and
      // the loader's own check decide.
      checkSignal(signal);
      return null;
    }
    await reader.cancel().catch(() => {});
    const prefix = new Uint8Array(got);
    parts.reduce((at, p) => (prefix.set(p, at), at + p.byteLength), 0);
    const info = wasm().inspectModel(prefix.subarray(0, Math.min(got, total)), total);
    if (info || got >= total) return info;
  }
}

/**
 * Opens the download of `url`: `{ total, stream, failure() }`. `stream` gives the whole file;
 * a broken connection is resumed (Range, If-Range) up to RESUMES times; the stream errors with
 * NETWORK when it cannot be, with INTEGRITY when the bytes do not hash to `expected`, and when
 * it came short. `failure()` is that error (a consumer such as cache.put may hide it).
 * `report(loaded, total)` as bytes arrive.
 */
export async function openDownload(url, { fetchOptions, signal, expected, report }) {
  let res = await request(url, fetchOptions, signal);
  if (!res.ok) throw httpError(url, res);
  const encoded = res.headers.get('content-encoding');
  const total = encoded && encoded !== 'identity' ? 0 : Number(res.headers.get('content-length')) || 0;
  const validator = res.headers.get('etag') ?? res.headers.get('last-modified');
  const h = hasher(expected);
  let reader = res.body.getReader();
  let loaded = 0;
  let resumes = 0;
  let failure = null;
  const fail = (controller, e) => {
    failure = e;
    controller.error(e);
  };
  const resume = async (cause) => {
    if (resumes++ >= RESUMES || !(total > 0)) {
      throw new AmuletError('NETWORK', `download of ${url} broke at byte ${loaded}: ${cause?.message ?? cause}`, {
        cause,
      });
    }
    res = await request(url, withRange(fetchOptions, `bytes=${loaded}-`, validator), signal);
    const from = Number(/^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '')?.[1]);
    if (res.status !== 206 || from !== loaded) {
      await res.body?.cancel().catch(() => {});
      throw new AmuletError(
        'NETWORK',
        `download of ${url} broke at byte ${loaded} and the server cannot resume it (HTTP ${res.status})`,
        { cause },
      );
    }
    reader = res.body.getReader();
  };
  const stream = new ReadableStream(
    {
      async pull(controller) {
        for (;;) {
          try {
            checkSignal(signal);
            let chunk;
            try {
              chunk = await reader.read();
            } catch (e) {
              checkSignal(signal);
              await resume(e);
              continue;
            }
            if (chunk.done) {
              if (total > 0 && loaded < total) {
                await resume(new Error(`the body ended at ${loaded} of ${total} bytes`));
                continue;
              }
              h.check(url);
              controller.close();
              return;
            }
            loaded += chunk.value.byteLength;
            h.update(chunk.value);
            report(loaded, Math.max(total, loaded));
            controller.enqueue(chunk.value);
            return;
          } catch (e) {
            fail(controller, e instanceof AmuletError ? e : new AmuletError('NETWORK', String(e?.message ?? e)));
            return;
          }
        }
      },
      cancel(reason) {
        return reader.cancel(reason).catch(() => {});
      },
    },
    { highWaterMark: 0 },
  );
  return { total, stream, failure: () => failure };
}

/** Drains a download into `store` (downloadStore's write). */
export async function drainInto(download, store, signal) {
  const reader = download.stream.getReader();
  const onAbort = () => reader.cancel(signal.reason).catch(() => {});
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for (;;) {
      let chunk;
      try {
        chunk = await reader.read();
      } catch (e) {
        checkSignal(signal);
        throw download.failure() ?? e;
      }
      // An abort cancels the reader, which then reads as done: not a whole file.
      checkSignal(signal);
      if (chunk.done) return;
      store.write(chunk.value);
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}
