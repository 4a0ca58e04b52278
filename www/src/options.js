// Cheap checks of generation options before they reach the wasm (which checks again, and
// alone knows the value ranges and rejects unknown keys). Each error names its option.
// Which option is of which kind comes from schema.js.

import { badOption } from './errors.js';
import { optionsOfKind } from './schema.js';

export const METHODS = Object.freeze(['base', 'pref', 'la', 'amulet']);

const NUMBERS = optionsOfKind('number');
const WHOLE = optionsOfKind('whole');
const STRINGS = optionsOfKind('string');
const STRING_LISTS = optionsOfKind('strings');
const BOOLEANS = optionsOfKind('boolean');

function show(v) {
  if (typeof v === 'string') return JSON.stringify(v);
  if (Array.isArray(v)) return 'an array';
  return v === null ? 'null' : typeof v === 'object' ? 'an object' : String(v);
}

function isSignal(s) {
  return (
    s !== null && typeof s === 'object' && typeof s.aborted === 'boolean' && typeof s.addEventListener === 'function'
  );
}

/**
 * Checks `options` and splits them into the wasm request and the AbortSignal.
 * @param {object} options generate/compare options
 * @param {'generate' | 'compare'} kind
 * @returns {{ request: object, signal: AbortSignal | undefined }}
 */
export function prepareRequest(options, kind) {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw badOption('options', `must be an object, got ${show(options)}`);
  }
  const request = {};
  for (const [k, v] of Object.entries(options)) {
    if (v !== undefined && k !== 'signal') request[k] = v;
  }
  const signal = options.signal ?? undefined;
  if (signal !== undefined && !isSignal(signal)) throw badOption('signal', 'must be an AbortSignal');

  for (const k of NUMBERS) {
    const v = request[k];
    if (v != null && (typeof v !== 'number' || !Number.isFinite(v))) {
      throw badOption(k, `must be a finite number, got ${show(v)}`);
    }
  }
  for (const k of WHOLE) {
    const v = request[k];
    if (v != null && (typeof v !== 'number' || !Number.isInteger(v) || v < 0)) {
      throw badOption(k, `must be a whole number >= 0, got ${show(v)}`);
    }
  }
  for (const k of STRINGS) {
    const v = request[k];
    if (v != null && typeof v !== 'string') throw badOption(k, `must be a string, got ${show(v)}`);
  }
  if (request.preference != null && request.preference.trim() === '') {
    throw badOption('preference', 'must not be empty (e.g. "concise", "uplifting")');
  }
  for (const k of STRING_LISTS) {
    const v = request[k];
    if (v != null && typeof v !== 'string' && !(Array.isArray(v) && v.every((s) => typeof s === 'string'))) {
      throw badOption(k, `must be a string or an array of strings, got ${show(v)}`);
    }
  }
  for (const k of BOOLEANS) {
    const v = request[k];
    if (v != null && typeof v !== 'boolean') throw badOption(k, `must be a boolean, got ${show(v)}`);
  }
  if (request.messages != null) {
    const m = request.messages;
    if (!Array.isArray(m) || m.length === 0)
      throw badOption('messages', 'must be a non-empty array of { role, content }');
    m.forEach((msg, i) => {
      if (msg === null || typeof msg !== 'object' || typeof msg.role !== 'string' || typeof msg.content !== 'string') {
        throw badOption('messages', `message ${i} needs string \`role\` and \`content\``);
      }
    });
    // Only role and content travel (OpenAI messages may carry name, etc.).
    request.messages = m.map(({ role, content }) => ({ role, content }));
  }
  if (request.messages == null && request.prompt == null) throw badOption('messages', 'give `messages` or `prompt`');

  if (kind === 'generate') {
    if ('methods' in request) throw badOption('methods', 'generate() runs one method; use compare() for several');
    // Without a preference there is nothing to realign towards: plain decoding.
    if (request.method == null) request.method = request.preference != null ? 'amulet' : 'base';
  } else {
    if ('method' in request) throw badOption('method', 'compare() takes `methods` (an array)');
    const ms = request.methods ?? ['base', 'pref', 'amulet'];
    if (!Array.isArray(ms) || ms.length === 0 || !ms.every((x) => typeof x === 'string')) {
      throw badOption('methods', `must be a non-empty array of ${METHODS.join(' | ')}`);
    }
    if (new Set(ms).size !== ms.length) throw badOption('methods', 'lists a method twice');
    request.methods = [...ms];
  }
  return { request, signal };
}
