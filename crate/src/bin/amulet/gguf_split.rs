//! `amulet gguf-merge` and `amulet gguf-split`: sharded GGUF sets (llama.cpp's gguf-split
//! layout: every shard a whole GGUF file, `split.no` / `split.count` / `split.tensors.count`
//! in each header, the model's metadata in the first) to one file and back. Models hosted
//! as `-00001-of-0000N.gguf` sets are merged once at download (models/fetch.sh); the
//! engine always reads one file.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use amulet::{AmuletError, Result};
use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;
use clap::Args;

#[derive(Args)]
pub struct MergeArgs {
    /// The merged file to write
    #[arg(long)]
    out: PathBuf,
    /// The shards, in order (name-00001-of-0000N.gguf, ...)
    #[arg(required = true)]
    shards: Vec<PathBuf>,
}

#[derive(Args)]
pub struct SplitArgs {
    /// Tensors per shard
    #[arg(long, default_value_t = 64)]
    tensors: usize,
    /// The GGUF file to split
    input: PathBuf,
    /// Shards are written as PREFIX-00001-of-0000N.gguf
    prefix: String,
}

const SPLIT_KEYS: [&str; 3] = ["split.no", "split.count", "split.tensors.count"];

fn io(path: &Path, e: impl std::fmt::Display) -> AmuletError {
    AmuletError::Io(format!("{}: {e}", path.display()))
}

fn bad(path: &Path, e: impl std::fmt::Display) -> AmuletError {
    AmuletError::BadModel(format!("{}: {e}", path.display()))
}

type Metadata = Vec<(String, Value)>;
type Tensors = Vec<(String, QTensor)>;

/// A shard's header and its tensors, read into memory.
fn read(path: &Path) -> Result<(Metadata, Tensors)> {
    let mut r = BufReader::new(File::open(path).map_err(|e| io(path, e))?);
    let content = gguf_file::Content::read(&mut r).map_err(|e| bad(path, e))?;
    let mut metadata: Metadata = content.metadata.clone().into_iter().collect();
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    // Tensors keep the file's order (by offset), as gguf-split writes them.
    let mut names: Vec<(&String, u64)> = content.tensor_infos.iter().map(|(n, t)| (n, t.offset)).collect();
    names.sort_by_key(|&(_, offset)| offset);
    let mut tensors = Vec::with_capacity(names.len());
    for (name, _) in names {
        tensors.push((name.clone(), content.tensor(&mut r, name, &Device::Cpu).map_err(|e| bad(path, e))?));
    }
    Ok((metadata, tensors))
}

fn write(path: &Path, metadata: &[(String, Value)], tensors: &[(String, QTensor)]) -> Result<()> {
    let mut w = BufWriter::new(File::create(path).map_err(|e| io(path, e))?);
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, t)| (k.as_str(), t)).collect();
    gguf_file::write(&mut w, &md, &ts).map_err(|e| io(path, e))?;
    std::io::Write::flush(&mut w).map_err(|e| io(path, e))
}

fn split_u(md: &[(String, Value)], key: &str, path: &Path) -> Result<u64> {
    let v = md.iter().find(|(k, _)| k == key).map(|(_, v)| v).ok_or_else(|| bad(path, format!("no `{key}`")))?;
    match v {
        Value::U16(x) => Ok(*x as u64),
        Value::I32(x) if *x >= 0 => Ok(*x as u64),
        Value::U32(x) => Ok(*x as u64),
        other => Err(bad(path, format!("`{key}` is {other:?}"))),
    }
}

pub fn merge(a: MergeArgs) -> Result<()> {
    let mut metadata = Vec::new();
    let mut tensors = Vec::new();
    let mut expected_tensors = 0;
    for (i, path) in a.shards.iter().enumerate() {
        let (md, ts) = read(path)?;
        let (no, count) = (split_u(&md, "split.no", path)?, split_u(&md, "split.count", path)?);
        if no != i as u64 || count != a.shards.len() as u64 {
            return Err(bad(path, format!("is shard {} of {count}, given as {} of {}", no + 1, i + 1, a.shards.len())));
        }
        if i == 0 {
            expected_tensors = split_u(&md, "split.tensors.count", path)?;
            metadata = md.into_iter().filter(|(k, _)| !SPLIT_KEYS.contains(&k.as_str())).collect();
        }
        tensors.extend(ts);
    }
    if tensors.len() as u64 != expected_tensors {
        return Err(AmuletError::BadModel(format!(
            "the shards hold {} tensors, the first says {expected_tensors}",
            tensors.len()
        )));
    }
    write(&a.out, &metadata, &tensors)?;
    eprintln!("merged {} shards, {} tensors into {}", a.shards.len(), tensors.len(), a.out.display());
    Ok(())
}

pub fn split(a: SplitArgs) -> Result<()> {
    if a.tensors == 0 {
        return Err(AmuletError::bad_option("tensors", "must be at least 1"));
    }
    let (metadata, tensors) = read(&a.input)?;
    let count = tensors.len().div_ceil(a.tensors).max(1);
    for (i, chunk) in tensors.chunks(a.tensors).enumerate() {
        // gguf-split keeps the model's metadata in the first shard only.
        let mut md: Metadata = if i == 0 { metadata.clone() } else { Vec::new() };
        md.push(("split.no".into(), Value::U16(i as u16)));
        md.push(("split.count".into(), Value::U16(count as u16)));
        md.push(("split.tensors.count".into(), Value::I32(tensors.len() as i32)));
        let path = PathBuf::from(format!("{}-{:05}-of-{count:05}.gguf", a.prefix, i + 1));
        write(&path, &md, chunk)?;
        println!("{}", path.display());
    }
    Ok(())
}
