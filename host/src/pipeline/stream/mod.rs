//! A committed stream: read until the first chunk with content (failover is
//! still possible until then), then a task pumps the rest to the client
//! (resuming it elsewhere if it fails: `resume.rs`), ends it with `[DONE]`
//! or an error event, and evaluates the transcript (`transcript.rs`).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tracing::Instrument;

mod pump;

pub(super) use pump::StreamPump;

use super::attempt::plugin_failed;
use super::outcome::{AttemptRecord, End, Recorder, content_chars, estimate_tokens};
use super::resume::{Continuation, Resumable, Resumed, SentLog, Splice};
use super::transcript::{StreamEvaluation, Transcript, carries_answer};
use super::{Answer, Deployment, Mode, Served};
use crate::domain::{StreamBatch, UpstreamError, Usage};
use crate::failover::{Attempt, FailureClass};
use crate::health::{DeploymentHealth, InFlight};
use crate::plugins::{PluginError, StreamSession};
use crate::upstream::{Reply, ReplyBody};

/// Reads the stream until its first parsed chunk (failing over is still
/// possible until then), then commits: a new stream's pump is returned for
/// `chat` to start (it takes the request's record over: `rec` is left
/// empty); a resumed stream's next leg goes back to the pump that asked.
#[allow(clippy::too_many_arguments)]
pub(super) async fn start_stream(
    d: &Deployment,
    mut session: StreamSession,
    response: Reply,
    started: Instant,
    record: &mut AttemptRecord,
    rec: &mut Recorder,
    request: Arc<str>,
    in_flight: InFlight,
    mode: Mode<'_>,
    evaluation: Option<StreamEvaluation>,
    log: StreamLog,
) -> Result<Served, Attempt> {
    let (first, body) = first_content(d, &mut session, response.body, started).await?;
    record.malformed = first.malformed;
    rec.commit_stream(&d.health, record.clone());
    // The stream's whole life: its deployment's total_ms from the request
    // sent, within the request's own deadline.
    let total = started + std::time::Duration::from_millis(d.timeouts.total_ms);
    let resumable = match mode {
        Mode::Resume { prefill, .. } => {
            return Ok(Served::Resumed(Box::new(Continuation {
                deployment: d.name.clone(),
                health: d.health.clone(),
                session,
                body,
                first,
                in_flight,
                idle: d.timeouts.idle(),
                total,
                prefilled: prefill,
            })));
        }
        Mode::Stream(resumable) => resumable.cloned().map(Box::new),
        Mode::Complete(_) => None,
    };
    let request_deadline = rec.record().and_then(|r| r.deadline);
    // A miss of the response cache: the answer is gathered to be stored
    // (with an evaluator, its transcript serves both).
    let for_cache = (evaluation.is_none() && rec.record().is_some_and(|r| r.cache_put.is_some()))
        .then(Transcript::default);
    let (tx, rx) = mpsc::channel(32);
    let mut pump = StreamPump {
        request_id: log.request_id,
        model: log.model,
        deployment: d.name.clone(),
        idle: d.timeouts.idle(),
        deadline: total,
        request_deadline,
        callers_deadline: false,
        tx,
        health: d.health.clone(),
        in_flight: Some(in_flight),
        evaluation,
        rec: rec.hand_over(),
        request,
        completion_chars: 0,
        prompt_extra_chars: 0,
        sent: SentLog::default(),
        splice: None,
        resumable,
        carried: Usage::default(),
        failed: Vec::new(),
        malformed_run: 0,
        for_cache,
    };
    pump.set_deadline(total);
    let mut first = first;
    if !first.done {
        // Queued before the response is returned (it cannot wait: the
        // channel is new), so the headers and the first chunk leave in one
        // write, not two.
        let _ = pump.forward(std::mem::take(&mut first.chunks), false).await;
    }
    Ok(Served::Answer(
        Answer::Stream {
            deployment: d.name.clone(),
            events: rx,
            attempts: 0,
        },
        Some(Pending(Box::new((pump, first, body, session, log.span)))),
    ))
}

/// Reads a stream until a chunk carries part of the answer: a role-only
/// opening chunk waits for what follows, and a stream that ends with
/// nothing (only `[DONE]`) is a failed attempt another deployment may mend.
/// One budget (`first_byte_ms`) from sending the request.
async fn first_content(
    d: &Deployment,
    session: &mut StreamSession,
    mut body: ReplyBody,
    started: Instant,
) -> Result<(StreamBatch, ReplyBody), Attempt> {
    let fail = |class, message: String| Attempt::new(&d.name, class, message);
    let deadline = started + d.timeouts.first_byte();
    // Chunks read before the commit (e.g. the role-only opening one).
    let mut held = Vec::new();
    let mut malformed = 0;
    loop {
        let wait = deadline.saturating_duration_since(Instant::now());
        let (batch, eof) = match tokio::time::timeout(wait, body.next()).await {
            Err(_) => {
                return Err(fail(
                    FailureClass::Timeout,
                    format!(
                        "no stream chunk within {} ms (first_byte_ms)",
                        d.timeouts.first_byte_ms
                    ),
                ));
            }
            Ok(Some(Err(e))) => {
                return Err(fail(
                    FailureClass::Transport,
                    format!("stream broke before the first chunk: {e}"),
                ));
            }
            // Not gathered (see `ReplyBody::gather`): the first event goes
            // to the client as soon as it is parsed. (Gathering it saved
            // ~3 us of CPU per stream and added ~150 us to the first byte.)
            Ok(Some(Ok(bytes))) => (session.feed(&bytes).await, false),
            Ok(None) => (session.finish().await, true),
        };
        let batch = batch
            .map_err(|e| plugin_failed(&d.name, e))?
            .map_err(|e| Attempt::upstream(&d.name, None, e))?;
        let carries = batch.chunks.iter().any(|c| carries_answer(c));
        held.extend(batch.chunks);
        malformed += batch.malformed;
        if malformed >= MALFORMED_IN_A_ROW && !carries {
            return Err(fail(
                FailureClass::Overloaded,
                format!("{malformed} malformed stream events before any content"),
            ));
        }
        if carries {
            return Ok((
                StreamBatch {
                    chunks: held,
                    usage: batch.usage,
                    done: batch.done,
                    malformed,
                },
                body,
            ));
        }
        if batch.done || eof {
            return Err(fail(
                FailureClass::Overloaded,
                if held.is_empty() {
                    "upstream ended the stream before any chunk".into()
                } else {
                    "upstream ended the stream without any content".into()
                },
            ));
        }
    }
}

/// Malformed stream events (skipped by the adapter) that fail a stream:
/// this many with no chunk between them (a burst)...
const MALFORMED_IN_A_ROW: u32 = 5;
/// ...or this many in one attempt.
const MALFORMED_IN_ALL: u32 = 20;

/// Who a new stream's lines name: its pump's `debug` span, and the request
/// and route that its lines at `info` and above carry themselves.
pub(in crate::pipeline) struct StreamLog {
    pub(in crate::pipeline) span: tracing::Span,
    pub(in crate::pipeline) request_id: Arc<str>,
    pub(in crate::pipeline) model: Arc<str>,
}

/// A committed stream's pump, not started yet: `chat` spawns it. (Not the
/// pipeline: a pump may run the pipeline again to resume its stream.)
pub struct Pending(
    Box<(
        StreamPump,
        StreamBatch,
        ReplyBody,
        StreamSession,
        tracing::Span,
    )>,
);

impl Pending {
    pub(super) fn spawn(self) {
        let (mut pump, first, body, session, log) = *self.0;
        // Under its request's trace span too (a no-op unless traces are on):
        // the log's span is not exported, so the leg's plugin calls and
        // resumed attempts would otherwise start traces of their own.
        let trace = pump
            .rec
            .record()
            .map_or_else(tracing::Span::none, |r| r.span.clone());
        tokio::spawn(
            pump.run(first, body, session)
                .instrument(log)
                .instrument(trace),
        );
    }
}
