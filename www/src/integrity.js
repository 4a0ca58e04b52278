// The `integrity` load option: a model file's SHA-256, as in SRI (`sha256-<base64>`) or as 64
// hex digits, checked as the bytes arrive (wasm's streaming hasher: WebCrypto only hashes a
// whole buffer, and a model should not be held whole for that).

import { AmuletError, abortError } from './errors.js';
import { wasm } from './wasm.js';

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

/** `integrity` -> the expected digest in lower-case hex, or null when none is given. */
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

/** A hasher for `expected` (a no-op without one): update(bytes) as they come, then check(what). */
export function hasher(expected) {
  if (!expected) return { update() {}, check() {} };
  const h = new (wasm().Sha256)();
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

/** Checks a Blob (a File) piece by piece. */
export async function checkBlob(blob, expected, what, signal) {
  const h = hasher(expected);
  const reader = blob.stream().getReader();
  for (;;) {
    if (signal?.aborted) throw abortError(signal.reason);
    const { done, value } = await reader.read();
    if (done) break;
    h.update(value);
  }
  h.check(what);
}
