//! `POST /v1/feedback`: an application's judgement of an answer.
//!
//! `{"request_id": "...", "score": 0.8, "comment": "..."}` (score 0 to 1).
//! The request is looked up in the store (which route served it, on which
//! deployment, for which caller); the score blends into that deployment's
//! quality, which strategies read (`candidate.quality`), and is stored in
//! the `feedback` table. With client keys required, only the caller that
//! made a request may judge it.

use std::sync::Arc;

use serde::Deserialize;

use crate::error::ApiError;
use crate::pipeline::Gateway;
use crate::pipeline::outcome::Sinks;
use crate::store::{FeedbackRow, Row, query};

/// Longest comment kept, in bytes (longer ones are cut at a character boundary).
const MAX_COMMENT: usize = 2000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    request_id: String,
    score: f64,
    #[serde(default)]
    comment: Option<String>,
}

/// Whether this is the first judgement of `request_id` this process has
/// seen: judgements not yet written to the store (they are, within a
/// second or so) count once too. Bounded: forgotten in bulk when full.
fn first_judgement(request_id: &str) -> bool {
    const REMEMBERED: usize = 16_384;
    static SEEN: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<String>>> =
        std::sync::OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if seen.len() >= REMEMBERED {
        seen.clear();
    }
    seen.insert(request_id.to_string())
}

/// Records the feedback in `body`; the JSON to answer with (202).
pub async fn record(
    gateway: &Gateway,
    sinks: &Sinks,
    caller: Option<Arc<crate::auth::ClientKey>>,
    body: &[u8],
) -> Result<serde_json::Value, ApiError> {
    let b: Body = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid feedback: {e}")))?;
    if !(0.0..=1.0).contains(&b.score) {
        return Err(ApiError::BadRequest(format!(
            "`score` is {}; it must be from 0 to 1",
            b.score
        )));
    }
    if b.request_id.is_empty() || b.request_id.len() > 128 {
        return Err(ApiError::BadRequest(
            "`request_id` must be the x-request-id of an answer (1 to 128 bytes)".into(),
        ));
    }
    let Some(store) = &sinks.store else {
        return Err(ApiError::Unavailable(
            "feedback needs the store (store.enabled is false): nothing records which deployment served a request".into(),
        ));
    };
    let path = store.path().to_owned();
    let id = b.request_id.clone();
    let served = tokio::task::spawn_blocking(move || {
        let conn = query::open(&path)?;
        // A request judged before counts once in its deployment's quality
        // (a caller cannot demote a deployment for everyone by repeating
        // one judgement); each judgement is still stored.
        let judged: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM feedback WHERE request_id = ?1)",
                [&id],
                |r| r.get(0),
            )
            .map_err(query::QueryError::from)?;
        query::served(&conn, &id).map(|s| s.map(|s| (s, judged)))
    })
    .await
    .map_err(|e| ApiError::Unavailable(format!("the store lookup failed: {e}")))?
    .map_err(|e| ApiError::Unavailable(format!("the store lookup failed: {e}")))?;
    let Some((
        query::Served {
            route,
            deployment,
            caller: owner,
        },
        judged,
    )) = served
    else {
        return Err(ApiError::NotFound(format!(
            "request {:?}: no record of it (records are written within a second or so; the store keeps them for store.retention_days)",
            b.request_id
        )));
    };
    let caller = caller.map(|c| c.name.to_string());
    if gateway.clients().required && caller != owner {
        return Err(ApiError::NotYours(format!(
            "request {:?} was made by another caller: only its caller may judge it",
            b.request_id
        )));
    }
    if let Some(health) = deployment
        .as_deref()
        .and_then(|d| gateway.deployment_health(d))
        .filter(|_| !judged && first_judgement(&b.request_id))
        && health.record_quality(b.score as f32)
    {
        crate::pipeline::outcome::demoted(
            sinks,
            deployment.as_deref().unwrap_or_default(),
            route.as_deref().unwrap_or_default(),
            "feedback",
        );
    }
    let mut comment = b.comment.filter(|c| !c.is_empty());
    if let Some(c) = comment.as_mut()
        && c.len() > MAX_COMMENT
    {
        let mut end = MAX_COMMENT;
        while !c.is_char_boundary(end) {
            end -= 1;
        }
        c.truncate(end);
    }
    store.record(Row::Feedback(FeedbackRow {
        ts_ms: crate::pipeline::outcome::now_ms(),
        request_id: b.request_id.clone(),
        route,
        deployment: deployment.clone(),
        caller,
        score: b.score,
        comment,
    }));
    Ok(serde_json::json!({
        "recorded": true,
        "request_id": b.request_id,
        "deployment": deployment,
    }))
}
