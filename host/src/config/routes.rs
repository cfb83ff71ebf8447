//! Routes, their members and the deployments they send to.

use super::*;

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
    /// Prices in US dollars per million tokens: prompt, completion,
    /// prompt tokens served from the provider's cache and prompt tokens
    /// written to it (each of the last two defaults to the prompt price).
    pub input_cost_per_1m: Option<f64>,
    pub output_cost_per_1m: Option<f64>,
    pub cached_input_cost_per_1m: Option<f64>,
    pub cache_write_cost_per_1m: Option<f64>,
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
            cache_write: self.cache_write_cost_per_1m.unwrap_or(input),
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
