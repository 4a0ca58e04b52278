// A tiny app using amulet-web the way a bundled site would: the package finds its .wasm
// (and, with ?worker, its worker script) through `new URL(..., import.meta.url)`, which
// Vite rewrites to emitted assets.
//
//   ?model=URL          load this GGUF and generate (default: only compute k)
//   &worker             run the engine in a Web Worker (createWorkerEngine)
//   &cache              keep the download in the Cache API
//   &prompt=..&preference=..&maxTokens=..
// When it is done, document.body.dataset.state is 'done' (or 'error') and window.amuletResult
// holds { k, info, text, finishReason }: the browser tests read those.
import { AmuletEngine, closedFormStrength, createWorkerEngine, initWasm } from 'amulet-web';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const result = (window.amuletResult = {});

async function main() {
  await initWasm();
  result.k = closedFormStrength(2, 2, 10, 60);
  $('k').textContent = result.k.toFixed(4);
  document.body.dataset.state = 'ready';

  const model = params.get('model');
  if (!model) return;
  const onProgress = (p) => ($('progress').textContent = `${Math.round(p.progress * 100)}% ${p.text}`);
  const engine = params.has('worker')
    ? await createWorkerEngine(null, model, { onProgress, cache: params.has('cache') })
    : await AmuletEngine.load(model, { onProgress, cache: params.has('cache') });
  result.info = engine.info;
  $('info').textContent = `${engine.info.name} (${engine.info.quantization}, ${engine.info.device})`;

  let text = '';
  for await (const chunk of engine.generate({
    prompt: params.get('prompt') ?? 'How can I improve my eating habits without compromising on taste?',
    preference: params.get('preference') ?? 'concise',
    maxTokens: Number(params.get('maxTokens') ?? 16),
  })) {
    if (chunk.done) {
      result.text = chunk.text;
      result.finishReason = chunk.finishReason;
    } else {
      text += chunk.text;
      $('text').textContent = text;
    }
  }
  await engine.dispose();
}

main().then(
  () => (document.body.dataset.state = 'done'),
  (e) => {
    result.error = { code: e.code, message: e.message };
    $('error').textContent = `${e.code ?? 'ERROR'}: ${e.message}`;
    document.body.dataset.state = 'error';
  },
);
