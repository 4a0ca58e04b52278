// Prepended to every kernel: the per-pass uniform all kernels read their row count from
// (written before each pass's command buffer is submitted).

struct Pass {
    n_rows: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

