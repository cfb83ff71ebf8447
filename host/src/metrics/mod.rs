//! Prometheus metrics: `GET /metrics` on the admin listener, in the text
//! exposition format.
//!
//! Counters and histograms are fed by the one place a request's outcome is
//! known (`Recorder::complete`) and by [`Sinks::event`](crate::pipeline::Sinks),
//! so nothing else records them. Gauges of live state (circuits, requests
//! in flight, the store's queue) are read when scraped. Labels stay
//! low-cardinality: routes, deployments, failure classes and event kinds —
//! never request ids or callers.

use prometheus::{
    CounterVec, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::pipeline::outcome::{End, Record};

mod scrape;

pub use scrape::{Buckets, CALL_SECONDS};
use scrape::{cache_families, live_families};

/// Latency buckets in seconds: 1 ms to 2 min.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The gateway's own overhead in seconds: 10 µs to 1 s.
const OVERHEAD: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.1, 1.0,
];

/// Every metric of the process (kept across reloads: built once, like the
/// sinks).
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    attempts: IntCounterVec,
    duration: HistogramVec,
    overhead: HistogramVec,
    upstream: HistogramVec,
    ttft: HistogramVec,
    tokens: IntCounterVec,
    cost: CounterVec,
    events: IntCounterVec,
    reloads: IntCounterVec,
    cache: IntCounterVec,
    cache_saved: CounterVec,
    queue_wait: HistogramVec,
    // Read when scraped.
    circuit: IntGaugeVec,
    in_flight: IntGaugeVec,
    store: IntGaugeVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
    r.register(Box::new(c.clone())).expect("registered once");
    c
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )
    .expect("a valid metric");
    r.register(Box::new(h.clone())).expect("registered once");
    h
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let cost = CounterVec::new(
            Opts::new(
                "switchyard_cost_usd_total",
                "Cost of attempts in US dollars (billed failures included)",
            ),
            &["deployment"],
        )
        .expect("a valid metric");
        r.register(Box::new(cost.clone())).expect("registered once");
        let cache_saved = CounterVec::new(
            Opts::new(
                "switchyard_cache_saved_usd_total",
                "What cache hits saved: the cost of the answers they reused, in US dollars",
            ),
            &["route"],
        )
        .expect("a valid metric");
        r.register(Box::new(cache_saved.clone()))
            .expect("registered once");
        Self {
            cache: counter(
                &r,
                "switchyard_cache_requests_total",
                "Requests of routes that cache, by what the cache did (hit, miss, bypass)",
                &["route", "result"],
            ),
            cache_saved,
            queue_wait: histogram(
                &r,
                "switchyard_queue_wait_seconds",
                "Requests that waited in the queue for a place (a cap or a limit), by how long",
                &["route"],
                SECONDS,
            ),
            requests: counter(
                &r,
                "switchyard_requests_total",
                "Requests by route, status class (2xx, 4xx, 5xx; stream_failed, client_gone) and whether streamed",
                &["route", "status", "stream"],
            ),
            attempts: counter(
                &r,
                "switchyard_attempts_total",
                "Attempts by deployment and outcome (ok, or the failure class)",
                &["deployment", "class"],
            ),
            duration: histogram(
                &r,
                "switchyard_request_duration_seconds",
                "Whole requests, from arrival to the answer's (or the stream's) end",
                &["route"],
                SECONDS,
            ),
            overhead: histogram(
                &r,
                "switchyard_overhead_seconds",
                "The gateway's own time per request: total minus time spent on upstreams",
                &["route"],
                OVERHEAD,
            ),
            upstream: histogram(
                &r,
                "switchyard_upstream_duration_seconds",
                "Attempts, from sending to the upstream's last byte",
                &["deployment"],
                SECONDS,
            ),
            ttft: histogram(
                &r,
                "switchyard_time_to_first_token_seconds",
                "Streamed attempts, from sending to the first chunk with content",
                &["deployment"],
                SECONDS,
            ),
            tokens: counter(
                &r,
                "switchyard_tokens_total",
                "Tokens by deployment and kind (input, output, cached_input, cache_write; estimated ones included)",
                &["deployment", "kind"],
            ),
            cost,
            events: counter(
                &r,
                "switchyard_events_total",
                "Events by kind (failover, retry, resume, circuit_open, rate-limit and budget alerts, health transitions, ...)",
                &["kind"],
            ),
            reloads: counter(
                &r,
                "switchyard_reloads_total",
                "Config reloads by result (ok, failed)",
                &["result"],
            ),
            circuit: gauge(
                &r,
                "switchyard_circuit_open",
                "1 while a deployment is skipped (its circuit open, cooling down after a 429, or marked down by its health checks)",
                &["deployment"],
            ),
            in_flight: gauge(
                &r,
                "switchyard_in_flight",
                "Requests in flight on a deployment",
                &["deployment"],
            ),
            store: gauge(
                &r,
                "switchyard_store",
                "The store: rows queued for the writer (queued), rows dropped since start (dropped), degraded (1) or not (0)",
                &["what"],
            ),
            registry: r,
        }
    }

    /// A finished request and its attempts.
    pub(crate) fn request(&self, record: &Record, end: &End, total: std::time::Duration) {
        let (route, stream, attempts) = (record.route.as_str(), record.stream, &record.attempts);
        let upstream: std::time::Duration = attempts.iter().map(|a| a.upstream).sum();
        let overhead = (!attempts.is_empty()).then(|| total.saturating_sub(upstream));
        let status = match end {
            End::StreamFailed => "stream_failed",
            End::ClientGone => "client_gone",
            _ => match end.status() {
                200..=299 => "2xx",
                400..=499 => "4xx",
                _ => "5xx",
            },
        };
        // Only configured routes: what callers ask for is unbounded.
        let route = if record.route_found { route } else { "-" };
        self.requests
            .with_label_values(&[route, status, if stream { "true" } else { "false" }])
            .inc();
        self.duration
            .with_label_values(&[route])
            .observe(total.as_secs_f64());
        if !record.queue_wait.is_zero() {
            self.queue_wait
                .with_label_values(&[route])
                .observe(record.queue_wait.as_secs_f64());
        }
        if let Some(c) = record.cache {
            self.cache.with_label_values(&[route, c.name()]).inc();
        }
        if let Some((_, saved)) = record.cached.as_ref().filter(|(_, s)| *s > 0.0) {
            self.cache_saved.with_label_values(&[route]).inc_by(*saved);
        }
        if let Some(o) = overhead {
            self.overhead
                .with_label_values(&[route])
                .observe(o.as_secs_f64());
        }
        for a in attempts {
            let d = a.deployment.as_str();
            self.attempts
                .with_label_values(&[d, a.class.map_or("ok", |c| c.name())])
                .inc();
            self.upstream
                .with_label_values(&[d])
                .observe(a.upstream.as_secs_f64());
            if let Some(t) = a.ttft {
                self.ttft.with_label_values(&[d]).observe(t.as_secs_f64());
            }
            if let Some(u) = a.usage {
                // Split as costs are: the kinds add up to the prompt.
                let (plain, cached, written) = u.prompt_split();
                for (kind, n) in [
                    ("input", plain),
                    ("output", u.completion_tokens),
                    ("cached_input", cached),
                    ("cache_write", written),
                ] {
                    if n > 0 {
                        self.tokens
                            .with_label_values(&[d, kind])
                            .inc_by(u64::from(n));
                    }
                }
            }
            if let Some(c) = a.cost.filter(|c| *c > 0.0) {
                self.cost.with_label_values(&[d]).inc_by(c);
            }
        }
    }

    /// An event (see `Sinks::event`).
    pub fn event(&self, kind: &str) {
        self.events.with_label_values(&[kind]).inc();
    }

    /// A config reload, applied or refused.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "failed" }])
            .inc();
    }

    /// The text exposition, with the live gauges read now.
    pub fn render(&self, live: &crate::live::Live) -> String {
        let gateway = live.gateway();
        self.circuit.reset();
        self.in_flight.reset();
        for (name, open, in_flight) in gateway.deployment_states() {
            self.circuit.with_label_values(&[name]).set(i64::from(open));
            self.in_flight
                .with_label_values(&[name])
                .set(i64::from(in_flight));
        }
        if let Some(store) = &live.sinks().store {
            self.store
                .with_label_values(&["queued"])
                .set(store.queued() as i64);
            self.store
                .with_label_values(&["dropped"])
                .set(store.dropped() as i64);
            self.store
                .with_label_values(&["degraded"])
                .set(i64::from(!matches!(
                    store.status(),
                    crate::store::Status::Ok
                )));
        }
        let mut families = self.registry.gather();
        families.extend(live_families(&gateway));
        if let Some(cache) = &live.sinks().cache {
            families.extend(cache_families(cache));
        }
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}
