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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::budget::{Budgets, Reservation, Subject};
use crate::domain::{Usage, Verdict};
use crate::failover::FailureClass;
use crate::health::DeploymentHealth;
use crate::monitor::{Monitor, Sample};
use crate::ratelimit::Hold;
use crate::store::{AttemptRow, EventRow, QualityRow, RequestRow, Row, Store};

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
}

impl Prices {
    pub fn cost(&self, u: &Usage) -> f64 {
        let cached = u.cached_prompt_tokens.min(u.prompt_tokens);
        (f64::from(u.prompt_tokens - cached) * self.input
            + f64::from(cached) * self.cached_input
            + f64::from(u.completion_tokens) * self.output)
            / 1_000_000.0
    }

    pub fn is_free(&self) -> bool {
        *self == Prices::default()
    }
}

/// One attempt on one deployment.
#[derive(Clone, Debug)]
pub struct AttemptRecord {
    pub deployment: String,
    pub adapter: String,
    pub ts_ms: i64,
    pub started: Instant,
    /// `None`: it succeeded.
    pub class: Option<FailureClass>,
    pub status: Option<u16>,
    pub latency: Duration,
    /// To the first streamed chunk (streams only).
    pub ttft: Option<Duration>,
    /// Time spent waiting on the upstream (sending, its answer, its stream).
    pub upstream: Duration,
    pub usage: Option<Usage>,
    /// The usage was estimated from text lengths: the upstream sent none.
    pub estimated: bool,
    pub cost: Option<f64>,
    /// The provider produced tokens it charges for (a success, an answer
    /// the evaluator rejected, a stream cut after tokens).
    pub billed: bool,
    pub prices: Prices,
    /// The evaluator (plugin id) and its verdict on this attempt's answer.
    pub verdict: Option<(Arc<str>, Verdict)>,
    /// The evaluator that failed (the answer was accepted) and why.
    pub evaluator_failed: Option<(Arc<str>, String)>,
    /// Its verdict completed a streak of low scores that demoted the
    /// deployment (an event when the record completes).
    pub demoted: bool,
    /// The tokens it holds of its deployment's and its key's limits,
    /// reconciled with its usage when the record completes.
    pub limits: [Option<Hold>; 2],
    /// Its place under its deployment's concurrency cap, given back when
    /// the attempt ends (a stream's at its end).
    pub slot: Option<Arc<crate::capacity::Slot>>,
    /// The half-open circuit's probe this attempt holds, until its outcome
    /// is recorded.
    pub probe: Option<Arc<crate::health::Probe>>,
    /// Its stream failed after it committed and the request went on to
    /// resume it elsewhere.
    pub cut: bool,
    /// Stream events its adapter skipped as malformed.
    pub malformed: u32,
    /// Why the answer ended (`stop`, `length`, …), when traces are on.
    pub finish_reasons: Vec<String>,
    /// Its trace span (a no-op unless traces are on), closed when the
    /// attempt ends.
    pub span: tracing::Span,
}

impl AttemptRecord {
    pub fn new(deployment: &str, adapter: &str, prices: Prices) -> Self {
        Self {
            deployment: deployment.to_string(),
            adapter: adapter.to_string(),
            ts_ms: now_ms(),
            started: Instant::now(),
            class: None,
            status: None,
            latency: Duration::ZERO,
            ttft: None,
            upstream: Duration::ZERO,
            usage: None,
            estimated: false,
            cost: None,
            billed: false,
            prices,
            verdict: None,
            evaluator_failed: None,
            demoted: false,
            limits: [None, None],
            slot: None,
            probe: None,
            cut: false,
            malformed: 0,
            finish_reasons: Vec::new(),
            span: tracing::Span::none(),
        }
    }

    /// Sets the usage (reported or estimated) and its cost.
    pub fn set_usage(&mut self, usage: Usage, estimated: bool) {
        self.usage = Some(usage);
        self.estimated = estimated;
        self.cost = Some(self.prices.cost(&usage));
        self.billed = usage.prompt_tokens > 0 || usage.completion_tokens > 0;
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

/// The record of one request.
#[derive(Debug)]
pub struct Record {
    pub request_id: Arc<str>,
    pub ts_ms: i64,
    begun: Instant,
    /// The route (the requested model until one is found).
    pub route: String,
    /// `route` names a configured route (not just what was asked for).
    pub route_found: bool,
    pub caller: Option<String>,
    pub tags: Vec<String>,
    pub stream: bool,
    pub attempts: Vec<AttemptRecord>,
    /// Time from the request's start to its first streamed chunk.
    pub ttft: Option<Duration>,
    /// What the request holds of its budgets until it is settled.
    pub reservation: Option<Reservation>,
    /// What it holds of its client key's limits until its usage is known.
    pub caller_limit: Option<Hold>,
    /// With Redis: the client key whose windows are still to be checked,
    /// with the request's estimated tokens (they ride on the request's
    /// first deployment check).
    pub caller_due: Option<(Arc<crate::auth::ClientKey>, u64)>,
    /// When the request's whole deadline passes (a stream's pump keeps it).
    pub deadline: Option<Instant>,
    /// Its places under the gateway's and its route's concurrency caps,
    /// given back when the record completes.
    pub slots: Vec<crate::capacity::Slot>,
    /// Its trace span (a no-op unless traces are on), closed with the record.
    pub span: tracing::Span,
    /// Time spent waiting in the queue for a place (a cap or a limit).
    pub queue_wait: Duration,
    /// What the response cache did (its route caches).
    pub cache: Option<crate::cache::Status>,
    /// Served from the cache: the deployment that first answered, and the
    /// cost the hit saved.
    pub cached: Option<(Arc<str>, f64)>,
    /// A miss whose answer is to be stored once known (a stream's pump
    /// stores it at its clean end).
    pub cache_put: Option<crate::cache::Pending>,
    /// The attempt under way (a copy), so a request dropped mid-attempt
    /// (the client left) still records it, and its reservations are
    /// reconciled.
    open: Option<AttemptRecord>,
    /// What the route's shadow strategies need, run once the request ends.
    pub shadow: Option<Box<crate::shadow::Pending>>,
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
        let Some(mut record) = self.record.take() else {
            return;
        };
        // Dropped mid-attempt (the client left, or a panic): the attempt
        // counts, unfinished (no class: nothing is said of the deployment).
        if let Some(mut a) = record.open.take() {
            a.latency = a.started.elapsed();
            a.upstream = a.latency;
            a.slot = None;
            a.probe = None;
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
            // deployment; nor does a failure that is not its fault.
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
            let (request, attempts) = rows(&record, &end);
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

/// The store's rows for a finished record.
fn rows(r: &Record, end: &End) -> (RequestRow, Vec<AttemptRow>) {
    let total = r.begun.elapsed();
    let upstream: Duration = r.attempts.iter().map(|a| a.upstream).sum();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // The caller's usage and cost: the attempt that answered. What failed
    // attempts were billed is in their own rows (and in the cost total).
    let answered = match end {
        End::Answered | End::StreamFailed | End::ClientGone => {
            r.attempts.last().filter(|a| a.class.is_none() || r.stream)
        }
        _ => None,
    };
    // A resumed stream's answer is every leg's: their usage adds up.
    let usage = answered.and_then(|a| a.usage).map(|last| {
        r.attempts
            .iter()
            .filter(|a| a.cut)
            .filter_map(|a| a.usage)
            .fold(last, |sum, u| Usage {
                prompt_tokens: sum.prompt_tokens + u.prompt_tokens,
                completion_tokens: sum.completion_tokens + u.completion_tokens,
                ..sum
            })
    });
    let cost: f64 = r.attempts.iter().filter_map(|a| a.cost).sum();
    let any_cost = r.attempts.iter().any(|a| a.cost.is_some());
    let request = RequestRow {
        id: r.request_id.to_string(),
        ts_ms: r.ts_ms,
        route: r.route.clone(),
        caller: r.caller.clone(),
        tags: (!r.tags.is_empty()).then(|| r.tags.join(",")),
        stream: r.stream,
        status: end.status(),
        outcome: end.name().to_string(),
        deployment: answered
            .map(|a| a.deployment.clone())
            .or_else(|| r.cached.as_ref().map(|(d, _)| d.to_string())),
        attempts: r.attempts.len() as u32,
        latency_ms: ms(total),
        overhead_ms: (!r.attempts.is_empty()).then(|| ms(total.saturating_sub(upstream))),
        ttft_ms: r.ttft.map(ms),
        prompt_tokens: usage.map(|u| u.prompt_tokens),
        completion_tokens: usage.map(|u| u.completion_tokens),
        cost: any_cost.then_some(cost),
        estimated: r.attempts.iter().any(|a| a.estimated),
        // The last attempt's: the answer's, or the last rejection.
        verdict: r
            .attempts
            .last()
            .and_then(|a| a.verdict.as_ref())
            .map(|(_, v)| verdict_json(v)),
        cache: r.cache.map(crate::cache::Status::name),
        saved_usd: r.cached.as_ref().map(|(_, c)| *c),
    };
    let attempts = r
        .attempts
        .iter()
        .enumerate()
        .map(|(n, a)| AttemptRow {
            request_id: request.id.clone(),
            n: n as u32 + 1,
            ts_ms: a.ts_ms,
            deployment: a.deployment.clone(),
            adapter: a.adapter.clone(),
            class: a.class.map(|c| c.name().to_string()),
            status: a.status,
            latency_ms: ms(a.latency),
            ttft_ms: a.ttft.map(ms),
            prompt_tokens: a.usage.map(|u| u.prompt_tokens),
            completion_tokens: a.usage.map(|u| u.completion_tokens),
            cost: a.cost,
            billed: a.billed,
            estimated: a.estimated,
            malformed: a.malformed,
            quality: match (&a.verdict, &a.evaluator_failed) {
                (Some((evaluator, v)), _) => Some(QualityRow {
                    evaluator: evaluator.to_string(),
                    score: Some(v.score),
                    pass: Some(v.pass),
                    reasons: (!v.reasons.is_empty())
                        .then(|| serde_json::to_string(&v.reasons).unwrap_or_default()),
                }),
                // No verdict: the evaluator named, no score, why it failed.
                (None, Some((evaluator, why))) => Some(QualityRow {
                    evaluator: evaluator.to_string(),
                    score: None,
                    pass: None,
                    reasons: Some(
                        serde_json::to_string(&[format!("evaluator failed: {why}")])
                            .unwrap_or_default(),
                    ),
                }),
                (None, None) => None,
            },
        })
        .collect();
    (request, attempts)
}

/// A verdict as the store keeps it: `{"pass":…,"reasons":[…],"score":…}`,
/// the text `json!` wrote, without building its tree of values first (a
/// tenth of what recording a request cost the request).
fn verdict_json(v: &Verdict) -> String {
    #[derive(serde::Serialize)]
    struct Stored<'a> {
        pass: bool,
        reasons: &'a [String],
        score: f64,
    }
    serde_json::to_string(&Stored {
        pass: v.pass,
        reasons: &v.reasons,
        score: f64::from(v.score),
    })
    .unwrap_or_default()
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Tokens estimated from text: ~4 characters a token, at least one for any
/// text. Used only when the upstream reports no usage (the record says so).
pub fn estimate_tokens(chars: usize) -> u32 {
    if chars == 0 {
        0
    } else {
        (chars.div_ceil(4)).min(u32::MAX as usize) as u32
    }
}

/// Characters of every `"content":"…"` string in a JSON text (a chat
/// request's messages, an answer, a stream chunk's deltas), without
/// parsing it: an estimate's input, cheap enough for every chunk.
pub fn content_chars(json: &str) -> usize {
    const KEY: &str = "\"content\":";
    // Built once: `str::find` sets up a searcher on every call (per chunk).
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(KEY));
    let bytes = json.as_bytes();
    let mut total = 0;
    let mut from = 0;
    while let Some(at) = FINDER.find(&bytes[from..]) {
        let mut i = from + at + KEY.len();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == b'"' {
            i += 1;
            let start = i;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            let end = i.min(bytes.len());
            total += json[start..end].chars().count();
        }
        from = i.min(bytes.len());
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_are_stored_as_json_wrote_them() {
        for (score, pass, reasons) in [
            (1.0f32, true, vec![]),
            (
                0.3,
                false,
                vec!["empty \"answer\"".to_string(), "é\n".into()],
            ),
            (0.9, true, vec!["x".into()]),
        ] {
            let v = Verdict {
                score,
                pass,
                reasons,
            };
            let before =
                serde_json::json!({"pass": v.pass, "score": v.score, "reasons": v.reasons})
                    .to_string();
            assert_eq!(verdict_json(&v), before);
        }
    }

    #[test]
    fn cost_charges_cached_prompt_tokens_at_their_price() {
        let p = Prices {
            input: 2.5,
            output: 10.0,
            cached_input: 1.25,
        };
        let u = Usage {
            prompt_tokens: 1_000,
            completion_tokens: 500,
            cached_prompt_tokens: 400,
            reasoning_tokens: 0,
        };
        let expected = (600.0 * 2.5 + 400.0 * 1.25 + 500.0 * 10.0) / 1e6;
        assert!((p.cost(&u) - expected).abs() < 1e-12);
    }

    #[test]
    fn content_is_counted_in_requests_answers_and_chunks() {
        assert_eq!(
            content_chars(
                r#"{"messages":[{"role":"user","content":"héllo"},{"content": "a\"b"}]}"#
            ),
            5 + 4
        );
        assert_eq!(
            content_chars(r#"{"choices":[{"delta":{"content":null}}]}"#),
            0
        );
        assert_eq!(content_chars(r#"{"content":"unterminated"#), 12);
        assert_eq!(estimate_tokens(0), 0);
        assert_eq!(estimate_tokens(9), 3);
    }

    #[test]
    fn a_dropped_recorder_still_delivers_its_record_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite"));
        let sinks = Arc::new(Sinks {
            store: Some(store.clone()),
            ..Sinks::default()
        });
        let health = DeploymentHealth::default();
        {
            let mut rec = Recorder::new(sinks.clone(), Arc::from("r1"), vec![]);
            rec.record().unwrap().route = "m".into();
            let a = AttemptRecord::new("d", "openai", Prices::default());
            rec.end_attempt(&health, a, Some(None));
            // dropped here: the client went away
        }
        let mut rec = Recorder::new(sinks, Arc::from("r2"), vec![]);
        let mut stream_rec = rec.hand_over();
        rec.finish(End::Answered); // empty: nothing
        stream_rec.record().unwrap().route = "m".into();
        stream_rec.finish(End::StreamFailed);
        assert!(store.flush(Duration::from_secs(5)));
        let conn = rusqlite::Connection::open(dir.path().join("db.sqlite")).unwrap();
        let rows: Vec<(String, String, i64)> = conn
            .prepare("SELECT id, outcome, status FROM requests ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            rows,
            vec![
                ("r1".into(), "client_gone".into(), 499),
                ("r2".into(), "stream_failed".into(), 200)
            ]
        );
    }

    #[test]
    fn a_panic_mid_attempt_still_records_the_request_and_its_attempt() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.sqlite"));
        let sinks = Arc::new(Sinks {
            store: Some(store.clone()),
            ..Sinks::default()
        });
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut rec = Recorder::new(sinks.clone(), Arc::from("boom"), vec![]);
            rec.record().unwrap().route = "m".into();
            let a = AttemptRecord::new("d", "openai", Prices::default());
            rec.open_attempt(&a);
            panic!("a bug mid-attempt");
        }));
        assert!(panicked.is_err());
        assert!(store.flush(Duration::from_secs(5)));
        let conn = rusqlite::Connection::open(dir.path().join("db.sqlite")).unwrap();
        let (outcome, status, attempts): (String, i64, i64) = conn
            .query_row(
                "SELECT outcome, status, attempts FROM requests WHERE id = 'boom'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((outcome.as_str(), status, attempts), ("panic", 500, 1));
        let deployment: String = conn
            .query_row("SELECT deployment FROM attempts", [], |r| r.get(0))
            .unwrap();
        assert_eq!(deployment, "d");
    }
}
