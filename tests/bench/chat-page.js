// The in-page half of the conversation benchmark: window.chatBench, driven by chat-bench.mjs
// through page.evaluate. Served by chat-bench.mjs's server at /chat-bench/chat-page.js, next
// to the package (/src/, /pkg/) and the models (/models/).
//
// Two engines of the same model on the CPU path, on the page's main thread or each in its own
// Worker: `kept` keeps finished requests' caches (the default prefix cache, a conversation's
// history), `fresh` keeps nothing (prefixCacheBytes 0), so every request it serves reads its
// whole prompt, as a newly loaded engine would.

import { AmuletEngine, createWorkerEngine } from '/src/index.js';

const now = () => performance.now();
const engines = { kept: null, fresh: null };

/** Reads a stream to its end (a chat adds the turn to its history after the last chunk). */
async function drain(stream) {
  const t0 = now();
  let ttftMs = null;
  let final = null;
  for await (const chunk of stream) {
    if (chunk.done) final = chunk;
    else ttftMs ??= now() - t0;
  }
  return {
    ttftMs,
    totalMs: now() - t0,
    prefillMs: final.timings.prefillMs,
    prefillTokens: final.timings.prefillTokens,
    decodeTps: final.timings.decodeTokensPerS,
    promptTokensBase: final.usage.promptTokensBase,
    promptTokensPref: final.usage.promptTokensPref,
    cachedTokensBase: final.usage.cachedTokensBase,
    cachedTokensPref: final.usage.cachedTokensPref,
    completionTokens: final.usage.completionTokens,
    droppedTurns: final.droppedTurns,
    finishReason: final.finishReason,
    tokens: final.tokens,
    text: final.text,
  };
}

window.chatBench = {
  env() {
    return {
      userAgent: navigator.userAgent,
      hardwareConcurrency: navigator.hardwareConcurrency,
      crossOriginIsolated: self.crossOriginIsolated,
    };
  },

  /**
   * Loads both engines (`where`: 'page' or 'worker') and runs one short request on each, so
   * that neither realm's first figures include the wasm's warm-up.
   */
  async load({ url, where, budget }) {
    await this.dispose();
    const out = {};
    for (const [name, prefixCacheBytes] of [
      ['kept', budget],
      ['fresh', 0],
    ]) {
      const options = { device: 'cpu', prefixCacheBytes };
      const t0 = now();
      engines[name] =
        where === 'worker' ? await createWorkerEngine(null, url, options) : await AmuletEngine.load(url, options);
      const loadMs = now() - t0;
      const warm = await drain(engines[name].generate({ prompt: 'Hi', method: 'base', maxTokens: 2 }));
      out[name] = { loadMs, warmUpMs: warm.totalMs, info: { ...engines[name].info } };
    }
    return out;
  },

  /**
   * One round: on `kept`, a chat over `messages` (the scripted history) takes the turn before
   * (`before`, its caches kept), then the timed turn (`next`); on `fresh`, a chat given the same
   * messages takes the timed turn. With `freshHistory` (the history a previous round's kept
   * chat had: the turn before is greedy, so its answer is the same each round) the fresh
   * engine goes first; `freshHistoryMatched` checks that it was this round's history.
   * `keptOnly`: the kept engine alone (the warm-up round, which also measures the history).
   */
  async round({ messages, before, next, preference, method, tokens, beforeTokens, freshHistory, keptOnly = false }) {
    const settings = { preference, method };
    const freshTurn = async (history) => {
      const chat = engines.fresh.createChat({ ...settings, messages: history });
      const timed = await drain(chat.send(next, { maxTokens: tokens }));
      return { timed, usage: await engines.fresh.memoryUsage() };
    };
    const early = freshHistory ? await freshTurn(freshHistory) : null;
    const chat = engines.kept.createChat({ ...settings, messages });
    const turnBefore = await drain(chat.send(before, { maxTokens: beforeTokens }));
    const history = chat.messages;
    const timed = await drain(chat.send(next, { maxTokens: tokens }));
    const kept = { turnBefore, timed, history, usage: await engines.kept.memoryUsage() };
    const fresh = early ?? (keptOnly ? null : await freshTurn(history));
    const freshHistoryMatched = freshHistory ? JSON.stringify(freshHistory) === JSON.stringify(history) : true;
    return { kept, fresh, freshFirst: !!freshHistory, freshHistoryMatched };
  },

  async dispose() {
    for (const name of Object.keys(engines)) {
      await engines[name]?.dispose();
      engines[name] = null;
    }
  },
};

document.getElementById('status').textContent = 'ready';
window.chatBenchReady = true;
