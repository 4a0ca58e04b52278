#!/usr/bin/env node
// Ours natively next to llama.cpp (node-llama-cpp's prebuilt CPU binary) on the same GGUF,
// the same prompt tokens and the same thread counts, interleaved in one run.
//
//   cd tests/bench && npm ci
//   node llamacpp-bench.mjs [--amulet ../../target/release/amulet] [--model GGUF]... [--threads 1,2]
//        [--rounds 3] [--tokens 128] [--prefill-tokens 400] [--out ../../target/bench/native-vs-llamacpp.json]
//
// Each round, for each thread count T (the order of the two engines alternates):
// - ours: `amulet bench --json --device cpu --threads T --runs 1 --tokens N --prefill-tokens P`
//   (its own load and 8-token warm-up; base and amulet decode, the long prompt's prefill, the
//   memory-read probe). Its JSON also carries the token ids of both prompts;
// - llama.cpp: the same token ids (the base context of the question, and the long prompt),
//   greedy (temperature 0), end-of-generation tokens yielded and generation carried on (as
//   our ignore_eos), N new tokens; a context per thread count (threads ideal = min = T).
// Decode tok/s counts forward passes: (N - 1) / (time of the last token - time of the first),
// for both (ours: its decode_tokens_per_s = N / decode time, where the decode time holds N - 1
// forward passes, times (N - 1) / N). Prefill: evaluating the long prompt (ours: its prefill
// ms; llama.cpp: evaluateWithoutGeneratingNewTokens).
// Ratios are taken within a round, then their median. llama.cpp's text is printed and checked
// (a portable build once wrote "!!!!" for Qwen): a broken text marks its figures as such.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { stats, pairedRatio, fmt, fmtS, fmtR, table } from './report.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(here, '..', '..');
const now = () => performance.now();

function parseArgs(argv) {
  const o = {
    amulet: path.join(REPO, 'target', 'release', 'amulet'),
    models: [],
    threads: [1, 2],
    rounds: 3,
    tokens: 128,
    prefillTokens: 400,
    out: path.join(REPO, 'target', 'bench', 'native-vs-llamacpp.json'),
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--amulet') o.amulet = path.resolve(val());
    else if (a === '--model') o.models.push(path.resolve(val()));
    else if (a === '--threads') o.threads = val().split(',').map(Number);
    else if (a === '--rounds') o.rounds = Number(val());
    else if (a === '--tokens') o.tokens = Number(val());
    else if (a === '--prefill-tokens') o.prefillTokens = Number(val());
    else if (a === '--out') o.out = path.resolve(val());
    else if (a === '--help' || a === '-h') {
      console.log(
        'usage: node llamacpp-bench.mjs [--amulet BIN] [--model GGUF]... [--threads 1,2] [--rounds 3] [--tokens 128]\n' +
          '         [--prefill-tokens 400] [--out FILE]\n' +
          'default model: models/cache/SmolLM2-135M-Instruct.Q4_1.gguf; --model again for more models (one after the other)',
      );
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  if (!o.models.length) o.models.push(path.join(REPO, 'models', 'cache', 'SmolLM2-135M-Instruct.Q4_1.gguf'));
  for (const k of ['rounds', 'tokens', 'prefillTokens'])
    if (!Number.isInteger(o[k]) || o[k] < 1) throw new Error(`--${k} must be a whole number >= 1`);
  if (o.tokens < 2) throw new Error('--tokens must be >= 2 (decode speed needs two tokens)');
  if (!o.threads.length || o.threads.some((t) => !Number.isInteger(t) || t < 1))
    throw new Error('--threads: comma-separated whole numbers >= 1');
  return o;
}

async function loadLlamaCpp() {
  let mod;
  try {
    mod = await import('node-llama-cpp');
  } catch (e) {
    throw new Error(`node-llama-cpp is missing (${e.message}): run npm ci in tests/bench`);
  }
  // The prebuilt CPU binary only: never compile llama.cpp, never download, never a GPU.
  const llama = await mod.getLlama({
    gpu: false,
    build: 'never',
    skipDownload: true,
    usePrebuiltBinaries: true,
    progressLogs: false,
    maxThreads: 0, // a context's `threads` is then the count it runs
    logLevel: 'error',
  });
  const pkg = JSON.parse(fs.readFileSync(path.join(here, 'node_modules', 'node-llama-cpp', 'package.json'), 'utf8'));
  return {
    llama,
    info: {
      package: `node-llama-cpp ${pkg.version}`,
      llamaCppRelease: llama.llamaCppRelease,
      buildType: llama.buildType,
      gpu: llama.gpu,
      systemInfo: llama.systemInfo.trim(),
    },
  };
}

/** One `amulet bench --json` run at `threads`: its whole JSON object. */
function oursRun(o, model, threads) {
  const args = ['bench', '--json', '--device', 'cpu', '--threads', String(threads), '--runs', '1'];
  args.push('--tokens', String(o.tokens), '--prefill-tokens', String(o.prefillTokens), '--model', model);
  const r = spawnSync(o.amulet, args, { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${o.amulet} ${args.join(' ')} failed (${r.status}): ${r.stderr.trim()}`);
  const line = r.stdout.trim().split('\n').at(-1);
  return JSON.parse(line);
}

/** Greedy decode of `tokens` new tokens after `prompt` on a fresh sequence history. */
async function llamaDecode(seq, model, prompt, tokens) {
  await seq.clearHistory();
  const out = [];
  let tFirst = null;
  let tLast = null;
  const t0 = now();
  for await (const tok of seq.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
    const t = now();
    tFirst ??= t;
    tLast = t;
    out.push(tok);
    if (out.length >= tokens) break;
  }
  return {
    decodeTps: (out.length - 1) / ((tLast - tFirst) / 1e3),
    ttftMs: tFirst - t0,
    tokens: out.length,
    text: model.detokenize(out),
  };
}

async function llamaPrefill(seq, prompt) {
  await seq.clearHistory();
  const t0 = now();
  await seq.evaluateWithoutGeneratingNewTokens(prompt);
  const ms = now() - t0;
  return { prefillMs: ms, prefillTps: prompt.length / (ms / 1e3) };
}

/** A text that reads like words: mostly letters and spaces, no long run of one character. */
function textLooksSane(text) {
  const t = text.trim();
  if (t.length < 8) return false;
  const letters = (t.match(/[\p{L}\s]/gu) ?? []).length;
  return letters / t.length >= 0.6 && !/(.)\1{11,}/su.test(t);
}

async function benchModel(o, llama, modelPath, log) {
  const name = path.basename(modelPath);
  log(`${name}: ours first (for the prompt token ids), then llama.cpp loads`);
  // Round 0's first ours run also gives the prompts; it counts as a sample.
  const first = oursRun(o, modelPath, o.threads[0]);
  const prompt = first.prompt_token_ids;
  const longPrompt = first.long_prompt_token_ids;
  if (!prompt?.length || !longPrompt?.length) throw new Error(`${o.amulet} bench --json gave no prompt token ids`);
  const t0 = now();
  const model = await llama.loadModel({ modelPath });
  const loadMs = now() - t0;
  const contexts = {};
  for (const t of o.threads) {
    const ctx = await model.createContext({
      contextSize: Math.max(1024, longPrompt.length + o.tokens + 16),
      batchSize: 512,
      threads: { ideal: t, min: t },
    });
    const seq = ctx.getSequence();
    await llamaDecode(seq, model, prompt, 8); // warm-up, not counted
    contexts[t] = { ctx, seq, currentThreads: ctx.currentThreads };
  }
  log(
    `${name}: llama.cpp loaded in ${fmt(loadMs, 0)} ms; prompt ${prompt.length} tokens, long prompt ${longPrompt.length}; threads ${o.threads.map((t) => `${t}->${contexts[t].currentThreads}`).join(', ')}`,
  );

  const samples = Object.fromEntries(o.threads.map((t) => [t, { ours: [], llama: [] }]));
  let firstUsed = false;
  for (let r = 0; r < o.rounds; r++) {
    for (const [i, t] of o.threads.entries()) {
      const oursFirst = (r + i) % 2 === 0;
      for (const who of oursFirst ? ['ours', 'llama'] : ['llama', 'ours']) {
        if (who === 'ours') {
          let j;
          if (!firstUsed && t === o.threads[0]) {
            j = first;
            firstUsed = true;
          } else j = oursRun(o, modelPath, t);
          const c = j.configs[0];
          const s = {
            baseTps: (c.base.decode_tokens_per_s * (o.tokens - 1)) / o.tokens,
            amuletTps: (c.amulet.decode_tokens_per_s * (o.tokens - 1)) / o.tokens,
            amuletOverBase: c.ratio,
            prefillMs: c.long_prefill?.prefill_ms,
            prefillTps: c.long_prefill?.prefill_tokens_per_s,
            readGBs: c.read_gb_s,
            bandwidthFraction: c.base_bandwidth_fraction,
            weightBytesPerToken: j.weight_bytes_per_token,
            threads: c.threads,
          };
          samples[t].ours.push(s);
          log(
            `round ${r + 1}/${o.rounds} ${t}T ours     : base ${fmt(s.baseTps)} tok/s, amulet ${fmt(s.amuletTps)}, prefill ${fmt(s.prefillTps, 0)} tok/s; probe ${fmt(s.readGBs)} GB/s`,
          );
        } else {
          const { seq } = contexts[t];
          const d = await llamaDecode(seq, model, prompt, o.tokens);
          const p = await llamaPrefill(seq, longPrompt);
          const s = { ...d, ...p, textOk: textLooksSane(d.text) };
          samples[t].llama.push(s);
          log(
            `round ${r + 1}/${o.rounds} ${t}T llama.cpp: ${fmt(s.decodeTps)} tok/s, prefill ${fmt(s.prefillTps, 0)} tok/s${s.textOk ? '' : '  TEXT LOOKS BROKEN'}`,
          );
        }
      }
    }
  }
  for (const { ctx } of Object.values(contexts)) await ctx.dispose();
  await model.dispose();

  const col = (t, who, k) => samples[t][who].map((s) => s[k]);
  const per = {};
  for (const t of o.threads) {
    per[t] = {
      ours: {
        baseTps: stats(col(t, 'ours', 'baseTps')),
        amuletTps: stats(col(t, 'ours', 'amuletTps')),
        amuletOverBase: stats(col(t, 'ours', 'amuletOverBase')),
        prefillTps: stats(col(t, 'ours', 'prefillTps')),
        readGBs: stats(col(t, 'ours', 'readGBs')),
        bandwidthFraction: stats(col(t, 'ours', 'bandwidthFraction')),
      },
      llama: {
        decodeTps: stats(col(t, 'llama', 'decodeTps')),
        prefillTps: stats(col(t, 'llama', 'prefillTps')),
        textOk: samples[t].llama.every((s) => s.textOk),
        text: samples[t].llama[0]?.text,
      },
      oursOverLlama: {
        decode: pairedRatio(col(t, 'ours', 'baseTps'), col(t, 'llama', 'decodeTps')),
        prefill: pairedRatio(col(t, 'ours', 'prefillTps'), col(t, 'llama', 'prefillTps')),
      },
    };
  }
  const scaling = {};
  const [one, ...more] = o.threads;
  for (const t of more) {
    scaling[`${t}/${one}`] = {
      oursDecode: pairedRatio(col(t, 'ours', 'baseTps'), col(one, 'ours', 'baseTps')),
      oursAmuletDecode: pairedRatio(col(t, 'ours', 'amuletTps'), col(one, 'ours', 'amuletTps')),
      oursPrefill: pairedRatio(col(t, 'ours', 'prefillTps'), col(one, 'ours', 'prefillTps')),
      llamaDecode: pairedRatio(col(t, 'llama', 'decodeTps'), col(one, 'llama', 'decodeTps')),
      llamaPrefill: pairedRatio(col(t, 'llama', 'prefillTps'), col(one, 'llama', 'prefillTps')),
    };
  }
  return {
    model: path.relative(REPO, modelPath),
    bytes: fs.statSync(modelPath).size,
    weightBytesPerToken: first.weight_bytes_per_token,
    promptTokens: prompt.length,
    longPromptTokens: longPrompt.length,
    llamaLoadMs: loadMs,
    llamaThreads: Object.fromEntries(o.threads.map((t) => [t, contexts[t].currentThreads])),
    per,
    scaling,
    samples,
  };
}

function printModel(o, m) {
  console.log(
    `\n${path.basename(m.model)} (${fmt(m.bytes / 1e6)} MB; ${fmt(m.weightBytesPerToken / 1e6)} MB of weights read a token): ${o.tokens} new tokens after a ${m.promptTokens}-token prompt, prefill of ${m.longPromptTokens} tokens; median (min-max) of ${o.rounds} round(s)`,
  );
  const rows = [
    [
      'threads',
      'ours base tok/s',
      'llama.cpp tok/s',
      'ours/llama.cpp',
      'ours prefill tok/s',
      'llama.cpp prefill tok/s',
      'ours/llama.cpp prefill',
      'ours amulet/base',
      'probe GB/s',
      'of bound',
    ],
  ];
  for (const t of o.threads) {
    const p = m.per[t];
    rows.push([
      `${t}`,
      fmtS(p.ours.baseTps),
      fmtS(p.llama.decodeTps) + (p.llama.textOk ? '' : ' (text broken)'),
      fmtR(p.oursOverLlama.decode),
      fmtS(p.ours.prefillTps, 0),
      fmtS(p.llama.prefillTps, 0),
      fmtR(p.oursOverLlama.prefill),
      fmtR(p.ours.amuletOverBase),
      fmt(p.ours.readGBs?.median),
      p.ours.bandwidthFraction ? `${fmt(p.ours.bandwidthFraction.median * 100, 0)}%` : '-',
    ]);
  }
  console.log(table(rows));
  for (const [k, s] of Object.entries(m.scaling)) {
    console.log(
      `${k} threads: ours decode ${fmtR(s.oursDecode)} (amulet ${fmtR(s.oursAmuletDecode)}), prefill ${fmtR(s.oursPrefill)}; llama.cpp decode ${fmtR(s.llamaDecode)}, prefill ${fmtR(s.llamaPrefill)}`,
    );
  }
  for (const t of o.threads) {
    const p = m.per[t].llama;
    console.log(`llama.cpp ${t}T text${p.textOk ? '' : ' (LOOKS BROKEN)'}: ${JSON.stringify(p.text?.slice(0, 200))}`);
  }
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const log = (s) => console.log(`[${((Date.now() - started) / 1e3).toFixed(0).padStart(4)} s] ${s}`);
  if (!fs.existsSync(o.amulet)) throw new Error(`no amulet binary at ${o.amulet} (cargo build --release)`);
  for (const m of o.models) if (!fs.existsSync(m)) throw new Error(`no model at ${m} (models/fetch.sh)`);
  const { llama, info } = await loadLlamaCpp();
  log(
    `${info.package} (llama.cpp ${info.llamaCppRelease.release}, ${info.buildType}, gpu: ${info.gpu}): ${info.systemInfo}`,
  );
  const result = {
    date: new Date().toISOString(),
    command: `node llamacpp-bench.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, loadavgAtStart: os.loadavg() },
    config: { threads: o.threads, rounds: o.rounds, tokens: o.tokens, prefillTokens: o.prefillTokens, greedy: true },
    llamaCpp: info,
    models: [],
  };
  for (const m of o.models) {
    const r = await benchModel(o, llama, m, log);
    result.models.push(r);
    printModel(o, r);
  }
  await llama.dispose();
  result.machine.loadavgAtEnd = os.loadavg();
  result.durationS = (Date.now() - started) / 1e3;
  console.log(
    `\ndecode tok/s = forward passes per second for both engines; ratios within a round, then the median. load average ${result.machine.loadavgAtStart.map((x) => x.toFixed(2)).join(' ')} -> ${result.machine.loadavgAtEnd.map((x) => x.toFixed(2)).join(' ')}`,
  );
  fs.mkdirSync(path.dirname(o.out), { recursive: true });
  fs.writeFileSync(o.out, JSON.stringify(result, null, 2) + '\n');
  console.log(`wrote ${path.relative(process.cwd(), o.out)}`);
}

main().catch((e) => {
  console.error(`llamacpp-bench: ${e?.stack ?? e}`);
  process.exit(1);
});
