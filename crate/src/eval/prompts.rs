//! Prompt sets: one JSON object a line, `{"id": .., "question": ".."}` (docs/method.md §6).

use std::path::Path;

use crate::error::{AmuletError, Result};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PromptItem {
    /// The set's own id (a number or a string), written back unchanged.
    pub id: serde_json::Value,
    pub question: String,
}

fn bad_line(source: &str, line: usize, message: impl std::fmt::Display) -> AmuletError {
    AmuletError::bad_option("prompts", format!("{source} line {line}: {message}"))
}

/// Parses a JSONL prompt set; `source` names it in errors. Blank lines are skipped; any
/// other line that is not `{"id": number|string, "question": non-empty string}` is an
/// error naming the line. `limit` keeps the first N prompts (the rest is still checked,
/// so a broken file is found before a long run).
pub fn parse_prompts(text: &str, source: &str, limit: Option<usize>) -> Result<Vec<PromptItem>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad_line(source, n, format!("not JSON: {e}")))?;
        let obj = v.as_object().ok_or_else(|| bad_line(source, n, "must be a JSON object"))?;
        let id = match obj.get("id") {
            Some(id @ (serde_json::Value::Number(_) | serde_json::Value::String(_))) => id.clone(),
            Some(other) => return Err(bad_line(source, n, format!("`id` must be a number or a string, got {other}"))),
            None => return Err(bad_line(source, n, "has no `id`")),
        };
        let question = match obj.get("question") {
            Some(serde_json::Value::String(q)) if !q.trim().is_empty() => q.clone(),
            Some(serde_json::Value::String(_)) => return Err(bad_line(source, n, "`question` is empty")),
            Some(other) => return Err(bad_line(source, n, format!("`question` must be a string, got {other}"))),
            None => return Err(bad_line(source, n, "has no `question`")),
        };
        out.push(PromptItem { id, question });
    }
    if out.is_empty() {
        return Err(AmuletError::bad_option("prompts", format!("{source} has no prompts")));
    }
    if let Some(l) = limit {
        if l == 0 {
            return Err(AmuletError::bad_option("limit", "must be at least 1"));
        }
        out.truncate(l);
    }
    Ok(out)
}

/// Reads and parses a prompt file.
pub fn load_prompts(path: &Path, limit: Option<usize>) -> Result<Vec<PromptItem>> {
    let text = std::fs::read_to_string(path).map_err(|e| AmuletError::Io(format!("{}: {e}", path.display())))?;
    parse_prompts(&text, &path.display().to_string(), limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(e: AmuletError) -> String {
        match e {
            AmuletError::BadOption { option, message } => format!("{option}: {message}"),
            e => panic!("not a BadOption: {e}"),
        }
    }

    #[test]
    fn good_lines_parse_and_blank_lines_are_skipped() {
        let p =
            parse_prompts("{\"id\": 0, \"question\": \"Hi?\"}\n\n{\"id\": \"b\", \"question\": \"Yo\"}\n", "f", None)
                .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].id, serde_json::json!("b"));
        assert_eq!(
            parse_prompts("{\"id\":1,\"question\":\"a\"}\n{\"id\":2,\"question\":\"b\"}", "f", Some(1)).unwrap().len(),
            1
        );
    }

    #[test]
    fn bad_lines_are_named() {
        let ok = "{\"id\": 0, \"question\": \"Hi?\"}\n";
        for (bad, want) in [
            ("not json", "line 2: not JSON"),
            ("[1, 2]", "line 2: must be a JSON object"),
            ("{\"question\": \"x\"}", "line 2: has no `id`"),
            ("{\"id\": null, \"question\": \"x\"}", "line 2: `id` must be"),
            ("{\"id\": 1}", "line 2: has no `question`"),
            ("{\"id\": 1, \"question\": 5}", "line 2: `question` must be a string"),
            ("{\"id\": 1, \"question\": \"  \"}", "line 2: `question` is empty"),
        ] {
            let m = message(parse_prompts(&format!("{ok}{bad}\n"), "set.jsonl", None).unwrap_err());
            assert!(m.starts_with("prompts: set.jsonl "), "{m}");
            assert!(m.contains(want), "{bad}: {m}");
        }
        assert!(message(parse_prompts("\n\n", "f", None).unwrap_err()).contains("no prompts"));
        assert!(message(parse_prompts(ok, "f", Some(0)).unwrap_err()).starts_with("limit"));
        assert!(matches!(load_prompts(Path::new("/nonexistent/p.jsonl"), None), Err(AmuletError::Io(_))));
    }
}
