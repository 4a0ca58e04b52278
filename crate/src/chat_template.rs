//! Chat templates: the model's own Jinja template (`tokenizer.chat_template`) rendered the way
//! transformers' `apply_chat_template` renders it, so prompts are byte-identical to Python's.
//!
//! transformers renders with `trim_blocks=True, lstrip_blocks=True` and Jinja2's default
//! `keep_trailing_newline=False`, exposes `raise_exception` and `strftime_now`, replaces
//! `tojson` with `json.dumps(.., ensure_ascii=False)` (no HTML escaping, Python separators),
//! and passes `messages`, `add_generation_prompt`, `tools=None`, `documents=None` and the
//! special tokens. Python string/dict methods (`.strip()`, `.startswith()`, `.items()`...)
//! come from minijinja-contrib's pycompat layer.

use std::sync::Arc;

use minijinja::value::{Enumerator, Kwargs, Object, ObjectRepr, Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind};

use crate::error::{AmuletError, Result};
use crate::tokenizer::TextTokenizer;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into() }
    }
}

/// Used when the GGUF has no template and the vocabulary has Gemma's turn markers
/// (`<start_of_turn>`/`<end_of_turn>`): Gemma's published format, system text folded into the
/// next turn because Gemma has no system role, assistant called `model`.
pub const GEMMA_FALLBACK_TEMPLATE: &str = "{{- bos_token -}}
{%- set ns = namespace(prefix='') -%}
{%- for message in messages -%}
    {%- if message['role'] == 'system' -%}
        {%- set ns.prefix = ns.prefix + (message['content'] | trim) + '\\n\\n' -%}
    {%- else -%}
        {%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}
        {{- '<start_of_turn>' + role + '\\n' + ns.prefix + (message['content'] | trim) + '<end_of_turn>\\n' -}}
        {%- set ns.prefix = '' -%}
    {%- endif -%}
{%- endfor -%}
{%- if ns.prefix -%}
    {{- '<start_of_turn>user\\n' + ns.prefix[:-2] + '<end_of_turn>\\n' -}}
{%- endif -%}
{%- if add_generation_prompt -%}
    {{- '<start_of_turn>model\\n' -}}
{%- endif -%}";

/// Used for every other model without a template: ChatML, transformers' historical default
/// and the format most instruction-tuned small models were trained on.
pub const CHATML_FALLBACK_TEMPLATE: &str = "{%- for message in messages -%}
    {{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{- '<|im_start|>assistant\\n' -}}
{%- endif -%}";

const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template; render it as often as needed.
pub struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
    fallback: bool,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("source", &self.source)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .field("fallback", &self.fallback)
            .finish()
    }
}

fn tpl_err(e: Error) -> AmuletError {
    // minijinja's alternate form adds the failing line, which is what a user needs to fix it.
    let mut msg = e.to_string();
    if let Some(detail) = e.detail() {
        if !msg.contains(detail) {
            msg = format!("{msg}: {detail}");
        }
    }
    AmuletError::ChatTemplate(msg)
}

impl ChatTemplate {
    /// Compiles now, so a broken template is reported when the model loads, not mid-request.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        Self::build(source, bos_token, eos_token, false)
    }

    fn build(source: &str, bos_token: &str, eos_token: &str, fallback: bool) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        // wasm32 has no clock in std (it would panic); templates then take their own
        // `strftime_now is defined` fallback date.
        #[cfg(not(target_arch = "wasm32"))]
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.add_template_owned(TEMPLATE_NAME, source.to_string()).map_err(tpl_err)?;
        Ok(ChatTemplate {
            env,
            source: source.to_string(),
            bos_token: bos_token.to_string(),
            eos_token: eos_token.to_string(),
            fallback,
        })
    }

    /// The GGUF's `tokenizer.chat_template`, or [`ChatTemplate::fallback_for`] when it has none.
    pub fn from_gguf(g: &crate::gguf::Gguf, tokenizer: &TextTokenizer) -> Result<Self> {
        match g.opt_str("tokenizer.chat_template") {
            Some(src) if !src.trim().is_empty() => {
                Self::new(src, &tokenizer.bos_token().unwrap_or_default(), &tokenizer.eos_token().unwrap_or_default())
            }
            _ => Self::fallback_for(tokenizer),
        }
    }

    /// A template for models that ship none (base models): Gemma turns when the vocabulary
    /// has `<start_of_turn>`/`<end_of_turn>`, ChatML otherwise.
    pub fn fallback_for(tokenizer: &TextTokenizer) -> Result<Self> {
        let gemma = tokenizer.token_id("<start_of_turn>").is_some() && tokenizer.token_id("<end_of_turn>").is_some();
        let source = if gemma { GEMMA_FALLBACK_TEMPLATE } else { CHATML_FALLBACK_TEMPLATE };
        Self::build(
            source,
            &tokenizer.bos_token().unwrap_or_default(),
            &tokenizer.eos_token().unwrap_or_default(),
            true,
        )
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// True when the model had no template of its own and a fallback is in use.
    pub fn is_fallback(&self) -> bool {
        self.fallback
    }

    /// The prompt text. Encode it with `add_special_tokens = false`: the template already
    /// wrote whatever bos/turn markers the model expects.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let messages: Vec<Value> = messages
            .iter()
            .map(|m| {
                Value::from_object(MessageObject {
                    role: Value::from(m.role.as_str()),
                    content: Value::from(m.content.as_str()),
                })
            })
            .collect();
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            tools => (),
            documents => (),
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        let tpl = self.env.get_template(TEMPLATE_NAME).map_err(tpl_err)?;
        tpl.render(ctx).map_err(tpl_err)
    }
}

/// A message as a Python dict would behave: keys in insertion order (`role`, `content`), so
/// `message | tojson` and `message.items()` match transformers' output.
#[derive(Debug)]
struct MessageObject {
    role: Value,
    content: Value,
}

impl Object for MessageObject {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        match key.as_str()? {
            "role" => Some(self.role.clone()),
            "content" => Some(self.content.clone()),
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["role", "content"])
    }
}

fn raise_exception(message: String) -> std::result::Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// transformers' `strftime_now`; the clock is read in UTC (no timezone database here).
#[cfg(not(target_arch = "wasm32"))]
fn strftime_now(format: String) -> std::result::Result<String, Error> {
    let secs =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    Ok(strftime(&format, secs))
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31): Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
fn strftime(format: &str, unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    let is_leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let cum = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cum[(m - 1) as usize] + d + u32::from(is_leap && m > 2);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&y.to_string()),
            Some('y') => out.push_str(&format!("{:02}", y.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{m:02}")),
            Some('d') => out.push_str(&format!("{d:02}")),
            Some('e') => out.push_str(&format!("{d:2}")),
            Some('-') => match chars.next() {
                Some('d') => out.push_str(&d.to_string()),
                Some('m') => out.push_str(&m.to_string()),
                Some(o) => {
                    out.push_str("%-");
                    out.push(o);
                }
                None => out.push_str("%-"),
            },
            Some('H') => out.push_str(&format!("{hh:02}")),
            Some('I') => out.push_str(&format!("{:02}", if hh % 12 == 0 { 12 } else { hh % 12 })),
            Some('p') => out.push_str(if hh < 12 { "AM" } else { "PM" }),
            Some('M') => out.push_str(&format!("{mm:02}")),
            Some('S') => out.push_str(&format!("{ss:02}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('B') => out.push_str(MONTHS[(m - 1) as usize]),
            Some('b') | Some('h') => out.push_str(&MONTHS[(m - 1) as usize][..3]),
            Some('A') => out.push_str(WEEKDAYS[weekday]),
            Some('a') => out.push_str(&WEEKDAYS[weekday][..3]),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent,
/// separators=separators, sort_keys=sort_keys)`.
fn tojson(value: &Value, ensure_ascii: Option<bool>, kwargs: Kwargs) -> std::result::Result<String, Error> {
    let ensure_ascii = match kwargs.get::<Option<bool>>("ensure_ascii")? {
        Some(v) => v,
        None => ensure_ascii.unwrap_or(false),
    };
    let indent: Option<Value> = kwargs.get("indent")?;
    let indent: Option<String> = match indent {
        None => None,
        Some(v) if v.is_none() || v.is_undefined() => None,
        Some(v) => match v.as_str() {
            Some(s) => Some(s.to_string()),
            None => Some(" ".repeat(v.as_usize().ok_or_else(|| {
                Error::new(ErrorKind::InvalidOperation, "tojson: indent must be a non-negative integer or a string")
            })?)),
        },
    };
    let separators: Option<Value> = kwargs.get("separators")?;
    let (item_sep, key_sep) = match separators {
        Some(v) if !v.is_none() && !v.is_undefined() => {
            let a = v.get_item_by_index(0)?;
            let b = v.get_item_by_index(1)?;
            match (a.as_str(), b.as_str()) {
                (Some(a), Some(b)) => (a.to_string(), b.to_string()),
                _ => return Err(Error::new(ErrorKind::InvalidOperation, "tojson: separators must be two strings")),
            }
        }
        _ => (if indent.is_some() { "," } else { ", " }.to_string(), ": ".to_string()),
    };
    let sort_keys: bool = kwargs.get::<Option<bool>>("sort_keys")?.unwrap_or(false);
    kwargs.assert_all_used()?;
    let opts = JsonOpts { ensure_ascii, indent, item_sep, key_sep, sort_keys };
    let mut out = String::new();
    write_json(&mut out, value, &opts, 0)?;
    Ok(out)
}

struct JsonOpts {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

/// Nesting deeper than this is a cycle or an attack, not a chat message.
const MAX_JSON_DEPTH: usize = 128;

fn write_json(out: &mut String, v: &Value, o: &JsonOpts, depth: usize) -> std::result::Result<(), Error> {
    if depth > MAX_JSON_DEPTH {
        return Err(Error::new(ErrorKind::InvalidOperation, "tojson: value nested too deeply"));
    }
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if v.is_integer() {
                out.push_str(&v.to_string());
            } else {
                out.push_str(&py_float_repr(f64::try_from(v.clone()).unwrap_or(f64::NAN)));
            }
        }
        ValueKind::String => write_json_str(out, v.as_str().unwrap_or_default(), o.ensure_ascii),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            write_container(out, o, depth, '[', ']', items.len(), |out, i| write_json(out, &items[i], o, depth + 1))?;
        }
        ValueKind::Map => {
            let mut entries: Vec<(String, Value)> = Vec::new();
            for key in v.try_iter()? {
                let val = v.get_item(&key)?;
                let key = match key.kind() {
                    ValueKind::String => key.as_str().unwrap_or_default().to_string(),
                    ValueKind::None | ValueKind::Undefined => "null".into(),
                    ValueKind::Bool => if key.is_true() { "true" } else { "false" }.into(),
                    ValueKind::Number if !key.is_integer() => {
                        py_float_repr(f64::try_from(key.clone()).unwrap_or(f64::NAN))
                    }
                    _ => key.to_string(),
                };
                entries.push((key, val));
            }
            if o.sort_keys {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            write_container(out, o, depth, '{', '}', entries.len(), |out, i| {
                write_json_str(out, &entries[i].0, o.ensure_ascii);
                out.push_str(&o.key_sep);
                write_json(out, &entries[i].1, o, depth + 1)
            })?;
        }
        ValueKind::Bytes => {
            write_json_str(out, &String::from_utf8_lossy(v.as_bytes().unwrap_or_default()), o.ensure_ascii)
        }
        ValueKind::Plain | ValueKind::Invalid => {
            if v.kind() == ValueKind::Invalid {
                return Err(Error::new(ErrorKind::InvalidOperation, "tojson: invalid value"));
            }
            write_json_str(out, &v.to_string(), o.ensure_ascii)
        }
        _ => write_json_str(out, &v.to_string(), o.ensure_ascii),
    }
    Ok(())
}

fn write_container(
    out: &mut String,
    o: &JsonOpts,
    depth: usize,
    open: char,
    close: char,
    len: usize,
    mut item: impl FnMut(&mut String, usize) -> std::result::Result<(), Error>,
) -> std::result::Result<(), Error> {
    out.push(open);
    if len == 0 {
        out.push(close);
        return Ok(());
    }
    for i in 0..len {
        if i > 0 {
            out.push_str(&o.item_sep);
        }
        if let Some(ind) = &o.indent {
            out.push('\n');
            out.push_str(&ind.repeat(depth + 1));
        }
        item(out, i)?;
    }
    if let Some(ind) = &o.indent {
        out.push('\n');
        out.push_str(&ind.repeat(depth));
    }
    out.push(close);
    Ok(())
}

fn write_json_str(out: &mut String, s: &str, ensure_ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ensure_ascii && (c as u32) > 0x7e) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: shortest round-trip digits, scientific outside 1e-4..1e16.
fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    let sci = format!("{:e}", f.abs());
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let sign = if f < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let body = if exp >= 0 {
            let int_len = exp as usize + 1;
            if digits.len() <= int_len {
                format!("{}{}.0", digits, "0".repeat(int_len - digits.len()))
            } else {
                format!("{}.{}", &digits[..int_len], &digits[int_len..])
            }
        } else {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        };
        format!("{sign}{body}")
    } else {
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{mant}e{exp_sign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(pairs: &[(&str, &str)]) -> Vec<ChatMessage> {
        pairs.iter().map(|(r, c)| ChatMessage::new(*r, *c)).collect()
    }

    #[test]
    fn chatml_fallback_renders() {
        let t = ChatTemplate::new(CHATML_FALLBACK_TEMPLATE, "", "").unwrap();
        let out = t.render(&msgs(&[("user", "Hi")]), true).unwrap();
        assert_eq!(out, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn gemma_fallback_folds_system_into_first_turn() {
        let t = ChatTemplate::new(GEMMA_FALLBACK_TEMPLATE, "<bos>", "<eos>").unwrap();
        let out = t
            .render(&msgs(&[("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"), ("user", "Joke?")]), true)
            .unwrap();
        assert_eq!(
            out,
            "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n\
             <start_of_turn>user\nJoke?<end_of_turn>\n<start_of_turn>model\n"
        );
        let only_system = t.render(&msgs(&[("system", "Be brief.")]), false).unwrap();
        assert_eq!(only_system, "<bos><start_of_turn>user\nBe brief.<end_of_turn>\n");
    }

    #[test]
    fn trim_and_lstrip_blocks_like_transformers() {
        let src = "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}\n";
        let t = ChatTemplate::new(src, "", "").unwrap();
        assert_eq!(t.render(&msgs(&[("user", "a"), ("user", "b")]), false).unwrap(), "[a]\n[b]\n");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
        match t.render(&[], false) {
            Err(AmuletError::ChatTemplate(m)) => assert!(m.contains("roles must alternate"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn syntax_error_at_compile_time() {
        assert!(matches!(ChatTemplate::new("{% for %}", "", ""), Err(AmuletError::ChatTemplate(_))));
    }

    #[test]
    fn pycompat_methods_and_loop_controls() {
        let src = "{% for m in messages %}{% if m['content'].startswith('skip') %}{% continue %}{% endif %}\
                   {{ m['content'].strip().upper() }}|{% endfor %}{% for k, v in messages[0].items() %}{{ k }}={{ v }};{% endfor %}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let out = t.render(&msgs(&[("user", "  hi  "), ("user", "skip me")]), false).unwrap();
        assert_eq!(out, "HI|role=user;content=  hi  ;");
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        let src = "{{ messages[0] | tojson }} {{ {'b': [1, 2.5, none, true], 'a': '<é>'} | tojson(sort_keys=true) }} \
                   {{ [1, {'x': 'y'}] | tojson(indent=2) }} {{ 'é' | tojson(ensure_ascii=true) }} {{ 1e20 | tojson }}";
        let t = ChatTemplate::new(src, "", "").unwrap();
        let out = t.render(&msgs(&[("user", "say \"hi\"\n")]), false).unwrap();
        assert_eq!(
            out,
            "{\"role\": \"user\", \"content\": \"say \\\"hi\\\"\\n\"} {\"a\": \"<é>\", \"b\": [1, 2.5, null, true]} \
             [\n  1,\n  {\n    \"x\": \"y\"\n  }\n] \"\\u00e9\" 1e+20"
        );
    }

    #[test]
    fn python_float_repr() {
        for (f, s) in [
            (1.0, "1.0"),
            (0.1, "0.1"),
            (1e-5, "1e-05"),
            (1e16, "1e+16"),
            (123.456, "123.456"),
            (-2.5e-7, "-2.5e-07"),
            (0.0001, "0.0001"),
            (1234567890123456.0, "1234567890123456.0"),
        ] {
            assert_eq!(py_float_repr(f), s);
        }
    }

    #[test]
    fn strftime_known_dates() {
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S %a %b %j", 0), "1970-01-01 00:00:00 Thu Jan 001");
        assert_eq!(strftime("%d %B %Y %A", 1_709_251_200), "01 March 2024 Friday");
        assert_eq!(strftime("%-d %b %y %I%p %%", 1_709_251_200 + 13 * 3600), "1 Mar 24 01PM %");
    }

    #[test]
    fn bos_eos_variables_and_trailing_newline_dropped() {
        let t = ChatTemplate::new("{{ bos_token }}x{{ eos_token }}\n", "<s>", "</s>").unwrap();
        assert_eq!(t.render(&[], false).unwrap(), "<s>x</s>");
    }
}
