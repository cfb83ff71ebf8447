//! The admin API, on its own listener (`admin.listen`): request records,
//! usage, costs, events, live deployments, and reload; and the operator
//! dashboard at `/ui` that shows them.
//!
//! Submodules: [`ui`] serves the dashboard's embedded assets, [`plugins`]
//! lists, uploads and rolls back plugin files, [`overview`] answers the
//! time series and the routes the dashboard draws.
//!
//! With `admin.token_env` set, every call needs `Authorization: Bearer
//! <token>` (compared in constant time); without it the listener is bound
//! to loopback only. Reads go to the store through their own read-only
//! connection on the blocking pool, never on the request path.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::live::Live;
use crate::store::query::{self, Filter, QueryError};

mod overview;
mod plugin_files;
pub(crate) mod plugins;
mod ui;

/// What the admin handlers share.
pub struct AdminState {
    pub live: Arc<Live>,
    /// The store's database; `None` when the store is off.
    pub store: Option<crate::store::Store>,
    pub token: Option<String>,
}

/// The admin router: the API behind the token, and the dashboard's
/// assets (public: the page asks for the token and sends it with every
/// call it makes).
pub fn router(state: Arc<AdminState>) -> Router {
    let api = Router::new()
        .route("/admin/requests", get(requests))
        .route("/admin/requests/{id}", get(request))
        .route("/admin/usage", get(usage))
        .route("/admin/costs", get(costs))
        .route("/admin/events", get(events))
        .route("/admin/quality", get(quality))
        .route("/admin/deployments", get(deployments))
        .route("/admin/budgets", get(budgets))
        .route("/admin/shadow", get(shadow))
        .route("/admin/reload", post(reload))
        .route("/admin/series", get(overview::series))
        .route("/admin/routes", get(overview::routes))
        .route("/admin/plugins", get(plugins::list))
        .route(
            "/admin/plugins/{file}",
            axum::routing::put(plugins::upload).layer(axum::extract::DefaultBodyLimit::max(
                crate::plugins::MAX_PLUGIN_BYTES as usize,
            )),
        )
        .route("/admin/plugins/{file}/rollback", post(plugins::rollback))
        .route("/metrics", get(metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such admin endpoint") })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authorize,
        ))
        .with_state(state.clone());
    ui::router(state.token.is_some()).merge(api)
}

/// Where the admin API listens: `admin.listen`, or its loopback
/// equivalent when no token protects it (with a warning).
pub fn address(listen: &str, token: bool) -> Result<SocketAddr, String> {
    let addr: SocketAddr = listen
        .parse()
        .map_err(|e| format!("admin.listen {listen:?}: {e}"))?;
    if !token && !addr.ip().is_loopback() {
        let local = SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port());
        tracing::warn!(
            "admin.listen is {addr} but no admin.token_env is set: the admin API listens on {local} only"
        );
        return Ok(local);
    }
    if !token {
        tracing::warn!(
            "the admin API on {addr} has no token (set admin.token_env): any local process may use it"
        );
    }
    Ok(addr)
}

/// Tidies the plugin folder the dashboard writes to: upload temp files a
/// gateway killed mid-upload left (older than ten minutes).
pub fn tidy_plugin_dir(dir: &std::path::Path) {
    let removed = plugin_files::remove_stale_uploads(dir, std::time::Duration::from_secs(600));
    if removed > 0 {
        tracing::info!(dir = %dir.display(), removed, "removed upload temp files left by an interrupted upload");
    }
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let kind = if status == StatusCode::UNAUTHORIZED {
        "authentication_error"
    } else if status.is_client_error() {
        "invalid_request_error"
    } else {
        "server_error"
    };
    (
        status,
        axum::Json(json!({"error": {"message": message.into(), "type": kind}})),
    )
        .into_response()
}

async fn authorize(State(state): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    // Without a token the listener is loopback-only, and only a loopback
    // name may reach it: a page whose own name resolves to 127.0.0.1 (DNS
    // rebinding) would otherwise pass the Origin check as "same origin".
    if state.token.is_none()
        && let Some(host) = req.headers().get(header::HOST)
        && !loopback_host(host.to_str().unwrap_or(""))
    {
        return error(
            StatusCode::FORBIDDEN,
            "without admin.token_env the admin API answers loopback names only (127.0.0.1, [::1], localhost)",
        );
    }
    if !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    ) && let Some(refused) = plugins::cross_origin(req.headers())
    {
        return refused;
    }
    if let Some(token) = &state.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return error(
                StatusCode::UNAUTHORIZED,
                "the admin API needs Authorization: Bearer <the token in admin.token_env>",
            );
        }
    }
    next.run(req).await
}

/// Whether a `Host` header names this machine's loopback.
pub(crate) fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Runs a store view on the blocking pool.
pub(crate) async fn view(
    state: &AdminState,
    f: impl FnOnce(&rusqlite::Connection, i64) -> Result<Value, QueryError> + Send + 'static,
) -> Response {
    let Some(store) = &state.store else {
        return error(
            StatusCode::NOT_FOUND,
            "the store is off (store.enabled is false): nothing is recorded",
        );
    };
    let path: PathBuf = store.path().to_owned();
    let result = tokio::task::spawn_blocking(move || {
        let conn = query::open(&path)?;
        f(&conn, crate::pipeline::outcome::now_ms())
    })
    .await;
    match result {
        Ok(Ok(v)) => axum::Json(v).into_response(),
        Ok(Err(QueryError::BadFilter(m))) => error(StatusCode::BAD_REQUEST, m),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("admin query failed: {e}"),
        ),
    }
}

type Filters = Result<Query<Filter>, axum::extract::rejection::QueryRejection>;
type View = fn(&rusqlite::Connection, &Filter, i64) -> Result<Value, QueryError>;

/// A store view with the request's filters (a bad one is a 400 naming it).
async fn filtered(s: &AdminState, q: Filters, v: View) -> Response {
    match q {
        Ok(Query(f)) => view(s, move |c, now| v(c, &f, now)).await,
        Err(e) => error(
            StatusCode::BAD_REQUEST,
            format!("query parameters: {}", e.body_text()),
        ),
    }
}

async fn quality(State(s): State<Arc<AdminState>>, q: Filters) -> Response {
    filtered(&s, q, query::quality).await
}

async fn requests(State(s): State<Arc<AdminState>>, q: Filters) -> Response {
    filtered(&s, q, query::requests).await
}

async fn request(State(s): State<Arc<AdminState>>, Path(id): Path<String>) -> Response {
    let wanted = id.clone();
    let r = view(&s, move |c, _| {
        Ok(query::request(c, &wanted)?.unwrap_or(Value::Null))
    })
    .await;
    if r.status() != StatusCode::OK {
        return r;
    }
    let body = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    if body.as_ref() == b"null" {
        return error(
            StatusCode::NOT_FOUND,
            format!("no request {id:?} in the store"),
        );
    }
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Shadow strategies' agreement and what-if figures, priced with the live
/// config's deployments.
async fn shadow(State(s): State<Arc<AdminState>>, q: Filters) -> Response {
    let Ok(Query(f)) = q else {
        return filtered(&s, q, query::summary).await;
    };
    let prices = crate::shadow::whatif::prices_of(s.live.gateway().config());
    view(&s, move |c, now| {
        crate::shadow::report::report(c, &f, now, &prices)
    })
    .await
}

async fn usage(State(s): State<Arc<AdminState>>, q: Filters) -> Response {
    filtered(&s, q, query::usage).await
}

async fn costs(State(s): State<Arc<AdminState>>, q: Filters) -> Response {
    filtered(&s, q, query::costs).await
}

async fn events(State(s): State<Arc<AdminState>>, q: Filters) -> Response {
    filtered(&s, q, query::events).await
}

/// Filters of `GET /admin/deployments` (the model-registry queries).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentFilter {
    adapter: Option<String>,
    capability: Option<String>,
    /// At least this context window (tokens).
    min_context: Option<u32>,
    /// At most this output price (per 1M tokens).
    max_output_cost_per_1m: Option<f64>,
}

async fn deployments(
    State(s): State<Arc<AdminState>>,
    q: Result<Query<DeploymentFilter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let f = match q {
        Ok(Query(f)) => f,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("query parameters: {}", e.body_text()),
            );
        }
    };
    let gateway = s.live.gateway();
    let monitor = &s.live.sinks().monitor;
    let data: Vec<Value> = gateway
        .deployment_views()
        .into_iter()
        .map(|mut d| {
            let name = d["name"].as_str().unwrap_or_default().to_string();
            d["stats"] = monitor.view(&name).unwrap_or(Value::Null);
            d
        })
        .filter(|d| {
            f.adapter
                .as_ref()
                .is_none_or(|a| d["adapter"] == a.as_str())
        })
        .filter(|d| {
            f.capability.as_ref().is_none_or(|c| {
                d["capabilities"]
                    .as_array()
                    .is_some_and(|caps| caps.iter().any(|x| x == c.as_str()))
            })
        })
        .filter(|d| {
            f.min_context.is_none_or(|m| {
                d["context_window"]
                    .as_u64()
                    .is_some_and(|w| w >= u64::from(m))
            })
        })
        .filter(|d| {
            f.max_output_cost_per_1m.is_none_or(|m| {
                d["prices"]["output_per_1m"]
                    .as_f64()
                    .is_some_and(|p| p <= m)
            })
        })
        .collect();
    axum::Json(json!({ "data": data })).into_response()
}

async fn budgets(State(s): State<Arc<AdminState>>) -> Response {
    axum::Json(
        s.live
            .sinks()
            .budgets
            .view(crate::pipeline::outcome::now_ms()),
    )
    .into_response()
}

async fn reload(State(s): State<Arc<AdminState>>) -> Response {
    crate::server::reload_response(&s.live, "admin API").await
}

/// `GET /metrics`: Prometheus text exposition.
async fn metrics(State(s): State<Arc<AdminState>>) -> Response {
    metrics_response(&s.live)
}

/// The Prometheus text exposition, as a response (the admin listener's,
/// and the API's with `admin.metrics_on_api`).
pub fn metrics_response(live: &Live) -> Response {
    let text = live.sinks().metrics.render(live);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::loopback_host;

    #[test]
    fn only_loopback_names_without_a_token() {
        for ok in [
            "127.0.0.1:8081",
            "127.0.0.1",
            "[::1]:8081",
            "localhost:8081",
            "LOCALHOST",
            "127.1.2.3:1",
        ] {
            assert!(loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:8081",
            "10.0.0.1:8081",
            "",
            "[2001:db8::1]:80",
            "localhost.evil.example",
        ] {
            assert!(!loopback_host(bad), "{bad}");
        }
    }
}
