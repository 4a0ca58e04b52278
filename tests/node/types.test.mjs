// The hand-written index.d.ts must type-check a usage file covering the public API
// (tsc --noEmit; the @ts-expect-error lines prove that wrong options are rejected).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

test('index.d.ts type-checks the usage file with tsc --noEmit', async () => {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const project = fileURLToPath(new URL('./types/tsconfig.json', import.meta.url));
  const { code, out } = await new Promise((resolve) => {
    execFile(process.execPath, [tsc, '--noEmit', '-p', project], (err, stdout, stderr) =>
      resolve({ code: err ? (err.code ?? 1) : 0, out: stdout + stderr }),
    );
  });
  assert.equal(code, 0, out);
});
