//! Chat templates: the model's own Jinja template (`tokenizer.chat_template`) rendered the way
//! transformers' `apply_chat_template` renders it, so prompts are byte-identical to Python's.
//!
//! transformers renders with `trim_blocks=True, lstrip_blocks=True` and Jinja2's default
//! `keep_trailing_newline=False`, exposes `raise_exception` and `strftime_now`, replaces
//! `tojson` with `json.dumps(.., ensure_ascii=False)` (no HTML escaping, Python separators),
//! and passes `messages`, `add_generation_prompt`, `tools=None`, `documents=None` and the
//! special tokens. Python string/dict methods (`.strip()`, `.startswith()`, `.items()`...)
//! come from minijinja-contrib's pycompat layer.

mod sandbox;
// wasm32 has no clock in std (it would panic): there templates take their own
// `strftime_now is defined` fallback date, and only the tests use this.
#[cfg(any(not(target_arch = "wasm32"), test))]
mod strftime;
mod tojson;

use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectRepr, Value};
use minijinja::{Environment, Error, ErrorKind};

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

/// Where a model's own template comes from, named in errors.
const GGUF_TEMPLATE: &str = "tokenizer.chat_template";

pub use sandbox::{FUEL as TEMPLATE_FUEL, OUTPUT_BYTES as TEMPLATE_OUTPUT_BYTES, RECURSION as TEMPLATE_RECURSION};

/// A chat template, checked to compile and to render a sample conversation within the
/// sandbox's limits (see `sandbox`); render it as often as needed.
pub struct ChatTemplate {
    env: Environment<'static>,
    name: &'static str,
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
    /// A model's own template (`tokenizer.chat_template`). Compiled and tried on a sample
    /// conversation now, so a broken or hostile template is reported when the model loads,
    /// not mid-request: a syntax error is a `CHAT_TEMPLATE` error, a template that runs past
    /// the sandbox's limits a `BAD_MODEL` one.
    pub fn new(source: &str, bos_token: &str, eos_token: &str) -> Result<Self> {
        let t = Self::build(GGUF_TEMPLATE, source, bos_token, eos_token, false)?;
        let sample = [
            ChatMessage::new("system", "You are helpful."),
            ChatMessage::new("user", "Hi"),
            ChatMessage::new("assistant", "Hello!"),
            ChatMessage::new("user", "Tell me a joke."),
        ];
        match t.render(&sample, true) {
            // The template's own complaints (no system role...) wait for a real conversation.
            Ok(_) | Err(AmuletError::ChatTemplate(_)) => Ok(t),
            Err(e) => Err(e),
        }
    }

    fn build(name: &'static str, source: &str, bos_token: &str, eos_token: &str, fallback: bool) -> Result<Self> {
        let mut env = Environment::new();
        sandbox::install(&mut env);
        env.add_function("raise_exception", raise_exception);
        #[cfg(not(target_arch = "wasm32"))]
        env.add_function("strftime_now", strftime::strftime_now);
        env.add_filter("tojson", tojson::tojson);
        sandbox::compile(name, source).map_err(tpl_err)?;
        Ok(ChatTemplate {
            env,
            name,
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
        let (name, source) = if gemma {
            ("built-in Gemma fallback", GEMMA_FALLBACK_TEMPLATE)
        } else {
            ("built-in ChatML fallback", CHATML_FALLBACK_TEMPLATE)
        };
        Self::build(
            name,
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
    /// wrote whatever bos/turn markers the model expects. A render that passes the sandbox's
    /// limits is a `BAD_MODEL` error naming the template.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let input = messages.iter().map(|m| m.role.len() + m.content.len()).sum::<usize>()
            + self.bos_token.len()
            + self.eos_token.len();
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
        let compiled = sandbox::compile(self.name, &self.source).map_err(tpl_err)?;
        match sandbox::render(&self.env, &compiled, ctx, sandbox::Limits::for_input(input)) {
            sandbox::Outcome::Done(text) => Ok(text),
            sandbox::Outcome::Limit(reason) => {
                Err(AmuletError::BadModel(format!("chat template `{}` {reason}", self.name)))
            }
            sandbox::Outcome::Failed(e) => Err(tpl_err(e)),
        }
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
    fn bos_eos_variables_and_trailing_newline_dropped() {
        let t = ChatTemplate::new("{{ bos_token }}x{{ eos_token }}\n", "<s>", "</s>").unwrap();
        assert_eq!(t.render(&[], false).unwrap(), "<s>x</s>");
    }
}
