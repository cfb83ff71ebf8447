//! What the dashboard draws beyond the record views: the overview's time
//! series (from the store) and the routes of the running config.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{AdminState, error, view};
use crate::store::series::{self, Window};

/// Query of `GET /admin/series`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SeriesQuery {
    /// `1h` (default), `24h` or `7d`.
    window: Option<String>,
}

/// `GET /admin/series?window=1h|24h|7d`: requests, errors, latency and
/// overhead percentiles, spend and cache hits per bucket, the window's
/// totals, and spend today and this month (UTC).
pub(super) async fn series(
    State(s): State<Arc<AdminState>>,
    q: Result<Query<SeriesQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let window = match q {
        Ok(Query(q)) => match Window::parse(q.window.as_deref().unwrap_or("1h")) {
            Ok(w) => w,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
        },
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("query parameters: {}", e.body_text()),
            );
        }
    };
    view(&s, move |c, now| series::series(c, window, now)).await
}

/// `GET /admin/routes`: each route of the running config with its
/// strategy, evaluator, deployments in the order of their priority (ties
/// in the configured order), fallbacks, cache and limits.
pub(super) async fn routes(State(s): State<Arc<AdminState>>) -> Response {
    let gateway = s.live.gateway();
    let config = gateway.config();
    let data: Vec<Value> = config
        .routes
        .iter()
        .map(|(name, r)| {
            let mut members: Vec<_> = r.members.iter().collect();
            members.sort_by_key(|m| m.priority);
            json!({
                "name": name,
                "wildcard": crate::config::Route::is_wildcard(name),
                "strategy": r.strategy,
                "evaluator": r.evaluator,
                "evaluate_sample": r.evaluate_sample.unwrap_or(1.0),
                "deployments": members.iter().map(|m| json!({
                    "name": m.name, "priority": m.priority, "weight": m.weight,
                })).collect::<Vec<_>>(),
                "fallbacks": r.fallbacks,
                "shadow_strategies": r.shadow_strategies,
                "max_in_flight": r.max_in_flight,
                "cache": {"enabled": r.cache.enabled, "ttl_s": r.cache.ttl_s},
                "retries": r.retry.retries,
            })
        })
        .collect();
    axum::Json(json!({ "data": data })).into_response()
}
