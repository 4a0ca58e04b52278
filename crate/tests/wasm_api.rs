//! The wasm-bindgen face, run by wasm-bindgen-test in Node and in headless Chromium
//! (`./build.sh test` runs both), through the calls the npm package makes: loadStreamingAsync,
//! startAsync, stepAsync, finish. Uses a random-weight fixture made in the test, so it needs
//! no file access and also exercises the simd128 Q4_1 kernel.
#![cfg(target_arch = "wasm32")]

use amulet::fixture::{write_gguf, FixtureSpec};
use amulet::model::Arch;
use amulet::web::{closed_form_strength, WasmEngine, WasmGeneration};
use candle_core::quantized::GgmlDType;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::convert::TryFromJsValue;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

fn get(v: &JsValue, k: &str) -> JsValue {
    js_sys::Reflect::get(v, &k.into()).unwrap()
}

fn code(e: JsValue) -> String {
    get(&e, "code").as_string().unwrap_or_default()
}

fn request(json: &str) -> JsValue {
    js_sys::JSON::parse(json).unwrap()
}

/// A reader over bytes held by JS, as the npm package hands the file to `loadStreamingAsync`.
fn reader(bytes: &[u8]) -> js_sys::Function {
    let file = js_sys::Uint8Array::from(bytes);
    let read = Closure::<dyn Fn(f64, f64) -> js_sys::Uint8Array>::new(move |o: f64, l: f64| {
        file.subarray(o as u32, (o + l) as u32)
    });
    // The closure must outlive the engine (it is called per tensor): leak it, as a test may.
    read.into_js_value().unchecked_into()
}

/// Loads through the call the npm package makes (`loadStreamingAsync`, CPU path).
async fn load(bytes: &[u8]) -> Result<WasmEngine, JsValue> {
    load_with(reader(bytes), bytes.len() as f64, "cpu").await
}

/// `loadStreamingAsync(len, read, null, device)`: its promise, then the engine it holds.
async fn load_with(read: js_sys::Function, len: f64, device: &str) -> Result<WasmEngine, JsValue> {
    let engine = JsFuture::from(WasmEngine::load_streaming_async(len, read, None, device.into())).await?;
    Ok(WasmEngine::try_from_js_value(engine).expect("the promise holds an engine"))
}

async fn engine(arch: Arch) -> WasmEngine {
    let bytes = write_gguf(&FixtureSpec::tiny(arch, GgmlDType::Q4_1, 3)).unwrap();
    load(&bytes).await.map_err(|e| format!("{e:?}")).unwrap()
}

async fn start(e: &WasmEngine, json: &str) -> Result<WasmGeneration, JsValue> {
    let g = JsFuture::from(e.start_async(request(json))).await?;
    Ok(WasmGeneration::try_from_js_value(g).expect("startAsync resolves to a generation"))
}

async fn step(g: &WasmGeneration) -> Result<js_sys::Array, JsValue> {
    Ok(JsFuture::from(g.step_async()).await?.dyn_into().unwrap())
}

/// Runs a request to the end as engine.js does: startAsync, stepAsync until no events, finish.
async fn run(e: &WasmEngine, json: &str) -> (String, JsValue) {
    let mut g = start(e, json).await.map_err(|e| format!("{e:?}")).unwrap();
    let mut text = String::new();
    loop {
        let events = step(&g).await.unwrap();
        if events.length() == 0 {
            break;
        }
        for ev in events.iter() {
            text.push_str(&get(&ev, "text").as_string().unwrap());
        }
    }
    (text, g.finish().unwrap())
}

#[wasm_bindgen_test]
fn strength_matches_the_paper_defaults() {
    let k = closed_form_strength(2.0, 2.0, 10.0, 60.0).unwrap();
    assert!((k - 4.6487).abs() < 1e-4, "{k}");
    assert_eq!(code(closed_form_strength(f64::NAN, 2.0, 10.0, 60.0).unwrap_err()), "BAD_OPTION");
    assert_eq!(code(closed_form_strength(2.0, 2.0, 10.0, 0.5).unwrap_err()), "BAD_OPTION");
}

#[wasm_bindgen_test]
async fn every_architecture_generates_and_streams_its_text() {
    for arch in [Arch::Llama, Arch::Qwen2, Arch::Gemma3] {
        let e = engine(arch).await;
        assert_eq!(get(&e.info().unwrap(), "architecture").as_string().unwrap(), arch.name());
        let (text, out) = run(
            &e,
            r#"{"prompt":"hello","preference":"terse","methods":["base","amulet"],"maxTokens":6,"ignoreEos":true}"#,
        )
        .await;
        let completions: js_sys::Array = get(&out, "completions").dyn_into().unwrap();
        assert_eq!(completions.length(), 2);
        let joined: String = completions.iter().map(|c| get(&c, "text").as_string().unwrap()).collect();
        assert_eq!(text, joined, "streamed deltas must add up to the completions");
        let tokens: js_sys::Array = get(&completions.get(1), "tokens").dyn_into().unwrap();
        assert_eq!(tokens.length(), 6);
    }
}

#[wasm_bindgen_test]
async fn bad_input_is_a_typed_error_and_the_engine_survives() {
    assert_eq!(code(load(b"GGUF\x03\x00\x00\x00junk").await.err().unwrap()), "BAD_MODEL");
    assert_eq!(code(load(b"not a model").await.err().unwrap()), "BAD_MODEL");
    let e = engine(Arch::Llama).await;
    for bad in [
        r#"{"prompt":"x","bogus":1}"#,
        r#"{"prompt":"x","preference":"  "}"#,
        r#"{"prompt":"x","preference":"a","alpha":"2"}"#,
        r#"{"prompt":"x","method":"base","maxTokens":0}"#,
        r#"{"prompt":"x","method":"base","temperature":-1}"#,
        r#"{"prompt":"x","method":"nope"}"#,
        r#"[]"#,
    ] {
        assert_eq!(code(start(&e, bad).await.err().unwrap()), "BAD_OPTION", "{bad}");
    }
    let mut g = start(&e, r#"{"prompt":"x","method":"base","maxTokens":50,"ignoreEos":true}"#).await.unwrap();
    step(&g).await.unwrap();
    g.abort();
    assert_eq!(step(&g).await.unwrap().length(), 0, "no token after abort");
    let out = g.finish().unwrap();
    let c = js_sys::Array::from(&get(&out, "completions")).get(0);
    assert_eq!(get(&c, "finishReason").as_string().unwrap(), "aborted");
    assert_eq!(code(g.finish().err().unwrap()), "BAD_OPTION", "finishing twice is an error, not a panic");
    let (_, out) = run(&e, r#"{"prompt":"x","method":"base","maxTokens":3,"ignoreEos":true}"#).await;
    assert!(get(&out, "timings").is_object());
}

#[wasm_bindgen_test]
async fn a_bad_reader_or_length_is_a_typed_error() {
    let bytes = write_gguf(&FixtureSpec::tiny(Arch::Llama, GgmlDType::Q8_0, 5)).unwrap();
    let cpu = |read: js_sys::Function, len: f64| load_with(read, len, "cpu");
    // A reader returning the wrong length, or not bytes, is a typed error.
    let short = Closure::<dyn Fn(f64, f64) -> js_sys::Uint8Array>::new(move |_o: f64, _l: f64| {
        js_sys::Uint8Array::new_with_length(3)
    });
    let f: js_sys::Function = short.as_ref().unchecked_ref::<js_sys::Function>().clone();
    assert_eq!(code(cpu(f, bytes.len() as f64).await.err().unwrap()), "BAD_MODEL");
    let junk = Closure::<dyn Fn(f64, f64) -> JsValue>::new(move |_o: f64, _l: f64| JsValue::from_str("nope"));
    let f: js_sys::Function = junk.as_ref().unchecked_ref::<js_sys::Function>().clone();
    assert_eq!(code(cpu(f, bytes.len() as f64).await.err().unwrap()), "IO");
    assert_eq!(code(cpu(js_sys::Function::new_no_args(""), -1.0).await.err().unwrap()), "BAD_OPTION");
    assert_eq!(code(load_with(reader(&bytes), bytes.len() as f64, "tpu").await.err().unwrap()), "BAD_OPTION");
}
