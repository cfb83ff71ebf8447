//! How a plugin call runs without ever stalling the gateway.
//!
//! Every call is an async wasmtime call on its own fiber, under a wall-clock
//! deadline that covers everything: waiting for a thread, instantiation,
//! guest code (interrupted at the first epoch tick past the deadline) and
//! WASI host calls (a guest asleep in `poll` is dropped when the deadline's
//! timer fires).
//!
//! Where it runs is measured, not declared:
//! - A plugin that answers quickly is polled **inline**, on the request's own
//!   task: no thread hop, a few microseconds.
//! - A call still running at the first epoch tick yields; its future then
//!   moves to the **plugin runtime** (its own threads, half the cores), and
//!   its plugin is marked slow for a while: later calls go there directly.
//!   Calls that take longer than [`SLOW_CALL`] mark it slow too (a Python
//!   strategy costs ~1 ms a call). So a spinning or sleeping plugin costs only
//!   its own requests: the runtime's workers keep serving everything else.
//!
//! Faults (traps, deadlines, out-of-memory) count towards quarantine: a
//! plugin that faults `faults` times within `window` is not called for
//! `cooldown`, and its role's fail-open rule applies meanwhile.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use wasmtime::{Store, Trap};

use super::abi::Exports;
use super::host_api::HostState;
use super::pool::{Reserved, Slot};
use super::{Plugin, PluginError};
use crate::config::QuarantineConfig;

/// An inline call longer than this marks its plugin slow.
pub const SLOW_CALL: Duration = Duration::from_micros(250);
/// How long a slow plugin's calls go straight to the plugin runtime before
/// one is tried inline again.
pub const SLOW_FOR: Duration = Duration::from_secs(10);

/// The plugin runtime: threads where calls of slow plugins run, so that they
/// never occupy the request runtime's workers. Half the cores (at least
/// one): a saturating plugin leaves the other half to everything else.
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

type GuestFuture<'a, T> = Pin<Box<dyn Future<Output = wasmtime::Result<Option<T>>> + Send + 'a>>;

/// One call into a plugin, with owned arguments (it may move to another thread).
/// `Ok(None)` from `run` means the instance does not export what the call needs.
pub(crate) trait Call: Send + 'static {
    type Output: Send + 'static;
    fn run<'a>(
        self,
        store: &'a mut Store<HostState>,
        exports: &'a Exports,
    ) -> GuestFuture<'a, Self::Output>;
}

/// Threads of the plugin runtime.
fn plugin_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get() / 2)
        .max(1)
}

/// Per-plugin-version bookkeeping of where calls run and how often they fault.
#[derive(Debug)]
pub struct CallStats {
    /// Offloaded calls of this plugin running at once: at most one per
    /// plugin-runtime thread, so a plugin whose calls all spin cannot fill the
    /// plugin runtime's queue and delay every other plugin's calls behind it.
    /// Its calls wait for a turn within their own deadline.
    turns: Arc<tokio::sync::Semaphore>,
    /// Milliseconds since process start until which calls go offloaded.
    offload_until_ms: AtomicU64,
    /// Milliseconds since process start until which the plugin is quarantined.
    quarantined_until_ms: AtomicU64,
    faults: Mutex<VecDeque<Instant>>,
    /// Total calls that ended in a fault (trap, deadline, out of memory).
    pub fault_count: AtomicU64,
}

impl Default for CallStats {
    fn default() -> Self {
        Self {
            turns: Arc::new(tokio::sync::Semaphore::new(plugin_threads())),
            offload_until_ms: AtomicU64::new(0),
            quarantined_until_ms: AtomicU64::new(0),
            faults: Mutex::default(),
            fault_count: AtomicU64::new(0),
        }
    }
}

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl CallStats {
    fn offloading(&self) -> bool {
        now_ms() < self.offload_until_ms.load(Ordering::Relaxed)
    }

    fn mark_slow(&self, plugin: &str, why: &str) {
        let was = self.offloading();
        self.offload_until_ms
            .store(now_ms() + SLOW_FOR.as_millis() as u64, Ordering::Relaxed);
        if !was {
            tracing::debug!(plugin, "plugin calls move to the plugin runtime: {why}");
        }
    }

    /// Remaining quarantine, if any.
    pub fn quarantined_for(&self) -> Option<Duration> {
        let until = self.quarantined_until_ms.load(Ordering::Relaxed);
        let now = now_ms();
        (now < until).then(|| Duration::from_millis(until - now))
    }

    /// Counts a fault; quarantines the plugin when there were too many.
    fn record_fault(&self, plugin: &str, settings: &QuarantineConfig, error: &PluginError) {
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

impl Plugin {
    /// Runs `call` on a pooled instance under this plugin's deadline.
    pub(crate) async fn call<C: Call>(
        self: &Arc<Self>,
        request_id: &Arc<str>,
        call: C,
    ) -> Result<C::Output, PluginError> {
        self.call_with_deadline(request_id, call, self.deadline)
            .await
    }

    pub(crate) async fn call_with_deadline<C: Call>(
        self: &Arc<Self>,
        request_id: &Arc<str>,
        call: C,
        budget: Duration,
    ) -> Result<C::Output, PluginError> {
        if let Some(left) = self.stats.quarantined_for() {
            return Err(PluginError::Quarantined {
                plugin: self.id.to_string(),
                remaining_ms: left.as_millis() as u64,
            });
        }
        let deadline = Instant::now() + budget;
        let reserved = self.pool.reserve_by(deadline).await?;
        let plugin = self.clone();
        let request_id = request_id.clone();
        let work = async move {
            let _running = plugin.ticker.enter();
            let slot = match reserved {
                Reserved::Idle(slot) => slot,
                Reserved::New(place) => plugin.pool.instantiate(place, deadline).await?,
            };
            let (slot, result) = plugin.run_on(slot, &request_id, deadline, call).await;
            if let Some(slot) = slot {
                plugin.pool.give_back(slot);
            }
            result
        };
        let result = self.drive(work, deadline).await;
        if let Err(e) = &result {
            self.note_failure(e);
        }
        result
    }

    /// Runs a call on a given instance (v0.1 streams keep theirs); the slot
    /// comes back when it is still usable.
    pub(crate) async fn run_on<C: Call>(
        &self,
        mut slot: Slot,
        request_id: &Arc<str>,
        deadline: Instant,
        call: C,
    ) -> (Option<Slot>, Result<C::Output, PluginError>) {
        {
            let data = slot.store.data_mut();
            data.request_id = request_id.clone();
            data.deadline = deadline;
        }
        slot.store.set_epoch_deadline(1);
        let Slot { store, exports, .. } = &mut slot;
        // A host function that panics unwinds through the guest: it ends this
        // call like a trap instead of the request's task.
        let ran = std::panic::AssertUnwindSafe(call.run(store, exports))
            .catch_unwind()
            .await;
        match ran {
            Ok(Ok(Some(out))) => (Some(slot), Ok(out)),
            Ok(Ok(None)) => (
                Some(slot),
                Err(PluginError::WrongKind {
                    plugin: self.id.to_string(),
                    expected: None,
                    actual: self.kind,
                }),
            ),
            Ok(Err(e)) => {
                let error = classify_trap(&self.id, &slot.store, self.deadline, e);
                tracing::warn!(plugin = %self.id, "discarding trapped plugin instance");
                (None, Err(error))
            }
            Err(panic) => (
                None,
                Err(PluginError::Trap {
                    plugin: self.id.to_string(),
                    message: format!(
                        "a host function panicked during the call: {}",
                        panic_text(&panic)
                    ),
                }),
            ),
        }
    }

    /// Polls a call inline once; moves it to the plugin runtime when it
    /// yields or when the plugin is known to be slow. Cut off at `deadline`.
    pub(crate) async fn drive<R: Send + 'static>(
        &self,
        work: impl Future<Output = Result<R, PluginError>> + Send + 'static,
        deadline: Instant,
    ) -> Result<R, PluginError> {
        let mut work = Box::pin(work);
        if !self.stats.offloading() {
            let started = Instant::now();
            let first = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
            match first {
                Poll::Ready(result) => {
                    if started.elapsed() > SLOW_CALL {
                        self.stats
                            .mark_slow(&self.id, "a call took longer than 250 µs");
                    }
                    return result;
                }
                // It yielded at an epoch tick or waits in WASI: this call
                // finishes on the plugin runtime. Only a call that really ran
                // long marks the plugin slow (a tick can land in a 5 µs call).
                Poll::Pending if started.elapsed() > SLOW_CALL => self
                    .stats
                    .mark_slow(&self.id, "a call outlasted an epoch tick"),
                Poll::Pending => {}
            }
        }
        let deadline_error = || PluginError::Deadline {
            plugin: self.id.to_string(),
            deadline_ms: self.deadline.as_millis() as u64,
        };
        let turn = match tokio::time::timeout_at(
            deadline.into(),
            self.stats.turns.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(turn)) => turn,
            Ok(Err(_)) => unreachable!("the semaphore is never closed"),
            // Waiting for a turn is saturation, not this call's fault.
            Err(_) => {
                return Err(PluginError::Busy {
                    plugin: self.id.to_string(),
                    max: plugin_threads(),
                    what: "calls on the plugin runtime",
                });
            }
        };
        let mut task = plugin_runtime().spawn(async move {
            let out = work.await;
            drop(turn);
            out
        });
        match tokio::time::timeout_at(deadline.into(), &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(PluginError::Trap {
                plugin: self.id.to_string(),
                message: format!("the call's task failed: {e}"),
            }),
            Err(_) => {
                // Dropping the future drops the instance with it.
                task.abort();
                Err(deadline_error())
            }
        }
    }

    fn note_failure(&self, e: &PluginError) {
        if e.is_fault() {
            self.stats.record_fault(&self.id, &self.quarantine, e);
        }
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Names the way a call died: deadline, memory cap (known from the limiter,
/// not from the error's text), or any other trap.
pub(crate) fn classify_trap(
    plugin: &str,
    store: &Store<HostState>,
    budget: Duration,
    e: wasmtime::Error,
) -> PluginError {
    let plugin = plugin.to_string();
    if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return PluginError::Deadline {
            plugin,
            deadline_ms: budget.as_millis() as u64,
        };
    }
    if let Some(exhausted) = store.data().limiter.exhausted() {
        return PluginError::OutOfMemory {
            plugin,
            message: exhausted.to_string(),
        };
    }
    PluginError::Trap {
        plugin,
        message: format!("{e:#}"),
    }
}
