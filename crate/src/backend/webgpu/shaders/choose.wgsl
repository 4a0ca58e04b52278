// The "choose" family: Amulet's combine and the next-token choice on the GPU, so a
// decode step reads back a few words instead of whole vocabulary rows.
//
// One workgroup of 256 threads per request. The combined row (pref + k·(pref − base), or
// one row as is) is never stored: every pass recomputes it from the logits. Scores are
// compared through order-preserving u32 keys (−0 counted as +0), so "higher score first,
// lower id on ties" is a plain integer order, as in sample.rs.
//   1. One pass: max key + argmax (lowest id on ties) + a non-finite flag. Non-finite
//      rows report STATUS_NON_FINITE (the CPU reads the rows and says where); greedy is
//      done.
//   2. Plain temperature: each thread sums exp((x − max)/T) over a contiguous chunk, a
//      workgroup prefix scan finds the chunk holding u·total, and that thread walks it in
//      id order (zero weights skipped; never crossed: the last positive weight).
//   3. top-k / top-p: a radix select (8-bit digits, workgroup atomic histograms) over the
//      keys, then the ids of tied keys, finds the exact threshold of the m best
//      candidates; they are collected into workgroup memory, bitonic-sorted by (score
//      desc, id asc), and thread 0 does the nucleus cut and the inverse-CDF draw in that
//      order, like sample.rs. m = min(universe, MAX_SORTED), where the universe is the
//      top-k set or the row; a top-p universe larger than MAX_SORTED gets its total mass
//      from a reduction, and a nucleus that does not fit reports STATUS_TOO_MANY (the CPU
//      then samples with the same uniform), as does top-k alone with k > MAX_SORTED.
//   4. top_n: the same selection with n; probabilities exp(x − max) / sum over the row.
// Arithmetic is f32 (the CPU uses f64 for weights), so a draw can differ only when u
// lies within float noise of a CDF boundary, and weights below ~e^-87 are 0 here.
// Portability (Tint): barriers only in uniform control flow, values steering loops come
// through workgroupUniformLoad, no f16 / subgroups / 64-bit, 11 KiB of workgroup memory.
//
// Result per request (CHOOSE_WORDS u32): status, chosen id, n_top, 0 (CHOOSE_HEADER_WORDS),
// then n_top × (id, prob bits).

// MAX_SORTED, MAX_TOP_N, NO_ROW, the result layout (CHOOSE_WORDS, CHOOSE_HEADER_WORDS,
// STATUS_*) and BELOW_ONE (the largest f32 below 1: a uniform rounded up to 1.0 on its way
// to f32 stays a draw) come from the prelude (abi.rs).
const WG: u32 = 256u;
const NONE: u32 = 0xffffffffu;
const NEVER: f32 = 3.0e38;

struct Info {
    vocab: u32,
    n_requests: u32,
    _pad0: u32,
    _pad1: u32,
}

// Mirrors ChooseParams in choose.rs.
struct Request {
    base_row: u32,
    pref_row: u32,
    k: f32,
    temperature: f32,
    top_k: u32,
    top_p: f32,
    // The CPU sampler's uniform in [0, 1) for this draw (TokenRequest::uniform).
    u: f32,
    top_n: u32,
}

@group(0) @binding(0) var<uniform> info: Info;
@group(0) @binding(1) var<storage, read> requests: array<Request>;
@group(0) @binding(2) var<storage, read> logits: array<f32>;
@group(0) @binding(3) var<storage, read_write> results: array<u32>;

var<workgroup> red_key: array<u32, 256>; // reductions and scans (f32 as bits for sums)
var<workgroup> red_id: array<u32, 256>;
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> cand_key: array<u32, MAX_SORTED>;
var<workgroup> cand_id: array<u32, MAX_SORTED>;
var<workgroup> n_cand: atomic<u32>;
var<workgroup> any_bad: atomic<u32>;
var<workgroup> pick: atomic<u32>;
var<workgroup> last_thread: atomic<u32>;
var<workgroup> verdict: vec4<u32>; // thread 0's findings, read back with workgroupUniformLoad

var<private> tid: u32;

fn combined(req: Request, i: u32) -> f32 {
    let v = info.vocab;
    if (req.base_row == NO_ROW) {
        return logits[req.pref_row * v + i];
    }
    let b = logits[req.base_row * v + i];
    if (req.pref_row == NO_ROW) {
        return b;
    }
    let p = logits[req.pref_row * v + i];
    return p + req.k * (p - b);
}

fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// Order-preserving: a > b as floats <=> key(a) > key(b). Every finite key is > 0x007fffff.
fn key_of(x: f32) -> u32 {
    var bits = bitcast<u32>(x);
    if (x == 0.0) {
        bits = 0u;
    }
    if ((bits & 0x80000000u) != 0u) {
        return ~bits;
    }
    return bits | 0x80000000u;
}

fn value_of(key: u32) -> f32 {
    if ((key & 0x80000000u) != 0u) {
        return bitcast<f32>(key & 0x7fffffffu);
    }
    return bitcast<f32>(~key);
}

fn weight(x: f32, max_value: f32, temperature: f32) -> f32 {
    return exp((x - max_value) / temperature);
}

fn before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    return ka > kb || (ka == kb && ia < ib);
}

// (max key, argmax, any non-finite) of the combined row, the same in every thread.
fn argmax_pass(req: Request) -> vec4<u32> {
    var best_key = 0u;
    var best_id = NONE;
    var bad = false;
    for (var i = tid; i < info.vocab; i += WG) {
        let x = combined(req, i);
        bad = bad || !is_finite(x);
        let kx = key_of(x);
        if (kx > best_key) {
            best_key = kx;
            best_id = i;
        }
    }
    if (bad) {
        atomicOr(&any_bad, 1u);
    }
    red_key[tid] = best_key;
    red_id[tid] = best_id;
    workgroupBarrier();
    for (var off = WG / 2u; off > 0u; off >>= 1u) {
        if (tid < off && before(red_key[tid + off], red_id[tid + off], red_key[tid], red_id[tid])) {
            red_key[tid] = red_key[tid + off];
            red_id[tid] = red_id[tid + off];
        }
        workgroupBarrier();
    }
    if (tid == 0u) {
        verdict = vec4<u32>(red_key[0], red_id[0], atomicLoad(&any_bad), 0u);
    }
    return workgroupUniformLoad(&verdict);
}

fn workgroup_sum(x: f32) -> f32 {
    red_key[tid] = bitcast<u32>(x);
    workgroupBarrier();
    for (var off = WG / 2u; off > 0u; off >>= 1u) {
        if (tid < off) {
            red_key[tid] = bitcast<u32>(bitcast<f32>(red_key[tid]) + bitcast<f32>(red_key[tid + off]));
        }
        workgroupBarrier();
    }
    if (tid == 0u) {
        verdict.x = red_key[0];
    }
    return bitcast<f32>(workgroupUniformLoad(&verdict).x);
}

fn selected(kx: u32, i: u32, threshold: vec2<u32>) -> bool {
    return kx > threshold.x || (kx == threshold.x && i <= threshold.y);
}

// Sum of weights over the elements `threshold` selects.
fn selected_mass(req: Request, threshold: vec2<u32>, max_value: f32, temperature: f32) -> f32 {
    var s = 0.0;
    for (var i = tid; i < info.vocab; i += WG) {
        let x = combined(req, i);
        if (selected(key_of(x), i, threshold)) {
            s += weight(x, max_value, temperature);
        }
    }
    return workgroup_sum(s);
}

// Inverse CDF over ids lo..hi for a goal relative to the chunk start.
fn walk_chunk(req: Request, lo: u32, hi: u32, goal: f32, max_value: f32) -> u32 {
    var acc = 0.0;
    var last = NONE;
    for (var i = lo; i < hi; i++) {
        let w = weight(combined(req, i), max_value, req.temperature);
        if (w > 0.0) {
            acc += w;
            last = i;
            if (goal < acc) {
                return i;
            }
        }
    }
    return last;
}

// Plain temperature sampling in id order; the chosen id in every thread.
fn plain_draw(req: Request, max_value: f32) -> u32 {
    let vocab = info.vocab;
    let chunk = (vocab + WG - 1u) / WG;
    let lo = min(tid * chunk, vocab);
    let hi = min(lo + chunk, vocab);
    var s = 0.0;
    for (var i = lo; i < hi; i++) {
        s += weight(combined(req, i), max_value, req.temperature);
    }
    // Inclusive prefix sums of the chunk sums (Hillis-Steele).
    red_key[tid] = bitcast<u32>(s);
    workgroupBarrier();
    for (var off = 1u; off < WG; off <<= 1u) {
        var v = bitcast<f32>(red_key[tid]);
        if (tid >= off) {
            v += bitcast<f32>(red_key[tid - off]);
        }
        workgroupBarrier();
        red_key[tid] = bitcast<u32>(v);
        workgroupBarrier();
    }
    let incl = bitcast<f32>(red_key[tid]);
    var excl = 0.0;
    if (tid > 0u) {
        excl = bitcast<f32>(red_key[tid - 1u]);
    }
    let goal = min(req.u, BELOW_ONE) * bitcast<f32>(red_key[WG - 1u]);
    if (s > 0.0 && excl <= goal && goal < incl) {
        atomicMin(&pick, walk_chunk(req, lo, hi, goal - excl, max_value));
    }
    if (s > 0.0) {
        atomicMax(&last_thread, tid + 1u);
    }
    workgroupBarrier();
    // Rounding left u·total at or past the end: the last positive weight, like draw().
    if (atomicLoad(&pick) == NONE && tid + 1u == atomicLoad(&last_thread)) {
        atomicStore(&pick, walk_chunk(req, lo, hi, NEVER, max_value));
    }
    workgroupBarrier();
    return atomicLoad(&pick);
}

// Thread 0 picks the histogram bin holding the `wanted`-th element, counting from the
// top bin (keys, best first) or the bottom one (ids, lowest first); all threads get
// (bin, still wanted inside it, bin count).
fn pick_bin(wanted: u32, from_top: bool) -> vec4<u32> {
    workgroupBarrier();
    if (tid == 0u) {
        var left = wanted;
        var b = select(0u, 255u, from_top);
        var c = atomicLoad(&hist[b]);
        for (var steps = 0u; c < left && steps < 255u; steps++) {
            left -= c;
            b = select(b + 1u, b - 1u, from_top);
            c = atomicLoad(&hist[b]);
        }
        verdict = vec4<u32>(b, left, c, 0u);
    }
    return workgroupUniformLoad(&verdict);
}

// The threshold (key, last id) such that exactly m elements are `selected`: the m best
// scores, lower ids first among equal scores. Needs 0 < m.
fn select_top(req: Request, m: u32) -> vec2<u32> {
    let vocab = info.vocab;
    if (m >= vocab) {
        return vec2<u32>(0u, NONE);
    }
    var prefix = 0u;
    var mask = 0u;
    var wanted = m;
    for (var shift = 32u; shift > 0u;) {
        shift -= 8u;
        atomicStore(&hist[tid], 0u);
        workgroupBarrier();
        for (var i = tid; i < vocab; i += WG) {
            let kx = key_of(combined(req, i));
            if ((kx & mask) == prefix) {
                atomicAdd(&hist[(kx >> shift) & 255u], 1u);
            }
        }
        let v = pick_bin(wanted, true);
        prefix |= v.x << shift;
        mask |= 255u << shift;
        wanted = v.y;
        if (v.y == v.z) {
            // The whole bin is wanted: every key from this prefix up, any id.
            return vec2<u32>(prefix, NONE);
        }
    }
    // More elements share the exact key than are wanted: the lowest ids among them.
    var id_prefix = 0u;
    var id_mask = 0u;
    for (var shift = 32u; shift > 0u;) {
        shift -= 8u;
        if (((vocab - 1u) >> shift) == 0u) {
            continue; // a digit every id has as 0
        }
        atomicStore(&hist[tid], 0u);
        workgroupBarrier();
        for (var i = tid; i < vocab; i += WG) {
            if ((i & id_mask) == id_prefix && key_of(combined(req, i)) == prefix) {
                atomicAdd(&hist[(i >> shift) & 255u], 1u);
            }
        }
        let v = pick_bin(wanted, false);
        id_prefix |= v.x << shift;
        id_mask |= 255u << shift;
        wanted = v.y;
        if (v.y == v.z) {
            return vec2<u32>(prefix, id_prefix | ((1u << shift) - 1u));
        }
    }
    return vec2<u32>(prefix, id_prefix);
}

// Collects the m elements `threshold` selects into cand_* and sorts them best first.
fn gather_sorted(req: Request, threshold: vec2<u32>, m: u32) {
    if (tid == 0u) {
        atomicStore(&n_cand, 0u);
    }
    workgroupBarrier();
    for (var i = tid; i < info.vocab; i += WG) {
        let kx = key_of(combined(req, i));
        if (selected(kx, i, threshold)) {
            let at = atomicAdd(&n_cand, 1u);
            if (at < MAX_SORTED) {
                cand_key[at] = kx;
                cand_id[at] = i;
            }
        }
    }
    var size = 2u;
    while (size < m) {
        size <<= 1u;
    }
    workgroupBarrier();
    // Padding sorts last: key 0 is below every finite score.
    for (var j = m + tid; j < size; j += WG) {
        cand_key[j] = 0u;
        cand_id[j] = NONE;
    }
    workgroupBarrier();
    // Bitonic sort; the final merge (block == size) runs best first.
    for (var block = 2u; block <= size; block <<= 1u) {
        for (var stride = block >> 1u; stride > 0u; stride >>= 1u) {
            for (var t = tid; t < size / 2u; t += WG) {
                let i = 2u * t - (t & (stride - 1u));
                let j = i + stride;
                let ki = cand_key[i];
                let ii = cand_id[i];
                let kj = cand_key[j];
                let ij = cand_id[j];
                if (before(kj, ij, ki, ii) == ((i & block) == 0u)) {
                    cand_key[i] = kj;
                    cand_id[i] = ij;
                    cand_key[j] = ki;
                    cand_id[j] = ii;
                }
            }
            workgroupBarrier();
        }
    }
}

// Thread 0: nucleus cut and inverse-CDF draw over the m sorted candidates, as sample.rs.
// `whole`: they are the whole universe (else `universe_mass` is its total weight).
fn sorted_draw(req: Request, m: u32, whole: bool, universe_mass: f32, max_value: f32) -> vec2<u32> {
    let t = req.temperature;
    var kept = m;
    if (req.top_p < 1.0) {
        var total = universe_mass;
        if (whole) {
            total = 0.0;
            for (var j = 0u; j < m; j++) {
                total += weight(value_of(cand_key[j]), max_value, t);
            }
        }
        let goal = req.top_p * total;
        var cum = 0.0;
        kept = 0u;
        for (var j = 0u; j < m; j++) {
            cum += weight(value_of(cand_key[j]), max_value, t);
            if (cum >= goal) {
                kept = j + 1u;
                break;
            }
        }
        if (kept == 0u) {
            if (!whole) {
                return vec2<u32>(STATUS_TOO_MANY, 0u);
            }
            kept = m; // rounding left the sum a hair short of p·total: keep everything
        }
    }
    var total = 0.0;
    for (var j = 0u; j < kept; j++) {
        total += weight(value_of(cand_key[j]), max_value, t);
    }
    let goal = min(req.u, BELOW_ONE) * total;
    var acc = 0.0;
    var last = 0u;
    for (var j = 0u; j < kept; j++) {
        let w = weight(value_of(cand_key[j]), max_value, t);
        if (w > 0.0) {
            acc += w;
            last = j;
            if (goal < acc) {
                break;
            }
        }
    }
    return vec2<u32>(STATUS_TOKEN, cand_id[last]);
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    tid = lid;
    if (wg.x >= info.n_requests) {
        return;
    }
    let req = requests[wg.x];
    let out = wg.x * CHOOSE_WORDS;
    if (req.base_row == NO_ROW && req.pref_row == NO_ROW) {
        if (tid == 0u) {
            results[out] = STATUS_NON_FINITE;
        }
        return;
    }
    if (tid == 0u) {
        atomicStore(&any_bad, 0u);
        atomicStore(&pick, NONE);
        atomicStore(&last_thread, 0u);
    }
    workgroupBarrier();
    let top = argmax_pass(req);
    if (top.z != 0u) {
        if (tid == 0u) {
            results[out] = STATUS_NON_FINITE;
        }
        return;
    }
    let max_value = value_of(top.x);
    let vocab = info.vocab;
    var status = STATUS_TOKEN;
    var chosen = top.y;
    if (req.temperature > 0.0) {
        let top_k_on = req.top_k > 0u && req.top_k < vocab;
        let top_p_on = req.top_p < 1.0;
        let universe = select(vocab, req.top_k, top_k_on);
        if (!top_k_on && !top_p_on) {
            chosen = plain_draw(req, max_value);
        } else if (!top_p_on && universe > MAX_SORTED) {
            status = STATUS_TOO_MANY;
        } else {
            var universe_mass = 0.0;
            if (universe > MAX_SORTED) {
                var universe_threshold = vec2<u32>(0u, NONE);
                if (top_k_on) {
                    universe_threshold = select_top(req, universe);
                }
                universe_mass = selected_mass(req, universe_threshold, max_value, req.temperature);
            }
            let m = min(universe, MAX_SORTED);
            gather_sorted(req, select_top(req, m), m);
            if (tid == 0u) {
                let r = sorted_draw(req, m, universe <= MAX_SORTED, universe_mass, max_value);
                status = r.x;
                chosen = r.y;
            }
        }
    }
    let n = min(min(req.top_n, MAX_TOP_N), vocab);
    if (n > 0u) {
        let total = selected_mass(req, vec2<u32>(0u, NONE), max_value, 1.0);
        gather_sorted(req, select_top(req, n), n);
        if (tid == 0u) {
            for (var j = 0u; j < n; j++) {
                let p = exp(value_of(cand_key[j]) - max_value) / total;
                results[out + CHOOSE_HEADER_WORDS + 2u * j] = cand_id[j];
                results[out + CHOOSE_HEADER_WORDS + 1u + 2u * j] = bitcast<u32>(p);
            }
        }
    }
    if (tid == 0u) {
        results[out] = status;
        results[out + 1u] = chosen;
        results[out + 2u] = n;
        results[out + 3u] = 0u;
    }
}
