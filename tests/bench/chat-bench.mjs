#!/usr/bin/env node
// Conversation benchmark of amulet-web in real headless Chromium, CPU path: the time to first
// token of a conversation's next turn on the engine that served the turn before (its caches
// kept) against an engine that keeps nothing, given the same messages; amulet, "concise".
//
//   cd tests/bench && npm ci && node chat-bench.mjs [--runs 2] [--history-tokens 1000]
//        [--tokens 16] [--where page,worker] [--budget-mib 256] [--model PATH]
//        [--out ../../target/bench/chat.json]
//
// A scripted history (committee minutes, as `amulet bench --history-tokens` uses natively) of
// at least --history-tokens tokens in the preference context, then per round, on the page's
// main thread and in a Worker (two engines each: `kept`, the default prefix cache with a
// budget of --budget-mib; `fresh`, prefixCacheBytes 0):
// - kept: chat.send(the turn before), then chat.send(the next turn), timed: createChat /
//   send -> first chunk; timings.prefillMs, cached tokens per context;
// - fresh: a chat given the same messages sends the same next turn, timed the same way;
// - their ratio (target <= 0.2x), whether both chose the same greedy tokens, and the bytes
//   the kept engine's prefix cache holds after the turn, against its budget.
// Rounds alternate which engine goes first. Prints a table and writes JSON.

import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { createServer as createDemoServer } from '../../www/demo/serve.mjs';
import { CHROMIUM, CHROMIUM_ARGS } from '../chromium.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(here, '..', '..');
const PREFERENCE = 'concise';
const METHOD = 'amulet';
const TARGET_RATIO = 0.2;
const FIRST_QUESTION = 'What did the committee decide at its first meeting?';
const ANSWER =
  'The committee reviewed the harbour plans, agreed the ferry terminal budget, heard complaints about night ' +
  'noise from the shipyard and set the dredging of the eastern channel for March. ';
const NEXT = 'Summarise all of that in one sentence.';
/** Characters per token assumed when sizing the history (SmolLM2's tokenizer: about 5 on this text). */
const CHARS_PER_TOKEN = 5;
/** The paper's system prompt and the preference sentence, roughly (only for sizing). */
const SYSTEM_CHARS = 470;

// ---------------------------------------------------------------------------------------
// arguments

function parseArgs(argv) {
  const o = {
    runs: 2,
    historyTokens: 1000,
    tokens: 16,
    beforeTokens: 8,
    where: ['page', 'worker'],
    budgetMiB: 256,
    model: path.join(REPO, 'models', 'cache', 'SmolLM2-135M-Instruct.Q4_1.gguf'),
    out: path.join(REPO, 'target', 'bench', 'chat.json'),
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--runs') o.runs = Number(val());
    else if (a === '--history-tokens') o.historyTokens = Number(val());
    else if (a === '--tokens') o.tokens = Number(val());
    else if (a === '--before-tokens') o.beforeTokens = Number(val());
    else if (a === '--budget-mib') o.budgetMiB = Number(val());
    else if (a === '--where') o.where = val().split(',');
    else if (a === '--model') o.model = path.resolve(val());
    else if (a === '--out') o.out = path.resolve(val());
    else if (a === '--help' || a === '-h') {
      console.log(
        'usage: node chat-bench.mjs [--runs 2] [--history-tokens 1000] [--tokens 16] [--before-tokens 8]\n' +
          '         [--where page,worker] [--budget-mib 256] [--model GGUF] [--out FILE]',
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  for (const k of ['runs', 'historyTokens', 'tokens', 'beforeTokens', 'budgetMiB']) {
    if (!Number.isInteger(o[k]) || o[k] < 1) throw new Error(`--${k} must be a whole number >= 1`);
  }
  for (const w of o.where) if (w !== 'page' && w !== 'worker') throw new Error(`--where: page or worker, not ${w}`);
  return o;
}

// ---------------------------------------------------------------------------------------
// the scripted conversation

/** A history of `turns` exchanges (ending with an answer), the turn before and the next turn. */
function conversation(turns) {
  const messages = [{ role: 'user', content: FIRST_QUESTION }];
  for (let n = 2; n <= turns; n++) {
    messages.push({ role: 'assistant', content: ANSWER.repeat(3) });
    messages.push({ role: 'user', content: `And at meeting number ${n}?` });
  }
  messages.push({ role: 'assistant', content: ANSWER.repeat(3) });
  return { messages, before: `And at meeting number ${turns + 1}?`, next: NEXT };
}

/** Exchanges whose estimated size reaches `tokens`, with a margin (the warm-up measures it). */
function turnsFor(tokens) {
  const perTurn = (ANSWER.length * 3 + 30) / CHARS_PER_TOKEN + 10;
  return Math.max(1, Math.ceil((tokens * 1.15 - SYSTEM_CHARS / CHARS_PER_TOKEN) / perTurn));
}

// ---------------------------------------------------------------------------------------
// server: serve.mjs's handler (www/ at /, the model folder at /models/) plus /chat-bench/
// (a blank page and chat-page.js), as browser-bench.mjs serves its page.

const PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>amulet-web conversation bench</title><link rel="icon" href="data:,"></head>
<body><p id="status">loading chat-page.js ...</p><script type="module" src="./chat-page.js"></script></body></html>
`;

function startServer(modelsDir) {
  const demoHandler = createDemoServer({ isolate: false, models: modelsDir }).listeners('request')[0];
  const headers = { 'X-Content-Type-Options': 'nosniff', 'Cache-Control': 'no-cache' };
  const server = http.createServer((req, res) => {
    const pathname = new URL(req.url, 'http://localhost').pathname;
    if (pathname === '/chat-bench/' || pathname === '/chat-bench/index.html') {
      res.writeHead(200, { ...headers, 'Content-Type': 'text/html; charset=utf-8' });
      return res.end(PAGE);
    }
    if (pathname === '/chat-bench/chat-page.js') {
      res.writeHead(200, { ...headers, 'Content-Type': 'text/javascript; charset=utf-8' });
      return res.end(fs.readFileSync(path.join(here, 'chat-page.js')));
    }
    return demoHandler(req, res);
  });
  return new Promise((resolve, reject) => {
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      resolve({
        origin: `http://127.0.0.1:${server.address().port}`,
        close: () =>
          new Promise((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}

// ---------------------------------------------------------------------------------------
// statistics and printing

function stats(xs) {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const m = v.length >> 1;
  const median = v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
  return { median, min: v[0], max: v[v.length - 1], n: v.length, values: xs };
}

const fmt = (x, d = 1) => (x == null ? '-' : x.toFixed(d));
const fmtS = (s, d = 1) => (s ? `${fmt(s.median, d)} (${fmt(s.min, d)}-${fmt(s.max, d)})` : '-');
const MiB = (b) => b / 2 ** 20;

function table(rows) {
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows
    .map((r, j) => {
      const line = r.map((c, i) => (i === 0 ? String(c).padEnd(w[i]) : String(c).padStart(w[i]))).join('  ');
      return j === 0 ? `${line}\n${w.map((n) => '-'.repeat(n)).join('  ')}` : line;
    })
    .join('\n');
}

// ---------------------------------------------------------------------------------------
// main

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const log = (s) => console.log(`[${((Date.now() - started) / 1e3).toFixed(0).padStart(4)} s] ${s}`);
  const wasmFile = path.join(REPO, 'www', 'pkg', 'amulet_bg.wasm');
  if (!fs.existsSync(wasmFile)) throw new Error('www/pkg is missing: run ./build.sh build');
  if (!fs.existsSync(o.model)) throw new Error(`no model at ${o.model}`);
  if (!fs.existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (set CHROMIUM_PATH)`);
  const budget = o.budgetMiB * 2 ** 20;
  const modelUrl = `/models/${encodeURIComponent(path.basename(o.model))}`;
  const wasmBytes = fs.readFileSync(wasmFile);

  const server = await startServer(path.dirname(o.model));
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  const result = {
    date: new Date().toISOString(),
    command: `node chat-bench.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      memGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
      loadavgAtStart: os.loadavg(),
    },
    browser: { version: browser.version(), path: CHROMIUM, headless: true },
    config: {
      runs: o.runs,
      historyTokens: o.historyTokens,
      tokens: o.tokens,
      beforeTokens: o.beforeTokens,
      preference: PREFERENCE,
      method: METHOD,
      greedy: true,
      device: 'cpu',
      budgetBytes: budget,
      targetRatio: TARGET_RATIO,
    },
    model: { path: path.relative(REPO, o.model), bytes: fs.statSync(o.model).size },
    wasm: {
      bytes: wasmBytes.length,
      sha256: crypto.createHash('sha256').update(wasmBytes).digest('hex').slice(0, 16),
      mtime: fs.statSync(wasmFile).mtime.toISOString(),
    },
    places: {},
  };
  try {
    const page = await (await browser.newContext()).newPage();
    page.on('pageerror', (e) => console.error(`  [page error] ${e.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') console.error(`  [console.error] ${m.text()}`);
    });
    await page.goto(`${server.origin}/chat-bench/`);
    await page.waitForFunction(() => window.chatBenchReady === true, null, { timeout: 30_000 });
    result.env = await page.evaluate(() => window.chatBench.env());
    log(
      `Chromium ${browser.version()}, ${result.env.hardwareConcurrency} cores seen by the page; model ${path.basename(o.model)}`,
    );

    let turns = turnsFor(o.historyTokens);
    for (const where of o.where) {
      const loaded = await page.evaluate((a) => window.chatBench.load(a), { url: modelUrl, where, budget });
      log(
        `${where}: kept engine loaded in ${fmt(loaded.kept.loadMs, 0)} ms, fresh in ${fmt(loaded.fresh.loadMs, 0)} ms (${loaded.kept.info.device}, ${loaded.kept.info.threads} thread(s))`,
      );
      const args = (extra) => ({
        ...conversation(turns),
        preference: PREFERENCE,
        method: METHOD,
        tokens: o.tokens,
        beforeTokens: o.beforeTokens,
        ...extra,
      });
      // Warm-up (not counted): the kept engine alone; it also measures the history, which
      // grows until the turn before's preference context has --history-tokens tokens.
      let warm;
      for (let tries = 0; ; tries++) {
        warm = await page.evaluate((a) => window.chatBench.round(a), args({ keptOnly: true }));
        const have = warm.kept.turnBefore.promptTokensPref;
        log(
          `${where} warm-up: ${turns} scripted exchanges, the turn before reads ${have} preference-context tokens in ${fmt(warm.kept.turnBefore.prefillMs, 0)} ms; the next turn: TTFT ${fmt(warm.kept.timed.ttftMs, 0)} ms`,
        );
        if (have >= o.historyTokens) break;
        if (tries >= 3) throw new Error(`the history stays under ${o.historyTokens} tokens (${have})`);
        turns = Math.ceil((turns * o.historyTokens * 1.05) / have);
      }
      let lastHistory = warm.kept.history;
      const rounds = [];
      for (let r = 0; r < o.runs; r++) {
        const freshFirst = r % 2 === 1;
        const round = await page.evaluate(
          (a) => window.chatBench.round(a),
          args(freshFirst ? { freshHistory: lastHistory } : {}),
        );
        lastHistory = round.kept.history;
        const k = round.kept.timed;
        const f = round.fresh.timed;
        const sample = {
          freshFirst,
          freshHistoryMatched: round.freshHistoryMatched,
          kept: k,
          fresh: f,
          turnBefore: round.kept.turnBefore,
          ttftRatio: k.ttftMs / f.ttftMs,
          sameTokens: JSON.stringify(k.tokens) === JSON.stringify(f.tokens),
          keptCache: round.kept.usage,
          freshCache: round.fresh.usage,
          historyMessages: round.kept.history.length,
        };
        delete sample.kept.tokens;
        delete sample.fresh.tokens;
        delete sample.turnBefore.tokens;
        rounds.push(sample);
        log(
          `${where} round ${r + 1}/${o.runs}${freshFirst ? ' (fresh first)' : ''}: kept TTFT ${fmt(k.ttftMs, 0)} ms (prefill ${fmt(k.prefillMs, 0)} ms, ${k.prefillTokens} read, ${k.cachedTokensBase}+${k.cachedTokensPref} reused), fresh TTFT ${fmt(f.ttftMs, 0)} ms (prefill ${fmt(f.prefillMs, 0)} ms, ${f.prefillTokens} read): ${fmt(sample.ttftRatio, 3)}x; same tokens: ${sample.sameTokens}; prefix cache ${fmt(MiB(sample.keptCache.prefixCacheBytes))} MiB in ${sample.keptCache.prefixCacheSequences} sequences`,
        );
      }
      const s = (f) => stats(rounds.map(f));
      result.places[where] = {
        load: loaded,
        scriptedExchanges: turns,
        historyTokensPref: rounds[0]?.turnBefore.promptTokensPref,
        promptTokensBase: rounds[0]?.kept.promptTokensBase,
        promptTokensPref: rounds[0]?.kept.promptTokensPref,
        keptTtftMs: s((x) => x.kept.ttftMs),
        freshTtftMs: s((x) => x.fresh.ttftMs),
        keptPrefillMs: s((x) => x.kept.prefillMs),
        freshPrefillMs: s((x) => x.fresh.prefillMs),
        keptReadTokens: rounds[0]?.kept.prefillTokens,
        freshReadTokens: rounds[0]?.fresh.prefillTokens,
        cachedTokensBase: rounds[0]?.kept.cachedTokensBase,
        cachedTokensPref: rounds[0]?.kept.cachedTokensPref,
        ttftRatio: s((x) => x.ttftRatio),
        withinTarget: rounds.every((x) => x.ttftRatio <= TARGET_RATIO),
        sameTokens: rounds.every((x) => x.sameTokens),
        freshHistoryMatched: rounds.every((x) => x.freshHistoryMatched),
        prefixCacheBytes: s((x) => x.keptCache.prefixCacheBytes),
        prefixCacheSequences: s((x) => x.keptCache.prefixCacheSequences),
        freshPrefixCacheBytes: Math.max(...rounds.map((x) => x.freshCache.prefixCacheBytes)),
        withinBudget: rounds.every((x) => x.keptCache.prefixCacheBytes <= budget),
        rounds,
      };
      await page.evaluate(() => window.chatBench.dispose());
    }
    result.machine.loadavgAtEnd = os.loadavg();
    result.durationS = (Date.now() - started) / 1e3;

    // ---- print
    console.log(
      `\nChromium ${browser.version()} headless, ${result.machine.cpus} cores (${result.machine.cpuModel}); model ${path.basename(o.model)}; ${METHOD}, "${PREFERENCE}", greedy, CPU path; the next turn of a conversation, ${o.tokens} new tokens; median (min-max) of ${o.runs} round(s)`,
    );
    const rows = [
      [
        'where',
        'history tok',
        'kept TTFT ms',
        'fresh TTFT ms',
        'ratio',
        'kept read / reused',
        'fresh read',
        'same tokens',
        'cache MiB (seqs) / budget',
      ],
    ];
    for (const [where, p] of Object.entries(result.places)) {
      rows.push([
        where === 'page' ? 'page (main thread)' : 'Worker',
        String(p.historyTokensPref),
        fmtS(p.keptTtftMs, 0),
        fmtS(p.freshTtftMs, 0),
        `${fmtS(p.ttftRatio, 3)}`,
        `${p.keptReadTokens} / ${p.cachedTokensBase + p.cachedTokensPref}`,
        String(p.freshReadTokens),
        String(p.sameTokens),
        `${fmt(MiB(p.prefixCacheBytes.median))} (${p.prefixCacheSequences.median}) / ${o.budgetMiB}`,
      ]);
    }
    console.log(table(rows));
    for (const [where, p] of Object.entries(result.places)) {
      console.log(
        `${where}: ratio ${fmt(p.ttftRatio.median, 3)}x (target <= ${TARGET_RATIO}x: ${p.withinTarget ? 'met' : 'NOT met'}); greedy tokens kept = fresh: ${p.sameTokens}; prefix cache within its budget: ${p.withinBudget}; the fresh engine kept ${p.freshPrefixCacheBytes} bytes`,
      );
    }
    console.log(
      `duration ${fmt(result.durationS, 0)} s; load average ${result.machine.loadavgAtStart.map((x) => x.toFixed(2)).join(' ')} -> ${result.machine.loadavgAtEnd.map((x) => x.toFixed(2)).join(' ')}`,
    );
    fs.mkdirSync(path.dirname(o.out), { recursive: true });
    fs.writeFileSync(o.out, JSON.stringify(result, null, 2) + '\n');
    console.log(`wrote ${path.relative(process.cwd(), o.out)}`);
    const failed = Object.values(result.places).some((p) => !p.sameTokens || !p.withinBudget);
    if (failed) process.exitCode = 2; // a wrong answer or an overspent budget, not a slow machine
  } finally {
    await browser.close().catch(() => {});
    await server.close();
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((e) => {
    console.error(`chat-bench: ${e?.stack ?? e}`);
    process.exit(1);
  });
}
