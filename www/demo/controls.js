// The settings of the next turn: the Amulet strength k shown live under the sliders, the
// preference presets, and the method and generation options the form describes.

import { $, current, num, ui } from './state.js';

const SLIDERS = ['alpha', 'lambda', 'eta', 'iterations', 'ratio'];
let strengthSeq = 0;

/** closedFormStrength, initialising the wasm first when the facade says NOT_READY. */
export async function strengthOf(alpha, lambda, eta, iterations) {
  const api = current.api;
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

export async function updateStrength() {
  for (const id of SLIDERS) $(`${id}-out`).value = ui[id].value;
  if (!current.api) return;
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

/** The method and the turn options (chat.send / chat.compare) the settings describe. */
export function turnSettings() {
  const method = document.querySelector('input[name="method"]:checked')?.value ?? 'amulet';
  const o = {
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
  return { method, options: o };
}

export function setupControls() {
  for (const id of SLIDERS) ui[id].addEventListener('input', updateStrength);

  const chips = [...document.querySelectorAll('.chip[data-preset]')];
  const syncChips = () => {
    const v = ui.preference.value.trim().toLowerCase();
    for (const c of chips) c.setAttribute('aria-pressed', String(c.dataset.preset === v));
  };
  for (const c of chips) {
    c.addEventListener('click', () => {
      ui.preference.value = c.dataset.preset;
      syncChips();
    });
  }
  ui.preference.addEventListener('input', syncChips);
  syncChips();
}
