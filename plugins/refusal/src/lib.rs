//! Catches answers that refuse or evade: a 200 with "I'm sorry, but I
//! cannot help with that" is not an answer, and another deployment (another
//! provider, another model) may well give one.
//!
//! A choice is a refusal when, in this order:
//! - its `refusal` field (OpenAI structured outputs) is set;
//! - its `finish_reason` is `content_filter`;
//! - the first 300 characters of its content contain a refusal phrase
//!   (case-insensitive, spelling variants folded: see `detect.rs`), built-in
//!   or from the config; later mentions are not read, so a long helpful
//!   answer that says "I cannot" halfway through passes;
//! - it is an empty evasion: empty or whitespace content, `finish_reason`
//!   `stop`, no tool calls.
//!
//! A refusal scores 0 and fails, with a reason saying which rule matched and
//! quoting the first ~80 characters; anything else passes with score 1.
//!
//! Config (`plugins.config.refusal`, every key optional): `{"patterns":
//! ["extra phrase", ...], "fail_on_refusal": true}`. Patterns add to the
//! built-in ones. With `fail_on_refusal` false a refusal still scores 0 but
//! passes: recorded (quality averages, logs) without failing over.

mod answer;
mod detect;
#[cfg(test)]
mod tests;

use std::sync::OnceLock;

use serde::Deserialize;
use switchyard_sdk::{Evaluator, Metadata, Verdict, export_evaluator, log, plugin_config};

use crate::answer::{Answer, Choice};

struct Refusal;

impl Evaluator for Refusal {
    fn metadata() -> Metadata {
        Metadata::new("refusal", env!("CARGO_PKG_VERSION"), &[])
    }

    fn evaluate(_request: &str, response: &str) -> Result<Verdict, String> {
        evaluate(config(), response)
    }
}

export_evaluator!(Refusal);
// Small blocks freed by one call serve the next (see the SDK docs).
switchyard_sdk::small_block_allocator!();

/// This instance's config, read on its first call only (the host replaces
/// instances when the config changes). A bad block is reported once and
/// replaced by the defaults rather than failing every answer.
fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::parse(&plugin_config()).unwrap_or_else(|e| {
            log::warn(&format!(
                "refusal: invalid config ({e}); using the defaults"
            ));
            Config::default()
        })
    })
}

/// The plugin's config block.
#[derive(Debug, Clone)]
struct Config {
    /// Extra phrases, normalised as the answer is.
    patterns: Vec<String>,
    fail_on_refusal: bool,
    /// The built-in phrases and `patterns`, in that order, as one automaton.
    phrases: aho_corasick::AhoCorasick,
}

impl PartialEq for Config {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns && self.fail_on_refusal == other.fail_on_refusal
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new(Vec::new(), true)
    }
}

impl Config {
    fn new(patterns: Vec<String>, fail_on_refusal: bool) -> Self {
        let all = detect::BUILT_IN
            .iter()
            .copied()
            .chain(patterns.iter().map(String::as_str));
        // Leftmost-first: of phrases starting at the same place, the one
        // listed first (built-ins before the config's) is reported.
        let phrases = aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::LeftmostFirst)
            .build(all)
            .expect("phrases are short and few: the automaton always builds");
        Config {
            patterns,
            fail_on_refusal,
            phrases,
        }
    }

    /// The first phrase (leftmost in `head`) found in `head`.
    fn find(&self, head: &str) -> Option<&str> {
        let m = self.phrases.find(head)?;
        let i = m.pattern().as_usize();
        Some(match detect::BUILT_IN.get(i) {
            Some(p) => p,
            None => &self.patterns[i - detect::BUILT_IN.len()],
        })
    }
}

impl Config {
    /// Parses the block; unknown keys are refused so that a misspelt one is
    /// reported, and so are patterns that could never match or would match
    /// everything.
    fn parse(json: &str) -> Result<Self, String> {
        #[derive(Default, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        struct Given {
            patterns: Vec<String>,
            fail_on_refusal: Option<bool>,
        }
        // Only an object: serde would also read a struct from an array.
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(json).map_err(|e| e.to_string())?;
        let given: Given =
            serde_json::from_value(serde_json::Value::Object(object)).map_err(|e| e.to_string())?;
        let mut patterns = Vec::with_capacity(given.patterns.len());
        for p in &given.patterns {
            let n = detect::normalize(p, usize::MAX);
            if n.is_empty() {
                return Err("patterns must not be empty".into());
            }
            if n.chars().count() > detect::SCAN_CHARS {
                return Err(format!(
                    "pattern {p:?} is longer than the {} characters read",
                    detect::SCAN_CHARS
                ));
            }
            patterns.push(n);
        }
        Ok(Config::new(patterns, given.fail_on_refusal.unwrap_or(true)))
    }
}

/// A refusal in any choice makes the verdict a refusal (score 0).
/// `Err` when the response is not a chat completion with choices.
fn evaluate(config: &Config, response: &str) -> Result<Verdict, String> {
    let answer = Answer::parse(response)?;
    let several = answer.choices.len() > 1;
    let mut reasons = Vec::new();
    for (i, choice) in answer.choices.iter().enumerate() {
        if let Some(why) = refusal(config, choice) {
            reasons.push(if several {
                format!("choice {i}: {why}")
            } else {
                why
            });
        }
    }
    Ok(if reasons.is_empty() {
        Verdict::pass()
    } else {
        Verdict {
            score: 0.0,
            pass: !config.fail_on_refusal,
            reasons,
        }
    })
}

/// Why `choice` is a refusal, if it is one.
fn refusal(config: &Config, choice: &Choice) -> Option<String> {
    let finish = choice.finish_reason.as_ref().map(|f| &*f.0);
    let message = choice.message.as_ref();
    let content = message.map_or("", |m| m.content());
    let refused = message.and_then(|m| m.refusal.as_ref()).map(|r| &*r.0);
    if let Some(text) = refused.filter(|r| !r.trim().is_empty()) {
        return Some(format!("refusal (refusal field): {}", detect::quote(text)));
    }
    if finish == Some("content_filter") {
        return Some(format!(
            "refusal (finish_reason content_filter): {}",
            detect::quote(content)
        ));
    }
    let head = detect::normalize(content, detect::SCAN_CHARS);
    if let Some(phrase) = config.find(&head) {
        return Some(format!(
            "refusal (matched {phrase:?}): {}",
            detect::quote(content)
        ));
    }
    (head.is_empty() && finish == Some("stop") && !message.is_some_and(|m| m.calls_tools()))
        .then(|| "empty answer (finish_reason stop, no tool calls)".into())
}
