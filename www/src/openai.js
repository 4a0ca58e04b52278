// The OpenAI-shaped twin of generate(): `chat.completions.create(params, { signal })`.
// Shared by AmuletEngine and the worker proxy: it only needs a `generate(options)` that
// returns an async iterable of amulet-web chunks.

import { badOption } from './errors.js';
import { prepareRequest } from './options.js';
import { AMULET_OPTIONS } from './schema.js';

// Accepted OpenAI parameters; the ones marked null are accepted and ignored.
const PARAMS = {
  messages: 'messages',
  stream: null,
  stream_options: null,
  model: null,
  user: null,
  n: null,
  max_tokens: 'maxTokens',
  max_completion_tokens: 'maxTokens',
  temperature: 'temperature',
  top_p: 'topP',
  top_k: 'topK',
  seed: 'seed',
  stop: 'stop',
  amulet: null,
};

/** finish reasons of the engine -> OpenAI's */
export function openaiFinishReason(reason) {
  return reason === 'length' || reason === 'context_full' ? 'length' : 'stop';
}

function completionId() {
  const rand = globalThis.crypto?.randomUUID?.() ?? `${Date.now().toString(36)}${Math.random().toString(36).slice(2)}`;
  return `chatcmpl-${rand.replace(/-/g, '').slice(0, 24)}`;
}

/** OpenAI params -> generate() options (checked; throws BAD_OPTION naming the parameter). */
export function toGenerateOptions(params, requestOptions = {}) {
  if (params === null || typeof params !== 'object' || Array.isArray(params)) {
    throw badOption('params', 'must be an object');
  }
  const out = {};
  for (const [k, v] of Object.entries(params)) {
    if (!(k in PARAMS)) {
      throw badOption(k, `is not supported by amulet-web (supported: ${Object.keys(PARAMS).join(', ')})`);
    }
    if (v !== undefined && v !== null && PARAMS[k]) out[PARAMS[k]] = v;
  }
  if (params.n != null && params.n !== 1) throw badOption('n', 'only n = 1 is supported');
  if (params.stream != null && typeof params.stream !== 'boolean') throw badOption('stream', 'must be a boolean');
  if (!Array.isArray(params.messages)) throw badOption('messages', 'must be an array of { role, content }');
  const amulet = params.amulet ?? {};
  if (typeof amulet !== 'object' || Array.isArray(amulet)) throw badOption('amulet', 'must be an object');
  for (const [k, v] of Object.entries(amulet)) {
    if (!AMULET_OPTIONS.includes(k))
      throw badOption(`amulet.${k}`, `is not an amulet option (known: ${AMULET_OPTIONS.join(', ')})`);
    if (v !== undefined && v !== null) out[k] = v;
  }
  const signal = requestOptions?.signal;
  if (signal != null) out.signal = signal;
  prepareRequest(out, 'generate'); // the cheap checks now, so create() rejects early
  return out;
}

/**
 * @param {(options: object) => AsyncIterable<object>} generate
 * @param {() => string} modelName
 */
export function openaiChat(generate, modelName) {
  async function create(params, requestOptions) {
    const options = toGenerateOptions(params, requestOptions);
    const id = completionId();
    const created = Math.floor(Date.now() / 1000);
    const model = params.model ?? modelName();
    if (params.stream) return streamChunks(generate(options), { id, created, model });

    let content = '';
    for await (const chunk of generate(options)) {
      if (!chunk.done) continue;
      content = chunk.text;
      return {
        id,
        object: 'chat.completion',
        created,
        model,
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content },
            logprobs: null,
            finish_reason: openaiFinishReason(chunk.finishReason),
          },
        ],
        usage: usage(chunk),
        timings: chunk.timings,
      };
    }
    throw new Error('generation ended without a final chunk'); // unreachable
  }
  return { completions: { create } };
}

function usage(chunk) {
  return {
    prompt_tokens: chunk.usage.promptTokens,
    completion_tokens: chunk.usage.completionTokens,
    total_tokens: chunk.usage.totalTokens,
    prompt_tokens_details: { cached_tokens: chunk.usage.cachedTokens },
  };
}

async function* streamChunks(chunks, { id, created, model }) {
  const head = { id, object: 'chat.completion.chunk', created, model };
  let first = true;
  for await (const chunk of chunks) {
    if (chunk.done) {
      yield {
        ...head,
        choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: openaiFinishReason(chunk.finishReason) }],
        usage: usage(chunk),
        timings: chunk.timings,
      };
      return;
    }
    if (chunk.text === '' && !first) continue; // a split UTF-8 character: nothing to show yet
    const delta = first ? { role: 'assistant', content: chunk.text } : { content: chunk.text };
    first = false;
    yield { ...head, choices: [{ index: 0, delta, logprobs: null, finish_reason: null }] };
  }
}
