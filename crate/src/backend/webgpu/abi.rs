//! The contract between the Rust side and the WGSL kernels, written once: every number both
//! sides must agree on (page and tile sizes, the chooser's result record, ...) and the values
//! that select pipeline variants (weight formats, matvec input modes). Rust uses them as
//! they are; `prelude()` writes them as WGSL `const` lines that every shader module starts
//! with, so the .wgsl files use the names and never repeat the values.

/// Threads per workgroup of the kernels whose grids Rust computes from it (embed, gather:
/// one thread per element of a row; matvec: WORKGROUP / LANES rows of W).
pub const WORKGROUP: u32 = 256;
/// Words per pass row at the start of `meta`: token, position, page-table offset, unused.
pub const ROW_META_WORDS: usize = 4;
/// Positions per KV-cache page.
pub const KV_PAGE: usize = 16;
/// Positions per attention workgroup (its split-K chunk).
pub const ATTENTION_CHUNK: usize = 64;
/// Largest head the attention and rope kernels hold in workgroup memory.
pub const MAX_HEAD_DIM: usize = 256;
/// Input rows per matvec z-slice.
pub const MATVEC_ROWS: u32 = 8;
/// Input rows per matmul workgroup: grid z = ceil(n_rows / this).
pub const MATMUL_TILE_ROWS: u32 = 64;
/// Rows of W per matmul workgroup: grid x = ceil(n / this).
pub const MATMUL_TILE_N: u32 = 64;

/// The chooser's `base_row` / `pref_row` value for "no such row".
pub const NO_ROW: u32 = u32::MAX;
/// Most alternatives the chooser's `top_n` can ask for.
pub const MAX_TOP_N: usize = 20;
/// Candidates the chooser's sorted modes (top-k / top-p) can hold in one workgroup: a key
/// and an id each, 8 KiB, leaving room for the reduction and histogram arrays within the
/// 16 KiB of workgroup memory WebGPU guarantees (the kernel uses 11 KiB). A power of two
/// for the bitonic sort.
pub const MAX_SORTED: usize = 1024;
/// Words before the alternatives in a chooser result: status, id, n_top, padding.
pub const CHOOSE_HEADER_WORDS: usize = 4;
/// Chooser result words per request: the header, then MAX_TOP_N (id, prob) pairs.
pub const CHOOSE_WORDS: usize = CHOOSE_HEADER_WORDS + 2 * MAX_TOP_N;
/// Chooser result statuses.
pub const STATUS_TOKEN: u32 = 0;
pub const STATUS_NON_FINITE: u32 = 1;
pub const STATUS_TOO_MANY: u32 = 2;
/// The largest f32 below 1: a uniform in [0, 1) must stay below 1 when narrowed to f32.
pub const BELOW_ONE: f32 = 1.0 - f32::EPSILON / 2.0;

/// Weight formats the kernels read directly (the override constant FORMAT; FMT_* in WGSL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    /// Also Q4_K, repacked without loss (a Q4_1 block per 32-value sub-block).
    Q4_1 = 3,
    /// int8 values with one f32 scale per 32: Q8_0, and Q5_0 repacked without loss.
    Q8_0 = 4,
    /// int8 values with one f32 scale per 16 (Q6_K, repacked without loss).
    Q8_16 = 5,
}

/// What the matvec applies to its input rows before the product (override INPUT;
/// INPUT_* in WGSL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatvecInput {
    Plain = 0,
    SiluGate = 2,
    GeluGate = 3,
}

/// A value the prelude declares.
#[derive(Clone, Copy)]
enum Value {
    U32(u32),
    F32(f32),
}

/// Every name the prelude declares, with its value.
fn shared() -> Vec<(&'static str, Value)> {
    use Value::{F32, U32};
    let n = |v: usize| U32(v as u32);
    vec![
        ("WORKGROUP", U32(WORKGROUP)),
        ("ROW_META_WORDS", n(ROW_META_WORDS)),
        ("KV_PAGE", n(KV_PAGE)),
        ("ATTENTION_CHUNK", n(ATTENTION_CHUNK)),
        ("MAX_HEAD_DIM", n(MAX_HEAD_DIM)),
        ("MATVEC_ROWS", U32(MATVEC_ROWS)),
        ("MATMUL_TILE_ROWS", U32(MATMUL_TILE_ROWS)),
        ("MATMUL_TILE_N", U32(MATMUL_TILE_N)),
        ("NO_ROW", U32(NO_ROW)),
        ("MAX_TOP_N", n(MAX_TOP_N)),
        ("MAX_SORTED", n(MAX_SORTED)),
        ("CHOOSE_HEADER_WORDS", n(CHOOSE_HEADER_WORDS)),
        ("CHOOSE_WORDS", n(CHOOSE_WORDS)),
        ("STATUS_TOKEN", U32(STATUS_TOKEN)),
        ("STATUS_NON_FINITE", U32(STATUS_NON_FINITE)),
        ("STATUS_TOO_MANY", U32(STATUS_TOO_MANY)),
        ("BELOW_ONE", F32(BELOW_ONE)),
        ("FMT_F32", U32(Format::F32 as u32)),
        ("FMT_F16", U32(Format::F16 as u32)),
        ("FMT_Q4_0", U32(Format::Q4_0 as u32)),
        ("FMT_Q4_1", U32(Format::Q4_1 as u32)),
        ("FMT_Q8_0", U32(Format::Q8_0 as u32)),
        ("FMT_Q8_16", U32(Format::Q8_16 as u32)),
        ("INPUT_PLAIN", U32(MatvecInput::Plain as u32)),
        ("INPUT_SILU_GATE", U32(MatvecInput::SiluGate as u32)),
        ("INPUT_GELU_GATE", U32(MatvecInput::GeluGate as u32)),
    ]
}

/// The WGSL lines `const NAME: u32 = 16u;` (or `f32`) for every shared number; the shader
/// modules start with them.
pub fn prelude() -> String {
    let mut out = String::from("// Generated from backend/webgpu/abi.rs: the numbers Rust and the kernels share.\n");
    for (name, value) in shared() {
        let line = match value {
            Value::U32(v) => format!("const {name}: u32 = {v}u;\n"),
            // Debug prints the shortest decimal that reads back as the same f32.
            Value::F32(v) => format!("const {name}: f32 = {v:?};\n"),
        };
        out.push_str(&line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{prelude, shared, Value, BELOW_ONE};

    const SHADERS: [&str; 11] = [
        include_str!("shaders/attention.wgsl"),
        include_str!("shaders/choose.wgsl"),
        include_str!("shaders/common.wgsl"),
        include_str!("shaders/embed.wgsl"),
        include_str!("shaders/gather.wgsl"),
        include_str!("shaders/matmul.wgsl"),
        include_str!("shaders/matvec.wgsl"),
        include_str!("shaders/matvec_io.wgsl"),
        include_str!("shaders/norm.wgsl"),
        include_str!("shaders/quant.wgsl"),
        include_str!("shaders/rope_cache.wgsl"),
    ];

    /// The identifiers and keywords of a WGSL source's code (comments left out), in order.
    fn words(source: &str) -> Vec<&str> {
        let code = source.lines().map(|l| l.split("//").next().unwrap_or(""));
        code.flat_map(|l| l.split(|c: char| !c.is_alphanumeric() && c != '_')).filter(|w| !w.is_empty()).collect()
    }

    #[test]
    fn every_shared_number_is_used_by_a_kernel_and_declared_only_by_the_prelude() {
        for (name, _) in shared() {
            assert!(SHADERS.iter().any(|s| words(s).contains(&name)), "{name} is in the prelude but no kernel uses it");
            for s in SHADERS {
                let declared = words(s).windows(2).any(|w| ["const", "override"].contains(&w[0]) && w[1] == name);
                assert!(!declared, "a kernel declares {name} again");
            }
        }
    }

    #[test]
    fn the_prelude_writes_each_value_so_it_reads_back_the_same() {
        let text = prelude();
        for (name, value) in shared() {
            let line = text.lines().find(|l| l.starts_with(&format!("const {name}: "))).expect("declared");
            let literal = line.rsplit("= ").next().unwrap().trim_end_matches(';');
            match value {
                Value::U32(v) => assert_eq!(literal.trim_end_matches('u').parse::<u32>().unwrap(), v, "{line}"),
                Value::F32(v) => assert_eq!(literal.parse::<f32>().unwrap().to_bits(), v.to_bits(), "{line}"),
            }
        }
        assert!(BELOW_ONE < 1.0 && BELOW_ONE.next_up() == 1.0);
    }
}
