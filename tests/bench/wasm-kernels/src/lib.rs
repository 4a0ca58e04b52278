//! Our wasm weight kernels on their own (see run.mjs): a matrix of each format with random
//! quants and small normal scales, run for 1 or 2 activation rows over one copy (small enough
//! to stay in cache: the kernel's arithmetic) or many (every call streams from memory, as a
//! decode step does), next to two plain reads of the same bytes; and the exponentials of
//! SwiGLU and of attention's softmax (`exp_run`).

use amulet::backend::q4_1::Q41Matrix;
use amulet::backend::q4_k::Q4KMatrix;
use amulet::backend::q5_0::Q50Matrix;
use amulet::backend::q6_k::Q6KMatrix;
use amulet::backend::q8_0::Q80Matrix;
use amulet::Result;
use wasm_bindgen::prelude::*;

enum Matrix {
    Q41(Q41Matrix),
    Q50(Q50Matrix),
    Q80(Q80Matrix),
    Q4K(Q4KMatrix),
    Q6K(Q6KMatrix),
}

impl Matrix {
    fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        match self {
            Matrix::Q41(w) => w.matmul(x, m, out),
            Matrix::Q50(w) => w.matmul(x, m, out),
            Matrix::Q80(w) => w.matmul(x, m, out),
            Matrix::Q4K(w) => w.matmul(x, m, out),
            Matrix::Q6K(w) => w.matmul(x, m, out),
        }
    }
}

/// `copies` matrices of `n` rows by `k` columns in one format, and activations for 2 rows.
#[wasm_bindgen]
pub struct Bench {
    mats: Vec<Matrix>,
    x: Vec<f32>,
    out: Vec<f32>,
    n: usize,
    k: usize,
    bytes: usize,
    plain: Vec<u8>,
}

fn next(s: &mut u64) -> u8 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    (*s >> 24) as u8
}

#[wasm_bindgen]
impl Bench {
    /// `format`: q4_1, q5_0, q8_0, q4_k or q6_k.
    #[wasm_bindgen(constructor)]
    pub fn new(format: &str, n: usize, k: usize, copies: usize) -> std::result::Result<Bench, JsError> {
        // Values per block, bytes per block, offsets of its f16 scales.
        let (per, size, scales): (usize, usize, &[usize]) = match format {
            "q4_1" => (32, 20, &[0, 2]),
            "q5_0" => (32, 22, &[0]),
            "q8_0" => (32, 34, &[0]),
            "q4_k" => (256, 144, &[0, 2]),
            "q6_k" => (256, 210, &[208]),
            _ => return Err(JsError::new(&format!("unknown format {format}"))),
        };
        let mut seed = 88172645463325252u64;
        let mut mats = Vec::new();
        let mut bytes = 0;
        for _ in 0..copies {
            let mut raw: Vec<u8> = (0..n * k / per * size).map(|_| next(&mut seed)).collect();
            for block in raw.chunks_exact_mut(size) {
                for &at in scales {
                    // f16 0x2000: 2^-7, a small normal scale.
                    block[at..at + 2].copy_from_slice(&[0x00, 0x20]);
                }
            }
            bytes += raw.len();
            let err = |e: amulet::AmuletError| JsError::new(&e.to_string());
            mats.push(match format {
                "q4_1" => Matrix::Q41(Q41Matrix::from_gguf_bytes(&raw, n, k).map_err(err)?),
                "q5_0" => Matrix::Q50(Q50Matrix::from_gguf_bytes(&raw, n, k).map_err(err)?),
                "q8_0" => Matrix::Q80(Q80Matrix::from_gguf_bytes(&raw, n, k).map_err(err)?),
                "q4_k" => Matrix::Q4K(Q4KMatrix::from_gguf_bytes(&raw, n, k).map_err(err)?),
                _ => Matrix::Q6K(Q6KMatrix::from_gguf_bytes(&raw, n, k).map_err(err)?),
            });
        }
        let x = (0..2 * k).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 300.0).collect();
        Ok(Bench { mats, x, out: vec![0.0; 2 * n], n, k, bytes, plain: vec![1; bytes] })
    }

    /// GGUF bytes of all the copies.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Every copy times `m` (1 or 2) activation rows, `reps` times over.
    pub fn run(&mut self, m: usize, reps: usize) -> std::result::Result<f32, JsError> {
        if !(1..=2).contains(&m) {
            return Err(JsError::new(&format!("{m} activation rows: the bench has 1 or 2")));
        }
        let (x, out) = (&self.x[..m * self.k], &mut self.out[..m * self.n]);
        for _ in 0..reps {
            for w in &self.mats {
                w.matmul(x, m, out).map_err(|e| JsError::new(&e.to_string()))?;
            }
        }
        Ok(out[0])
    }

    /// One byte in every 64 of as many bytes, loaded (the kernels' touch-ahead alone).
    pub fn touch(&self) -> u32 {
        let mut t = 0u32;
        for at in (0..self.plain.len()).step_by(64) {
            // SAFETY: at < plain.len().
            t = t.wrapping_add(unsafe { std::ptr::read_volatile(self.plain.as_ptr().add(at)) } as u32);
        }
        t
    }

    /// Every byte of as many bytes read in 16-byte loads (a plain streaming read).
    pub fn read(&self) -> u32 {
        use core::arch::wasm32::*;
        let mut acc = u8x16_splat(0);
        for c in self.plain.chunks_exact(16) {
            // SAFETY: c holds 16 bytes.
            acc = v128_xor(acc, unsafe { v128_load(c.as_ptr() as *const v128) });
        }
        u32x4_extract_lane::<0>(acc)
    }
}

/// SwiGLU gates (SmolLM2's width) and softmax scores `exp_run` takes the exponentials of, a rep.
const GATES: usize = 1536;
const SCORES: usize = 128;

/// Exponentials a rep of `exp_run`.
#[wasm_bindgen]
pub fn exp_values() -> usize {
    GATES + SCORES
}

/// `reps` times over `GATES` SwiGLU gates (-gate, from -3.3 to 3.3) and `SCORES` softmax scores
/// (0 to 13.3, less their maximum), the exponentials of each: by the engine's lanes (`lanes`)
/// or one `f32::exp` call a value. Returns a value of the last round, so that nothing is left
/// out.
#[wasm_bindgen]
pub fn exp_run(lanes: bool, reps: usize) -> f32 {
    use amulet::backend::exp::{exp_shifted, plain};
    let gate: Vec<f32> = (0..GATES).map(|i| ((i * 7919 % 2003) as f32 - 1001.0) / 300.0).collect();
    let scores: Vec<f32> = (0..SCORES).map(|i| (i * 7919 % 2003) as f32 / 150.0).collect();
    let max = scores.iter().copied().fold(f32::MIN, f32::max);
    let (mut g, mut s) = (gate.clone(), scores.clone());
    for _ in 0..reps {
        g.copy_from_slice(&gate);
        s.copy_from_slice(&scores);
        if lanes {
            exp_shifted(&mut g, 0.0);
            exp_shifted(&mut s, max);
        } else {
            plain::exp_shifted(&mut g, 0.0);
            plain::exp_shifted(&mut s, max);
        }
    }
    g[7] + s[3]
}
