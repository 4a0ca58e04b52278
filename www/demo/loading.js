// Loading a model (a URL or a local file): in a Web Worker when it can start, else on the
// page's thread; progress bar, model info, and the old engine (and its conversation) disposed
// first; a new conversation on the new engine. A known model the server does not have yet gets
// the command that fetches it.

import { missingModelHint } from './picker.js';
import { clearError, current, setState, showError, ui } from './state.js';
import { dropConversation, newConversation } from './turns.js';

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
  const old = current.engine;
  current.engine = null;
  dropConversation();
  if (old) {
    try {
      await old.dispose?.();
    } catch {
      /* already gone */
    }
  }
  if (current.worker) {
    current.worker.terminate();
    current.worker = null;
  }
}

async function loadModel(source, label) {
  const api = current.api;
  if (current.busy || !api) return;
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
        current.worker = w;
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
    current.engine = loaded;
    newConversation();
    const info = (await current.engine.info) ?? {};
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
    // A known model the demo server does not have yet: say how to fetch it.
    const hint = missingModelHint(source, e);
    showError(hint ? { code: e.code, message: `${e.message}. ${hint}` } : e, `loading ${label}`);
    setState('idle');
  }
}

export function setupLoading() {
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
}
