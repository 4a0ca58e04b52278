// Statistics and plain-text tables shared by the bench scripts (browser-bench.mjs,
// llamacpp-bench.mjs): medians with min-max, ratios taken within a round, aligned columns.

/** Median, min, max and n of the finite numbers of `xs` (null when there are none). */
export function stats(xs) {
  const v = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return null;
  const m = v.length >> 1;
  const median = v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
  return { median, min: v[0], max: v[v.length - 1], n: v.length, values: xs };
}

/** Ratio a[i] / b[i] within each round i that has both, then their stats. */
export function pairedRatio(a, b) {
  const n = Math.min(a.length, b.length);
  const r = [];
  for (let i = 0; i < n; i++) if (a[i] != null && b[i] != null && b[i] !== 0) r.push(a[i] / b[i]);
  return stats(r);
}

export const fmt = (x, d = 1) => (x == null || !Number.isFinite(x) ? '-' : x.toFixed(d));
export const fmtS = (s, d = 1) => (s ? `${fmt(s.median, d)} (${fmt(s.min, d)}-${fmt(s.max, d)})` : '-');
/** A ratio's median, with its range when there is more than one round. */
export const fmtR = (s, d = 2) =>
  s ? (s.n > 1 ? `${fmt(s.median, d)}x (${fmt(s.min, d)}-${fmt(s.max, d)})` : `${fmt(s.median, d)}x`) : '-';

/** Rows of cells as aligned columns, the first row a header underlined with dashes. */
export function table(rows) {
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows
    .map((r, j) => {
      const line = r.map((c, i) => (i === 0 ? String(c).padEnd(w[i]) : String(c).padStart(w[i]))).join('  ');
      return j === 0 ? `${line}\n${w.map((n) => '-'.repeat(n)).join('  ')}` : line;
    })
    .join('\n');
}
