// Errors of the package: one class, a `code` string on every error.
// The wasm side throws plain `Error`s with a `code`; `toAmuletError` turns those (and
// anything else) into `AmuletError`s so callers can branch on `err.code`.

/** Every code an AmuletError can carry (the wasm ones first). */
export const ERROR_CODES = Object.freeze([
  'BAD_MODEL',
  'UNSUPPORTED_MODEL',
  'BAD_OPTION',
  'TOKENIZER',
  'CHAT_TEMPLATE',
  'CONTEXT_OVERFLOW',
  'ABORTED',
  'COMPUTE',
  'IO',
  'TOO_LARGE',
  'NO_WEBGPU',
  'NETWORK',
  'INTEGRITY',
  'DISPOSED',
  'NOT_READY',
  'WORKER',
  'WORKER_LOST',
]);

export class AmuletError extends Error {
  /**
   * @param {string} code e.g. 'BAD_OPTION', 'ABORTED', 'DISPOSED'
   * @param {string} message
   * @param {{ option?: string, cause?: unknown }} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    // Aborts look like fetch's: `err.name === 'AbortError'`.
    this.name = code === 'ABORTED' ? 'AbortError' : 'AmuletError';
    this.code = code;
    if (extra.option !== undefined) this.option = extra.option;
  }
}

export function badOption(option, message) {
  return new AmuletError('BAD_OPTION', `bad option \`${option}\`: ${message}`, { option });
}

/**
 * An abort, as fetch reports it as far as a `code` allows: fetch rejects with the signal's
 * reason itself, so a timeout (`AbortSignal.timeout()`) is a DOMException named
 * 'TimeoutError'; here it is an AmuletError named 'TimeoutError' (code still ABORTED, cause
 * the reason), any other abort one named 'AbortError'.
 */
export function abortError(reason) {
  const timedOut = reason?.name === 'TimeoutError';
  const err = new AmuletError('ABORTED', timedOut ? 'the operation timed out' : 'the operation was aborted', {
    cause: reason,
  });
  if (timedOut) err.name = 'TimeoutError';
  return err;
}

export function disposedError() {
  return new AmuletError('DISPOSED', 'the engine has been disposed');
}

/** Any thrown value -> AmuletError (keeps the code of wasm errors, names the bad option). */
export function toAmuletError(e) {
  if (e instanceof AmuletError) return e;
  if (e && typeof e === 'object' && ERROR_CODES.includes(e.code) && typeof e.message === 'string') {
    const extra = { cause: e };
    if (e.code === 'BAD_OPTION') {
      const m = /^bad option `([^`]+)`/.exec(e.message);
      if (m) extra.option = m[1];
    }
    return new AmuletError(e.code, e.message, extra);
  }
  if (e && typeof e === 'object' && (e.name === 'AbortError' || e.name === 'TimeoutError')) return abortError(e);
  // Node file-system errors (ENOENT, EACCES, ...).
  if (e && typeof e === 'object' && typeof e.syscall === 'string') {
    return new AmuletError('IO', e.message, { cause: e });
  }
  // A trap inside the wasm (RuntimeError) or anything unexpected.
  const message = e instanceof Error ? e.message : String(e);
  return new AmuletError('COMPUTE', message, { cause: e });
}

/** Structured-clone-safe form of an error, for postMessage. */
export function serializeError(e) {
  const err = toAmuletError(e);
  const out = { code: err.code, message: err.message, name: err.name };
  if (err.option !== undefined) out.option = err.option;
  return out;
}

export function deserializeError(data) {
  const err = new AmuletError(data.code, data.message, data.option === undefined ? {} : { option: data.option });
  if (data.name === 'TimeoutError' && data.code === 'ABORTED') err.name = data.name;
  return err;
}
