//! The host's own types for everything that crosses the plugin boundary.
//!
//! Config, failover, upstream, health and the pipeline speak these types
//! only; each WIT version's generated bindings are converted to and from them
//! in one module (`plugins::abi::v0_1`, `plugins::abi::v0_2`). So a new WIT
//! version touches the plugin ABI edge, not the rest of the gateway, and two
//! versions can be loaded side by side.

use std::fmt;
use std::sync::Arc;

/// The three plugin kinds; each is one WIT world.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Adapter,
    Strategy,
    Evaluator,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Adapter, Kind::Strategy, Kind::Evaluator];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Adapter => "adapter",
            Kind::Strategy => "strategy",
            Kind::Evaluator => "evaluator",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The WIT package versions the host loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WitVersion {
    V0_1,
    V0_2,
}

impl WitVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            WitVersion::V0_1 => "0.1.0",
            WitVersion::V0_2 => "0.2.0",
        }
    }
}

impl fmt::Display for WitVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Features a request needs or a deployment offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(u8);

impl Capabilities {
    pub const TOOLS: Self = Self(1);
    pub const JSON_MODE: Self = Self(2);
    pub const VISION: Self = Self(4);
    pub const STREAMING: Self = Self(8);
    const NAMES: [(Self, &'static str); 4] = [
        (Self::TOOLS, "tools"),
        (Self::JSON_MODE, "json-mode"),
        (Self::VISION, "vision"),
        (Self::STREAMING, "streaming"),
    ];

    pub const fn empty() -> Self {
        Self(0)
    }

    pub const fn all() -> Self {
        Self(15)
    }

    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }

    /// The set without `other`'s members.
    pub const fn without(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Each capability in the set.
    pub fn iter(self) -> impl Iterator<Item = Self> {
        Self::NAMES
            .into_iter()
            .map(|(c, _)| c)
            .filter(move |c| self.contains(*c))
    }

    /// Comma-separated names, or "nothing special".
    pub fn names(self) -> String {
        let named: Vec<&str> = Self::NAMES
            .iter()
            .filter(|(c, _)| self.contains(*c))
            .map(|(_, n)| *n)
            .collect();
        if named.is_empty() {
            "nothing special".into()
        } else {
            named.join(", ")
        }
    }
}

impl std::ops::BitOr for Capabilities {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Capabilities {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

/// How urgent the caller says a request is (`x-switchyard-priority`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TaskPriority {
    Low,
    #[default]
    Normal,
    High,
    Critical,
}

impl TaskPriority {
    /// Parses a priority header value, naming the accepted values on error.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "low" => Ok(Self::Low),
            "normal" => Ok(Self::Normal),
            "high" => Ok(Self::High),
            "critical" => Ok(Self::Critical),
            other => Err(format!(
                "header x-switchyard-priority: {other:?} is not one of low, normal, high, critical"
            )),
        }
    }
}

/// What the host read off a request, for strategies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RequestSummary {
    pub model: String,
    pub input_tokens: u32,
    pub max_output_tokens: Option<u32>,
    pub stream: bool,
    pub needs: Capabilities,
    pub priority: TaskPriority,
    pub tags: Vec<String>,
}

/// One deployment of a route with the host's live view of it, for strategies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Candidate {
    pub deployment: String,
    pub adapter: String,
    pub healthy: bool,
    pub headroom: f32,
    pub in_flight: u32,
    pub error_rate: f32,
    pub latency_ms: f32,
    /// US dollars per million tokens.
    pub input_cost_per_1m: f64,
    pub output_cost_per_1m: f64,
    pub cached_input_cost_per_1m: f64,
    pub priority: u32,
    pub weight: u32,
    pub quality: f32,
    pub supports: Capabilities,
    /// The performance monitor's figures over its recent window (shared:
    /// refreshed at most once a second, read by every request).
    pub recent: Arc<WindowStats>,
}

/// A deployment's figures over the monitor's recent window; all zero while
/// `attempts` is 0.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowStats {
    pub attempts: u32,
    pub requests_per_minute: f32,
    pub success_rate: f32,
    pub latency_p50_ms: f32,
    pub latency_p95_ms: f32,
    pub latency_p99_ms: f32,
    pub ttft_p50_ms: f32,
    pub ttft_p95_ms: f32,
    pub output_tokens_per_second: f32,
    /// Share of attempts that failed, by failure class name.
    pub errors: Vec<(&'static str, f32)>,
}

/// An evaluator's judgement of an answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub score: f32,
    pub pass: bool,
    pub reasons: Vec<String>,
}

/// The deployment an adapter call is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub deployment: String,
    pub model: String,
}

/// How the host attaches a deployment's key: declared once per adapter (or
/// per deployment in the config), never per request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AuthScheme {
    None,
    #[default]
    Bearer,
    Header(String),
    Query(String),
}

/// How an upstream frames a streamed body; the host splits it into events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StreamFraming {
    #[default]
    Sse,
    Ndjson,
    /// v0.1 adapters parse raw bytes themselves, on a pinned instance.
    Raw,
}

/// Token accounting of one answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Prompt tokens served from the provider's prompt cache.
    pub cached_prompt_tokens: u32,
    pub reasoning_tokens: u32,
    /// Prompt tokens written to the provider's prompt cache (counted in
    /// `prompt_tokens`, not in `cached_prompt_tokens`).
    pub cache_write_tokens: u32,
}

impl Usage {
    /// The prompt's tokens by price: (plain, read from the cache, written
    /// to it), adding up to `prompt_tokens`. Counts an upstream overstates
    /// are capped at the prompt, reads first, so costs and token metrics
    /// agree and neither goes negative.
    pub fn prompt_split(&self) -> (u32, u32, u32) {
        let cached = self.cached_prompt_tokens.min(self.prompt_tokens);
        let written = self.cache_write_tokens.min(self.prompt_tokens - cached);
        (self.prompt_tokens - cached - written, cached, written)
    }
}

/// Rate-limit state an upstream reported in its headers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotaHint {
    pub limit_requests: Option<u32>,
    pub remaining_requests: Option<u32>,
    pub reset_requests_ms: Option<u32>,
    pub limit_tokens: Option<u32>,
    pub remaining_tokens: Option<u32>,
    pub reset_tokens_ms: Option<u32>,
}

/// The request an adapter built; the host adds the key and owns the transport.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpstreamRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// v0.1 adapters chose the auth scheme per request; v0.2 ones declare it.
    pub auth: Option<AuthScheme>,
}

/// Why an adapter built no request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// The provider cannot serve the request as asked: the caller's 400.
    InvalidRequest(String),
    /// The adapter failed: a plugin fault.
    Failed(String),
}

/// A complete upstream response.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UpstreamResponse {
    pub status: u16,
    pub headers: HeaderBlock,
    pub body: Vec<u8>,
}

/// Response headers as adapters are shown them: one `name: value` line
/// each, ending in a line feed, names lower case, grouped by name in the
/// order each name first came (`HeaderMap`'s order).
///
/// Kept as the text it crosses into the sandbox as (WIT 0.2's
/// `header-block`): one string per call whatever the number of headers,
/// where a list of pairs costs the guest two allocations, and the host two
/// calls into it, per header. Values are visible text (see
/// [`header_block`](crate::upstream::header_block)), so a line break never
/// appears in one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderBlock(String);

impl HeaderBlock {
    /// Appends one header. `name` must be a header name and `value` free of
    /// line breaks (callers pass what `http` validated).
    pub fn push(&mut self, name: &str, value: &str) {
        debug_assert!(!name.contains([':', '\n']) && !value.contains(['\r', '\n']));
        self.0.reserve(name.len() + value.len() + 3);
        self.0.push_str(name);
        self.0.push_str(": ");
        self.0.push_str(value);
        self.0.push('\n');
    }

    /// The block as text, as an adapter of WIT 0.2 receives it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The headers as (name, value) pairs, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .split_terminator('\n')
            .filter_map(|line| line.split_once(": "))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for HeaderBlock {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(pairs: I) -> Self {
        let mut block = HeaderBlock::default();
        for (name, value) in pairs {
            block.push(name, value);
        }
        block
    }
}

/// An adapter's classification of a failed upstream call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    RateLimited(Option<u32>),
    Overloaded,
    Timeout,
    ContextLengthExceeded,
    ContentFiltered,
    Auth,
    InvalidRequest,
    Permanent,
}

/// An upstream failure as the adapter classified it.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamError {
    pub class: ErrorClass,
    pub message: String,
    pub quota: Option<QuotaHint>,
}

/// A canonical non-streamed answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ChatResponse {
    pub body: String,
    pub usage: Option<Usage>,
    pub quota: Option<QuotaHint>,
}

/// Events of a streamed body as the host framed them, packed the way
/// `stream-events` (WIT v0.2) carries them into a plugin: each event's name
/// and data back to back in `text`, and where each of them ends in `ends`
/// (two offsets an event), so a call's events cross the boundary as one
/// string and one list whatever their number.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamEvents {
    pub text: String,
    pub ends: Vec<u32>,
}

impl StreamEvents {
    /// Appends an event: its name (SSE `event:` field, empty when absent)
    /// and its data.
    pub fn push(&mut self, event: &str, data: &str) {
        self.text.push_str(event);
        self.ends.push(offset(self.text.len()));
        self.text.push_str(data);
        self.ends.push(offset(self.text.len()));
    }

    /// The number of events.
    pub fn len(&self) -> usize {
        self.ends.len() / 2
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Each event's name and data, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        let mut start = 0;
        self.ends.chunks_exact(2).map(move |pair| {
            let (name, data) = (pair[0] as usize, pair[1] as usize);
            let event = (&self.text[start..name], &self.text[name..data]);
            start = data;
            event
        })
    }
}

/// A byte offset in a call's events (bounded far below 4 GiB by the
/// framer's line limit and the size of one read).
fn offset(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// What one step of stream parsing produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StreamBatch {
    pub chunks: Vec<String>,
    pub usage: Option<Usage>,
    pub done: bool,
    /// Events the adapter skipped as malformed (v0.2 adapters report them).
    pub malformed: u32,
}

/// Log levels of the host interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// What a plugin says about itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    pub name: String,
    pub version: String,
    pub capabilities: Vec<String>,
    /// Adapters only (v0.2): the declared auth scheme.
    pub auth: Option<AuthScheme>,
    /// Adapters only: how their streams are framed.
    pub framing: StreamFraming,
    /// Adapters only (v0.2): the response headers they read (names, or
    /// prefixes ending in `-`); `None`: all.
    pub response_headers: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_a_set() {
        let mut c = Capabilities::TOOLS | Capabilities::VISION;
        assert!(c.contains(Capabilities::TOOLS));
        assert!(!c.contains(Capabilities::STREAMING));
        c.insert(Capabilities::STREAMING);
        assert_eq!(c.names(), "tools, vision, streaming");
        assert_eq!(Capabilities::empty().names(), "nothing special");
        assert!(Capabilities::all().contains(c));
    }

    #[test]
    fn priority_parses_and_names_the_choices() {
        assert_eq!(TaskPriority::parse(" HIGH ").unwrap(), TaskPriority::High);
        assert!(
            TaskPriority::parse("urgent")
                .unwrap_err()
                .contains("low, normal")
        );
    }
}
