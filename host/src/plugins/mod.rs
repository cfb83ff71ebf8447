//! The plugin runtime: loads WebAssembly components from the plugins folder,
//! keeps warm instances, runs each call under a deadline and a memory cap,
//! and hot-reloads the folder.
//!
//! - [`engine`]: wasmtime engine, epoch ticker, linker, compile cache.
//! - [`instance`]: host state and host functions, the instance pool.
//! - [`registry`]: the loaded set (swapped atomically), folder scan, watcher.
//! - [`roles`]: typed calls per plugin kind (strategy, adapter, evaluator).

pub mod bindings;
pub mod engine;
pub mod instance;
pub mod registry;
pub mod roles;

use std::fmt;
use std::sync::Arc;

pub use registry::{Registry, RegistrySettings};
pub use roles::StreamSession;

use instance::{Exports, Pool, Slot};

/// The three plugin kinds; each is one WIT world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Adapter,
    Strategy,
    Evaluator,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Adapter => "adapter",
            Kind::Strategy => "strategy",
            Kind::Evaluator => "evaluator",
        })
    }
}

impl From<bindings::types::PluginKind> for Kind {
    fn from(k: bindings::types::PluginKind) -> Self {
        match k {
            bindings::types::PluginKind::Adapter => Kind::Adapter,
            bindings::types::PluginKind::Strategy => Kind::Strategy,
            bindings::types::PluginKind::Evaluator => Kind::Evaluator,
        }
    }
}

/// Why a plugin file was not loaded. The previous version (if any) keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a WebAssembly component ({0})")]
    NotComponent(&'static str),
    #[error("does not compile: {0}")]
    Compile(String),
    #[error(
        "exports none of the Switchyard plugin interfaces (adapter, strategy, evaluator @0.1.0)"
    )]
    NoPluginExport,
    #[error("exports more than one plugin interface ({0}); a plugin implements exactly one world")]
    SeveralPluginExports(String),
    #[error("cannot be linked: {0}")]
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
    #[error("plugin {plugin:?} is a {actual} plugin, but is used as a {expected}")]
    WrongKind {
        plugin: String,
        expected: Kind,
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
    #[error("plugin {plugin:?} returned an error: {message}")]
    Guest { plugin: String, message: String },
    #[error("plugin {plugin:?} returned an unusable result: {message}")]
    BadOutput { plugin: String, message: String },
}

/// What a plugin says about itself.
#[derive(Clone, Debug)]
pub struct Metadata {
    pub name: String,
    pub version: String,
    pub capabilities: Vec<String>,
}

/// One loaded version of one plugin file.
pub struct Plugin {
    /// File name without `.wasm`; what the config refers to.
    pub id: Arc<str>,
    pub kind: Kind,
    pub metadata: Metadata,
    /// SHA-256 of the file's bytes.
    pub hash: String,
    deadline_ms: u64,
    pool: Pool,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("version", &self.metadata.version)
            .field("hash", &&self.hash[..12])
            .finish()
    }
}

impl Plugin {
    /// Runs `call` on a warm instance under this plugin's deadline. A trapped
    /// instance is discarded; the next call gets a fresh one.
    pub(crate) fn call<R>(
        &self,
        request_id: &Arc<str>,
        call: impl FnOnce(&mut wasmtime::Store<instance::HostState>, &Exports) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let mut slot = self.pool.take()?;
        let result = instance::run(&mut slot, &self.pool, request_id, self.deadline_ms, call);
        self.finish(slot, result.is_ok());
        result
    }

    fn finish(&self, slot: Slot, usable: bool) {
        if usable {
            self.pool.give_back(slot);
        } else {
            tracing::warn!(plugin = %self.id, "discarding trapped plugin instance");
            self.pool.discard(slot);
        }
    }

    fn wrong_kind(&self, expected: Kind) -> PluginError {
        PluginError::WrongKind {
            plugin: self.id.to_string(),
            expected,
            actual: self.kind,
        }
    }
}
