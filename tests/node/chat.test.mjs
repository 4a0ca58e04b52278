// Conversations: createChat() keeps its history's caches between turns (on the page's engine and
// in the Worker), each turn reads only what is new, and answers as a fresh engine would.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { AmuletEngine } from 'amulet-web';
import { collect, requireModel, thrown } from './helpers.mjs';

let engine;

before(async () => {
  engine = await AmuletEngine.load(requireModel(), { device: 'cpu' });
});

after(() => engine?.dispose());

const Q1 = 'How can I improve my eating habits without compromising on taste?';
const Q2 = 'And what should I drink?';

test('a chat reads only each new turn and answers as a fresh engine does', async () => {
  const chat = engine.createChat({ preference: 'concise' });
  const first = await collect(chat.send(Q1, { maxTokens: 24 }));
  assert.equal(first.final.usage.cachedTokens, 0);
  assert.equal(chat.messages.length, 2);
  assert.deepEqual(chat.messages[1], { role: 'assistant', content: first.final.text });

  const second = await collect(chat.send(Q2, { maxTokens: 16 }));
  const u = second.final.usage;
  assert.ok(u.cachedTokensBase > 20 && u.cachedTokensPref > 20, JSON.stringify(u));
  assert.equal(u.cachedTokens, u.cachedTokensPref, 'amulet counts its preference context');
  assert.ok(second.final.timings.prefillTokens < u.promptTokensBase / 2, 'only the new turn is read');
  assert.equal(second.final.droppedTurns, 0);

  const fresh = await AmuletEngine.load(requireModel(), { device: 'cpu', prefixCacheBytes: 0 });
  const again = await collect(
    fresh.generate({
      messages: chat.messages.slice(0, 2).concat({ role: 'user', content: Q2 }),
      preference: 'concise',
      maxTokens: 16,
    }),
  );
  assert.deepEqual(second.final.tokens, again.final.tokens, 'the same greedy tokens');
  assert.deepEqual((await fresh.memoryUsage()).prefixCacheBytes, 0);
  await fresh.dispose();

  const mem = await engine.memoryUsage();
  assert.ok(mem.prefixCacheBytes > 0 && mem.prefixCacheSequences >= 2, JSON.stringify(mem));
});

test('a new preference re-reads only the preference context; fork, reset, an aborted turn', async () => {
  const chat = engine.createChat({ preference: 'concise' });
  await collect(chat.send(Q1, { maxTokens: 12 }));
  chat.preference = 'uplifting';
  const turn = await collect(chat.send(Q2, { maxTokens: 8 }));
  assert.ok(turn.final.usage.cachedTokensBase > 20, 'the base context is kept');
  assert.ok(
    turn.final.usage.cachedTokensPref < turn.final.usage.cachedTokensBase,
    'the preference context is read again',
  );

  const branch = chat.fork();
  assert.deepEqual(branch.messages, chat.messages);
  branch.reset();
  assert.equal(branch.messages.length, 0);
  assert.equal(chat.messages.length, 4);

  const ac = new AbortController();
  const err = await thrown(
    collect(chat.send('One more question?', { maxTokens: 50, signal: ac.signal }), () => ac.abort()),
  );
  assert.equal(err.code, 'ABORTED');
  assert.equal(chat.messages.length, 4, 'an aborted turn leaves the history as it was');
  const bad = await thrown(() => engine.createChat({ temprature: 1 }));
  assert.equal(bad.option, 'temprature');
});

test('OpenAI usage reports the cached tokens of a continued conversation', async () => {
  const messages = [{ role: 'user', content: Q1 }];
  const first = await engine.chat.completions.create({ messages, max_tokens: 12, amulet: { preference: 'concise' } });
  messages.push(first.choices[0].message, { role: 'user', content: Q2 });
  const second = await engine.chat.completions.create({ messages, max_tokens: 8, amulet: { preference: 'concise' } });
  assert.ok(second.usage.prompt_tokens_details.cached_tokens > 20, JSON.stringify(second.usage));
});
