//! The rows the store keeps, as a request's record and the other features
//! hand them to [`Store::record`](super::Store::record).

/// One finished request.
#[derive(Clone, Debug, Default)]
pub struct RequestRow {
    pub id: std::sync::Arc<str>,
    pub ts_ms: i64,
    pub route: String,
    pub caller: Option<String>,
    pub tags: Option<String>,
    pub stream: bool,
    pub status: u16,
    pub outcome: &'static str,
    pub deployment: Option<String>,
    pub attempts: u32,
    pub latency_ms: f64,
    pub overhead_ms: Option<f64>,
    pub ttft_ms: Option<f64>,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    pub cost: Option<f64>,
    pub estimated: bool,
    pub verdict: Option<String>,
    /// What the response cache did (`hit`, `miss`, `bypass`).
    pub cache: Option<&'static str>,
    /// The cost a cache hit saved.
    pub saved_usd: Option<f64>,
}

/// One response cache entry.
#[derive(Clone, Debug)]
pub struct CacheRow {
    pub key: crate::cache::Key,
    pub route: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub deployment: String,
    pub cost: f64,
    pub body: bytes::Bytes,
}

/// One attempt of a request on one deployment.
#[derive(Clone, Debug, Default)]
pub struct AttemptRow {
    pub request_id: std::sync::Arc<str>,
    pub n: u32,
    pub ts_ms: i64,
    pub deployment: String,
    pub adapter: String,
    /// The failure class's name (`None`: it succeeded).
    pub class: Option<&'static str>,
    pub status: Option<u16>,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    pub cost: Option<f64>,
    pub billed: bool,
    /// Its usage was estimated from text lengths (the upstream sent none).
    pub estimated: bool,
    /// Stream events its adapter skipped as malformed.
    pub malformed: u32,
    /// The evaluator's verdict on this attempt's answer.
    pub quality: Option<QualityRow>,
}

/// An evaluator's verdict on one attempt's answer.
#[derive(Clone, Debug, Default)]
pub struct QualityRow {
    pub evaluator: String,
    /// `None`: the evaluator failed (its reason is in `reasons`).
    pub score: Option<f32>,
    pub pass: Option<bool>,
    /// JSON list of the evaluator's reasons (`None`: it gave none).
    pub reasons: Option<String>,
}

/// Something that happened (a failover, a circuit opening, an alert).
#[derive(Clone, Debug, Default)]
pub struct EventRow {
    pub ts_ms: i64,
    pub kind: String,
    pub subject: String,
    /// JSON.
    pub detail: String,
}

/// An application's judgement of an answer (`POST /v1/feedback`).
#[derive(Debug, Clone, Default)]
pub struct FeedbackRow {
    pub ts_ms: i64,
    pub request_id: String,
    pub route: Option<String>,
    pub deployment: Option<String>,
    pub caller: Option<String>,
    /// 0 (useless) to 1 (perfect).
    pub score: f64,
    pub comment: Option<String>,
}

/// A shadow strategy's decision on one request (see [`crate::shadow`]).
#[derive(Debug, Clone, Default)]
pub struct ShadowRow {
    pub ts_ms: i64,
    pub request_id: String,
    pub route: String,
    pub strategy: String,
    pub live_strategy: Option<String>,
    /// The live order's first deployment.
    pub live_choice: Option<String>,
    /// The shadow's first deployment (none: it failed, see `error`).
    pub choice: Option<String>,
    /// The deployment that served the request (none: it failed).
    pub served: Option<String>,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    pub cost: Option<f64>,
    pub error: Option<String>,
}

/// What the writer is handed. A request comes with its attempts, in one
/// queue slot and one transaction: a crash never leaves one without the other.
pub enum Row {
    Request(RequestRow, Vec<AttemptRow>),
    Event(EventRow),
    Feedback(FeedbackRow),
    Shadow(ShadowRow),
    /// A response cache entry (see [`crate::cache`]).
    CachePut(CacheRow),
    /// Commit everything before this, then answer (tests, benchmarks, shutdown).
    Flush(std::sync::mpsc::Sender<()>),
}
