// The wasm weight kernels alone, in headless Chromium (default) or Node (--node): GB/s of GGUF
// bytes for 1 and 2 activation rows over one small matrix that stays in cache (the kernel's
// arithmetic) and over copies of a real-shaped one, 128 MB or more (every call streams its
// weights past the caches, as a decode step does), next to a plain 16-byte read and the
// touch-ahead's one byte in 64 over as many bytes; `exp`: ns a value of the engine's four-lane
// exponentials (SwiGLU's gates and a softmax's scores) next to one `f32::exp` call a value.
// Each figure is the fastest of 5 timed calls after 2 warm-up calls (the engine's optimizing
// tier). Printed, never asserted.
//
// Run from the repository root: `node tests/bench/wasm-kernels/run.mjs [--node] [--simd128]
// [formats...]` (formats: q4_1 q5_0 q8_0 q4_k q6_k exp; default all). It builds this crate for
// wasm32 (relaxed SIMD unless --simd128) into tests/bench/wasm-kernels/target.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const inNode = args.includes('--node');
const simd = args.includes('--simd128') ? '+simd128' : '+simd128,+relaxed-simd';
const formats = args.filter((a) => !a.startsWith('--'));
const target = path.join(here, 'target');
const pkg = path.join(target, 'pkg');

// The repository's lock file, so that this build takes the dependency versions the crate's own
// builds and tests take (cargo trims it to what this crate uses).
fs.copyFileSync(path.join(here, '../../../Cargo.lock'), path.join(here, 'Cargo.lock'));
execFileSync('cargo', ['build', '--release', '--target', 'wasm32-unknown-unknown', '--target-dir', target], {
  cwd: here,
  stdio: 'inherit',
  env: { ...process.env, RUSTFLAGS: `-C target-feature=${simd}` },
});
const wasm = path.join(target, 'wasm32-unknown-unknown/release/wasm_kernels_bench.wasm');
const bindgen = ['--target', 'web', '--out-dir', pkg, '--out-name', 'bench', wasm];
execFileSync('wasm-bindgen', bindgen, { stdio: 'inherit' });
// The address-offset folding that build.sh's optimize_wasm gives every wasm build (tests'
// `optimize-wasm` script: binaryen's wasm-opt), so that these kernels are the ones the package ships.
const tests = path.join(here, '../..');
if (!fs.existsSync(path.join(tests, 'node_modules/.bin/wasm-opt'))) throw new Error('run npm ci in tests first');
const optimized = path.join(pkg, 'bench_bg.wasm');
execFileSync('npm', ['run', '--silent', 'optimize-wasm', '--', optimized, '-o', optimized], {
  cwd: tests,
  stdio: 'inherit',
});

// Real shapes: the 0.5B's gate rows for Q5_0 and Q8_0 (its output projection is Q8_0 on the
// same 896 columns), its down projection for the K-quants, SmolLM2's gate for Q4_1.
const SHAPES = { q4_1: [1536, 576], q5_0: [4864, 896], q8_0: [4864, 896], q4_k: [896, 4864], q6_k: [896, 4864] };

/** Runs in the page or in Node: one line of figures a format. */
async function measure(Bench, exp, formats, shapes) {
  const best = (f) => {
    f();
    f();
    let t = Infinity;
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      f();
      t = Math.min(t, performance.now() - t0);
    }
    return t;
  };
  const gbs = (bytes, ms) => (bytes / ms / 1e6).toFixed(1).padStart(6);
  const lines = [
    'format   rows x cols   cache m=1  cache m=2  stream m=1  stream m=2  m=2/m=1 (stream)  read  touch   GB/s',
  ];
  for (const f of formats) {
    if (f === 'exp') {
      const reps = 2000;
      const ns = (lanes) => ((best(() => exp.exp_run(lanes, reps)) / (reps * exp.exp_values())) * 1e6).toFixed(2);
      lines.push(`exp: ${ns(true)} ns a value on four lanes, ${ns(false)} one call a value`);
      continue;
    }
    const [n, k] = shapes[f];
    const hot = new Bench(f, 512, k, 1);
    // One copy of the real shape: its rows times the bytes of one of the hot matrix's 512.
    const once = (hot.bytes() / 512) * n;
    const cold = new Bench(f, n, k, Math.ceil(128e6 / once));
    const reps = Math.ceil(64e6 / hot.bytes());
    const h = [1, 2].map((m) => best(() => hot.run(m, reps)));
    const c = [1, 2].map((m) => best(() => cold.run(m, 1)));
    const r = best(() => cold.read());
    const t = best(() => cold.touch());
    lines.push(
      `${f.padEnd(6)} ${`${n} x ${k}`.padStart(12)}  ${gbs(hot.bytes() * reps, h[0])}     ${gbs(hot.bytes() * reps, h[1])}      ` +
        `${gbs(cold.bytes(), c[0])}      ${gbs(cold.bytes(), c[1])}     ${(c[0] / c[1]).toFixed(2).padStart(13)}     ` +
        `${gbs(cold.bytes(), r)} ${gbs(cold.bytes(), t)}`,
    );
    hot.free();
    cold.free();
  }
  return lines.join('\n');
}

const chosen = formats.length ? formats : [...Object.keys(SHAPES), 'exp'];
if (inNode) {
  const { default: init, Bench, exp_run, exp_values } = await import(path.join(pkg, 'bench.js'));
  await init({ module_or_path: fs.readFileSync(path.join(pkg, 'bench_bg.wasm')) });
  console.log(`Node ${process.version}, ${simd}`);
  console.log(await measure(Bench, { exp_run, exp_values }, chosen, SHAPES));
} else {
  const { chromium } = await import('playwright-core');
  const { CHROMIUM, CHROMIUM_ARGS } = await import('../../chromium.mjs');
  const page = `<script type="module">
    import init, { Bench, exp_run, exp_values } from './bench.js';
    await init();
    const measure = ${measure.toString()};
    window.RESULT = await measure(Bench, { exp_run, exp_values }, ${JSON.stringify(chosen)}, ${JSON.stringify(SHAPES)});
  </script>`;
  const server = http.createServer((req, res) => {
    const name = new URL(req.url, 'http://x').pathname.slice(1);
    if (name === '' || name === 'index.html') return res.end(page);
    const file = path.join(pkg, path.basename(name));
    if (!fs.existsSync(file)) return res.writeHead(404).end();
    res.setHeader('content-type', file.endsWith('.wasm') ? 'application/wasm' : 'text/javascript');
    res.end(fs.readFileSync(file));
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  try {
    const tab = await browser.newPage();
    tab.on('pageerror', (e) => console.error('page error:', e.message));
    await tab.goto(`http://127.0.0.1:${server.address().port}/`);
    await tab.waitForFunction(() => window.RESULT, null, { timeout: 600_000 });
    console.log(`${browser.version()} headless, ${simd}`);
    console.log(await tab.evaluate(() => window.RESULT));
  } finally {
    await browser.close();
    server.close();
  }
}
