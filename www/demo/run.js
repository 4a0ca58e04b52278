// One run: generate (the chosen method) or compare (base | pref | amulet in one batched decode),
// streamed into fresh answer panels, with tokens/s, a Stop button and the outcome on #answers.

import { appendToken, makePanel } from './answers.js';
import { requestOptions, strengthOf } from './controls.js';
import { hideInspector } from './inspector.js';
import { clearError, current, setState, showError, ui } from './state.js';

function fmtRate(x) {
  return Number.isFinite(x) && x > 0 ? x.toFixed(1) : '–';
}

async function run(mode) {
  if (current.busy || !current.engine) return;
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
  current.panels = new Map(methods.map((m) => [m, makePanel(m, k)]));
  ui.answers.className = `answers ${mode === 'compare' ? 'compare' : 'single'}`;
  ui.answers.replaceChildren(...[...current.panels.values()].map((p) => p.el));
  ui.answers.dataset.mode = mode;
  ui.answers.dataset.done = 'false';
  ui.tps.textContent = '–';
  ui.runStatus.textContent = 'Prefilling the prompt…';
  current.controller = new AbortController();
  setState('generating');
  const t0 = performance.now();
  let tFirst = 0;
  let steps = 0;
  let outcome = 'done';
  try {
    const stream =
      mode === 'compare'
        ? current.engine.compare({ ...options, methods, signal: current.controller.signal })
        : current.engine.generate({ ...options, method, signal: current.controller.signal });
    for await (const chunk of stream) {
      if (chunk.done) {
        finishRun(chunk, mode, methods);
        break;
      }
      const m = chunk.method ?? method;
      const panel = current.panels.get(m);
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
      const n = Math.max(0, ...[...current.panels.values()].map((p) => p.steps.length));
      const dt = tFirst ? (performance.now() - tFirst) / 1000 : 0;
      if (n > 1 && dt > 0) ui.tps.textContent = fmtRate((n - 1) / dt);
      ui.runStatus.textContent = `Stopped after ${n} token${n === 1 ? '' : 's'} (${((performance.now() - t0) / 1000).toFixed(1)} s).`;
      for (const p of current.panels.values()) p.foot.textContent = `${p.steps.length} tokens · stopped`;
    } else {
      outcome = 'error';
      showError(e, mode === 'compare' ? 'compare' : 'generate');
      ui.runStatus.textContent = `Failed: ${e?.code ?? 'error'} (see the message above).`;
      for (const p of current.panels.values()) p.foot.textContent = `${p.steps.length} tokens · error`;
    }
  } finally {
    current.controller = null;
    ui.answers.dataset.done = 'true';
    ui.answers.dataset.outcome = outcome;
    const hadFocus = document.activeElement === ui.stop;
    setState(current.engine ? 'ready' : 'idle');
    if (hadFocus || document.activeElement === document.body) ui.generate.focus();
  }
}

function finishRun(done, mode, methods) {
  const t = done.timings ?? {};
  if (Number.isFinite(t.decodeTokensPerS) && t.decodeTokensPerS > 0) ui.tps.textContent = fmtRate(t.decodeTokensPerS);
  const results =
    done.results ??
    (done.text !== undefined ? { [methods[0]]: { text: done.text, finishReason: done.finishReason } } : {});
  for (const p of current.panels.values()) {
    const r = Array.isArray(results) ? results.find((x) => x.method === p.method) : results[p.method];
    const reason = r?.finishReason ?? done.finishReason ?? '';
    p.finish = reason;
    p.foot.textContent = `${p.steps.length} tokens${reason ? ` · ${reason}` : ''}`;
  }
  const n = Math.max(0, ...[...current.panels.values()].map((p) => p.steps.length));
  const parts = [
    `Done: ${n} token${n === 1 ? '' : 's'}${methods.length > 1 ? ` × ${methods.length} methods in one batched decode` : ''}`,
  ];
  if (Number.isFinite(t.prefillMs)) parts.push(`prefill ${Math.round(t.prefillMs)} ms`);
  if (Number.isFinite(t.decodeMs)) parts.push(`decode ${(t.decodeMs / 1000).toFixed(1)} s`);
  ui.runStatus.textContent = parts.join(' · ') + '.';
}

export function setupRun() {
  ui.askForm.addEventListener('submit', (ev) => {
    ev.preventDefault();
    run('single');
  });
  ui.compare.addEventListener('click', () => run('compare'));
  ui.stop.addEventListener('click', () => current.controller?.abort());
  ui.prompt.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      if (!current.engine && !current.busy) ui.runStatus.textContent = 'Load a model first (step 1).';
      else if (!current.busy) run('single');
    }
  });
}
