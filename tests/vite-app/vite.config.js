// Vite settings a site using amulet-web needs:
// - optimizeDeps.exclude: the dev server's dependency pre-bundling would move the package's
//   code away from its pkg/amulet_bg.wasm and worker.js (new URL(..., import.meta.url));
// - worker.format 'es': the worker is a module worker (it imports the wasm glue).
import { fileURLToPath } from 'node:url';

export default {
  root: fileURLToPath(new URL('.', import.meta.url)),
  optimizeDeps: { exclude: ['amulet-web'] },
  worker: { format: 'es' },
  build: { target: 'es2022', outDir: 'dist', emptyOutDir: true },
};
