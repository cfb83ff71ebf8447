//! Who may call: client keys and the admin listener.

use super::*;

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
