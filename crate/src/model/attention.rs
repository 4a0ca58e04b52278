//! Rotary embeddings, the per-sequence KV cache and causal attention, in plain Rust.
//!
//! Every row of a batch carries its own sequence and position (the two Amulet contexts
//! have different prompt lengths), which candle's batched rope/attention ops cannot
//! express; on these sizes (a few rows, head size 64-256) plain loops are also faster.

use super::config::RopeLayout;
use crate::backend::attend::{dot_blocks, dot_blocks2, scale_max, weighted_sum, weighted_sum2, LANES};
use crate::backend::exp::exp_shifted;
use crate::backend::pool::{split, threads, Shared};

/// cos/sin of position × frequency, grown on demand.
pub struct RopeTable {
    inv_freq: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    layout: RopeLayout,
}

impl RopeTable {
    pub fn new(rope_dim: usize, base: f32, layout: RopeLayout) -> Self {
        // Same f32 arithmetic as candle-transformers, so logits agree tightly.
        let inv_freq = (0..rope_dim).step_by(2).map(|i| 1f32 / base.powf(i as f32 / rope_dim as f32)).collect();
        RopeTable { inv_freq, cos: Vec::new(), sin: Vec::new(), layout }
    }

    fn ensure(&mut self, positions: usize) {
        let half = self.inv_freq.len();
        let have = self.cos.len() / half;
        if positions <= have {
            return;
        }
        let target = positions.next_power_of_two().max(64);
        // Computed with candle's own ops (its cos/sin differ from libm in the last bits),
        // so our logits reproduce candle-transformers' exactly.
        let table = || -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
            let dev = &candle_core::Device::Cpu;
            let pos = candle_core::Tensor::arange(have as u32, target as u32, dev)?
                .to_dtype(candle_core::DType::F32)?
                .reshape((target - have, 1))?;
            let freq = candle_core::Tensor::new(self.inv_freq.as_slice(), dev)?.reshape((1, half))?;
            let angle = pos.matmul(&freq)?;
            Ok((angle.cos()?.flatten_all()?.to_vec1()?, angle.sin()?.flatten_all()?.to_vec1()?))
        };
        match table() {
            Ok((c, s)) => {
                self.cos.extend(c);
                self.sin.extend(s);
            }
            Err(_) => {
                for p in have..target {
                    for &f in &self.inv_freq {
                        let angle = p as f32 * f;
                        self.cos.push(angle.cos());
                        self.sin.push(angle.sin());
                    }
                }
            }
        }
    }

    /// The cos and sin tables for positions 0..positions, `rope_dim / 2` values each
    /// (the WebGPU backend uploads the very same values).
    pub fn tables(&mut self, positions: usize) -> (&[f32], &[f32]) {
        self.ensure(positions);
        let n = positions * self.inv_freq.len();
        (&self.cos[..n], &self.sin[..n])
    }

    /// Rotates every head of `x` ([n_heads * head_dim]) in place for `position`.
    pub fn apply(&mut self, x: &mut [f32], head_dim: usize, position: usize) {
        self.ensure(position + 1);
        let half = self.inv_freq.len();
        let cos = &self.cos[position * half..(position + 1) * half];
        let sin = &self.sin[position * half..(position + 1) * half];
        for head in x.chunks_exact_mut(head_dim) {
            match self.layout {
                RopeLayout::Interleaved => {
                    for i in 0..half {
                        let (a, b) = (head[2 * i], head[2 * i + 1]);
                        head[2 * i] = a * cos[i] - b * sin[i];
                        head[2 * i + 1] = a * sin[i] + b * cos[i];
                    }
                }
                RopeLayout::Halves => {
                    for i in 0..half {
                        let (a, b) = (head[i], head[i + half]);
                        head[i] = a * cos[i] - b * sin[i];
                        head[i + half] = a * sin[i] + b * cos[i];
                    }
                }
            }
        }
    }
}

/// Keys and values of one sequence, one layer, appended in position order.
/// Keys are stored in blocks of eight positions, `[block][kv_head][head_dim][lane]`, so
/// one vector FMA advances eight dot products by one dimension (each still summed in
/// order, hence exact); values stay `[position][kv_dim]`.
#[derive(Default, Clone)]
pub struct LayerKv {
    k: Vec<f32>,
    pub v: Vec<f32>,
    len: usize,
}

/// Room for `more` values in `v`: exactly that much when it is at least an eighth of what `v`
/// holds and `step` (a prefill), else that eighth or `step` (a decode step), where `Vec`
/// would double (half of a long conversation's cache could be empty room). Each growth copies
/// the whole cache: at short contexts `step` sets how often (every 16 positions took 28 us of
/// SmolLM2's 4.4 ms decode step at 2 threads, a context; every 64, about a third of that).
fn make_room(v: &mut Vec<f32>, more: usize, step: usize) {
    if v.capacity() - v.len() < more {
        v.reserve_exact(more.max(v.len() / 8).max(step));
    }
}

/// Fewest positions a cache grows by.
const GROWTH: usize = 64;

impl LayerKv {
    /// Room for `positions` more (`make_room`: a prefill's exactly).
    fn reserve(&mut self, positions: usize, kv_dim: usize) {
        let keys = ((self.len + positions).div_ceil(LANES) * LANES * kv_dim).saturating_sub(self.k.len());
        make_room(&mut self.k, keys, GROWTH * kv_dim);
        make_room(&mut self.v, positions * kv_dim, GROWTH * kv_dim);
    }

    /// Appends one position (the model reserves room for a batch's first: `KvCache::reserve`).
    pub fn push(&mut self, k: &[f32], v: &[f32]) {
        let kv_dim = k.len();
        let (block, lane) = (self.len / LANES, self.len % LANES);
        if lane == 0 {
            self.k.resize((block + 1) * LANES * kv_dim, 0.0);
        }
        let base = block * LANES * kv_dim;
        for (i, &x) in k.iter().enumerate() {
            self.k[base + i * LANES + lane] = x;
        }
        self.v.extend_from_slice(v);
        self.len += 1;
    }

    fn truncate(&mut self, len: usize, kv_dim: usize) {
        if len < self.len {
            self.len = len;
            self.k.truncate(len.div_ceil(LANES) * LANES * kv_dim);
            self.v.truncate(len * kv_dim);
        }
    }
}

/// The whole KV cache of one sequence.
#[derive(Clone)]
pub struct KvCache {
    pub layers: Vec<LayerKv>,
    pub len: usize,
}

impl KvCache {
    pub fn new(n_layer: usize) -> Self {
        KvCache { layers: vec![LayerKv::default(); n_layer], len: 0 }
    }

    /// Room for `positions` more in every layer: exactly for a prefill, by an eighth for a
    /// decode step.
    pub fn reserve(&mut self, positions: usize, kv_dim: usize) {
        for l in &mut self.layers {
            l.reserve(positions, kv_dim);
        }
    }

    /// Drops positions >= len (undoes a failed step).
    pub fn truncate(&mut self, len: usize, kv_dim: usize) {
        for l in &mut self.layers {
            l.truncate(len, kv_dim);
        }
        self.len = self.len.min(len);
    }

    /// Frees the room the vectors grew into beyond what they hold.
    pub fn shrink(&mut self) {
        for l in &mut self.layers {
            l.k.shrink_to_fit();
            l.v.shrink_to_fit();
        }
    }

    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|l| (l.k.capacity() + l.v.capacity()) * 4).sum()
    }
}

pub struct AttentionShape {
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub window: Option<usize>,
}

/// Attention of every row of a batch (all heads): row `r` is query `q[r]` of a sequence whose
/// cache (already holding its position) and position are `rows[r]`; `[n_head * head_dim]`
/// values a row into `out`. The heads that share a kv head go together (each chunk of keys and
/// values read serves them all while it is in the L1 cache), in runs split across the CPU
/// threads: as many runs per group as it takes to give every thread two.
pub fn attend_rows(s: &AttentionShape, q: &[f32], rows: &[(&LayerKv, usize)], out: &mut [f32]) {
    let (hd, q_dim) = (s.head_dim, s.n_head * s.head_dim);
    let group = s.n_head / s.n_kv_head;
    let groups = rows.len() * s.n_kv_head;
    let per_run = group.div_ceil((2 * threads()).div_ceil(groups.max(1)).clamp(1, group));
    let runs = group.div_ceil(per_run);
    let shared = Shared::new(out);
    // Rows in zig-zag order (first, last, second, second to last, ...): a row's cost grows
    // with its position and each thread takes a run of consecutive items, so in row order the
    // second of 2 threads had about 3 times the first's share of a prefill (perf).
    let zigzag = |x: usize| if x.is_multiple_of(2) { x / 2 } else { rows.len() - 1 - x / 2 };
    split(groups * runs, 1, |items| {
        let mut scores = Vec::new();
        for item in items {
            let (r, g, run) = (zigzag(item / (s.n_kv_head * runs)), item / runs % s.n_kv_head, item % runs);
            let (kv, position) = rows[r];
            let h0 = g * group + run * per_run;
            let heads = h0..(h0 + per_run).min((g + 1) * group);
            let at = r * q_dim + h0 * hd..r * q_dim + heads.end * hd;
            // SAFETY: each run of heads of a row owns its own values of `out`.
            let oh = unsafe { shared.slice(at.clone()) };
            attend_heads(s, &q[at], g, kv, position, oh, &mut scores);
        }
    });
}

/// Key blocks scored per chunk, and positions summed per chunk: 64 positions of one kv head,
/// 16-64 KB of keys or values, read once from memory and then from L1 for each head.
const CHUNK_BLOCKS: usize = 8;
const CHUNK_POSITIONS: usize = CHUNK_BLOCKS * LANES;

/// Heads of kv group `g` (their queries `qs`, head after head) of one query row against the
/// cache, the weighted values into `out`; `scores` is scratch.
fn attend_heads(
    s: &AttentionShape,
    qs: &[f32],
    g: usize,
    kv: &LayerKv,
    position: usize,
    out: &mut [f32],
    scores: &mut Vec<f32>,
) {
    let (hd, kv_dim) = (s.head_dim, s.n_kv_head * s.head_dim);
    let start = match s.window {
        Some(w) => (position + 1).saturating_sub(w),
        None => 0,
    };
    // Each dot product is one sequential chain of fused multiply-adds with the scale applied
    // after it, as candle's gemm does for short rows; for longer rows candle's gemm sums in
    // SIMD lanes and then across them (8 or 16, chosen at run time), so from a few positions on
    // the two agree to rounding only (see crate/tests/model_reference.rs for the bounds).
    // The key blocks holding start..=position are scored whole, then trimmed to those positions.
    let (first, last) = (start / LANES, position / LANES);
    let (blocks, width) = (last + 1 - first, (last + 1 - first) * LANES);
    let kstride = kv_dim * LANES;
    let keys = &kv.k[first * kstride + g * hd * LANES..];
    // Every score of it is written below: only growth needs filling.
    scores.resize(qs.len() / hd * width, 0.0);
    // Heads two at a time while there are two (the AVX-512 tier runs a pair in one register).
    let nh = qs.len() / hd;
    for c in (0..blocks).step_by(CHUNK_BLOCKS) {
        let chunk = c..(c + CHUNK_BLOCKS).min(blocks);
        let k = &keys[c * kstride..];
        for h in (0..nh).step_by(2) {
            let q = &qs[h * hd..];
            if h + 1 < nh {
                let (s0, s1) = scores[h * width..(h + 2) * width].split_at_mut(width);
                let out = [&mut key_blocks(s0)[chunk.clone()], &mut key_blocks(s1)[chunk.clone()]];
                dot_blocks2([&q[..hd], &q[hd..2 * hd]], k, kstride, out);
            } else {
                let sh = &mut scores[h * width..(h + 1) * width];
                dot_blocks(&q[..hd], k, kstride, &mut key_blocks(sh)[chunk.clone()]);
            }
        }
    }
    let (lo, len) = (start - first * LANES, position + 1 - start);
    for sh in scores.chunks_exact_mut(width) {
        let p = &mut sh[lo..lo + len];
        let max = scale_max(p, s.scale);
        exp_shifted(p, max);
    }
    // Each head's total is one chain of adds in position order; the heads' chains run side by
    // side (one head at a time, each add waited for the one before).
    let mut h = 0;
    while h < nh {
        let totals: &[f32] = match nh - h {
            1 => &head_totals::<1>(scores, width, lo, len, h),
            2 => &head_totals::<2>(scores, width, lo, len, h),
            3 => &head_totals::<3>(scores, width, lo, len, h),
            _ => &head_totals::<4>(scores, width, lo, len, h),
        };
        for (i, &total) in totals.iter().enumerate() {
            for x in &mut scores[(h + i) * width + lo..][..len] {
                *x /= total;
            }
        }
        h += totals.len();
    }
    out.fill(0.0);
    let values = &kv.v[start * kv_dim + g * hd..];
    for c in (0..len).step_by(CHUNK_POSITIONS) {
        let chunk = c..(c + CHUNK_POSITIONS).min(len);
        let v = &values[c * kv_dim..];
        let w = |h: usize| &scores[h * width + lo..(h + 1) * width][chunk.clone()];
        for h in (0..nh).step_by(2) {
            if h + 1 < nh {
                let (o0, o1) = out[h * hd..(h + 2) * hd].split_at_mut(hd);
                weighted_sum2([w(h), w(h + 1)], v, kv_dim, [o0, o1]);
            } else {
                weighted_sum(w(h), v, kv_dim, &mut out[h * hd..(h + 1) * hd]);
            }
        }
    }
}

/// The sums of heads `h..h + N`'s scores at `lo..lo + len` (a head's row is `width` long),
/// each in position order.
#[inline(always)]
fn head_totals<const N: usize>(scores: &[f32], width: usize, lo: usize, len: usize, h: usize) -> [f32; N] {
    let rows: [&[f32]; N] = std::array::from_fn(|i| &scores[(h + i) * width + lo..][..len]);
    let mut totals = [0f32; N];
    for p in 0..len {
        for (t, row) in totals.iter_mut().zip(&rows) {
            *t += row[p];
        }
    }
    totals
}

/// A head's scores as key blocks of `LANES` positions.
fn key_blocks(scores: &mut [f32]) -> &mut [[f32; LANES]] {
    scores.as_chunks_mut::<LANES>().0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_keeps_norms_and_is_identity_at_zero() {
        for layout in [RopeLayout::Interleaved, RopeLayout::Halves] {
            let mut t = RopeTable::new(8, 10_000.0, layout);
            let x: Vec<f32> = (0..16).map(|i| i as f32 * 0.1 - 0.7).collect();
            let mut y = x.clone();
            t.apply(&mut y, 8, 0);
            assert_eq!(x, y);
            t.apply(&mut y, 8, 77);
            let n = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
            assert!((n(&x[..8]) - n(&y[..8])).abs() < 1e-4);
            assert_ne!(x, y);
        }
    }

    #[test]
    fn attention_with_one_position_returns_its_value() {
        let s = AttentionShape { n_head: 4, n_kv_head: 2, head_dim: 2, scale: 1.0, window: None };
        let mut kv = LayerKv::default();
        kv.push(&[1.0, 0.0, 0.0, 1.0], &[3.0, 4.0, 5.0, 6.0]);
        let q = vec![0.3; 8];
        let mut out = vec![0.0; 8];
        attend_rows(&s, &q, &[(&kv, 0)], &mut out);
        assert_eq!(out, vec![3.0, 4.0, 3.0, 4.0, 5.0, 6.0, 5.0, 6.0]);
    }

    #[test]
    fn window_limits_what_a_query_sees() {
        let s = AttentionShape { n_head: 1, n_kv_head: 1, head_dim: 1, scale: 1.0, window: Some(1) };
        let mut kv = LayerKv::default();
        for v in [10.0, 20.0, 30.0] {
            kv.push(&[0.0], &[v]);
        }
        let mut out = vec![0.0];
        attend_rows(&s, &[1.0], &[(&kv, 2)], &mut out);
        assert_eq!(out, vec![30.0]);
        let s = AttentionShape { window: None, ..s };
        attend_rows(&s, &[1.0], &[(&kv, 2)], &mut out);
        assert!((out[0] - 20.0).abs() < 1e-5);
    }

    /// One head over its whole range with the plain loops: the reference for the grouped,
    /// chunked and threaded form.
    fn plain_head(s: &AttentionShape, qh: &[f32], h: usize, kv: &LayerKv, position: usize) -> Vec<f32> {
        use crate::backend::attend::plain;
        let (hd, kv_dim) = (s.head_dim, s.n_kv_head * s.head_dim);
        let g = h / (s.n_head / s.n_kv_head);
        let start = s.window.map_or(0, |w| (position + 1).saturating_sub(w));
        let mut scores = vec![0f32; (position + 1) * LANES];
        let (blocks, _) = scores.as_chunks_mut::<LANES>();
        let n = position / LANES + 1;
        plain::dot_blocks(qh, &kv.k[g * hd * LANES..], kv_dim * LANES, &mut blocks[..n]);
        let p = &mut scores[start..=position];
        let max = plain::scale_max(p, s.scale);
        crate::backend::exp::plain::exp_shifted(p, max);
        let total = p.iter().fold(0f32, |t, &x| t + x);
        p.iter_mut().for_each(|x| *x /= total);
        let mut out = vec![0f32; hd];
        plain::weighted_sum(p, &kv.v[start * kv_dim + g * hd..], kv_dim, &mut out);
        out
    }

    #[test]
    fn grouped_chunked_threaded_attention_gives_the_plain_bits() {
        let mut rng = crate::rng::Rng::new(5);
        // Groups of three heads, and of seven (the Qwen 0.5B's: four heads' totals, then three).
        for (window, n_head) in [(None, 6), (Some(100), 6), (None, 14)] {
            let s = AttentionShape { n_head, n_kv_head: 2, head_dim: 64, scale: 0.125, window };
            let kv_dim = s.n_kv_head * s.head_dim;
            let mut kv = LayerKv::default();
            for _ in 0..300 {
                kv.push(&rng.vec(kv_dim, 1.0), &rng.vec(kv_dim, 1.0));
            }
            // Rows at positions across chunk and block edges (taken in zig-zag order), on one and
            // two threads (one row on two threads splits each group's three heads into runs of
            // two and one).
            for positions in [&[0, 64, 299][..], &[0, 64, 150, 299], &[299]] {
                let rows: Vec<(&LayerKv, usize)> = positions.iter().map(|&p| (&kv, p)).collect();
                let q = rng.vec(positions.len() * s.n_head * s.head_dim, 3.0);
                let want: Vec<f32> = (0..positions.len() * s.n_head)
                    .flat_map(|i| {
                        let (r, h) = (i / s.n_head, i % s.n_head);
                        plain_head(&s, &q[i * s.head_dim..(i + 1) * s.head_dim], h, &kv, positions[r])
                    })
                    .collect();
                for threads in [1, 2] {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                    let mut got = vec![0f32; q.len()];
                    pool.install(|| attend_rows(&s, &q, &rows, &mut got));
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&got), bits(&want), "window {window:?}, {positions:?}, {threads} threads");
                }
            }
        }
    }
}
