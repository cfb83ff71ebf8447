//! One outcome per request, by construction.
//!
//! A request carries one [`Recorder`] from the moment its body is read. Each
//! attempt is added as it ends ([`Recorder::end_attempt`] feeds the
//! deployment's health at once, so concurrent requests see a failing
//! deployment without waiting for this one); the request is completed by
//! [`Recorder::finish`] on the paths that know how it ended, and by `Drop`
//! on every other (the client went away and the handler future was dropped,
//! the stream pump was cancelled, a panic unwound through it). The finished
//! record goes to the sinks: the store, and the limiter and metrics of later
//! issues. Nothing else in the gateway records outcomes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::budget::{Budgets, Subject};
use crate::domain::{Usage, Verdict};
use crate::failover::FailureClass;
use crate::health::DeploymentHealth;
use crate::monitor::{Monitor, Sample};
use crate::store::{EventRow, Row, Store};

mod record;
mod rows;

pub use record::{AttemptRecord, Record, content_chars, estimate_tokens, now_ms};
use rows::rows;

/// Where finished records go. Built once per process (not per config), so
/// a reload never loses a record in flight.
#[derive(Default)]
pub struct Sinks {
    pub store: Option<Store>,
    pub monitor: Monitor,
    pub budgets: Budgets,
    pub metrics: crate::metrics::Metrics,
    /// The response cache (none in tests and benchmarks that leave it out).
    pub cache: Option<Arc<crate::cache::Cache>>,
}

impl Sinks {
    /// An event: logged, and stored.
    pub fn event(&self, kind: &str, subject: &str, detail: serde_json::Value) {
        self.metrics.event(kind);
        if kind.ends_with("_alert") || kind.starts_with("rate_limit") {
            tracing::warn!(kind, subject, %detail, "alert");
        } else {
            tracing::debug!(kind, subject, %detail, "event");
        }
        if let Some(store) = &self.store {
            store.record(Row::Event(EventRow {
                ts_ms: now_ms(),
                kind: kind.to_string(),
                subject: subject.to_string(),
                detail: detail.to_string(),
            }));
        }
    }
}

/// A deployment's prices, in US dollars per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Prices {
    pub input: f64,
    pub output: f64,
    /// Prompt tokens the provider served from its cache.
    pub cached_input: f64,
    /// Prompt tokens the provider wrote to its cache.
    pub cache_write: f64,
}

impl Prices {
    /// What `u` cost: each kind of prompt token at its own price
    /// ([`Usage::prompt_split`]).
    pub fn cost(&self, u: &Usage) -> f64 {
        let (plain, cached, written) = u.prompt_split();
        (f64::from(plain) * self.input
            + f64::from(cached) * self.cached_input
            + f64::from(written) * self.cache_write
            + f64::from(u.completion_tokens) * self.output)
            / 1_000_000.0
    }

    pub fn is_free(&self) -> bool {
        *self == Prices::default()
    }
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq)]
pub enum End {
    /// An answer (complete, or a stream that ended cleanly).
    Answered,
    /// An error answer to the caller (its HTTP status).
    Failed { status: u16 },
    /// A committed stream that failed after its first chunk.
    StreamFailed,
    /// The client left before the end.
    ClientGone,
    /// A panic unwound through the request.
    Panicked,
}

impl End {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            End::Answered => "success",
            End::Failed { .. } => "failed",
            End::StreamFailed => "stream_failed",
            End::ClientGone => "client_gone",
            End::Panicked => "panic",
        }
    }

    /// The status the record keeps: what the client was (or would have
    /// been) sent. 499 is the customary "client closed request".
    pub(crate) fn status(&self) -> u16 {
        match self {
            End::Answered | End::StreamFailed => 200,
            End::Failed { status } => *status,
            End::ClientGone => 499,
            End::Panicked => 500,
        }
    }
}

/// Completes its record exactly once: by [`Recorder::finish`], or when
/// dropped.
pub struct Recorder {
    record: Option<Box<Record>>,
    sinks: Arc<Sinks>,
}

impl Recorder {
    pub fn new(sinks: Arc<Sinks>, request_id: Arc<str>, tags: Vec<String>) -> Self {
        Self {
            record: Some(Box::new(Record {
                request_id,
                ts_ms: now_ms(),
                begun: Instant::now(),
                route: String::new(),
                route_found: false,
                caller: None,
                tags,
                stream: false,
                attempts: Vec::new(),
                ttft: None,
                reservation: None,
                caller_limit: None,
                caller_due: None,
                deadline: None,
                slots: Vec::new(),
                span: tracing::Span::none(),
                queue_wait: Duration::ZERO,
                cache: None,
                cached: None,
                cache_put: None,
                open: None,
                shadow: None,
            })),
            sinks,
        }
    }

    /// The record, while it is open. (Never `None` where the pipeline uses
    /// it: it is only taken by `finish`, `drop` and `hand_over`.)
    pub fn record(&mut self) -> Option<&mut Record> {
        self.record.as_deref_mut()
    }

    /// Where the record goes (budgets are admitted through it).
    pub fn sinks(&self) -> &Arc<Sinks> {
        &self.sinks
    }

    /// Moves the open record into a new recorder (a committed stream's pump
    /// takes it; this one is then empty and finishing it does nothing).
    pub fn hand_over(&mut self) -> Recorder {
        Recorder {
            record: self.record.take(),
            sinks: self.sinks.clone(),
        }
    }

    /// An attempt is being sent: kept open until it ends, so that a request
    /// dropped meanwhile still records it.
    pub fn open_attempt(&mut self, attempt: &AttemptRecord) {
        if let Some(r) = self.record() {
            r.open = Some(attempt.clone());
        }
    }

    /// The open attempt learnt its status or its usage (estimated until
    /// the answer is read): a request dropped before the attempt ends (the
    /// client left, its deadline; the answer may still be judged by the
    /// evaluator) still records the status and what the provider billed.
    pub fn update_open_attempt(&mut self, attempt: &AttemptRecord) {
        if let Some(open) = self.record().and_then(|r| r.open.as_mut()) {
            open.status = attempt.status;
            open.usage = attempt.usage;
            open.estimated = attempt.estimated;
            open.cost = attempt.cost;
            open.billed = attempt.billed;
        }
    }

    /// An attempt ended: the deployment's health learns it now, the record
    /// keeps it.
    /// `cool`: for a rate-limited attempt, how long its deployment cools
    /// down (`Some(None)`: the default); `None` when only its key does.
    pub fn end_attempt(
        &mut self,
        health: &DeploymentHealth,
        mut attempt: AttemptRecord,
        cool: Option<Option<Duration>>,
    ) {
        attempt.latency = attempt.started.elapsed();
        attempt.slot = None;
        if let Some(r) = self.record() {
            r.open = None;
        }
        let was = (health.is_cooling_down(), health.is_tripped());
        match (attempt.class, cool) {
            (None, _) => health.record_success(attempt.latency, attempt.started),
            (Some(class), Some(retry_after)) => health.record_failure(class, retry_after),
            (Some(_), None) => {}
        }
        // The outcome is in: the circuit's probe (if this was it) is free.
        attempt.probe = None;
        crate::telemetry::end_attempt(&mut attempt);
        self.transition(health, was, &attempt.deployment, attempt.class);
        if let Some(r) = self.record() {
            r.attempts.push(attempt);
        }
    }

    /// A deployment's circuit opened (it cools down) or closed (its
    /// cool-down ended, or the half-open circuit's probe succeeded): an
    /// event. `was`: whether it cooled down and had tripped before.
    fn transition(
        &self,
        health: &DeploymentHealth,
        was: (bool, bool),
        deployment: &str,
        class: Option<FailureClass>,
    ) {
        let now = health.is_cooling_down();
        let probe_closed = !was.0 && !now && was.1 && !health.is_tripped();
        if was.0 != now || probe_closed {
            let request_id = self.record.as_ref().map(|r| r.request_id.to_string());
            self.sinks.event(
                if now {
                    "circuit_open"
                } else {
                    "circuit_closed"
                },
                deployment,
                serde_json::json!({"class": class.map(|c| c.name()), "request_id": request_id}),
            );
        }
    }

    /// A stream committed: its first chunk came after `ttft`. Whether the
    /// attempt succeeds is known when the stream ends
    /// ([`Recorder::end_stream`]); until then it is the record's last attempt.
    pub fn commit_stream(&mut self, health: &DeploymentHealth, mut attempt: AttemptRecord) {
        let ttft = attempt.started.elapsed();
        health.record_latency(ttft);
        // A probe that streams content has shown the deployment serves: the
        // circuit closes now, not minutes later at the stream's end.
        if attempt.probe.take().is_some() {
            health.record_served(attempt.started);
        }
        attempt.ttft = Some(ttft);
        if let Some(r) = self.record() {
            r.open = None;
            // A resumed stream's later legs do not move the request's own.
            r.ttft.get_or_insert_with(|| r.begun.elapsed());
            r.attempts.push(attempt);
        }
    }

    /// The committed stream ended (`class` `None`: cleanly), with the usage
    /// the upstream reported or, failing that, an estimate (`true`). The
    /// deployment's health is judged unless `health` is `None` (the client
    /// left: not the upstream's doing).
    pub fn end_stream(
        &mut self,
        health: Option<&DeploymentHealth>,
        class: Option<FailureClass>,
        usage: Option<(Usage, bool)>,
    ) {
        if let Some(h) = health {
            let was = (h.is_cooling_down(), h.is_tripped());
            let started = self
                .record
                .as_ref()
                .and_then(|r| r.attempts.last())
                .map_or_else(Instant::now, |a| a.started);
            match class {
                None => h.record_served(started),
                Some(class) => h.record_failure(class, None),
            }
            let deployment = self
                .record
                .as_ref()
                .and_then(|r| r.attempts.last())
                .map(|a| a.deployment.clone())
                .unwrap_or_default();
            self.transition(h, was, &deployment, class);
        }
        if let Some(a) = self.record().and_then(|r| r.attempts.last_mut()) {
            a.slot = None;
            a.probe = None;
            a.latency = a.started.elapsed();
            a.upstream = a.latency;
            a.class = class;
            if let Some((usage, estimated)) = usage {
                a.set_usage(usage, estimated);
            }
            crate::telemetry::end_attempt(a);
        }
    }

    /// The evaluator's verdict on a committed stream's answer (its attempt
    /// is the last).
    pub fn verdict(&mut self, health: &DeploymentHealth, evaluator: &str, v: &Verdict) {
        match self.record().and_then(|r| r.attempts.last_mut()) {
            Some(attempt) => verdict(attempt, health, evaluator, v),
            // No record left to say which deployment it was (the request
            // ended first): the score counts, but a demotion it starts has
            // no event (the health does not know its deployment's name).
            None => {
                health.record_quality(v.score);
            }
        }
    }

    /// Completes the record and hands it to the sinks.
    pub fn finish(mut self, end: End) {
        self.complete(end);
    }

    fn complete(&mut self, end: End) {
        crate::busy_poll::activity();
        let Some(mut record) = self.record.take() else {
            return;
        };
        // Dropped mid-attempt (the client left, a panic, or the request's
        // deadline): the attempt counts, unfinished. Cut by the deadline (the
        // only way an attempt is still open when the client is sent an
        // error), it is `deadline`, never a success; either way nothing is
        // said of the deployment's health or figures: the deadline may be the
        // caller's, or spent by the attempts before it.
        if let Some(mut a) = record.open.take() {
            a.latency = a.started.elapsed();
            a.upstream = a.latency;
            a.slot = None;
            a.probe = None;
            if matches!(end, End::Failed { .. }) && a.class.is_none() {
                a.class = Some(FailureClass::Deadline);
            }
            record.attempts.push(a);
        }
        // The limiter: each attempt's token reservation becomes its usage
        // (a failure the provider did not bill gives it all back).
        for a in &mut record.attempts {
            let used = a.usage.map_or(0, |u| {
                u64::from(u.prompt_tokens) + u64::from(u.completion_tokens)
            });
            for hold in a.limits.iter_mut().filter_map(Option::take) {
                hold.reconcile(used);
            }
        }
        // The caller's key: every billed token of the request counts.
        if let Some(hold) = record.caller_limit.take() {
            let used: u64 = record
                .attempts
                .iter()
                .filter_map(|a| a.usage)
                .map(|u| u64::from(u.prompt_tokens) + u64::from(u.completion_tokens))
                .sum();
            hold.reconcile(used);
        }
        let sinks = &self.sinks;
        let last = record.attempts.len().saturating_sub(1);
        for (i, a) in record.attempts.iter().enumerate() {
            // It failed for a reason that blames the deployment, and the
            // request went on to another one.
            let failed_over = a
                .class
                .is_some_and(|c| c.is_deployment_fault() || c == FailureClass::RateLimited)
                && i < last;
            // The same deployment again is a retry, not a failover.
            let retried =
                failed_over && !a.cut && record.attempts[i + 1].deployment == a.deployment;
            let failed_over = failed_over && !retried;
            if failed_over || retried || (a.cut && i < last) {
                let kind = if a.cut {
                    "resume"
                } else if retried {
                    "retry"
                } else {
                    "failover"
                };
                let class = a.class.map_or("none", |c| c.name());
                tracing::info!(request_id = %record.request_id, model = %record.route,
                    from = %a.deployment, to = %record.attempts[i + 1].deployment, class,
                    status = a.status, "{kind}");
                sinks.event(
                    kind,
                    &a.deployment,
                    serde_json::json!({
                        "request_id": &*record.request_id, "route": record.route,
                        "class": a.class.map(|c| c.name()), "status": a.status,
                        "to": record.attempts[i + 1].deployment,
                    }),
                );
            }
            if a.demoted {
                demoted(sinks, &a.deployment, &record.route, "evaluator");
            }
            // A client that left (or a panic) says nothing about the
            // deployment; nor does a failure that is not its fault (an
            // attempt the request's deadline abandoned is `deadline`, one).
            // (Nor does an attempt a resumed stream's deadline abandoned.)
            if matches!(end, End::ClientGone | End::Panicked | End::StreamFailed)
                && i == last
                && a.class.is_none()
            {
                continue;
            }
            if a.class
                .is_some_and(|c| !c.is_deployment_fault() && c != FailureClass::RateLimited)
            {
                continue;
            }
            let alerts = sinks.monitor.record(&Sample {
                class: a.class,
                failed_over,
                latency: a.latency,
                ttft: a.ttft,
                output_tokens: a
                    .usage
                    .filter(|_| !a.estimated)
                    .map(|u| u.completion_tokens),
                deployment: &a.deployment,
            });
            for alert in alerts {
                sinks.event(alert.kind, &alert.deployment, alert.detail);
            }
        }
        if let Some(reservation) = &record.reservation {
            let costs: Vec<(&str, f64)> = record
                .attempts
                .iter()
                .filter_map(|a| Some((a.deployment.as_str(), a.cost?)))
                .collect();
            let subject = Subject {
                route: &record.route,
                caller: record.caller.as_deref(),
                tags: &record.tags,
            };
            for alert in sinks
                .budgets
                .settle(reservation, &subject, &costs, now_ms())
            {
                sinks.event("budget_alert", &alert.budget, alert.detail);
            }
        }
        sinks.metrics.request(&record, &end, record.begun.elapsed());
        crate::telemetry::end_request(&mut record, &end);
        if let Some(pending) = record.shadow.take() {
            let served = record
                .attempts
                .last()
                .filter(|a| matches!(end, End::Answered) && a.class.is_none());
            let usage = served.and_then(|a| a.usage);
            crate::shadow::spawn(
                pending,
                crate::shadow::Served {
                    request_id: record.request_id.clone(),
                    ts_ms: record.ts_ms,
                    deployment: served.map(|a| a.deployment.clone()),
                    prompt_tokens: usage.map(|u| u.prompt_tokens),
                    completion_tokens: usage.map(|u| u.completion_tokens),
                    cost: served.and_then(|a| a.cost),
                },
                sinks.store.clone(),
            );
        }
        if let Some(store) = &sinks.store {
            let (request, attempts) = rows(&mut record, &end);
            store.record(Row::Request(request, attempts));
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if self.record.is_some() {
            let end = if std::thread::panicking() {
                End::Panicked
            } else {
                End::ClientGone
            };
            if let Some(r) = &self.record {
                tracing::debug!(request_id = %r.request_id, outcome = end.name(), "request ended early");
            }
            self.complete(end);
        }
    }
}

/// A deployment's low scores in a row demoted it: logged and stored.
pub fn demoted(sinks: &Sinks, deployment: &str, route: &str, by: &str) {
    tracing::warn!(
        deployment,
        route,
        by,
        "deployment demoted after low quality scores in a row"
    );
    sinks.event(
        "quality_demoted",
        deployment,
        serde_json::json!({"route": route, "by": by}),
    );
}

/// The evaluator's verdict on `attempt`'s answer: the deployment's quality,
/// and a quality score in the attempt's record.
pub fn verdict(
    attempt: &mut AttemptRecord,
    health: &DeploymentHealth,
    evaluator: &str,
    v: &Verdict,
) {
    attempt.demoted = health.record_quality(v.score);
    attempt.verdict = Some((Arc::from(evaluator), v.clone()));
}

#[cfg(test)]
mod tests;
