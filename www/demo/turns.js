// The conversation on the page: the chat (engine.createChat; "New chat" resets it) and its
// history, one list item per turn: the user's message, its runs (the answer panels of one
// method, or of several side by side) and each run's figures: time to first token, prompt
// tokens reused from the engine's caches and tokens read. The line above Send says what the
// next turn will be.

import { makePanel } from './answers.js';
import { hideInspector } from './inspector.js';
import { current, setState, ui } from './state.js';

const RUN_LABELS = {
  single: null,
  compare: 'Methods side by side',
  recompare: 'Compared (the conversation is unchanged)',
};

const int = (n) => (Number.isFinite(n) ? Math.round(n).toLocaleString('en') : '–');
const secs = (ms) => (ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`);

/** Contexts a set of methods reads: base (base, la, amulet) and preference (pref, la, amulet). */
function contextsOf(methods) {
  return {
    base: methods.some((m) => m !== 'pref'),
    pref: methods.some((m) => m !== 'base'),
  };
}

/** A new conversation on the loaded engine (or none), and an empty history. */
export function newConversation() {
  hideInspector();
  if (current.chat) current.chat.reset();
  else if (current.engine) current.chat = current.engine.createChat();
  current.turns = [];
  ui.history.replaceChildren();
  ui.historyEmpty.hidden = false;
  describeNextTurn();
}

/** Forgets the chat of an engine that is going away. */
export function dropConversation() {
  current.chat = null;
  newConversation();
}

/**
 * A turn in the history: `before` is the conversation it continues (chat.messages), `settings`
 * the method and options it ran with (a later comparison of this turn uses them too).
 */
export function addTurn(text, before, settings) {
  const n = current.turns.length + 1;
  const el = document.createElement('li');
  el.className = 'turn';
  el.dataset.turn = String(n);
  const msg = document.createElement('div');
  msg.className = 'msg user';
  const who = document.createElement('span');
  who.className = 'who';
  who.textContent = `You · turn ${n}`;
  const body = document.createElement('p');
  body.className = 'user-text';
  body.textContent = text;
  msg.append(who, body);
  const runs = document.createElement('div');
  runs.className = 'runs';
  const actions = document.createElement('div');
  actions.className = 'turn-actions';
  const compare = document.createElement('button');
  compare.type = 'button';
  compare.className = 'turn-compare';
  compare.textContent = 'Compare base | pref | amulet for this turn';
  compare.hidden = true;
  actions.append(compare);
  el.append(msg, runs, actions);
  ui.history.append(el);
  ui.historyEmpty.hidden = true;
  const turn = { n, el, text, before, settings, runs: [], runsEl: runs, compareButton: compare, outcome: null };
  current.turns.push(turn);
  el.scrollIntoView({ block: 'nearest' });
  return turn;
}

/** A run of a turn: one panel per method; mode 'single', 'compare' or 'recompare'. */
export function addRun(turn, methods, { k, ratio, mode }) {
  const el = document.createElement('section');
  el.className = `run ${mode}`;
  el.dataset.mode = mode;
  el.dataset.done = 'false';
  if (RUN_LABELS[mode]) {
    const h = document.createElement('h3');
    h.className = 'run-label';
    h.textContent = RUN_LABELS[mode];
    el.append(h);
  }
  const answers = document.createElement('div');
  answers.className = `answers ${mode === 'single' ? 'single' : 'compare'}`;
  const panels = new Map(methods.map((m) => [m, makePanel(m, { k, ratio })]));
  answers.append(...[...panels.values()].map((p) => p.el));
  const figures = document.createElement('p');
  figures.className = 'turn-stats muted';
  figures.textContent = 'Reading the new part of the conversation…';
  el.append(answers, figures);
  turn.runsEl.append(el);
  const run = { mode, methods, panels, el, figures };
  turn.runs.push(run);
  el.scrollIntoView({ block: 'nearest' });
  return run;
}

/** The run's first token arrived after `ms`. */
export function showFirstToken(run, ms) {
  run.el.dataset.ttftMs = String(Math.round(ms));
  run.figures.textContent = `First token after ${secs(ms)}…`;
}

/**
 * A finished run's figures: time to first token, prompt tokens reused from the caches vs read
 * (per context in the tooltip and data attributes), new tokens and their rate.
 */
export function showFigures(run, done, ms) {
  const t = done.timings ?? {};
  const u = done.usage ?? {};
  const ctx = contextsOf(run.methods);
  const cachedBase = ctx.base ? (t.cachedTokensBase ?? u.cachedTokensBase ?? 0) : 0;
  const cachedPref = ctx.pref ? (t.cachedTokensPref ?? u.cachedTokensPref ?? 0) : 0;
  const cached = cachedBase + cachedPref;
  const read = t.prefillTokens;
  const d = run.el.dataset;
  d.cached = String(cached);
  d.read = String(read ?? '');
  d.cachedBase = String(cachedBase);
  d.cachedPref = String(cachedPref);
  const parts = [];
  if (Number.isFinite(ms)) parts.push(`first token after ${secs(ms)}`);
  parts.push(`prompt: ${int(cached)} tokens reused from the cache, ${int(read)} read`);
  const per = [];
  if (ctx.base) per.push(`base ${int(cachedBase)} of ${int(u.promptTokensBase)}`);
  if (ctx.pref) per.push(`preference ${int(cachedPref)} of ${int(u.promptTokensPref)}`);
  const n = Math.max(0, ...[...run.panels.values()].map((p) => p.steps.length));
  parts.push(`${n} token${n === 1 ? '' : 's'}${run.methods.length > 1 ? ' per method' : ''}`);
  if (Number.isFinite(t.decodeTokensPerS) && t.decodeTokensPerS > 0)
    parts.push(`${t.decodeTokensPerS.toFixed(1)} tok/s`);
  if (done.droppedTurns > 0)
    parts.push(`${done.droppedTurns} oldest turn${done.droppedTurns === 1 ? '' : 's'} left out to fit the context`);
  parts[0] = parts[0].charAt(0).toUpperCase() + parts[0].slice(1);
  run.figures.textContent = parts.join(' · ');
  run.figures.title = `Reused prompt tokens per context: ${per.join(', ')}. Prefill ${Math.round(t.prefillMs ?? 0)} ms.`;
}

/** How a run that did not finish ended. */
export function showEnd(run, outcome) {
  const n = Math.max(0, ...[...run.panels.values()].map((p) => p.steps.length));
  const ms = run.el.dataset.ttftMs;
  run.figures.textContent =
    `${outcome === 'stopped' ? 'Stopped' : 'Failed'} after ${n} token${n === 1 ? '' : 's'}` +
    (ms ? ` (first token after ${secs(Number(ms))})` : '');
}

/**
 * A turn's first run has ended: a finished turn joins the conversation (and may be compared);
 * a stopped or failed one stays on the page, marked as not part of it.
 */
export function settleTurn(turn, outcome) {
  turn.outcome = outcome;
  turn.el.dataset.outcome = outcome;
  if (outcome === 'done') {
    turn.compareButton.hidden = turn.runs[0].mode !== 'single';
  } else {
    turn.el.classList.add('left-out');
    const note = document.createElement('p');
    note.className = 'hint left-out-note';
    note.textContent = `This turn ${outcome === 'stopped' ? 'was stopped' : 'failed'}: it is not part of the conversation.`;
    turn.el.append(note);
  }
  setState(ui.app.dataset.state); // the buttons again: New chat needs a turn
  describeNextTurn();
}

/** The next turn, as the settings now describe it, above the Send button. */
export function describeNextTurn() {
  const method = document.querySelector('input[name="method"]:checked')?.value ?? 'amulet';
  const preference = ui.preference.value.trim();
  const kept = current.turns.filter((t) => t.outcome === 'done');
  const parts = [`Turn ${current.turns.length + 1}`];
  parts.push(
    ui.compareMode.checked
      ? `base | pref | amulet${['base', 'pref', 'amulet'].includes(method) ? '' : ` | ${method}`}, ${method} continues`
      : method,
  );
  if (method !== 'base' || ui.compareMode.checked) parts.push(preference ? `“${preference}”` : 'no preference');
  const last = kept.at(-1)?.settings.options.preference ?? '';
  let note = '';
  if (kept.length && preference !== last && (method !== 'base' || ui.compareMode.checked)) {
    note = ' · new preference: its context is read again, the base context is reused';
  } else if (kept.length) {
    note = ` · continues ${kept.length} turn${kept.length === 1 ? '' : 's'}`;
  }
  ui.nextTurn.textContent = parts.join(' · ') + note;
}
