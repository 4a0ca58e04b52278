// The amulet-web demo page: no framework, no build step. Talks only to the package facade
// (../src/index.js); the engine runs in a Web Worker when it can, else on this thread.

const $ = (id) => document.getElementById(id);

const ui = {
  app: $('app'),
  error: $('error'),
  errorCode: $('error-code'),
  errorMessage: $('error-message'),
  errorClose: $('error-close'),
  modelForm: $('model-form'),
  modelUrl: $('model-url'),
  modelFile: $('model-file'),
  device: $('device'),
  load: $('load'),
  useWorker: $('use-worker'),
  useCache: $('use-cache'),
  progress: $('progress'),
  progressText: $('progress-text'),
  info: $('model-info'),
  infoDevice: $('info-device'),
  infoName: $('info-name'),
  infoArch: $('info-arch'),
  infoQuant: $('info-quant'),
  infoContext: $('info-context'),
  infoThread: $('info-thread'),
  askForm: $('ask-form'),
  prompt: $('prompt'),
  preference: $('preference'),
  alpha: $('alpha'),
  lambda: $('lambda'),
  eta: $('eta'),
  iterations: $('iterations'),
  ratio: $('ratio'),
  strength: $('strength'),
  maxTokens: $('max-tokens'),
  placement: $('placement'),
  generate: $('generate'),
  compare: $('compare'),
  stop: $('stop'),
  runStatus: $('run-status'),
  deviceBadge: $('device-badge'),
  tps: $('tps'),
  answers: $('answers'),
  inspector: $('inspector'),
};

const METHOD_TITLES = {
  base: 'Base · no preference',
  pref: 'Pref · preference in the prompt',
  la: 'LA · linear alignment',
  amulet: 'Amulet',
};

let api = null; // the package facade module
let engine = null; // the loaded engine (worker-backed or in-page)
let worker = null; // the Worker behind `engine`, if any
let controller = null; // AbortController of the running generation
let busy = false; // loading or generating
let panels = new Map(); // method -> panel of the current run

// ---------------------------------------------------------------- state and errors

function setState(state) {
  ui.app.dataset.state = state;
  busy = state === 'loading' || state === 'generating';
  const ready = !!engine && !busy;
  ui.load.disabled = busy || !api;
  ui.modelFile.disabled = busy || !api;
  ui.generate.disabled = !ready;
  ui.compare.disabled = !ready;
  ui.stop.disabled = state !== 'generating';
}

function showError(e, context) {
  const code = e?.code || e?.name || 'ERROR';
  const message = e?.message || String(e);
  ui.errorCode.textContent = code;
  ui.errorMessage.textContent = context ? `${context}: ${message}` : message;
  ui.error.dataset.code = code;
  ui.error.hidden = false;
  ui.error.scrollIntoView({ block: 'nearest' });
  console.error(context ?? 'amulet-web demo', e);
}

function clearError() {
  ui.error.hidden = true;
  ui.errorCode.textContent = '';
  ui.errorMessage.textContent = '';
  delete ui.error.dataset.code;
}

ui.errorClose.addEventListener('click', clearError);

// ---------------------------------------------------------------- the strength k, live

const num = (el) => Number(el.value);
let strengthSeq = 0;

async function strengthOf(alpha, lambda, eta, iterations) {
  try {
    return await api.closedFormStrength(alpha, lambda, eta, iterations);
  } catch (e) {
    if (e?.code === 'NOT_READY' && typeof api.initWasm === 'function') {
      await api.initWasm();
      return await api.closedFormStrength(alpha, lambda, eta, iterations);
    }
    throw e;
  }
}

async function updateStrength() {
  for (const id of ['alpha', 'lambda', 'eta', 'iterations', 'ratio']) $(`${id}-out`).value = ui[id].value;
  if (!api) return;
  const seq = ++strengthSeq;
  try {
    const k = await strengthOf(num(ui.alpha), num(ui.lambda), num(ui.eta), num(ui.iterations));
    if (seq !== strengthSeq) return;
    ui.strength.value = `k = ${k.toFixed(3)}`;
    ui.strength.dataset.k = String(k);
    const a = num(ui.alpha);
    const l = num(ui.lambda);
    ui.strength.classList.toggle('diverging', a > l);
    ui.strength.title =
      a >= l ? 'α ≥ λ: k grows without bound as T grows' : `k → α/(λ−α) = ${(a / (l - a)).toFixed(3)} as T grows`;
  } catch (e) {
    if (seq !== strengthSeq) return;
    ui.strength.value = `k: ${e?.code ?? 'error'}`;
    delete ui.strength.dataset.k;
  }
}

for (const id of ['alpha', 'lambda', 'eta', 'iterations', 'ratio']) ui[id].addEventListener('input', updateStrength);

// ---------------------------------------------------------------- preference presets

const chips = [...document.querySelectorAll('.chip[data-preset]')];
function syncChips() {
  const v = ui.preference.value.trim().toLowerCase();
  for (const c of chips) c.setAttribute('aria-pressed', String(c.dataset.preset === v));
}
for (const c of chips) {
  c.addEventListener('click', () => {
    ui.preference.value = c.dataset.preset;
    syncChips();
  });
}
ui.preference.addEventListener('input', syncChips);
syncChips();

// ---------------------------------------------------------------- loading a model

function onProgress(p) {
  let frac = typeof p?.progress === 'number' ? p.progress : p?.total > 0 ? p.loaded / p.total : null;
  if (frac !== null && Number.isFinite(frac)) {
    frac = Math.min(1, Math.max(0, frac));
    ui.progress.value = Math.round(frac * 1000) / 10;
  } else {
    ui.progress.removeAttribute('value'); // indeterminate
  }
  ui.progressText.textContent = p?.text || (frac !== null ? `${Math.round(frac * 100)} %` : 'Loading…');
}

function isModelError(e) {
  // Errors about the model or the options: trying again on another thread would not help.
  return !!e?.code && e.code !== 'WORKER' && e.code !== 'COMPUTE';
}

async function disposeEngine() {
  const old = engine;
  engine = null;
  if (old) {
    try {
      await old.dispose?.();
    } catch {
      /* already gone */
    }
  }
  if (worker) {
    worker.terminate();
    worker = null;
  }
}

async function loadModel(source, label) {
  if (busy || !api) return;
  clearError();
  setState('loading');
  ui.info.hidden = true;
  ui.deviceBadge.textContent = '–';
  ui.progress.value = 0;
  ui.progressText.textContent = `Fetching ${label}…`;
  await disposeEngine();
  const options = { device: ui.device.value, onProgress, cache: ui.useCache.checked };
  const t0 = performance.now();
  let thread = 'main thread';
  try {
    let loaded = null;
    if (ui.useWorker.checked && typeof api.createWorkerEngine === 'function') {
      let w = null;
      try {
        w = new Worker(new URL('../src/worker.js', import.meta.url), { type: 'module', name: 'amulet-engine' });
        loaded = await api.createWorkerEngine(w, source, options);
        worker = w;
        thread = 'Web Worker';
      } catch (e) {
        w?.terminate();
        if (isModelError(e)) throw e;
        console.warn('amulet-web demo: the worker failed, loading on the main thread instead', e);
        ui.progress.value = 0;
        ui.progressText.textContent = `The worker failed (${e?.message ?? e}); loading on the main thread…`;
      }
    }
    if (!loaded) loaded = await api.AmuletEngine.load(source, options);
    engine = loaded;
    const info = (await engine.info) ?? {};
    ui.progress.value = 100;
    ui.progressText.textContent = `Loaded ${label} in ${((performance.now() - t0) / 1000).toFixed(1)} s`;
    ui.infoDevice.textContent = info.device ?? '?';
    ui.infoName.textContent = info.name || label;
    ui.infoArch.textContent = info.architecture ?? '?';
    ui.infoQuant.textContent = info.quantization ?? '?';
    ui.infoContext.textContent = info.contextLength ? `${info.contextLength.toLocaleString('en')} tokens` : '?';
    ui.infoThread.textContent = thread;
    ui.info.hidden = false;
    ui.deviceBadge.textContent = info.device ?? '?';
    ui.runStatus.textContent = 'Ready.';
    setState('ready');
  } catch (e) {
    await disposeEngine();
    ui.progress.value = 0;
    ui.progressText.textContent = `Could not load ${label}.`;
    showError(e, `loading ${label}`);
    setState('idle');
  }
}

ui.modelForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  const url = ui.modelUrl.value.trim();
  if (!url) return showError({ code: 'BAD_OPTION', message: 'give a model URL or open a file' });
  const absolute = new URL(url, location.href).href;
  loadModel(absolute, url.split(/[?#]/)[0].split('/').pop() || url);
});

ui.modelFile.addEventListener('change', () => {
  const file = ui.modelFile.files?.[0];
  if (file) loadModel(file, file.name);
});

// ---------------------------------------------------------------- rendering answers

const visible = (s) => (s === '' ? '∅' : s.replace(/ /g, '·').replace(/\n/g, '↵').replace(/\t/g, '⇥'));

function makePanel(method, k) {
  const el = document.createElement('article');
  el.className = 'answer';
  el.dataset.method = method;
  const h = document.createElement('h3');
  h.textContent = METHOD_TITLES[method] ?? method;
  if (method === 'amulet' && k !== undefined) h.textContent += ` · k = ${k.toFixed(2)}`;
  if (method === 'la') h.textContent += ` · r = ${num(ui.ratio)}`;
  const body = document.createElement('div');
  body.className = 'text';
  body.setAttribute('role', 'group');
  body.setAttribute('aria-label', `${method} answer, one focusable token at a time`);
  const foot = document.createElement('p');
  foot.className = 'panel-stats muted';
  foot.textContent = '…';
  el.append(h, body, foot);
  const panel = { method, el, body, foot, steps: [], pending: null, finish: null };
  el.dataset.tokens = '0';
  return panel;
}

function appendToken(panel, chunk) {
  // A token whose text is empty (half a UTF-8 character) lends its candidates to the next one.
  if (!chunk.text) {
    panel.pending ??= chunk;
    return;
  }
  const src = panel.pending ?? chunk;
  panel.pending = null;
  const i = panel.steps.length;
  panel.steps.push({ token: src.token, text: chunk.text, logprobs: src.logprobs ?? null });
  const span = document.createElement('span');
  span.className = 'tok';
  span.textContent = chunk.text;
  span.dataset.i = String(i);
  span.tabIndex = i === 0 ? 0 : -1;
  const base = src.logprobs?.base;
  if (panel.method !== 'base' && base?.length && base[0].id !== src.token) span.classList.add('moved');
  panel.body.append(span);
  panel.el.dataset.tokens = String(panel.steps.length);
}

function dists(panel, step) {
  const lp = step.logprobs;
  if (!lp) return [];
  const out = [];
  if (lp.base) out.push(['base', lp.base]);
  if (lp.pref) out.push(['pref', lp.pref]);
  if (lp.combined && !out.some(([name]) => name === panel.method)) out.push([panel.method, lp.combined]);
  return out;
}

function renderInspector(panel, step, i) {
  const ins = ui.inspector;
  ins.replaceChildren();
  const title = document.createElement('p');
  title.className = 'ins-title';
  const code = document.createElement('code');
  code.textContent = visible(step.text);
  title.append(`${panel.method} token ${i + 1}: `, code);
  ins.append(title);
  const list = dists(panel, step);
  if (!list.length) {
    const p = document.createElement('p');
    p.textContent = 'No candidates recorded for this token.';
    ins.append(p);
    return;
  }
  const grid = document.createElement('div');
  grid.className = 'charts';
  for (const [name, cands] of list) {
    const fig = document.createElement('figure');
    fig.className = `chart chart-${name}`;
    const cap = document.createElement('figcaption');
    cap.textContent = name;
    const ol = document.createElement('ol');
    for (const c of cands) {
      const li = document.createElement('li');
      if (c.id === step.token) li.className = 'chosen';
      const t = document.createElement('span');
      t.className = 'cand';
      t.textContent = visible(c.text);
      t.title = JSON.stringify(c.text);
      const bar = document.createElement('span');
      bar.className = 'bar';
      const fill = document.createElement('span');
      fill.style.width = `${Math.max(0.5, c.prob * 100).toFixed(1)}%`;
      bar.append(fill);
      const pct = document.createElement('span');
      pct.className = 'pct';
      pct.textContent = `${(c.prob * 100).toFixed(1)}%`;
      li.append(t, bar, pct);
      ol.append(li);
    }
    fig.append(cap, ol);
    if (!cands.some((c) => c.id === step.token)) {
      const note = document.createElement('p');
      note.className = 'absent';
      const least = cands.length ? cands[cands.length - 1].prob : 0;
      note.textContent = `${visible(step.text)} is not in its top ${cands.length}${cands.length ? ` (< ${(least * 100).toFixed(1)}%)` : ''}`;
      fig.append(note);
    }
    grid.append(fig);
  }
  ins.append(grid);
}

function tokenAt(target) {
  const span = target?.closest?.('.tok[data-i]');
  if (!span) return null;
  const panel = panels.get(span.closest('.answer')?.dataset.method);
  if (!panel) return null;
  const i = Number(span.dataset.i);
  return { span, panel, i, step: panel.steps[i] };
}

let shownSpan = null;
function showInspector(hit) {
  if (!hit?.step) return;
  shownSpan?.classList.remove('active');
  shownSpan = hit.span;
  hit.span.classList.add('active');
  renderInspector(hit.panel, hit.step, hit.i);
  const ins = ui.inspector;
  ins.hidden = false;
  hit.span.setAttribute('aria-describedby', 'inspector');
  // Below the token, kept inside the viewport.
  const r = hit.span.getBoundingClientRect();
  const w = ins.offsetWidth;
  const left = Math.max(8, Math.min(r.left, document.documentElement.clientWidth - w - 8));
  ins.style.left = `${left + window.scrollX}px`;
  ins.style.top = `${r.bottom + window.scrollY + 6}px`;
}

function hideInspector() {
  ui.inspector.hidden = true;
  shownSpan?.classList.remove('active');
  shownSpan?.removeAttribute('aria-describedby');
  shownSpan = null;
}

ui.answers.addEventListener('mouseover', (ev) => {
  const hit = tokenAt(ev.target);
  if (hit && hit.span !== shownSpan) showInspector(hit);
});
ui.answers.addEventListener('mouseleave', () => {
  if (!ui.answers.contains(document.activeElement)) hideInspector();
});
ui.answers.addEventListener('focusin', (ev) => showInspector(tokenAt(ev.target)));
ui.answers.addEventListener('focusout', (ev) => {
  if (!ui.answers.contains(ev.relatedTarget)) hideInspector();
});
ui.answers.addEventListener('keydown', (ev) => {
  const hit = tokenAt(ev.target);
  if (!hit) return;
  if (ev.key === 'Escape') return hideInspector();
  const spans = [...hit.panel.body.querySelectorAll('.tok')];
  const at = spans.indexOf(hit.span);
  const next = {
    ArrowRight: at + 1,
    ArrowDown: at + 1,
    ArrowLeft: at - 1,
    ArrowUp: at - 1,
    Home: 0,
    End: spans.length - 1,
  }[ev.key];
  if (next === undefined || !spans[next]) return;
  ev.preventDefault();
  hit.span.tabIndex = -1;
  spans[next].tabIndex = 0;
  spans[next].focus();
});
document.addEventListener('keydown', (ev) => {
  if (ev.key === 'Escape' && !ui.inspector.hidden) hideInspector();
});

// ---------------------------------------------------------------- generating

function requestOptions() {
  const o = {
    prompt: ui.prompt.value,
    preference: ui.preference.value.trim(),
    placement: ui.placement.value,
    alpha: num(ui.alpha),
    lambda: num(ui.lambda),
    eta: num(ui.eta),
    iterations: num(ui.iterations),
    ratio: num(ui.ratio),
    maxTokens: ui.maxTokens.value === '' ? 128 : Number(ui.maxTokens.value),
    topLogprobs: 5,
  };
  if (!o.preference) delete o.preference;
  return o;
}

function fmtRate(x) {
  return Number.isFinite(x) && x > 0 ? x.toFixed(1) : '–';
}

async function run(mode) {
  if (busy || !engine) return;
  clearError();
  hideInspector();
  const options = requestOptions();
  const method = document.querySelector('input[name="method"]:checked')?.value ?? 'amulet';
  const methods = mode === 'compare' ? ['base', 'pref', 'amulet'] : [method];
  let k;
  try {
    k = await strengthOf(options.alpha, options.lambda, options.eta, options.iterations);
  } catch {
    k = undefined; // the engine reports the bad option below
  }
  panels = new Map(methods.map((m) => [m, makePanel(m, k)]));
  ui.answers.className = `answers ${mode === 'compare' ? 'compare' : 'single'}`;
  ui.answers.replaceChildren(...[...panels.values()].map((p) => p.el));
  ui.answers.dataset.mode = mode;
  ui.answers.dataset.done = 'false';
  ui.tps.textContent = '–';
  ui.runStatus.textContent = 'Prefilling the prompt…';
  controller = new AbortController();
  setState('generating');
  const t0 = performance.now();
  let tFirst = 0;
  let steps = 0;
  let outcome = 'done';
  try {
    const stream =
      mode === 'compare'
        ? engine.compare({ ...options, methods, signal: controller.signal })
        : engine.generate({ ...options, method, signal: controller.signal });
    for await (const chunk of stream) {
      if (chunk.done) {
        finishRun(chunk, mode, methods);
        break;
      }
      const m = chunk.method ?? method;
      const panel = panels.get(m);
      if (!panel) continue;
      appendToken(panel, chunk);
      // One decode step gives one token to every live method.
      if (!tFirst) tFirst = performance.now();
      steps = Math.max(steps, panel.steps.length);
      const dt = (performance.now() - tFirst) / 1000;
      if (steps > 1 && dt > 0) ui.tps.textContent = fmtRate((steps - 1) / dt);
      ui.runStatus.textContent = `Generating… ${steps} token${steps === 1 ? '' : 's'}${methods.length > 1 ? ' per method' : ''}`;
    }
  } catch (e) {
    if (e?.code === 'ABORTED' || e?.name === 'AbortError') {
      outcome = 'stopped';
      const n = Math.max(0, ...[...panels.values()].map((p) => p.steps.length));
      const dt = tFirst ? (performance.now() - tFirst) / 1000 : 0;
      if (n > 1 && dt > 0) ui.tps.textContent = fmtRate((n - 1) / dt);
      ui.runStatus.textContent = `Stopped after ${n} token${n === 1 ? '' : 's'} (${((performance.now() - t0) / 1000).toFixed(1)} s).`;
      for (const p of panels.values()) p.foot.textContent = `${p.steps.length} tokens · stopped`;
    } else {
      outcome = 'error';
      showError(e, mode === 'compare' ? 'compare' : 'generate');
      ui.runStatus.textContent = `Failed: ${e?.code ?? 'error'} (see the message above).`;
      for (const p of panels.values()) p.foot.textContent = `${p.steps.length} tokens · error`;
    }
  } finally {
    controller = null;
    ui.answers.dataset.done = 'true';
    ui.answers.dataset.outcome = outcome;
    const hadFocus = document.activeElement === ui.stop;
    setState(engine ? 'ready' : 'idle');
    if (hadFocus || document.activeElement === document.body) ui.generate.focus();
  }
}

function finishRun(done, mode, methods) {
  const t = done.timings ?? {};
  if (Number.isFinite(t.decodeTokensPerS) && t.decodeTokensPerS > 0) ui.tps.textContent = fmtRate(t.decodeTokensPerS);
  const results =
    done.results ??
    (done.text !== undefined ? { [methods[0]]: { text: done.text, finishReason: done.finishReason } } : {});
  for (const p of panels.values()) {
    const r = Array.isArray(results) ? results.find((x) => x.method === p.method) : results[p.method];
    const reason = r?.finishReason ?? done.finishReason ?? '';
    p.finish = reason;
    p.foot.textContent = `${p.steps.length} tokens${reason ? ` · ${reason}` : ''}`;
  }
  const n = Math.max(0, ...[...panels.values()].map((p) => p.steps.length));
  const parts = [
    `Done: ${n} token${n === 1 ? '' : 's'}${methods.length > 1 ? ` × ${methods.length} methods in one batched decode` : ''}`,
  ];
  if (Number.isFinite(t.prefillMs)) parts.push(`prefill ${Math.round(t.prefillMs)} ms`);
  if (Number.isFinite(t.decodeMs)) parts.push(`decode ${(t.decodeMs / 1000).toFixed(1)} s`);
  ui.runStatus.textContent = parts.join(' · ') + '.';
}

ui.askForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  run('single');
});
ui.compare.addEventListener('click', () => run('compare'));
ui.stop.addEventListener('click', () => controller?.abort());
ui.prompt.addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    if (!engine && !busy) ui.runStatus.textContent = 'Load a model first (step 1).';
    else if (!busy) run('single');
  }
});

// ---------------------------------------------------------------- start

async function start() {
  setState('starting');
  try {
    api = await import('../src/index.js');
  } catch (e) {
    ui.progressText.textContent = 'The amulet-web package could not be loaded.';
    showError({ code: e?.code ?? 'IO', message: `importing ../src/index.js failed: ${e?.message ?? e}` });
    setState('idle');
    return;
  }
  ui.progressText.textContent = 'Pick a model and press “Load model”.';
  setState('idle');
  updateStrength();
  if ('gpu' in navigator)
    ui.device.querySelector('option[value="webgpu"]').textContent = 'webgpu (navigator.gpu present)';
  const params = new URLSearchParams(location.search);
  if (params.has('model')) ui.modelUrl.value = params.get('model');
  if (params.has('autoload')) ui.modelForm.requestSubmit();
}

start();

// For the browser tests and curious readers of the console.
window.amuletDemo = {
  get engine() {
    return engine;
  },
  get busy() {
    return busy;
  },
  panels: () => Object.fromEntries([...panels].map(([m, p]) => [m, p.steps.map((s) => s.text).join('')])),
};

// ---------------------------------------------------------------- results view
// The evaluation results (docs/eval/ in the repository), served by serve.mjs at /results/
// with /results/index.json listing each subfolder's charts and summary.md.

const results = {
  toggle: $('results-toggle'),
  view: $('results-view'),
  status: $('results-status'),
  body: $('results-body'),
  loaded: false,
};

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props);
  for (const c of children) e.append(c);
  return e;
}

/// Minimal markdown: pipe tables become <table>, headings <h4>, everything else <pre>.
function renderMarkdown(md) {
  const out = document.createDocumentFragment();
  const lines = md.replace(/\r\n/g, '\n').split('\n');
  const cells = (l) =>
    l
      .trim()
      .replace(/^\||\|$/g, '')
      .split('|')
      .map((c) => c.trim());
  let text = [];
  const flush = () => {
    while (text.length && text[0].trim() === '') text.shift();
    while (text.length && text[text.length - 1].trim() === '') text.pop();
    if (text.length) out.append(el('pre', { textContent: text.join('\n') }));
    text = [];
  };
  for (let i = 0; i < lines.length; i++) {
    const l = lines[i];
    const h = /^(#{1,6})\s+(.*)$/.exec(l);
    if (h) {
      flush();
      out.append(el('h4', { textContent: h[2] }));
    } else if (l.trim().startsWith('|') && /^\s*\|?\s*:?-{2,}/.test(lines[i + 1] ?? '')) {
      flush();
      const table = el('table');
      table.append(el('thead', {}, el('tr', {}, ...cells(l).map((c) => el('th', { textContent: c })))));
      const tbody = el('tbody');
      for (i += 2; i < lines.length && lines[i].trim().startsWith('|'); i++) {
        tbody.append(el('tr', {}, ...cells(lines[i]).map((c) => el('td', { textContent: c }))));
      }
      i--;
      table.append(tbody);
      out.append(table);
    } else text.push(l);
  }
  flush();
  return out;
}

async function loadResults() {
  results.status.textContent = 'Loading the results…';
  results.body.replaceChildren();
  let index;
  try {
    const r = await fetch('/results/index.json', { cache: 'no-store' });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    index = await r.json();
  } catch (e) {
    results.view.dataset.state = 'error';
    results.status.textContent = `The results index (/results/index.json) could not be read: ${e?.message ?? e}. Serve the page with www/demo/serve.mjs.`;
    return;
  }
  const folders = index.folders ?? [];
  if (!folders.length) {
    results.view.dataset.state = 'empty';
    results.status.textContent = index.exists
      ? 'No evaluation results yet: docs/eval/ holds no charts or summary.md. Run the command below to produce them.'
      : 'No evaluation results yet: docs/eval/ does not exist. Run the command below to produce them.';
    return;
  }
  const charts = folders.reduce((n, f) => n + f.charts.length, 0);
  results.view.dataset.state = 'shown';
  results.status.textContent = `${folders.length} result folder${folders.length === 1 ? '' : 's'}, ${charts} chart${charts === 1 ? '' : 's'}.`;
  for (const f of folders) {
    const sec = el('section', { className: 'results-folder' });
    sec.dataset.folder = f.name;
    sec.append(el('h3', { textContent: `docs/eval/${f.name}/` }));
    if (f.charts.length) {
      const grid = el('div', { className: 'results-charts' });
      for (const c of f.charts) {
        const alt = `Chart ${c.name.replace(/\.svg$/i, '').replace(/[-_]+/g, ' ')} (${f.name})`;
        grid.append(
          el(
            'figure',
            {},
            el('img', { src: c.url, alt, loading: 'eager', decoding: 'async' }),
            el('figcaption', { textContent: c.name }),
          ),
        );
      }
      sec.append(grid);
    } else sec.append(el('p', { className: 'muted', textContent: 'No charts (.svg) in this folder.' }));
    const summary = el('div', { className: 'results-summary' });
    sec.append(summary);
    if (f.summary) {
      fetch(f.summary, { cache: 'no-store' })
        .then((r) => (r.ok ? r.text() : Promise.reject(new Error(`HTTP ${r.status}`))))
        .then((md) => summary.append(renderMarkdown(md)))
        .catch((e) =>
          summary.append(el('p', { className: 'muted', textContent: `summary.md could not be read: ${e.message}` })),
        );
    } else summary.append(el('p', { className: 'muted', textContent: 'No summary.md in this folder.' }));
    if (f.responses)
      sec.append(
        el(
          'p',
          { className: 'hint' },
          'Raw generations: ',
          el('a', { href: f.responses, textContent: 'responses.jsonl' }),
        ),
      );
    results.body.append(sec);
  }
}

results.toggle.addEventListener('click', () => {
  const open = results.view.hidden;
  results.view.hidden = !open;
  results.toggle.setAttribute('aria-expanded', String(open));
  results.toggle.textContent = open ? 'Hide evaluation results' : 'Show evaluation results';
  if (open) {
    loadResults();
    results.view.scrollIntoView({ block: 'nearest' });
  }
});
