//! What a plugin's store holds and the host functions every WIT version
//! imports (log, clock, config, counters), implemented once here; the
//! per-version `Host` traits in `abi/` only convert and delegate.
//!
//! Every host function is bounded: log lines are truncated and rate-limited
//! per plugin, counters are capped per plugin, memory and tables are capped
//! per instance by [`PluginLimiter`].

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limits::{Counters, LogGate, PluginLimiter};
use crate::domain::LogLevel;

/// What every instance of one plugin version shares.
pub struct Shared {
    pub plugin: Arc<str>,
    pub config: Arc<str>,
    pub counters: Arc<Counters>,
    pub logs: Arc<LogGate>,
}

/// When a call must end, shared between its store (read by the epoch
/// callback) and the host, which stops the clock while a call that began
/// inline waits for a turn on the plugin runtime: queueing is the gateway's
/// load, not the plugin's time.
#[derive(Clone, Debug)]
pub(crate) struct CallDeadline(Arc<std::sync::atomic::AtomicU64>);

impl CallDeadline {
    /// A deadline at `when`.
    pub(crate) fn at(when: Instant) -> Self {
        Self(Arc::new(std::sync::atomic::AtomicU64::new(
            when.saturating_duration_since(origin()).as_nanos() as u64,
        )))
    }

    /// Sets the deadline of the next call (each instance keeps one cell).
    pub(crate) fn set(&self, when: Instant) {
        self.0.store(
            when.saturating_duration_since(origin()).as_nanos() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    pub(crate) fn get(&self) -> Instant {
        origin()
            + std::time::Duration::from_nanos(self.0.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Moves the deadline `by` later.
    pub(crate) fn extend(&self, by: std::time::Duration) {
        self.0
            .fetch_add(by.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The instant deadlines count from.
fn origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Everything a plugin's store holds: its identity for logs, its config, its
/// counters, its limits, the deadline of the call in progress and an empty
/// WASI context.
pub struct HostState {
    pub(crate) shared: Arc<Shared>,
    /// The request the current call serves, for log lines.
    pub(crate) request_id: Arc<str>,
    /// When the call in progress must end; read by the epoch callback.
    pub(crate) deadline: CallDeadline,
    pub(crate) limiter: PluginLimiter,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl HostState {
    pub fn new(shared: Arc<Shared>, memory_bytes: usize) -> Self {
        Self {
            shared,
            request_id: Arc::from(""),
            deadline: CallDeadline::at(Instant::now()),
            limiter: PluginLimiter::new(memory_bytes),
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        }
    }

    pub(crate) fn log(&mut self, level: LogLevel, message: String) {
        let Some(admitted) = self.shared.logs.admit(&message) else {
            return;
        };
        let (plugin, request_id) = (&*self.shared.plugin, &*self.request_id);
        let message = &*admitted.message;
        let dropped = admitted.dropped_before;
        macro_rules! emit {
            ($level:ident) => {
                if dropped > 0 {
                    tracing::$level!(plugin, request_id, dropped_lines = dropped, "{message}")
                } else {
                    tracing::$level!(plugin, request_id, "{message}")
                }
            };
        }
        match level {
            LogLevel::Trace => emit!(trace),
            LogLevel::Debug => emit!(debug),
            LogLevel::Info => emit!(info),
            LogLevel::Warn => emit!(warn),
            LogLevel::Error => emit!(error),
        }
    }

    pub(crate) fn monotonic_now(&mut self) -> u64 {
        process_start().elapsed().as_nanos() as u64
    }

    pub(crate) fn plugin_config(&mut self) -> String {
        self.shared.config.to_string()
    }

    pub(crate) fn counter_next(&mut self, name: &str) -> Result<u64, String> {
        self.shared.counters.next(name).inspect_err(|e| {
            if let Some(admitted) = self.shared.logs.admit(e) {
                tracing::warn!(plugin = %self.shared.plugin, request_id = %self.request_id,
                    "counter-next refused: {}", admitted.message);
            }
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn process_start() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}
