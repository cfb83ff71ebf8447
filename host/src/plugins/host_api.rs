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

/// Everything a plugin's store holds: its identity for logs, its config, its
/// counters, its limits, the deadline of the call in progress and an empty
/// WASI context.
pub struct HostState {
    pub(crate) shared: Arc<Shared>,
    /// The request the current call serves, for log lines.
    pub(crate) request_id: Arc<str>,
    /// When the call in progress must end; read by the epoch callback.
    pub(crate) deadline: Instant,
    pub(crate) limiter: PluginLimiter,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl HostState {
    pub fn new(shared: Arc<Shared>, memory_bytes: usize) -> Self {
        Self {
            shared,
            request_id: Arc::from(""),
            deadline: Instant::now(),
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
