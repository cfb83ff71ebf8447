//! Plugin instances: the per-store host state, the host functions plugins
//! import, and the pool that reuses instances across requests.
//!
//! Instantiating per call costs ~50–80 µs; a call on a warm instance ~5 µs.
//! So instances are pooled: a call takes an idle instance (or makes one),
//! runs with a fresh deadline, and gives it back. A trap poisons the whole
//! `Store`, so a trapped instance is dropped and the next call builds a new one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::component::{Instance, InstancePre, ResourceTable};
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{adapter, evaluator, strategy, switchyard::plugin::host, types};
use super::engine::{EpochTicker, TICK};
use super::{Kind, PluginError};

/// Counters a plugin keeps in the host (see `counter-next` in the WIT).
/// One map per plugin id, kept by the registry across reloads.
pub type Counters = Mutex<HashMap<String, u64>>;

/// Everything a plugin's store holds: its identity for logs, its config, its
/// counters, its memory cap and an empty WASI context.
pub struct HostState {
    plugin: Arc<str>,
    config: Arc<str>,
    counters: Arc<Counters>,
    /// The request the current call serves, for log lines.
    request_id: Arc<str>,
    limits: StoreLimits,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: types::LogLevel, message: String) {
        let (plugin, request_id) = (&*self.plugin, &*self.request_id);
        match level {
            types::LogLevel::Trace => tracing::trace!(plugin, request_id, "{message}"),
            types::LogLevel::Debug => tracing::debug!(plugin, request_id, "{message}"),
            types::LogLevel::Info => tracing::info!(plugin, request_id, "{message}"),
            types::LogLevel::Warn => tracing::warn!(plugin, request_id, "{message}"),
            types::LogLevel::Error => tracing::error!(plugin, request_id, "{message}"),
        }
    }

    fn monotonic_now(&mut self) -> u64 {
        process_start().elapsed().as_nanos() as u64
    }

    fn plugin_config(&mut self) -> String {
        self.config.to_string()
    }

    fn counter_next(&mut self, name: String) -> u64 {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        let slot = counters.entry(name).or_insert(0);
        let previous = *slot;
        *slot = slot.wrapping_add(1);
        previous
    }
}

fn process_start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// The typed exports of one instance, by kind.
pub enum Exports {
    Adapter(adapter::Guest),
    Strategy(strategy::Guest),
    Evaluator(evaluator::Guest),
}

/// Export lookups done once per component, so loading an instance's exports
/// does no string matching.
pub(crate) enum KindIndices {
    Adapter(adapter::GuestIndices),
    Strategy(strategy::GuestIndices),
    Evaluator(evaluator::GuestIndices),
}

impl KindIndices {
    pub(crate) fn new(kind: Kind, pre: &InstancePre<HostState>) -> wasmtime::Result<Self> {
        Ok(match kind {
            Kind::Adapter => Self::Adapter(adapter::GuestIndices::new(pre)?),
            Kind::Strategy => Self::Strategy(strategy::GuestIndices::new(pre)?),
            Kind::Evaluator => Self::Evaluator(evaluator::GuestIndices::new(pre)?),
        })
    }

    fn load(&self, store: &mut Store<HostState>, instance: &Instance) -> wasmtime::Result<Exports> {
        Ok(match self {
            Self::Adapter(i) => Exports::Adapter(i.load(store, instance)?),
            Self::Strategy(i) => Exports::Strategy(i.load(store, instance)?),
            Self::Evaluator(i) => Exports::Evaluator(i.load(store, instance)?),
        })
    }
}

/// One live instance: its store and its exports.
pub struct Slot {
    pub(crate) store: Store<HostState>,
    pub(crate) exports: Exports,
}

/// Idle instances kept per plugin version. Calls are synchronous and short,
/// so at most one per runtime worker thread runs at a time; twice the core
/// count covers that with room. Streams take more while they run and give
/// the surplus back to the allocator when they end (a Python instance holds
/// tens of MiB).
fn max_idle() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(4, |n| n.get() * 2)
            .max(4)
    })
}

/// Settings that shape every instance of a plugin.
#[derive(Clone, Debug)]
pub struct InstanceLimits {
    pub memory_bytes: usize,
    pub max_instances: usize,
}

/// Idle instances of one plugin version, and what is needed to make more.
pub struct Pool {
    pub(crate) plugin: Arc<str>,
    pub(crate) ticker: Arc<EpochTicker>,
    pre: InstancePre<HostState>,
    indices: KindIndices,
    config: Arc<str>,
    counters: Arc<Counters>,
    limits: InstanceLimits,
    idle: Mutex<Vec<Slot>>,
    live: AtomicUsize,
    /// Streams in progress; each holds an instance for its whole duration.
    streams: AtomicUsize,
    /// The component imports `wasi:io`, whose sync host functions block.
    pub(crate) blocking_wasi: bool,
}

impl Pool {
    pub(crate) fn new(
        plugin: Arc<str>,
        ticker: Arc<EpochTicker>,
        pre: InstancePre<HostState>,
        indices: KindIndices,
        config: Arc<str>,
        counters: Arc<Counters>,
        limits: InstanceLimits,
    ) -> Self {
        let blocking_wasi = pre
            .component()
            .component_type()
            .imports(pre.engine())
            .any(|(name, _)| name.starts_with("wasi:io/"));
        Self {
            plugin,
            ticker,
            pre,
            indices,
            config,
            counters,
            limits,
            idle: Mutex::new(Vec::new()),
            live: AtomicUsize::new(0),
            streams: AtomicUsize::new(0),
            blocking_wasi,
        }
    }

    /// Admits one more stream, as long as streams hold at most three
    /// quarters of `max_instances`: the rest stay free for the short calls
    /// every request makes, so long streams cannot starve them.
    pub(crate) fn begin_stream(&self) -> Result<(), PluginError> {
        let limit = (self.limits.max_instances * 3 / 4).max(1);
        if self.streams.fetch_add(1, Ordering::Relaxed) >= limit {
            self.streams.fetch_sub(1, Ordering::Relaxed);
            return Err(PluginError::Busy {
                plugin: self.plugin.to_string(),
                max: limit,
                what: "streams",
            });
        }
        Ok(())
    }

    /// A stream admitted by [`begin_stream`](Self::begin_stream) ended.
    pub(crate) fn end_stream(&self) {
        self.streams.fetch_sub(1, Ordering::Relaxed);
    }

    /// Takes an idle instance or instantiates a new one.
    pub(crate) fn take(&self) -> Result<Slot, PluginError> {
        if let Some(slot) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
            return Ok(slot);
        }
        if self.live.fetch_add(1, Ordering::Relaxed) >= self.limits.max_instances {
            self.live.fetch_sub(1, Ordering::Relaxed);
            return Err(PluginError::Busy {
                plugin: self.plugin.to_string(),
                max: self.limits.max_instances,
                what: "instances",
            });
        }
        self.instantiate().inspect_err(|_| {
            self.live.fetch_sub(1, Ordering::Relaxed);
        })
    }

    fn instantiate(&self) -> Result<Slot, PluginError> {
        let state = HostState {
            plugin: self.plugin.clone(),
            config: self.config.clone(),
            counters: self.counters.clone(),
            request_id: Arc::from(""),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(self.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        // Instantiation runs guest start code: give it a deadline too.
        store.set_epoch_deadline(ticks(1_000));
        let _running = self.ticker.enter();
        let fail = |e: wasmtime::Error| PluginError::Instantiate {
            plugin: self.plugin.to_string(),
            message: format!("{e:#}"),
        };
        let mut instantiate = || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let instance = self.pre.instantiate(&mut store)?;
                self.indices.load(&mut store, &instance)
            }))
        };
        let made = if self.blocking_wasi && on_multi_thread_runtime() {
            tokio::task::block_in_place(instantiate)
        } else {
            instantiate()
        };
        match made {
            Ok(Ok(exports)) => Ok(Slot { store, exports }),
            Ok(Err(e)) => Err(fail(e)),
            Err(panic) => Err(PluginError::Instantiate {
                plugin: self.plugin.to_string(),
                message: format!("a host function panicked: {}", panic_text(&panic)),
            }),
        }
    }

    /// Returns a healthy instance to the idle list, or drops it when enough
    /// are idle already, so a burst (of streams, say) does not leave its
    /// instances and their memory behind.
    pub(crate) fn give_back(&self, slot: Slot) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < max_idle() {
            idle.push(slot);
        } else {
            drop(idle);
            self.discard(slot);
        }
    }

    /// Forgets an instance: one that trapped (its store is unusable) or one
    /// more than the idle list keeps.
    pub(crate) fn discard(&self, slot: Slot) {
        drop(slot);
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Epoch ticks for a deadline in milliseconds (at least two, so a call that
/// starts just before a tick still gets a full period).
pub(crate) fn ticks(ms: u64) -> u64 {
    ms.saturating_mul(1000)
        .div_ceil(TICK.as_micros() as u64)
        .max(1)
        .saturating_add(1)
}

/// Runs one plugin call on a slot under a fresh deadline, turning wasmtime
/// errors into [`PluginError`]s. Any error here is a trap (a guest's own error
/// arrives as `Ok(Err(..))`), after which the slot must be discarded.
pub(crate) fn run<R>(
    slot: &mut Slot,
    pool: &Pool,
    request_id: &Arc<str>,
    deadline_ms: u64,
    call: impl FnOnce(&mut Store<HostState>, &Exports) -> wasmtime::Result<R>,
) -> Result<R, PluginError> {
    let Slot { store, exports } = slot;
    store.data_mut().request_id = request_id.clone();
    store.set_epoch_deadline(ticks(deadline_ms));
    let _running = pool.ticker.enter();
    let plugin = store.data().plugin.clone();
    // A host function that panics unwinds through the guest; it ends this
    // call like a trap instead of the request's task.
    let guarded =
        || std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(store, exports)));
    let outcome = if pool.blocking_wasi && on_multi_thread_runtime() {
        // WASI's stream and poll functions, linked synchronously, block on
        // the async runtime; on a runtime worker that is only allowed inside
        // `block_in_place`. Only components that import `wasi:io` pay for it
        // (those built from Python, JavaScript or for wasm32-wasip2).
        tokio::task::block_in_place(guarded)
    } else {
        guarded()
    };
    match outcome {
        Ok(result) => result.map_err(|e| classify_trap(&plugin, deadline_ms, e)),
        Err(panic) => Err(PluginError::Trap {
            plugin: plugin.to_string(),
            message: format!(
                "a host function panicked during the call: {}",
                panic_text(&panic)
            ),
        }),
    }
}

fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Names the way a call died: deadline, memory cap, or any other trap.
fn classify_trap(plugin: &str, deadline_ms: u64, e: wasmtime::Error) -> PluginError {
    let plugin = plugin.to_string();
    if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return PluginError::Deadline {
            plugin,
            deadline_ms,
        };
    }
    let message = format!("{e:#}");
    if message.contains("forcing trap when growing memory") {
        return PluginError::OutOfMemory { plugin, message };
    }
    PluginError::Trap { plugin, message }
}
