//! Busy polling for a while after activity (`server.busy_poll_us`), for
//! latency at low load on virtual machines.
//!
//! Why: a core with nothing to run halts, and on a VM waking a halted vCPU
//! goes through the hypervisor. Each time a request's bytes or its
//! upstream's answer reach a gateway whose thread sleeps in `epoll_wait`,
//! the sender pays that wake-up and the request waits for it: measured on
//! this project's 2-core VM (gateway on its own core, halt polling off), a
//! lone client's requests took 257 µs at p50 through the gateway against
//! 24 µs to the upstream directly; with a 200 µs window, 150 µs.
//!
//! How: a task of the serving runtime that, while activity (a request
//! arriving, an upstream request going out, a request's end) is more recent
//! than the window, yields at once in a loop. A runtime with a task ready
//! polls its sockets without sleeping (`epoll_wait` with no timeout), so
//! the thread stays on its core and sees readiness itself; nobody has to
//! wake it. Past the window the task sleeps until the next activity: an
//! idle gateway uses no CPU. Under load the runtime rarely runs out of
//! work, so the spin costs little; at low load it costs up to a core for
//! the window after each activity, which is the trade HAProxy's
//! `busy-polling` makes for the same reason (its spin is unbounded).
//!
//! One per process (the serving runtime is), off unless started.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The longest window `server.busy_poll_us` may ask for (the schema's
/// maximum): longer spins only burn a core at low load.
pub const MAX_WINDOW: Duration = Duration::from_millis(100);

/// The process's busy poller, once [`start`] ran.
static POLLER: OnceLock<Poller> = OnceLock::new();

/// Marks activity: a request came, went upstream or ended. A relaxed load
/// and return when busy polling is off.
#[inline]
pub fn activity() {
    if let Some(p) = POLLER.get() {
        p.activity();
    }
}

/// Starts busy polling on the current runtime with `window` (clamped to
/// [`MAX_WINDOW`]); a zero window, or a second call, starts nothing.
pub fn start(window: Duration) {
    if window.is_zero() {
        return;
    }
    let window = window.min(MAX_WINDOW);
    if POLLER.set(Poller::new(window)).is_ok()
        && let Some(p) = POLLER.get()
    {
        tokio::spawn(p.spin());
    }
}

/// Activity's time and the spinning task's state.
struct Poller {
    epoch: Instant,
    window_ns: u64,
    /// The last activity, in nanoseconds since `epoch`.
    last: AtomicU64,
    /// The task spins; activity need not wake it.
    spinning: AtomicBool,
    wake: Notify,
}

impl Poller {
    fn new(window: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            window_ns: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX),
            last: AtomicU64::new(0),
            spinning: AtomicBool::new(false),
            wake: Notify::new(),
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn activity(&self) {
        self.last.store(self.now_ns(), Ordering::Relaxed);
        if !self.spinning.load(Ordering::Relaxed) {
            // Stored as a permit when the task is not waiting yet.
            self.wake.notify_one();
        }
    }

    /// Whether the last activity is within the window.
    fn recent(&self) -> bool {
        self.now_ns()
            .saturating_sub(self.last.load(Ordering::Relaxed))
            < self.window_ns
    }

    async fn spin(&self) {
        loop {
            self.wake.notified().await;
            self.spinning.store(true, Ordering::Relaxed);
            while self.recent() {
                tokio::task::yield_now().await;
            }
            self.spinning.store(false, Ordering::Relaxed);
            // Activity between the last check and the store above sent no
            // permit (it saw the task spinning): checked once more.
            if self.recent() {
                self.wake.notify_one();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU time of the calling thread (the kernel's scheduler statistics:
    /// nanoseconds on a CPU, first field).
    fn thread_cpu() -> Duration {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        let ns = stat.split_whitespace().next().unwrap().parse().unwrap();
        Duration::from_nanos(ns)
    }

    #[test]
    fn spins_within_the_window_after_activity_and_sleeps_after_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let p: &'static Poller = Box::leak(Box::new(Poller::new(Duration::from_millis(40))));
            tokio::spawn(p.spin());
            // Idle: the task waits for activity and the thread sleeps.
            let cpu = thread_cpu();
            tokio::time::sleep(Duration::from_millis(100)).await;
            let idle = thread_cpu() - cpu;
            assert!(!p.spinning.load(Ordering::Relaxed));
            assert!(idle < Duration::from_millis(20), "idle used {idle:?}");
            // Activity: the thread stays busy through the window, then
            // sleeps again.
            p.activity();
            let cpu = thread_cpu();
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(p.spinning.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(180)).await;
            let used = thread_cpu() - cpu;
            assert!(!p.spinning.load(Ordering::Relaxed));
            // 40 ms of window spun, on a machine that may share the core.
            assert!(used >= Duration::from_millis(10), "spun {used:?}");
            assert!(used < Duration::from_millis(120), "spun {used:?}");
            // Activity again wakes it again.
            p.activity();
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(p.spinning.load(Ordering::Relaxed));
        });
    }

    #[test]
    fn activity_without_a_poller_is_a_no_op() {
        // Never started in unit tests: nothing to mark, nothing spawned.
        activity();
        assert!(POLLER.get().is_none());
    }
}
