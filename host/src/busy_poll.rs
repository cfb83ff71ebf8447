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
//! arriving, an attempt sent upstream, a request's end) is more recent
//! than the window, yields at once in a loop. A runtime with a task ready
//! polls its sockets without sleeping (`epoll_wait` with no timeout), so
//! the thread stays on its core and sees readiness itself; nobody has to
//! wake it. Past the window the task sleeps until the next activity: an
//! idle gateway uses no CPU. Under load the runtime rarely runs out of
//! work, so the spin costs little; at low load it costs up to a core for
//! the window after each activity, which is the trade HAProxy's
//! `busy-polling` makes for the same reason (its spin is unbounded).
//!
//! Limits, by design:
//! - Single-threaded runtimes only (`server.threads` 1, or one core). On a
//!   work-stealing runtime the spinning worker cannot poll the sockets
//!   while an idle worker holds the I/O driver, and the task hops between
//!   workers: CPU burnt on every core for little gain. [`start`] refuses
//!   it there.
//! - While it spins, the gateway's other threads on the same core (the log
//!   and store writers, plugin threads) wait for the scheduler to preempt
//!   it, up to the window; hence a short [`MAX_WINDOW`]. Windows long
//!   enough to cover an LLM's first token (tens of ms and more) would only
//!   burn the core.
//!
//! One per process (the serving runtime is), off unless started.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The longest window `server.busy_poll_us` may ask for (the schema's
/// maximum): enough for an upstream on the same network to answer; longer
/// spins only burn the core and hold off its other threads.
pub const MAX_WINDOW: Duration = Duration::from_millis(5);

/// The process's busy poller, once [`start`] ran.
static POLLER: OnceLock<Poller> = OnceLock::new();

/// Marks activity: a request came, an attempt went upstream, or a request
/// ended. One load and return when busy polling is off.
#[inline]
pub fn activity() {
    if let Some(p) = POLLER.get() {
        p.activity();
    }
}

/// Starts busy polling on the current runtime with `window` (clamped to
/// [`MAX_WINDOW`]); a zero window, or a second call, starts nothing. On a
/// runtime with more than one thread it starts nothing and says so.
pub fn start(window: Duration) -> Result<(), NotSingleThreaded> {
    if window.is_zero() {
        return Ok(());
    }
    if tokio::runtime::Handle::current().runtime_flavor()
        != tokio::runtime::RuntimeFlavor::CurrentThread
    {
        return Err(NotSingleThreaded);
    }
    let window = window.min(MAX_WINDOW);
    if POLLER.set(Poller::new(window)).is_ok()
        && let Some(p) = POLLER.get()
    {
        tokio::spawn(p.spin());
    }
    Ok(())
}

/// Busy polling asked for on a work-stealing runtime.
#[derive(Debug, thiserror::Error)]
#[error(
    "server.busy_poll_us needs a single-threaded runtime (server.threads 1, or one core): busy polling is off"
)]
pub struct NotSingleThreaded;

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

    // `last` and `spinning` are each written by one side and read by the
    // other after its own write: sequentially consistent, or both reads
    // could see the old values (a store buffer) and a window be missed.
    fn activity(&self) {
        self.last.store(self.now_ns(), Ordering::SeqCst);
        if !self.spinning.load(Ordering::SeqCst) {
            // Stored as a permit when the task is not waiting yet.
            self.wake.notify_one();
        }
    }

    /// Whether the last activity is within the window.
    fn recent(&self) -> bool {
        self.now_ns()
            .saturating_sub(self.last.load(Ordering::SeqCst))
            < self.window_ns
    }

    async fn spin(&self) {
        loop {
            self.wake.notified().await;
            self.spinning.store(true, Ordering::SeqCst);
            while self.recent() {
                tokio::task::yield_now().await;
            }
            self.spinning.store(false, Ordering::SeqCst);
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

    /// Time the calling thread was runnable: on a CPU, or waiting for one
    /// (the kernel's scheduler statistics, first two fields). A spinning
    /// thread is runnable the whole window however loaded the machine is;
    /// a sleeping one is neither.
    fn thread_runnable() -> Duration {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        let ns: u64 = stat
            .split_whitespace()
            .take(2)
            .map(|f| f.parse::<u64>().unwrap())
            .sum();
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
            let cpu = thread_runnable();
            tokio::time::sleep(Duration::from_millis(100)).await;
            let idle = thread_runnable() - cpu;
            assert!(!p.spinning.load(Ordering::Relaxed));
            assert!(idle < Duration::from_millis(20), "idle used {idle:?}");
            // Activity: the thread stays busy through the window, then
            // sleeps again.
            p.activity();
            let cpu = thread_runnable();
            tokio::time::sleep(Duration::from_millis(20)).await;
            assert!(p.spinning.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(180)).await;
            let used = thread_runnable() - cpu;
            assert!(!p.spinning.load(Ordering::Relaxed));
            // Runnable through the 40 ms window (less a little at its
            // start: the sleep's own setup).
            assert!(used >= Duration::from_millis(30), "spun {used:?}");
            assert!(used < Duration::from_millis(120), "spun {used:?}");
            // Activity again wakes it again.
            p.activity();
            tokio::time::sleep(Duration::from_millis(5)).await;
            assert!(p.spinning.load(Ordering::Relaxed));
        });
    }
}
