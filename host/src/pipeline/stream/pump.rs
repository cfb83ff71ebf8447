//! The pump of a committed stream: upstream chunks through the adapter to
//! the client, until `[DONE]`, a failure (resumed elsewhere when it can be)
//! or the client's leaving; then the stream's record and its evaluation.

use super::*;

/// A line of the pump at `$level`, naming its request, route and
/// deployment (its span is at `debug`: see `StreamLog`).
macro_rules! pump_line {
    ($level:ident, $pump:expr, $($rest:tt)+) => {
        tracing::$level!(request_id = %$pump.request_id, model = %$pump.model,
            deployment = %$pump.deployment, $($rest)+)
    };
}

/// Why forwarding stopped.
pub(super) enum Stop {
    ClientGone,
    /// A resumed leg cannot be spliced on what the client has.
    Diverged(String),
}

/// Moves a committed stream from the upstream to the client.
pub(in crate::pipeline) struct StreamPump {
    /// Named by the pump's lines (see [`StreamLog`]).
    pub(in crate::pipeline) request_id: Arc<str>,
    /// The route.
    pub(in crate::pipeline) model: Arc<str>,
    pub(in crate::pipeline) deployment: String,
    pub(super) idle: std::time::Duration,
    /// The current leg ends with an error past this.
    pub(in crate::pipeline) deadline: Instant,
    /// The request's own deadline.
    pub(in crate::pipeline) request_deadline: Option<Instant>,
    /// `deadline` is the request's (not the deployment's `total_ms`).
    pub(super) callers_deadline: bool,
    pub(in crate::pipeline) tx: mpsc::Sender<Bytes>,
    /// The current leg's deployment.
    pub(in crate::pipeline) health: Arc<DeploymentHealth>,
    /// Keeps it counted in flight until the leg ends.
    pub(in crate::pipeline) in_flight: Option<InFlight>,
    pub(super) evaluation: Option<StreamEvaluation>,
    /// The request's record, finished when the pump ends (or is dropped).
    pub(in crate::pipeline) rec: Recorder,
    /// For a usage estimate, should the upstream report none: the request
    /// (scanned only then) and the streamed text's length.
    pub(super) request: Arc<str>,
    pub(in crate::pipeline) completion_chars: usize,
    /// The current leg's prompt beyond the request: its prefill.
    pub(in crate::pipeline) prompt_extra_chars: usize,
    /// What the client was sent, kept while the stream may be resumed.
    pub(in crate::pipeline) sent: SentLog,
    /// After a resume: how the current leg's chunks follow on.
    pub(in crate::pipeline) splice: Option<Splice>,
    pub(in crate::pipeline) resumable: Option<Box<Resumable>>,
    /// Usage of the legs before the current one.
    pub(in crate::pipeline) carried: Usage,
    /// Deployments whose legs failed.
    pub(in crate::pipeline) failed: Vec<String>,
    /// Malformed events of the current leg since its last good chunk.
    pub(super) malformed_run: u32,
    /// The answer gathered for the response cache (no evaluator's
    /// transcript to read it from).
    pub(super) for_cache: Option<Transcript>,
}

impl StreamPump {
    /// The current leg ends at `total` (its deployment's), or at the
    /// request's deadline if that comes first.
    pub(super) fn set_deadline(&mut self, total: Instant) {
        self.deadline = self.request_deadline.map_or(total, |r| r.min(total));
        // Cut by the caller's own deadline: nothing said of the deployment.
        self.callers_deadline = self.request_deadline.is_some_and(|r| r < total);
    }

    /// When the current leg times out if nothing comes after `heard`: at
    /// its idle limit, or its deadline if that comes first.
    fn alarm(&self, heard: Instant) -> Instant {
        (heard + self.idle).min(self.deadline)
    }

    /// Goes on with a resumed leg.
    fn take_leg(&mut self, next: Continuation) -> (StreamBatch, ReplyBody, StreamSession) {
        self.deployment = next.deployment;
        self.health = next.health;
        self.in_flight = Some(next.in_flight);
        self.idle = next.idle;
        self.malformed_run = 0;
        self.set_deadline(next.total);
        (next.first, next.body, next.session)
    }

    pub(super) async fn run(
        mut self,
        first: StreamBatch,
        mut body: ReplyBody,
        mut session: StreamSession,
    ) {
        // The first chunks were forwarded by `start_stream` unless `done`.
        let mut usage = first.usage;
        let mut done = first.done;
        let mut last = done.then_some(first.chunks);
        let mut failure = None;
        // Armed once, not per event: the client's leaving (a waiter on the
        // channel) and one alarm at the idle limit or the deadline,
        // whichever comes first. An event only notes the time; the alarm,
        // when it goes off early (events came meanwhile), is set again.
        let watch = self.tx.clone();
        let gone = watch.closed();
        tokio::pin!(gone);
        let mut heard = Instant::now();
        let alarm = tokio::time::sleep_until(self.alarm(heard).into());
        tokio::pin!(alarm);
        // The alarm went off early: the wait goes on from the same `heard`.
        let mut early = false;
        while !done {
            // Idle counts from the end of the last batch's work (its write
            // to a slow client included), as a fresh wait would.
            if !std::mem::take(&mut early) {
                heard = Instant::now();
            }
            let next = tokio::select! {
                biased;
                // Nothing to send for a while (e.g. keep-alive comments)
                // must not hide that the client left.
                () = &mut gone => {
                    pump_line!(info, self, "client went away mid-stream");
                    self.client_gone(usage);
                    return;
                }
                next = body.next() => Some(next),
                () = &mut alarm => None,
            };
            let (batch, eof) = match next {
                None if Instant::now() >= self.deadline => (
                    Err((
                        FailureClass::Timeout,
                        "the stream reached its deadline (total_ms, or the request's timeouts.request_ms)".to_string(),
                    )),
                    false,
                ),
                None if heard.elapsed() >= self.idle => (
                    Err((
                        FailureClass::Timeout,
                        format!(
                            "upstream stream stalled for {} ms (idle_ms)",
                            self.idle.as_millis()
                        ),
                    )),
                    false,
                ),
                // Events came since the alarm was set.
                None => {
                    alarm.as_mut().reset(self.alarm(heard).into());
                    early = true;
                    continue;
                }
                Some(Some(Err(e))) => (
                    Err((
                        FailureClass::Transport,
                        format!("upstream stream broke: {e}"),
                    )),
                    false,
                ),
                Some(Some(Ok(bytes))) => {
                    // With whatever arrived with it: one adapter call and one
                    // write to the client per burst, not per event.
                    let bytes = body.gather(bytes).await;
                    let fed = session.feed(&bytes).await;
                    (self.flatten(fed), false)
                }
                // The adapter's `finish` refuses an end it considers truncated.
                Some(None) => {
                    let finished = session.finish().await;
                    (self.flatten(finished), true)
                }
            };
            let batch = batch.and_then(|b| self.count_malformed(b));
            match batch {
                Err((class, message)) => {
                    // The failed leg's connection and parser go now, not
                    // after the next leg is found.
                    body = ReplyBody::ended();
                    drop(session);
                    // Boxed: the rare path is ~6 KB, which the pump (moved
                    // whole into its task) would carry otherwise.
                    match Box::pin(self.resume(class, &message, usage)).await {
                        Resumed::Leg(next) => {
                            let (first, next_body, next_session) = self.take_leg(*next);
                            body = next_body;
                            session = next_session;
                            // The next wait counts from now (the loop's top).
                            alarm.as_mut().reset(self.alarm(Instant::now()).into());
                            usage = first.usage;
                            done = first.done;
                            if done {
                                last = Some(first.chunks);
                            } else {
                                match self.forward(first.chunks, false).await {
                                    Ok(()) => {}
                                    Err(Stop::ClientGone) => return self.client_gone(usage),
                                    Err(Stop::Diverged(m)) => {
                                        failure = Some((FailureClass::Diverged, m));
                                        break;
                                    }
                                }
                            }
                        }
                        Resumed::Complete => {
                            last = Some(Vec::new());
                            break;
                        }
                        Resumed::No => {
                            failure = Some((class, message));
                            break;
                        }
                        Resumed::Failed(why) => {
                            let message = format!("{message}; not resumed: {why}");
                            return self.fail_stream(class, &message).await;
                        }
                        Resumed::ClientGone => {
                            pump_line!(info, self, "client went away while the stream was resumed");
                            return self.rec.hand_over().finish(End::ClientGone);
                        }
                    }
                }
                Ok(batch) => {
                    usage = batch.usage.or(usage);
                    done = batch.done || eof;
                    if done {
                        // Sent with `[DONE]`, in one write.
                        last = Some(batch.chunks);
                    } else {
                        match self.forward(batch.chunks, false).await {
                            Ok(()) => {}
                            Err(Stop::ClientGone) => return self.client_gone(usage),
                            Err(Stop::Diverged(m)) => {
                                failure = Some((FailureClass::Diverged, m));
                                break;
                            }
                        }
                    }
                }
            }
        }
        if done {
            // Its connection goes back to its pool once the body's framing
            // is read (usually it was, with the last events).
            body.finish_in_background();
        }
        if failure.is_none() {
            match self.forward(last.unwrap_or_default(), true).await {
                Ok(()) => {}
                Err(Stop::ClientGone) => return self.client_gone(usage),
                Err(Stop::Diverged(m)) => failure = Some((FailureClass::Diverged, m)),
            }
        }
        let usage = self.usage(usage);
        match failure {
            None => {
                let (u, estimated) = usage;
                pump_line!(
                    info,
                    self,
                    prompt_tokens = u.prompt_tokens,
                    completion_tokens = u.completion_tokens,
                    estimated,
                    "stream complete"
                );
                self.rec.end_stream(Some(&self.health), None, Some(usage));
                if let Some(evaluation) = &self.evaluation {
                    match evaluation
                        .run(&self.request_id, &self.model, &self.deployment)
                        .await
                    {
                        Ok(verdict) => {
                            self.rec
                                .verdict(&self.health, &evaluation.evaluator, &verdict);
                        }
                        // Not judged: not reused either, and the attempt
                        // says so (as a whole answer's does).
                        Err(why) => {
                            if let Some(r) = self.rec.record() {
                                r.cache_put = None;
                                if let Some(a) = r.attempts.last_mut() {
                                    a.evaluator_failed =
                                        Some((Arc::from(evaluation.evaluator.as_str()), why));
                                }
                            }
                        }
                    }
                }
                self.store_in_cache(u);
                self.rec.hand_over().finish(End::Answered);
            }
            Some((class, message)) => {
                pump_line!(warn, self, ?class, "stream failed after commit: {message}");
                // Cut by the caller's deadline, or a leg that could not be
                // spliced on: nothing said of the deployment.
                let blame = !(self.callers_deadline && Instant::now() >= self.deadline)
                    && class.is_deployment_fault();
                self.rec
                    .end_stream(blame.then(|| &*self.health), Some(class), Some(usage));
                self.fail_stream(class, &message).await;
            }
        }
    }

    /// Counts the events the adapter skipped as malformed (in the attempt's
    /// record, and logged); a burst of them fails the leg.
    fn count_malformed(
        &mut self,
        batch: StreamBatch,
    ) -> Result<StreamBatch, (FailureClass, String)> {
        if batch.malformed == 0 {
            if !batch.chunks.is_empty() {
                self.malformed_run = 0;
            }
            return Ok(batch);
        }
        self.malformed_run = if batch.chunks.is_empty() {
            self.malformed_run + batch.malformed
        } else {
            batch.malformed
        };
        let total = match self.rec.record().and_then(|r| r.attempts.last_mut()) {
            Some(a) => {
                a.malformed += batch.malformed;
                a.malformed
            }
            None => batch.malformed,
        };
        pump_line!(
            warn,
            self,
            skipped = batch.malformed,
            total,
            "the adapter skipped malformed stream events"
        );
        if self.malformed_run >= MALFORMED_IN_A_ROW || total >= MALFORMED_IN_ALL {
            return Err((
                FailureClass::Overloaded,
                format!(
                    "{total} malformed stream events ({} since the last good chunk)",
                    self.malformed_run
                ),
            ));
        }
        Ok(batch)
    }

    /// Ends the client's stream with an error event. Its `class` (the
    /// failure's, an extra member OpenAI clients ignore) lets `/v1/messages`
    /// name Anthropic's error type.
    async fn fail_stream(&mut self, class: FailureClass, message: &str) {
        let event = serde_json::json!({"error": {
            "message": format!("deployment {:?}: {message}", self.deployment),
            "type": "upstream_error",
            "code": "stream_interrupted",
            "class": class.name(),
        }});
        let _ = self
            .tx
            .send(Bytes::from(format!("data: {event}\n\n")))
            .await;
        self.rec.hand_over().finish(End::StreamFailed);
    }

    /// A cache miss's answer, once the stream ended cleanly on its first
    /// leg (a resumed answer is not stored), with one choice, no logprobs
    /// and no tool call (whose streamed pieces the transcript does not merge).
    fn store_in_cache(&mut self, usage: Usage) {
        let whole = self
            .rec
            .record()
            .and_then(|r| r.cache_put.as_ref())
            .is_some_and(|p| p.stream_whole);
        if self.splice.is_some() || !self.failed.is_empty() || !whole {
            return;
        }
        let transcript = match (&self.for_cache, &self.evaluation) {
            (Some(t), _) => t,
            (None, Some(e)) => &e.transcript,
            (None, None) => return,
        };
        if transcript.has_tool_calls() {
            return;
        }
        let mut answer = transcript.completion(&self.deployment);
        answer["usage"] = serde_json::json!({
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": u64::from(usage.prompt_tokens) + u64::from(usage.completion_tokens),
        });
        // The upstream's own name and id, as a live stream showed them.
        if let Some(model) = transcript.model() {
            answer["model"] = serde_json::json!(model);
        }
        if let Some(id) = transcript.id() {
            answer["id"] = serde_json::json!(id);
        }
        crate::pipeline::cached::store_complete(
            &mut self.rec,
            &self.deployment,
            answer.to_string().as_bytes(),
        );
    }

    /// The usage the upstream reported, or one estimated from what was
    /// streamed (`true`: estimated).
    pub(in crate::pipeline) fn usage(&self, reported: Option<Usage>) -> (Usage, bool) {
        match reported {
            Some(u) => (u, false),
            None => (
                Usage {
                    prompt_tokens: estimate_tokens(
                        content_chars(&self.request) + self.prompt_extra_chars,
                    ),
                    completion_tokens: estimate_tokens(self.completion_chars),
                    ..Usage::default()
                },
                true,
            ),
        }
    }

    /// The client left: the upstream did nothing wrong (its health is not
    /// judged), but what it produced is billed.
    fn client_gone(&mut self, usage: Option<Usage>) {
        let usage = self.usage(usage);
        self.rec.end_stream(None, None, Some(usage));
        self.rec.hand_over().finish(End::ClientGone);
    }

    /// A parser result with its failure class, for the error event and health.
    fn flatten(
        &self,
        r: Result<Result<StreamBatch, UpstreamError>, PluginError>,
    ) -> Result<StreamBatch, (FailureClass, String)> {
        match r {
            Ok(Ok(batch)) => Ok(batch),
            Ok(Err(e)) => {
                let a = Attempt::upstream(&self.deployment, None, e);
                Err((a.class, a.message))
            }
            Err(e) => Err((FailureClass::Plugin, e.to_string())),
        }
    }

    /// Sends chunks to the client as SSE events (and to the transcript), all
    /// of one batch in one write (each write is a packet: `TCP_NODELAY`),
    /// with `data: [DONE]` after them when `end`. A resumed leg's chunks are
    /// spliced on first. A client that stops reading for `idle` is dropped,
    /// so it cannot hold the upstream connection and the adapter instance
    /// forever.
    pub(super) async fn forward(&mut self, mut chunks: Vec<String>, end: bool) -> Result<(), Stop> {
        if let Some(splice) = &mut self.splice {
            let mut kept = Vec::with_capacity(chunks.len());
            for chunk in chunks {
                // What the leg generated, replayed text included.
                self.completion_chars += content_chars(&chunk);
                if let Some(c) = splice.apply(chunk).map_err(Stop::Diverged)? {
                    kept.push(c);
                }
            }
            if end {
                splice.complete().map_err(Stop::Diverged)?;
            }
            chunks = kept;
        }
        if chunks.is_empty() && !end {
            return Ok(());
        }
        let size: usize = chunks.iter().map(|c| c.len() + 8).sum::<usize>() + 14;
        let mut events = Vec::with_capacity(size);
        let traced = crate::telemetry::enabled();
        for chunk in &chunks {
            if let Some(evaluation) = &mut self.evaluation {
                evaluation.transcript.add(chunk);
            }
            if let Some(t) = &mut self.for_cache {
                t.add(chunk);
            }
            if traced && let Some(a) = self.rec.record().and_then(|r| r.attempts.last_mut()) {
                crate::telemetry::finish_reasons(chunk, &mut a.finish_reasons);
            }
            if self.splice.is_none() {
                self.completion_chars += content_chars(chunk);
            }
            events.extend_from_slice(b"data: ");
            events.extend_from_slice(chunk.as_bytes());
            events.extend_from_slice(b"\n\n");
        }
        if end {
            events.extend_from_slice(b"data: [DONE]\n\n");
        }
        if self.resumable.is_some() {
            self.sent.push(chunks);
        }
        // Room in the channel (the usual case): no timer is set up.
        let sent = match self.tx.try_send(Bytes::from(events)) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(events)) => {
                self.tx.send_timeout(events, self.idle).await
            }
            Err(mpsc::error::TrySendError::Closed(events)) => {
                Err(mpsc::error::SendTimeoutError::Closed(events))
            }
        };
        match sent {
            Ok(()) => {}
            Err(mpsc::error::SendTimeoutError::Closed(_)) => {
                pump_line!(info, self, "client went away mid-stream");
                return Err(Stop::ClientGone);
            }
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                pump_line!(
                    warn,
                    self,
                    "client read nothing for {} ms; stream abandoned",
                    self.idle.as_millis()
                );
                return Err(Stop::ClientGone);
            }
        }
        Ok(())
    }
}
