//! The wasm-bindgen face: JS values in, Rust errors out as JS `Error`s with a `code`.
//! Knows nothing about tensors; everything goes through the engine. Generation is driven
//! one step per call so the JS side can yield to its event loop (streaming, AbortSignal).

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

use serde::Serialize;
use serde_json::Value;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::align::{AmuletParams, Game, Method};
use crate::engine::{Engine, Generation, StepLogprobs, TokenEvent};
use crate::error::AmuletError;
use crate::gguf::{Gguf, TensorSource};
use crate::model::DeviceChoice;
use crate::request::parse_request;

fn js_error(e: AmuletError) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    let _ = js_sys::Reflect::set(&err, &"code".into(), &e.code().into());
    err.into()
}

fn to_js<T: Serialize>(v: &T) -> Result<JsValue, JsValue> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| js_error(AmuletError::Compute(format!("serialising a result: {e}"))))
}

/// performance.now() where the global has it (pages, workers, Node), else Date.now().
fn now_ms() -> f64 {
    let perf = js_sys::Reflect::get(&js_sys::global(), &"performance".into()).ok();
    if let Some(p) = perf.filter(|p| p.is_object()) {
        if let Ok(f) = js_sys::Reflect::get(&p, &"now".into()) {
            if let Some(f) = f.dyn_ref::<js_sys::Function>() {
                if let Some(t) = f.call0(&p).ok().and_then(|v| v.as_f64()) {
                    return t;
                }
            }
        }
    }
    js_sys::Date::now()
}

#[wasm_bindgen]
pub struct WasmEngine {
    inner: Rc<RefCell<Engine>>,
    /// Why the model runs where it does, when the upload to the GPU failed after the loader chose it.
    device_reason: Option<String>,
}

#[wasm_bindgen]
impl WasmEngine {
    /// Builds the engine on the backend `device` picks ("auto", "webgpu" or "cpu") while the
    /// file stays in JS: `read(offset, length)` returns a Uint8Array of the file's bytes, asked
    /// for the header and then one tensor at a time, so wasm memory never holds the whole file
    /// next to the weights. A promise: WebGPU's adapter is one. `info().deviceReason` says
    /// what was chosen. The reads are synchronous, so a CPU build completes in the call's
    /// first poll (`promise_now`), where a trap reaches the caller (Node has no handler for
    /// one thrown inside wasm-bindgen's task queue); only WebGPU's waits go on in the queue.
    #[wasm_bindgen(js_name = loadStreamingAsync)]
    pub fn load_streaming_async(
        file_len: f64,
        read: js_sys::Function,
        on_progress: Option<js_sys::Function>,
        device: String,
    ) -> js_sys::Promise {
        promise_now(async move { Self::load_streaming(file_len, read, on_progress, device).await.map(JsValue::from) })
    }

    async fn load_streaming(
        file_len: f64,
        read: js_sys::Function,
        on_progress: Option<js_sys::Function>,
        device: String,
    ) -> Result<WasmEngine, JsValue> {
        let choice: DeviceChoice = device.parse().map_err(js_error)?;
        let src = js_source(file_len, read)?;
        let gguf = parse_header(&src, usize::MAX)?
            .ok_or_else(|| js_error(AmuletError::BadModel("the GGUF header does not end inside the file".into())))?;
        let mut engine = Engine::load_on_async(&gguf, &src, choice, |done, total| {
            if let Some(f) = &on_progress {
                let _ = f.call2(&JsValue::NULL, &(done as f64).into(), &(total as f64).into());
            }
        })
        .await
        .map_err(js_error)?;
        let mut device_reason = None;
        if engine.info().device == "webgpu" {
            if let Err(e) = first_readback(&mut engine).await {
                // WebGPU reports a failed allocation (out of memory while uploading) as an event,
                // after the upload: the first readback is where it shows. 'auto' then takes the
                // CPU path, as for a model over the adapter's limits.
                let why = format!("the WebGPU adapter failed while the model was uploaded: {e}");
                if choice == DeviceChoice::WebGpu {
                    return Err(js_error(AmuletError::NoWebGpu(why)));
                }
                drop(engine);
                crate::model::memory::check_fits_wasm32(&gguf).map_err(js_error)?;
                let cpu = crate::model::CpuModel::load(&gguf, &src, |done, total| {
                    if let Some(f) = &on_progress {
                        let _ = f.call2(&JsValue::NULL, &(done as f64).into(), &(total as f64).into());
                    }
                })
                .map_err(js_error)?;
                engine = Engine::with_model(&gguf, Box::new(cpu)).map_err(js_error)?;
                device_reason = Some(format!("{why}; running on the cpu"));
            }
        }
        engine.set_clock(now_ms);
        if engine.info().device == "webgpu" {
            // A lost GPU: the request that saw it fails, the next one runs on the CPU, built
            // from the file JS still holds (the reader keeps it alive for this).
            engine.set_fallback(Box::new(move || {
                Ok(Box::new(crate::model::CpuModel::load(&gguf, &src, |_, _| {})?)
                    as Box<dyn crate::model::LanguageModel>)
            }));
        }
        Ok(WasmEngine { inner: Rc::new(RefCell::new(engine)), device_reason })
    }

    pub fn info(&self) -> Result<JsValue, JsValue> {
        let e = self.inner.try_borrow().map_err(|_| js_error(busy()))?;
        let i = e.info();
        to_js(&JsInfo {
            name: &i.name,
            architecture: &i.architecture,
            quantization: &i.quantization,
            context_length: i.context_length,
            vocab_size: i.vocab_size,
            device: &i.device,
            device_reason: self.device_reason.as_deref().unwrap_or(&i.device_reason),
            chat_template_fallback: i.chat_template_fallback,
        })
    }

    /// The bytes of KV cache finished requests may keep for the next one (a conversation's
    /// history); 0 keeps none.
    #[wasm_bindgen(js_name = setPrefixBudget)]
    pub fn set_prefix_budget(&self, bytes: f64) -> Result<(), JsValue> {
        if !(bytes.is_finite() && bytes >= 0.0) {
            return Err(js_error(AmuletError::bad_option("prefixCacheBytes", format!("{bytes} is not a byte count"))));
        }
        let mut e = self.inner.try_borrow_mut().map_err(|_| js_error(busy()))?;
        e.set_prefix_budget(bytes.min(usize::MAX as f64) as usize);
        Ok(())
    }

    /// `{ bytes, sequences }` kept for the next request.
    #[wasm_bindgen(js_name = prefixCacheUsage)]
    pub fn prefix_cache_usage(&self) -> Result<JsValue, JsValue> {
        let e = self.inner.try_borrow().map_err(|_| js_error(busy()))?;
        let (bytes, sequences) = e.prefix_cache_usage();
        to_js(&JsPrefixCache { bytes, sequences })
    }

    /// Validates `request` and prefills its contexts; resolves to the running generation.
    /// A promise: WebGPU waits for its readback without blocking the page.
    #[wasm_bindgen(js_name = startAsync)]
    // Holding the engine's borrow across the GPU's await is the point: it is the engine's busy
    // flag, so a second call meanwhile fails with `engine is busy` instead of interleaving.
    #[allow(clippy::await_holding_refcell_ref)]
    pub fn start_async(&self, request: JsValue) -> js_sys::Promise {
        let engine = self.inner.clone();
        promise_now(async move {
            let (req, methods) = parse_generate(request)?;
            let gen = {
                let mut e = engine.try_borrow_mut().map_err(|_| js_error(busy()))?;
                e.start_async(&req).await.map_err(js_error)?
            };
            Ok(WasmGeneration::new(engine, gen, methods).into())
        })
    }
}

/// `future_to_promise`, with the future's first poll inside this call: a CPU prefill or step
/// completes there, so a trap in it (wasm out of memory) is thrown to the caller, which can
/// catch it. Polled inside wasm-bindgen's task queue instead, a trap left the promise unsettled
/// for ever and the queue itself stuck. A future that waits (a WebGPU readback) goes on in the
/// queue; it registers its waker at every poll, so the first poll's no-op one is never woken.
fn promise_now(future: impl std::future::Future<Output = Result<JsValue, JsValue>> + 'static) -> js_sys::Promise {
    let mut future = Box::pin(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(Ok(v)) => js_sys::Promise::resolve(&v),
        std::task::Poll::Ready(Err(e)) => js_sys::Promise::reject(&e),
        std::task::Poll::Pending => future_to_promise(future),
    }
}

/// What a model file will need, from its first bytes (a Range request or a Blob slice), so a
/// model that cannot fit is refused before its download: null while the header is longer
/// than `prefix` (call again with more), else `{ name, architecture, fileBytes, cpuBytes,
/// wasmLimit }` (`cpuBytes`: the CPU path's weights plus two contexts of KV cache).
#[wasm_bindgen(js_name = inspectModel)]
pub fn inspect_model(prefix: &[u8], file_len: f64) -> Result<JsValue, JsValue> {
    // No reader (a `new Function` for one would need `unsafe-eval` under a page's CSP).
    let file_len = byte_count(file_len)?;
    match Gguf::parse_prefix(prefix, file_len).map_err(js_error)? {
        Some(g) => inspection(&g, file_len),
        None => Ok(JsValue::NULL),
    }
}

/// The first bytes of a download, gathered in wasm memory as they arrive (a Worker's heap held
/// the whole header, and its copy each time a longer one was asked for; wasm memory freed here
/// is reused by the load that follows), for `inspectModel` on them.
#[wasm_bindgen]
pub struct HeaderProbe {
    bytes: Vec<u8>,
}

#[wasm_bindgen]
impl HeaderProbe {
    #[wasm_bindgen(constructor)]
    pub fn new() -> HeaderProbe {
        HeaderProbe { bytes: Vec::new() }
    }

    /// Bytes gathered so far.
    #[wasm_bindgen(getter)]
    pub fn length(&self) -> f64 {
        self.bytes.len() as f64
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// Starts over (a server that ignored the Range request sends the file from its start).
    pub fn clear(&mut self) {
        self.bytes.clear();
    }

    /// `inspectModel` of the bytes gathered.
    pub fn inspect(&self, file_len: f64) -> Result<JsValue, JsValue> {
        inspect_model(&self.bytes, file_len)
    }
}

impl Default for HeaderProbe {
    fn default() -> Self {
        Self::new()
    }
}

/// `inspectModel` for an opened file, its header read through `read(offset, length)` as the
/// loader reads it (a few MB at a time, straight into wasm memory: a Worker's heap otherwise
/// holds the whole header prefix once more); null when the header is longer than 64 MB.
#[wasm_bindgen(js_name = inspectFile)]
pub fn inspect_file(read: js_sys::Function, file_len: f64) -> Result<JsValue, JsValue> {
    let src = js_source(file_len, read)?;
    match parse_header(&src, INSPECT_MAX)? {
        Some(g) => inspection(&g, src.file_len),
        None => Ok(JsValue::NULL),
    }
}

/// The longest header `inspectFile` reads; a longer one is left to the loader.
const INSPECT_MAX: usize = 64 << 20;

fn inspection(g: &Gguf, file_len: usize) -> Result<JsValue, JsValue> {
    let cfg = crate::model::ModelConfig::from_gguf(g).map_err(js_error)?;
    to_js(&JsInspect {
        name: g.opt_str("general.name").unwrap_or("unnamed"),
        architecture: cfg.arch.name(),
        file_bytes: file_len as u64,
        cpu_bytes: crate::model::memory::cpu_estimate(g, true).map_err(js_error)?,
        wasm_limit: crate::model::memory::WASM32_MEMORY,
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsInspect<'a> {
    name: &'a str,
    architecture: &'static str,
    file_bytes: u64,
    cpu_bytes: u64,
    wasm_limit: u64,
}

/// SHA-256 over bytes that arrive in pieces (a download), for the `integrity` option:
/// WebCrypto only hashes a whole buffer, and a model should not be held whole for that.
#[wasm_bindgen]
pub struct Sha256 {
    hasher: sha2::Sha256,
}

#[wasm_bindgen]
impl Sha256 {
    #[wasm_bindgen(constructor)]
    pub fn new() -> Sha256 {
        Sha256 { hasher: sha2::Digest::new() }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.hasher, bytes);
    }

    /// The digest of everything given so far, as 32 bytes.
    pub fn digest(&self) -> Vec<u8> {
        sha2::Digest::finalize(self.hasher.clone()).to_vec()
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

fn parse_generate(request: JsValue) -> Result<(crate::engine::GenerateRequest, Vec<String>), JsValue> {
    let value: Value = serde_wasm_bindgen::from_value(request)
        .map_err(|e| js_error(AmuletError::bad_option("request", e.to_string())))?;
    let req = parse_request(&value).map_err(js_error)?;
    let methods = req.methods.iter().map(|m| m.name().to_string()).collect();
    Ok((req, methods))
}

fn js_source(file_len: f64, read: js_sys::Function) -> Result<JsSource, JsValue> {
    Ok(JsSource { read, file_len: byte_count(file_len)? })
}

/// A file length from JS as a byte count wasm32 can address.
fn byte_count(file_len: f64) -> Result<usize, JsValue> {
    if !(file_len.is_finite() && file_len >= 0.0 && file_len.fract() == 0.0) {
        return Err(js_error(AmuletError::bad_option("fileLength", format!("{file_len} is not a byte count"))));
    }
    if file_len > usize::MAX as f64 {
        return Err(js_error(AmuletError::TooLarge(format!(
            "the file has {:.1} GB; WebAssembly (wasm32) addresses files below 4.3 GB",
            file_len / 1e9
        ))));
    }
    Ok(file_len as usize)
}

/// Reads a growing prefix of the file (1 MB, then half as much more each time, reading only
/// what is new: wasm memory keeps its peak, and Gemma's 8.4 MB header took a 16 MB prefix)
/// until the GGUF header and tensor table fit; None when the first `max` bytes do not hold them.
fn parse_header(src: &JsSource, max: usize) -> Result<Option<Gguf>, JsValue> {
    let limit = src.file_len.min(max);
    let mut prefix = Vec::new();
    let mut want = limit.min(1 << 20);
    loop {
        let have = prefix.len();
        prefix.resize(want, 0);
        src.read_into(have, &mut prefix[have..]).map_err(js_error)?;
        if let Some(g) = Gguf::parse_prefix(&prefix, src.file_len).map_err(js_error)? {
            return Ok(Some(g));
        }
        if want == limit {
            return Ok(None);
        }
        want = limit.min(want.saturating_add(want / 2));
    }
}

/// The model file held by JS, read through a callback.
struct JsSource {
    read: js_sys::Function,
    file_len: usize,
}

impl TensorSource for JsSource {
    fn read(&self, offset: usize, len: usize) -> crate::Result<Cow<'_, [u8]>> {
        let mut out = vec![0u8; len];
        self.read_into(offset, &mut out)?;
        Ok(Cow::Owned(out))
    }
}

impl JsSource {
    /// The file's bytes from `offset` into `out`.
    fn read_into(&self, offset: usize, out: &mut [u8]) -> crate::Result<()> {
        let len = out.len();
        if offset.checked_add(len).is_none_or(|end| end > self.file_len) {
            return Err(AmuletError::BadModel(format!(
                "read of {len} bytes at {offset} is past the file's {}",
                self.file_len
            )));
        }
        // In pieces straight into `out`: a whole large tensor read at once would also sit in
        // the JS heap as one array until the collector frees it.
        for (i, piece) in out.chunks_mut(READ_PIECE).enumerate() {
            let at = offset + i * READ_PIECE;
            let v = self
                .read
                .call2(&JsValue::NULL, &(at as f64).into(), &(piece.len() as f64).into())
                .map_err(|e| AmuletError::Io(format!("reading the model file: {e:?}")))?;
            let arr = v
                .dyn_into::<js_sys::Uint8Array>()
                .map_err(|_| AmuletError::Io("the model reader must return a Uint8Array".into()))?;
            if arr.length() as usize != piece.len() {
                return Err(AmuletError::BadModel(format!(
                    "asked for {} bytes at {at}, got {}",
                    piece.len(),
                    arr.length()
                )));
            }
            arr.copy_to(piece);
        }
        Ok(())
    }
}

/// The most one call of the JS reader returns.
const READ_PIECE: usize = 2 << 20;

/// One token through a fresh sequence and back: on WebGPU in a browser, errors of the upload
/// (an allocation the device refused) arrive as events, which the readback waits for.
async fn first_readback(engine: &mut Engine) -> crate::Result<()> {
    let model = engine.model_mut();
    let seq = model.new_sequence();
    let result = model.forward_async(&[(seq, &[0])]).await;
    model.free_sequence(seq);
    result.map(|_| ())
}

fn busy() -> AmuletError {
    AmuletError::bad_option("engine", "is busy with another call")
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsEvent<'a> {
    method: &'a str,
    method_index: usize,
    token: u32,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<&'a StepLogprobs>,
}

/// `engine.info` as JS sees it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsInfo<'a> {
    name: &'a str,
    architecture: &'a str,
    quantization: &'a str,
    context_length: usize,
    vocab_size: usize,
    device: &'a str,
    device_reason: &'a str,
    chat_template_fallback: bool,
}

#[derive(Serialize)]
struct JsPrefixCache {
    bytes: usize,
    sequences: usize,
}

/// What `finish()` returns: the completions with usage and timings.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsFinish<'a> {
    completions: Vec<JsCompletion<'a>>,
    usage: JsUsage,
    /// Oldest turns left out to fit the context (contextOverflow 'truncate-oldest').
    dropped_turns: usize,
    timings: JsTimings,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsCompletion<'a> {
    method: &'a str,
    text: &'a str,
    tokens: &'a [u32],
    finish_reason: &'static str,
    usage: JsCompletionUsage,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsCompletionUsage {
    prompt_tokens: usize,
    completion_tokens: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsUsage {
    prompt_tokens_base: usize,
    prompt_tokens_pref: usize,
    completion_tokens: usize,
    /// Prompt tokens whose caches were kept from an earlier request, per context.
    cached_tokens_base: usize,
    cached_tokens_pref: usize,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsTimings {
    prefill_ms: f64,
    prefill_tokens: usize,
    cached_tokens_base: usize,
    cached_tokens_pref: usize,
    decode_ms: f64,
    decode_tokens_per_s: f64,
}

#[wasm_bindgen]
pub struct WasmGeneration {
    engine: Rc<RefCell<Engine>>,
    /// Shared with a running `stepAsync`, which holds it across its await.
    gen: Rc<RefCell<Option<Generation>>>,
    methods: Rc<Vec<String>>,
    /// `abort()` while a step runs: seen when the next step starts.
    aborted: Rc<Cell<bool>>,
}

impl WasmGeneration {
    fn new(engine: Rc<RefCell<Engine>>, gen: Generation, methods: Vec<String>) -> Self {
        WasmGeneration {
            engine,
            gen: Rc::new(RefCell::new(Some(gen))),
            methods: Rc::new(methods),
            aborted: Rc::default(),
        }
    }
}

#[wasm_bindgen]
impl WasmGeneration {
    /// One token for every live method: resolves to an array of events, empty when the
    /// generation is over.
    #[wasm_bindgen(js_name = stepAsync)]
    #[allow(clippy::await_holding_refcell_ref)] // the borrows are the busy flags (see startAsync)
    pub fn step_async(&self) -> js_sys::Promise {
        let (engine, gen, methods, aborted) =
            (self.engine.clone(), self.gen.clone(), self.methods.clone(), self.aborted.clone());
        promise_now(async move {
            let mut held = gen.try_borrow_mut().map_err(|_| js_error(busy()))?;
            let Some(g) = held.as_mut() else { return to_js(&Vec::<()>::new()) };
            if aborted.get() {
                g.abort();
            }
            let events = {
                let mut e = engine.try_borrow_mut().map_err(|_| js_error(busy()))?;
                e.step_async(g).await
            };
            events_to_js(events, &engine, &mut held, &methods)
        })
    }

    /// Stops before the next token.
    pub fn abort(&mut self) {
        self.aborted.set(true);
        if let Ok(mut held) = self.gen.try_borrow_mut() {
            if let Some(g) = held.as_mut() {
                g.abort();
            }
        }
    }

    /// Frees the sequences and returns completions, usage and timings.
    pub fn finish(&mut self) -> Result<JsValue, JsValue> {
        let gen = self
            .gen
            .try_borrow_mut()
            .map_err(|_| js_error(busy()))?
            .take()
            .ok_or_else(|| js_error(AmuletError::bad_option("generation", "already finished")))?;
        let out = self.engine.try_borrow_mut().map_err(|_| js_error(busy()))?.finish(gen).map_err(js_error)?;
        let prompt_tokens = |method: &str| {
            if method == "base" {
                out.prompt_tokens_base
            } else {
                out.prompt_tokens_pref.max(out.prompt_tokens_base)
            }
        };
        to_js(&JsFinish {
            completions: out
                .completions
                .iter()
                .map(|c| JsCompletion {
                    method: &c.method,
                    text: &c.text,
                    tokens: &c.tokens,
                    finish_reason: c.finish_reason.as_str(),
                    usage: JsCompletionUsage {
                        prompt_tokens: prompt_tokens(&c.method),
                        completion_tokens: c.tokens.len(),
                    },
                })
                .collect(),
            usage: JsUsage {
                prompt_tokens_base: out.prompt_tokens_base,
                prompt_tokens_pref: out.prompt_tokens_pref,
                completion_tokens: out.completions.iter().map(|c| c.tokens.len()).max().unwrap_or(0),
                cached_tokens_base: out.timings.cached_tokens_base,
                cached_tokens_pref: out.timings.cached_tokens_pref,
            },
            dropped_turns: out.dropped_turns,
            timings: JsTimings {
                prefill_ms: out.timings.prefill_ms,
                prefill_tokens: out.timings.prefill_tokens,
                cached_tokens_base: out.timings.cached_tokens_base,
                cached_tokens_pref: out.timings.cached_tokens_pref,
                decode_ms: out.timings.decode_ms,
                decode_tokens_per_s: out.timings.decode_tokens_per_s,
            },
        })
    }

    fn release(&mut self) {
        if let Ok(mut held) = self.gen.try_borrow_mut() {
            release(&self.engine, &mut held);
        }
    }
}

impl Drop for WasmGeneration {
    fn drop(&mut self) {
        self.release();
    }
}

/// Ends a request whose step failed; the engine stays usable for the next one.
fn release(engine: &RefCell<Engine>, held: &mut Option<Generation>) {
    if let Some(g) = held.take() {
        if let Ok(mut e) = engine.try_borrow_mut() {
            let _ = e.finish(g);
        }
    }
}

fn events_to_js(
    events: crate::Result<Vec<TokenEvent>>,
    engine: &RefCell<Engine>,
    held: &mut Option<Generation>,
    methods: &[String],
) -> Result<JsValue, JsValue> {
    let events = match events {
        Ok(ev) => ev,
        Err(err) => {
            release(engine, held);
            return Err(js_error(err));
        }
    };
    let out: Vec<JsEvent> = events
        .iter()
        .map(|ev| JsEvent {
            method: &methods[ev.method],
            method_index: ev.method,
            token: ev.token,
            text: &ev.text,
            logprobs: ev.logprobs.as_ref(),
        })
        .collect();
    to_js(&out)
}

/// The threaded build's pool: `initThreadPool(n)` starts n Web Workers sharing this module's
/// memory (once per realm; the JS side calls it when the page is cross-origin isolated).
#[cfg(target_feature = "atomics")]
pub use wasm_bindgen_rayon::init_thread_pool;

/// Whether this build can run threads (the threaded build: atomics and shared memory).
#[wasm_bindgen(js_name = threadedBuild)]
pub fn threaded_build() -> bool {
    cfg!(target_feature = "atomics")
}

/// Whether a thread of the CPU pool has died (a trap in a helper's Web Worker): every forward
/// pass fails from then on, and a trap of the engine's own thread that follows is that loss.
#[wasm_bindgen(js_name = poolLost)]
pub fn pool_lost() -> bool {
    crate::backend::pool::lost()
}

/// The SIMD tier of this build's CPU kernels: "relaxed-simd" or "simd128" (`engine.info.simd`).
#[wasm_bindgen(js_name = kernelTier)]
pub fn kernel_tier() -> String {
    crate::backend::rows::KERNEL.to_string()
}

/// How many threads the CPU kernels split their work over from now on (at most the pool's
/// size); returns the count in use.
#[wasm_bindgen(js_name = setThreads)]
pub fn set_threads(n: usize) -> Result<usize, JsValue> {
    crate::backend::pool::set_threads(n).map_err(js_error)
}

/// The Amulet strength k for (alpha, lambda, eta, T), validated: the demo's sliders.
#[wasm_bindgen(js_name = closedFormStrength)]
pub fn closed_form_strength(alpha: f64, lambda: f64, eta: f64, iterations: f64) -> Result<f64, JsValue> {
    if !(iterations.is_finite() && iterations >= 1.0 && iterations.fract() == 0.0 && iterations <= u32::MAX as f64) {
        return Err(js_error(AmuletError::bad_option(
            "iterations",
            format!("must be a whole number >= 1, got {iterations}"),
        )));
    }
    let params = AmuletParams { alpha, lambda, eta, iterations: iterations as u32 };
    let method = Method::Amulet { params, game: Game::ClosedForm };
    Engine::strength(method).map(|k| k.unwrap_or(0.0)).map_err(js_error)
}

/// The option keys the request parser accepts, so the JS side can test its schema against them.
#[wasm_bindgen(js_name = requestOptions)]
pub fn request_options() -> Vec<String> {
    crate::request::KNOWN.iter().map(|k| k.to_string()).collect()
}
