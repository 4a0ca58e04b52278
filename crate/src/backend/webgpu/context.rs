//! Opening a wgpu device, reading buffers back, and turning wgpu's asynchronous error
//! reports (validation, out of memory, a lost device) into typed errors.

use std::sync::{Arc, Mutex};
use std::task::Waker;

use crate::error::{AmuletError, Result};

/// What `engine.info` reports about the adapter.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuInfo {
    pub name: String,
    pub backend: String,
    /// A software rasteriser (lavapipe, SwiftShader): correct, but slower than our CPU path.
    pub software: bool,
    pub max_binding_bytes: u64,
}

pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: GpuInfo,
    /// The first error wgpu reported since the last `take_error` (validation, out of
    /// memory, device lost). Without a handler wgpu would panic instead.
    error: Arc<Mutex<Option<String>>>,
    /// Set once the device is lost (driver reset, device removed, `destroy`).
    lost: Arc<Mutex<Option<String>>>,
}

impl GpuContext {
    /// Opens the best adapter there is; `NoWebGpu` when there is none.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open() -> Result<Self> {
        pollster::block_on(Self::open_async())
    }

    /// As `open`; the only way in a browser, where the adapter comes from a promise.
    pub async fn open_async() -> Result<Self> {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        desc.backends =
            if cfg!(target_arch = "wasm32") { wgpu::Backends::BROWSER_WEBGPU } else { wgpu::Backends::PRIMARY };
        let instance = wgpu::Instance::new(desc);
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                force_fallback_adapter: false,
                compatible_surface: None,
                apply_limit_buckets: false,
            })
            .await
            .map_err(|e| AmuletError::NoWebGpu(format!("no WebGPU adapter: {e}")))?;
        let adapter_info = adapter.get_info();
        // Everything the adapter offers: large models need its real binding sizes.
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("amulet"),
                required_features: wgpu::Features::empty(),
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| AmuletError::NoWebGpu(format!("the adapter `{}` refused a device: {e}", adapter_info.name)))?;
        let error: Arc<Mutex<Option<String>>> = Arc::default();
        let sink = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut first = sink.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| e.to_string());
        }));
        let lost: Arc<Mutex<Option<String>>> = Arc::default();
        let (sink, lost_sink) = (error.clone(), lost.clone());
        device.set_device_lost_callback(move |reason, message| {
            let text = format!("the WebGPU device was lost ({reason:?}): {message}");
            for sink in [&sink, &lost_sink] {
                sink.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_with(|| text.clone());
            }
        });
        let software = adapter_info.device_type == wgpu::DeviceType::Cpu
            || adapter_info.name.to_lowercase().contains("swiftshader");
        // Browsers often keep the adapter's description empty.
        let name = match adapter_info.name.as_str() {
            "" if software => "the browser's software fallback adapter".to_string(),
            "" => "the browser's adapter".to_string(),
            name => name.to_string(),
        };
        let info = GpuInfo {
            name,
            backend: match adapter_info.backend {
                wgpu::Backend::BrowserWebGpu => "navigator.gpu".to_string(),
                other => format!("{other:?}").to_lowercase(),
            },
            software,
            max_binding_bytes: (limits.max_storage_buffer_binding_size as u64).min(limits.max_buffer_size),
        };
        Ok(GpuContext { device, queue, info, error, lost })
    }

    /// Why the device is gone, once it is.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The error wgpu reported since the last call, as a typed error.
    pub fn take_error(&self) -> Result<()> {
        let mut first = self.error.lock().unwrap_or_else(|p| p.into_inner());
        match first.take() {
            Some(message) => Err(AmuletError::Compute(format!("WebGPU: {message}"))),
            None => Ok(()),
        }
    }

    /// Waits for the queue and copies `floats` floats out of a MAP_READ buffer.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_f32(&self, buffer: &wgpu::Buffer, floats: usize) -> Result<Vec<f32>> {
        // The wait below completes the mapping, so the future is ready at its first poll.
        pollster::block_on(self.read_f32_async(buffer, floats))
    }

    /// As `read_f32`, without blocking: in a browser the mapping completes on the event loop.
    pub async fn read_f32_async(&self, buffer: &wgpu::Buffer, floats: usize) -> Result<Vec<f32>> {
        let bytes = (floats * 4) as u64;
        let mapping = Mapping::default();
        let sink = mapping.clone();
        buffer.map_async(wgpu::MapMode::Read, 0..bytes, move |r| sink.complete(r));
        #[cfg(not(target_arch = "wasm32"))]
        let mapped = {
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| AmuletError::Compute(format!("WebGPU: waiting for the queue failed: {e}")))?;
            // After the wait the callback has run; awaiting here could never wake.
            mapping.take().ok_or_else(|| AmuletError::Compute("WebGPU: the readback never completed".into()))?
        };
        #[cfg(target_arch = "wasm32")]
        let mapped = mapping.await;
        let data = match mapped {
            Ok(()) => {
                let out = buffer
                    .get_mapped_range(0..bytes)
                    .map(|view| bytemuck::cast_slice::<u8, f32>(&view).to_vec())
                    .map_err(|e| AmuletError::Compute(format!("WebGPU: mapping the readback failed: {e}")));
                buffer.unmap();
                out
            }
            Err(e) => Err(AmuletError::Compute(format!("WebGPU: reading results back failed: {e}"))),
        };
        self.take_error()?;
        if let Some(why) = self.lost() {
            return Err(AmuletError::Compute(why));
        }
        data
    }
}

/// A buffer mapping in flight, as a future: wgpu reports it through a callback.
#[derive(Clone, Default)]
struct Mapping(Arc<Mutex<MappingState>>);

#[derive(Default)]
struct MappingState {
    result: Option<std::result::Result<(), wgpu::BufferAsyncError>>,
    waker: Option<Waker>,
}

impl Mapping {
    #[cfg(not(target_arch = "wasm32"))]
    fn take(&self) -> Option<std::result::Result<(), wgpu::BufferAsyncError>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).result.take()
    }

    fn complete(&self, r: std::result::Result<(), wgpu::BufferAsyncError>) {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        state.result = Some(r);
        if let Some(w) = state.waker.take() {
            w.wake();
        }
    }
}

#[cfg(target_arch = "wasm32")]
impl std::future::Future for Mapping {
    type Output = std::result::Result<(), wgpu::BufferAsyncError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match state.result.take() {
            Some(r) => std::task::Poll::Ready(r),
            None => {
                state.waker = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        }
    }
}
