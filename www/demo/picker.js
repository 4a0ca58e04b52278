// The model picker: the package's known models with their download size, the one offered
// first (the manifest's default, SmolLM2-135M, on the CPU path; Qwen2.5-Coder 1.5B when the
// page has a hardware WebGPU adapter), the URL a pick loads from (/models/<file>: serve.mjs
// serves models/cache/ there), and what to run when the server does not have the file.

import { ui } from './state.js';

/** Offered first on a hardware WebGPU adapter: the largest model, too slow for the CPU path. */
const GPU_PICK = 'qwen2.5-coder-1.5b-instruct-q4_k_m';
/** The option for a URL (or file) of one's own. */
const OTHER = '';
/** requestAdapter() can hang on a broken GPU stack: the page does not wait longer than this. */
const ADAPTER_TIMEOUT_MS = 3000;

let models = [];
let suggested = null; // { id, why }

/** Download sizes as the engine's progress shows them (decimal units). */
export function formatBytes(n) {
  return n >= 1e9 ? `${(n / 1e9).toFixed(1)} GB` : `${Math.round(n / 1e6)} MB`;
}

const urlOf = (m) => `/models/${encodeURIComponent(m.file)}`;

/** The known model a URL (as typed, relative or not) names on this server, or null. */
export function modelOfUrl(url) {
  let u;
  try {
    u = new URL(url, location.href);
  } catch {
    return null;
  }
  if (u.origin !== location.origin) return null;
  return models.find((m) => u.pathname === urlOf(m)) ?? null;
}

/**
 * Whether the page has a hardware WebGPU adapter. A software one (Chrome's SwiftShader,
 * Mesa's llvmpipe/lavapipe) is slower than the CPU path: 'auto' passes it over, and so does
 * the picker. { hardware, adapter: a printable description or null }
 */
export async function probeAdapter() {
  if (!navigator.gpu) return { hardware: false, adapter: null };
  let adapter = null;
  let timer;
  try {
    adapter = await Promise.race([
      navigator.gpu.requestAdapter(),
      new Promise((resolve) => (timer = setTimeout(() => resolve(null), ADAPTER_TIMEOUT_MS))),
    ]);
  } catch {
    adapter = null;
  } finally {
    clearTimeout(timer);
  }
  if (!adapter) return { hardware: false, adapter: null };
  const info = adapter.info ?? {};
  const words = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(' ');
  const software =
    adapter.isFallbackAdapter === true ||
    info.isFallbackAdapter === true ||
    /swiftshader|llvmpipe|lavapipe|software|basic render/i.test(words);
  return { hardware: !software, adapter: words || 'an unnamed adapter' };
}

function describe() {
  const m = models.find((x) => x.id === ui.modelPick.value);
  if (!m) {
    ui.modelHint.textContent = 'Your own GGUF: give its URL below, or open a local file.';
    return;
  }
  const why = suggested?.id === m.id ? ` Offered first: ${suggested.why}.` : '';
  ui.modelHint.textContent =
    `${m.parameters} parameters, ${m.architecture}, ${m.quantization}, ${m.license}. ` +
    `Not on the server yet? models/fetch.sh ${m.id}.${why}`;
}

/** The picker follows the URL box: a known model's URL selects it, anything else is "other". */
function syncFromUrl() {
  ui.modelPick.value = modelOfUrl(ui.modelUrl.value.trim())?.id ?? OTHER;
  describe();
}

/**
 * Fills the picker from the package's catalogue and pre-selects the model for this browser.
 * `keepUrl`: the URL box was preset (?model=), the picker only follows it.
 */
export async function setupPicker(api, { keepUrl = false } = {}) {
  models = typeof api.knownModels === 'function' ? api.knownModels() : [];
  const gpu = await probeAdapter();
  ui.modelPick.dataset.adapter = gpu.hardware ? 'hardware' : gpu.adapter ? 'software' : 'none';
  const fallback = models.find((m) => m.id === api.DEFAULT_MODEL_ID) ?? models[0];
  const gpuPick = gpu.hardware ? models.find((m) => m.id === GPU_PICK) : null;
  const first = gpuPick ?? fallback;
  if (first) {
    suggested = {
      id: first.id,
      why: gpuPick
        ? `this browser has a hardware WebGPU adapter (${gpu.adapter})`
        : `the CPU path${gpu.adapter ? ` (the WebGPU adapter, ${gpu.adapter}, renders in software)` : ''} runs it fastest`,
    };
  }

  const options = [first, ...models.filter((m) => m !== first)].filter(Boolean).map((m) => {
    const o = new Option(`${m.name} — ${formatBytes(m.bytes)}`, m.id);
    o.dataset.bytes = String(m.bytes);
    o.dataset.file = m.file;
    return o;
  });
  options.push(new Option('Another URL or a local file', OTHER));
  ui.modelPick.replaceChildren(...options);

  if (!keepUrl && first) ui.modelUrl.value = urlOf(first);
  syncFromUrl();
  ui.modelPick.dataset.suggested = first?.id ?? '';

  ui.modelPick.addEventListener('change', () => {
    const m = models.find((x) => x.id === ui.modelPick.value);
    if (m) ui.modelUrl.value = urlOf(m);
    describe();
  });
  ui.modelUrl.addEventListener('input', syncFromUrl);
}

/**
 * What to tell the user when loading `source` failed with `e`: a 404 for a file of the demo
 * server's models folder means it was never fetched. A sentence, or null.
 */
export function missingModelHint(source, e) {
  if (typeof source !== 'string' || e?.code !== 'IO' || !/\bHTTP 404\b/.test(e?.message ?? '')) return null;
  const m = modelOfUrl(source);
  if (m) {
    return (
      `The demo server has no ${m.file} yet: run \`models/fetch.sh ${m.id}\` in the repository ` +
      `(${formatBytes(m.bytes)} into models/cache/), then load again.`
    );
  }
  let u = null;
  try {
    u = new URL(source, location.href);
  } catch {
    /* not a URL: no hint */
  }
  if (u?.origin === location.origin && u.pathname.startsWith('/models/')) {
    return 'The demo server serves models/cache/ at /models/: `models/fetch.sh --list` lists the models it can fetch.';
  }
  return null;
}
