//! Generation options as JS (and JSON) callers write them: camelCase keys, checked one by
//! one so an unknown key or a wrong type names the option.

use serde_json::{Map, Value};

use crate::align::{AmuletParams, Game, Method};
use crate::chat_template::ChatMessage;
use crate::engine::GenerateRequest;
use crate::error::AmuletError;
use crate::prompt::Placement;

/// Every option key the parser accepts; the JS schema (www/src/schema.js) is tested against it.
pub const KNOWN: &[&str] = &[
    "messages",
    "prompt",
    "system",
    "preference",
    "placement",
    "method",
    "methods",
    "alpha",
    "lambda",
    "eta",
    "iterations",
    "ratio",
    "game",
    "maxTokens",
    "temperature",
    "topP",
    "topK",
    "seed",
    "topLogprobs",
    "stop",
    "ignoreEos",
    "contextOverflow",
];

fn bad(option: &str, msg: impl Into<String>) -> AmuletError {
    AmuletError::bad_option(option, msg)
}

fn num(o: &Map<String, Value>, k: &str) -> Result<Option<f64>, AmuletError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or_else(|| bad(k, "is not a finite number")),
        Some(v) => Err(bad(k, format!("must be a number, got {v}"))),
    }
}

fn uint(o: &Map<String, Value>, k: &str) -> Result<Option<u64>, AmuletError> {
    match num(o, k)? {
        None => Ok(None),
        Some(x) if x >= 0.0 && x.fract() == 0.0 && x <= 9.0e15 => Ok(Some(x as u64)),
        Some(x) => Err(bad(k, format!("must be a whole number >= 0, got {x}"))),
    }
}

fn string(o: &Map<String, Value>, k: &str) -> Result<Option<String>, AmuletError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Err(bad(k, format!("must be a string, got {v}"))),
    }
}

fn strings(o: &Map<String, Value>, k: &str) -> Result<Option<Vec<String>>, AmuletError> {
    match o.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| bad(k, "must be a list of strings")))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(v) => Err(bad(k, format!("must be a string or a list of strings, got {v}"))),
    }
}

/// A JS request object (camelCase keys) -> GenerateRequest, naming any bad key.
pub fn parse_request(v: &Value) -> Result<GenerateRequest, AmuletError> {
    let o = v.as_object().ok_or_else(|| bad("request", "must be an object"))?;
    if let Some(k) = o.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(bad(k, format!("is not a known option (known: {})", KNOWN.join(", "))));
    }
    let messages = match (o.get("messages"), string(o, "prompt")?) {
        (Some(Value::Array(list)), None) => list
            .iter()
            .map(|m| {
                serde_json::from_value::<ChatMessage>(m.clone())
                    .map_err(|e| bad("messages", format!("each message needs string `role` and `content`: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?,
        (None, Some(p)) => vec![ChatMessage::new("user", p)],
        (Some(_), Some(_)) => return Err(bad("prompt", "give either `prompt` or `messages`, not both")),
        (Some(_), None) => return Err(bad("messages", "must be a list of {role, content}")),
        (None, None) => return Err(bad("messages", "give `messages` or `prompt`")),
    };
    let mut req = GenerateRequest::new("");
    req.conversation.messages = messages;
    req.conversation.system = string(o, "system")?;
    req.preference = string(o, "preference")?;
    if let Some(p) = string(o, "placement")? {
        req.placement = p.parse::<Placement>()?;
    }
    let d = AmuletParams::default();
    let params = AmuletParams {
        alpha: num(o, "alpha")?.unwrap_or(d.alpha),
        lambda: num(o, "lambda")?.unwrap_or(d.lambda),
        eta: num(o, "eta")?.unwrap_or(d.eta),
        iterations: match uint(o, "iterations")? {
            Some(t) => u32::try_from(t).map_err(|_| bad("iterations", "is too large"))?,
            None => d.iterations,
        },
    };
    let ratio = num(o, "ratio")?.unwrap_or(Method::DEFAULT_LA_RATIO);
    let game = match string(o, "game")? {
        Some(g) => g.parse::<Game>()?,
        None => Game::ClosedForm,
    };
    let names = match (string(o, "method")?, strings(o, "methods")?) {
        (Some(_), Some(_)) => return Err(bad("method", "give either `method` or `methods`, not both")),
        (Some(m), None) => vec![m],
        (None, Some(ms)) => ms,
        (None, None) => vec!["amulet".to_string()],
    };
    req.methods = names
        .iter()
        .map(|n| {
            let m = match n.parse::<Method>()? {
                Method::LinearAlignment { .. } => Method::LinearAlignment { ratio },
                Method::Amulet { .. } => Method::Amulet { params, game },
                m => m,
            };
            m.validate()?;
            Ok(m)
        })
        .collect::<Result<Vec<_>, AmuletError>>()?;
    if let Some(n) = uint(o, "maxTokens")? {
        req.max_tokens = n as usize;
    }
    if let Some(t) = num(o, "temperature")? {
        req.sampling.temperature = t;
    }
    req.sampling.top_p = num(o, "topP")?;
    req.sampling.top_k = uint(o, "topK")?.map(|k| k as usize);
    if let Some(s) = uint(o, "seed")? {
        req.sampling.seed = s;
    }
    req.sampling.validate()?;
    if let Some(n) = uint(o, "topLogprobs")? {
        req.top_logprobs = n as usize;
    }
    req.stop = strings(o, "stop")?.unwrap_or_default();
    if let Some(c) = string(o, "contextOverflow")? {
        req.context_overflow = c.parse()?;
    }
    req.ignore_eos = match o.get("ignoreEos") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => return Err(bad("ignoreEos", format!("must be a boolean, got {v}"))),
    };
    Ok(req)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_full_request_parses() {
        let r = parse_request(&json!({
            "prompt": "hi", "preference": "concise", "methods": ["base", "pref", "amulet", "la"],
            "alpha": 1.5, "iterations": 10, "ratio": 3, "maxTokens": 9, "temperature": 0.7, "topP": 0.9,
            "topK": 5, "seed": 4, "topLogprobs": 3, "stop": "END", "placement": "user", "game": "iterative"
        }))
        .unwrap();
        assert_eq!(r.methods.len(), 4);
        assert_eq!(r.methods[3], Method::LinearAlignment { ratio: 3.0 });
        assert!(
            matches!(r.methods[2], Method::Amulet { params, game: Game::Iterative } if params.alpha == 1.5 && params.iterations == 10)
        );
        assert_eq!(r.max_tokens, 9);
        assert_eq!(r.stop, vec!["END".to_string()]);
        assert_eq!(r.placement, Placement::User);
        assert_eq!(r.conversation.messages[0].content, "hi");
    }

    fn option_of(v: serde_json::Value) -> String {
        match parse_request(&v).unwrap_err() {
            AmuletError::BadOption { option, .. } => option,
            e => panic!("not a BadOption: {e}"),
        }
    }

    #[test]
    fn bad_options_name_themselves() {
        assert_eq!(option_of(json!({"prompt": "hi", "temprature": 1})), "temprature");
        assert_eq!(option_of(json!({"prompt": "hi", "alpha": "2"})), "alpha");
        assert_eq!(option_of(json!({"prompt": "hi", "maxTokens": -1})), "maxTokens");
        assert_eq!(option_of(json!({"prompt": "hi", "maxTokens": 1.5})), "maxTokens");
        assert_eq!(option_of(json!({"prompt": "hi", "method": "sideways"})), "method");
        assert_eq!(option_of(json!({"prompt": "hi", "topP": 0})), "top_p");
        assert_eq!(option_of(json!({"prompt": "hi", "lambda": 0})), "lambda");
        assert_eq!(option_of(json!({"messages": "hi"})), "messages");
        assert_eq!(option_of(json!({})), "messages");
        assert_eq!(option_of(json!({"prompt": "hi", "ignoreEos": 1})), "ignoreEos");
        assert_eq!(option_of(json!([1])), "request");
    }
}
