//! The config as a live service: the running [`Gateway`] is swapped whole
//! (`ArcSwap`) when the config file, its overlay or its `.env` changes, on
//! `SIGHUP`, or on `POST /admin/reload`.
//!
//! A new config is read, validated and resolved completely (routes,
//! deployments, plugin configs, keys from the environment) before the swap;
//! one that fails is refused with one log line per problem and the running
//! one keeps serving. A request (and a stream) finishes on the gateway it
//! started with: it holds that `Arc`. What must survive a reload is carried
//! across by name: each deployment's health (circuit, cool-down, averages),
//! plugin counters, and the upstream connection pools.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, ConfigError};
use crate::pipeline::Gateway;
use crate::pipeline::Sinks;
use crate::plugins::RegistrySettings;

/// The running gateway and how to replace it.
pub struct Live {
    current: ArcSwap<Gateway>,
    /// The config file; `None` for a gateway built in process (tests).
    path: Option<PathBuf>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    /// Where requests' records go: the process's, whatever the config.
    sinks: Arc<Sinks>,
}

impl Live {
    /// A gateway reloaded from `path`, its records going to `sinks`.
    pub fn new(gateway: Gateway, path: &Path, sinks: Arc<Sinks>) -> Arc<Self> {
        let gateway = Arc::new(gateway);
        gateway.start_health_checks(&sinks);
        Arc::new(Self {
            current: ArcSwap::new(gateway),
            path: Some(path.to_owned()),
            reloading: tokio::sync::Mutex::new(()),
            sinks,
        })
    }

    /// A gateway that is never reloaded (benchmarks, in-process tests).
    pub fn fixed(gateway: Gateway, sinks: Arc<Sinks>) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(gateway),
            path: None,
            reloading: tokio::sync::Mutex::new(()),
            sinks,
        })
    }

    /// Where requests' records go.
    pub fn sinks(&self) -> &Arc<Sinks> {
        &self.sinks
    }

    /// The gateway a new request runs on.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.current.load_full()
    }

    /// Reads the config again and swaps it in; `trigger` says why (logged).
    /// On success, a one-line summary of what changed; on failure, the
    /// problems (each also logged), and nothing changed.
    pub async fn reload(self: &Arc<Self>, trigger: &str) -> Result<String, Vec<String>> {
        // A task of its own: a caller that goes away (an HTTP client timing
        // out, a shutdown) must not cancel a reload halfway, between the
        // plugins' reconfiguration and the swap.
        let live = self.clone();
        let trigger = trigger.to_owned();
        tokio::spawn(async move { live.reload_now(&trigger).await })
            .await
            .unwrap_or_else(|e| Err(vec![format!("reload failed: {e}")]))
    }

    async fn reload_now(&self, trigger: &str) -> Result<String, Vec<String>> {
        let _one = self.reloading.lock().await;
        let Some(path) = self.path.clone() else {
            return Err(vec![
                "this gateway was not started from a config file".into(),
            ]);
        };
        let old = self.gateway();
        let registry = old.registry().clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let config = Config::load(&path).map_err(problems)?;
            let plugins = registry.reconfigure(RegistrySettings::from(&config));
            Ok::<_, Vec<String>>((config, plugins))
        })
        .await
        .map_err(|e| vec![format!("reload panicked: {e}")])
        .and_then(|r| r);
        let (config, plugins) = match loaded {
            Ok(done) => done,
            Err(problems) => {
                self.sinks.metrics.reload(false);
                for p in &problems {
                    tracing::error!(trigger, "config reload refused: {}", p.trim());
                }
                tracing::error!(trigger, "the running config keeps serving");
                return Err(problems);
            }
        };
        let new = match Gateway::build(&config, old.registry().clone(), Some(&old)) {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(
                    trigger,
                    "config reload refused: {e}; the running config keeps serving"
                );
                return Err(vec![e]);
            }
        };
        for what in restart_only(old.config(), &config) {
            tracing::warn!(trigger, "{what} changed: it takes effect at the next start");
        }
        for warning in crate::ops::config_warnings(&config, old.registry()) {
            tracing::warn!(trigger, "{warning}");
        }
        let mut summary = summary(old.config(), &config, &plugins);
        let keys = new.keys_changed(&old);
        if !keys.is_empty() {
            let keys = format!("keys changed: {}", keys.join(", "));
            summary = if summary == "no change" {
                keys
            } else {
                format!("{summary}; {keys}")
            };
        }
        self.sinks.monitor.set_settings(config.monitor);
        // A budget new or changed here starts from the spend on record, read
        // before it is in force.
        if let Some(store) = self.sinks.store.clone() {
            let (sinks, defs) = (self.sinks.clone(), config.budgets.clone());
            let restored = tokio::task::spawn_blocking(move || {
                let before = sinks.budgets.defs();
                sinks.budgets.restore_from(&store, &defs, Some(&before));
            })
            .await;
            if let Err(e) = restored {
                tracing::warn!(trigger, "budget spend not read back after the reload: {e}");
            }
        }
        self.sinks.budgets.set(config.budgets.clone());
        if let Some(cache) = &self.sinks.cache {
            cache.configure(&config.cache);
        }
        self.sinks.budgets.share_through(new.shared());
        let new = Arc::new(new);
        new.start_health_checks(&self.sinks);
        self.current.store(new);
        old.retire();
        tracing::info!(trigger, "config reloaded: {summary}");
        self.sinks.metrics.reload(true);
        Ok(summary)
    }

    /// Reloads when the config file, its overlay or the `.env` beside it
    /// changes (debounced). The watcher must be kept alive.
    pub fn watch(self: &Arc<Self>) -> notify::Result<Option<notify::RecommendedWatcher>> {
        use notify::{RecursiveMode, Watcher};
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned();
        // The config file, any overlay of it, the `.env`, and `..data`: a
        // Kubernetes ConfigMap is updated by swapping that symlink. Exact
        // names only: a log written beside the config must not reload it.
        let file = path
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = path
            .extension()
            .map(|s| format!(".{}", s.to_string_lossy()))
            .unwrap_or_default();
        let watched = move |p: &Path| {
            p.file_name().is_some_and(|name| {
                let name = name.to_string_lossy();
                name == file
                    || name == ".env"
                    || name == "..data"
                    || name
                        .strip_prefix(&format!("{stem}."))
                        .and_then(|rest| rest.strip_suffix(&ext))
                        .is_some_and(|env| !env.is_empty() && !env.contains('.'))
            })
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                // Not accesses: reading the config for a reload would
                // trigger the next one.
                Ok(e) if !e.kind.is_access() && e.paths.iter().any(|p| watched(p)) => {
                    let _ = tx.send(());
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("config folder watch error: {e}"),
            })?;
        // The folder, not the file: editors and deploys replace the file.
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
        let live = Arc::downgrade(self);
        tokio::spawn(async move {
            while crate::watch::next_burst(&mut rx).await {
                let Some(live) = live.upgrade() else { return };
                let _ = live.reload("file changed").await;
            }
        });
        Ok(Some(watcher))
    }

    /// Reloads on `SIGHUP`.
    pub fn reload_on_sighup(self: &Arc<Self>) {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut hup = match signal(SignalKind::hangup()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(
                        "cannot listen for SIGHUP (reload with the file or /admin/reload): {e}"
                    );
                    return;
                }
            };
            let live = Arc::downgrade(self);
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    let Some(live) = live.upgrade() else { return };
                    let _ = live.reload("SIGHUP").await;
                }
            });
        }
    }
}

/// A refused config's problems, one per line.
fn problems(e: ConfigError) -> Vec<String> {
    match e {
        ConfigError::Invalid { path, problems } => problems
            .into_iter()
            .map(|p| format!("{}: {}", path.display(), p.trim()))
            .collect(),
        other => vec![other.to_string()],
    }
}

/// Settings a running gateway cannot change.
fn restart_only(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    if old.listen != new.listen {
        changed.push("listen");
    }
    if old.server.max_body_bytes != new.server.max_body_bytes {
        changed.push("server.max_body_bytes");
    }
    if old.server.threads != new.server.threads {
        changed.push("server.threads");
    }
    if old.server.busy_poll_us != new.server.busy_poll_us {
        changed.push("server.busy_poll_us");
    }
    if old.demo_upstream.as_ref().map(|d| &d.listen)
        != new.demo_upstream.as_ref().map(|d| &d.listen)
    {
        changed.push("demo_upstream");
    }
    if old.store != new.store {
        changed.push("store");
    }
    if old.admin != new.admin {
        changed.push("admin");
    }
    if old.telemetry != new.telemetry {
        changed.push("telemetry");
    }
    // The cache's bounds apply at once; whether it keeps entries in the
    // store is decided when it starts.
    if old.cache.persist != new.cache.persist {
        changed.push("cache.persist");
    }
    changed
}

/// What a reload changed, in one line.
pub fn summary(old: &Config, new: &Config, plugins: &[String]) -> String {
    fn diff<'a, V: PartialEq>(
        old: &'a std::collections::BTreeMap<String, V>,
        new: &'a std::collections::BTreeMap<String, V>,
    ) -> [Vec<&'a str>; 3] {
        let added = new
            .keys()
            .filter(|k| !old.contains_key(*k))
            .map(String::as_str)
            .collect();
        let removed = old
            .keys()
            .filter(|k| !new.contains_key(*k))
            .map(String::as_str)
            .collect();
        let changed = new
            .iter()
            .filter(|(k, v)| old.get(*k).is_some_and(|o| o != *v))
            .map(|(k, _)| k.as_str())
            .collect();
        [added, removed, changed]
    }
    let mut parts = Vec::new();
    for (what, [added, removed, changed]) in [
        ("routes", diff(&old.routes, &new.routes)),
        ("deployments", diff(&old.deployments, &new.deployments)),
    ] {
        for (sign, names) in [("added", added), ("removed", removed), ("changed", changed)] {
            if !names.is_empty() {
                parts.push(format!("{what} {sign}: {}", names.join(", ")));
            }
        }
    }
    if old.timeouts != new.timeouts {
        parts.push("timeouts changed".into());
    }
    if old.health != new.health {
        parts.push("health settings changed".into());
    }
    if !plugins.is_empty() {
        parts.push(format!("plugins reconfigured: {}", plugins.join(", ")));
    }
    if parts.is_empty() {
        "no change".into()
    } else {
        parts.join("; ")
    }
}
