//! The plugin runtime: loads WebAssembly components from the plugins folder,
//! keeps warm instances, runs each call under a wall-clock deadline and
//! resource limits without stalling the gateway, quarantines plugins that
//! keep faulting, and hot-reloads the folder.
//!
//! - [`engine`]: wasmtime engine, epoch ticker, linker.
//! - [`cache`]: the compiled-code cache on disk (owner-only, never planted).
//! - [`abi`]: one module per supported WIT version; the only place that
//!   names generated bindings.
//! - [`host_api`]: host state and the host functions plugins import;
//!   [`limits`]: the bounds on memory, tables, logs and counters.
//! - [`pool`]: warm instances; [`call`]: how a call runs (inline or on the
//!   plugin runtime, deadline, quarantine); [`roles`]: typed calls per kind;
//!   [`stream`]: parsing upstream streams.
//! - [`registry`]: the loaded set (swapped atomically), folder scan, watcher.

pub mod abi;
pub mod cache;
pub mod call;
mod chunks;
pub mod engine;
pub mod host_api;
pub mod limits;
pub mod placement;
pub mod pool;
pub mod registry;
pub mod roles;
pub mod stream;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use registry::{Registry, RegistrySettings};
pub use stream::StreamSession;

use crate::config::QuarantineConfig;
use crate::domain::{Kind, Metadata, WitVersion};
use placement::CallStats;
use pool::Pool;

/// Budget of the first call of a freshly loaded plugin (instantiation and
/// `metadata`): a Python or JavaScript component takes milliseconds.
pub const LOAD_BUDGET: Duration = Duration::from_secs(5);

/// Largest plugin file the host loads.
pub const MAX_PLUGIN_BYTES: u64 = 64 << 20;

/// Why a plugin file was not loaded. The previous version (if any) keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("is {size} bytes, over the {MAX_PLUGIN_BYTES}-byte limit for plugin files")]
    TooBig { size: u64 },
    #[error("not a WebAssembly component ({0})")]
    NotComponent(&'static str),
    #[error("does not compile: {0}")]
    Compile(String),
    #[error(
        "exports none of the Switchyard plugin interfaces (adapter, strategy or evaluator of switchyard:plugin@0.1.0 or @0.2.0)"
    )]
    NoPluginExport,
    #[error(
        "exports {0}, a WIT version this host does not support (supported: switchyard:plugin@0.1.0, @0.2.0)"
    )]
    UnsupportedVersion(String),
    #[error("exports more than one plugin interface ({0}); a plugin implements exactly one world")]
    SeveralPluginExports(String),
    #[error("cannot be linked (it imports something the host does not grant): {0}")]
    Link(String),
    #[error("metadata() failed: {0}")]
    Metadata(PluginError),
    #[error("exports the {exported} interface but its metadata says kind {declared}")]
    KindMismatch { exported: Kind, declared: Kind },
    #[error("is a {actual} plugin, but this id is used as a {expected}")]
    WrongKind { expected: Kind, actual: Kind },
    #[error("plugin engine: {0}")]
    Engine(String),
}

/// A plugin call that did not produce a usable result. Every variant names
/// the plugin, so a log line or an attempt record says who failed and how.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    #[error("plugin {plugin:?} is not loaded{}", .reason.as_ref().map(|r| format!(" (rejected: {r})")).unwrap_or_default())]
    Missing {
        plugin: String,
        reason: Option<String>,
    },
    #[error("plugin {plugin:?} is a {actual} plugin{}", .expected.map(|k| format!(", but is used as a {k}")).unwrap_or_else(|| " and lacks this function".into()))]
    WrongKind {
        plugin: String,
        expected: Option<Kind>,
        actual: Kind,
    },
    #[error("plugin {plugin:?} exceeded its {deadline_ms} ms deadline and was interrupted")]
    Deadline { plugin: String, deadline_ms: u64 },
    #[error("plugin {plugin:?} exceeded its memory limit: {message}")]
    OutOfMemory { plugin: String, message: String },
    #[error("plugin {plugin:?} trapped: {message}")]
    Trap { plugin: String, message: String },
    #[error("plugin {plugin:?} could not be instantiated: {message}")]
    Instantiate { plugin: String, message: String },
    #[error("plugin {plugin:?} is at its limit of {max} concurrent {what}")]
    Busy {
        plugin: String,
        max: usize,
        what: &'static str,
    },
    #[error("plugin {plugin:?} is quarantined for {remaining_ms} ms more after repeated faults")]
    Quarantined { plugin: String, remaining_ms: u64 },
    #[error("plugin {plugin:?} returned an error: {message}")]
    Guest { plugin: String, message: String },
    #[error("plugin {plugin:?} returned an unusable result: {message}")]
    BadOutput { plugin: String, message: String },
}

impl PluginError {
    /// Faults of the plugin's code (they count towards quarantine); a
    /// guest's own error, a busy pool or a missing plugin are not.
    pub fn is_fault(&self) -> bool {
        matches!(
            self,
            PluginError::Deadline { .. }
                | PluginError::OutOfMemory { .. }
                | PluginError::Trap { .. }
                | PluginError::Instantiate { .. }
        )
    }

    /// The gateway itself is saturated: the client should retry later, and
    /// no deployment is to blame.
    pub fn is_saturation(&self) -> bool {
        matches!(self, PluginError::Busy { .. })
    }
}

/// One loaded version of one plugin file.
pub struct Plugin {
    /// File name without `.wasm`; what the config refers to.
    pub id: Arc<str>,
    pub kind: Kind,
    pub wit: WitVersion,
    /// Set once, by the first call after load.
    metadata: std::sync::OnceLock<Metadata>,
    /// SHA-256 of the file's bytes.
    pub hash: String,
    /// What the component imports (interface names), for `plugins check`.
    pub imports: Vec<String>,
    deadline: Duration,
    /// How long a call may wait for an instance or a plugin-runtime turn
    /// before its deadline starts; `None`: the deadline covers the wait too
    /// (strategies and evaluators, whose roles fail open).
    queue: Option<Duration>,
    quarantine: QuarantineConfig,
    pub(crate) stats: CallStats,
    pub(crate) ticker: Arc<engine::EpochTicker>,
    pool: Pool,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("wit", &self.wit)
            .field("version", &self.metadata().version)
            .field("hash", &&self.hash[..12])
            .finish()
    }
}

impl Plugin {
    /// What the plugin said about itself when it was loaded.
    pub fn metadata(&self) -> &Metadata {
        static NONE: std::sync::OnceLock<Metadata> = std::sync::OnceLock::new();
        self.metadata
            .get()
            .unwrap_or_else(|| NONE.get_or_init(Metadata::default))
    }

    /// Its state for operators: `active`, or `quarantined` while cooling down.
    pub fn state(&self) -> PluginState {
        match self.stats.quarantined_for() {
            Some(left) => PluginState::Quarantined {
                remaining_ms: left.as_millis() as u64,
            },
            None => PluginState::Active,
        }
    }

    /// Whether its calls run inline (`None`) or go straight to the plugin
    /// runtime, and for how much longer (it was found slow).
    pub fn offloaded_for(&self) -> Option<Duration> {
        self.stats.offloaded_for()
    }

    /// Calls that ended in a fault (trap, deadline, out of memory) since load.
    pub fn faults(&self) -> u64 {
        self.stats
            .fault_count
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The configured per-call deadline.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }
}

/// A loaded plugin's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginState {
    Active,
    Quarantined { remaining_ms: u64 },
}

impl fmt::Display for PluginState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginState::Active => f.write_str("active"),
            PluginState::Quarantined { remaining_ms } => {
                write!(f, "quarantined ({remaining_ms} ms left)")
            }
        }
    }
}
