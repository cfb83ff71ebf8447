//! The three components of an answer's quality, each 0 to 1, and the facts
//! behind them (kept as numbers; reasons are only formatted when reported).
//!
//! Every rule is a penalty factor on a component that starts at 1, so
//! independent problems compound and an answer with none scores 1. The
//! thresholds are set so that ordinary answers (lists, tables, code, short
//! factual replies) take no penalty: failing over costs another upstream
//! call, so a false alarm is dearer than a miss.

use crate::detect::{Bytes, CHAR_RUN, head, mid_sentence, repeated_shingles, repeats, tail_loop};
use crate::hashed::{Hashed, hashed};
use crate::text::Fences;

/// Words longer than this (in characters) are not words but noise: a run of
/// one letter, glued tokens. The longest English words in use stay below.
const LONG_WORD: usize = 45;
/// Only this much of the prompt is read: a pasted document's first 8 KiB
/// say what it is about, and the cost stays bounded.
const PROMPT_SCAN: usize = 8 * 1024;

/// How the answer ended, from `finish_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// `stop`, `tool_calls`, absent, or anything else not below.
    Complete,
    /// `length`: the token limit cut it off.
    Length,
    /// `content_filter`: the provider cut it off.
    Filtered,
}

impl Finish {
    pub fn of(reason: Option<&str>) -> Self {
        match reason {
            Some("length") => Finish::Length,
            Some("content_filter") => Finish::Filtered,
            _ => Finish::Complete,
        }
    }
}

/// What the answer is judged against: the last user message's content
/// words, as sorted stem hashes, and its length in words.
pub struct Prompt {
    stems: Vec<u64>,
    /// One bit per stem (by its top 6 bits): most answer words miss it,
    /// which spares them the search.
    mask: u64,
    words: usize,
}

impl Prompt {
    /// `None`: the request had no readable user message; relevance and the
    /// short-answer rule are then not judged.
    pub fn new(text: Option<&str>) -> Self {
        let text = head(text.unwrap_or(""), PROMPT_SCAN);
        let (mut stems, mut words) = (Vec::new(), 0);
        for w in hashed(text) {
            words += 1;
            stems.extend(w.stem);
        }
        stems.sort_unstable();
        stems.dedup();
        let mask = stems.iter().fold(0, |m, h| m | bit(*h));
        Prompt { stems, mask, words }
    }

    /// Where stem `h` is among the prompt's.
    fn find(&self, h: u64) -> Option<usize> {
        if self.mask & bit(h) == 0 {
            return None;
        }
        self.stems.binary_search(&h).ok()
    }
}

fn bit(h: u64) -> u64 {
    1 << (h >> 58)
}

/// A degenerate loop: the model repeating itself until it was stopped.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Loop {
    /// The last `len` words repeat a block of `period` words.
    Words { period: usize, len: usize },
    /// One character `len` times in a row.
    Char { c: char, len: usize },
}

/// The components and what lowered them.
pub struct Analysis<'a> {
    pub completeness: f64,
    pub relevance: f64,
    pub coherence: f64,
    finish: Finish,
    /// `(answer words, prompt words)` when the answer is very short for its prompt.
    short: Option<(usize, usize)>,
    unclosed_fence: bool,
    /// The end of the last line, when it stops mid-sentence.
    mid_sentence: Option<&'a str>,
    degenerate: Option<Loop>,
    /// `(matched, prompt content words, needed)` when relevance was judged.
    overlap: Option<(usize, usize, usize)>,
    repeated_phrases: Option<f64>,
    repeated_lines: Option<(usize, usize)>,
    unprintable: Option<f64>,
    long_words: Option<f64>,
}

/// Scores a non-empty answer `text`. With `tool_calls` the answer is
/// relevant by construction: the model chose to act on the prompt.
pub fn analyse<'a>(
    text: &'a str,
    finish: Finish,
    prompt: &Prompt,
    tool_calls: bool,
) -> Analysis<'a> {
    let judge_relevance = !tool_calls && prompt.stems.len() >= 2;
    let mut fences = Fences::default();
    let mut bytes = Bytes::default();
    // Prose words and lines by hash (code is repetitive by nature and is
    // left out of the repetition rules); which prompt words the answer has.
    let mut prose = Vec::with_capacity(text.len() / 6);
    let mut lines = Vec::new();
    let mut matched = vec![
        false;
        if judge_relevance {
            prompt.stems.len()
        } else {
            0
        }
    ];
    let (mut words, mut content_words, mut word_bytes, mut long_bytes) = (0, 0, 0, 0);
    let mut last = ("", false);
    for line in text.lines() {
        let code = fences.line(line);
        bytes.line(line, code);
        let mut line_hash = 0u64;
        for Hashed {
            word: w,
            hash,
            stem,
        } in hashed(line)
        {
            words += 1;
            if let Some(h) = stem {
                content_words += 1;
                if judge_relevance && let Some(i) = prompt.find(h) {
                    matched[i] = true;
                }
            }
            if !code {
                prose.push(hash);
                line_hash = line_hash.rotate_left(17) ^ hash;
                word_bytes += w.len();
                if w.len() > LONG_WORD && w.chars().count() > LONG_WORD {
                    long_bytes += w.len();
                }
            }
        }
        // Lines are compared by their words: case and punctuation aside.
        if line_hash != 0 && line.trim().len() >= 8 {
            lines.push(line_hash);
        }
        if !line.trim().is_empty() {
            last = (line, code);
        }
    }
    let longest = bytes.longest;

    let degenerate = tail_loop(&prose)
        .map(|(period, len)| Loop::Words { period, len })
        .or((longest.1 >= CHAR_RUN).then_some(Loop::Char {
            c: char::from(longest.0),
            len: longest.1,
        }));
    let unclosed_fence = fences.is_open();
    let mid_sentence = (!last.1 && words >= 12)
        .then(|| mid_sentence(last.0))
        .flatten();
    let short = (prompt.words >= 40 && words < 8).then_some((words, prompt.words));

    let mut completeness = match finish {
        Finish::Complete => 1.0,
        Finish::Length | Finish::Filtered => 0.2,
    };
    if let Some((w, _)) = short {
        completeness *= (w as f64 / 8.0).max(0.3);
    }
    for (hit, factor) in [
        (unclosed_fence, 0.5),
        (mid_sentence.is_some(), 0.6),
        (degenerate.is_some(), 0.3),
    ] {
        if hit {
            completeness *= factor;
        }
    }

    let overlap = judge_relevance.then(|| {
        let found = matched.iter().filter(|&&m| m).count();
        let needed = prompt.stems.len().div_ceil(3).clamp(1, 6);
        (found, prompt.stems.len(), needed)
    });
    let relevance = overlap.map_or(1.0, |(matched, _, needed)| {
        // Short answers ("Paris.") need not echo the question.
        let floor = if content_words < 12 { 0.8 } else { 0.25 };
        (matched as f64 / needed as f64).min(1.0).max(floor)
    });

    let repeated_phrases = repeated_shingles(&prose).filter(|&r| r > 0.3);
    let repeated_lines = repeats(lines.iter().copied()).filter(|&(d, n)| d as f64 > 0.3 * n as f64);
    let unprintable = Some(bytes.bad as f64 / bytes.chars.max(1) as f64).filter(|&s| s > 0.02);
    let long_words = Some(long_bytes as f64 / word_bytes.max(1) as f64).filter(|&s| s > 0.1);
    let mut coherence = 1.0;
    if let Some(r) = repeated_phrases {
        coherence *= 1.0 - (r - 0.3) / 0.45;
    }
    if let Some((d, n)) = repeated_lines {
        coherence *= 1.0 - (d as f64 / n as f64 - 0.3) / 0.4;
    }
    if degenerate.is_some() {
        coherence *= 0.1;
    }
    if let Some(s) = unprintable {
        coherence *= 1.0 - (s - 0.02) / 0.18;
    }
    if let Some(s) = long_words {
        coherence *= 1.0 - (s - 0.1) / 0.4;
    }

    Analysis {
        completeness,
        relevance,
        coherence: coherence.clamp(0.0, 1.0),
        finish,
        short,
        unclosed_fence,
        mid_sentence,
        degenerate,
        overlap,
        repeated_phrases,
        repeated_lines,
        unprintable,
        long_words,
    }
}

impl Analysis<'_> {
    /// One reason per component below `low`, naming each rule that lowered it.
    pub fn reasons(&self, low: f64, out: &mut Vec<String>) {
        let mut why = Vec::new();
        if self.completeness < low {
            match self.finish {
                Finish::Length => {
                    why.push("cut off at the token limit (finish_reason length)".into())
                }
                Finish::Filtered => {
                    why.push("cut off by the content filter (finish_reason content_filter)".into())
                }
                Finish::Complete => {}
            }
            if let Some((a, p)) = self.short {
                why.push(format!(
                    "very short answer ({a} words) to a long prompt ({p} words)"
                ));
            }
            if self.unclosed_fence {
                why.push("unclosed code fence".into());
            }
            if let Some(tail) = self.mid_sentence {
                why.push(format!("ends mid-sentence (\"{tail}\")"));
            }
            if self.degenerate.is_some() {
                why.push("stuck in a degenerate loop".into());
            }
            push(out, "completeness", self.completeness, &mut why);
        }
        if self.relevance < low
            && let Some((matched, total, needed)) = self.overlap
        {
            why.push(format!(
                "shares {matched} of the prompt's {total} content words (wanted {needed})"
            ));
            push(out, "relevance", self.relevance, &mut why);
        }
        if self.coherence < low {
            if let Some(r) = self.repeated_phrases {
                why.push(format!("{:.0}% of 4-word phrases are repeats", r * 100.0));
            }
            if let Some((d, n)) = self.repeated_lines {
                why.push(format!("{d} of {n} lines are repeats"));
            }
            match self.degenerate {
                Some(Loop::Words { period, len }) => why.push(format!(
                    "degenerate loop: the last {len} words repeat a {period}-word block"
                )),
                Some(Loop::Char { c, len }) => {
                    why.push(format!("degenerate loop: {c:?} {len} times in a row"))
                }
                None => {}
            }
            if let Some(s) = self.unprintable {
                why.push(format!("{:.0}% unprintable characters", s * 100.0));
            }
            if let Some(s) = self.long_words {
                why.push(format!(
                    "{:.0}% of the text in words over {LONG_WORD} characters",
                    s * 100.0
                ));
            }
            push(out, "coherence", self.coherence, &mut why);
        }
    }
}

fn push(out: &mut Vec<String>, name: &str, score: f64, why: &mut Vec<String>) {
    out.push(format!("{name} {score:.2}: {}", why.join("; ")));
    why.clear();
}
