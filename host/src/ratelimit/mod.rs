//! The rate limiter: each deployment's requests per second, requests per
//! minute and tokens per minute (prompt plus completion), as sliding windows.
//!
//! **Algorithm: a sliding window of 60 sub-buckets** per limit (1/60 of the
//! window each: 1 s for a minute, 16.7 ms for a second). A request is
//! admitted when what the current bucket and the 60 before it hold, plus
//! what it asks for, stays within the limit. Those 61 buckets always cover
//! the whole window (the oldest partly lies before it and counts whole), so
//! the limiter never admits more than the limit in any window; under a
//! steady load it admits at least 60/61 (98.4 %) of it. Memory is fixed (60 counters a limit) whatever the rate; a check is a
//! sum of 60 numbers under the deployment's own mutex (no allocation).
//!
//! **Tokens are reserved, then reconciled**: a request reserves its
//! estimated prompt tokens plus its `max_tokens` (or
//! `limits.default_output_tokens`) in the bucket of the moment it was sent;
//! when its usage is known (a stream's at its end) the difference is added
//! to or taken from that same bucket, if it is still in the window. A
//! request larger than a whole limit is admitted only into an empty window,
//! so it is never refused forever.
//!
//! **Learned from the provider**: the quota an upstream reports in its
//! headers (remaining requests and tokens, and when each resets) tightens
//! the limiter until that reset: with nothing left, the deployment (or key)
//! is not sent a request the provider would refuse; what it has left counts
//! down with each request until a fresher answer says otherwise.
//!
//! One limiter per deployment and one per upstream key, keyed by name and
//! carried across config reloads, like health.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

pub mod shared;
mod window;

use std::sync::Arc;

use window::Window;

/// What a request holds of one limiter until its usage is known: local
/// windows, or the replicas' shared ones in Redis.
#[derive(Clone, Debug)]
pub enum Hold {
    Local(Arc<Limiter>, Reservation),
    Shared(Arc<shared::Shared>, shared::Reservation),
}

impl Hold {
    /// The real token count corrects the reservation.
    pub fn reconcile(&self, actual: u64) {
        match self {
            Hold::Local(l, r) => l.reconcile(r, actual),
            Hold::Shared(s, r) => s.reconcile(r, actual),
        }
    }

    /// Gives the reservation back whole: the request was never sent.
    pub fn release(&self) {
        match self {
            Hold::Local(l, r) => l.release(r),
            Hold::Shared(s, r) => s.release(r),
        }
    }
}

/// A deployment's limits (`None`: unlimited).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    pub rps: Option<u64>,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.rps.is_none() && self.rpm.is_none() && self.tpm.is_none()
    }

    /// One replica's share of each limit when `replicas` share it (rounded
    /// up: never 0).
    pub fn share(self, replicas: u32) -> Limits {
        let part = |l: Option<u64>| l.map(|l| l.div_ceil(u64::from(replicas.max(1))).max(1));
        Limits {
            rps: part(self.rps),
            rpm: part(self.rpm),
            tpm: part(self.tpm),
        }
    }
}

/// Which limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Rps,
    Rpm,
    Tpm,
    /// What the provider said is left of its request quota.
    ProviderRequests,
    /// What the provider said is left of its token quota.
    ProviderTokens,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Rps => "rps",
            Kind::Rpm => "rpm",
            Kind::Tpm => "tpm",
            Kind::ProviderRequests => "provider_requests",
            Kind::ProviderTokens => "provider_tokens",
        }
    }
}

/// A limit event: `rate_limit_warning` (a window reached `warn_at` of a
/// limit) or `rate_limit_reached` (a request was refused at a limit), each
/// once per window.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    pub kind: &'static str,
    pub limit: Kind,
    pub used: u64,
    pub max: u64,
}

/// Tokens held for a request until its usage is known.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reservation {
    /// When it was taken (µs since the limiter's origin): the bucket of
    /// each window it counts in.
    at_us: u64,
    pub tokens: u64,
}

/// Refused: which limit, and when to try again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Refused {
    pub limit: Kind,
    pub max: u64,
    pub retry_after: Duration,
}

/// One deployment's (or upstream key's) limiter.
#[derive(Debug)]
pub struct Limiter {
    origin: Instant,
    /// Whether any limit is configured or learned: without one, callers
    /// skip the lock entirely.
    active: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    limits: Limits,
    warn_at: f64,
    windows: Vec<Window>,
    /// The provider's own figures, until their reset.
    requests_left: Option<Learned>,
    tokens_left: Option<Learned>,
}

/// What a provider said is left of one quota.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Learned {
    left: u64,
    /// Its size, when the provider said (for headroom).
    limit: Option<u64>,
    /// µs since the origin when it resets.
    until_us: u64,
}

impl Learned {
    fn live(&self, us: u64) -> bool {
        us < self.until_us
    }
}

fn windows(limits: Limits) -> Vec<Window> {
    let mut w = Vec::new();
    if let Some(l) = limits.rps {
        w.push(Window::new(Kind::Rps, l, 1_000_000));
    }
    if let Some(l) = limits.rpm {
        w.push(Window::new(Kind::Rpm, l, 60_000_000));
    }
    if let Some(l) = limits.tpm {
        w.push(Window::new(Kind::Tpm, l, 60_000_000));
    }
    w
}

impl Limiter {
    pub fn new(limits: Limits, warn_at: f64) -> Self {
        Self {
            origin: Instant::now(),
            active: AtomicBool::new(!limits.is_empty()),
            state: Mutex::new(State {
                limits,
                warn_at,
                windows: windows(limits),
                requests_left: None,
                tokens_left: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// Whether it limits anything now (configured limits, or a provider's
    /// quota not yet reset). One atomic load.
    pub fn is_active(&self) -> bool {
        self.active.load(Relaxed)
    }

    /// New limits from a reloaded config: windows of a changed limit start
    /// afresh; unchanged ones keep what they hold.
    pub fn set(&self, limits: Limits, warn_at: f64) {
        let mut s = self.lock();
        s.warn_at = warn_at;
        if s.limits != limits {
            let old = std::mem::take(&mut s.windows);
            s.windows = windows(limits)
                .into_iter()
                .map(|new| {
                    old.iter()
                        .position(|w| w.kind == new.kind && w.limit == new.limit)
                        .map_or(new, |i| {
                            let w = &old[i];
                            Window {
                                kind: w.kind,
                                limit: w.limit,
                                width_us: w.width_us,
                                buckets: w.buckets,
                                warned: w.warned,
                                hit: w.hit,
                            }
                        })
                })
                .collect();
            s.limits = limits;
            let learned = s.requests_left.is_some() || s.tokens_left.is_some();
            self.active.store(!limits.is_empty() || learned, Relaxed);
        }
    }

    pub fn limits(&self) -> Limits {
        self.lock().limits
    }

    /// Takes one request and `tokens` from every window, or refuses with
    /// the limit that is full and when it frees up. The events it raised go
    /// to `events`.
    pub fn try_reserve(
        &self,
        tokens: u64,
        events: &mut Vec<Event>,
    ) -> Result<Reservation, Refused> {
        let us = self.now_us();
        self.reserve_at(us, tokens, events)
    }

    fn reserve_at(
        &self,
        us: u64,
        tokens: u64,
        events: &mut Vec<Event>,
    ) -> Result<Reservation, Refused> {
        let mut s = self.lock();
        // The provider's word first: it knows its own quota.
        if s.forget_expired(us) && s.windows.is_empty() {
            self.active.store(false, Relaxed);
        }
        s.check_learned(us, tokens)?;
        let warn_at = s.warn_at;
        let need = |w: &Window| if w.kind == Kind::Tpm { tokens } else { 1 };
        if let Some(w) = s.windows.iter_mut().find(|w| !w.fits(w.slot(us), need(w))) {
            let n = need(w);
            let window = w.number(us);
            if w.hit != Some(window) {
                w.hit = Some(window);
                events.push(Event {
                    kind: "rate_limit_reached",
                    limit: w.kind,
                    used: w.used(w.slot(us)),
                    max: w.limit,
                });
            }
            return Err(Refused {
                limit: w.kind,
                max: w.limit,
                retry_after: Duration::from_micros(w.wait_us(us, n).max(1)),
            });
        }
        s.count_learned(tokens);
        for w in &mut s.windows {
            let now = w.slot(us);
            let n = need(w);
            w.add(now, n);
            let used = w.used(now);
            let window = w.number(us);
            if used as f64 >= warn_at * w.limit as f64 && w.warned != Some(window) {
                w.warned = Some(window);
                events.push(Event {
                    kind: "rate_limit_warning",
                    limit: w.kind,
                    used,
                    max: w.limit,
                });
            }
        }
        Ok(Reservation { at_us: us, tokens })
    }

    /// The events a shared (Redis) check implies, once per window each as
    /// for local checks: `rate_limit_reached` when it refused at `refused`,
    /// `rate_limit_warning` when what is left (`headroom`) is under the
    /// warning fraction. This replica's windows only keep count of which
    /// window an event fired in.
    pub fn shared_events(&self, refused: Option<(Kind, u64)>, headroom: f32) -> Vec<Event> {
        let us = self.now_us();
        let mut s = self.lock();
        let warn_at = s.warn_at;
        let mut events = Vec::new();
        for w in &mut s.windows {
            let window = w.number(us);
            match refused {
                Some((kind, max)) if kind == w.kind && w.hit != Some(window) => {
                    w.hit = Some(window);
                    events.push(Event {
                        kind: "rate_limit_reached",
                        limit: kind,
                        used: max,
                        max,
                    });
                }
                None if f64::from(1.0 - headroom) >= warn_at && w.warned != Some(window) => {
                    w.warned = Some(window);
                    events.push(Event {
                        kind: "rate_limit_warning",
                        limit: w.kind,
                        used: 0,
                        max: 0,
                    });
                    break;
                }
                _ => {}
            }
        }
        events
    }

    /// Only the provider's reported quota (the windows are checked
    /// elsewhere, e.g. shared in Redis): refuses when the provider said
    /// nothing is left until its reset, and counts this request down.
    pub fn try_learned(&self, tokens: u64) -> Result<(), Refused> {
        let us = self.now_us();
        let mut s = self.lock();
        s.forget_expired(us);
        s.check_learned(us, tokens)?;
        s.count_learned(tokens);
        Ok(())
    }

    /// The request's real token count: the reservation is corrected by the
    /// difference.
    pub fn reconcile(&self, r: &Reservation, actual: u64) {
        let us = self.now_us();
        let mut s = self.lock();
        if let Some(w) = s.windows.iter_mut().find(|w| w.kind == Kind::Tpm) {
            let delta = actual as i64 - r.tokens as i64;
            w.adjust(w.slot(r.at_us), w.slot(us), delta);
        }
    }

    /// Gives a reservation back whole: the request was never sent.
    pub fn release(&self, r: &Reservation) {
        let us = self.now_us();
        let mut s = self.lock();
        for w in &mut s.windows {
            let n = if w.kind == Kind::Tpm { r.tokens } else { 1 };
            w.adjust(w.slot(r.at_us), w.slot(us), -(n as i64));
        }
    }

    /// A provider's report of its quota (from a response's headers):
    /// tightens the limiter until each reset.
    /// A reset further than `max_reset_ms` away counts as that far: a
    /// provider's "none left for 6 hours" must not sideline a key that long.
    pub fn learn(&self, hint: &crate::domain::QuotaHint, max_reset_ms: u64) {
        self.learn_at(self.now_us(), hint, max_reset_ms);
    }

    fn learn_at(&self, us: u64, hint: &crate::domain::QuotaHint, max_reset_ms: u64) {
        let learned = |left: Option<u32>, limit: Option<u32>, reset_ms: Option<u32>| {
            Some(Learned {
                left: u64::from(left?),
                limit: limit.map(u64::from),
                // Without a reset time the figure cannot be trusted for long.
                until_us: us
                    + u64::from(reset_ms.unwrap_or(1_000)).clamp(1, max_reset_ms.max(1)) * 1_000,
            })
        };
        let requests = learned(
            hint.remaining_requests,
            hint.limit_requests,
            hint.reset_requests_ms,
        );
        let tokens = learned(
            hint.remaining_tokens,
            hint.limit_tokens,
            hint.reset_tokens_ms,
        );
        if requests.is_none() && tokens.is_none() {
            return;
        }
        let mut s = self.lock();
        if requests.is_some() {
            s.requests_left = requests;
        }
        if tokens.is_some() {
            s.tokens_left = tokens;
        }
        self.active.store(true, Relaxed);
    }

    /// 0 (a limit is spent) to 1 (untouched): the tightest of its limits,
    /// the provider's reported quota included.
    pub fn headroom(&self) -> f32 {
        if !self.is_active() {
            return 1.0;
        }
        let us = self.now_us();
        let mut s = self.lock();
        s.forget_expired(us);
        let learned = [s.requests_left, s.tokens_left]
            .into_iter()
            .flatten()
            .map(|l| match l.limit {
                _ if l.left == 0 => 0.0,
                Some(max) if max > 0 => (l.left as f64 / max as f64).min(1.0) as f32,
                _ => 1.0,
            });
        s.windows
            .iter()
            .map(|w| w.headroom(w.slot(us)))
            .chain(learned)
            .fold(1.0, f32::min)
    }

    /// Each limit: its name, limit and what the window holds now; then
    /// what the provider last said is left (`used` = limit − left).
    pub fn usage(&self) -> Vec<(Kind, u64, u64)> {
        let us = self.now_us();
        let mut s = self.lock();
        s.forget_expired(us);
        let mut out: Vec<_> = s
            .windows
            .iter()
            .map(|w| (w.kind, w.limit, w.used(w.slot(us))))
            .collect();
        for (l, kind) in [
            (s.requests_left, Kind::ProviderRequests),
            (s.tokens_left, Kind::ProviderTokens),
        ] {
            if let Some(l) = l {
                let max = l.limit.unwrap_or(l.left).max(l.left);
                out.push((kind, max, max - l.left));
            }
        }
        out
    }
}

impl State {
    /// The provider's reported quota: refused when less is left than the
    /// request needs (a request larger than a whole token quota is let
    /// through, or it would wait forever).
    fn check_learned(&self, us: u64, tokens: u64) -> Result<(), Refused> {
        for (learned, kind, need) in [
            (self.requests_left, Kind::ProviderRequests, 1),
            (self.tokens_left, Kind::ProviderTokens, tokens),
        ] {
            if let Some(l) = learned
                && l.left < need
                && !(kind == Kind::ProviderTokens && l.limit.is_some_and(|max| need > max))
            {
                return Err(Refused {
                    limit: kind,
                    max: l.limit.unwrap_or(l.left),
                    retry_after: Duration::from_micros((l.until_us - us).max(1)),
                });
            }
        }
        Ok(())
    }

    /// Counts an admitted request down from what the provider said is left.
    fn count_learned(&mut self, tokens: u64) {
        if let Some(l) = &mut self.requests_left {
            l.left = l.left.saturating_sub(1);
        }
        if let Some(l) = &mut self.tokens_left {
            l.left = l.left.saturating_sub(tokens);
        }
    }

    /// Drops provider figures whose reset has passed; whether none is left.
    fn forget_expired(&mut self, us: u64) -> bool {
        if self.requests_left.is_some_and(|l| !l.live(us)) {
            self.requests_left = None;
        }
        if self.tokens_left.is_some_and(|l| !l.live(us)) {
            self.tokens_left = None;
        }
        self.requests_left.is_none() && self.tokens_left.is_none()
    }
}

#[cfg(test)]
mod tests;
