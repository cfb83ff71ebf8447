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

mod env;
mod resolve;

pub use env::Env;

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

/// A spend limit (see [`crate::budget`]). No scope field: the whole
/// gateway; otherwise requests of that route, caller or tag, or attempts on
/// that deployment (all the fields given must match).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub route: Option<String>,
    pub deployment: Option<String>,
    pub caller: Option<String>,
    pub tag: Option<String>,
    pub period: BudgetPeriod,
    pub limit_usd: f64,
    /// Fractions of the limit that raise a `budget_alert` event, once per window.
    #[serde(default = "d_alert_at")]
    pub alert_at: Vec<f64>,
    #[serde(default)]
    pub action: BudgetAction,
}

fn d_alert_at() -> Vec<f64> {
    vec![0.5, 0.8, 1.0]
}

#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    Day,
    Month,
}

/// What a spent budget does.
#[derive(Debug, Clone, Copy, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BudgetAction {
    /// Alerts only.
    #[default]
    Alert,
    /// Refuses requests (429 naming the budget); a deployment budget takes
    /// its deployment out of every route instead.
    Reject,
    /// Sends its requests to the route's cheapest deployments only.
    Cheapest,
}

/// The rate limiter's settings (see [`crate::ratelimit`]); the limits
/// themselves are each deployment's `rpm`, `rps` and `tpm`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// The fraction of a limit that raises a `rate_limit_warning` event.
    #[serde(default = "d_warn_at")]
    pub warn_at: f64,
    /// Completion tokens a request without `max_tokens` reserves.
    #[serde(default = "d_default_output_tokens")]
    pub default_output_tokens: u32,
    /// The longest a Retry-After may sideline a key or deployment.
    #[serde(default = "d_max_retry_after_ms")]
    pub max_retry_after_ms: u64,
    /// Requests in flight in the whole gateway at most.
    pub max_in_flight: Option<u32>,
    /// Where requests wait when every candidate is busy.
    #[serde(default)]
    pub queue: QueueConfig,
    /// `memory` (this process) or `redis` (shared by every replica).
    #[serde(default)]
    pub backend: LimitsBackend,
    /// How many replicas share the limits: each keeps this share of them
    /// when Redis is unavailable.
    #[serde(default = "d_replicas_hint")]
    pub replicas_hint: u32,
}

/// Where the limiter's windows live.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LimitsBackend {
    #[default]
    Memory,
    Redis,
}

fn d_replicas_hint() -> u32 {
    1
}

/// The Redis server that shares limits between replicas.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]`.
    pub url: String,
    /// The longest a limit check waits for Redis before using the local
    /// limiter instead.
    #[serde(default = "d_redis_timeout_ms")]
    pub timeout_ms: u64,
    /// Prefix of every key the gateway writes.
    #[serde(default = "d_redis_prefix")]
    pub prefix: String,
}

fn d_redis_timeout_ms() -> u64 {
    5
}

fn d_redis_prefix() -> String {
    "switchyard".into()
}

/// The wait queue (see [`crate::capacity`]).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Requests waiting at most; more get their 429 or 503 at once.
    #[serde(default = "d_queue_max_len")]
    pub max_len: usize,
    /// How long a request waits at most (0: never waits).
    #[serde(default = "d_queue_max_wait_ms")]
    pub max_wait_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_len: d_queue_max_len(),
            max_wait_ms: d_queue_max_wait_ms(),
        }
    }
}

fn d_queue_max_len() -> usize {
    1024
}

fn d_queue_max_wait_ms() -> u64 {
    2000
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            warn_at: d_warn_at(),
            default_output_tokens: d_default_output_tokens(),
            max_retry_after_ms: d_max_retry_after_ms(),
            max_in_flight: None,
            queue: QueueConfig::default(),
            backend: LimitsBackend::default(),
            replicas_hint: d_replicas_hint(),
        }
    }
}

fn d_warn_at() -> f64 {
    0.9
}

fn d_default_output_tokens() -> u32 {
    512
}

fn d_max_retry_after_ms() -> u64 {
    60_000
}

/// The performance monitor's windows and alerts (see [`crate::monitor`]).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// The recent window, in seconds.
    #[serde(default = "d_window")]
    pub window_s: f64,
    /// The baseline the recent window is compared with (it includes the
    /// recent window's span; the comparison leaves it out).
    #[serde(default = "d_baseline")]
    pub baseline_s: f64,
    /// Recent p95 latency at least this many times the baseline's is degraded.
    #[serde(default = "d_degradation_ratio")]
    pub degradation_ratio: f64,
    /// ... for this long without a break before the alert.
    #[serde(default = "d_degradation_for")]
    pub degradation_for_s: f64,
    /// Fewer samples in a window decide nothing.
    #[serde(default = "d_min_samples")]
    pub min_samples: u32,
    /// The share of a deployment's recent attempts that failed over to
    /// another deployment that raises an alert.
    #[serde(default = "d_failover_rate")]
    pub failover_rate: f64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            window_s: d_window(),
            baseline_s: d_baseline(),
            degradation_ratio: d_degradation_ratio(),
            degradation_for_s: d_degradation_for(),
            min_samples: d_min_samples(),
            failover_rate: d_failover_rate(),
        }
    }
}

fn d_window() -> f64 {
    300.0
}
fn d_baseline() -> f64 {
    3600.0
}
fn d_degradation_ratio() -> f64 {
    2.0
}
fn d_degradation_for() -> f64 {
    120.0
}
fn d_min_samples() -> u32 {
    20
}
fn d_failover_rate() -> f64 {
    0.25
}

/// The record of every request (see [`crate::store`]).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The SQLite file; relative to the config's folder.
    #[serde(default = "default_store_path")]
    pub path: PathBuf,
    /// Rows older than this many days are deleted (0: kept forever).
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            path: default_store_path(),
            retention_days: default_retention_days(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_store_path() -> PathBuf {
    PathBuf::from(".switchyard/switchyard.db")
}
fn default_retention_days() -> u32 {
    30
}

/// Client (virtual) keys.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthConfig {
    /// Whether a request needs a valid key (401 without one).
    #[serde(default)]
    pub required: bool,
    /// Keys by name; the name is the caller's identity.
    #[serde(default)]
    pub keys: BTreeMap<String, ClientKeyConfig>,
}

/// One client key: stored as its SHA-256, never in clear.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientKeyConfig {
    /// `sha256:` and 64 hex digits (`switchyard keys new` prints it).
    pub hash: String,
    /// The routes it may use (names, or `prefix*`); none listed: every route.
    #[serde(default)]
    pub routes: Vec<String>,
    /// Its own limits: requests per minute and second, tokens per minute.
    pub rpm: Option<u64>,
    pub rps: Option<u64>,
    pub tpm: Option<u64>,
    /// Tags added to each of its requests (for budgets and strategies).
    #[serde(default)]
    pub tags: Vec<String>,
}

impl ClientKeyConfig {
    pub fn limits(&self) -> crate::ratelimit::Limits {
        crate::ratelimit::Limits {
            rps: self.rps,
            rpm: self.rpm,
            tpm: self.tpm,
        }
    }
}

/// The admin API's own listener.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(default = "default_admin_listen")]
    pub listen: String,
    /// The variable holding the bearer token callers must present. Without
    /// one the admin API binds to loopback only.
    pub token_env: Option<String>,
    /// Also serve `GET /metrics` on the API's listener (for scrapers that
    /// only reach it; with a token, it asks for the same token).
    #[serde(default)]
    pub metrics_on_api: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            token_env: None,
            metrics_on_api: false,
        }
    }
}

fn default_admin_listen() -> String {
    "127.0.0.1:8081".into()
}

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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body(),
        }
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

/// When a failed attempt is sent again to the same deployment (see
/// `pipeline::route::retry_wait`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Retries of one deployment after a 5xx, an overload, a refused or
    /// reset connection (then the next candidate); at most 3.
    pub retries: u32,
    /// Back-off before the first retry (full jitter: a random wait up to
    /// it), multiplied by `factor` for each next one.
    pub backoff_ms: u64,
    pub factor: f64,
    /// A 429 whose Retry-After is at most this is waited out and the same
    /// deployment asked again (once); longer or absent, the next candidate.
    pub max_retry_after_ms: u64,
    /// Times a stream that fails after it committed is continued on the
    /// next admissible deployment (see `pipeline::resume`).
    pub resumes: u32,
    /// A short Retry-After is not waited out at once: the other candidates
    /// are tried first, and the deployment asked again once it has passed
    /// only if none of them served the request.
    pub others_first: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: 2,
            backoff_ms: 250,
            factor: 2.0,
            max_retry_after_ms: 5000,
            resumes: 2,
            others_first: false,
        }
    }
}

/// See [`Deployment::health_check`].
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    /// Between checks while it answers.
    pub interval_ms: u64,
    /// While it fails, the interval doubles up to this.
    pub max_interval_ms: u64,
    /// Consecutive failed checks that mark it down, and good ones that
    /// mark it up again.
    pub down_after: u32,
    pub up_after: u32,
    /// The longest one check may take.
    pub timeout_ms: u64,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            interval_ms: 10_000,
            // Recovery is seen within 15 s plus one interval (two checks).
            max_interval_ms: 15_000,
            down_after: 2,
            up_after: 2,
            timeout_ms: 10_000,
        }
    }
}

/// See [`Route::on_content_filter`].
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OnContentFilter {
    #[default]
    Return,
    Fallback,
}

/// A model name clients may request and the deployments that can serve it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub strategy: Option<String>,
    pub evaluator: Option<String>,
    /// The share of requests whose answers the evaluator checks (0 < x <= 1;
    /// 1 when absent): a costly evaluator can judge a sample.
    pub evaluate_sample: Option<f64>,
    /// Strategies that run beside `strategy` on every request, after its
    /// answer and off its path, never routing: their choices are recorded
    /// next to the live one (`GET /admin/shadow`).
    #[serde(default)]
    pub shadow_strategies: Vec<String>,
    /// As written; [`Route::members`] once resolved.
    pub deployments: Vec<MemberEntry>,
    /// Routes tried, in order, when all of this one's deployments failed.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Requests of this route in flight at most (streams until they end).
    pub max_in_flight: Option<u32>,
    /// What a provider's content-filter refusal does: `return` it to the
    /// caller (a 400 `content_filter`, the default: another model must not
    /// turn a policy refusal into an answer) or `fallback` to the next
    /// candidate.
    #[serde(default)]
    pub on_content_filter: OnContentFilter,
    /// Retrying the same deployment before going on to the next.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Reusing answers to identical requests.
    #[serde(default)]
    pub cache: crate::cache::RouteCache,
    /// The deployments by name, with this route's priority and weight.
    #[serde(skip)]
    pub members: Vec<Member>,
}

impl Route {
    /// Whether the name is a wildcard (`openai/*`).
    pub fn is_wildcard(name: &str) -> bool {
        name.ends_with('*')
    }
}

/// A route's deployment as written: a name, a name with this route's
/// priority and weight, or a whole deployment defined inline.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum MemberEntry {
    Name(String),
    Inline(Box<Deployment>),
    Ref(MemberRef),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MemberRef {
    pub name: String,
    pub priority: Option<u32>,
    pub weight: Option<u32>,
}

/// A deployment as one route uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub priority: u32,
    pub weight: u32,
}

/// One upstream model reachable through one adapter.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// The key in the top-level map; required inline.
    #[serde(default)]
    pub name: String,
    pub adapter: String,
    pub base_url: String,
    /// In a wildcard route, `*` stands for the rest of the requested name.
    pub model: String,
    /// The variable holding its API key, or several (a key pool: requests
    /// rotate among the keys with headroom).
    pub api_key_env: Option<KeyEnvs>,
    /// Limits of each key of its pool (`rpm`, `rps`, `tpm`).
    #[serde(default)]
    pub key_limits: KeyLimits,
    /// How the key is attached; overrides what the adapter declares.
    pub auth: Option<AuthConfig>,
    /// Prices in US dollars per million tokens: prompt, completion, and
    /// prompt tokens served from the provider's cache (default: the
    /// prompt price).
    pub input_cost_per_1m: Option<f64>,
    pub output_cost_per_1m: Option<f64>,
    pub cached_input_cost_per_1m: Option<f64>,
    /// The older per-1,000-token prices, still read (× 1,000); a deployment
    /// may not set both forms of one price.
    pub input_cost_per_1k: Option<f64>,
    pub output_cost_per_1k: Option<f64>,
    /// The default for routes that do not set their own.
    #[serde(default)]
    pub priority: u32,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default = "all_capabilities")]
    pub capabilities: Vec<Capability>,
    /// Largest prompt plus completion, in tokens.
    pub context_window: Option<u32>,
    /// Whether it continues a trailing assistant message (a resumed
    /// stream's prefill); default: the adapter's `prefill` capability.
    pub prefill: Option<bool>,
    /// Active health checks: a one-token completion every so often, so a
    /// deployment that is down is marked so (and skipped) without client
    /// requests paying for it, and one that recovers gets traffic back.
    pub health_check: Option<HealthCheck>,
    /// Requests per minute and per second, and tokens per minute, sent to
    /// it at most (see [`crate::ratelimit`]).
    pub rpm: Option<u64>,
    pub rps: Option<u64>,
    pub tpm: Option<u64>,
    /// Requests in flight on it at most (streams until they end).
    pub max_in_flight: Option<u32>,
    /// Overrides of the top-level timeouts, field by field.
    pub timeouts: Option<Value>,
    /// Where it was defined (JSON path), for error messages.
    #[serde(skip)]
    pub defined_at: Option<String>,
}

/// `api_key_env`: one variable, or a pool of them.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum KeyEnvs {
    One(String),
    Many(Vec<String>),
}

/// The limits each key of a deployment's pool keeps to.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyLimits {
    pub rpm: Option<u64>,
    pub rps: Option<u64>,
    pub tpm: Option<u64>,
}

impl KeyLimits {
    pub fn limits(&self) -> crate::ratelimit::Limits {
        crate::ratelimit::Limits {
            rps: self.rps,
            rpm: self.rpm,
            tpm: self.tpm,
        }
    }
}

impl Deployment {
    /// Its prices per million tokens; an error names the fields that clash.
    pub fn prices(&self) -> Result<crate::pipeline::Prices, String> {
        let one = |per_1m: Option<f64>, per_1k: Option<f64>, what: &str| match (per_1m, per_1k) {
            (Some(_), Some(_)) => Err(format!(
                "sets both {what}_cost_per_1m and {what}_cost_per_1k: keep {what}_cost_per_1m (per million tokens; {what}_cost_per_1k × 1000)"
            )),
            (Some(m), None) => Ok(m),
            (None, Some(k)) => Ok(k * 1000.0),
            (None, None) => Ok(0.0),
        };
        let input = one(self.input_cost_per_1m, self.input_cost_per_1k, "input")?;
        Ok(crate::pipeline::Prices {
            input,
            output: one(self.output_cost_per_1m, self.output_cost_per_1k, "output")?,
            cached_input: self.cached_input_cost_per_1m.unwrap_or(input),
        })
    }

    /// Its rate limits.
    /// The variables naming its keys, in order (none: it sends no key).
    pub fn key_envs(&self) -> &[String] {
        match &self.api_key_env {
            None => &[],
            Some(KeyEnvs::One(v)) => std::slice::from_ref(v),
            Some(KeyEnvs::Many(v)) => v,
        }
    }

    pub fn limits(&self) -> crate::ratelimit::Limits {
        crate::ratelimit::Limits {
            rps: self.rps,
            rpm: self.rpm,
            tpm: self.tpm,
        }
    }

    /// The JSON path that defines deployment `name`.
    pub fn origin(&self, name: &str) -> String {
        self.defined_at
            .clone()
            .unwrap_or_else(|| format!("/deployments/{name}"))
    }
}

/// A deployment's auth scheme in the config: `"none"`, `"bearer"`,
/// `{"header": "x-api-key"}` or `{"query": "key"}`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthConfig {
    None,
    Bearer,
    Header(String),
    Query(String),
}

impl From<&AuthConfig> for AuthScheme {
    fn from(a: &AuthConfig) -> Self {
        match a {
            AuthConfig::None => AuthScheme::None,
            AuthConfig::Bearer => AuthScheme::Bearer,
            AuthConfig::Header(h) => AuthScheme::Header(h.clone()),
            AuthConfig::Query(q) => AuthScheme::Query(q.clone()),
        }
    }
}

/// Features a deployment offers (and a request may need).
#[derive(
    Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    Tools,
    JsonMode,
    Vision,
    Streaming,
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
