//! An [`Adapter`]'s exported functions exactly as the host calls them.
//!
//! The component's exports are these functions and nothing more, so a
//! plugin's unit tests can drive an adapter natively through the same glue
//! the host sees: metadata assembled from the trait, quota hints filled in,
//! stream state saved to bytes and restored on every call.
//!
//! ```
//! use switchyard_sdk::{run, StreamEvent, Target};
//! # fn check<A: switchyard_sdk::Adapter>(target: &Target) -> Result<(), switchyard_sdk::UpstreamError> {
//! let start = run::begin_stream::<A>(target, "{}", "date: Wed, 01 May 2024 12:00:00 GMT\n")?;
//! // The state keeps the target: later calls are not given it.
//! let step = run::parse_stream::<A>(&start.state, &[StreamEvent::data("[DONE]")])?;
//! // `None`: the state did not change; the host keeps the one it had.
//! let state = step.state.unwrap_or(start.state);
//! let last = run::end_stream::<A>(&state)?;
//! # Ok(()) }
//! ```

use crate::adapter::{
    Adapter, AdapterMetadata, BuildError, ChatResponse, HttpRequest, HttpResponse, StreamEvents,
    StreamStart, StreamStep, Target, UpstreamError,
};
use crate::stream::{Envelope, StateReader, StateWriter, StreamEvent, StreamParser, unpack};

/// `metadata`: the adapter's [`Metadata`](crate::Metadata) with its
/// [`auth`](Adapter::auth) and [`framing`](Adapter::framing).
pub fn metadata<A: Adapter>() -> AdapterMetadata {
    let m = A::metadata();
    AdapterMetadata {
        name: m.name,
        version: m.version,
        capabilities: m.capabilities,
        auth: A::auth(),
        framing: A::framing(),
        response_headers: A::response_headers(),
    }
}

/// `build-request`.
pub fn build_request<A: Adapter>(
    target: &Target,
    request: &str,
) -> Result<HttpRequest, BuildError> {
    A::build_request(target, request)
}

/// `parse-response`, with the quota read from the headers when the adapter
/// reported none (on errors too: a 200 that is not an answer may still carry
/// rate-limit headers).
pub fn parse_response<A: Adapter>(
    target: &Target,
    response: &HttpResponse,
) -> Result<ChatResponse, UpstreamError> {
    match A::parse_response(target, response) {
        Ok(mut answer) => {
            if answer.quota.is_none() {
                answer.quota = A::quota(&response.headers);
            }
            Ok(answer)
        }
        Err(e) => Err(with_quota::<A>(e, response)),
    }
}

/// `classify-error`, with the quota read from the headers when the adapter
/// reported none.
pub fn classify_error<A: Adapter>(response: &HttpResponse) -> UpstreamError {
    with_quota::<A>(A::classify_error(response), response)
}

fn with_quota<A: Adapter>(mut e: UpstreamError, response: &HttpResponse) -> UpstreamError {
    if e.quota.is_none() {
        e.quota = A::quota(&response.headers);
    }
    e
}

/// `begin-stream`: [`StreamParser::begin`], saved, with the quota of `headers`.
/// The state keeps the target: the later calls are not given it again.
pub fn begin_stream<A: Adapter>(
    target: &Target,
    request: &str,
    headers: &str,
) -> Result<StreamStart, UpstreamError> {
    let parser = A::Stream::begin(target, request, headers)?;
    let env = Envelope {
        done: false,
        usage: None,
    };
    let kept = StateWriter::with_capacity(8 + target.deployment.len() + target.model.len())
        .str(&target.deployment)
        .str(&target.model)
        .finish();
    Ok(StreamStart {
        state: env.seal(&[&kept, &parser.save()])?,
        quota: A::quota(headers),
    })
}

/// The target kept in a state's bytes after the envelope, its encoded bytes
/// and the parser's own bytes.
fn kept_target(saved: &[u8]) -> Result<(Target, &[u8], &[u8]), UpstreamError> {
    let mut r = StateReader::new(saved);
    let target = Target {
        deployment: r.str()?,
        model: r.str()?,
    };
    let parser = r.rest();
    Ok((target, &saved[..saved.len() - parser.len()], parser))
}

/// `parse-stream`: restores the parser and its target from `state`, hands
/// it `events` one by one until it signals the end (later events are
/// ignored: nothing may follow the end), and saves it again: the step's
/// state is `None` when the saved bytes are the ones it was given.
pub fn parse_stream<A: Adapter>(
    state: &[u8],
    events: &[StreamEvent],
) -> Result<StreamStep, UpstreamError> {
    parse_each::<A>(state, events.iter().map(|e| Ok(*e)))
}

/// `parse-stream` as the host calls it: the events packed in one string
/// (see [`StreamEvents`]), read in place.
pub fn parse_stream_packed<A: Adapter>(
    state: &[u8],
    events: &StreamEvents,
) -> Result<StreamStep, UpstreamError> {
    parse_each::<A>(state, unpack(&events.text, &events.ends))
}

fn parse_each<'e, A: Adapter>(
    state: &[u8],
    events: impl Iterator<Item = Result<StreamEvent<'e>, UpstreamError>>,
) -> Result<StreamStep, UpstreamError> {
    let (env, saved) = Envelope::open(state)?;
    let mut out = env.output();
    let (target, kept, saved) = kept_target(saved)?;
    if out.done {
        return Envelope::step(out, &[kept, saved], state);
    }
    let mut parser = A::Stream::restore(saved)?;
    for event in events {
        parser.event(&target, &event?, &mut out)?;
        if out.done {
            break;
        }
    }
    Envelope::step(out, &[kept, &parser.save()], state)
}

/// `end-stream`: restores the parser and lets [`StreamParser::end`] decide
/// whether the stream was complete.
pub fn end_stream<A: Adapter>(state: &[u8]) -> Result<StreamStep, UpstreamError> {
    let (env, saved) = Envelope::open(state)?;
    let mut out = env.output();
    let (target, kept, saved) = kept_target(saved)?;
    let mut parser = A::Stream::restore(saved)?;
    parser.end(&target, &mut out)?;
    Envelope::step(out, &[kept, &parser.save()], state)
}

/// Every way of cutting `n` events into consecutive non-empty batches
/// (2^(n-1) of them), for tests that a parser's state survives whatever
/// batches the host hands it. Keep `n` small.
pub fn batchings(n: usize) -> alloc::vec::Vec<alloc::vec::Vec<usize>> {
    if n == 0 {
        return alloc::vec::Vec::new();
    }
    (0u32..1 << (n - 1))
        .map(|cuts| {
            let mut sizes = alloc::vec![1];
            for i in 0..n - 1 {
                if cuts & (1 << i) != 0 {
                    sizes.push(1);
                } else if let Some(last) = sizes.last_mut() {
                    *last += 1;
                }
            }
            sizes
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;
    use alloc::{format, vec};

    use super::*;
    use crate::adapter::{AuthScheme, ErrorClass, QuotaHint, StreamFraming};
    use crate::stream::{StateReader, StateWriter, StreamOutput};
    use crate::types::{Metadata, Usage};

    #[test]
    fn batchings_cover_every_cut() {
        let all = batchings(4);
        assert_eq!(all.len(), 8);
        assert!(
            all.iter()
                .all(|b| b.iter().sum::<usize>() == 4 && b.iter().all(|n| *n > 0))
        );
        assert!(all.contains(&vec![4]) && all.contains(&vec![1, 1, 1, 1]));
        assert!(batchings(0).is_empty());
    }

    /// Numbers each data event, reports usage on `u`, ends on `end`, fails on `bad`.
    struct Counting;

    struct Counter {
        seen: u32,
        prefix: String,
    }

    impl StreamParser for Counter {
        fn begin(_target: &Target, request: &str, _headers: &str) -> Result<Self, UpstreamError> {
            Ok(Counter {
                seen: 0,
                prefix: request.to_string(),
            })
        }
        fn event(
            &mut self,
            target: &Target,
            event: &StreamEvent,
            out: &mut StreamOutput,
        ) -> Result<(), UpstreamError> {
            match event.data {
                "end" => out.set_done(),
                "u" => out.set_usage(Usage::new(self.seen, 1)),
                "bad" => return Err(UpstreamError::new(ErrorClass::Overloaded, "bad")),
                d => {
                    self.seen += 1;
                    out.push(format!(
                        "{}{}:{}:{d}",
                        self.prefix, target.deployment, self.seen
                    ));
                }
            }
            Ok(())
        }
        fn save(&self) -> Vec<u8> {
            StateWriter::new().u32(self.seen).str(&self.prefix).finish()
        }
        fn restore(state: &[u8]) -> Result<Self, UpstreamError> {
            let mut r = StateReader::new(state);
            let c = Counter {
                seen: r.u32()?,
                prefix: r.str()?,
            };
            r.finish()?;
            Ok(c)
        }
    }

    impl Adapter for Counting {
        type Stream = Counter;
        fn metadata() -> Metadata {
            Metadata::new("counting", "1.0.0", &["streaming"])
        }
        fn framing() -> StreamFraming {
            StreamFraming::Ndjson
        }
        fn build_request(_target: &Target, request: &str) -> Result<HttpRequest, BuildError> {
            if request.is_empty() {
                return Err(BuildError::InvalidRequest("empty".into()));
            }
            Ok(HttpRequest::post_json("/x", request.as_bytes().to_vec()))
        }
        fn parse_response(
            _target: &Target,
            response: &HttpResponse,
        ) -> Result<ChatResponse, UpstreamError> {
            Ok(ChatResponse::new(
                String::from_utf8_lossy(&response.body).into_owned(),
                None,
            ))
        }
        fn classify_error(response: &HttpResponse) -> UpstreamError {
            UpstreamError::new(ErrorClass::RateLimited(response.retry_after_ms()), "429")
        }
    }

    fn target() -> Target {
        Target {
            deployment: "d".into(),
            model: "m".into(),
        }
    }

    fn response(headers: &[(&str, &str)]) -> HttpResponse {
        HttpResponse {
            status: 429,
            headers: crate::headers::header_block(headers),
            body: b"{}".to_vec(),
        }
    }

    #[test]
    fn metadata_carries_auth_and_framing() {
        let m = metadata::<Counting>();
        assert_eq!(m.name, "counting");
        assert_eq!(m.capabilities, vec!["streaming".to_string()]);
        assert_eq!(m.auth, AuthScheme::Bearer);
        assert_eq!(m.framing, StreamFraming::Ndjson);
    }

    #[test]
    fn requests_and_quota_filling() {
        let r = build_request::<Counting>(&target(), "{}").unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/x"));
        assert_eq!(r.headers[0].1, "application/json");
        assert_eq!(
            build_request::<Counting>(&target(), ""),
            Err(BuildError::InvalidRequest("empty".into()))
        );
        let limited = response(&[
            ("retry-after", "3"),
            ("x-ratelimit-remaining-requests", "0"),
        ]);
        let e = classify_error::<Counting>(&limited);
        assert_eq!(e.class, ErrorClass::RateLimited(Some(3000)));
        assert_eq!(e.quota.unwrap().remaining_requests, Some(0));
        let ok = parse_response::<Counting>(&target(), &limited).unwrap();
        assert_eq!(ok.body, "{}");
        assert_eq!(ok.quota.unwrap().remaining_requests, Some(0));
        assert_eq!(classify_error::<Counting>(&response(&[])).quota, None);
        let start =
            begin_stream::<Counting>(&target(), "p", "x-ratelimit-limit-tokens: 9\n").unwrap();
        assert_eq!(
            start.quota,
            Some(QuotaHint {
                limit_tokens: Some(9),
                ..QuotaHint::default()
            })
        );
    }

    /// Feeds `events` in batches of the given sizes, through bytes each time.
    fn drive(
        events: &[&str],
        batches: &[usize],
    ) -> Result<(Vec<String>, Option<Usage>, bool), UpstreamError> {
        let t = target();
        let mut state = begin_stream::<Counting>(&t, "p", "")?.state;
        let (mut chunks, mut usage, mut done) = (Vec::new(), None, false);
        let mut rest = events;
        for &n in batches {
            let (now, later) = rest.split_at(n);
            rest = later;
            let batch: Vec<StreamEvent> = now.iter().map(|d| StreamEvent::data(d)).collect();
            let step = parse_stream::<Counting>(&state, &batch)?;
            chunks.extend(step.chunks);
            usage = step.usage;
            done = step.done;
            state = step.state.unwrap_or(state);
        }
        let last = end_stream::<Counting>(&state)?;
        assert!(last.chunks.is_empty());
        assert_eq!(last.usage, usage, "usage is repeated at the end");
        Ok((chunks, usage, done || last.done))
    }

    #[test]
    fn state_survives_any_batching() {
        let events = ["a", "b", "u", "c", "end", "ignored", "bad"];
        // Every way of cutting the events into consecutive batches.
        for cuts in 0u32..(1 << (events.len() - 1)) {
            let mut batches = Vec::new();
            let mut size = 1;
            for i in 0..events.len() - 1 {
                if cuts & (1 << i) != 0 {
                    batches.push(size);
                    size = 1;
                } else {
                    size += 1;
                }
            }
            batches.push(size);
            let (chunks, usage, done) = drive(&events, &batches).unwrap();
            assert_eq!(chunks, vec!["pd:1:a", "pd:2:b", "pd:3:c"], "{batches:?}");
            assert_eq!(usage, Some(Usage::new(2, 1)));
            assert!(done);
        }
    }

    /// Packs events as the host does: names and data back to back.
    fn pack(events: &[(&str, &str)]) -> StreamEvents {
        let mut text = String::new();
        let mut ends = Vec::new();
        for (event, data) in events {
            text.push_str(event);
            ends.push(text.len() as u32);
            text.push_str(data);
            ends.push(text.len() as u32);
        }
        StreamEvents { text, ends }
    }

    #[test]
    fn packed_events_read_as_a_list() {
        let t = target();
        let state = begin_stream::<Counting>(&t, "p", "").unwrap().state;
        let events = [
            ("", "a"),
            ("née", "b\nç"),
            ("x", ""),
            ("", "u"),
            ("", "end"),
        ];
        let list: Vec<StreamEvent> = events.iter().map(|(e, d)| StreamEvent::new(e, d)).collect();
        let packed = parse_stream_packed::<Counting>(&state, &pack(&events)).unwrap();
        assert_eq!(packed, parse_stream::<Counting>(&state, &list).unwrap());
        assert_eq!(packed.chunks, vec!["pd:1:a", "pd:2:b\nç", "pd:3:"]);
        assert!(packed.done);
        // No events: nothing changes.
        let none = parse_stream_packed::<Counting>(&state, &pack(&[])).unwrap();
        assert_eq!((none.chunks.len(), none.state), (0, None));

        // Offsets the host could not have meant are an error, never a panic.
        let text = "aébc".to_string();
        for ends in [
            vec![1],          // odd
            vec![2, 1],       // descending
            vec![1, 9],       // past the end
            vec![2, 3],       // inside `é`
            vec![1, 3, 2, 5], // the second event starts before the first ended
            vec![0, 1],       // text past the last offset
            vec![],           // no events, but text
        ] {
            let events = StreamEvents {
                text: text.clone(),
                ends: ends.clone(),
            };
            let e = parse_stream_packed::<Counting>(&state, &events).unwrap_err();
            assert!(
                e.message
                    .starts_with("malformed stream events from the host"),
                "{ends:?}: {}",
                e.message
            );
        }
    }

    #[test]
    fn the_target_is_kept_in_the_state() {
        let t = Target {
            deployment: "dép-1".into(),
            model: "m-2".into(),
        };
        let state = begin_stream::<Counting>(&t, "", "").unwrap().state;
        let step = parse_stream::<Counting>(&state, &[StreamEvent::data("x")]).unwrap();
        assert_eq!(step.chunks, vec!["dép-1:1:x"]);
        let state = step.state.unwrap();
        let (_, saved) = Envelope::open(&state).unwrap();
        let (kept, _, parser) = kept_target(saved).unwrap();
        assert_eq!(kept, t);
        assert_eq!(Counter::restore(parser).unwrap().seen, 1);
    }

    #[test]
    fn truncation_and_errors() {
        let e = drive(&["a"], &[1]).unwrap_err();
        assert_eq!(e.message, "stream ended before completion");
        let e = drive(&["a", "bad"], &[2]).unwrap_err();
        assert_eq!(e.message, "bad");
        let e = parse_stream::<Counting>(b"garbage", &[]).unwrap_err();
        assert!(
            e.message.starts_with("corrupt stream state"),
            "{}",
            e.message
        );
    }
}
