//! The usual answer or stream event (text parts, usage; no function call,
//! no error) read with the SDK's JSON reader: serde's derive spent more than
//! half of a stream event's guest instructions here. Anything else is left to
//! serde ([`Response::parse`]), so a reply read here is always the one serde
//! would read.

use std::borrow::Cow;

use switchyard_sdk::canonical::escaped_as_written;
use switchyard_sdk::canonical::read::{Key, Reader};

use super::{AnswerContent, AnswerPart, Candidate, PromptFeedback, Response, UsageMetadata};

impl<'a> Response<'a> {
    /// Reads an answer or stream event: the usual one (text parts, usage,
    /// no function call, no error) in one pass of the SDK's reader, which
    /// costs a fraction of serde's derive; anything else through serde, so
    /// the result is always what serde reads (tested on every one-byte
    /// change of a few events).
    pub fn parse(text: &'a str) -> serde_json::Result<Self> {
        match Self::read(text) {
            Some(response) => Ok(response),
            None => serde_json::from_str(text),
        }
    }

    /// The usual case of [`parse`](Self::parse); `None` for anything else (a
    /// duplicate or mistyped member, a function call, an error).
    fn read(text: &'a str) -> Option<Self> {
        let mut out = Response::default();
        let mut seen = [false; 5];
        let mut r = Reader::new(text);
        r.members(|r, name| {
            let i = match name {
                "candidates" => 0,
                "promptFeedback" => 1,
                "usageMetadata" => 2,
                "responseId" => 3,
                "error" => 4,
                _ => return r.skip(),
            };
            if std::mem::replace(&mut seen[i], true) {
                return None;
            }
            if r.null().ok()? {
                return Some(());
            }
            match i {
                0 => out.candidates = Some(r.items(Candidate::read)?),
                1 => out.prompt_feedback = Some(PromptFeedback::read(r)?),
                2 => out.usage_metadata = Some(UsageMetadata::read(r)?),
                3 => out.response_id = Some(r.str().ok()?),
                // An error: serde reads it.
                _ => return None,
            }
            Some(())
        })?;
        r.finish().ok()?;
        Some(out)
    }
}

/// A stream event of the usual kind (one candidate whose parts are text or
/// thoughts; no function call, error or prompt feedback), read in one pass
/// without building the [`Response`]: its text parts joined (thoughts left
/// out), its finish reason and its usage. What the general path makes of the
/// same event, by construction: anything else is `None` and goes there.
#[derive(Debug, Default)]
pub struct TextEvent<'a> {
    /// The non-empty text parts that are not thoughts, joined; `None` when
    /// there is none.
    pub text: Option<Text<'a>>,
    pub finish_reason: Option<Cow<'a, str>>,
    pub usage: Option<Usage<'a>>,
}

/// An event's text.
#[derive(Debug)]
pub enum Text<'a> {
    /// The text itself.
    Plain(Cow<'a, str>),
    /// One part's text as the event wrote it, escapes and all: what the SDK's
    /// writer writes for it (`escaped_as_written`), so it goes into the
    /// chunk as it is (`Key::inside`), not unescaped and escaped again.
    Escaped(Key<'a>),
}

impl<'a> Text<'a> {
    /// The text itself (`None` only for escapes `Escaped` never holds).
    pub fn unescaped(self) -> Option<Cow<'a, str>> {
        match self {
            Text::Plain(text) => Some(text),
            Text::Escaped(key) => key.name(),
        }
    }
}

/// An event's `usageMetadata`.
#[derive(Debug)]
pub enum Usage<'a> {
    /// Read from its text (which is kept, to know the same text again).
    Read(UsageMetadata, &'a str),
    /// Text the caller said it knows (the last event's): checked, not read.
    Known,
}

impl<'a> TextEvent<'a> {
    /// Reads `text`; a `usageMetadata` whose text is `known_usage` (Google
    /// repeats the prompt's count on every event until the last) is checked
    /// as JSON but not read again ([`Usage::Known`]).
    pub fn read(text: &'a str, known_usage: &str) -> Option<Self> {
        let mut out = TextEvent::default();
        // candidates, usageMetadata, responseId: a duplicate goes to serde.
        let mut seen = [false; 3];
        let mut r = Reader::new(text);
        r.members(|r, name| {
            let i = match name {
                "candidates" => 0,
                "usageMetadata" => 1,
                "responseId" => 2,
                // Prompt feedback and errors: the general path.
                "promptFeedback" | "error" => return None,
                _ => return r.skip(),
            };
            if std::mem::replace(&mut seen[i], true) {
                return None;
            }
            match i {
                0 => {
                    // Exactly one candidate (`null`, none or more: serde).
                    r.array().ok()?;
                    if !r.element().ok()? {
                        return None;
                    }
                    out.candidate(r)?;
                    if r.element().ok()? {
                        return None;
                    }
                }
                1 => {
                    let raw = r.value().ok()?;
                    out.usage = match raw {
                        "null" => None,
                        _ if same(raw, known_usage) => Some(Usage::Known),
                        _ => Some(Usage::Read(
                            UsageMetadata::read(&mut Reader::new(raw))?,
                            raw,
                        )),
                    };
                }
                _ => {
                    r.nullable(|r| r.str().ok())?;
                }
            }
            Some(())
        })?;
        r.finish().ok()?;
        seen[0].then_some(out)
    }

    fn candidate(&mut self, r: &mut Reader<'a>) -> Option<()> {
        let (mut content, mut finish, mut index) = (false, false, false);
        r.members(|r, name| match name {
            "content" if !std::mem::replace(&mut content, true) => {
                if r.null().ok()? {
                    return Some(());
                }
                let mut parts = false;
                r.members(|r, name| match name {
                    "parts" if !std::mem::replace(&mut parts, true) => {
                        if r.null().ok()? {
                            return Some(());
                        }
                        r.array().ok()?;
                        while r.element().ok()? {
                            self.part(r)?;
                        }
                        Some(())
                    }
                    "parts" => None,
                    _ => r.skip(),
                })
            }
            "finishReason" if !std::mem::replace(&mut finish, true) => {
                self.finish_reason = r.nullable(|r| r.str().ok())?;
                Some(())
            }
            "index" if !std::mem::replace(&mut index, true) => {
                r.nullable(Reader::unsigned::<u32>).map(drop)
            }
            "content" | "finishReason" | "index" => None,
            _ => r.skip(),
        })
    }

    /// One part: its text joined to the event's unless it is a thought.
    fn part(&mut self, r: &mut Reader<'a>) -> Option<()> {
        let (mut text, mut thought) = (None, None);
        r.members(|r, name| match name {
            "text" if text.is_none() => {
                text = Some(r.nullable(|r| r.raw_str().ok())?);
                Some(())
            }
            "thought" if thought.is_none() => {
                thought = Some(r.nullable(|r| match r.value().ok()? {
                    "true" => Some(true),
                    "false" => Some(false),
                    _ => None,
                })?);
                Some(())
            }
            // A duplicate, or a function call: the general path.
            "text" | "thought" | "functionCall" => None,
            _ => r.skip(),
        })?;
        if thought.flatten() == Some(true) {
            // serde reads a thought's text too, and refuses a lone
            // surrogate in it: so does this read.
            if let Some(Some(t)) = &text
                && t.is_escaped()
            {
                t.name()?;
            }
            return Some(());
        }
        let Some(part) = text.flatten().filter(|t| !t.inside().is_empty()) else {
            return Some(());
        };
        let part = if !part.is_escaped() {
            Text::Plain(Cow::Borrowed(part.inside()))
        } else if escaped_as_written(part.inside()) {
            Text::Escaped(part)
        } else {
            // Escapes the writer would write otherwise (`\/`, `\u00e9`), or
            // a lone surrogate, which serde refuses: the general path.
            Text::Plain(part.name()?)
        };
        self.text = Some(match self.text.take() {
            None => part,
            Some(before) => {
                let mut joined = before.unescaped()?.into_owned();
                joined.push_str(&part.unescaped()?);
                Text::Plain(Cow::Owned(joined))
            }
        });
        Some(())
    }
}

impl<'a> Candidate<'a> {
    fn read(r: &mut Reader<'a>) -> Option<Self> {
        let (mut content, mut finish_reason, mut index) = (None, None, None);
        r.members(|r, name| match name {
            "content" => r.once(&mut content, AnswerContent::read),
            "finishReason" => r.once(&mut finish_reason, |r| r.str().ok()),
            "index" => r.once(&mut index, Reader::unsigned),
            _ => r.skip(),
        })?;
        Some(Candidate {
            content: content.flatten(),
            finish_reason: finish_reason.flatten(),
            index: index.flatten(),
        })
    }
}

/// `a == b`, eight bytes a step: a plugin's `memcmp` is a byte loop.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let (mut x, mut y) = (a.chunks_exact(8), b.chunks_exact(8));
    let word = |c: &[u8]| u64::from_le_bytes(c.try_into().unwrap_or_default());
    x.by_ref().zip(y.by_ref()).all(|(p, q)| word(p) == word(q)) && x.remainder() == y.remainder()
}

impl<'a> AnswerContent<'a> {
    fn read(r: &mut Reader<'a>) -> Option<Self> {
        let mut parts = None;
        r.members(|r, name| match name {
            "parts" => r.once(&mut parts, |r| r.items(AnswerPart::read)),
            _ => r.skip(),
        })?;
        Some(AnswerContent {
            parts: parts.flatten(),
        })
    }
}

impl<'a> AnswerPart<'a> {
    fn read(r: &mut Reader<'a>) -> Option<Self> {
        let (mut text, mut thought) = (None, None);
        r.members(|r, name| match name {
            "text" => r.once(&mut text, |r| r.str().ok()),
            "thought" => r.once(&mut thought, |r| match r.value().ok()? {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            }),
            // A function call: serde reads it.
            "functionCall" => None,
            _ => r.skip(),
        })?;
        Some(AnswerPart {
            text: text.flatten(),
            thought: thought.flatten(),
            function_call: None,
        })
    }
}

impl<'a> PromptFeedback<'a> {
    fn read(r: &mut Reader<'a>) -> Option<Self> {
        let mut block_reason = None;
        r.members(|r, name| match name {
            "blockReason" => r.once(&mut block_reason, |r| r.str().ok()),
            _ => r.skip(),
        })?;
        Some(PromptFeedback {
            block_reason: block_reason.flatten(),
        })
    }
}

impl UsageMetadata {
    fn read(r: &mut Reader<'_>) -> Option<Self> {
        let mut counts = [None; 4];
        r.members(|r, name| {
            let i = match name {
                "promptTokenCount" => 0,
                "candidatesTokenCount" => 1,
                "thoughtsTokenCount" => 2,
                "cachedContentTokenCount" => 3,
                _ => return r.skip(),
            };
            r.once(&mut counts[i], Reader::unsigned)
        })?;
        let [prompt, candidates, thoughts, cached] = counts.map(Option::flatten);
        Some(UsageMetadata {
            prompt_token_count: prompt,
            candidates_token_count: candidates,
            thoughts_token_count: thoughts,
            cached_content_token_count: cached,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_compares_every_byte() {
        for n in 0..20 {
            let a: String = (0..n).map(|i| char::from(b'a' + i as u8)).collect();
            assert!(same(&a, &a.clone()));
            assert!(!same(&a, &format!("{a}x")));
            for i in 0..n {
                let mut b = a.clone().into_bytes();
                b[i] = b'.';
                assert!(!same(&a, std::str::from_utf8(&b).unwrap()), "{n} {i}");
            }
        }
    }
    use switchyard_sdk::canonical::read::assert_fast_path_agrees;

    /// Every one-byte change of a few events: where the reader answers,
    /// serde reads the same response; the usual events are read here.
    #[test]
    fn read_agrees_with_serde_on_any_one_byte_change() {
        let docs = [
            r#"{"candidates": [{"content": {"parts": [{"text": "**Counting\n**","thought": true}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 8,"totalTokenCount": 8},"modelVersion": "gemini-2.5-flash","responseId": "Zm9v"}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"the \"year\""}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":19,"cachedContentTokenCount":4,"promptTokensDetails":[{"modality":"TEXT","tokenCount":8}],"thoughtsTokenCount":60},"promptFeedback":{"blockReason":null}}"#,
        ];
        // `d`: a hex digit, so a probe inside an escape leaves an escape.
        let probes = [
            "{", "}", "[", "]", ",", ":", "\"", "\\", "0", "-", "n", "t", " ", "d",
        ];
        let answered = assert_fast_path_agrees(
            &docs,
            &probes,
            |v| Response::read(v).map(|r| format!("{r:?}")),
            |v| format!("{:?}", serde_json::from_str::<Response>(v).expect(v)),
        );
        assert!(answered > 1000, "{answered}");
    }

    #[test]
    fn unusual_events_are_left_to_the_general_path() {
        let part = r#"{"content":{"parts":[{"text":"a"}]}}"#;
        for text in [
            format!(r#"{{"candidates":[{part}],"promptFeedback":{{"blockReason":null}}}}"#),
            format!(r#"{{"candidates":[{part}],"error":{{"code":500}}}}"#),
            format!(r#"{{"candidates":[{part},{part}]}}"#),
            r#"{"candidates":[]}"#.into(),
            r#"{"candidates":null}"#.into(),
            r#"{"usageMetadata":{"promptTokenCount":1}}"#.into(),
            r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f"}}]}}]}"#.into(),
            r#"{"candidates":[{"content":{"parts":[{"text":"a","text":"b"}]}}]}"#.into(),
        ] {
            assert!(TextEvent::read(&text, "").is_none(), "{text}");
        }
        assert!(TextEvent::read(&format!(r#"{{"candidates":[{part}]}}"#), "").is_some());
    }

    /// Every one-byte change of a few stream events: where the one-pass
    /// reader answers, serde reads one candidate whose text parts, joined
    /// without thoughts, finish reason and usage are the same, and neither a
    /// function call nor an error nor prompt feedback.
    #[test]
    fn text_events_read_as_serde_reads_them() {
        let docs = [
            r#"{"candidates": [{"content": {"parts": [{"text": "whispering to the cold earth\u2014\n"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 8,"totalTokenCount": 8},"modelVersion": "gemini-2.5-flash","responseId": "Zm9v"}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"a","thought":true},{"text":""},{"text":"b\"c"},{"text":"d","thought":false}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":8,"candidatesTokenCount":19,"thoughtsTokenCount":60,"cachedContentTokenCount":4},"responseId":null}"#,
            r#"{"candidates":[{"content":null,"finishReason":null,"index":null}],"usageMetadata":null}"#,
            r#"{"candidates":[{"content":{"parts":[{"text":"x\uD83D\uDE00","thought":true},{"text":"y\n"}]},"index":0}]}"#,
        ];
        // A thought's `\uD83D\uDE00` loses its second backslash to a
        // deletion: a lone surrogate, which serde refuses in a thought too.
        let probes = [
            "{", "}", "[", "]", ",", ":", "\"", "\\", "0", "-", "n", "t", " ", "d",
        ];
        let answered = assert_fast_path_agrees(
            &docs,
            &probes,
            |v| {
                TextEvent::read(v, "").map(|e| {
                    let usage = e.usage.map(|u| match u {
                        Usage::Read(u, _) => u,
                        Usage::Known => unreachable!("nothing is known"),
                    });
                    let text = e.text.map(|t| t.unescaped().expect("as serde reads it"));
                    format!("{:?} {:?} {:?}", text, e.finish_reason, usage)
                })
            },
            |v| {
                let r = serde_json::from_str::<Response>(v).expect(v);
                assert!(r.error.is_none() && r.prompt_feedback.is_none(), "{v}");
                let [c] = &r.candidates.expect(v)[..] else {
                    panic!("not one candidate: {v}")
                };
                let parts = c
                    .content
                    .as_ref()
                    .and_then(|c| c.parts.as_deref())
                    .unwrap_or_default();
                assert!(parts.iter().all(|p| p.function_call.is_none()), "{v}");
                let text: String = parts
                    .iter()
                    .filter(|p| p.thought != Some(true))
                    .filter_map(|p| p.text.as_deref())
                    .collect();
                let text = (!text.is_empty()).then_some(std::borrow::Cow::<str>::Owned(text));
                format!("{:?} {:?} {:?}", text, c.finish_reason, r.usage_metadata)
            },
        );
        assert!(answered > 1000, "{answered}");
    }
}
