// The amulet-web demo page, a conversation: no framework, no build step. Talks only to the
// package facade (../src/index.js); the engine runs in a Web Worker when it can, else on this
// thread, and keeps the conversation's caches between turns.
// This entry wires the page's modules (README.md lists them) and imports the facade.

import { setupControls, updateStrength } from './controls.js';
import { setupInspector } from './inspector.js';
import { setupLoading } from './loading.js';
import { setupPicker } from './picker.js';
import { setupResults } from './results.js';
import { setupRun } from './run.js';
import { clearError, current, setState, showError, ui } from './state.js';

ui.errorClose.addEventListener('click', clearError);
setupControls();
setupLoading();
setupInspector();
setupRun();

// Imported dynamically, so that a package that cannot load is reported on the page.
async function start() {
  setState('starting');
  try {
    current.api = await import('../src/index.js');
  } catch (e) {
    ui.progressText.textContent = 'The amulet-web package could not be loaded.';
    showError({ code: e?.code ?? 'IO', message: `importing ../src/index.js failed: ${e?.message ?? e}` });
    setState('idle');
    return;
  }
  const params = new URLSearchParams(location.search);
  if (params.has('model')) ui.modelUrl.value = params.get('model');
  // Before the page is ready: the pick depends on the WebGPU adapter, and ?autoload loads it.
  await setupPicker(current.api, { keepUrl: params.has('model') });
  ui.progressText.textContent = 'Pick a model and press “Load model”.';
  setState('idle');
  updateStrength();
  if ('gpu' in navigator)
    ui.device.querySelector('option[value="webgpu"]').textContent = 'webgpu (navigator.gpu present)';
  if (params.has('autoload')) ui.modelForm.requestSubmit();
}

start();

// For the browser tests and curious readers of the console.
window.amuletDemo = {
  get engine() {
    return current.engine;
  },
  get busy() {
    return current.busy;
  },
  /** The conversation as the chat holds it ({ role, content } turns). */
  messages: () => current.chat?.messages ?? [],
  /** The answers of the latest run, by method. */
  panels: () => {
    const run = current.turns.at(-1)?.runs.at(-1);
    return Object.fromEntries([...(run?.panels ?? [])].map(([m, p]) => [m, p.steps.map((s) => s.text).join('')]));
  },
};

setupResults();
