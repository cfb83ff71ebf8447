//! Gateway configuration: one JSON file, checked against `config/schema.json`
//! before it is deserialised, so every mistake is reported with the JSON path
//! that holds it and the rule it breaks.
//!
//! Relative paths inside the file are resolved against the file's own folder,
//! so a config works the same whatever the working directory is. Secrets are
//! never part of the file: a deployment names the environment variable that
//! holds its key, read when the config resolves (at start and each reload).
//!
//! Before validation the file gets its environment's overlay and `${VAR}`
//! references ([`env`]); after it, deployments defined inline in routes join
//! the top-level map and every cross-reference is checked ([`resolve`]).

mod access;
mod env;
mod records;
mod resolve;
mod routes;
mod runtime;
mod traffic;

pub use access::*;
pub use env::Env;
pub use records::*;
pub use routes::*;
pub use runtime::*;
pub use traffic::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::domain::{AuthScheme, Kind};

/// The JSON Schema every config must satisfy (also shipped as `config/schema.json`).
pub const SCHEMA: &str = include_str!("../../../config/schema.json");

/// Why a config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// One line per violated rule, each naming the JSON path.
    #[error("config {path} is invalid:\n{}", .problems.join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

/// The whole gateway configuration, defaults filled in and paths resolved.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(rename = "$schema", default)]
    _schema: Option<String>,
    #[serde(default = "default_listen")]
    pub listen: String,
    pub demo_upstream: Option<DemoUpstream>,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub plugins: PluginsConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub monitor: MonitorConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Spend limits by name.
    #[serde(default)]
    pub budgets: BTreeMap<String, BudgetConfig>,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    /// The Redis server of `limits.backend: "redis"`.
    pub redis: Option<RedisConfig>,
    /// Client keys: who may call the API (see [`crate::auth`]).
    #[serde(default)]
    pub auth: ClientAuthConfig,
    /// The response cache's bounds (see [`crate::cache`]).
    #[serde(default)]
    pub cache: crate::cache::CacheConfig,
    /// Traces (see [`crate::telemetry`]).
    #[serde(default)]
    pub telemetry: crate::telemetry::TelemetryConfig,
    /// Every deployment by name: those of the top-level map and, once
    /// resolved, those defined inline in routes.
    #[serde(default)]
    pub deployments: BTreeMap<String, Deployment>,
    pub routes: BTreeMap<String, Route>,
    /// The variables the config was resolved with (API keys are read here).
    #[serde(skip)]
    pub env: Env,
}

/// The passive health and circuit-breaker settings of every deployment.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// Consecutive faults that open a deployment's circuit.
    #[serde(default = "d_trip_after")]
    pub trip_after: u32,
    /// How long an open circuit keeps requests away from a deployment.
    #[serde(default = "d_cooldown")]
    pub cooldown_ms: u64,
    /// With Redis, how long the other replicas keep away from a circuit one
    /// of them probes (here, a probe is held until its outcome).
    #[serde(default = "d_probe_window")]
    pub probe_window_ms: u64,
    /// Cool-down after a 429 that gave no Retry-After.
    #[serde(default = "d_rate_limit_cooldown")]
    pub rate_limit_cooldown_ms: u64,
    /// Evaluator or feedback scores under `low_score` in a row that demote
    /// a deployment (0: never): strategies see its quality as 0 for
    /// `demote_ms`, so quality-aware routing puts it last.
    #[serde(default = "d_demote_after")]
    pub demote_after_low_scores: u32,
    #[serde(default = "d_demote_ms")]
    pub demote_ms: u64,
    #[serde(default = "d_low_score")]
    pub low_score: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            trip_after: d_trip_after(),
            cooldown_ms: d_cooldown(),
            probe_window_ms: d_probe_window(),
            rate_limit_cooldown_ms: d_rate_limit_cooldown(),
            demote_after_low_scores: d_demote_after(),
            demote_ms: d_demote_ms(),
            low_score: d_low_score(),
        }
    }
}

impl Config {
    /// Every plugin the config names, with the kind it is used as and the
    /// JSON path that names it.
    pub fn plugin_references(&self) -> Vec<(String, Kind, String)> {
        let mut refs = Vec::new();
        for (name, route) in &self.routes {
            if let Some(s) = &route.strategy {
                refs.push((
                    s.clone(),
                    Kind::Strategy,
                    format!("/routes/{name}/strategy"),
                ));
            }
            for (i, s) in route.shadow_strategies.iter().enumerate() {
                refs.push((
                    s.clone(),
                    Kind::Strategy,
                    format!("/routes/{name}/shadow_strategies/{i}"),
                ));
            }
            if let Some(e) = &route.evaluator {
                refs.push((
                    e.clone(),
                    Kind::Evaluator,
                    format!("/routes/{name}/evaluator"),
                ));
            }
        }
        for (name, d) in &self.deployments {
            refs.push((
                d.adapter.clone(),
                Kind::Adapter,
                format!("{}/adapter", d.origin(name)),
            ));
        }
        refs
    }
}

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_max_body() -> usize {
    4 << 20
}
fn default_plugin_dir() -> PathBuf {
    "plugins".into()
}
fn default_cache_dir() -> PathBuf {
    ".switchyard/cache".into()
}
fn default_memory_mib() -> u64 {
    64
}
fn default_queue_ms() -> u64 {
    2_000
}
fn default_max_instances() -> usize {
    256
}
fn default_weight() -> u32 {
    1
}
fn all_capabilities() -> Vec<Capability> {
    vec![
        Capability::Tools,
        Capability::JsonMode,
        Capability::Vision,
        Capability::Streaming,
    ]
}
fn d_connect() -> u64 {
    5_000
}
fn d_first_byte() -> u64 {
    60_000
}
fn d_idle() -> u64 {
    30_000
}
fn d_total() -> u64 {
    300_000
}
fn d_request() -> u64 {
    600_000
}
fn d_trip_after() -> u32 {
    3
}
fn d_cooldown() -> u64 {
    5_000
}
fn d_probe_window() -> u64 {
    2_000
}
fn d_rate_limit_cooldown() -> u64 {
    1_000
}
fn d_demote_after() -> u32 {
    5
}
fn d_demote_ms() -> u64 {
    300_000
}
fn d_low_score() -> f64 {
    0.5
}
fn d_strategy() -> u64 {
    25
}
fn d_adapter() -> u64 {
    50
}
fn d_evaluator() -> u64 {
    50
}

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let schema: Value = serde_json::from_str(SCHEMA).expect("bundled schema is JSON");
        jsonschema::validator_for(&schema).expect("bundled schema is a valid JSON Schema")
    })
}

impl Config {
    /// Reads, validates and resolves a config file, with the overlay
    /// `SWITCHYARD_ENV` selects and the `.env` file beside it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let base = path.parent().unwrap_or(Path::new("."));
        let invalid = |problems| ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        };
        let env = Env::beside(base).map_err(|e| invalid(vec![format!("  {e}")]))?;
        let mut value = read_json(path)?;
        if let Some(overlay) = env::overlay_path(path, &env) {
            env::merge(&mut value, read_json(&overlay)?);
        }
        Self::from_value(value, env, path, base)
    }

    /// Validates config text; `origin` names it in errors, `base` resolves relative paths.
    pub fn from_str(text: &str, origin: &Path, base: &Path) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(|source| ConfigError::Json {
            path: origin.to_owned(),
            source,
        })?;
        Self::from_value(value, Env::default(), origin, base)
    }

    fn from_value(
        mut value: Value,
        env: Env,
        origin: &Path,
        base: &Path,
    ) -> Result<Self, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            path: origin.to_owned(),
            problems,
        };
        let mut problems = Vec::new();
        let mut substituted = env::Substituted::default();
        env::substitute(&mut value, &env, "", &mut problems, &mut substituted);
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        // A value that was one reference reads as a number or boolean where
        // the schema wants one (`"max_body_bytes": "${MAX_BODY}"`).
        let mistyped: Vec<String> = validator()
            .iter_errors(&value)
            .filter(|e| {
                matches!(
                    e.kind(),
                    jsonschema::error::ValidationErrorKind::Type { .. }
                )
            })
            .map(|e| e.instance_path().to_string())
            .filter(|p| substituted.whole.contains(p))
            .collect();
        for pointer in mistyped {
            if let Some(v) = value.pointer_mut(&pointer) {
                env::typed(v);
            }
        }
        let problems: Vec<String> = validator()
            .iter_errors(&value)
            .map(|e| {
                substituted.redact(&format!(
                    "  at {}: {}",
                    json_path(&e.instance_path().to_string()),
                    e
                ))
            })
            .collect();
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        let mut config: Config = serde_json::from_value(value)
            .map_err(|e| invalid(vec![substituted.redact(&format!("  {e}"))]))?;
        config.env = env;
        let problems: Vec<String> = config
            .resolve()
            .iter()
            .map(|p| substituted.redact(p))
            .collect();
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        config.plugins.dir = base.join(&config.plugins.dir);
        config.plugins.cache_dir = base.join(&config.plugins.cache_dir);
        config.store.path = base.join(&config.store.path);
        Ok(config)
    }
}

fn read_json(path: &Path) -> Result<Value, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ConfigError::Json {
        path: path.to_owned(),
        source,
    })
}

impl Timeouts {
    /// These timeouts with a deployment's partial override applied.
    pub fn merged(&self, overrides: &Value) -> Result<Timeouts, serde_json::Error> {
        if overrides.get("request_ms").is_some() {
            return Err(serde::de::Error::custom(
                "request_ms is a request's whole deadline: set it under the top-level timeouts, not per deployment",
            ));
        }
        let mut base = serde_json::to_value(self).expect("timeouts serialise");
        if let (Some(b), Some(o)) = (base.as_object_mut(), overrides.as_object()) {
            for (k, v) in o {
                b.insert(k.clone(), v.clone());
            }
        }
        serde_json::from_value(base)
    }
}

/// The schema library reports the root as an empty pointer; say "/" instead.
fn json_path(pointer: &str) -> String {
    if pointer.is_empty() {
        "/".into()
    } else {
        pointer.into()
    }
}

#[cfg(test)]
mod tests;
