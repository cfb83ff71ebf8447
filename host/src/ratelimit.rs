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
//! Keyed by deployment name and carried across config reloads, like health.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Sub-buckets a window is divided into.
const BUCKETS: usize = 60;
/// Buckets kept: the window's 60 and the current one, which is partly
/// outside it until it fills.
const RING: usize = BUCKETS + 1;

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
}

/// Which limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Rps,
    Rpm,
    Tpm,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Rps => "rps",
            Kind::Rpm => "rpm",
            Kind::Tpm => "tpm",
        }
    }
}

/// One limit's window.
#[derive(Debug)]
struct Window {
    kind: Kind,
    limit: u64,
    /// Width of one bucket, in microseconds.
    width_us: u64,
    /// `(slot, used)`: the slot (`µs / width_us`) a bucket holds.
    buckets: [(u64, u64); RING],
    /// The window number (`µs / window`) in which the warning and the
    /// at-limit event last fired.
    warned: Option<u64>,
    hit: Option<u64>,
}

impl Window {
    fn new(kind: Kind, limit: u64, window_us: u64) -> Self {
        Self {
            kind,
            limit,
            // Rounded up: the buckets never cover less than the window.
            width_us: window_us.div_ceil(BUCKETS as u64).max(1),
            buckets: [(u64::MAX, 0); RING],
            warned: None,
            hit: None,
        }
    }

    fn slot(&self, us: u64) -> u64 {
        us / self.width_us
    }

    /// The number of the whole window `us` falls in (events: once per window).
    fn number(&self, us: u64) -> u64 {
        us / (self.width_us * BUCKETS as u64)
    }

    /// Whether bucket `slot` counts at slot `now`: the current bucket and
    /// the 60 before it (the oldest counts whole though part of it is
    /// older than the window: never more than the limit in any window).
    fn live(&self, slot: u64, now: u64) -> bool {
        slot != u64::MAX && slot <= now && now - slot <= BUCKETS as u64
    }

    /// What the window holds at slot `now`.
    fn used(&self, now: u64) -> u64 {
        self.buckets
            .iter()
            .filter(|(slot, _)| self.live(*slot, now))
            .map(|(_, used)| used)
            .sum()
    }

    fn fits(&self, now: u64, n: u64) -> bool {
        let used = self.used(now);
        used == 0 || used.saturating_add(n) <= self.limit
    }

    fn add(&mut self, now: u64, n: u64) {
        let b = &mut self.buckets[(now % RING as u64) as usize];
        if b.0 != now {
            *b = (now, 0);
        }
        b.1 = b.1.saturating_add(n);
    }

    /// Corrects what was added at `slot` by `delta`, if it is still inside.
    fn adjust(&mut self, slot: u64, now: u64, delta: i64) {
        if !self.live(slot, now.max(slot)) {
            return;
        }
        let b = &mut self.buckets[(slot % RING as u64) as usize];
        if b.0 == slot {
            b.1 = b.1.saturating_add_signed(delta);
        }
    }

    /// Microseconds from `us` until `n` more would fit.
    fn wait_us(&self, us: u64, n: u64) -> u64 {
        let now = self.slot(us);
        let mut used = self.used(now);
        let mut live: Vec<(u64, u64)> = self
            .buckets
            .iter()
            .copied()
            .filter(|(slot, _)| self.live(*slot, now))
            .collect();
        live.sort_unstable();
        for (slot, u) in live {
            // This bucket leaves the window when `now` reaches slot + 61.
            used -= u;
            if used == 0 || used + n <= self.limit {
                return ((slot + RING as u64) * self.width_us).saturating_sub(us);
            }
        }
        0
    }

    fn headroom(&self, now: u64) -> f32 {
        1.0 - (self.used(now) as f64 / self.limit.max(1) as f64).min(1.0) as f32
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
    /// The token window's slot it was taken in (`None`: no token limit).
    slot: Option<u64>,
    pub tokens: u64,
}

/// Refused: which limit, and when to try again.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Refused {
    pub limit: Kind,
    pub max: u64,
    pub retry_after: Duration,
}

/// One deployment's limiter.
#[derive(Debug)]
pub struct Limiter {
    origin: Instant,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    limits: Limits,
    warn_at: f64,
    windows: Vec<Window>,
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
            state: Mutex::new(State {
                limits,
                warn_at,
                windows: windows(limits),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
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
        if s.windows.is_empty() {
            return Ok(Reservation { slot: None, tokens });
        }
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
        let mut slot = None;
        for w in &mut s.windows {
            let now = w.slot(us);
            let n = need(w);
            w.add(now, n);
            if w.kind == Kind::Tpm {
                slot = Some(now);
            }
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
        Ok(Reservation { slot, tokens })
    }

    /// The request's real token count: the reservation is corrected by the
    /// difference.
    pub fn reconcile(&self, r: &Reservation, actual: u64) {
        let Some(slot) = r.slot else {
            return;
        };
        let us = self.now_us();
        let mut s = self.lock();
        if let Some(w) = s.windows.iter_mut().find(|w| w.kind == Kind::Tpm) {
            let delta = actual as i64 - r.tokens as i64;
            let now = w.slot(us);
            w.adjust(slot, now, delta);
        }
    }

    /// 0 (a limit is spent) to 1 (untouched): the tightest of its limits.
    pub fn headroom(&self) -> f32 {
        let us = self.now_us();
        let s = self.lock();
        s.windows
            .iter()
            .map(|w| w.headroom(w.slot(us)))
            .fold(1.0, f32::min)
    }

    /// Each limit: its name, limit and what the window holds now.
    pub fn usage(&self) -> Vec<(Kind, u64, u64)> {
        let us = self.now_us();
        let s = self.lock();
        s.windows
            .iter()
            .map(|w| (w.kind, w.limit, w.used(w.slot(us))))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(limits: Limits) -> Limiter {
        Limiter::new(limits, 0.9)
    }

    #[test]
    fn a_steady_load_gets_the_limit_and_no_more() {
        // 1 request every 10 ms for 10 s against 600 rpm (10 a second).
        let l = limiter(Limits {
            rpm: Some(600),
            ..Limits::default()
        });
        let mut admitted = Vec::new();
        let mut events = Vec::new();
        for i in 0..1_000u64 {
            let us = (i * 10 + 60_000) * 1_000;
            if l.reserve_at(us, 0, &mut events).is_ok() {
                admitted.push(us);
            }
        }
        // Never more than 600 in any 60 s window…
        for (i, t) in admitted.iter().enumerate() {
            let in_window = admitted[..=i]
                .iter()
                .filter(|&&u| u + 60_000_000 > *t)
                .count();
            assert!(in_window <= 600, "{in_window} at {t}");
        }
        // …and the whole limit in the first one.
        assert_eq!(admitted.len(), 600);
        assert_eq!(
            events.iter().map(|e| e.kind).collect::<Vec<_>>(),
            ["rate_limit_warning", "rate_limit_reached"],
            "each once per window"
        );
    }

    #[test]
    fn bursts_never_exceed_the_limit_in_any_window() {
        // Bursts of 50 every 137 ms for 10 s against 20 a second.
        let l = limiter(Limits {
            rps: Some(20),
            ..Limits::default()
        });
        let mut events = Vec::new();
        let mut admitted = Vec::new();
        for burst in 0..73u64 {
            let us = 3_000_000 + burst * 137_000;
            for i in 0..50 {
                if l.reserve_at(us + i * 10, 0, &mut events).is_ok() {
                    admitted.push(us + i * 10);
                }
            }
        }
        for (i, t) in admitted.iter().enumerate() {
            let in_window = admitted[..=i]
                .iter()
                .filter(|&&u| u + 1_000_000 > *t)
                .count();
            assert!(in_window <= 20, "{in_window} in the second before {t}");
        }
        // 10 s: at least 95 % of 200.
        assert!((190..=200).contains(&admitted.len()), "{}", admitted.len());
    }

    #[test]
    fn after_a_burst_the_window_slides_bucket_by_bucket() {
        let l = limiter(Limits {
            rps: Some(60),
            ..Limits::default()
        });
        let mut events = Vec::new();
        for _ in 0..60 {
            l.reserve_at(5_000_000, 0, &mut events).unwrap();
        }
        let refused = l.reserve_at(5_500_000, 0, &mut events).unwrap_err();
        assert_eq!(refused.limit, Kind::Rps);
        // The burst's bucket leaves the window a second after it began.
        assert!(
            (490..=520).contains(&(refused.retry_after.as_millis() as u64)),
            "{refused:?}"
        );
        assert!(l.reserve_at(6_016_000, 0, &mut events).is_ok());
    }

    #[test]
    fn tokens_are_reconciled_with_the_real_usage() {
        let l = limiter(Limits {
            tpm: Some(1_000),
            ..Limits::default()
        });
        let mut events = Vec::new();
        let r = l.reserve_at(0, 600, &mut events).unwrap();
        assert!(
            l.reserve_at(0, 600, &mut events).is_err(),
            "600 + 600 > 1000"
        );
        // It used 100: 500 come back.
        l.reconcile(&r, 100);
        assert_eq!(l.usage(), [(Kind::Tpm, 1_000, 100)]);
        let r2 = l.reserve_at(0, 600, &mut events).unwrap();
        // Far above its estimate: the window is over its limit until it slides.
        l.reconcile(&r2, 5_000);
        assert!(l.reserve_at(2_000_000, 1, &mut events).is_err());
        assert!(l.headroom() == 0.0);
    }

    #[test]
    fn a_request_larger_than_the_limit_waits_for_an_empty_window() {
        let l = limiter(Limits {
            tpm: Some(100),
            ..Limits::default()
        });
        let mut events = Vec::new();
        l.reserve_at(0, 5_000, &mut events).unwrap();
        assert!(l.reserve_at(30_000_000, 5_000, &mut events).is_err());
        assert!(l.reserve_at(61_000_000, 5_000, &mut events).is_ok());
    }

    #[test]
    fn reloading_keeps_unchanged_windows() {
        let l = limiter(Limits {
            rpm: Some(10),
            tpm: Some(1_000),
            ..Limits::default()
        });
        let mut events = Vec::new();
        l.try_reserve(100, &mut events).unwrap();
        l.set(
            Limits {
                rpm: Some(10),
                tpm: Some(2_000),
                ..Limits::default()
            },
            0.9,
        );
        assert_eq!(
            l.usage(),
            [(Kind::Rpm, 10, 1), (Kind::Tpm, 2_000, 0)],
            "the rpm window kept, the changed tpm window anew"
        );
    }
}
