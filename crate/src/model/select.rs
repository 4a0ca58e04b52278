//! Choosing the backend once, at load: `auto` takes a hardware WebGPU adapter when there
//! is one and the model fits it, else the CPU; the reason is kept for `engine.info`.

use std::str::FromStr;

use super::gpu::GpuModel;
use super::{CpuModel, LanguageModel};
use crate::backend::webgpu::GpuContext;
use crate::error::{AmuletError, Result};
use crate::gguf::{Gguf, TensorSource};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum DeviceChoice {
    Auto,
    Cpu,
    #[cfg_attr(not(target_arch = "wasm32"), value(name = "webgpu"))]
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

/// Builds the model on the backend `choice` picks. Natively the adapter is opened
/// blocking; browsers only have `load_model_async`.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_model<S: TensorSource + ?Sized>(
    g: &Gguf,
    src: &S,
    choice: DeviceChoice,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Loaded> {
    match choice {
        DeviceChoice::Cpu => load_cpu(g, src, "device 'cpu' was asked for".into(), progress),
        DeviceChoice::WebGpu | DeviceChoice::Auto => load_gpu(GpuContext::open(), g, src, choice, progress),
    }
}

/// `load_model` where the adapter arrives as a promise (a browser).
pub async fn load_model_async<S: TensorSource + ?Sized>(
    g: &Gguf,
    src: &S,
    choice: DeviceChoice,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Loaded> {
    if choice == DeviceChoice::Cpu {
        return load_cpu(g, src, "device 'cpu' was asked for".into(), progress);
    }
    #[cfg(target_arch = "wasm32")]
    if !wgpu::util::is_browser_webgpu_supported().await {
        let why = AmuletError::NoWebGpu("no WebGPU adapter here: navigator.gpu is missing or offers none".into());
        return match choice {
            DeviceChoice::WebGpu => Err(why),
            _ => load_cpu(g, src, why.to_string(), progress),
        };
    }
    load_gpu(GpuContext::open_async().await, g, src, choice, progress)
}

fn load_cpu<S: TensorSource + ?Sized>(
    g: &Gguf,
    src: &S,
    reason: String,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Loaded> {
    // In a browser a model beyond wasm32's memory would abort the module half-way: say so first.
    #[cfg(target_arch = "wasm32")]
    super::memory::check_fits_wasm32(g)?;
    Ok(Loaded { model: Box::new(CpuModel::load(g, src, progress)?), reason })
}

fn load_gpu<S: TensorSource + ?Sized>(
    opened: Result<GpuContext>,
    g: &Gguf,
    src: &S,
    choice: DeviceChoice,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Loaded> {
    let forced = choice == DeviceChoice::WebGpu;
    let ctx = match opened {
        Ok(ctx) => ctx,
        Err(e) if !forced => return load_cpu(g, src, format!("no WebGPU: {e}"), progress),
        Err(e) => return Err(e),
    };
    let adapter = format!("{} ({})", ctx.info.name, ctx.info.backend);
    if ctx.info.software && !forced {
        let why = format!("the only WebGPU adapter, {adapter}, renders in software: the CPU path is faster");
        return load_cpu(g, src, why, progress);
    }
    match GpuModel::load(ctx, g, src, &mut *progress) {
        Ok(m) => Ok(Loaded { model: Box::new(m), reason: format!("WebGPU on {adapter}") }),
        Err(e) if !forced => {
            load_cpu(g, src, format!("the WebGPU adapter {adapter} cannot hold this model: {e}"), progress)
        }
        Err(e) => Err(e),
    }
}
