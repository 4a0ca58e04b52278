// What every module of the demo page shares: its elements, the one mutable state object (the
// engine, the conversation, the running turn), the page state (which buttons are enabled) and
// the error box.

export const $ = (id) => document.getElementById(id);

export const ui = {
  app: $('app'),
  error: $('error'),
  errorCode: $('error-code'),
  errorMessage: $('error-message'),
  errorClose: $('error-close'),
  modelForm: $('model-form'),
  modelPick: $('model-pick'),
  modelHint: $('model-hint'),
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
  history: $('history'),
  historyEmpty: $('history-empty'),
  newChat: $('new-chat'),
  nextTurn: $('next-turn'),
  compareMode: $('compare-mode'),
  send: $('send'),
  settingsForm: $('settings-form'),
  preference: $('preference'),
  alpha: $('alpha'),
  lambda: $('lambda'),
  eta: $('eta'),
  iterations: $('iterations'),
  ratio: $('ratio'),
  strength: $('strength'),
  maxTokens: $('max-tokens'),
  placement: $('placement'),
  stop: $('stop'),
  runStatus: $('run-status'),
  deviceBadge: $('device-badge'),
  tps: $('tps'),
  inspector: $('inspector'),
};

// One object rather than exported `let`s: an importer cannot assign a module's bindings.
export const current = {
  api: null, // the package facade module
  engine: null, // the loaded engine (worker-backed or in-page)
  worker: null, // the Worker behind `engine`, if any
  chat: null, // the conversation on `engine` (engine.createChat)
  turns: [], // the turns shown, oldest first (turns.js)
  controller: null, // AbortController of the running turn
  busy: false, // loading or generating
};

export const num = (el) => Number(el.value);

export function setState(state) {
  ui.app.dataset.state = state;
  current.busy = state === 'loading' || state === 'generating';
  const ready = !!current.engine && !current.busy;
  ui.load.disabled = current.busy || !current.api;
  ui.modelFile.disabled = current.busy || !current.api;
  ui.send.disabled = !ready;
  ui.newChat.disabled = !ready || current.turns.length === 0;
  for (const b of ui.history.querySelectorAll('button.turn-compare')) b.disabled = !ready;
  ui.stop.disabled = state !== 'generating';
}

export function showError(e, context) {
  const code = e?.code || e?.name || 'ERROR';
  const message = e?.message || String(e);
  ui.errorCode.textContent = code;
  ui.errorMessage.textContent = context ? `${context}: ${message}` : message;
  ui.error.dataset.code = code;
  ui.error.hidden = false;
  ui.error.scrollIntoView({ block: 'nearest' });
  console.error(context ?? 'amulet-web demo', e);
}

export function clearError() {
  ui.error.hidden = true;
  ui.errorCode.textContent = '';
  ui.errorMessage.textContent = '';
  delete ui.error.dataset.code;
}
