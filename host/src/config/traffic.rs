//! Traffic control: spend budgets, rate limits (in memory or Redis) and the queue.

use super::*;

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
