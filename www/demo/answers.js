// The answer panels of a run: one per method, one focusable span per token, each token
// keeping its candidates for the inspector (panelOf finds a panel from its element, in any
// turn of the conversation).

const METHOD_TITLES = {
  base: 'Base · no preference',
  pref: 'Pref · preference in the prompt',
  la: 'LA · linear alignment',
  amulet: 'Amulet',
};

const panels = new WeakMap();

/** The panel of an answer element (`article.answer`), or undefined. */
export const panelOf = (el) => panels.get(el);

/** A panel: { method, el, body, foot, steps: [{ token, text, logprobs }], pending, finish }. */
export function makePanel(method, { k, ratio } = {}) {
  const el = document.createElement('article');
  el.className = 'answer';
  el.dataset.method = method;
  const h = document.createElement('h3');
  h.textContent = METHOD_TITLES[method] ?? method;
  if (method === 'amulet' && k !== undefined) h.textContent += ` · k = ${k.toFixed(2)}`;
  if (method === 'la' && ratio !== undefined) h.textContent += ` · r = ${ratio}`;
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
  panels.set(el, panel);
  return panel;
}

export function appendToken(panel, chunk) {
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
