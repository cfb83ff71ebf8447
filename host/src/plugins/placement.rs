//! Where a plugin's calls run, and whether it may be called at all.
//!
//! Per plugin version: whether its calls are marked slow (they go straight
//! to the plugin runtime) and for how long, the turns its offloaded calls
//! take on that runtime, and the faults that quarantine it. The policy these
//! numbers serve is described in [`super::call`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::PluginError;
use crate::config::QuarantineConfig;

/// An inline call longer than this marks its plugin slow.
pub const SLOW_CALL: Duration = Duration::from_micros(250);

/// [`SLOW_CALL`], or `SWITCHYARD_PLUGIN_SLOW_CALL_US` when set: for counting
/// instructions under valgrind (`scripts/instructions`), where every call is
/// ~50× slower and would otherwise move to the plugin runtime's threads
/// half-way through a run, changing what is counted.
pub fn slow_call() -> Duration {
    static SLOW: OnceLock<Duration> = OnceLock::new();
    *SLOW.get_or_init(|| {
        std::env::var("SWITCHYARD_PLUGIN_SLOW_CALL_US")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(SLOW_CALL, Duration::from_micros)
    })
}
/// Consecutive slow inline calls that mark a plugin slow.
pub const SLOW_STREAK: u32 = 3;
/// How long a slow plugin's calls go straight to the plugin runtime before
/// one is tried inline again.
pub const SLOW_FOR: Duration = Duration::from_secs(10);

/// The plugin runtime: threads where calls of slow plugins run, so that they
/// never occupy the request runtime's workers. One per core, at least two: a
/// plugin's calls take at most half of them (`CallStats::turns`).
pub fn plugin_runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(plugin_threads())
            // Calls arrive from outside (the injection queue); a worker
            // busy with a long call's slices must still take them at the next
            // slice, not after 61 of them.
            .global_queue_interval(1)
            .thread_name("plugin-worker")
            .enable_all()
            .build()
            .expect("cannot start the plugin runtime")
    })
}

/// Threads of the plugin runtime.
pub(crate) fn plugin_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .max(2)
}

/// Offloaded calls of one plugin running at once: half the plugin runtime.
pub(crate) fn plugin_turns() -> usize {
    (plugin_threads() / 2).max(1)
}

/// Per-plugin-version bookkeeping of where calls run and how often they fault.
#[derive(Debug)]
pub struct CallStats {
    /// Offloaded calls of this plugin running at once: half the plugin
    /// runtime's threads, so a plugin whose calls all spin cannot fill the
    /// plugin runtime and delay every other plugin's calls behind it. Its
    /// calls wait for a turn within their own deadline.
    pub(crate) turns: Arc<tokio::sync::Semaphore>,
    /// Milliseconds since process start until which calls go offloaded.
    offload_until_ms: AtomicU64,
    /// Consecutive inline calls that ran longer than [`SLOW_CALL`].
    slow_streak: AtomicU32,
    /// Woken when the plugin is found fast again: calls waiting for a turn
    /// on the plugin runtime run inline instead.
    pub(crate) recovered: tokio::sync::Notify,
    /// Milliseconds since process start until which the plugin is quarantined.
    quarantined_until_ms: AtomicU64,
    faults: Mutex<VecDeque<Instant>>,
    /// Total calls that ended in a fault (trap, deadline, out of memory).
    pub fault_count: AtomicU64,
    /// Calls made, those that failed (any error), and their total wall time
    /// (for `/metrics`).
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    pub call_ns: AtomicU64,
    /// Calls interrupted at their deadline, and calls that trapped (both
    /// also faults).
    pub timeouts: AtomicU64,
    pub traps: AtomicU64,
    /// Calls by duration: a histogram's buckets, counted with plain atomics
    /// (no label lookup on the call path).
    pub latency: crate::metrics::Buckets,
}

impl Default for CallStats {
    fn default() -> Self {
        Self {
            turns: Arc::new(tokio::sync::Semaphore::new(plugin_turns())),
            offload_until_ms: AtomicU64::new(0),
            slow_streak: AtomicU32::new(0),
            recovered: tokio::sync::Notify::new(),
            quarantined_until_ms: AtomicU64::new(0),
            faults: Mutex::default(),
            fault_count: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            call_ns: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            traps: AtomicU64::new(0),
            latency: crate::metrics::Buckets::default(),
        }
    }
}

/// Time left until `until` (milliseconds since process start); no clock
/// read in the common case of a mark that was never set.
fn remaining(until: &AtomicU64) -> Option<Duration> {
    let until = until.load(Ordering::Relaxed);
    if until == 0 {
        return None;
    }
    let now = now_ms();
    (now < until).then(|| Duration::from_millis(until - now))
}

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl CallStats {
    pub(crate) fn offloading(&self) -> bool {
        self.offloaded_for().is_some()
    }

    /// How much longer calls go straight to the plugin runtime, if they do.
    pub fn offloaded_for(&self) -> Option<Duration> {
        remaining(&self.offload_until_ms)
    }

    /// Notes an inline call's wall time; [`SLOW_STREAK`] slow ones in a row
    /// mark the plugin slow.
    pub(crate) fn note_inline(&self, plugin: &str, ran: Duration) {
        if ran <= slow_call() {
            // A write only when there is a streak to end: fast calls on every
            // worker do not contend for the cache line.
            if self.slow_streak.load(Ordering::Relaxed) != 0 {
                self.slow_streak.store(0, Ordering::Relaxed);
            }
        } else if self.slow_streak.fetch_add(1, Ordering::Relaxed) + 1 >= SLOW_STREAK {
            self.slow_streak.store(0, Ordering::Relaxed);
            self.mark_slow(plugin, ran);
        }
    }

    pub(crate) fn mark_slow(&self, plugin: &str, ran: Duration) {
        let was = self.offloading();
        self.offload_until_ms
            .store(now_ms() + SLOW_FOR.as_millis() as u64, Ordering::Relaxed);
        if !was {
            tracing::debug!(
                plugin,
                ran_us = ran.as_micros() as u64,
                "plugin calls move to the plugin runtime: {SLOW_STREAK} inline calls in a row \
                 ran longer than {} µs",
                slow_call().as_micros()
            );
        }
    }

    /// An offloaded call finished in one short poll: the plugin is fast.
    pub(crate) fn note_fast_offloaded(&self, plugin: &str) {
        if self.offloading() {
            self.offload_until_ms.store(0, Ordering::Relaxed);
            tracing::debug!(
                plugin,
                "plugin calls run inline again: an offloaded call was fast"
            );
            self.recovered.notify_waiters();
        }
    }

    /// Remaining quarantine, if any.
    pub fn quarantined_for(&self) -> Option<Duration> {
        remaining(&self.quarantined_until_ms)
    }

    /// Counts a fault; quarantines the plugin when there were too many.
    pub(crate) fn record_fault(
        &self,
        plugin: &str,
        settings: &QuarantineConfig,
        error: &PluginError,
    ) {
        self.fault_count.fetch_add(1, Ordering::Relaxed);
        if settings.faults == 0 {
            return;
        }
        let now = Instant::now();
        let window = Duration::from_millis(settings.window_ms);
        let mut faults = self.faults.lock().unwrap_or_else(|p| p.into_inner());
        faults.push_back(now);
        while faults
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            faults.pop_front();
        }
        if faults.len() as u32 >= settings.faults && self.quarantined_for().is_none() {
            faults.clear();
            self.quarantined_until_ms
                .store(now_ms() + settings.cooldown_ms, Ordering::Relaxed);
            tracing::warn!(
                plugin,
                faults = settings.faults,
                window_ms = settings.window_ms,
                cooldown_ms = settings.cooldown_ms,
                "plugin quarantined: it faulted {} times within {} ms (last: {error}); \
                 it is not called for {} ms, its role's fallback applies, a new file lifts it",
                settings.faults,
                settings.window_ms,
                settings.cooldown_ms
            );
        }
    }
}
