//! `amulet chat`: an interactive conversation on the native engine. Each line read is a user
//! turn; the answer streams to stdout, and a status line on stderr says how much of the prompt
//! was reused from the turn before (the engine keeps both contexts' caches) and how long the
//! turn waited for its first token. Lines starting with `/` are commands: /preference TEXT,
//! /method NAME, /reset, /quit.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use amulet::align::Method;
use amulet::chat_template::ChatMessage;
use amulet::engine::{ContextOverflow, GenerateRequest};
use amulet::model::DeviceChoice;
use amulet::{AmuletError, Result};
use clap::Args;

use crate::cli::{load_engine, with_params, StrengthArgs, ThreadsArg};

#[derive(Args)]
pub struct ChatArgs {
    /// GGUF model file (default: the manifest's default model, fetched when missing)
    #[arg(long)]
    model: Option<PathBuf>,
    /// The preference in plain words; /preference changes it between turns
    #[arg(long)]
    preference: Option<String>,
    #[arg(long, value_enum, default_value_t = Method::default())]
    method: Method,
    /// System prompt (default: the paper's)
    #[arg(long)]
    system: Option<String>,
    #[arg(long, default_value_t = 256)]
    max_tokens: usize,
    /// Drop the oldest turns when the history outgrows the context (else: an error)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    truncate_oldest: bool,
    #[command(flatten)]
    strength: StrengthArgs,
    #[command(flatten)]
    threads: ThreadsArg,
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

pub fn run(a: ChatArgs) -> Result<()> {
    a.threads.apply()?;
    let path = crate::model_path::resolve(a.model.as_deref())?;
    let (mut engine, _) = load_engine(&path, false, a.device)?;
    let mut method = with_params(a.method, a.strength.params(), a.strength.ratio, Default::default())?;
    let mut preference = a.preference.clone();
    let mut messages: Vec<ChatMessage> = Vec::new();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    let mut turn = 0;
    eprintln!(
        "{} on {}; one line a turn; /preference TEXT, /method NAME, /reset, /quit",
        engine.info().name,
        engine.info().device
    );
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| AmuletError::Io(e.to_string()))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(cmd) = line.strip_prefix('/') {
            let (name, arg) = cmd.split_once(' ').map_or((cmd, ""), |(n, a)| (n, a.trim()));
            match name {
                "quit" | "exit" => break,
                "reset" => {
                    messages.clear();
                    eprintln!("(history cleared)");
                }
                "preference" => {
                    preference = (!arg.is_empty()).then(|| arg.to_string());
                    eprintln!("(preference: {})", preference.as_deref().unwrap_or("none"));
                }
                "method" => match arg.parse::<Method>() {
                    Ok(m) => {
                        method = with_params(m, a.strength.params(), a.strength.ratio, Default::default())?;
                        eprintln!("(method: {})", method.name());
                    }
                    Err(e) => eprintln!("error [{}]: {e}", e.code()),
                },
                other => eprintln!("unknown command /{other} (/preference TEXT, /method NAME, /reset, /quit)"),
            }
            continue;
        }
        turn += 1;
        let mut req = GenerateRequest::new(line);
        let mut history = messages.clone();
        history.push(ChatMessage::new("user", line));
        req.conversation.messages = history;
        req.conversation.system = a.system.clone();
        req.preference = preference.clone();
        req.methods = vec![if preference.is_none() { Method::Base } else { method }];
        req.max_tokens = a.max_tokens;
        req.context_overflow = if a.truncate_oldest { ContextOverflow::TruncateOldest } else { ContextOverflow::Error };
        let result = engine.generate(&req, &mut |ev| {
            let _ = out.write_all(ev.text.as_bytes());
            let _ = out.flush();
            true
        });
        let _ = writeln!(out);
        match result {
            Ok(o) => {
                let t = &o.timings;
                let reused = t.cached_tokens_base.max(t.cached_tokens_pref);
                eprintln!(
                    "[turn {turn}] prompt {} tokens, {reused} reused, {} read in {:.0} ms; {} tokens at {:.1} tok/s{}",
                    o.prompt_tokens_base.max(o.prompt_tokens_pref),
                    t.prefill_tokens,
                    t.prefill_ms,
                    o.completions[0].tokens.len(),
                    t.decode_tokens_per_s,
                    if o.dropped_turns > 0 {
                        format!("; {} oldest turns dropped", o.dropped_turns)
                    } else {
                        String::new()
                    }
                );
                messages = req.conversation.messages;
                messages.push(ChatMessage::new("assistant", o.completions[0].text.clone()));
            }
            Err(e) => eprintln!("error [{}]: {e}", e.code()),
        }
    }
    Ok(())
}
