//! The wasmtime engine every plugin runs on: epoch interruption for per-call
//! deadlines, a ticker thread driving the epoch, the linker with the host
//! interface (and a WASI that grants nothing), and a compile cache on disk.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::LoadError;
use super::bindings::HostView;
use super::instance::HostState;

/// Resolution of plugin deadlines: the epoch advances once per tick. Deadlines
/// are tens of milliseconds; a coarser tick would make them imprecise, a finer
/// one would wake an idle gateway more often for nothing.
pub const TICK: Duration = Duration::from_millis(5);

/// Engine, linker and compile cache shared by every plugin.
pub struct PluginEngine {
    pub(crate) engine: Engine,
    pub(crate) ticker: Arc<EpochTicker>,
    pub(crate) linker: Linker<HostState>,
    cache_dir: PathBuf,
    /// Part of every cache key: compiled code is only valid for the same
    /// wasmtime build and code-affecting settings.
    engine_fingerprint: u64,
}

impl PluginEngine {
    /// Builds the engine and starts its epoch ticker.
    pub fn new(cache_dir: &Path) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(e.to_string()))?;

        let ticker = EpochTicker::start(&engine)?;

        let mut linker = Linker::new(&engine);
        HostView::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        // Components built from other languages import WASI. Link it, but the
        // context grants nothing beyond clocks and randomness: no preopened
        // directories, no environment, no arguments, no sockets.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| LoadError::Engine(e.to_string()))?;

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            engine,
            ticker,
            linker,
            cache_dir: cache_dir.to_owned(),
            engine_fingerprint: hasher.finish(),
        })
    }

    /// Compiles a component, or loads its compiled code from the cache.
    ///
    /// A restart must not recompile: compiling a small Rust plugin costs
    /// ~80 ms, a Python or JavaScript one tens of seconds, loading it from the
    /// cache well under a millisecond.
    pub fn compile(&self, bytes: &[u8], content_hash: &str) -> Result<Component, LoadError> {
        let cache_file = self.cache_dir.join(format!(
            "{content_hash}-{:016x}.cwasm",
            self.engine_fingerprint
        ));
        if cache_file.exists() {
            // SAFETY: files in the cache directory are written only by
            // `store_in_cache` below from `Engine::precompile_component` output,
            // under a name that includes this engine's compatibility hash, and
            // are never modified in place (written to a temp name, then renamed).
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize_file(&self.engine, &cache_file) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!(
                    cache = %cache_file.display(),
                    "compiled plugin cache entry unusable, recompiling: {e}"
                ),
            }
        }
        let compiled = self
            .engine
            .precompile_component(bytes)
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        if let Err(e) = store_in_cache(&cache_file, &compiled) {
            tracing::warn!(cache = %cache_file.display(), "cannot write compiled plugin cache: {e}");
        }
        // SAFETY: `compiled` was produced just above by this engine's
        // `precompile_component`.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.engine, &compiled) }
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        Ok(component)
    }
}

/// The hex SHA-256 of a plugin's bytes: its identity in the cache and in logs.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Write-then-rename: the cache is memory-mapped when read, so a file must
/// never change under a reader.
fn store_in_cache(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Advances the engine's epoch every [`TICK`] while plugin code may be
/// running, and parks otherwise: an idle gateway does not wake up 200 times a
/// second for nothing. Every guest entry holds an [`Entered`] guard.
pub struct EpochTicker {
    active: Arc<AtomicUsize>,
    thread: std::thread::Thread,
}

impl EpochTicker {
    /// Starts the ticker thread. It holds only a weak reference to the engine,
    /// so it ends when the engine is dropped.
    fn start(engine: &Engine) -> Result<Arc<Self>, LoadError> {
        let weak = engine.weak();
        let active = Arc::new(AtomicUsize::new(0));
        let running = active.clone();
        let handle = std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                loop {
                    if running.load(Ordering::SeqCst) == 0 {
                        // Woken by `enter`; the timeout only bounds how long
                        // a dropped engine keeps this thread alive.
                        std::thread::park_timeout(Duration::from_secs(1));
                    }
                    let Some(engine) = weak.upgrade() else {
                        return;
                    };
                    if running.load(Ordering::SeqCst) > 0 {
                        engine.increment_epoch();
                        drop(engine);
                        std::thread::sleep(TICK);
                    }
                }
            })
            .map_err(|e| LoadError::Engine(format!("cannot start epoch ticker: {e}")))?;
        Ok(Arc::new(Self {
            active,
            thread: handle.thread().clone(),
        }))
    }

    /// Marks guest code as running until the guard drops.
    pub fn enter(&self) -> Entered<'_> {
        if self.active.fetch_add(1, Ordering::SeqCst) == 0 {
            self.thread.unpark();
        }
        Entered(self)
    }
}

/// Guest code may be running while this lives.
pub struct Entered<'a>(&'a EpochTicker);

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}
