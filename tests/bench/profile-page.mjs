// Where a decode's time goes in headless Chromium: Chromium's own sampling profiler (CDP
// `Profiler`) over base and then amulet decode of one model (1 thread, the unthreaded build),
// self time per function a decoded token (the wasm builds keep their names), and what amulet
// adds to base. The profiler slows the page (7-20% here): the split, not the speed, is the figure.
//
//   node tests/bench/profile-page.mjs --model models/cache/M.gguf [--tokens 128] [--top 25]
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PROMPT, launchChromium, serveBuild } from './page-build.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i < 0 ? dflt : args[i + 1];
};
const model = opt('--model', null);
const tokens = Number(opt('--tokens', '128'));
const top = Number(opt('--top', '25'));
if (!model || !fs.statSync(model, { throwIfNoEntry: false })?.isFile()) {
  console.error('usage: node profile-page.mjs --model FILE.gguf [--tokens N] [--top N]');
  process.exit(2);
}
const www = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../www');
const server = await serveBuild(www, model);
const browser = await launchChromium();

// Self time (ms) per function name in a CDP profile.
function selfTimes(profile) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const ms = new Map();
  const { samples, timeDeltas } = profile;
  for (let i = 0; i < samples.length; i++) {
    const f = byId.get(samples[i]).callFrame;
    // Rust's symbol hashes dropped, so that two builds' names compare.
    const name = (f.functionName || `(${f.url.split('/').pop() || 'program'})`).replace(/::h[0-9a-f]{16}$/, '');
    ms.set(name, (ms.get(name) ?? 0) + (timeDeltas[i + 1] ?? 0) / 1000);
  }
  return ms;
}

try {
  const page = await browser.newPage();
  await page.goto(`${server.origin}/package.json`);
  await page.evaluate(
    async ([modelUrl, prompt]) => {
      const { AmuletEngine } = await import('/src/index.js');
      globalThis.engine = await AmuletEngine.load(modelUrl, { device: 'cpu', threads: 1 });
      globalThis.decode = async (method, maxTokens) => {
        const request = { prompt, preference: 'concise', method, maxTokens, ignoreEos: true, temperature: 0 };
        let last;
        for await (const chunk of engine.generate(request)) if (chunk.done) last = chunk;
        if (!last) throw new Error(`${method}: the stream ended without its last chunk`);
        return last.timings;
      };
      await decode('base', 8);
      await decode('amulet', 8);
    },
    [server.modelUrl, PROMPT],
  );
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Profiler.enable');
  await cdp.send('Profiler.setSamplingInterval', { interval: 200 });
  const profiles = {};
  for (const method of ['base', 'amulet']) {
    await cdp.send('Profiler.start');
    const t = await page.evaluate(([m, n]) => decode(m, n), [method, tokens]);
    const { profile } = await cdp.send('Profiler.stop');
    profiles[method] = { ms: selfTimes(profile), timings: t };
    console.log(`${method}: decode ${t.decodeTokensPerS.toFixed(1)} tok/s, prefill ${t.prefillMs.toFixed(0)} ms`);
  }
  const names = new Set([...profiles.base.ms.keys(), ...profiles.amulet.ms.keys()]);
  const rows = [...names].map((n) => {
    const b = (profiles.base.ms.get(n) ?? 0) / tokens;
    const a = (profiles.amulet.ms.get(n) ?? 0) / tokens;
    return { n, b, a, d: a - b };
  });
  const total = (k) => rows.reduce((s, r) => s + r[k], 0);
  // The prefill's samples are in too (a few ms against the decode's seconds).
  console.log(
    `ms a token: base ${total('b').toFixed(2)}, amulet ${total('a').toFixed(2)}, extra ${total('d').toFixed(2)}`,
  );
  console.log('base ms/tok  amulet ms/tok  extra ms/tok  function');
  rows.sort((x, y) => y.a - x.a);
  for (const r of rows.slice(0, top))
    console.log(
      `${r.b.toFixed(3).padStart(11)}  ${r.a.toFixed(3).padStart(13)}  ${r.d.toFixed(3).padStart(12)}  ${r.n.slice(0, 110)}`,
    );
} finally {
  await browser.close();
  server.close();
}
