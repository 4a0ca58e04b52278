// Compiled (not run) by types.test.mjs: the public API must type-check as documented.
import {
  AmuletEngine,
  AmuletError,
  closedFormStrength,
  createWorkerEngine,
  initWasm,
  strength,
  type AmuletErrorCode,
  type ChatCompletion,
  type ChatCompletionChunk,
  type CompareChunk,
  type Engine,
  type GenerateChunk,
  type LoadProgress,
  KNOWN_MODELS,
  DEFAULT_MODEL_ID,
  knownModels,
  type KnownModel,
} from 'amulet-web';

export async function main(url: string): Promise<void> {
  await initWasm();
  const k: number = closedFormStrength(2, 2, 10, 60);
  const k2: number = await strength();
  const engine = await AmuletEngine.load(url, {
    device: 'auto',
    cache: true,
    onProgress: (p: LoadProgress) => console.log(p.phase, p.loaded, p.total, p.progress.toFixed(2), p.text),
  });
  const { device, model, contextLength } = engine.info;
  console.log(k, k2, device, model, contextLength);

  const ac = new AbortController();
  let answer = '';
  for await (const chunk of engine.generate({
    prompt: 'Hi',
    preference: 'concise',
    maxTokens: 16,
    signal: ac.signal,
  })) {
    if (chunk.done) {
      const reason: 'stop' | 'length' | 'context_full' | 'aborted' = chunk.finishReason;
      console.log(reason, chunk.usage.totalTokens, chunk.timings.decodeTokensPerS, chunk.text);
    } else {
      answer += chunk.text;
      chunk.logprobs?.combined.forEach((c) => c.prob);
    }
  }
  const firstChunk: GenerateChunk | undefined =
    (await engine.generate({ messages: [{ role: 'user', content: 'Hi' }] }).next()).value ?? undefined;
  console.log(firstChunk);

  for await (const c of engine.compare({ prompt: 'Hi', preference: 'uplifting', methods: ['base', 'la', 'amulet'] })) {
    const chunk: CompareChunk = c;
    if (chunk.done) console.log(chunk.results.amulet?.text, chunk.results.base?.finishReason);
    else console.log(chunk.method, chunk.text);
  }

  const res: ChatCompletion = await engine.chat.completions.create({
    messages: [{ role: 'user', content: 'Hi' }],
    max_tokens: 8,
    amulet: { preference: 'concise', alpha: 2, game: 'closed-form' },
  });
  console.log(res.choices[0].message.content, res.usage.total_tokens);
  const stream = await engine.chat.completions.create(
    { messages: [{ role: 'user', content: 'Hi' }], stream: true },
    { signal: ac.signal },
  );
  for await (const c of stream) {
    const chunk: ChatCompletionChunk = c;
    console.log(chunk.choices[0].delta.content ?? '', chunk.choices[0].finish_reason);
  }

  try {
    await engine.generate({ prompt: 'x' }).next();
  } catch (e) {
    if (e instanceof AmuletError) {
      const code: AmuletErrorCode = e.code;
      console.log(code, e.option, e.name === 'AbortError');
    }
  }
  await engine.dispose();

  const worker = new Worker('/node_modules/amulet-web/src/worker.js', { type: 'module' });
  const remote: Engine = await createWorkerEngine(worker, [url, url + '.2'], { onProgress: (p) => p.progress });
  for await (const c of remote.generate({ prompt: 'Hi' })) if (!c.done) console.log(c.text);
  await remote.dispose();
  const own = await createWorkerEngine(null, new Uint8Array(8));
  console.log(own.info.device, own.worker);
}

// @ts-expect-error: 'gpu' is not a device
AmuletEngine.load('x', { device: 'gpu' });
// @ts-expect-error: methods is compare()'s
engine0().generate({ prompt: 'x', methods: ['base'] });
// @ts-expect-error: temperature is a number
engine0().generate({ prompt: 'x', temperature: 'hot' });
declare function engine0(): AmuletEngine;

// The catalogue of known models.
const known: readonly Readonly<KnownModel>[] = KNOWN_MODELS;
const picked: KnownModel | undefined = knownModels().find((m) => m.id === DEFAULT_MODEL_ID);
if (picked) picked.name = `${picked.name} (${(picked.bytes / 1e6).toFixed(0)} MB)`;
const firstUrl: string | null = known[0].url;
console.log(firstUrl);
// @ts-expect-error: KNOWN_MODELS is frozen
KNOWN_MODELS[0].bytes = 1;
