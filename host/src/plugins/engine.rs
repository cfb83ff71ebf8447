//! The wasmtime engine every plugin runs on: async calls with epoch
//! interruption for per-call deadlines, a ticker thread driving the epoch,
//! the linker with every supported version's host interface (and a WASI that
//! grants nothing), and the compile cache on disk.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

use super::LoadError;
use super::abi;
use super::cache::CodeCache;
use super::host_api::HostState;

/// Resolution of plugin deadlines: the epoch advances once per tick. Deadlines
/// are tens of milliseconds; a coarser tick would make them imprecise, a finer
/// one would wake an idle gateway more often for nothing.
pub const TICK: Duration = Duration::from_millis(5);

/// Engine, linker and compile cache shared by every plugin.
pub struct PluginEngine {
    pub(crate) engine: Engine,
    pub(crate) ticker: Arc<EpochTicker>,
    pub(crate) linker: Linker<HostState>,
    pub(crate) cache: CodeCache,
}

impl PluginEngine {
    /// Builds the engine and starts its epoch ticker.
    pub fn new(cache_dir: &Path) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        // `SWITCHYARD_WASM_PROFILER=perfmap` names guest functions for
        // `perf` (/tmp/perf-<pid>.map), to profile plugin code in place.
        if std::env::var("SWITCHYARD_WASM_PROFILER").as_deref() == Ok("perfmap") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(e.to_string()))?;

        let ticker = EpochTicker::start(&engine)?;

        let mut linker = Linker::new(&engine);
        abi::add_to_linker(&mut linker).map_err(|e| LoadError::Engine(e.to_string()))?;
        // Components built from other languages import WASI. Link it, but the
        // context grants nothing beyond clocks and randomness: no preopened
        // directories, no environment, no arguments, no sockets. Linked async,
        // so a guest waiting in `poll` or a sleep is cut off at its deadline.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        let cache = CodeCache::open(cache_dir);
        Ok(Self {
            engine,
            ticker,
            linker,
            cache,
        })
    }

    /// Compiles a component, or loads its compiled code from the cache.
    ///
    /// A restart must not recompile: compiling a small Rust plugin costs
    /// ~80 ms, a Python or JavaScript one tens of seconds, loading it from the
    /// cache well under a millisecond.
    pub fn compile(&self, bytes: &[u8], content_hash: &str) -> Result<Component, LoadError> {
        self.cache
            .load_or_compile(&self.engine, bytes, content_hash)
            .map_err(LoadError::Compile)
    }
}

/// The hex SHA-256 of a plugin's bytes: its identity in the cache and in logs.
pub fn content_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Advances the engine's epoch every [`TICK`] while plugin code may be
/// running, and for [`IDLE_GRACE`] after; then parks: an idle gateway does not
/// wake up 200 times a second for nothing. Every guest entry holds an
/// [`Entered`] guard.
///
/// Entering costs two atomic operations: only an entry that finds the ticker
/// parked wakes it (a system call and a thread wake-up, once per idle
/// period, not once per call), and a woken ticker waits a whole tick before
/// its first increment, so the call that woke it is not interrupted at once.
pub struct EpochTicker {
    active: Arc<AtomicUsize>,
    parked: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::Thread,
}

/// How long the ticker keeps ticking after the last call ended.
pub const IDLE_GRACE: Duration = Duration::from_millis(250);

impl EpochTicker {
    /// Starts the ticker thread. It holds only a weak reference to the engine,
    /// so it ends when the engine is dropped.
    fn start(engine: &Engine) -> Result<Arc<Self>, LoadError> {
        let weak = engine.weak();
        let active = Arc::new(AtomicUsize::new(0));
        let parked = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (running, asleep) = (active.clone(), parked.clone());
        let idle_ticks = (IDLE_GRACE.as_millis() / TICK.as_millis()) as u32;
        let handle = std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                let mut idle = 0u32;
                loop {
                    if running.load(Ordering::SeqCst) == 0 {
                        idle += 1;
                        if idle > idle_ticks {
                            asleep.store(true, Ordering::SeqCst);
                            // Re-checked after announcing (an entry in between
                            // saw `parked` false and did not unpark), and after
                            // every wake-up: only an entry ends the sleep. The
                            // timeout only bounds how long a dropped engine
                            // keeps this thread alive; waking for it costs no
                            // tick (it used to restart the grace period: 51
                            // ticks a second on an idle gateway).
                            while running.load(Ordering::SeqCst) == 0 {
                                std::thread::park_timeout(Duration::from_secs(1));
                                if weak.upgrade().is_none() {
                                    return;
                                }
                            }
                            asleep.store(false, Ordering::SeqCst);
                            idle = 0;
                        }
                    } else {
                        idle = 0;
                    }
                    std::thread::sleep(TICK);
                    let Some(engine) = weak.upgrade() else {
                        return;
                    };
                    engine.increment_epoch();
                }
            })
            .map_err(|e| LoadError::Engine(format!("cannot start epoch ticker: {e}")))?;
        Ok(Arc::new(Self {
            active,
            parked,
            thread: handle.thread().clone(),
        }))
    }

    /// Marks guest code as running until the guard drops.
    pub fn enter(&self) -> Entered<'_> {
        self.active.fetch_add(1, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// An idle ticker stays parked: its one-second wake-ups (to notice a
    /// dropped engine) tick nothing and do not restart the grace period.
    #[test]
    fn an_idle_ticker_stays_parked() {
        let engine = Engine::default();
        let ticker = EpochTicker::start(&engine).expect("ticker");
        drop(ticker.enter());
        let parked = || ticker.parked.load(Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(2);
        while !parked() {
            assert!(Instant::now() < deadline, "the ticker never parked");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Across at least one park timeout.
        let until = Instant::now() + Duration::from_millis(1300);
        while Instant::now() < until {
            assert!(parked(), "the ticker woke up with nothing running");
            std::thread::sleep(Duration::from_millis(2));
        }
        // An entry still wakes it.
        let _running = ticker.enter();
        let deadline = Instant::now() + Duration::from_secs(2);
        while parked() {
            assert!(
                Instant::now() < deadline,
                "an entry did not wake the ticker"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
