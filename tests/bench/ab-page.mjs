// Two builds of the package in headless Chromium, alternately: each round loads the model in a
// fresh page from each copy of www/ in turn (`AmuletEngine.load`, 1 thread, not isolated, so
// the unthreaded build: relaxed SIMD where Chromium has it) and decodes base and then amulet
// after the demo's question. Decode tok/s a round, then medians. For A/B runs of wasm changes
// on a machine whose speed drifts; printed, never asserted.
//
//   node tests/bench/ab-page.mjs --model models/cache/M.gguf [--rounds 3] [--tokens 128] A B
//
// A and B are folders laid out like www/ (src/, pkg/, pkg-relaxed/), e.g. copies of www/ taken
// after `./build.sh build` at two commits.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { chromium } from 'playwright-core';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};
const model = path.resolve(opt('--model', ''));
const rounds = Number(opt('--rounds', '3'));
const tokens = Number(opt('--tokens', '128'));
const builds = args.map((d) => path.resolve(d));
if (!fs.existsSync(model) || builds.length < 1 || !builds.every((d) => fs.existsSync(path.join(d, 'src')))) {
  console.error('usage: node ab-page.mjs --model FILE.gguf [--rounds N] [--tokens N] WWW_A [WWW_B ...]');
  process.exit(2);
}
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const TYPES = { '.js': 'text/javascript', '.mjs': 'text/javascript', '.wasm': 'application/wasm' };

// /b0/..., /b1/...: the builds; /models/: the model; /: an empty page to import from.
const server = http.createServer((req, res) => {
  const url = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  const m = url.match(/^\/b(\d+)(\/.*)$/);
  const file = url === '/models/model.gguf' ? model : m && builds[+m[1]] ? path.join(builds[+m[1]], m[2]) : null;
  if (url === '/') {
    res.writeHead(200, { 'content-type': 'text/html' });
    return res.end('<!doctype html><title>ab</title>');
  }
  if (!file || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
    res.writeHead(404);
    return res.end();
  }
  res.writeHead(200, {
    'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
    'content-length': fs.statSync(file).size,
  });
  fs.createReadStream(file).pipe(res);
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const origin = `http://127.0.0.1:${server.address().port}`;
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });

const runs = builds.map(() => []);
try {
  for (let r = 0; r < rounds; r++) {
    for (const [b, dir] of builds.entries()) {
      const page = await browser.newPage();
      await page.goto(`${origin}/`);
      const got = await page.evaluate(
        async ([b, tokens]) => {
          const { AmuletEngine } = await import(`/b${b}/src/index.js`);
          const engine = await AmuletEngine.load('/models/model.gguf', { device: 'cpu', threads: 1 });
          const decode = async (method, maxTokens) => {
            let last;
            const prompt = 'How can I improve my eating habits without compromising on taste?';
            const request = { prompt, preference: 'concise', method, maxTokens, ignoreEos: true, temperature: 0 };
            for await (const chunk of engine.generate(request)) if (chunk.done) last = chunk;
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
        [b, tokens],
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
  server.close();
}
const median = (xs) => xs.slice().sort((a, b) => a - b)[xs.length >> 1];
for (const [b, dir] of builds.entries()) {
  const base = median(runs[b].map((x) => x.base));
  const amulet = median(runs[b].map((x) => x.amulet));
  const ratio = median(runs[b].map((x) => x.amulet / x.base));
  console.log(
    `${dir}: median base ${base.toFixed(1)} amulet ${amulet.toFixed(1)} tok/s, amulet / base ${ratio.toFixed(3)}`,
  );
}
