// One turn of the conversation: chat.send (the chosen method) or chat.compare (base | pref |
// amulet in one batched decode, the chosen method's answer continuing the conversation),
// streamed into the turn's panels, with its time to first token, its reused and read prompt
// tokens, tokens/s and a Stop button. A finished single turn can be compared afterwards on a
// fork of the conversation as it was before it, which leaves the conversation unchanged.

import { appendToken } from './answers.js';
import { strengthOf, turnSettings } from './controls.js';
import { hideInspector } from './inspector.js';
import { clearError, current, setState, showError, ui } from './state.js';
import {
  addRun,
  addTurn,
  describeNextTurn,
  newConversation,
  settleTurn,
  showEnd,
  showFigures,
  showFirstToken,
} from './turns.js';

const COMPARED = ['base', 'pref', 'amulet'];

function fmtRate(x) {
  return Number.isFinite(x) && x > 0 ? x.toFixed(1) : '–';
}

/** The methods of a comparison: base, pref, amulet, and the chosen one when it is none of them. */
const comparedWith = (method) => (COMPARED.includes(method) ? COMPARED : [...COMPARED, method]);

async function strengthFor(options) {
  try {
    return await strengthOf(options.alpha, options.lambda, options.eta, options.iterations);
  } catch {
    return undefined; // the engine reports the bad option below
  }
}

/**
 * Streams `open(signal)` into `run`'s panels; resolves to 'done', 'stopped' or 'error'. The
 * stream is read to its end (not left at its `done` chunk): a chat adds the turn to its
 * history after the last chunk.
 */
async function play(run, open, what) {
  clearError();
  hideInspector();
  ui.tps.textContent = '–';
  ui.runStatus.textContent = 'Reading the new part of the conversation…';
  current.controller = new AbortController();
  setState('generating');
  const t0 = performance.now();
  let tFirst = 0;
  let steps = 0;
  let final = null;
  let outcome = 'done';
  try {
    for await (const chunk of open(current.controller.signal)) {
      if (chunk.done) {
        final = chunk;
        continue;
      }
      const panel = run.panels.get(chunk.method ?? run.methods[0]);
      if (!panel) continue;
      if (!tFirst) {
        tFirst = performance.now();
        showFirstToken(run, tFirst - t0);
      }
      appendToken(panel, chunk);
      // One decode step gives one token to every live method.
      steps = Math.max(steps, panel.steps.length);
      const dt = (performance.now() - tFirst) / 1000;
      if (steps > 1 && dt > 0) ui.tps.textContent = fmtRate((steps - 1) / dt);
      ui.runStatus.textContent = `Generating… ${steps} token${steps === 1 ? '' : 's'}${run.methods.length > 1 ? ' per method' : ''}`;
    }
    if (!final) throw new Error('the stream ended without its last chunk');
    finishRun(run, final, tFirst ? tFirst - t0 : NaN);
  } catch (e) {
    if (e?.code === 'ABORTED' || e?.name === 'AbortError') {
      outcome = 'stopped';
      const dt = tFirst ? (performance.now() - tFirst) / 1000 : 0;
      if (steps > 1 && dt > 0) ui.tps.textContent = fmtRate((steps - 1) / dt);
      ui.runStatus.textContent = `Stopped after ${steps} token${steps === 1 ? '' : 's'} (${((performance.now() - t0) / 1000).toFixed(1)} s).`;
      for (const p of run.panels.values()) p.foot.textContent = `${p.steps.length} tokens · stopped`;
    } else {
      outcome = 'error';
      showError(e, what);
      ui.runStatus.textContent = `Failed: ${e?.code ?? 'error'} (see the message above).`;
      for (const p of run.panels.values()) p.foot.textContent = `${p.steps.length} tokens · error`;
    }
    showEnd(run, outcome);
  } finally {
    current.controller = null;
    run.el.dataset.done = 'true';
    run.el.dataset.outcome = outcome;
    const hadFocus = document.activeElement === ui.stop;
    setState(current.engine ? 'ready' : 'idle');
    if (hadFocus || document.activeElement === document.body) ui.prompt.focus();
  }
  return outcome;
}

function finishRun(run, done, ttftMs) {
  const t = done.timings ?? {};
  if (Number.isFinite(t.decodeTokensPerS) && t.decodeTokensPerS > 0) ui.tps.textContent = fmtRate(t.decodeTokensPerS);
  const results =
    done.results ??
    (done.text !== undefined ? { [run.methods[0]]: { text: done.text, finishReason: done.finishReason } } : {});
  for (const p of run.panels.values()) {
    const reason = results[p.method]?.finishReason ?? done.finishReason ?? '';
    p.finish = reason;
    p.foot.textContent = `${p.steps.length} tokens${reason ? ` · ${reason}` : ''}`;
  }
  showFigures(run, done, ttftMs);
  const n = Math.max(0, ...[...run.panels.values()].map((p) => p.steps.length));
  const methods = run.methods.length;
  ui.runStatus.textContent = `Done: ${n} token${n === 1 ? '' : 's'}${methods > 1 ? ` × ${methods} methods in one batched decode` : ''}.`;
}

/** Sends the composer's message as the next turn. */
async function send() {
  if (current.busy || !current.engine || !current.chat) return;
  const text = ui.prompt.value;
  if (!text.trim()) {
    ui.runStatus.textContent = 'Write a message first.';
    ui.prompt.focus();
    return;
  }
  const settings = turnSettings();
  const { method, options } = settings;
  const mode = ui.compareMode.checked ? 'compare' : 'single';
  const methods = mode === 'compare' ? comparedWith(method) : [method];
  const k = await strengthFor(options);
  if (current.busy) return;
  const chat = current.chat;
  const turn = addTurn(text, chat.messages, settings);
  const run = addRun(turn, methods, { k, ratio: options.ratio, mode });
  ui.prompt.value = '';
  // The chat's preference follows the settings: when it changed, the engine reads only the
  // preference context again (the base context's cache is kept).
  chat.preference = options.preference;
  const outcome = await play(
    run,
    (signal) =>
      mode === 'compare'
        ? chat.compare(text, { ...options, methods, keep: method, signal })
        : chat.send(text, { ...options, method, signal }),
    mode === 'compare' ? 'compare' : 'send',
  );
  if (outcome !== 'done' && ui.prompt.value === '') ui.prompt.value = text; // to try again
  settleTurn(turn, outcome);
}

/** base | pref | amulet on a finished turn, from the conversation as it was before it. */
async function compareTurn(turn) {
  if (current.busy || !current.engine || turn.outcome !== 'done') return;
  const { method, options } = turn.settings;
  const methods = comparedWith(method);
  const k = await strengthFor(options);
  if (current.busy) return;
  turn.compareButton.hidden = true;
  const branch = current.engine.createChat({ messages: turn.before });
  const run = addRun(turn, methods, { k, ratio: options.ratio, mode: 'recompare' });
  const outcome = await play(run, (signal) => branch.compare(turn.text, { ...options, methods, signal }), 'compare');
  if (outcome !== 'done') turn.compareButton.hidden = false;
}

export function setupRun() {
  ui.askForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    send();
  });
  ui.stop.addEventListener('click', () => current.controller?.abort());
  ui.prompt.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      if (!current.engine && !current.busy) ui.runStatus.textContent = 'Load a model first (step 1).';
      else if (!current.busy) send();
    }
  });
  ui.newChat.addEventListener('click', () => {
    if (current.busy) return;
    clearError();
    newConversation();
    ui.runStatus.textContent = 'New chat: nothing of the old one is sent any more.';
    setState(current.engine ? 'ready' : 'idle');
    ui.prompt.focus();
  });
  ui.history.addEventListener('click', (ev) => {
    const button = ev.target.closest?.('button.turn-compare');
    if (!button) return;
    const turn = current.turns.find((t) => t.compareButton === button);
    if (turn) compareTurn(turn);
  });
  // The line above Send follows the settings.
  ui.settingsForm.addEventListener('input', describeNextTurn);
  ui.settingsForm.addEventListener('change', describeNextTurn);
  ui.settingsForm.addEventListener('click', (ev) => {
    if (ev.target.closest?.('.chip')) describeNextTurn();
  });
  ui.compareMode.addEventListener('change', describeNextTurn);
  describeNextTurn();
}
