//! The performance monitor: per deployment, rolling windows of what its
//! attempts did (latency and time-to-first-token percentiles, output tokens
//! per second, errors by class, success rate, requests per minute), and the
//! alerts they raise: a deployment whose recent latency degrades against
//! its baseline, and one that fails over too often.
//!
//! Fed by each finished request's record (a sink, see
//! [`crate::pipeline::outcome`]); keyed by deployment name and kept across
//! config reloads. Two rings of 30 time buckets per deployment: a recent
//! window (`monitor.window_s`) and a baseline (`monitor.baseline_s`), each
//! bucket a log-scale latency histogram (4 bins an octave, ~±9 %), so the
//! memory per deployment is fixed (~32 KiB) whatever the traffic. Nothing
//! runs on a timer: alerts are checked as records arrive, at most once a
//! second per deployment.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::config::MonitorConfig;
use crate::domain::WindowStats;
use crate::failover::FailureClass;

/// Buckets per ring.
const BUCKETS: usize = 30;
/// Histogram bins: 4 an octave from 1 ms, the last holds everything above
/// ~65 s.
const BINS: usize = 64;

#[derive(Clone)]
struct Hist([u32; BINS]);

impl Default for Hist {
    fn default() -> Self {
        Hist([0; BINS])
    }
}

impl Hist {
    fn bin(ms: f64) -> usize {
        ((4.0 * ms.max(1.0).log2()) as usize).min(BINS - 1)
    }

    fn add(&mut self, ms: f64) {
        self.0[Self::bin(ms)] += 1;
    }

    fn merge(&mut self, other: &Hist, sign: i64) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = (i64::from(*a) + sign * i64::from(*b)).max(0) as u32;
        }
    }

    fn count(&self) -> u64 {
        self.0.iter().map(|c| u64::from(*c)).sum()
    }

    /// The `p` quantile, as the upper edge of its bin (ms).
    fn quantile(&self, p: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((n as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in self.0.iter().enumerate() {
            seen += u64::from(*c);
            if seen >= rank {
                return Some(2f64.powf((i + 1) as f64 / 4.0));
            }
        }
        None
    }
}

#[derive(Clone, Default)]
struct Bucket {
    /// Which slice of time it holds (`now / width`); stale when older.
    slot: u64,
    attempts: u32,
    successes: u32,
    failovers: u32,
    errors: HashMap<&'static str, u32>,
    latency: Hist,
    ttft: Hist,
    output_tokens: u64,
    generation_ms: f64,
}

impl Bucket {
    fn merge(&mut self, other: &Bucket, sign: i64) {
        let f = |a: u32, b: u32| (i64::from(a) + sign * i64::from(b)).max(0) as u32;
        self.attempts = f(self.attempts, other.attempts);
        self.successes = f(self.successes, other.successes);
        self.failovers = f(self.failovers, other.failovers);
        for (k, v) in &other.errors {
            let e = self.errors.entry(k).or_default();
            *e = f(*e, *v);
        }
        self.latency.merge(&other.latency, sign);
        self.ttft.merge(&other.ttft, sign);
        self.output_tokens =
            (self.output_tokens as i64 + sign * other.output_tokens as i64).max(0) as u64;
        self.generation_ms = (self.generation_ms + sign as f64 * other.generation_ms).max(0.0);
    }
}

/// 30 buckets of `width`, covering `30 × width` back from now.
struct Ring {
    width: Duration,
    buckets: Vec<Bucket>,
}

impl Ring {
    fn new(span: Duration) -> Self {
        Ring {
            width: (span / BUCKETS as u32).max(Duration::from_millis(10)),
            buckets: vec![Bucket::default(); BUCKETS],
        }
    }

    fn slot(&self, age: Duration) -> u64 {
        (age.as_millis() / self.width.as_millis().max(1)) as u64
    }

    fn current(&mut self, age: Duration) -> &mut Bucket {
        let slot = self.slot(age);
        let b = &mut self.buckets[(slot % BUCKETS as u64) as usize];
        if b.slot != slot {
            *b = Bucket {
                slot,
                ..Bucket::default()
            };
        }
        b
    }

    /// The sum of the buckets still inside the ring's span.
    fn total(&self, age: Duration) -> Bucket {
        let now = self.slot(age);
        let mut sum = Bucket::default();
        for b in &self.buckets {
            if b.attempts > 0 && now.saturating_sub(b.slot) < BUCKETS as u64 {
                sum.merge(b, 1);
            }
        }
        sum
    }
}

/// One attempt as the monitor sees it.
pub struct Sample<'a> {
    pub class: Option<FailureClass>,
    /// The request went on to another deployment after this one failed.
    pub failed_over: bool,
    pub latency: Duration,
    pub ttft: Option<Duration>,
    pub output_tokens: Option<u32>,
    pub deployment: &'a str,
}

struct Series {
    recent: Ring,
    baseline: Ring,
    last_check: Option<Instant>,
    /// Since when recent latency has been degraded (unbroken).
    degraded_since: Option<Instant>,
    /// When each alert last fired (once per window).
    degradation_alerted: Option<Instant>,
    failover_alerted: Option<Instant>,
}

/// An alert the monitor raised: logged by the caller's sink and stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub kind: &'static str,
    pub deployment: String,
    pub detail: Value,
}

/// Every deployment's rolling windows.
pub struct Monitor {
    origin: Instant,
    settings: arc_swap::ArcSwap<MonitorConfig>,
    series: Mutex<HashMap<String, Arc<Mutex<Series>>>>,
    /// Each deployment's recent figures as strategies see them, with when
    /// (age of the monitor) they were taken: read without a lock by every
    /// request, replaced at most once a second per deployment.
    published: arc_swap::ArcSwap<HashMap<String, (Duration, Arc<WindowStats>)>>,
    empty: Arc<WindowStats>,
}

/// The recent window's figures for strategies.
fn window_stats(b: &Bucket, span: Duration) -> WindowStats {
    if b.attempts == 0 {
        return WindowStats::default();
    }
    let attempts = f64::from(b.attempts);
    let ms = |q: Option<f64>| q.unwrap_or(0.0) as f32;
    let mut errors: Vec<(&'static str, f32)> = b
        .errors
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(class, n)| (*class, (f64::from(*n) / attempts) as f32))
        .collect();
    errors.sort_unstable_by_key(|(class, _)| *class);
    WindowStats {
        attempts: b.attempts,
        requests_per_minute: (attempts / (span.as_secs_f64() / 60.0).max(1e-9)) as f32,
        success_rate: (f64::from(b.successes) / attempts) as f32,
        latency_p50_ms: ms(b.latency.quantile(0.5)),
        latency_p95_ms: ms(b.latency.quantile(0.95)),
        latency_p99_ms: ms(b.latency.quantile(0.99)),
        ttft_p50_ms: ms(b.ttft.quantile(0.5)),
        ttft_p95_ms: ms(b.ttft.quantile(0.95)),
        output_tokens_per_second: if b.generation_ms > 0.0 {
            (b.output_tokens as f64 / (b.generation_ms / 1000.0)) as f32
        } else {
            0.0
        },
        errors,
    }
}

/// Rolling figures of one window.
fn figures(b: &Bucket, span: Duration) -> Value {
    let minutes = span.as_secs_f64() / 60.0;
    let rate = |n: u32| {
        if b.attempts == 0 {
            Value::Null
        } else {
            json!(f64::from(n) / f64::from(b.attempts))
        }
    };
    json!({
        "attempts": b.attempts,
        "requests_per_min": f64::from(b.attempts) / minutes.max(1e-9),
        "success_rate": rate(b.successes),
        "error_rate": rate(b.attempts - b.successes.min(b.attempts)),
        "failover_rate": rate(b.failovers),
        "errors_by_class": b.errors,
        "latency_ms": {"p50": b.latency.quantile(0.5), "p95": b.latency.quantile(0.95), "p99": b.latency.quantile(0.99)},
        "ttft_ms": {"p50": b.ttft.quantile(0.5), "p95": b.ttft.quantile(0.95)},
        "output_tokens_per_s": (b.generation_ms > 0.0).then(|| b.output_tokens as f64 / (b.generation_ms / 1000.0)),
    })
}

impl Default for Monitor {
    fn default() -> Self {
        Self::new(MonitorConfig::default())
    }
}

impl Monitor {
    pub fn new(settings: MonitorConfig) -> Self {
        Self {
            origin: Instant::now(),
            settings: arc_swap::ArcSwap::from_pointee(settings),
            series: Mutex::new(HashMap::new()),
            published: arc_swap::ArcSwap::default(),
            empty: Arc::default(),
        }
    }

    /// `deployment`'s figures over the recent window as of its last
    /// attempt (at most a second old while it has traffic); all zero when
    /// that attempt is older than the window.
    pub fn recent(&self, deployment: &str) -> Arc<WindowStats> {
        let published = self.published.load();
        match published.get(deployment) {
            Some((at, stats))
                if self.origin.elapsed().saturating_sub(*at).as_secs_f64()
                    < self.settings.load().window_s =>
            {
                stats.clone()
            }
            _ => self.empty.clone(),
        }
    }

    fn publish(&self, deployment: &str, at: Duration, stats: WindowStats) {
        let stats = Arc::new(stats);
        self.published.rcu(|old| {
            let mut map = HashMap::clone(old);
            map.insert(deployment.to_string(), (at, stats.clone()));
            map
        });
    }

    /// New settings from a reloaded config. Windows of a new length start
    /// afresh; everything else is kept.
    pub fn set_settings(&self, settings: MonitorConfig) {
        let old = self.settings.swap(Arc::new(settings));
        if old.window_s != settings.window_s || old.baseline_s != settings.baseline_s {
            self.series
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            self.published.store(Arc::default());
        }
    }

    fn series(&self, deployment: &str) -> Arc<Mutex<Series>> {
        let mut all = self.series.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = all.get(deployment) {
            return s.clone();
        }
        let settings = self.settings.load();
        let s = Arc::new(Mutex::new(Series {
            recent: Ring::new(Duration::from_secs_f64(settings.window_s)),
            baseline: Ring::new(Duration::from_secs_f64(settings.baseline_s)),
            last_check: None,
            degraded_since: None,
            degradation_alerted: None,
            failover_alerted: None,
        }));
        all.insert(deployment.to_string(), s.clone());
        s
    }

    /// Adds one attempt; returns the alerts it raised (each once per window).
    pub fn record(&self, sample: &Sample<'_>) -> Vec<Alert> {
        let age = self.origin.elapsed();
        let series = self.series(sample.deployment);
        let mut guard = series.lock().unwrap_or_else(|p| p.into_inner());
        let s = &mut *guard;
        let ms = sample.latency.as_secs_f64() * 1000.0;
        for ring in [&mut s.recent, &mut s.baseline] {
            let b = ring.current(age);
            b.attempts += 1;
            match sample.class {
                None => {
                    b.successes += 1;
                    b.latency.add(ms);
                    if let Some(t) = sample.ttft {
                        b.ttft.add(t.as_secs_f64() * 1000.0);
                    }
                    if let Some(n) = sample.output_tokens {
                        b.output_tokens += u64::from(n);
                        b.generation_ms +=
                            ms - sample.ttft.map_or(0.0, |t| t.as_secs_f64() * 1000.0);
                    }
                }
                Some(class) => *b.errors.entry(class.name()).or_default() += 1,
            }
            if sample.failed_over {
                b.failovers += 1;
            }
        }
        let now = Instant::now();
        if s.last_check
            .is_some_and(|t| now - t < Duration::from_secs(1).min(s.recent.width))
        {
            return Vec::new();
        }
        s.last_check = Some(now);
        let recent = s.recent.total(age);
        let window = Duration::from_secs_f64(self.settings.load().window_s);
        self.publish(sample.deployment, age, window_stats(&recent, window));
        self.check(s, &recent, sample.deployment, age, now)
    }

    fn check(
        &self,
        s: &mut Series,
        recent: &Bucket,
        deployment: &str,
        age: Duration,
        now: Instant,
    ) -> Vec<Alert> {
        let cfg = self.settings.load();
        let window = Duration::from_secs_f64(cfg.window_s);
        let mut alerts = Vec::new();
        let mut baseline = s.baseline.total(age);
        baseline.merge(recent, -1);
        let min = u64::from(cfg.min_samples);

        // Degradation: recent p95 latency at least `ratio` × the baseline's,
        // without a break for `degradation_for_s`.
        let degraded = match (
            recent.latency.quantile(0.95),
            baseline.latency.quantile(0.95),
        ) {
            (Some(r), Some(b))
                if recent.latency.count() >= min && baseline.latency.count() >= min =>
            {
                (r >= cfg.degradation_ratio * b).then_some((r, b))
            }
            _ => None,
        };
        match degraded {
            None => s.degraded_since = None,
            Some((r, b)) => {
                let since = *s.degraded_since.get_or_insert(now);
                if now - since >= Duration::from_secs_f64(cfg.degradation_for_s)
                    && s.degradation_alerted.is_none_or(|t| now - t >= window)
                {
                    s.degradation_alerted = Some(now);
                    alerts.push(Alert {
                        kind: "degradation_alert",
                        deployment: deployment.to_string(),
                        detail: json!({
                            "recent_p95_ms": r, "baseline_p95_ms": b, "ratio": r / b,
                            "threshold": cfg.degradation_ratio,
                            "for_s": (now - since).as_secs_f64(),
                        }),
                    });
                }
            }
        }

        // Excessive failover: the share of its attempts the request had to
        // leave for another deployment.
        if u64::from(recent.attempts) >= min {
            let rate = f64::from(recent.failovers) / f64::from(recent.attempts);
            if rate >= cfg.failover_rate && s.failover_alerted.is_none_or(|t| now - t >= window) {
                s.failover_alerted = Some(now);
                alerts.push(Alert {
                    kind: "failover_alert",
                    deployment: deployment.to_string(),
                    detail: json!({
                        "failover_rate": rate, "threshold": cfg.failover_rate,
                        "attempts": recent.attempts, "failovers": recent.failovers,
                        "window_s": cfg.window_s, "errors_by_class": recent.errors,
                    }),
                });
            }
        }
        alerts
    }

    /// The recent and baseline figures of `deployment` (`None`: no traffic yet).
    pub fn view(&self, deployment: &str) -> Option<Value> {
        let series = self
            .series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(deployment)?
            .clone();
        let s = series.lock().unwrap_or_else(|p| p.into_inner());
        let cfg = self.settings.load();
        let age = self.origin.elapsed();
        let recent = s.recent.total(age);
        let mut baseline = s.baseline.total(age);
        baseline.merge(&recent, -1);
        Some(json!({
            "recent": figures(&recent, Duration::from_secs_f64(cfg.window_s)),
            "baseline": figures(&baseline, Duration::from_secs_f64((cfg.baseline_s - cfg.window_s).max(1.0))),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> MonitorConfig {
        MonitorConfig {
            window_s: 0.3,
            baseline_s: 3.0,
            degradation_ratio: 2.0,
            degradation_for_s: 0.0,
            min_samples: 5,
            failover_rate: 0.5,
        }
    }

    fn ok(ms: u64) -> Sample<'static> {
        Sample {
            class: None,
            failed_over: false,
            latency: Duration::from_millis(ms),
            ttft: None,
            output_tokens: Some(10),
            deployment: "d",
        }
    }

    #[test]
    fn strategies_see_recent_figures_until_the_window_passes() {
        let m = Monitor::new(settings());
        assert_eq!(m.recent("d").attempts, 0, "no traffic yet");
        m.record(&ok(40));
        let failed = Sample {
            class: Some(FailureClass::Overloaded),
            ..ok(5)
        };
        // Within the same second: not published yet (at most once a second).
        m.record(&failed);
        let r = m.recent("d");
        assert_eq!(r.attempts, 1);
        assert_eq!(r.success_rate, 1.0);
        assert!((40.0..=40.0 * 1.19).contains(&r.latency_p50_ms), "{r:?}");
        assert!(r.errors.is_empty());
        assert_eq!(m.recent("other").attempts, 0);
        // Next check: both attempts, the failure by class.
        std::thread::sleep(Duration::from_millis(15));
        m.record(&failed);
        let r = m.recent("d");
        assert_eq!(r.attempts, 3, "{r:?}");
        assert_eq!(r.errors, [("overloaded", 2.0 / 3.0)]);
        // The window (0.3 s) passes with no traffic: nothing to show.
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(*m.recent("d"), WindowStats::default());
    }

    #[test]
    fn quantiles_are_within_a_bin() {
        let mut h = Hist::default();
        for ms in 1..=100 {
            h.add(ms as f64);
        }
        let p50 = h.quantile(0.5).unwrap();
        assert!((50.0..=50.0 * 1.19).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99).unwrap();
        assert!((99.0..=99.0 * 1.19).contains(&p99), "{p99}");
    }

    #[test]
    fn a_latency_step_raises_one_degradation_alert() {
        let m = Monitor::new(settings());
        for _ in 0..50 {
            assert!(m.record(&ok(10)).is_empty());
        }
        // Past the recent window: the 10 ms samples are baseline now.
        std::thread::sleep(Duration::from_millis(400));
        let mut alerts = Vec::new();
        for _ in 0..50 {
            alerts.extend(m.record(&ok(100)));
            std::thread::sleep(Duration::from_millis(2));
        }
        let degraded: Vec<_> = alerts
            .iter()
            .filter(|a| a.kind == "degradation_alert")
            .collect();
        assert_eq!(degraded.len(), 1, "{alerts:?}");
        assert!(degraded[0].detail["ratio"].as_f64().unwrap() >= 2.0);
        let v = m.view("d").unwrap();
        assert!(
            v["recent"]["latency_ms"]["p50"].as_f64().unwrap() >= 100.0,
            "{v}"
        );
        assert!(v["recent"]["output_tokens_per_s"].as_f64().unwrap() > 0.0);
    }

    #[test]
    fn frequent_failovers_raise_an_alert_and_steady_traffic_none() {
        let m = Monitor::new(settings());
        let mut alerts = Vec::new();
        for i in 0..20 {
            let mut s = ok(10);
            if i % 2 == 0 {
                s.class = Some(FailureClass::Overloaded);
                s.failed_over = true;
            }
            alerts.extend(m.record(&s));
            // Alerts are checked at most once a bucket (10 ms here).
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        assert_eq!(alerts[0].kind, "failover_alert");
        assert!(
            alerts[0].detail["errors_by_class"]["overloaded"]
                .as_u64()
                .unwrap()
                >= 3
        );

        let quiet = Monitor::new(settings());
        for _ in 0..100 {
            assert!(quiet.record(&ok(10)).is_empty());
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
