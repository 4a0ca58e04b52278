//! The two contexts of an Amulet request: the same conversation rendered with and without
//! the preference sentence, through the model's own chat template.

use crate::chat_template::{ChatMessage, ChatTemplate};
use crate::error::{AmuletError, Result};
use crate::tokenizer::TextTokenizer;

/// The paper's system prompt, used when the caller gives none.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are an AI designed to provide the most helpful, clear, and concise \
responses. Focus on giving actionable information, ensuring accuracy and detail without overwhelming the user. \
You should also be patient, polite, and calm. Avoid unnecessary complexity and always prioritize practical, \
user-friendly advice.";

/// Where the preference sentence goes: the paper appends it to the system prompt; small
/// models often follow the user turn better.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(not(target_arch = "wasm32"), derive(clap::ValueEnum))]
pub enum Placement {
    #[default]
    System,
    User,
}

impl std::str::FromStr for Placement {
    type Err = AmuletError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "system" => Ok(Placement::System),
            "user" => Ok(Placement::User),
            other => Err(AmuletError::bad_option("placement", format!("`{other}` is not one of: system, user"))),
        }
    }
}

/// The sentence the paper adds for preference `p`.
pub fn preference_sentence(preference: &str) -> String {
    format!("Your answer should be {} as much as possible.", preference.trim())
}

/// Checks a free-text preference: non-empty, one line, bounded.
pub fn validate_preference(p: &str) -> Result<()> {
    let t = p.trim();
    if t.is_empty() {
        return Err(AmuletError::bad_option("preference", "must not be empty (e.g. \"concise\", \"uplifting\")"));
    }
    if t.chars().count() > 500 {
        return Err(AmuletError::bad_option("preference", "is longer than 500 characters"));
    }
    Ok(())
}

/// The conversation of one request, before templating.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// user / assistant turns; the last one must be the user's.
    pub messages: Vec<ChatMessage>,
    /// None: the paper's default system prompt. Some(""): no system turn at all.
    pub system: Option<String>,
}

impl Conversation {
    pub fn validate(&self) -> Result<()> {
        let last = self
            .messages
            .last()
            .ok_or_else(|| AmuletError::bad_option("messages", "needs at least one user message"))?;
        if last.role != "user" {
            return Err(AmuletError::bad_option("messages", "the last message must have role \"user\""));
        }
        for m in &self.messages {
            if !matches!(m.role.as_str(), "user" | "assistant" | "system") {
                return Err(AmuletError::bad_option(
                    "messages",
                    format!("role `{}` is not one of: system, user, assistant", m.role),
                ));
            }
        }
        Ok(())
    }

    /// Chat messages with the optional preference sentence placed as asked.
    pub fn with_preference(&self, preference: Option<&str>, placement: Placement) -> Vec<ChatMessage> {
        let mut system = match &self.system {
            Some(s) => s.clone(),
            None => DEFAULT_SYSTEM_PROMPT.to_string(),
        };
        let mut turns: Vec<ChatMessage> = Vec::with_capacity(self.messages.len() + 1);
        for m in &self.messages {
            if m.role == "system" {
                // An explicit system message in the list replaces the system prompt.
                system = m.content.clone();
            } else {
                turns.push(m.clone());
            }
        }
        if let Some(p) = preference {
            let sentence = preference_sentence(p);
            match placement {
                Placement::System => {
                    system = if system.is_empty() { sentence } else { format!("{system} {sentence}") };
                }
                Placement::User => {
                    if let Some(last) = turns.last_mut() {
                        last.content = format!("{}\n{sentence}", last.content);
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(turns.len() + 1);
        if !system.is_empty() {
            out.push(ChatMessage::new("system", system));
        }
        out.extend(turns);
        out
    }
}

/// Renders and tokenizes one context.
pub fn encode_context(
    template: &ChatTemplate,
    tokenizer: &TextTokenizer,
    messages: &[ChatMessage],
) -> Result<Vec<u32>> {
    let text = template.render(messages, true)?;
    // Templates write their own special tokens (bos, turn markers) as text.
    let ids = tokenizer.encode(&text, false)?;
    if ids.is_empty() {
        return Err(AmuletError::bad_option("messages", "the rendered prompt is empty"));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(q: &str) -> Conversation {
        Conversation { messages: vec![ChatMessage::new("user", q)], system: None }
    }

    #[test]
    fn preference_goes_to_the_system_prompt_by_default() {
        let m = conv("Hi?").with_preference(Some("concise"), Placement::System);
        assert_eq!(m[0].role, "system");
        assert!(m[0].content.starts_with("You are an AI designed"));
        assert!(m[0].content.ends_with("Your answer should be concise as much as possible."));
        assert_eq!(m[1].content, "Hi?");
    }

    #[test]
    fn user_placement_changes_only_the_last_user_turn() {
        let m = conv("Hi?").with_preference(Some("uplifting"), Placement::User);
        assert_eq!(m[0].content, DEFAULT_SYSTEM_PROMPT);
        assert_eq!(m[1].content, "Hi?\nYour answer should be uplifting as much as possible.");
    }

    #[test]
    fn without_preference_the_contexts_match_the_base() {
        let c = conv("Hi?");
        let m = c.with_preference(None, Placement::User);
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].content, "Hi?");
        let c = Conversation { system: Some(String::new()), ..c };
        assert_eq!(c.with_preference(None, Placement::System).len(), 1);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert!(validate_preference("   ").is_err());
        assert!(validate_preference("concise").is_ok());
        assert!("sideways".parse::<Placement>().is_err());
        let c = Conversation { messages: vec![], system: None };
        assert!(c.validate().is_err());
        let c = Conversation { messages: vec![ChatMessage::new("assistant", "x")], system: None };
        assert!(c.validate().is_err());
    }
}
