//! Choosing the backend once, at load: `auto` takes a hardware WebGPU adapter when there
//! is one and the model fits it, else the CPU; the reason is kept for `engine.info`.

use std::str::FromStr;

use super::{CpuModel, LanguageModel};
use crate::error::{AmuletError, Result};
use crate::gguf::{Gguf, TensorSource};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Auto,
    Cpu,
    WebGpu,
}

impl FromStr for DeviceChoice {
    type Err = AmuletError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "webgpu" => Ok(DeviceChoice::WebGpu),
            other => Err(AmuletError::bad_option("device", format!("`{other}` is not one of auto, webgpu, cpu"))),
        }
    }
}

pub struct Loaded {
    pub model: Box<dyn LanguageModel>,
    /// Why this backend: the adapter's name, or why WebGPU was passed over.
    pub reason: String,
}

pub fn load_model<S: TensorSource + ?Sized>(
    g: &Gguf,
    src: &S,
    choice: DeviceChoice,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Loaded> {
    let cpu = |reason: String, progress: &mut dyn FnMut(usize, usize)| -> Result<Loaded> {
        Ok(Loaded { model: Box::new(CpuModel::load(g, src, progress)?), reason })
    };
    match choice {
        DeviceChoice::Cpu => cpu("device 'cpu' was asked for".into(), progress),
        DeviceChoice::WebGpu | DeviceChoice::Auto => load_gpu(g, src, choice, progress, cpu),
    }
}

#[cfg(target_arch = "wasm32")]
fn load_gpu<S: TensorSource + ?Sized>(
    _: &Gguf,
    _: &S,
    choice: DeviceChoice,
    progress: &mut dyn FnMut(usize, usize),
    cpu: impl Fn(String, &mut dyn FnMut(usize, usize)) -> Result<Loaded>,
) -> Result<Loaded> {
    let why = "the WebGPU backend is not built into the WebAssembly package yet";
    match choice {
        DeviceChoice::WebGpu => Err(AmuletError::NoWebGpu(why.into())),
        _ => cpu(why.into(), progress),
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn load_gpu<S: TensorSource + ?Sized>(
    g: &Gguf,
    src: &S,
    choice: DeviceChoice,
    progress: &mut dyn FnMut(usize, usize),
    cpu: impl Fn(String, &mut dyn FnMut(usize, usize)) -> Result<Loaded>,
) -> Result<Loaded> {
    use super::gpu::GpuModel;
    use crate::backend::webgpu::GpuContext;
    let forced = choice == DeviceChoice::WebGpu;
    let ctx = match GpuContext::open() {
        Ok(ctx) => ctx,
        Err(e) if !forced => return cpu(format!("no WebGPU: {e}"), progress),
        Err(e) => return Err(e),
    };
    let adapter = format!("{} ({})", ctx.info.name, ctx.info.backend);
    if ctx.info.software && !forced {
        return cpu(format!("the only WebGPU adapter, {adapter}, is a software renderer: the CPU path is faster"), progress);
    }
    match GpuModel::load(ctx, g, src, &mut *progress) {
        Ok(m) => Ok(Loaded { model: Box::new(m), reason: format!("WebGPU adapter {adapter}") }),
        Err(e) if !forced => cpu(format!("WebGPU adapter {adapter} cannot hold this model: {e}"), progress),
        Err(e) => Err(e),
    }
}
