// Real-sized models in Chromium through the npm package on the CPU path: Qwen2.5-Coder 0.5B
// (and the 1.5B in the large suite, AMULET_LARGE=1) loaded the way a page should load them
// (the package's Worker, the file read range by range, never whole in JS), answering with the
// same greedy tokens and text as the native CLI, for amulet with a preference and for base.
// Two builds of the wasm: relaxed SIMD with 2 threads (what Chromium picks) and the plain
// simd128 one with 1 thread (what an engine without relaxed SIMD gets).
// The wasm kernels and the native ones (AVX2) sum in different orders, so the two may part
// at a near-tie, and only there: the test allows a parting only after MIN_SAME equal tokens,
// and only to one of the CLI's candidates within TIE nats of its best. Amulet's combined
// distribution multiplies the two contexts' small differences by 1 + k and k (5.65 and
// 4.65), so its near-ties are wider: on this question, at the ninth token, the CLI's four
// candidates lie within 0.38 nats (0.28 / 0.26 / 0.22 / 0.20), the base rows of the simd128
// build and the CLI put " allows" at 0.38 and 0.37, and that build took the third candidate
// (0.27 nats under the best) where the CLI took the first.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { REPO, launchBrowser, requirePrerequisites, startServer } from './helpers.mjs';

const AMULET = path.join(REPO, 'target', 'release', 'amulet');
const MODELS = [
  ['qwen2.5-coder-0.5b-instruct-q4_k_m.gguf', 'models/fetch.sh qwen2.5-coder-0.5b-instruct-q4_k_m'],
  ['qwen2.5-coder-1.5b-instruct-q4_k_m.gguf', 'models/fetch.sh qwen2.5-coder-1.5b-instruct-q4_k_m'],
];
const large = process.env.AMULET_LARGE === '1';
const used = large ? MODELS : MODELS.slice(0, 1);

requirePrerequisites([
  [AMULET, 'cargo build --release'],
  ...used.map(([file, how]) => [path.join(REPO, 'models', 'cache', file), how]),
]);

const QUESTION = 'What is a hash map?';
const TIE = { base: 0.25, amulet: 0.4 };
const MIN_SAME = 6;
const REQUESTS = [
  { method: 'amulet', preference: 'concise', maxTokens: 10 },
  { method: 'base', maxTokens: 6 },
];

let server;
let browser;

before(async () => {
  server = await startServer(['--isolate']);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.close();
});

/** The native CLI's greedy answer (one thread: the reference path). */
function native(file, { method, preference, maxTokens }) {
  const args = ['generate', '--device', 'cpu', '--threads', '1', '--model', path.join(REPO, 'models', 'cache', file)];
  args.push('--method', method, '--max-tokens', String(maxTokens), '--top-logprobs', '4', '--json');
  if (preference) args.push('--preference', preference);
  const out = execFileSync(AMULET, [...args, QUESTION], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return JSON.parse(out);
}

for (const [file] of MODELS) {
  const skip = used.some(([f]) => f === file) ? false : 'the large suite (AMULET_LARGE=1) runs it';
  test(`${file}: the page's Worker gives the CLI's greedy text`, { skip, timeout: 900_000 }, async () => {
    const want = REQUESTS.map((r) => native(file, r));
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    try {
      await page.goto(server.url);
      const got = await page.evaluate(
        async ({ model, question, requests }) => {
          const { createWorkerEngine } = await import('/src/index.js');
          const builds = [];
          for (const options of [{ threads: 2 }, { threads: 1, simd: 'simd128' }]) {
            const engine = await createWorkerEngine(null, model, { device: 'cpu', cache: false, ...options });
            const runs = [];
            for (const r of requests) {
              let last;
              for await (const chunk of engine.generate({ ...r, prompt: question, ignoreEos: true })) last = chunk;
              runs.push({ text: last.text, tokens: last.tokens });
            }
            const { architecture, threads, simd } = engine.info;
            builds.push({ runs, info: { architecture, threads, simd } });
            await engine.dispose();
          }
          return builds;
        },
        { model: `/models/${file}`, question: QUESTION, requests: REQUESTS },
      );
      assert.deepEqual(errors, []);
      assert.deepEqual(
        got.map((b) => b.info),
        [
          { architecture: 'qwen2', threads: 2, simd: 'relaxed-simd' },
          { architecture: 'qwen2', threads: 1, simd: 'simd128' },
        ],
      );
      for (const [i, r] of REQUESTS.entries())
        for (const build of got) {
          const [page, cli] = [build.runs[i], want[i]];
          const what = `${build.info.simd}, ${r.method}: page "${page.text}" vs CLI "${cli.text}"`;
          assert.equal(page.tokens.length, r.maxTokens, what);
          const at = page.tokens.findIndex((t, j) => t !== cli.tokens[j]);
          if (at === -1) {
            assert.equal(page.text, cli.text);
            continue;
          }
          // Parted: only at a near-tie of the CLI's own step, to one of its close candidates.
          const step = cli.steps[at][r.method === 'base' ? 'base' : 'combined'];
          assert.ok(at >= MIN_SAME, `${what}: parted at token ${at}`);
          const took = step.find((c) => c.id === page.tokens[at]);
          assert.ok(took, `${what}: the page took none of the CLI's candidates ${JSON.stringify(step)}`);
          assert.ok(Math.log(step[0].prob / took.prob) < TIE[r.method], `${what}: parted at ${JSON.stringify(step)}`);
        }
    } finally {
      await page.close();
    }
  });
}
