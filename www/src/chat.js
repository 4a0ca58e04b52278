// A conversation held by the app: `engine.createChat({ preference, method, system })`, then
// `for await (const chunk of chat.send(text))` turn after turn. Each turn sends the whole
// history as `messages`; the engine keeps both contexts' caches between requests and reads
// only the new turn (usage.cachedTokens says how much it reused). Changing the preference
// mid-conversation re-reads only the preference context. Shared by AmuletEngine and the
// Worker engine: it only needs their generate() and compare().

import { badOption } from './errors.js';

const CHAT_OPTIONS = ['preference', 'method', 'system', 'placement', 'contextOverflow', 'messages'];

function checkText(text) {
  if (typeof text !== 'string' || text.trim() === '') throw badOption('text', 'must be a non-empty string');
}

export class Chat {
  #engine;
  #messages;
  #settings;

  /** @private Use `engine.createChat(options)`. */
  constructor(engine, options = {}, messages = null) {
    if (options === null || typeof options !== 'object' || Array.isArray(options)) {
      throw badOption('options', 'must be an object');
    }
    for (const k of Object.keys(options)) {
      if (!CHAT_OPTIONS.includes(k)) throw badOption(k, `is not a chat option (known: ${CHAT_OPTIONS.join(', ')})`);
    }
    const { messages: initial = [], ...settings } = options;
    if (!Array.isArray(initial)) throw badOption('messages', 'must be an array of { role, content }');
    this.#engine = engine;
    // A chat drops its oldest turns when the history outgrows the context, unless told not to.
    this.#settings = { contextOverflow: 'truncate-oldest', ...settings };
    this.#messages = (messages ?? initial).map(({ role, content }) => ({ role, content }));
  }

  /** The conversation so far: `{ role, content }` turns (a copy). */
  get messages() {
    return this.#messages.map((m) => ({ ...m }));
  }

  /** The preference of the next turns; setting it keeps the history. */
  get preference() {
    return this.#settings.preference;
  }

  set preference(p) {
    this.#settings.preference = p;
  }

  /**
   * One turn: the user's `text`, answered with this chat's settings (`options` override them
   * for this turn: maxTokens, temperature, signal, method, ...). Streams the engine's chunks;
   * the answer joins the history when the turn completes. A turn that fails or is aborted
   * leaves the history as it was.
   */
  async *send(text, options = {}) {
    checkText(text);
    const user = { role: 'user', content: text };
    const request = { ...this.#settings, ...options, messages: [...this.#messages, user] };
    if (request.method == null && request.preference == null) request.method = 'base';
    let answer = null;
    for await (const chunk of this.#engine.generate(request)) {
      if (chunk.done) answer = chunk.text;
      yield chunk;
    }
    this.#messages.push(user, { role: 'assistant', content: answer ?? '' });
  }

  /**
   * One turn answered by several methods side by side (`methods`, default base, pref, amulet);
   * the answer of `keep` (default: this chat's method, else amulet) joins the history.
   */
  async *compare(text, options = {}) {
    checkText(text);
    const { keep, ...rest } = options;
    const user = { role: 'user', content: text };
    const { method, ...settings } = this.#settings;
    const request = { ...settings, ...rest, messages: [...this.#messages, user] };
    let answer = null;
    for await (const chunk of this.#engine.compare(request)) {
      if (chunk.done) {
        const kept = keep ?? method ?? (chunk.results.amulet ? 'amulet' : Object.keys(chunk.results)[0]);
        if (!chunk.results[kept]) throw badOption('keep', `names no method of this comparison: ${String(kept)}`);
        answer = chunk.results[kept].text;
      }
      yield chunk;
    }
    this.#messages.push(user, { role: 'assistant', content: answer ?? '' });
  }

  /** Forgets the conversation (the settings stay). */
  reset() {
    this.#messages = [];
  }

  /** A new chat with these settings and a copy of this history, to branch the conversation. */
  fork() {
    return new Chat(this.#engine, { ...this.#settings }, this.#messages);
  }
}
