//! The set of loaded plugins and how it changes.
//!
//! The set is an immutable map swapped atomically (`ArcSwap`): a request takes
//! the `Arc<Plugin>` it needs and finishes on that version even if the file is
//! replaced meanwhile. A new version is compiled *and* instantiated (its
//! metadata checked) before the swap, so a corrupt, half-written or wrong-kind
//! file is refused with one log line while the previous version keeps serving.
//!
//! Hot reload watches the folder (not the files: a rename gives the path a new
//! inode), debounces bursts of events, then reconciles the folder with the
//! loaded set: files whose size or mtime changed are re-read, and only those
//! whose content hash changed are reloaded.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};

use super::abi::{self, Indices};
use super::engine::{PluginEngine, content_hash};
use super::host_api::Shared;
use super::limits::{Counters, LogGate};
use super::placement::{CallStats, plugin_runtime};
use super::pool::{InstanceLimits, Pool};
use super::{LoadError, MAX_PLUGIN_BYTES, Plugin, PluginError};
use crate::config::{Config, Deadlines, QuarantineConfig};
use crate::domain::Kind;

/// What the registry needs from the config.
#[derive(Clone, Debug)]
pub struct RegistrySettings {
    pub dir: PathBuf,
    pub cache_dir: PathBuf,
    pub limits: InstanceLimits,
    pub deadlines: Deadlines,
    /// How long an adapter call may queue (see `plugins.queue_ms`).
    pub adapter_queue: Duration,
    pub quarantine: QuarantineConfig,
    /// Plugin id → its config as JSON text.
    pub plugin_config: HashMap<String, Arc<str>>,
    /// Plugin id → the kind the config uses it as. A file of another kind
    /// under that id is refused rather than silently breaking the route.
    pub expected_kinds: HashMap<String, Kind>,
}

impl From<&Config> for RegistrySettings {
    fn from(config: &Config) -> Self {
        let c = &config.plugins;
        Self {
            dir: c.dir.clone(),
            cache_dir: c.cache_dir.clone(),
            limits: InstanceLimits {
                memory_bytes: (c.memory_limit_mib << 20) as usize,
                max_instances: c.max_instances,
            },
            deadlines: c.deadlines_ms,
            adapter_queue: Duration::from_millis(c.queue_ms),
            quarantine: c.quarantine,
            plugin_config: c
                .config
                .iter()
                .map(|(k, v)| (k.clone(), Arc::from(v.to_string())))
                .collect(),
            expected_kinds: config
                .plugin_references()
                .into_iter()
                .map(|(id, kind, _)| (id, kind))
                .collect(),
        }
    }
}

/// Size and modification time: a cheap "did this file change" test.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

/// What a plugin id keeps across versions: its counters and its log budget.
type PerId = (Arc<Counters>, Arc<LogGate>);

/// All loaded plugins, by id.
pub struct Registry {
    engine: PluginEngine,
    /// Swapped by a config reload (the folders stay: they need a restart).
    settings: ArcSwap<RegistrySettings>,
    loaded: ArcSwap<HashMap<String, Arc<Plugin>>>,
    /// Why a file was refused, by id, until it loads cleanly.
    rejected: ArcSwap<BTreeMap<String, String>>,
    /// Host-held counters and log gates by plugin id; they outlive plugin
    /// versions (a reload neither resets a rotation nor a log budget).
    per_id: Mutex<HashMap<String, PerId>>,
    stamps: Mutex<HashMap<String, Stamp>>,
    /// Serialises folder scans (start-up, watcher, tests).
    scan_lock: Mutex<()>,
}

impl Registry {
    /// Creates the engine and loads every plugin in the folder.
    pub fn new(settings: RegistrySettings) -> Result<Arc<Self>, LoadError> {
        let engine = PluginEngine::new(&settings.cache_dir)?;
        let registry = Arc::new(Self {
            engine,
            settings: ArcSwap::from_pointee(settings),
            loaded: ArcSwap::default(),
            rejected: ArcSwap::default(),
            per_id: Mutex::default(),
            stamps: Mutex::default(),
            scan_lock: Mutex::new(()),
        });
        registry.scan();
        Ok(registry)
    }

    /// The plugin with this id, if it is loaded and of the expected kind.
    pub fn get(&self, id: &str, kind: Kind) -> Result<Arc<Plugin>, PluginError> {
        match self.loaded.load().get(id) {
            Some(p) if p.kind == kind => Ok(p.clone()),
            Some(p) => Err(PluginError::WrongKind {
                plugin: id.to_string(),
                expected: Some(kind),
                actual: p.kind,
            }),
            None => Err(PluginError::Missing {
                plugin: id.to_string(),
                reason: self.rejected.load().get(id).cloned(),
            }),
        }
    }

    /// Every loaded plugin, sorted by id.
    pub fn loaded(&self) -> Vec<Arc<Plugin>> {
        let mut all: Vec<_> = self.loaded.load().values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// The folder it loads (the one it started with: a new `plugins.dir`
    /// takes effect at the next start).
    pub fn dir(&self) -> PathBuf {
        self.settings.load().dir.clone()
    }

    /// Files that were refused and why, by id.
    pub fn rejected(&self) -> BTreeMap<String, String> {
        (**self.rejected.load()).clone()
    }

    /// Reconciles the folder with the loaded set. Safe to call at any time.
    pub fn scan(&self) {
        let _guard = self.scan_lock.lock().unwrap_or_else(|p| p.into_inner());
        let settings = self.settings.load();
        let dir = &settings.dir;
        let files = match wasm_files(dir) {
            Ok(files) => files,
            Err(e) => {
                tracing::error!(dir = %dir.display(), "cannot read plugin folder: {e}");
                return;
            }
        };
        let current = self.loaded.load_full();
        let mut next = (*current).clone();
        let mut rejected = (**self.rejected.load()).clone();
        let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        let mut changed = false;

        for (id, path) in &files {
            let stamp = match std::fs::metadata(path) {
                Ok(m) => Stamp {
                    len: m.len(),
                    modified: m.modified().ok(),
                },
                Err(_) => continue, // removed between listing and stat
            };
            if stamps.get(id) == Some(&stamp) {
                continue;
            }
            stamps.insert(id.clone(), stamp);
            match self.load_file(id, path, current.get(id), false) {
                Ok(None) => {}
                Ok(Some(plugin)) => {
                    let previous = current.get(id).map(|p| p.hash[..12].to_string());
                    tracing::info!(
                        plugin = %id,
                        kind = %plugin.kind,
                        wit = %plugin.wit,
                        name = %plugin.metadata().name,
                        version = %plugin.metadata().version,
                        hash = &plugin.hash[..12],
                        previous = previous.as_deref().unwrap_or("-"),
                        "plugin loaded"
                    );
                    rejected.remove(id);
                    next.insert(id.clone(), plugin);
                    changed = true;
                }
                Err(e) => {
                    if matches!(e, LoadError::Io(_)) {
                        // Perhaps unreadable for now (permissions fixed later
                        // change no size or mtime): try again next scan.
                        stamps.remove(id);
                    }
                    let keeps = if current.contains_key(id) {
                        "; the previous version keeps serving"
                    } else {
                        ""
                    };
                    tracing::error!(plugin = %id, file = %path.display(), "plugin rejected: {e}{keeps}");
                    rejected.insert(id.clone(), e.to_string());
                }
            }
        }
        for id in current.keys() {
            if !files.contains_key(id) {
                tracing::info!(plugin = %id, "plugin removed (its file is gone)");
                next.remove(id);
                stamps.remove(id);
                changed = true;
            }
        }
        rejected.retain(|id, _| files.contains_key(id));
        stamps.retain(|id, _| files.contains_key(id));
        if changed {
            let keep = next.values().map(|p| p.hash.clone()).collect();
            self.engine.cache.prune(&keep);
            self.loaded.store(Arc::new(next));
        }
        self.rejected.store(Arc::new(rejected));
    }

    /// Loads one file; `Ok(None)` when its content equals the loaded version.
    fn load_file(
        &self,
        id: &str,
        path: &Path,
        loaded: Option<&Arc<Plugin>>,
        fresh: bool,
    ) -> Result<Option<Arc<Plugin>>, LoadError> {
        let size = std::fs::metadata(path)?.len();
        if size > MAX_PLUGIN_BYTES {
            return Err(LoadError::TooBig { size });
        }
        let bytes = std::fs::read(path)?;
        let hash = content_hash(&bytes);
        if !fresh && loaded.is_some_and(|p| p.hash == hash) {
            return Ok(None);
        }
        check_header(&bytes)?;
        let engine = &self.engine;
        let component = engine.compile(&bytes, &hash)?;
        let (wit, kind) = abi::identify(&engine.engine, &component)?;
        let settings = self.settings.load();
        let expected = settings
            .expected_kinds
            .get(id)
            .copied()
            .or(loaded.map(|p| p.kind));
        if let Some(expected) = expected.filter(|k| *k != kind) {
            return Err(LoadError::WrongKind {
                expected,
                actual: kind,
            });
        }
        let imports = component
            .component_type()
            .imports(&engine.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let pre = engine
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let indices =
            Indices::new(wit, kind, &pre).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let id: Arc<str> = Arc::from(id);
        let config = settings
            .plugin_config
            .get(&*id)
            .cloned()
            .unwrap_or_else(|| Arc::from("{}"));
        let (counters, logs) = self.per_id(&id);
        let shared = Arc::new(Shared {
            random: crate::plugins::host_api::Random::for_plugin(&id),
            plugin: id.clone(),
            config,
            counters,
            logs,
        });
        let pool = Pool::new(shared, pre, indices, settings.limits.clone());
        let deadline_ms = match kind {
            Kind::Adapter => settings.deadlines.adapter,
            Kind::Strategy => settings.deadlines.strategy,
            Kind::Evaluator => settings.deadlines.evaluator,
        };
        let plugin = Arc::new(Plugin {
            id,
            kind,
            wit,
            metadata: std::sync::OnceLock::new(),
            hash,
            imports,
            deadline: Duration::from_millis(deadline_ms),
            queue: (kind == Kind::Adapter).then_some(settings.adapter_queue),
            quarantine: settings.quarantine,
            stats: CallStats::default(),
            ticker: self.engine.ticker.clone(),
            pool,
        });
        // Instantiates the first instance (kept warm in the pool) and asks the
        // plugin who it is, so a broken plugin fails here and not on a request.
        let probe = plugin.clone();
        let (meta, declared) =
            block_on(async move { probe.fetch_metadata().await }).map_err(LoadError::Metadata)?;
        if let Some(declared) = declared.filter(|d| *d != kind) {
            return Err(LoadError::KindMismatch {
                exported: kind,
                declared,
            });
        }
        let _ = plugin.metadata.set(meta);
        Ok(Some(plugin))
    }

    fn per_id(&self, id: &str) -> (Arc<Counters>, Arc<LogGate>) {
        self.per_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_string())
            .or_insert_with(|| (Arc::new(Counters::new()), Arc::new(LogGate::default())))
            .clone()
    }

    /// Takes a reloaded config's plugin settings. A loaded plugin whose
    /// config block changed (or every plugin, when limits, deadlines,
    /// queueing or quarantine changed) is loaded again from its file: fresh
    /// instances, initialised with the new config. Files refused before are
    /// looked at again (the kind the config expects may have changed).
    /// Returns the ids reloaded. Blocking: call it off the async runtime.
    pub fn reconfigure(&self, new: RegistrySettings) -> Vec<String> {
        let mut reloaded = Vec::new();
        {
            let _guard = self.scan_lock.lock().unwrap_or_else(|p| p.into_inner());
            let old = self.settings.load_full();
            let everything = old.limits != new.limits
                || old.deadlines != new.deadlines
                || old.adapter_queue != new.adapter_queue
                || old.quarantine != new.quarantine;
            if old.dir != new.dir || old.cache_dir != new.cache_dir {
                tracing::warn!(
                    "plugins.dir and plugins.cache_dir take effect at the next start; the running gateway keeps {}",
                    old.dir.display()
                );
            }
            let kept = RegistrySettings {
                dir: old.dir.clone(),
                cache_dir: old.cache_dir.clone(),
                ..new
            };
            let kept = Arc::new(kept);
            self.settings.store(kept.clone());
            let changed =
                |id: &str| everything || old.plugin_config.get(id) != kept.plugin_config.get(id);
            let current = self.loaded.load_full();
            let mut next = (*current).clone();
            for (id, plugin) in current.iter() {
                if !changed(id) {
                    continue;
                }
                let path = kept.dir.join(format!("{id}.wasm"));
                match self.load_file(id, &path, Some(plugin), true) {
                    Ok(Some(fresh)) => {
                        next.insert(id.clone(), fresh);
                        reloaded.push(id.clone());
                    }
                    Ok(None) => {}
                    Err(e) => tracing::error!(plugin = %id,
                        "plugin not reconfigured: {e}; the previous instances keep serving"),
                }
            }
            self.loaded.store(Arc::new(next));
            let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
            for id in self.rejected.load().keys() {
                stamps.remove(id);
            }
        }
        self.scan();
        reloaded
    }

    /// Whether the compiled-code cache is in use, and why not.
    pub fn cache_disabled_reason(&self) -> Option<&str> {
        self.engine.cache.disabled_reason()
    }

    /// Watches the plugin folder and rescans it after each burst of changes.
    /// The returned watcher must be kept alive; dropping it stops the watch.
    pub fn watch(self: &Arc<Self>) -> notify::Result<notify::RecommendedWatcher> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                // Any event rescans (debounced): a deploy may swap a
                // symlinked folder rather than touch a `.wasm` name, and an
                // unchanged file costs one stat.
                // Not accesses: loading a plugin reads its file.
                Ok(e) if e.kind.is_access() => {}
                Ok(_) => {
                    let _ = tx.send(());
                }
                Err(e) => tracing::warn!("plugin folder watch error: {e}"),
            })?;
        watcher.watch(&self.settings.load().dir, RecursiveMode::NonRecursive)?;
        let registry = Arc::downgrade(self);
        tokio::spawn(async move {
            while crate::watch::next_burst(&mut rx).await {
                let Some(registry) = registry.upgrade() else {
                    return;
                };
                if let Err(e) = tokio::task::spawn_blocking(move || registry.scan()).await {
                    tracing::error!("plugin folder scan panicked: {e}");
                }
            }
        });
        Ok(watcher)
    }
}

fn is_wasm(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
}

/// `*.wasm` files of the folder, by id (file stem).
fn wasm_files(dir: &Path) -> std::io::Result<BTreeMap<String, PathBuf>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if is_wasm(&path)
            && path.is_file()
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            files.insert(stem.to_string(), path);
        }
    }
    Ok(files)
}

/// Refuses files that are not components before handing them to the compiler,
/// with a message a user can act on.
fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0, 1, 0]) => Ok(()),
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(LoadError::NotComponent(
            "a core wasm module; build it as a component (e.g. wasm32-wasip2 or wasm-tools component new)",
        )),
        Some([0, b'a', b's', b'm', ..]) => Err(LoadError::NotComponent("unknown wasm version")),
        _ => Err(LoadError::NotComponent("no wasm header")),
    }
}

/// Runs a plugin future to completion from synchronous code (loading runs
/// on start-up and on the watcher's blocking thread), on the plugin runtime.
fn block_on<R: Send + 'static>(work: impl std::future::Future<Output = R> + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    plugin_runtime().spawn(async move {
        let out = work.await;
        let _ = tx.send(out);
    });
    rx.recv().expect("the plugin runtime dropped a load task")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_names_the_problem() {
        assert!(check_header(b"\0asm\x0d\0\x01\0rest").is_ok());
        let core = check_header(b"\0asm\x01\0\0\0").unwrap_err().to_string();
        assert!(core.contains("core wasm module"), "{core}");
        let junk = check_header(b"hello world").unwrap_err().to_string();
        assert!(junk.contains("no wasm header"), "{junk}");
        assert!(check_header(b"").is_err());
    }
}
