//! The server, its timeouts and the plugin runtime (limits, quarantine, deadlines).

use super::*;

/// The built-in echo upstream `serve` starts when asked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoUpstream {
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Threads serving requests; absent: one per core the process may use.
    pub threads: Option<usize>,
    /// Busy polling after activity, in µs (0: off): see [`crate::busy_poll`].
    #[serde(default)]
    pub busy_poll_us: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body(),
            threads: None,
            busy_poll_us: 0,
        }
    }
}

impl ServerConfig {
    /// Threads serving requests: `threads`, or the cores this process may
    /// run on (its CPU affinity and cgroup quota, as the standard library
    /// reads them).
    pub fn serving_threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
    }
}

/// Upstream timeouts. Kept separate because each catches a different failure:
/// a dead host (connect), a silent upstream that accepted the connection
/// (first byte), a stream that stalls midway (idle), a slow body (total).
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    #[serde(default = "d_connect")]
    pub connect_ms: u64,
    #[serde(default = "d_first_byte")]
    pub first_byte_ms: u64,
    #[serde(default = "d_idle")]
    pub idle_ms: u64,
    #[serde(default = "d_total")]
    pub total_ms: u64,
    /// One request's whole life: every attempt, back-off and wait, and a
    /// stream to its end (top level only; `x-switchyard-timeout-ms`
    /// may shorten it per request).
    #[serde(default = "d_request")]
    pub request_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect_ms: d_connect(),
            first_byte_ms: d_first_byte(),
            idle_ms: d_idle(),
            total_ms: d_total(),
            request_ms: d_request(),
        }
    }
}

impl Timeouts {
    pub fn connect(&self) -> Duration {
        Duration::from_millis(self.connect_ms)
    }
    pub fn first_byte(&self) -> Duration {
        Duration::from_millis(self.first_byte_ms)
    }
    pub fn idle(&self) -> Duration {
        Duration::from_millis(self.idle_ms)
    }
    pub fn total(&self) -> Duration {
        Duration::from_millis(self.total_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    #[serde(default = "default_plugin_dir")]
    pub dir: PathBuf,
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
    #[serde(default = "default_memory_mib")]
    pub memory_limit_mib: u64,
    #[serde(default)]
    pub deadlines_ms: Deadlines,
    #[serde(default = "default_max_instances")]
    pub max_instances: usize,
    /// How long an adapter call may wait for a free instance or a turn on
    /// the plugin runtime before the request gets 503 (its deadline starts
    /// when it runs). Strategies and evaluators wait within their deadline:
    /// their roles fail open.
    #[serde(default = "default_queue_ms")]
    pub queue_ms: u64,
    #[serde(default)]
    pub quarantine: QuarantineConfig,
    /// Per-plugin config blocks, keyed by plugin id.
    #[serde(default)]
    pub config: BTreeMap<String, Value>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: default_plugin_dir(),
            cache_dir: default_cache_dir(),
            memory_limit_mib: default_memory_mib(),
            deadlines_ms: Deadlines::default(),
            max_instances: default_max_instances(),
            queue_ms: default_queue_ms(),
            quarantine: QuarantineConfig::default(),
            config: BTreeMap::new(),
        }
    }
}

/// When a plugin that keeps faulting (traps, deadlines, out of memory) is
/// taken out of service for a while; `faults: 0` turns quarantine off.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QuarantineConfig {
    #[serde(default = "q_faults")]
    pub faults: u32,
    #[serde(default = "q_window")]
    pub window_ms: u64,
    #[serde(default = "q_cooldown")]
    pub cooldown_ms: u64,
}

impl Default for QuarantineConfig {
    fn default() -> Self {
        Self {
            faults: q_faults(),
            window_ms: q_window(),
            cooldown_ms: q_cooldown(),
        }
    }
}

fn q_faults() -> u32 {
    5
}
fn q_window() -> u64 {
    60_000
}
fn q_cooldown() -> u64 {
    60_000
}

/// Per-call deadlines by plugin kind, in milliseconds.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Deadlines {
    #[serde(default = "d_strategy")]
    pub strategy: u64,
    #[serde(default = "d_adapter")]
    pub adapter: u64,
    #[serde(default = "d_evaluator")]
    pub evaluator: u64,
}

impl Default for Deadlines {
    fn default() -> Self {
        Self {
            strategy: d_strategy(),
            adapter: d_adapter(),
            evaluator: d_evaluator(),
        }
    }
}
