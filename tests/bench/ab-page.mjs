// Two builds of the package in headless Chromium, alternately: each round loads the model in a
// fresh page from each copy of www/ in turn and decodes base and then amulet after the demo's
// question. At 1 thread (the default) `AmuletEngine.load` on a plain origin: the unthreaded
// build, relaxed SIMD where Chromium has it. With --threads N (N > 1) `createWorkerEngine` on a
// cross-origin isolated origin: the threaded build in the package's Worker, as the browser
// bench runs it. Decode tok/s a round, then medians. For A/B runs of wasm changes on a machine
// whose speed drifts; printed, never asserted.
//
//   node tests/bench/ab-page.mjs --model models/cache/M.gguf [--rounds 3] [--tokens 128] [--threads 1] A B
//
// A and B are folders laid out like www/ (src/, pkg/, pkg-relaxed/), e.g. copies of www/ taken
// after `./build.sh build` at two commits. Each is served by the demo's server (www/demo/serve.mjs).
import fs from 'node:fs';
import path from 'node:path';
import { PROMPT, launchChromium, serveBuild } from './page-build.mjs';
import { stats, fmtS, fmtR } from './report.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};
const model = opt('--model', null);
const rounds = Number(opt('--rounds', '3'));
const tokens = Number(opt('--tokens', '128'));
const threads = Number(opt('--threads', '1'));
const builds = args.map((d) => path.resolve(d));
if (!model || !fs.statSync(model, { throwIfNoEntry: false })?.isFile() || !builds.length) {
  console.error('usage: node ab-page.mjs --model FILE.gguf [--rounds N] [--tokens N] [--threads N] WWW_A [WWW_B ...]');
  process.exit(2);
}
for (const d of builds) if (!fs.existsSync(path.join(d, 'src', 'index.js'))) throw new Error(`${d}: no src/index.js`);

// The demo's server, one per build: that build's folder at /, the model's folder at /models/.
const servers = [];
for (const www of builds) servers.push(await serveBuild(www, model, { isolate: threads > 1 }));
const browser = await launchChromium();

const runs = builds.map(() => []);
try {
  for (let r = 0; r < rounds; r++) {
    for (const [b, dir] of builds.entries()) {
      const page = await browser.newPage();
      // Any document of the build's origin will do to import the package from.
      await page.goto(`${servers[b].origin}/package.json`);
      const got = await page.evaluate(
        async ([modelUrl, prompt, tokens, threads]) => {
          const { AmuletEngine, createWorkerEngine } = await import('/src/index.js');
          const options = { device: 'cpu', threads };
          const engine =
            threads > 1
              ? await createWorkerEngine(null, modelUrl, options)
              : await AmuletEngine.load(modelUrl, options);
          if (engine.info.threads !== threads)
            throw new Error(`asked for ${threads} threads, got ${engine.info.threads}`);
          const decode = async (method, maxTokens) => {
            let last;
            const request = { prompt, preference: 'concise', method, maxTokens, ignoreEos: true, temperature: 0 };
            for await (const chunk of engine.generate(request)) if (chunk.done) last = chunk;
            if (!last) throw new Error(`${method}: the stream ended without its last chunk`);
            return last.timings.decodeTokensPerS;
          };
          await decode('base', 8); // warm-up: the engine's optimizing tier
          await decode('amulet', 8);
          const base = await decode('base', tokens);
          const amulet = await decode('amulet', tokens);
          const simd = engine.info.simd;
          await engine.dispose();
          return { base, amulet, simd };
        },
        [servers[b].modelUrl, PROMPT, tokens, threads],
      );
      await page.close();
      runs[b].push(got);
      const ratio = (got.amulet / got.base).toFixed(3);
      console.log(
        `round ${r + 1} ${path.basename(dir)} (${got.simd}): base ${got.base.toFixed(1)} amulet ${got.amulet.toFixed(1)} tok/s, ratio ${ratio}`,
      );
    }
  }
} finally {
  await browser.close();
  for (const server of servers) server.close();
}
for (const [b, dir] of builds.entries()) {
  const base = stats(runs[b].map((x) => x.base));
  const amulet = stats(runs[b].map((x) => x.amulet));
  const ratio = stats(runs[b].map((x) => x.amulet / x.base));
  console.log(`${dir}: base ${fmtS(base)}, amulet ${fmtS(amulet)} tok/s, amulet / base ${fmtR(ratio, 3)}`);
}
