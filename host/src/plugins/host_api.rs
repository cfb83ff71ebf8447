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
    pub random: Random,
}

/// A plugin's stream of random numbers (`random-u64`): SplitMix64 over an
/// atomic counter, so every instance of the plugin draws from one stream
/// without a lock. Seeded from the OS, or from `SWITCHYARD_PLUGIN_SEED`
/// (mixed with the plugin id) so a test run replays the same choices.
/// Statistical quality, not secrecy: plugins never hold secrets.
pub struct Random(std::sync::atomic::AtomicU64);

impl Random {
    pub fn for_plugin(id: &str) -> Self {
        let seed = std::env::var("SWITCHYARD_PLUGIN_SEED")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok());
        Self::seeded(seed, id)
    }

    /// The stream of plugin `id`: from `seed` when given, else from the OS.
    pub fn seeded(seed: Option<u64>, id: &str) -> Self {
        use std::hash::{BuildHasher, Hasher};
        let seed = match seed {
            Some(seed) => {
                // Fixed, not the std hasher's per-process keys: FNV-1a of the id.
                let id_hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
                seed ^ id_hash
            }
            None => {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write(id.as_bytes());
                h.finish()
            }
        };
        Random(std::sync::atomic::AtomicU64::new(seed))
    }

    pub fn next(&self) -> u64 {
        let x = self
            .0
            .fetch_add(0x9e37_79b9_7f4a_7c15, std::sync::atomic::Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        let x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        let x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }
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

    pub(crate) fn random_u64(&mut self) -> u64 {
        self.shared.random.next()
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

#[cfg(test)]
mod tests {
    use super::Random;

    #[test]
    fn a_seeded_stream_replays_and_differs_per_plugin() {
        let draws = |r: &Random| (0..4).map(|_| r.next()).collect::<Vec<_>>();
        let a = draws(&Random::seeded(Some(7), "weighted"));
        assert_eq!(a, draws(&Random::seeded(Some(7), "weighted")));
        assert_ne!(a, draws(&Random::seeded(Some(7), "latency")));
        assert_ne!(a, draws(&Random::seeded(Some(8), "weighted")));
        assert_ne!(
            draws(&Random::seeded(None, "w")),
            draws(&Random::seeded(None, "w"))
        );
        // Roughly uniform: each of 8 buckets within 10 % of its share.
        let r = Random::seeded(Some(1), "p");
        let mut buckets = [0u32; 8];
        for _ in 0..80_000 {
            buckets[(r.next() >> 61) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (9_000..11_000).contains(&n)),
            "{buckets:?}"
        );
    }
}
