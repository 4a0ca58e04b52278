// The Results view: the evaluation results (docs/eval/ in the repository), served by serve.mjs
// at /results/ with /results/index.json listing each subfolder's charts and summary.md.

import { $ } from './state.js';

const results = {
  toggle: $('results-toggle'),
  view: $('results-view'),
  status: $('results-status'),
  body: $('results-body'),
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

export function setupResults() {
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
}
