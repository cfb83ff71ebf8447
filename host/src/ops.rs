//! Plugin operations behind `switchyard plugins list | check | new`: what an
//! operator asks of the plugin folder without reading logs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::{Config, Deadlines, QuarantineConfig};
use crate::domain::Kind;
use crate::plugins::pool::InstanceLimits;
use crate::plugins::{Registry, RegistrySettings};

/// One row of `plugins list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub id: String,
    pub kind: String,
    pub wit: String,
    pub name: String,
    pub version: String,
    pub hash: String,
    /// `active`, `quarantined (… ms left)` or `rejected: <reason>`.
    pub state: String,
}

/// The plugins of a registry, loaded and rejected, sorted by id.
pub fn rows(registry: &Registry) -> Vec<Row> {
    let mut rows: Vec<Row> = registry
        .loaded()
        .iter()
        .map(|p| Row {
            id: p.id.to_string(),
            kind: p.kind.to_string(),
            wit: p.wit.to_string(),
            name: p.metadata().name.clone(),
            version: p.metadata().version.clone(),
            hash: p.hash[..12].to_string(),
            state: p.state().to_string(),
        })
        .collect();
    for (id, reason) in registry.rejected() {
        if !rows.iter().any(|r| r.id == id) {
            rows.push(Row {
                id,
                kind: "-".into(),
                wit: "-".into(),
                name: "-".into(),
                version: "-".into(),
                hash: "-".into(),
                state: format!("rejected: {reason}"),
            });
        } else if let Some(row) = rows.iter_mut().find(|r| r.id == id) {
            row.state = format!("{} (a newer file was rejected: {reason})", row.state);
        }
    }
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    rows
}

/// Applies the live states a running gateway reported (`/healthz`'s
/// `plugin_detail`), so quarantines show up.
pub fn apply_live(rows: &mut [Row], detail: &serde_json::Value) {
    for row in rows {
        if let Some(state) = detail[&row.id]["state"].as_str()
            && state == "quarantined"
        {
            let left = detail[&row.id]["quarantine_remaining_ms"]
                .as_u64()
                .unwrap_or(0);
            row.state = format!("quarantined ({left} ms left)");
        }
    }
}

/// The table `plugins list` prints.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<18} {:<9} {:<5} {:<16} {:<9} {:<12} STATE\n",
        "ID", "KIND", "WIT", "NAME", "VERSION", "HASH"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<18} {:<9} {:<5} {:<16} {:<9} {:<12} {}\n",
            r.id, r.kind, r.wit, r.name, r.version, r.hash, r.state
        ));
    }
    out
}

/// `plugins check FILE.wasm`: loads one file in a scratch registry exactly
/// as the gateway would, and says what it is or why it would be refused.
/// `Ok(report)` when it would load, `Err(report)` otherwise.
pub fn check_file(file: &Path) -> Result<String, String> {
    let scratch = tempfile::tempdir().map_err(|e| format!("cannot make a scratch folder: {e}"))?;
    let dir = scratch.path().join("plugins");
    std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
    let id = file
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or_else(|| format!("{}: not a file name", file.display()))?;
    std::fs::copy(file, dir.join(format!("{id}.wasm")))
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let registry = Registry::new(RegistrySettings {
        dir,
        cache_dir: scratch.path().join("cache"),
        limits: InstanceLimits {
            memory_bytes: 64 << 20,
            max_instances: 4,
        },
        deadlines: Deadlines::default(),
        adapter_queue: std::time::Duration::from_secs(2),
        quarantine: QuarantineConfig::default(),
        plugin_config: HashMap::new(),
        expected_kinds: HashMap::new(),
    })
    .map_err(|e| e.to_string())?;
    if let Some(p) = registry.loaded().first() {
        let m = p.metadata();
        let mut report = format!(
            "{}: loads\n  kind:     {}\n  wit:      switchyard:plugin@{}\n  name:     {} {}\n  sha256:   {}\n",
            file.display(),
            p.kind,
            p.wit,
            m.name,
            m.version,
            p.hash
        );
        if p.kind == Kind::Adapter {
            report.push_str(&format!(
                "  auth:     {}\n  framing:  {:?}\n",
                m.auth
                    .as_ref()
                    .map_or("chosen per request (v0.1)".to_string(), |a| format!(
                        "{a:?}"
                    )),
                m.framing
            ));
        }
        report.push_str(&format!("  imports ({}):\n", p.imports.len()));
        for i in &p.imports {
            report.push_str(&format!("    {i}\n"));
        }
        return Ok(report);
    }
    let reason = registry
        .rejected()
        .into_values()
        .next()
        .unwrap_or_else(|| "not loaded".into());
    Err(format!("{}: would be refused: {reason}\n", file.display()))
}

/// `plugins new`: copies the template of a kind and language into
/// `dest/NAME`, with the name filled in.
pub fn new_plugin(
    templates: &Path,
    kind: Kind,
    lang: &str,
    name: &str,
    dest: &Path,
) -> Result<PathBuf, String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "plugin name {name:?}: use letters, digits, '-' and '_' (it becomes the plugin id)"
        ));
    }
    let source = templates.join(lang).join(kind.as_str());
    if !source.is_dir() {
        return Err(format!(
            "no template for a {kind} in {lang:?} at {} (languages: rust, python, js)",
            source.display()
        ));
    }
    let target = dest.join(name);
    if target.exists() {
        return Err(format!("{} already exists", target.display()));
    }
    let sdk = templates
        .parent()
        .map(|root| root.join("sdk"))
        .and_then(|p| p.canonicalize().ok())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "../sdk".into());
    copy_filled(&source, &target, &[("{{name}}", name), ("{{sdk}}", &sdk)])?;
    Ok(target)
}

fn copy_filled(from: &Path, to: &Path, fills: &[(&str, &str)]) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for entry in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path();
        let dest = to.join(entry.file_name());
        if path.is_dir() {
            copy_filled(&path, &dest, fills)?;
        } else {
            let mut text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            for (from, to) in fills {
                text = text.replace(from, to);
            }
            std::fs::write(&dest, text).map_err(|e| format!("{}: {e}", dest.display()))?;
        }
    }
    Ok(())
}

/// Where the templates are: beside the binary's repository checkout.
pub fn default_templates() -> PathBuf {
    let near_exe = std::env::current_exe().ok().and_then(|exe| {
        exe.parent()?
            .parent()?
            .parent()
            .map(|r| r.join("templates"))
    });
    match near_exe {
        Some(p) if p.is_dir() => p,
        _ => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../templates"),
    }
}

/// The live plugin states of the gateway serving `config`, if one answers.
pub async fn live_detail(config: &Config) -> Option<serde_json::Value> {
    let addr = config.listen.replace("0.0.0.0", "127.0.0.1");
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(500))
        .build()
        .ok()?;
    let body = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    let health: serde_json::Value = serde_json::from_slice(&body).ok()?;
    Some(health["plugin_detail"].clone())
}

/// The resolved route table `switchyard check` prints: each route's
/// plugins, its deployments as they resolved (adapter, URL, upstream model,
/// priority, weight) and its fallbacks, then deployments no route uses.
pub fn route_table(config: &Config) -> String {
    let mut out = format!("routes ({}):\n", config.routes.len());
    let mut used = std::collections::HashSet::new();
    for (name, route) in &config.routes {
        let kind = match name.strip_suffix('*') {
            Some(prefix) => {
                format!(" (wildcard: every model named {prefix:?}…; `*` in a model is the rest)")
            }
            None => String::new(),
        };
        let shadows = if route.shadow_strategies.is_empty() {
            String::new()
        } else {
            format!(", shadows {}", route.shadow_strategies.join(", "))
        };
        out.push_str(&format!(
            "  {name}{kind}: strategy {}, evaluator {}{shadows}\n",
            route.strategy.as_deref().unwrap_or("(configured order)"),
            route.evaluator.as_deref().unwrap_or("(none)"),
        ));
        for m in &route.members {
            used.insert(m.name.as_str());
            if let Some(d) = config.deployments.get(&m.name) {
                out.push_str(&format!(
                    "    {:<24} {:<10} {} model {:?}, priority {}, weight {}{}\n",
                    m.name,
                    d.adapter,
                    d.base_url,
                    d.model,
                    m.priority,
                    m.weight,
                    match d.key_envs() {
                        [] => String::new(),
                        [v] => format!(", key from {v}"),
                        many => format!(", keys from {}", many.join(", ")),
                    }
                ));
            }
        }
        let chain = config.fallback_chain(name);
        if !chain.is_empty() {
            out.push_str(&format!("    falls back to: {}\n", chain.join(" → ")));
        }
    }
    let unused: Vec<&str> = config
        .deployments
        .keys()
        .map(String::as_str)
        .filter(|d| !used.contains(d))
        .collect();
    if !unused.is_empty() {
        out.push_str(&format!(
            "deployments no route lists: {}\n",
            unused.join(", ")
        ));
    }
    out
}

/// What a valid config names but cannot use yet, at start and at each
/// reload: plugins the folder lacks (or holds as another kind), and key
/// variables that are not set (one line per variable).
pub fn config_warnings(config: &Config, registry: &Registry) -> Vec<String> {
    let mut warnings = Vec::new();
    for (id, kind, at) in config.plugin_references() {
        if let Err(e) = registry.get(&id, kind) {
            warnings.push(format!(
                "at {at}: {e}; requests fall back as for a failing {kind}"
            ));
        }
    }
    let mut missing: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for (name, d) in &config.deployments {
        for var in d.key_envs() {
            if config.env.get(var).is_none() {
                missing.entry(var).or_default().push(name);
            }
        }
    }
    for (var, names) in missing {
        warnings.push(format!(
            "environment variable {var} is not set: deployment(s) {} skip that key (with no other key set, their attempts fail with an auth error)",
            names.join(", ")
        ));
    }
    warnings
}
