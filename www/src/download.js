// Downloads of model files: the header first (a Range request), then the whole file as one
// stream that resumes with Range requests when the connection breaks, is hashed as it
// arrives (`integrity`), and errors at its end when it came short or hashed wrong, so that
// whatever consumes it (the Cache API, a file) never keeps a partial or wrong file.

import { AmuletError, abortError } from './errors.js';
import { freeChunk } from './files.js';
import { hasher } from './integrity.js';
import { wasm } from './wasm.js';

/** Bytes of a header asked for first (doubled, asking only for the rest, while it is longer). */
const PROBE_BYTES = 4 << 20;
/** The longest header probed (as `inspectFile`): a longer one is not held in wasm memory here. */
const PROBE_MAX = 64 << 20;
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
/** The first byte of a 206's Content-Range, else NaN. */
const rangeStart = (res) => Number(/^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '')?.[1]);

/**
 * `res`'s body pushed into `header` (a wasm HeaderProbe) until it holds `upto` bytes or the body
 * ends, the rest cancelled. Chunks go to wasm memory as they arrive and are freed at once: the
 * Worker's heap held the whole header and a copy of it each time a longer one was asked for.
 */
async function gather(res, header, upto) {
  const reader = res.body.getReader();
  try {
    while (header.length < upto) {
      const { done, value } = await reader.read();
      if (done) break;
      header.push(value.subarray(0, Math.min(value.byteLength, upto - header.length)));
      freeChunk(value);
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

/**
 * What the file on a server will need, from its GGUF header, before the download:
 * inspectModel's `{ fileBytes, cpuBytes, wasmLimit, ... }`, or null when the server gives
 * no size or the header could not be read. A longer header is read on with a Range request
 * for what is missing; a server without Range support sends the whole file: its start is
 * read, the rest cancelled.
 */
export async function probe(url, fetchOptions, signal) {
  const header = new (wasm().HeaderProbe)();
  try {
    for (let want = PROBE_BYTES; want <= PROBE_MAX; want *= 2) {
      const got = header.length;
      const res = await request(url, withRange(fetchOptions, `bytes=${got}-${want - 1}`), signal);
      if (!res.ok) throw httpError(url, res);
      const partial = res.status === 206;
      const from = partial ? rangeStart(res) : 0;
      const total = partial ? rangeTotal(res) : Number(res.headers.get('content-length'));
      if (!(total > 0) || !res.body || (from !== got && from !== 0)) {
        await res.body?.cancel().catch(() => {});
        return null;
      }
      if (from === 0) header.clear();
      const upto = Math.min(want, total);
      try {
        await gather(res, header, upto);
      } catch {
        // The header could not be read (a connection cut): the download, resumable or not, and
        // the loader's own check decide.
        checkSignal(signal);
        return null;
      }
      const info = header.inspect(total);
      // Done, or the body ended short of what was asked (a server that sends no more).
      if (info || header.length >= total || header.length < upto) return info;
    }
    return null; // a header longer than PROBE_MAX: the loader's own check decides
  } finally {
    try {
      header.free();
    } catch {
      // a broken instance: the error that broke it is already on its way
    }
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
    const from = rangeStart(res);
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
