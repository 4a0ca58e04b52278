//! GGUF reader with full validation: the single source of truth for every model fact.
//!
//! The header (metadata and tensor table) is parsed from the whole file (`parse`) or from its
//! first bytes (`parse_prefix`: the browser keeps the file in JS and hands over a growing
//! prefix); tensor data is read later, one tensor at a time, through a [`TensorSource`].
//! Every length and offset is checked against the real file size before use: a truncated or
//! hostile file gives `AmuletError::BadModel` naming the key or tensor, never a panic or a
//! huge allocation. Tensors may not share bytes, and a tensor's data is checked to be finite
//! (every float, every block scale) when it is read: NaN weights are a bad file, not a
//! request that answers garbage.

use std::borrow::Cow;
use std::collections::BTreeMap;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;

use crate::error::{AmuletError, Result};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// No real model has more; a larger count means a corrupt header, not a big model.
const MAX_COUNT: u64 = 1 << 24;
/// Array elements over all metadata: the largest vocabularies (262k tokens with scores, types
/// and merges) hold about a million. Parsed, an element costs its own bytes and at most 8 more
/// reserved ahead (a string's end), so this also bounds what a small hostile header makes the
/// parser allocate before it reads the bytes.
const MAX_ARRAY_ELEMENTS: u64 = 1 << 22;
const MAX_DIMS: u32 = 4;

/// Where tensor bytes come from: the whole file in memory, or a reader that hands out one
/// tensor at a time (the browser keeps the file in JS, so wasm memory never holds it whole).
pub trait TensorSource {
    /// `len` bytes at absolute file `offset`; callers only ask for ranges the header parse
    /// validated.
    fn read(&self, offset: usize, len: usize) -> Result<Cow<'_, [u8]>>;
}

impl TensorSource for [u8] {
    fn read(&self, offset: usize, len: usize) -> Result<Cow<'_, [u8]>> {
        offset.checked_add(len).and_then(|end| self.get(offset..end)).map(Cow::Borrowed).ok_or_else(|| {
            AmuletError::BadModel(format!(
                "bytes {offset}..{} lie outside the {} given",
                offset.saturating_add(len),
                self.len()
            ))
        })
    }
}

impl TensorSource for Vec<u8> {
    fn read(&self, offset: usize, len: usize) -> Result<Cow<'_, [u8]>> {
        self.as_slice().read(offset, len)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    Array(MetaArray),
    U64(u64),
    I64(i64),
    F64(f64),
}

/// An array, packed: a vocabulary of 262k tokens held as one `MetaValue` each took 32 bytes a
/// token before its text and score (27.5 MB of Gemma 3's header, kept through the load).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaArray {
    /// Strings end to end: string `i` is `text[ends[i - 1]..ends[i]]`.
    Strs {
        text: String,
        ends: Vec<usize>,
    },
    /// Scalars of GGUF value type `ty`, as the file's little-endian bytes (bools checked).
    Scalars {
        ty: u32,
        bytes: Vec<u8>,
    },
    Arrays(Vec<MetaArray>),
}

/// Bytes of a scalar of GGUF value type `ty` (None: a string, an array or unknown).
fn scalar_size(ty: u32) -> Option<usize> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// The scalar of type `ty` in `b` (`scalar_size(ty)` bytes, already validated).
fn scalar(ty: u32, b: &[u8]) -> MetaValue {
    let le = |n: usize| -> u64 { b[..n].iter().rev().fold(0, |v, &x| (v << 8) | x as u64) };
    match ty {
        0 => MetaValue::U8(b[0]),
        1 => MetaValue::I8(b[0] as i8),
        2 => MetaValue::U16(le(2) as u16),
        3 => MetaValue::I16(le(2) as u16 as i16),
        4 => MetaValue::U32(le(4) as u32),
        5 => MetaValue::I32(le(4) as u32 as i32),
        6 => MetaValue::F32(f32::from_bits(le(4) as u32)),
        7 => MetaValue::Bool(b[0] == 1),
        10 => MetaValue::U64(le(8)),
        11 => MetaValue::I64(le(8) as i64),
        _ => MetaValue::F64(f64::from_bits(le(8))),
    }
}

impl MetaArray {
    pub fn len(&self) -> usize {
        match self {
            MetaArray::Strs { ends, .. } => ends.len(),
            MetaArray::Scalars { ty, bytes } => bytes.len() / scalar_size(*ty).unwrap_or(1),
            MetaArray::Arrays(a) => a.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i < len()`, unpacked.
    pub fn get(&self, i: usize) -> MetaValue {
        match self {
            MetaArray::Strs { text, ends } => {
                MetaValue::Str(text[if i == 0 { 0 } else { ends[i - 1] }..ends[i]].to_string())
            }
            MetaArray::Scalars { ty, bytes } => {
                let n = scalar_size(*ty).unwrap_or(1);
                scalar(*ty, &bytes[i * n..(i + 1) * n])
            }
            MetaArray::Arrays(a) => MetaValue::Array(a[i].clone()),
        }
    }
}

impl MetaValue {
    fn as_u64(&self) -> Option<u64> {
        match *self {
            MetaValue::U8(v) => Some(v as u64),
            MetaValue::U16(v) => Some(v as u64),
            MetaValue::U32(v) => Some(v as u64),
            MetaValue::U64(v) => Some(v),
            MetaValue::I8(v) if v >= 0 => Some(v as u64),
            MetaValue::I16(v) if v >= 0 => Some(v as u64),
            MetaValue::I32(v) if v >= 0 => Some(v as u64),
            MetaValue::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v as f64),
            MetaValue::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64).or_else(|| self.as_u64().map(|v| v as f64)),
        }
    }

    fn as_i64(&self) -> Option<i64> {
        match *self {
            MetaValue::I8(v) => Some(v as i64),
            MetaValue::I16(v) => Some(v as i64),
            MetaValue::I32(v) => Some(v as i64),
            MetaValue::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "u8",
            MetaValue::I8(_) => "i8",
            MetaValue::U16(_) => "u16",
            MetaValue::I16(_) => "i16",
            MetaValue::U32(_) => "u32",
            MetaValue::I32(_) => "i32",
            MetaValue::F32(_) => "f32",
            MetaValue::Bool(_) => "bool",
            MetaValue::Str(_) => "string",
            MetaValue::Array(_) => "array",
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F64(_) => "f64",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `dims[0]` is the fastest-varying (row length).
    pub dims: Vec<usize>,
    pub dtype: GgmlDType,
    /// Absolute byte offset of the data in the file.
    pub offset: usize,
    pub byte_len: usize,
}

impl TensorInfo {
    pub fn elem_count(&self) -> usize {
        self.dims.iter().product()
    }
}

#[derive(Debug, Clone)]
pub struct Gguf {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    index: BTreeMap<String, usize>,
}

/// The quantization types the engine implements (candle kernels or ours).
pub fn ggml_dtype_from_id(id: u32) -> Option<GgmlDType> {
    Some(match id {
        0 => GgmlDType::F32,
        1 => GgmlDType::F16,
        2 => GgmlDType::Q4_0,
        3 => GgmlDType::Q4_1,
        6 => GgmlDType::Q5_0,
        7 => GgmlDType::Q5_1,
        8 => GgmlDType::Q8_0,
        10 => GgmlDType::Q2K,
        11 => GgmlDType::Q3K,
        12 => GgmlDType::Q4K,
        13 => GgmlDType::Q5K,
        14 => GgmlDType::Q6K,
        30 => GgmlDType::BF16,
        _ => return None,
    })
}

fn ggml_type_name(id: u32) -> String {
    let known = [
        (4, "Q4_2 (removed)"),
        (5, "Q4_3 (removed)"),
        (9, "Q8_1"),
        (15, "Q8_K"),
        (16, "IQ2_XXS"),
        (17, "IQ2_XS"),
        (18, "IQ3_XXS"),
        (19, "IQ1_S"),
        (20, "IQ4_NL"),
        (21, "IQ3_S"),
        (22, "IQ2_S"),
        (23, "IQ4_XS"),
        (24, "I8"),
        (25, "I16"),
        (26, "I32"),
        (27, "I64"),
        (28, "F64"),
        (29, "IQ1_M"),
    ];
    known.iter().find(|(k, _)| *k == id).map(|(_, n)| n.to_string()).unwrap_or_else(|| format!("type id {id}"))
}

/// Two tensors whose bytes overlap would alias each other's weights: a crafted file, never
/// a converter's output.
fn check_no_overlap(tensors: &[TensorInfo]) -> Result<()> {
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|t| t.offset);
    for pair in by_offset.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if a.offset + a.byte_len > b.offset {
            return Err(AmuletError::BadModel(format!(
                "tensors `{}` (bytes {}..{}) and `{}` (bytes {}..{}) overlap",
                a.name,
                a.offset,
                a.offset + a.byte_len,
                b.name,
                b.offset,
                b.offset + b.byte_len
            )));
        }
    }
    Ok(())
}

/// Where the f16 scales sit in one block of a quantized type (candle's block layouts, which
/// are llama.cpp's), and the block's size in bytes.
fn block_scales(dtype: GgmlDType) -> (&'static [usize], usize) {
    match dtype {
        GgmlDType::Q4_0 | GgmlDType::Q5_0 | GgmlDType::Q8_0 => (&[0], dtype.type_size()),
        GgmlDType::Q4_1 | GgmlDType::Q5_1 | GgmlDType::Q4K | GgmlDType::Q5K => (&[0, 2], dtype.type_size()),
        GgmlDType::Q2K => (&[80, 82], dtype.type_size()),
        GgmlDType::Q3K => (&[108], dtype.type_size()),
        GgmlDType::Q6K => (&[208], dtype.type_size()),
        _ => (&[], dtype.type_size()),
    }
}

/// The first value that is NaN or infinite, as (element or block index, "element"/"block"):
/// every float of a float tensor, every scale of a quantized one (their other fields are small
/// integers, so finite scales make finite weights).
fn first_non_finite(dtype: GgmlDType, data: &[u8]) -> Option<(usize, &'static str)> {
    let f16_bad = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]) & 0x7C00 == 0x7C00;
    match dtype {
        GgmlDType::F32 => data
            .chunks_exact(4)
            .position(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x7F80_0000 == 0x7F80_0000)
            .map(|i| (i, "element")),
        GgmlDType::F16 => data.chunks_exact(2).position(f16_bad).map(|i| (i, "element")),
        GgmlDType::BF16 => data
            .chunks_exact(2)
            .position(|b| u16::from_le_bytes([b[0], b[1]]) & 0x7F80 == 0x7F80)
            .map(|i| (i, "element")),
        _ => {
            let (scales, size) = block_scales(dtype);
            data.chunks_exact(size).position(|b| scales.iter().any(|&o| f16_bad(&b[o..o + 2]))).map(|i| (i, "block"))
        }
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// The real file length; `bytes` may be only its first part (header parsing).
    file_len: usize,
    /// Set when a read ran past `bytes` but not past the file: more prefix is needed.
    short: bool,
    /// Metadata array elements read so far (bounded by `MAX_ARRAY_ELEMENTS`).
    elements: u64,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => {
                if self.bytes.len() < self.file_len {
                    self.short = true;
                }
                Err(AmuletError::BadModel(format!(
                    "file truncated while reading {} (needs {} bytes at offset {}, file has {})",
                    what(),
                    n,
                    self.pos,
                    self.file_len
                )))
            }
        }
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn count(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        let n = self.u64(what)?;
        if n > MAX_COUNT {
            return Err(AmuletError::BadModel(format!("{} is {n}, which is not plausible", what())));
        }
        Ok(n)
    }

    fn str(&mut self, what: &dyn Fn() -> String) -> Result<&'a str> {
        let len = self.u64(what)?;
        let len = usize::try_from(len)
            .map_err(|_| AmuletError::BadModel(format!("{}: string length {len} too large", what())))?;
        let s = self.take(len, what)?;
        std::str::from_utf8(s).map_err(|_| AmuletError::BadModel(format!("{} is not valid UTF-8", what())))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        self.str(what).map(str::to_string)
    }

    /// The `n` elements of type `ty` of an array at nesting `depth`, packed.
    fn items(&mut self, ty: u32, n: usize, what: &dyn Fn() -> String, depth: u32) -> Result<MetaArray> {
        if ty == 8 {
            let (mut text, mut ends) = (String::new(), Vec::with_capacity(n));
            for _ in 0..n {
                text.push_str(self.str(what)?);
                ends.push(text.len());
            }
            return Ok(MetaArray::Strs { text, ends });
        }
        if ty == 9 {
            // Grown as the arrays are read: a count alone may not reserve for each (56 bytes).
            let mut items = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                match self.value(9, what, depth + 1)? {
                    MetaValue::Array(a) => items.push(a),
                    _ => unreachable!("type 9 is an array"),
                }
            }
            return Ok(MetaArray::Arrays(items));
        }
        let size =
            scalar_size(ty).ok_or_else(|| AmuletError::BadModel(format!("{}: unknown value type {ty}", what())))?;
        let bytes = self.take(n * size, what)?;
        if ty == 7 {
            if let Some(b) = bytes.iter().find(|&&b| b > 1) {
                return Err(AmuletError::BadModel(format!("{}: bool byte {b}", what())));
            }
        }
        Ok(MetaArray::Scalars { ty, bytes: bytes.to_vec() })
    }

    fn value(&mut self, ty: u32, what: &dyn Fn() -> String, depth: u32) -> Result<MetaValue> {
        Ok(match ty {
            0 => MetaValue::U8(self.array::<1>(what)?[0]),
            1 => MetaValue::I8(self.array::<1>(what)?[0] as i8),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => MetaValue::U32(self.u32(what)?),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(AmuletError::BadModel(format!("{}: bool byte {b}", what()))),
            },
            8 => MetaValue::Str(self.string(what)?),
            9 => {
                if depth > 2 {
                    return Err(AmuletError::BadModel(format!("{}: arrays nested too deep", what())));
                }
                let elem_ty = self.u32(what)?;
                let n = self.count(what)?;
                // Each element takes at least one byte: reject counts the file cannot hold.
                if n as usize > self.file_len - self.pos {
                    return Err(AmuletError::BadModel(format!(
                        "{}: array of {n} elements does not fit in the file",
                        what()
                    )));
                }
                self.elements += n;
                if self.elements > MAX_ARRAY_ELEMENTS {
                    return Err(AmuletError::BadModel(format!(
                        "{}: the metadata arrays hold more than {MAX_ARRAY_ELEMENTS} elements in all",
                        what()
                    )));
                }
                MetaValue::Array(self.items(elem_ty, n as usize, what, depth)?)
            }
            10 => MetaValue::U64(self.u64(what)?),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            t => return Err(AmuletError::BadModel(format!("{}: unknown value type {t}", what()))),
        })
    }
}

impl Gguf {
    /// Parses and validates the header, metadata and tensor table of a GGUF file held whole
    /// in `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Gguf> {
        Self::parse_inner(bytes, bytes.len()).map_err(|(e, _)| e)
    }

    /// Parses from the first bytes of a file of `file_len` bytes. `Ok(None)`: the header is
    /// longer than `prefix`; call again with more.
    pub fn parse_prefix(prefix: &[u8], file_len: usize) -> Result<Option<Gguf>> {
        if prefix.len() > file_len {
            return Err(AmuletError::bad_option("file_len", "is shorter than the bytes given"));
        }
        match Self::parse_inner(prefix, file_len) {
            Ok(g) => Ok(Some(g)),
            Err((_, true)) => Ok(None),
            Err((e, false)) => Err(e),
        }
    }

    fn parse_inner(bytes: &[u8], file_len: usize) -> std::result::Result<Gguf, (AmuletError, bool)> {
        let mut c = Cursor { bytes, pos: 0, file_len, short: false, elements: 0 };
        let r = Self::parse_cursor(&mut c);
        r.map_err(|e| (e, c.short))
    }

    fn parse_cursor(c: &mut Cursor) -> Result<Gguf> {
        let file_len = c.file_len;
        let magic = c.array::<4>(&|| "the magic number".into())?;
        if &magic != MAGIC {
            return Err(AmuletError::BadModel(format!(
                "not a GGUF file (magic {:?}, expected \"GGUF\")",
                String::from_utf8_lossy(&magic)
            )));
        }
        let version = c.u32(&|| "the version".into())?;
        if !(2..=3).contains(&version) {
            return Err(AmuletError::BadModel(format!("GGUF version {version} is not supported (2 or 3 expected)")));
        }
        let n_tensors = c.count(&|| "the tensor count".into())?;
        let n_kv = c.count(&|| "the metadata count".into())?;

        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = c.string(&|| format!("metadata key #{i}"))?;
            let what = || format!("metadata `{key}`");
            let ty = c.u32(&what)?;
            let value = c.value(ty, &what, 0)?;
            if metadata.contains_key(&key) {
                // Two values for one key (two chat templates?): which one is meant is unknowable.
                return Err(AmuletError::BadModel(format!("metadata `{key}` appears twice")));
            }
            metadata.insert(key, value);
        }

        let mut raw = Vec::with_capacity(n_tensors.min(4096) as usize);
        for i in 0..n_tensors {
            let name = c.string(&|| format!("the name of tensor #{i}"))?;
            let what = || format!("tensor `{name}`");
            let n_dims = c.u32(&what)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(AmuletError::BadModel(format!("tensor `{name}` has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                let d = c.u64(&what)?;
                if d == 0 || d > (1 << 32) {
                    return Err(AmuletError::BadModel(format!("tensor `{name}` has a dimension of {d}")));
                }
                dims.push(d as usize);
            }
            let type_id = c.u32(&what)?;
            let offset = c.u64(&what)?;
            raw.push((name, dims, type_id, offset));
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a <= 1 << 16 && a.is_power_of_two() => a,
                _ => return Err(AmuletError::BadModel(format!("general.alignment is {v:?}"))),
            },
        };
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;

        let mut tensors = Vec::with_capacity(raw.len());
        let mut index = BTreeMap::new();
        for (name, dims, type_id, rel) in raw {
            let dtype = ggml_dtype_from_id(type_id).ok_or_else(|| {
                AmuletError::Unsupported(format!(
                    "tensor `{name}` uses quantization {} which this engine does not implement \
                     (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K..Q6_K)",
                    ggml_type_name(type_id)
                ))
            })?;
            let elems = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            let elems = elems.ok_or_else(|| AmuletError::BadModel(format!("tensor `{name}` is too large")))?;
            if dims[0] % dtype.block_size() != 0 {
                return Err(AmuletError::BadModel(format!(
                    "tensor `{name}` has rows of {} elements, not a multiple of the {dtype:?} block size {}",
                    dims[0],
                    dtype.block_size()
                )));
            }
            let byte_len = (elems / dtype.block_size()).checked_mul(dtype.type_size());
            let byte_len = byte_len.ok_or_else(|| AmuletError::BadModel(format!("tensor `{name}` is too large")))?;
            if rel % alignment != 0 {
                return Err(AmuletError::BadModel(format!(
                    "tensor `{name}` data offset {rel} is not aligned to {alignment}"
                )));
            }
            let end = data_start.checked_add(rel).and_then(|o| o.checked_add(byte_len as u64));
            let Some(end) = end.filter(|&e| e <= file_len as u64) else {
                return Err(AmuletError::BadModel(format!(
                    "tensor `{name}` has {byte_len} bytes at offset {}, but the file ends at {file_len} \
                     (truncated download?)",
                    data_start as u128 + rel as u128
                )));
            };
            if index.insert(name.clone(), tensors.len()).is_some() {
                return Err(AmuletError::BadModel(format!("tensor `{name}` appears twice")));
            }
            let offset = (end - byte_len as u64) as usize;
            tensors.push(TensorInfo { name, dims, dtype, offset, byte_len });
        }
        check_no_overlap(&tensors)?;
        Ok(Gguf { version, metadata, tensors, index })
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    fn missing(key: &str) -> AmuletError {
        AmuletError::BadModel(format!("metadata key `{key}` is missing"))
    }

    fn wrong(key: &str, want: &str, got: &MetaValue) -> AmuletError {
        AmuletError::BadModel(format!("metadata `{key}` should be {want}, found {}", got.kind()))
    }

    pub fn opt_str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(MetaValue::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        match self.get(key) {
            Some(MetaValue::Str(s)) => Ok(s),
            Some(v) => Err(Self::wrong(key, "a string", v)),
            None => Err(Self::missing(key)),
        }
    }

    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .map(Some)
                .ok_or_else(|| Self::wrong(key, "a non-negative 32-bit integer", v)),
        }
    }

    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.opt_u32(key)?.ok_or_else(|| Self::missing(key))
    }

    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(|x| Some(x as f32))
                .ok_or_else(|| Self::wrong(key, "a finite number", v)),
        }
    }

    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.opt_f32(key)?.ok_or_else(|| Self::missing(key))
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(MetaValue::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(Self::wrong(key, "a bool", v)),
        }
    }

    fn array(&self, key: &str) -> Result<&MetaArray> {
        match self.get(key) {
            Some(MetaValue::Array(a)) => Ok(a),
            Some(v) => Err(Self::wrong(key, "an array", v)),
            None => Err(Self::missing(key)),
        }
    }

    /// Each element of array `key` through `f`, which hands back an element it refuses (named
    /// as not `want`).
    fn array_of<T>(
        &self,
        key: &str,
        want: &str,
        f: impl Fn(MetaValue) -> std::result::Result<T, MetaValue>,
    ) -> Result<Vec<T>> {
        let a = self.array(key)?;
        (0..a.len()).map(|i| f(a.get(i)).map_err(|v| Self::wrong(key, want, &v))).collect()
    }

    pub fn str_array(&self, key: &str) -> Result<Vec<String>> {
        self.array_of(key, "an array of strings", |v| match v {
            MetaValue::Str(s) => Ok(s),
            v => Err(v),
        })
    }

    pub fn f32_array(&self, key: &str) -> Result<Vec<f32>> {
        self.array_of(key, "an array of numbers", |v| v.as_f64().map(|x| x as f32).ok_or(v))
    }

    pub fn i32_array(&self, key: &str) -> Result<Vec<i32>> {
        self.array_of(key, "an array of 32-bit integers", |v| v.as_i64().and_then(|x| i32::try_from(x).ok()).ok_or(v))
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// The info and raw bytes of a tensor, checked against the expected shape (GGUF order) and
    /// for NaN or infinite values.
    pub fn tensor_bytes<'s, S: TensorSource + ?Sized>(
        &self,
        src: &'s S,
        name: &str,
        dims: &[usize],
    ) -> Result<(&TensorInfo, Cow<'s, [u8]>)> {
        let info =
            self.tensor_info(name).ok_or_else(|| AmuletError::BadModel(format!("tensor `{name}` is missing")))?;
        if info.dims != dims {
            return Err(AmuletError::BadModel(format!(
                "tensor `{name}` has shape {:?}, expected {:?} from the metadata",
                info.dims, dims
            )));
        }
        let data = src.read(info.offset, info.byte_len)?;
        if data.len() != info.byte_len {
            return Err(AmuletError::BadModel(format!(
                "tensor `{name}`: read {} bytes, expected {}",
                data.len(),
                info.byte_len
            )));
        }
        if let Some((i, what)) = first_non_finite(info.dtype, &data) {
            return Err(AmuletError::BadModel(format!(
                "tensor `{name}` holds a NaN or infinite {} at {what} {i}",
                if what == "block" { "scale" } else { "value" }
            )));
        }
        Ok((info, data))
    }

    /// A candle QTensor for `name`, shape checked; candle's shape is the reverse of GGUF's.
    pub fn qtensor<S: TensorSource + ?Sized>(&self, src: &S, name: &str, dims: &[usize]) -> Result<QTensor> {
        let (info, data) = self.tensor_bytes(src, name, dims)?;
        // candle reinterprets the bytes in place: hand it an aligned copy when needed.
        let data: Cow<[u8]> = if (data.as_ptr() as usize).is_multiple_of(4) { data } else { Cow::Owned(data.to_vec()) };
        let shape: Vec<usize> = info.dims.iter().rev().copied().collect();
        Ok(candle_core::quantized::ggml_file::qtensor_from_ggml(info.dtype, &data, shape, &Device::Cpu)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(n_tensors.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b
    }

    fn push_str(b: &mut Vec<u8>, s: &str) {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    }

    fn one_tensor_file(type_id: u32, dims: &[u64], data_len: usize) -> Vec<u8> {
        let mut b = header(1, 1);
        push_str(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        push_str(&mut b, "llama");
        push_str(&mut b, "w");
        b.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(type_id.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        b.extend(vec![0u8; data_len]);
        b
    }

    #[test]
    fn parses_a_minimal_file() {
        let f = one_tensor_file(0, &[4, 2], 32);
        let g = Gguf::parse(&f).unwrap();
        assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
        let t = g.tensor_info("w").unwrap();
        assert_eq!(t.dims, vec![4, 2]);
        assert_eq!(t.byte_len, 32);
        let q = g.qtensor(&f, "w", &[4, 2]).unwrap();
        assert_eq!(q.shape().dims(), &[2, 4]);
    }

    #[test]
    fn wrong_magic_is_named() {
        let mut f = one_tensor_file(0, &[4, 2], 32);
        f[0] = b'X';
        let e = Gguf::parse(&f).unwrap_err();
        assert!(matches!(e, AmuletError::BadModel(ref m) if m.contains("magic")), "{e}");
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let f = one_tensor_file(0, &[4, 2], 32);
        for n in 0..f.len() {
            assert!(Gguf::parse(&f[..n]).is_err(), "prefix of {n} bytes parsed");
        }
    }

    #[test]
    fn truncated_tensor_data_names_the_tensor() {
        let f = one_tensor_file(0, &[4, 2], 32);
        let e = Gguf::parse(&f[..f.len() - 1]).unwrap_err().to_string();
        assert!(e.contains("tensor `w`") && e.contains("32 bytes"), "{e}");
    }

    #[test]
    fn unsupported_type_is_named() {
        let f = one_tensor_file(23, &[256, 1], 136);
        let e = Gguf::parse(&f).unwrap_err();
        assert!(matches!(e, AmuletError::Unsupported(ref m) if m.contains("IQ4_XS") && m.contains("`w`")), "{e}");
    }

    #[test]
    fn shape_mismatch_is_named() {
        let f = one_tensor_file(0, &[4, 2], 32);
        let g = Gguf::parse(&f).unwrap();
        let e = g.qtensor(&f, "w", &[4, 3]).unwrap_err().to_string();
        assert!(e.contains("`w`") && e.contains("[4, 2]") && e.contains("[4, 3]"), "{e}");
        let e = g.qtensor(&f, "nope", &[1]).unwrap_err().to_string();
        assert!(e.contains("`nope` is missing"), "{e}");
    }

    #[test]
    fn absurd_counts_are_rejected_without_allocating() {
        let mut f = header(u64::MAX, 0);
        f.extend([0u8; 64]);
        assert!(Gguf::parse(&f).is_err());
        let mut f = header(0, 1);
        push_str(&mut f, "k");
        f.extend(9u32.to_le_bytes()); // array
        f.extend(4u32.to_le_bytes());
        f.extend((1u64 << 23).to_le_bytes());
        assert!(Gguf::parse(&f).unwrap_err().to_string().contains("does not fit"));
    }

    #[test]
    fn a_prefix_parses_once_it_holds_the_header() {
        let f = one_tensor_file(0, &[4, 2], 32);
        let header = f.len() - 32; // tensor data starts here (after alignment padding)
        let first = (0..=header).find(|&n| Gguf::parse_prefix(&f[..n], f.len()).unwrap().is_some()).unwrap();
        assert!(first > 100, "the header is 110 bytes, parsed from {first}");
        let g = Gguf::parse_prefix(&f[..first], f.len()).unwrap().unwrap();
        assert_eq!(g.tensor_info("w").unwrap().offset, header);
        // A wrong magic is an error at once, not a request for more bytes.
        let mut bad = f.clone();
        bad[1] = b'X';
        assert!(Gguf::parse_prefix(&bad[..8], bad.len()).is_err());
        // Tensors past the announced end are still caught.
        assert!(Gguf::parse_prefix(&f[..header], f.len() - 1).is_err());
    }

    /// A file of F32 tensors `(name, elements, relative offset)` with zeroed data.
    fn tensors_file(tensors: &[(&str, u64, u64)], data_len: usize) -> Vec<u8> {
        let mut b = header(tensors.len() as u64, 0);
        for (name, elems, rel) in tensors {
            push_str(&mut b, name);
            b.extend(1u32.to_le_bytes());
            b.extend(elems.to_le_bytes());
            b.extend(0u32.to_le_bytes());
            b.extend(rel.to_le_bytes());
        }
        while !b.len().is_multiple_of(32) {
            b.push(0);
        }
        b.extend(vec![0u8; data_len]);
        b
    }

    #[test]
    fn overlapping_tensors_are_rejected() {
        assert!(Gguf::parse(&tensors_file(&[("a", 8, 0), ("b", 8, 32)], 64)).is_ok());
        let e = Gguf::parse(&tensors_file(&[("a", 16, 0), ("b", 8, 32)], 64)).unwrap_err();
        assert!(
            matches!(e, AmuletError::BadModel(ref m) if m.contains("`a`") && m.contains("`b`") && m.contains("overlap")),
            "{e}"
        );
        // The very same bytes twice (two names for one weight).
        let e = Gguf::parse(&tensors_file(&[("a", 8, 32), ("b", 8, 32)], 64)).unwrap_err();
        assert!(e.to_string().contains("overlap"), "{e}");
    }

    #[test]
    fn sizes_and_offsets_that_overflow_are_rejected() {
        // 2^62 f32 elements: 2^64 bytes, which wraps to 0 without checked arithmetic.
        let mut f = header(1, 0);
        push_str(&mut f, "w");
        f.extend(2u32.to_le_bytes());
        f.extend((1u64 << 31).to_le_bytes());
        f.extend((1u64 << 31).to_le_bytes());
        f.extend(0u32.to_le_bytes());
        f.extend(0u64.to_le_bytes());
        f.extend([0u8; 64]);
        let e = Gguf::parse(&f).unwrap_err().to_string();
        assert!(e.contains("`w`"), "{e}");
        // An offset that wraps past the end of u64 back into the file.
        let f = tensors_file(&[("w", 8, u64::MAX - 31)], 64);
        let e = Gguf::parse(&f).unwrap_err().to_string();
        assert!(e.contains("`w`") && e.contains("file ends"), "{e}");
    }

    #[test]
    fn duplicate_metadata_keys_are_rejected() {
        let mut f = header(0, 2);
        for v in ["a", "b"] {
            push_str(&mut f, "tokenizer.chat_template");
            f.extend(8u32.to_le_bytes());
            push_str(&mut f, v);
        }
        let e = Gguf::parse(&f).unwrap_err().to_string();
        assert!(e.contains("`tokenizer.chat_template` appears twice"), "{e}");
    }

    /// A key holding an array of `n` elements of type `ty`, whose bytes are `body`.
    fn push_array(f: &mut Vec<u8>, key: &str, ty: u32, n: u64, body: &[u8]) {
        push_str(f, key);
        f.extend(9u32.to_le_bytes());
        f.extend(ty.to_le_bytes());
        f.extend(n.to_le_bytes());
        f.extend(body);
    }

    #[test]
    fn packed_arrays_read_back_as_written() {
        let mut f = header(0, 6);
        let mut strs = Vec::new();
        for t in ["a", "", "▁héllo"] {
            push_str(&mut strs, t);
        }
        push_array(&mut f, "s", 8, 3, &strs);
        push_array(&mut f, "i", 5, 2, &[(-7i32).to_le_bytes(), 9i32.to_le_bytes()].concat());
        push_array(&mut f, "d", 12, 1, &2.5f64.to_le_bytes());
        push_array(&mut f, "u", 0, 2, &[3, 255]);
        let mut nested = 0u32.to_le_bytes().to_vec(); // [[u8; 1]; 2]
        nested.extend(1u64.to_le_bytes());
        nested.push(4);
        nested.extend(0u32.to_le_bytes());
        nested.extend(1u64.to_le_bytes());
        nested.push(5);
        push_array(&mut f, "n", 9, 2, &nested);
        push_array(&mut f, "e", 6, 0, &[]);
        let g = Gguf::parse(&f).unwrap();
        assert_eq!(g.str_array("s").unwrap(), ["a", "", "▁héllo"]);
        assert_eq!(g.i32_array("i").unwrap(), [-7, 9]);
        assert_eq!(g.f32_array("i").unwrap(), [-7.0, 9.0]);
        assert_eq!(g.f32_array("d").unwrap(), [2.5]);
        assert_eq!(g.i32_array("u").unwrap(), [3, 255]);
        assert!(g.str_array("e").unwrap().is_empty(), "an empty array is empty whatever its type");
        let e = g.str_array("i").unwrap_err().to_string();
        assert!(e.contains("`i`") && e.contains("an array of strings, found i32"), "{e}");
        assert!(g.i32_array("d").unwrap_err().to_string().contains("found f64"));
        assert!(g.f32_array("n").unwrap_err().to_string().contains("found array"));
        match g.get("n") {
            Some(MetaValue::Array(a)) => {
                assert_eq!(a.get(1), MetaValue::Array(MetaArray::Scalars { ty: 0, bytes: vec![5] }))
            }
            v => panic!("{v:?}"),
        }
        // A bool byte other than 0 or 1 inside an array is a bad file.
        let mut f = header(0, 1);
        push_array(&mut f, "b", 7, 3, &[1, 0, 2]);
        let e = Gguf::parse(&f).unwrap_err().to_string();
        assert!(e.contains("`b`") && e.contains("bool byte 2"), "{e}");
    }

    #[test]
    fn metadata_arrays_are_bounded_in_all() {
        // Four arrays of 2^20 one-byte elements fit the file but pass the total.
        let mut f = header(0, 5);
        for i in 0..5 {
            push_str(&mut f, &format!("k{i}"));
            f.extend(9u32.to_le_bytes());
            f.extend(0u32.to_le_bytes()); // u8 elements
            f.extend((1u64 << 20).to_le_bytes());
            f.extend(vec![0u8; 1 << 20]);
        }
        let e = Gguf::parse(&f).unwrap_err().to_string();
        assert!(e.contains("`k4`") && e.contains("elements in all"), "{e}");
    }

    #[test]
    fn non_finite_weights_are_named_when_read() {
        let mut f = one_tensor_file(0, &[4, 2], 32);
        let data = f.len() - 32;
        f[data + 12..data + 16].copy_from_slice(&f32::NAN.to_le_bytes());
        let g = Gguf::parse(&f).unwrap();
        let e = g.qtensor(&f, "w", &[4, 2]).unwrap_err();
        assert!(matches!(e, AmuletError::BadModel(ref m) if m.contains("`w`") && m.contains("element 3")), "{e}");
        f[data + 12..data + 16].copy_from_slice(&f32::INFINITY.to_le_bytes());
        assert!(g.tensor_bytes(&f, "w", &[4, 2]).is_err());
        // F16 and a Q8_0 block scale.
        let mut f = one_tensor_file(1, &[4, 2], 16);
        let data = f.len() - 16;
        f[data + 2..data + 4].copy_from_slice(&half::f16::NEG_INFINITY.to_bits().to_le_bytes());
        let e = Gguf::parse(&f).unwrap().tensor_bytes(&f, "w", &[4, 2]).unwrap_err().to_string();
        assert!(e.contains("element 1"), "{e}");
        let mut f = one_tensor_file(8, &[32, 2], 68);
        let data = f.len() - 68;
        assert!(Gguf::parse(&f).unwrap().tensor_bytes(&f, "w", &[32, 2]).is_ok());
        f[data + 34..data + 36].copy_from_slice(&half::f16::NAN.to_bits().to_le_bytes());
        let e = Gguf::parse(&f).unwrap().tensor_bytes(&f, "w", &[32, 2]).unwrap_err().to_string();
        assert!(e.contains("scale at block 1"), "{e}");
    }

    #[test]
    fn block_scale_offsets_fit_their_blocks() {
        use GgmlDType::*;
        for dtype in [Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K, Q6K] {
            let (scales, size) = block_scales(dtype);
            assert!(!scales.is_empty() && scales.iter().all(|&o| o + 2 <= size), "{dtype:?}");
        }
        // The K-quants whose scale is last: it ends the block.
        assert_eq!(block_scales(Q6K).0, [Q6K.type_size() - 2]);
        assert_eq!(block_scales(Q3K).0, [Q3K.type_size() - 2]);
        assert_eq!(block_scales(Q2K).0, [Q2K.type_size() - 4, Q2K.type_size() - 2]);
    }

    #[test]
    fn typed_getters_report_the_key() {
        let f = one_tensor_file(0, &[4, 2], 32);
        let g = Gguf::parse(&f).unwrap();
        assert!(g.get_u32("general.architecture").unwrap_err().to_string().contains("general.architecture"));
        assert!(g.get_u32("llama.block_count").unwrap_err().to_string().contains("missing"));
    }
}
