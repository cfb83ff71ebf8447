//! Warm instances of one plugin version.
//!
//! Instantiating costs ~50–80 µs for a Rust plugin and milliseconds for a
//! Python one; a call on a warm instance a few microseconds. So instances are
//! pooled: a call takes an idle instance (or the right to make one), runs, and
//! gives it back. Any trap poisons the whole `Store`, so a failed instance is
//! dropped and the next call builds a new one. The count of live instances is
//! kept by a guard inside each [`Slot`], so an instance dropped anywhere (a
//! call cut off at its deadline, an aborted task) is accounted for.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::component::InstancePre;
use wasmtime::{Store, UpdateDeadline};

use super::PluginError;
use super::abi::{Exports, Indices};
use super::host_api::{CallDeadline, HostState, Shared};

/// Settings that shape every instance of a plugin.
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceLimits {
    pub memory_bytes: usize,
    pub max_instances: usize,
}

/// Idle instances kept per plugin version: enough for the calls that run at
/// once on a small machine; a burst's surplus goes back to the allocator (a
/// Python instance holds tens of MiB).
fn max_idle() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(4, |n| n.get() * 2)
            .max(4)
    })
}

/// One live instance: its store and its exports.
pub struct Slot {
    pub(crate) store: Store<HostState>,
    /// Boxed: a slot is moved through every call's future, and the typed
    /// export handles are ~200 bytes.
    pub(crate) exports: Box<Exports>,
    _live: Live,
}

/// Live instances of a pool, and a signal when one is freed.
#[derive(Default)]
struct LiveCount {
    count: AtomicUsize,
    freed: tokio::sync::Notify,
}

/// Counts an instance as live until dropped.
struct Live(Arc<LiveCount>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::Relaxed);
        self.0.freed.notify_one();
    }
}

/// What a call starts from: a warm instance, or the right to make one.
pub(crate) enum Reserved {
    Idle(Slot),
    New(LiveReservation),
}

/// A reserved place under `max_instances`, released if never used.
pub(crate) struct LiveReservation(Live);

/// Idle instances of one plugin version, and what is needed to make more.
pub struct Pool {
    pub(crate) shared: Arc<Shared>,
    pre: InstancePre<HostState>,
    indices: Indices,
    limits: InstanceLimits,
    idle: Mutex<Vec<Slot>>,
    live: Arc<LiveCount>,
    /// v0.1 streams in progress; each holds an instance for its whole duration.
    pinned: AtomicUsize,
}

impl Pool {
    pub(crate) fn new(
        shared: Arc<Shared>,
        pre: InstancePre<HostState>,
        indices: Indices,
        limits: InstanceLimits,
    ) -> Self {
        Self {
            shared,
            pre,
            indices,
            limits,
            idle: Mutex::new(Vec::new()),
            live: Arc::new(LiveCount::default()),
            pinned: AtomicUsize::new(0),
        }
    }

    /// Instances alive now (idle or in a call).
    pub fn live(&self) -> usize {
        self.live.count.load(Ordering::Relaxed)
    }

    /// Like [`reserve`](Self::reserve), but at `max_instances` waits for an
    /// instance to be freed until `deadline`: a burst queues briefly instead
    /// of failing; only a pool still full at the deadline is saturation.
    pub(crate) async fn reserve_by(&self, deadline: Instant) -> Result<Reserved, PluginError> {
        loop {
            let freed = self.live.freed.notified();
            match self.reserve() {
                Err(e) if e.is_saturation() => {
                    if tokio::time::timeout_at(deadline.into(), freed)
                        .await
                        .is_err()
                    {
                        return Err(e);
                    }
                }
                other => return other,
            }
        }
    }

    /// Takes an idle instance or reserves the right to make one. Refuses
    /// with [`PluginError::Busy`] at `max_instances`: the gateway is
    /// saturated, which is no deployment's fault.
    pub(crate) fn reserve(&self) -> Result<Reserved, PluginError> {
        if let Some(slot) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(Reserved::Idle(slot));
        }
        if self.live.count.fetch_add(1, Ordering::Relaxed) >= self.limits.max_instances {
            self.live.count.fetch_sub(1, Ordering::Relaxed);
            return Err(PluginError::Busy {
                plugin: self.shared.plugin.to_string(),
                max: self.limits.max_instances,
                what: "instances",
            });
        }
        Ok(Reserved::New(LiveReservation(Live(self.live.clone()))))
    }

    /// Makes a new instance in a reserved place. Instantiation runs guest
    /// start code, so it runs under the caller's deadline like any call.
    pub(crate) async fn instantiate(
        &self,
        reservation: LiveReservation,
        deadline: &CallDeadline,
    ) -> Result<Slot, PluginError> {
        let mut store = Store::new(
            self.pre.engine(),
            HostState::new(self.shared.clone(), self.limits.memory_bytes),
        );
        store.limiter(|s| &mut s.limiter);
        // Every tick: past the call's deadline, interrupt; otherwise yield to
        // the executor, so a long call never holds a thread for more than a tick.
        store.epoch_deadline_callback(|ctx| {
            Ok(if Instant::now() >= ctx.data().deadline.get() {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        store.data_mut().deadline = deadline.clone();
        store.set_epoch_deadline(1);
        let made = async {
            let instance = self.pre.instantiate_async(&mut store).await?;
            self.indices.load(&mut store, &instance)
        }
        .await;
        match made {
            Ok(exports) => Ok(Slot {
                store,
                exports: Box::new(exports),
                _live: reservation.0,
            }),
            Err(e) => Err(
                match super::call::classify_trap(
                    &self.shared.plugin,
                    &store,
                    deadline.get().saturating_duration_since(Instant::now()),
                    e,
                ) {
                    PluginError::Trap { plugin, message } => {
                        PluginError::Instantiate { plugin, message }
                    }
                    other => other,
                },
            ),
        }
    }

    /// Returns a healthy instance to the idle list, or drops it when enough
    /// are idle already.
    pub(crate) fn give_back(&self, slot: Slot) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < max_idle() {
            idle.push(slot);
            drop(idle);
            self.live.freed.notify_one();
        }
    }

    /// Admits one more v0.1 stream, as long as such streams hold at most
    /// three quarters of `max_instances`: the rest stay free for the short
    /// calls every request makes.
    pub(crate) fn begin_pinned(&self) -> Result<PinnedStream<'_>, PluginError> {
        let limit = (self.limits.max_instances * 3 / 4).max(1);
        if self.pinned.fetch_add(1, Ordering::Relaxed) >= limit {
            self.pinned.fetch_sub(1, Ordering::Relaxed);
            return Err(PluginError::Busy {
                plugin: self.shared.plugin.to_string(),
                max: limit,
                what: "v0.1 streams",
            });
        }
        Ok(PinnedStream(&self.pinned))
    }
}

/// One admitted v0.1 stream; released on drop.
pub(crate) struct PinnedStream<'a>(&'a AtomicUsize);

impl PinnedStream<'_> {
    /// Keeps the admission until the stream's session ends (released by
    /// [`Pool::end_pinned`]).
    pub(crate) fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for PinnedStream<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    /// A v0.1 stream kept by [`PinnedStream::keep`] ended.
    pub(crate) fn end_pinned(&self) {
        self.pinned.fetch_sub(1, Ordering::Relaxed);
    }
}
