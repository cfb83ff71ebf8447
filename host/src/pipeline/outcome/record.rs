//! What one request and each of its attempts record.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::Prices;
use crate::budget::Reservation;
use crate::domain::{Usage, Verdict};
use crate::failover::FailureClass;
use crate::ratelimit::Hold;

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
    /// The usage was estimated from text lengths: the upstream sent none,
    /// or the answer was cut before its usage was read.
    pub estimated: bool,
    pub cost: Option<f64>,
    /// The provider produced tokens it charges for (a success, an answer
    /// the evaluator rejected, a stream cut after tokens, a whole answer
    /// cut while downloading).
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

    /// No usage known (an estimate withdrawn).
    pub fn clear_usage(&mut self) {
        self.usage = None;
        self.estimated = false;
        self.cost = None;
        self.billed = false;
    }
}

/// The record of one request.
#[derive(Debug)]
pub struct Record {
    pub request_id: Arc<str>,
    pub ts_ms: i64,
    pub(super) begun: Instant,
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
    pub(super) open: Option<AttemptRecord>,
    /// What the route's shadow strategies need, run once the request ends.
    pub shadow: Option<Box<crate::shadow::Pending>>,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Tokens estimated from text: ~4 characters a token, at least one for any
/// text. Used only when the upstream reports no usage, or its answer was cut
/// before the usage was read (the record says `estimated`).
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
