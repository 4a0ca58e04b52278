// Shared helpers of the browser tests: the demo server (www/demo/serve.mjs on a free port)
// and headless Chromium through playwright-core (the system's /usr/bin/chromium).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { CHROMIUM, CHROMIUM_ARGS } from '../chromium.mjs';
export { CHROMIUM, CHROMIUM_ARGS };

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '..', '..');
export const OUT = path.join(here, 'out');
export const DEFAULT_MODEL = path.join(REPO, 'models', 'cache', 'SmolLM2-135M-Instruct.Q4_1.gguf');

/**
 * Fails the suite when something it needs is missing, with the same words every suite uses
 * (Rust, Node, browser): a test that skips itself proves nothing. `extra` lists
 * [path, how to get it] pairs a suite needs beyond the common ones.
 */
export function requirePrerequisites(extra = []) {
  const missing =
    missingPrerequisite() ?? extra.filter(([p]) => !fs.existsSync(p)).map(([p, how]) => `${p} (${how})`)[0];
  if (missing) throw new Error(`missing prerequisite: ${missing}`);
}

/** What the suite needs before it can run; a string saying what is missing, or null. */
function missingPrerequisite() {
  if (!fs.existsSync(path.join(REPO, 'www', 'pkg', 'amulet_bg.wasm'))) return 'www/pkg (run ./build.sh build)';
  if (!fs.existsSync(path.join(REPO, 'www', 'src', 'index.js'))) return 'www/src/index.js (the package facade)';
  if (!fs.existsSync(DEFAULT_MODEL)) return `${DEFAULT_MODEL} (run models/fetch.sh)`;
  if (!fs.existsSync(CHROMIUM)) return `Chromium at ${CHROMIUM} (set CHROMIUM_PATH)`;
  return null;
}

/** Starts serve.mjs on a free port; resolves to { url, origin, close }. */
export function startServer(extraArgs = []) {
  const child = spawn(
    process.execPath,
    [path.join(REPO, 'www', 'demo', 'serve.mjs'), '--port', '0', '--quiet', ...extraArgs],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill();
      reject(new Error(`serve.mjs did not start: ${out}${err}`));
    }, 10_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`serve.mjs exited with ${code}: ${out}${err}`));
    });
    child.stdout.on('data', (d) => {
      out += d;
      const m = /http:\/\/127\.0\.0\.1:(\d+)\/demo\//.exec(out);
      if (!m) return;
      clearTimeout(timer);
      child.removeAllListeners('exit');
      const origin = `http://127.0.0.1:${m[1]}`;
      resolve({
        url: `${origin}/demo/`,
        origin,
        port: Number(m[1]),
        close: () =>
          new Promise((done) => {
            if (child.exitCode !== null) return done();
            child.once('exit', done);
            child.kill('SIGTERM');
          }),
      });
    });
  });
}

export function launchBrowser(extraArgs = []) {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS, ...extraArgs] });
}

export function outFile(name) {
  fs.mkdirSync(OUT, { recursive: true });
  return path.join(OUT, name);
}

/** Polls `fn` (async) until it returns a truthy value. */
export async function until(fn, { timeout = 30_000, interval = 100, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}
