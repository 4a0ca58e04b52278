// What the bench scripts share: the question they all ask; for the page scripts (ab-page.mjs,
// profile-page.mjs), a build of the package served by the demo's own server next to a model,
// and headless Chromium.
import path from 'node:path';
import { createServer } from '../../www/demo/serve.mjs';
import { CHROMIUM, CHROMIUM_ARGS } from '../chromium.mjs';

/** The question every bench asks (also `amulet bench`'s default prompt). */
export const PROMPT = 'How can I improve my eating habits without compromising on taste?';

/**
 * Serves `www` (a folder laid out like www/: src/, pkg/, pkg-relaxed/) at / and the folder of
 * `model` at /models/: `origin` (any document there will do to import the package from),
 * `modelUrl` (the model, relative to it) and `close`. `isolate`: with COOP/COEP headers, so
 * its pages can run the threaded build.
 */
export async function serveBuild(www, model, { isolate = false } = {}) {
  const server = createServer({ www, models: path.dirname(path.resolve(model)), isolate });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  return {
    origin: `http://127.0.0.1:${server.address().port}`,
    modelUrl: `/models/${encodeURIComponent(path.basename(model))}`,
    close: () => server.close(),
  };
}

/** Headless Chromium with the tests' flags (Playwright imported only here: node-webgpu-bench.mjs
 *  takes just the question). */
export async function launchChromium() {
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}
