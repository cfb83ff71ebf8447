//! Live, passive health of each deployment, fed by the outcome of every
//! attempt and read by strategies as candidate stats.
//!
//! A deployment is unhealthy while it cools down: after a 429 for the
//! upstream's Retry-After, and after `trip_after` consecutive faults for
//! `cooldown_ms` (a circuit breaker; see [`HealthConfig`]). While it cools down it is tried
//! only after every other candidate. When a tripped circuit's cool-down ends,
//! one request probes it (half-open, see [`DeploymentHealth::admit`]): a
//! success closes the circuit, a fault reopens it at once. So traffic returns
//! to a recovered primary without hammering it while it is down.
//!
//! Updates are lock-free atomics. Concurrent updates of an average may lose
//! one sample, which is fine for statistics that steer routing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::config::HealthConfig;
use crate::failover::FailureClass;

/// Weight of a new sample in the moving averages.
const ALPHA: f64 = 0.2;

/// Health of one deployment.
#[derive(Debug)]
pub struct DeploymentHealth {
    /// Swapped by a config reload; the state around it is kept.
    settings: arc_swap::ArcSwap<HealthConfig>,
    origin: Instant,
    in_flight: AtomicU32,
    consecutive_faults: AtomicU32,
    /// Milliseconds since `origin` until which the deployment cools down.
    cooldown_until_ms: AtomicU64,
    /// Microseconds since `origin` when the last cool-down was set, and
    /// when the last fault was counted: a success clears only what was
    /// there before its attempt began.
    cooled_at_us: AtomicU64,
    faulted_at_us: AtomicU64,
    /// Whether the current cool-down comes from a rate limit (headroom 0).
    rate_limited: AtomicU32,
    /// A request probes the half-open circuit (see [`Probe`]).
    probing: AtomicBool,
    /// Active checks marked it down; their streak (> 0: good ones in a
    /// row, < 0: failed ones); the next check's wait, as a hint.
    down: AtomicBool,
    check_streak: std::sync::atomic::AtomicI32,
    check_every_ms: AtomicU64,
    latency_ms: AtomicF64,
    error_rate: AtomicF64,
    quality: AtomicF64,
    /// Low scores in a row, and until when (ms since `origin`) a streak of
    /// them demotes the deployment.
    low_streak: AtomicU32,
    demoted_until_ms: AtomicU64,
}

impl Default for DeploymentHealth {
    fn default() -> Self {
        Self::new(HealthConfig::default())
    }
}

/// What a strategy sees of a deployment's health.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Snapshot {
    pub healthy: bool,
    pub headroom: f32,
    pub in_flight: u32,
    pub error_rate: f32,
    pub latency_ms: f32,
    pub quality: f32,
}

impl DeploymentHealth {
    /// A healthy deployment with no history.
    pub fn new(settings: HealthConfig) -> Self {
        Self {
            settings: arc_swap::ArcSwap::from_pointee(settings),
            origin: Instant::now(),
            in_flight: AtomicU32::new(0),
            consecutive_faults: AtomicU32::new(0),
            cooldown_until_ms: AtomicU64::new(0),
            cooled_at_us: AtomicU64::new(0),
            faulted_at_us: AtomicU64::new(0),
            rate_limited: AtomicU32::new(0),
            probing: AtomicBool::new(false),
            down: AtomicBool::new(false),
            check_streak: std::sync::atomic::AtomicI32::new(0),
            check_every_ms: AtomicU64::new(0),
            latency_ms: AtomicF64::new(0.0),
            error_rate: AtomicF64::new(0.0),
            quality: AtomicF64::new(1.0),
            low_streak: AtomicU32::new(0),
            demoted_until_ms: AtomicU64::new(0),
        }
    }

    /// New settings from a reloaded config; counters, averages and any
    /// cool-down in progress are kept.
    pub fn set_settings(&self, settings: HealthConfig) {
        if **self.settings.load() != settings {
            self.settings.store(std::sync::Arc::new(settings));
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    pub fn snapshot(&self) -> Snapshot {
        let cooling = self.is_cooling_down() || self.down.load(Relaxed);
        Snapshot {
            healthy: !cooling,
            headroom: if cooling && self.rate_limited.load(Relaxed) == 1 {
                0.0
            } else {
                1.0
            },
            in_flight: self.in_flight.load(Relaxed),
            error_rate: self.error_rate.get() as f32,
            latency_ms: self.latency_ms.get() as f32,
            quality: if self.demoted_for().is_some() {
                0.0
            } else {
                self.quality.get() as f32
            },
        }
    }

    /// How long its demotion for low scores still lasts, if it is demoted.
    pub fn demoted_for(&self) -> Option<Duration> {
        let until = self.demoted_until_ms.load(Relaxed);
        let now = self.now_ms();
        (now < until).then(|| Duration::from_millis(until - now))
    }

    /// How long its cool-down still lasts, if it cools down.
    pub fn cooling_for(&self) -> Option<Duration> {
        let until = self.cooldown_until_ms.load(Relaxed);
        let now = self.now_ms();
        (now < until).then(|| Duration::from_millis(until - now))
    }

    /// A cool-down another replica started (its circuit tripped there):
    /// this one keeps away as long, then probes as after its own.
    pub fn adopt_cooldown(&self, left: Duration) {
        if self
            .cooling_for()
            .is_none_or(|mine| mine + Duration::from_millis(50) < left)
        {
            self.cool_down(left, false);
        }
    }

    /// How long a half-open probe holds the circuit for the others.
    pub fn probe_window(&self) -> Duration {
        Duration::from_millis(self.settings.load().probe_window_ms)
    }

    /// How long a tripped circuit stays open.
    pub fn trip_cooldown(&self) -> Duration {
        Duration::from_millis(self.settings.load().cooldown_ms)
    }

    pub fn is_cooling_down(&self) -> bool {
        self.now_ms() < self.cooldown_until_ms.load(Relaxed)
    }

    /// Whether a request may be sent to the deployment now.
    ///
    /// While it cools down (after a 429, or a tripped circuit): no, for
    /// `left` more. Once a tripped circuit's cool-down has ended it is
    /// half-open: one request at a time may probe it, claimed when that
    /// attempt starts ([`Self::try_probe`]) and held until its outcome is
    /// recorded; the others keep away meanwhile, however long it takes.
    /// The probe's success closes the circuit, its failure reopens it. So
    /// a deployment that is down costs requests nothing, and one that
    /// recovers gets its traffic back without being hammered.
    pub fn admission(&self) -> Admission {
        if self.down.load(Relaxed) {
            return Admission::Open {
                left: Duration::from_millis(self.check_every_ms.load(Relaxed).max(1)),
                rate_limited: false,
            };
        }
        let until = self.cooldown_until_ms.load(Relaxed);
        let now = self.now_ms();
        if now < until {
            return Admission::Open {
                left: Duration::from_millis(until - now),
                rate_limited: self.rate_limited.load(Relaxed) == 1,
            };
        }
        if until == 0 || self.consecutive_faults.load(Relaxed) < self.settings.load().trip_after {
            return Admission::Closed;
        }
        if self.probing.load(Relaxed) {
            Admission::Open {
                left: self.probe_window(),
                rate_limited: false,
            }
        } else {
            Admission::HalfOpen
        }
    }

    /// The circuit as operators name it: `closed` (serving), `open` (tripped
    /// by faults, cooling down), `half_open` (its cool-down over, waiting for
    /// a probe's outcome), `rate_limited` (cooling down after a 429) or
    /// `down` (active health checks failing). Read only: unlike
    /// [`Self::admission`] it claims nothing.
    /// Its faults in a row reached `trip_after`: the circuit is open or,
    /// once the cool-down has passed, half-open until a probe succeeds.
    pub fn is_tripped(&self) -> bool {
        self.consecutive_faults.load(Relaxed) >= self.settings.load().trip_after
    }

    pub fn circuit(&self) -> &'static str {
        if self.down.load(Relaxed) {
            return "down";
        }
        let tripped = self.consecutive_faults.load(Relaxed) >= self.settings.load().trip_after;
        match self.admission() {
            Admission::Open {
                rate_limited: true, ..
            } => "rate_limited",
            Admission::Open { .. } if tripped && self.is_cooling_down() => "open",
            Admission::Open { .. } | Admission::HalfOpen if tripped => "half_open",
            Admission::Open { .. } => "cooling_down",
            Admission::Closed | Admission::HalfOpen => "closed",
        }
    }

    /// An active check's outcome (the next one `next` later): marks the
    /// deployment down after `down_after` failures in a row, up after
    /// `up_after` successes (which also closes its circuit: it serves).
    /// `Some(up)` when that changed.
    pub fn record_check(
        &self,
        ok: bool,
        check: &crate::config::HealthCheck,
        next: Duration,
    ) -> Option<bool> {
        self.check_every_ms.store(next.as_millis() as u64, Relaxed);
        let streak = self.check_streak.load(Relaxed);
        let streak = match (ok, streak > 0) {
            (true, true) => streak.saturating_add(1),
            (true, false) => 1,
            (false, false) => streak.saturating_sub(1),
            (false, true) => -1,
        };
        self.check_streak.store(streak, Relaxed);
        let down = self.down.load(Relaxed);
        if !down && streak <= -(check.down_after.max(1) as i32) {
            self.down.store(true, Relaxed);
            return Some(false);
        }
        if down && streak >= check.up_after.max(1) as i32 {
            self.consecutive_faults.store(0, Relaxed);
            self.cooldown_until_ms.store(0, Relaxed);
            self.down.store(false, Relaxed);
            return Some(true);
        }
        None
    }

    /// Active checks are off: whatever they said no longer holds.
    pub fn clear_checks(&self) {
        self.down.store(false, Relaxed);
        self.check_streak.store(0, Relaxed);
    }

    /// Claims the half-open circuit's one probe for the attempt about to
    /// start; `None` when another request holds it.
    pub fn try_probe(self: &Arc<Self>) -> Option<Probe> {
        self.probing
            .compare_exchange(false, true, Relaxed, Relaxed)
            .is_ok()
            .then(|| Probe(self.clone()))
    }

    /// Counts a request in flight until the guard drops. The guard owns a
    /// reference so a committed stream can carry it past the attempt.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    /// A successful attempt that began at `started`: closes the circuit
    /// (the deployment just proved it serves) and updates the averages.
    pub fn record_success(&self, latency: Duration, started: Instant) {
        self.record_served(started);
        self.record_latency(latency);
    }

    /// A success whose latency was recorded already (a stream's, at its
    /// first chunk). Only a cool-down or faults from before `started` are
    /// cleared: a slow success that began before a 429 or a trip says
    /// nothing of the deployment since, and must not end that cool-down.
    pub fn record_served(&self, started: Instant) {
        let began = started.saturating_duration_since(self.origin).as_micros() as u64;
        if self.faulted_at_us.load(Relaxed) <= began {
            self.consecutive_faults.store(0, Relaxed);
        }
        if self.cooled_at_us.load(Relaxed) <= began {
            let until = self.cooldown_until_ms.load(Relaxed);
            // Unless a cool-down set meanwhile replaced the one read.
            let _ = self
                .cooldown_until_ms
                .compare_exchange(until, 0, Relaxed, Relaxed);
        }
        self.error_rate.blend(0.0);
    }

    fn now_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// Latency alone, e.g. a stream's time to its first chunk: whether the
    /// attempt succeeds is only known when the stream ends.
    pub fn record_latency(&self, latency: Duration) {
        let ms = latency.as_secs_f64() * 1000.0;
        if self.latency_ms.get() == 0.0 {
            self.latency_ms.set(ms);
        } else {
            self.latency_ms.blend(ms);
        }
    }

    /// A failed attempt of the given class.
    pub fn record_failure(&self, class: FailureClass, retry_after: Option<Duration>) {
        if class == FailureClass::RateLimited {
            let default = Duration::from_millis(self.settings.load().rate_limit_cooldown_ms);
            self.cool_down(retry_after.unwrap_or(default), true);
            return;
        }
        if !class.is_deployment_fault() {
            return;
        }
        self.error_rate.blend(1.0);
        self.faulted_at_us.store(self.now_us(), Relaxed);
        let faults = self.consecutive_faults.fetch_add(1, Relaxed) + 1;
        if faults >= self.settings.load().trip_after {
            self.cool_down(
                Duration::from_millis(self.settings.load().cooldown_ms),
                false,
            );
        }
    }

    /// An evaluator's (or an application's) score of an answer from this
    /// deployment. `true` when it completes a streak of low scores that
    /// demotes the deployment (see `health.demote_after_low_scores`).
    pub fn record_quality(&self, score: f32) -> bool {
        let score = f64::from(score.clamp(0.0, 1.0));
        self.quality.blend(score);
        let settings = self.settings.load();
        if settings.demote_after_low_scores == 0 || score >= settings.low_score {
            self.low_streak.store(0, Relaxed);
            return false;
        }
        let streak = self.low_streak.fetch_add(1, Relaxed) + 1;
        if streak < settings.demote_after_low_scores {
            return false;
        }
        self.low_streak.store(0, Relaxed);
        self.demoted_until_ms
            .store(self.now_ms().saturating_add(settings.demote_ms), Relaxed);
        true
    }

    fn cool_down(&self, for_: Duration, rate_limited: bool) {
        self.cooled_at_us.store(self.now_us(), Relaxed);
        let until = self.now_ms() + for_.as_millis() as u64;
        let previous = self.cooldown_until_ms.fetch_max(until, Relaxed);
        // The flag describes whichever cool-down ends last.
        if rate_limited || until > previous {
            self.rate_limited.store(u32::from(rate_limited), Relaxed);
        }
    }
}

/// Whether a deployment may be sent a request now.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Admission {
    Closed,
    /// Its circuit's cool-down ended: one request may probe it.
    HalfOpen,
    /// Cooling down (or probed by another request) for about `left`.
    Open {
        left: Duration,
        rate_limited: bool,
    },
}

/// The one probe of a half-open circuit, held by its attempt until the
/// outcome is recorded (then the circuit is closed or reopened); dropped
/// without one (the client left), the next request may probe.
#[derive(Debug)]
pub struct Probe(Arc<DeploymentHealth>);

impl Drop for Probe {
    fn drop(&mut self) {
        self.0.probing.store(false, Relaxed);
    }
}

/// Decrements the in-flight count when dropped.
pub struct InFlight(Arc<DeploymentHealth>);

impl InFlight {
    /// The deployment this request is in flight on.
    pub fn health(&self) -> &DeploymentHealth {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// An `f64` in an `AtomicU64`.
#[derive(Debug)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn new(v: f64) -> Self {
        Self(AtomicU64::new(v.to_bits()))
    }
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }
    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Relaxed);
    }
    fn blend(&self, sample: f64) {
        self.set(self.get() * (1.0 - ALPHA) + sample * ALPHA);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRIP_AFTER: u32 = 3;

    #[test]
    fn low_scores_in_a_row_demote_for_a_while() {
        let h = DeploymentHealth::new(HealthConfig {
            demote_after_low_scores: 3,
            demote_ms: 60_000,
            ..HealthConfig::default()
        });
        // A good score breaks the streak.
        assert!(!h.record_quality(0.1));
        assert!(!h.record_quality(0.2));
        assert!(!h.record_quality(0.9));
        assert!(!h.record_quality(0.1));
        assert!(!h.record_quality(0.1));
        assert!(h.demoted_for().is_none());
        assert!(h.snapshot().quality > 0.0);
        // The third in a row demotes (once), and strategies see quality 0.
        assert!(h.record_quality(0.0));
        assert!(h.demoted_for().is_some_and(|d| d > Duration::from_secs(59)));
        assert_eq!(h.snapshot().quality, 0.0);
        assert!(!h.record_quality(0.0));
        // 0 turns demotion off.
        let h = DeploymentHealth::new(HealthConfig {
            demote_after_low_scores: 0,
            ..HealthConfig::default()
        });
        assert!((0..10).all(|_| !h.record_quality(0.0)));
    }

    #[test]
    fn rate_limit_cools_down_with_zero_headroom() {
        let h = DeploymentHealth::default();
        h.record_failure(FailureClass::RateLimited, Some(Duration::from_secs(30)));
        let s = h.snapshot();
        assert!(!s.healthy);
        assert_eq!(s.headroom, 0.0);
    }

    #[test]
    fn circuit_opens_after_consecutive_faults_and_success_resets() {
        let h = DeploymentHealth::default();
        for _ in 0..TRIP_AFTER - 1 {
            h.record_failure(FailureClass::Overloaded, None);
        }
        assert!(h.snapshot().healthy);
        h.record_success(Duration::from_millis(5), Instant::now());
        h.record_failure(FailureClass::Overloaded, None);
        assert!(h.snapshot().healthy, "success reset the count");
        for _ in 0..TRIP_AFTER {
            h.record_failure(FailureClass::Connect, None);
        }
        let s = h.snapshot();
        assert!(!s.healthy);
        assert_eq!(s.headroom, 1.0, "a tripped circuit is not a rate limit");
        assert_eq!(h.circuit(), "open");
    }

    #[test]
    fn circuit_names_what_operators_see() {
        let h = DeploymentHealth::default();
        assert_eq!(h.circuit(), "closed");
        h.record_failure(FailureClass::RateLimited, None);
        assert_eq!(h.circuit(), "rate_limited");
    }

    #[test]
    fn one_probe_after_the_cool_down_held_until_its_outcome() {
        let h = Arc::new(DeploymentHealth::default());
        for _ in 0..TRIP_AFTER {
            h.record_failure(FailureClass::Overloaded, None);
        }
        assert!(matches!(
            h.admission(),
            Admission::Open {
                rate_limited: false,
                ..
            }
        ));
        // Pretend the cool-down has passed.
        h.cooldown_until_ms.store(1, Relaxed);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(h.admission(), Admission::HalfOpen);
        let probe = h.try_probe().expect("the first request probes");
        assert!(h.try_probe().is_none(), "one probe at a time");
        assert!(
            matches!(h.admission(), Admission::Open { .. }),
            "held however long it takes"
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(matches!(h.admission(), Admission::Open { .. }));
        h.record_failure(FailureClass::Overloaded, None);
        drop(probe);
        assert!(
            matches!(h.admission(), Admission::Open { .. }),
            "a failed probe reopens it"
        );

        h.cooldown_until_ms.store(1, Relaxed);
        std::thread::sleep(Duration::from_millis(2));
        // A probe whose request went away frees the slot for the next.
        drop(h.try_probe().unwrap());
        let probe = h.try_probe().unwrap();
        h.record_success(Duration::from_millis(3), Instant::now());
        drop(probe);
        assert_eq!(
            h.admission(),
            Admission::Closed,
            "a successful probe closes it"
        );
    }

    /// A slow success that began before a 429 (or a trip) does not end the
    /// cool-down it set; one that began after it does.
    #[test]
    fn a_late_success_does_not_erase_a_fresh_cool_down() {
        let h = DeploymentHealth::default();
        let early = Instant::now();
        std::thread::sleep(Duration::from_millis(1));
        h.record_failure(FailureClass::RateLimited, Some(Duration::from_secs(30)));
        h.record_success(Duration::from_millis(900), early);
        assert!(h.is_cooling_down(), "the 429's cool-down stands");
        for _ in 0..TRIP_AFTER {
            h.record_failure(FailureClass::Overloaded, None);
        }
        h.record_success(Duration::from_millis(900), early);
        assert!(h.is_cooling_down());
        // Faults counted after the success began are not reset by it.
        h.cooldown_until_ms.store(0, Relaxed);
        h.record_success(Duration::from_millis(900), early);
        h.record_failure(FailureClass::Overloaded, None);
        assert!(h.is_cooling_down(), "the fault count kept going");
        std::thread::sleep(Duration::from_millis(1));
        h.record_success(Duration::from_millis(5), Instant::now());
        assert!(
            !h.is_cooling_down(),
            "a success that began after it closes it"
        );
    }

    #[test]
    fn active_checks_mark_down_and_up_after_their_streaks() {
        let h = DeploymentHealth::default();
        let check = crate::config::HealthCheck {
            down_after: 2,
            up_after: 3,
            ..Default::default()
        };
        let next = Duration::from_millis(100);
        assert_eq!(h.record_check(false, &check, next), None);
        assert_eq!(
            h.record_check(true, &check, next),
            None,
            "the streak restarts"
        );
        assert_eq!(h.record_check(false, &check, next), None);
        assert_eq!(h.record_check(false, &check, next), Some(false), "down");
        assert!(matches!(h.admission(), Admission::Open { .. }));
        assert!(!h.snapshot().healthy);
        for _ in 0..2 {
            assert_eq!(h.record_check(true, &check, next), None);
        }
        assert_eq!(h.record_check(true, &check, next), Some(true), "up");
        assert_eq!(h.admission(), Admission::Closed);
    }

    #[test]
    fn caller_faults_do_not_hurt_health() {
        let h = DeploymentHealth::default();
        for _ in 0..10 {
            h.record_failure(FailureClass::InvalidRequest, None);
        }
        assert!(h.snapshot().healthy);
        assert_eq!(h.snapshot().error_rate, 0.0);
    }

    #[test]
    fn in_flight_counts_guards() {
        let h = Arc::new(DeploymentHealth::default());
        let a = h.start();
        let b = h.start();
        assert_eq!(h.snapshot().in_flight, 2);
        drop(a);
        drop(b);
        assert_eq!(h.snapshot().in_flight, 0);
    }
}
