// The token inspector: hovering, clicking or focusing a token of an answer, in any turn of the
// conversation (arrow keys move between tokens, Escape closes), shows its top candidates under
// base, pref and the run's method.

import { panelOf } from './answers.js';
import { ui } from './state.js';

const visible = (s) => (s === '' ? '∅' : s.replace(/ /g, '·').replace(/\n/g, '↵').replace(/\t/g, '⇥'));

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
  const panel = panelOf(span.closest('.answer'));
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

export function hideInspector() {
  ui.inspector.hidden = true;
  shownSpan?.classList.remove('active');
  shownSpan?.removeAttribute('aria-describedby');
  shownSpan = null;
}

export function setupInspector() {
  ui.history.addEventListener('mouseover', (ev) => {
    const hit = tokenAt(ev.target);
    if (hit && hit.span !== shownSpan) showInspector(hit);
  });
  ui.history.addEventListener('mouseleave', () => {
    if (!tokenAt(document.activeElement)) hideInspector();
  });
  // A click focuses the token (spans are focusable), which shows it; on touch screens too.
  ui.history.addEventListener('click', (ev) => tokenAt(ev.target)?.span.focus());
  ui.history.addEventListener('focusin', (ev) => showInspector(tokenAt(ev.target)));
  ui.history.addEventListener('focusout', (ev) => {
    if (!tokenAt(ev.relatedTarget)) hideInspector();
  });
  ui.history.addEventListener('keydown', (ev) => {
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
}
