//! `GET /admin/plugins`, `PUT /admin/plugins/{file}` and
//! `POST /admin/plugins/{file}/rollback`: the plugins the gateway runs,
//! a new version uploaded from the dashboard, and the previous version put
//! back.
//!
//! An upload is loaded in a scratch registry first, exactly as the gateway
//! would load it (header, compile, instantiate, metadata, the kind the
//! config uses the id as): a file that would be refused is answered with
//! the loader's reason and never reaches the plugin folder. One that
//! passes is written by write-then-rename ([`plugin_files`]), and the
//! folder is rescanned before answering, so the answer says what runs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::plugin_files::{self, FileError};
use super::{AdminState, error};
use crate::domain::Kind;
use crate::plugins::{PluginState, Registry, RegistrySettings};

/// Uploads and rollbacks one at a time: each reads the current file to
/// keep it, so two at once could keep the wrong previous version.
static WRITING: Mutex<()> = Mutex::new(());

/// What an upload would load as.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub kind: Kind,
    pub wit: &'static str,
    pub name: String,
    pub version: String,
    pub hash: String,
}

/// Loads `bytes` as plugin `id` in a scratch registry (its own folder and
/// compile cache, so the gateway's cache is never pruned by it), with the
/// kind the config expects of the id and its config block. `Err` is the
/// loader's reason.
#[cfg(test)]
pub fn check(
    bytes: &[u8],
    id: &str,
    expected: Option<Kind>,
    config: Option<Arc<str>>,
) -> Result<Checked, String> {
    check_with(
        bytes,
        id,
        RegistrySettings {
            dir: std::path::PathBuf::new(),
            cache_dir: std::path::PathBuf::new(),
            limits: crate::plugins::pool::InstanceLimits {
                memory_bytes: 64 << 20,
                max_instances: 2,
            },
            deadlines: crate::config::Deadlines::default(),
            adapter_queue: std::time::Duration::from_secs(2),
            quarantine: crate::config::QuarantineConfig::default(),
            plugin_config: config
                .map(|c| HashMap::from([(id.to_string(), c)]))
                .unwrap_or_default(),
            expected_kinds: expected
                .map(|k| HashMap::from([(id.to_string(), k)]))
                .unwrap_or_default(),
        },
    )
}

/// [`check`] with the running gateway's settings (memory limit, deadlines,
/// config blocks, expected kinds): what passes here, the gateway loads.
pub fn check_with(
    bytes: &[u8],
    id: &str,
    mut settings: RegistrySettings,
) -> Result<Checked, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("cannot make a scratch folder: {e}"))?;
    let dir = scratch.path().join("plugins");
    std::fs::create_dir(&dir).map_err(|e| format!("cannot make a scratch folder: {e}"))?;
    std::fs::write(dir.join(format!("{id}.wasm")), bytes)
        .map_err(|e| format!("cannot write a scratch copy: {e}"))?;
    settings.dir = dir;
    settings.cache_dir = scratch.path().join("cache");
    let registry = Registry::new(settings).map_err(|e| e.to_string())?;
    if let Some(p) = registry.loaded().into_iter().find(|p| &*p.id == id) {
        let m = p.metadata();
        return Ok(Checked {
            kind: p.kind,
            wit: p.wit.as_str(),
            name: m.name.clone(),
            version: m.version.clone(),
            hash: p.hash.clone(),
        });
    }
    Err(registry
        .rejected()
        .remove(id)
        .unwrap_or_else(|| "not loaded".into()))
}

/// One loaded plugin (or refused file) as the dashboard shows it.
fn entry(dir: &Path, p: &crate::plugins::Plugin, used_by: &[String]) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &p.stats;
    let calls = s.calls.load(Relaxed);
    let m = p.metadata();
    let (state, remaining) = match p.state() {
        PluginState::Active => ("active", None),
        PluginState::Quarantined { remaining_ms } => ("quarantined", Some(remaining_ms)),
    };
    let (_, previous) = plugin_files::paths(dir, &p.id);
    json!({
        "id": &*p.id,
        "file": format!("{}.wasm", p.id),
        "kind": p.kind,
        "wit": p.wit.as_str(),
        "name": m.name,
        "version": m.version,
        "hash": p.hash,
        "state": state,
        "reason": Value::Null,
        "quarantine_remaining_ms": remaining,
        "faults": p.faults(),
        "calls": calls,
        "errors": s.errors.load(Relaxed),
        "timeouts": s.timeouts.load(Relaxed),
        "traps": s.traps.load(Relaxed),
        // Mean wall time per call since load (waits for an instance included).
        "mean_call_us": (calls > 0).then(|| s.call_ns.load(Relaxed) as f64 / calls as f64 / 1000.0),
        "offloaded_ms": p.offloaded_for().map(|d| d.as_millis() as u64),
        "deadline_ms": p.deadline().as_millis() as u64,
        "previous_hash": plugin_files::file_hash(&previous),
        "used_by": used_by,
    })
}

/// Every plugin: loaded ones, then files that were refused (with the
/// reason), sorted by id.
fn entries(registry: &Registry, config: &crate::config::Config) -> Vec<Value> {
    let dir = registry.dir();
    let mut used: HashMap<String, Vec<String>> = HashMap::new();
    // The JSON paths of the config that name each id.
    for (id, _, at) in config.plugin_references() {
        used.entry(id).or_default().push(at);
    }
    let none = Vec::new();
    let mut out: Vec<Value> = registry
        .loaded()
        .iter()
        .map(|p| entry(&dir, p, used.get(&*p.id).unwrap_or(&none)))
        .collect();
    let loaded: std::collections::HashSet<String> =
        registry.loaded().iter().map(|p| p.id.to_string()).collect();
    for (id, reason) in registry.rejected() {
        if loaded.contains(&id) {
            // A refused new file while the previous version keeps serving:
            // say so on the serving entry.
            if let Some(e) = out.iter_mut().find(|e| e["id"] == id.as_str()) {
                e["reason"] = json!(format!("a newer file was refused: {reason}"));
            }
            continue;
        }
        let (_, previous) = plugin_files::paths(&dir, &id);
        out.push(json!({
            "id": id, "file": format!("{id}.wasm"), "state": "rejected", "reason": reason,
            "previous_hash": plugin_files::file_hash(&previous),
            "used_by": used.get(&id).unwrap_or(&none),
        }));
    }
    out.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    out
}

/// `GET /admin/plugins`.
pub(super) async fn list(State(s): State<Arc<AdminState>>) -> Response {
    let gateway = s.live.gateway();
    // Each entry hashes its plugin's previous file (up to 64 MiB): on a
    // blocking thread, not on the one that serves requests.
    let listed = tokio::task::spawn_blocking(move || {
        let data = entries(gateway.registry(), gateway.config());
        json!({ "data": data, "dir": gateway.registry().dir() })
    })
    .await;
    match listed {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("listing the plugins failed: {e}"),
        ),
    }
}

fn file_error(e: FileError) -> Response {
    let status = match e {
        FileError::BadName(_) => StatusCode::BAD_REQUEST,
        FileError::NoPrevious(_) => StatusCode::NOT_FOUND,
        FileError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        FileError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    error(status, e.to_string())
}

/// Rescans the folder and answers with `id`'s entry as it now runs.
fn rescanned(registry: &Registry, config: &crate::config::Config, id: &str) -> Option<Value> {
    registry.scan();
    entries(registry, config)
        .into_iter()
        .find(|e| e["id"] == id)
}

/// Whether a browser sent this from another site's page. Without a token
/// (a loopback-only admin API) any page the operator opens could otherwise
/// post a rollback or a reload to 127.0.0.1 (a simple request needs no
/// preflight); browsers always send `Origin` across origins, other clients
/// need none. Checked for every change (see `authorize`).
pub(crate) fn cross_origin(headers: &HeaderMap) -> Option<Response> {
    let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or("?");
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if origin.split_once("://").map(|(_, h)| h) == Some(host) {
        return None;
    }
    Some(error(
        StatusCode::FORBIDDEN,
        format!(
            "the admin API takes changes from the dashboard's own origin only (Origin {origin}, Host {host})"
        ),
    ))
}

/// `PUT /admin/plugins/{file}` with the `.wasm` bytes as the body.
pub(super) async fn upload(
    State(s): State<Arc<AdminState>>,
    UrlPath(file): UrlPath<String>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let id = match plugin_files::plugin_id(&file) {
        Ok(id) => id.to_string(),
        Err(e) => return file_error(e),
    };
    let bytes = match body {
        Ok(b) if b.is_empty() => {
            return error(
                StatusCode::BAD_REQUEST,
                "the body is empty: send the .wasm file's bytes",
            );
        }
        Ok(b) => b,
        Err(e) => {
            return error(
                e.status(),
                format!(
                    "the upload could not be read ({}); plugin files are at most {} MiB",
                    e.body_text(),
                    crate::plugins::MAX_PLUGIN_BYTES >> 20
                ),
            );
        }
    };
    let gateway = s.live.gateway();
    let config = gateway.config().clone();
    let registry = gateway.registry().clone();
    // The gateway's own settings; a file may not change the kind of an id
    // already loaded either (the registry refuses that too).
    let mut settings = RegistrySettings::from(&*config);
    if let Some(p) = registry.loaded().into_iter().find(|p| *p.id == *id) {
        settings.expected_kinds.entry(id.clone()).or_insert(p.kind);
    }
    let result = tokio::task::spawn_blocking(move || {
        let checked = check_with(&bytes, &id, settings)
            .map_err(|reason| (StatusCode::UNPROCESSABLE_ENTITY, format!("{id}.wasm would be refused, so it was not written: {reason}")))?;
        let _one = WRITING.lock().unwrap_or_else(|p| p.into_inner());
        let dir = registry.dir();
        let replaced = plugin_files::install(&dir, &id, &bytes)
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let now = rescanned(&registry, &config, &id);
        // Refused by the running gateway after all: the version before is
        // put back (or the new file removed), so a restart serves what
        // serves now.
        if let Some(why) = registry.rejected().get(&id).cloned() {
            let undone = if replaced {
                plugin_files::rollback(&dir, &id)
            } else {
                std::fs::remove_file(dir.join(format!("{id}.wasm")))
                    .map_err(|e| FileError::Io { what: format!("cannot remove {id}.wasm"), source: e })
            };
            rescanned(&registry, &config, &id);
            tracing::warn!(plugin = %id, "uploaded plugin refused by the gateway, the previous state restored: {why}");
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "{id}.wasm was refused by the gateway ({why}); {}",
                    match undone {
                        Ok(()) if replaced => "the previous version was put back".to_string(),
                        Ok(()) => "the file was removed".to_string(),
                        Err(e) => format!("and restoring the previous state failed: {e}"),
                    }
                ),
            ));
        }
        tracing::info!(plugin = %id, hash = %&checked.hash[..12], replaced, "plugin uploaded through the admin API");
        Ok::<_, (StatusCode, String)>((replaced, checked, now))
    })
    .await;
    match result {
        Ok(Ok((replaced, checked, now))) => {
            let status = if replaced {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            (
                status,
                axum::Json(json!({
                    "replaced": replaced,
                    "checked": {"kind": checked.kind, "wit": checked.wit, "name": checked.name, "version": checked.version, "hash": checked.hash},
                    "plugin": now,
                })),
            )
                .into_response()
        }
        Ok(Err((status, message))) => error(status, message),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the upload failed: {e}"),
        ),
    }
}

/// `POST /admin/plugins/{file}/rollback`: the previous version back (the
/// current one kept as the previous, so a second rollback undoes it).
pub(super) async fn rollback(
    State(s): State<Arc<AdminState>>,
    UrlPath(file): UrlPath<String>,
) -> Response {
    let id = match plugin_files::plugin_id(&file) {
        Ok(id) => id.to_string(),
        Err(e) => return file_error(e),
    };
    let gateway = s.live.gateway();
    let config = gateway.config().clone();
    let registry = gateway.registry().clone();
    let result = tokio::task::spawn_blocking(move || {
        let _one = WRITING.lock().unwrap_or_else(|p| p.into_inner());
        plugin_files::rollback(&registry.dir(), &id)?;
        let now = rescanned(&registry, &config, &id);
        // The version put back no longer loads (its kind or config block
        // changed since): undone.
        if let Some(why) = registry.rejected().get(&id).cloned() {
            plugin_files::rollback(&registry.dir(), &id)?;
            rescanned(&registry, &config, &id);
            return Err(FileError::Refused(format!(
                "the previous version of {id} is refused by the gateway ({why}): nothing changed"
            )));
        }
        tracing::info!(plugin = %id, "plugin rolled back through the admin API");
        Ok::<_, FileError>(now)
    })
    .await;
    match result {
        Ok(Ok(now)) => axum::Json(json!({ "rolled_back": true, "plugin": now })).into_response(),
        Ok(Err(e)) => file_error(e),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the rollback failed: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundled(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../plugins")
            .join(format!("{name}.wasm"));
        std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build-plugins)", path.display()))
    }

    #[test]
    fn changes_come_from_the_dashboards_origin_or_from_no_browser() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8081".parse().unwrap());
        assert!(cross_origin(&h).is_none(), "curl sends no Origin");
        h.insert(header::ORIGIN, "http://127.0.0.1:8081".parse().unwrap());
        assert!(cross_origin(&h).is_none(), "the dashboard itself");
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        let r = cross_origin(&h).expect("another site's page");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(cross_origin(&h).is_some(), "a sandboxed page");
    }

    #[test]
    fn a_file_that_is_not_a_plugin_is_refused_with_the_loaders_reason() {
        let e = check(b"not wasm at all", "x", None, None).unwrap_err();
        assert!(e.contains("no wasm header"), "{e}");
        let core = [0, b'a', b's', b'm', 1, 0, 0, 0];
        let e = check(&core, "x", None, None).unwrap_err();
        assert!(e.contains("core wasm module"), "{e}");
    }

    #[test]
    fn a_plugin_loads_and_the_configured_kind_is_enforced() {
        let bytes = bundled("priority");
        let ok = check(&bytes, "canary", Some(Kind::Strategy), None).unwrap();
        assert_eq!(ok.kind, Kind::Strategy);
        assert_eq!(ok.hash.len(), 64);
        let e = check(&bytes, "canary", Some(Kind::Evaluator), None).unwrap_err();
        assert!(e.contains("evaluator") || e.contains("kind"), "{e}");
    }
}
