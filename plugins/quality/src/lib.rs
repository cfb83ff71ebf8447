//! A heuristic quality score for every answer: completeness, relevance to
//! the prompt and coherence, each 0 to 1, weighted into one score. An answer
//! below the threshold fails, so a non-streamed answer that is cut off,
//! looping or garbled is retried on the next deployment; a stream's score is
//! recorded (it feeds the `quality-aware` strategy's averages).
//!
//! The rules (see `score.rs` for the exact factors):
//! - completeness: `finish_reason` `length` or `content_filter` (×0.2), a
//!   very short answer (under 8 words) to a long prompt (40 words or more;
//!   ×words/8, at least ×0.3), an unclosed code fence (×0.5), a last prose
//!   line that stops mid-sentence (×0.6), a degenerate loop (×0.3: the
//!   model never reached an end); an empty answer scores 0 outright.
//! - relevance: how many of the last user message's content words
//!   (stopwords and words under 3 letters removed, crudely stemmed) the
//!   answer uses; a third of them (at most 6) counts as fully relevant, and
//!   a floor keeps short factual answers from being punished (0.8 under 12
//!   content words, else 0.25). Not judged when the prompt has fewer than 2
//!   content words or the answer calls tools.
//! - coherence: repeated 4-word phrases (over 30 %) and repeated lines
//!   (over 30 %) in prose (code is repetitive by nature and left out), a
//!   degenerate loop (×0.1: a block of words repeated 3 times or more at the
//!   end, over 16 words or more, or one character 200 times in a row),
//!   unprintable characters (over 2 %), words over 45 characters (over 10 %
//!   of the text).
//!
//! Tool-call-only answers pass with score 1 unless a call is malformed.
//! Deterministic and cheap (a few allocations; no regular expressions).
//!
//! Config (`plugins.config.quality`, every key optional): `{"weights":
//! {"completeness": 0.4, "relevance": 0.35, "coherence": 0.25},
//! "threshold": 0.5}`; weights are normalised to sum 1.

mod answer;
mod config;
mod detect;
mod hashed;
mod score;
#[cfg(test)]
mod tests;
mod text;

use std::sync::OnceLock;

use switchyard_sdk::{Evaluator, Metadata, Verdict, export_evaluator, log, plugin_config};

use crate::answer::Answer;
use crate::config::Config;
use crate::score::{Finish, Prompt};

struct Quality;

impl Evaluator for Quality {
    fn metadata() -> Metadata {
        Metadata::new("quality", env!("CARGO_PKG_VERSION"), &[])
    }

    fn evaluate(request: &str, response: &str) -> Result<Verdict, String> {
        evaluate(config(), request, response)
    }
}

export_evaluator!(Quality);
// Small blocks freed by one call serve the next (see the SDK docs).
switchyard_sdk::small_block_allocator!();

/// This instance's config, read on its first call only (the host replaces
/// instances when the config changes, so the copy never goes stale). A bad
/// block is reported once and replaced by the defaults rather than failing
/// every answer.
fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::parse(&plugin_config()).unwrap_or_else(|e| {
            log::warn(&format!(
                "quality: invalid config ({e}); using the defaults"
            ));
            Config::default()
        })
    })
}

/// The verdict on every choice: the lowest score, a pass only if all pass.
/// `Err` when the response is not a chat completion with choices.
fn evaluate(config: &Config, request: &str, response: &str) -> Result<Verdict, String> {
    let answer = Answer::parse(response)?;
    let prompt = Prompt::new(answer::prompt(request).as_deref());
    let several = answer.choices.len() > 1;
    let mut verdict = Verdict::pass();
    for (i, choice) in answer.choices.iter().enumerate() {
        let v = judge(config, &prompt, choice);
        verdict.score = verdict.score.min(v.score);
        verdict.pass &= v.pass;
        if several {
            let prefixed = v.reasons.into_iter().map(|r| format!("choice {i}: {r}"));
            verdict.reasons.extend(prefixed);
        } else {
            verdict.reasons = v.reasons;
        }
    }
    Ok(verdict)
}

fn judge(config: &Config, prompt: &Prompt, choice: &answer::Choice) -> Verdict {
    let message = choice.message.as_ref();
    let calls = match answer::tool_calls(message.and_then(|m| m.tool_calls)) {
        Ok(n) => n,
        Err(why) => return Verdict::fail(0.0, format!("malformed tool call: {why}")),
    };
    let text = message
        .and_then(|m| m.content.as_ref())
        .map_or("", |c| c.0.trim());
    if text.is_empty() {
        return if calls > 0 {
            Verdict::pass()
        } else {
            Verdict::fail(0.0, "completeness 0.00: empty answer")
        };
    }
    let finish = Finish::of(choice.finish_reason.as_ref().map(|f| &*f.0));
    let a = score::analyse(text, finish, prompt, calls > 0);
    let w = &config.weights;
    let score =
        (w.completeness * a.completeness + w.relevance * a.relevance + w.coherence * a.coherence)
            .clamp(0.0, 1.0);
    let pass = score >= config.threshold;
    let mut reasons = Vec::new();
    if !pass {
        reasons.push(format!(
            "low quality: score {score:.2} below the threshold {:.2}",
            config.threshold
        ));
    }
    // A weighted mean below the threshold has a component below it, so a
    // fail always names at least one component.
    a.reasons(config.threshold.max(0.6), &mut reasons);
    Verdict {
        score: score as f32,
        pass,
        reasons,
    }
}
