//! The HTTP API: thin axum handlers over [`Gateway`]. Handlers only translate
//! HTTP to pipeline calls and answers back; every error leaves through
//! [`ApiError`]'s single mapping to OpenAI's error format.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::error::{ApiError, Dialect};
use crate::live::Live;
use crate::pipeline::{Answer, CallerHints, End, Recorder, Sinks};

/// Shared state of every handler.
pub struct AppState {
    /// The running gateway; a request takes the current one and keeps it.
    live: Arc<Live>,
    max_body_bytes: usize,
    /// Where every request's record goes (kept across reloads).
    sinks: Arc<Sinks>,
    /// Request ids: a per-process prefix and a counter (unique, cheap).
    id_prefix: u32,
    next_id: AtomicU64,
}

/// Connections the kernel queues before `accept` (capped by
/// `net.core.somaxconn`). Tokio's default of 1,024 drops SYNs in a burst of
/// new clients, and each drop costs the client a 1 s retransmit.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Accepted connections with `TCP_NODELAY`: a stream's events are written
/// one by one, and Nagle's algorithm would hold each behind the client's
/// delayed ACK (~40 ms a chunk).
pub fn nodelay(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt;
    fn set(tcp: &mut tokio::net::TcpStream) {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY on an accepted connection: {e}");
        }
    }
    listener.tap_io(set as fn(&mut tokio::net::TcpStream))
}

/// A listener on `addr` with [`LISTEN_BACKLOG`].
pub fn listen(addr: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The API router. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`: `/admin/reload`
/// answers loopback callers only.
pub fn router(live: Arc<Live>, max_body_bytes: usize) -> Router {
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let id_prefix = (created as u32) ^ std::process::id().rotate_left(16);
    let state = Arc::new(AppState {
        sinks: live.sinks().clone(),
        live,
        max_body_bytes,
        id_prefix,
        next_id: AtomicU64::new(1),
    });
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/messages", post(messages))
        .route("/v1/feedback", post(feedback))
        .route("/v1/models", get(models_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/reload", post(admin_reload))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}

async fn chat(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    serve(app, headers, body, Dialect::OpenAi).await
}

/// The Anthropic Messages API: the same pipeline, translated at both ends
/// ([`crate::messages`]).
async fn messages(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    serve(app, headers, body, Dialect::Anthropic).await
}

/// `POST /v1/feedback` ([`crate::feedback`]): 202 once recorded.
async fn feedback(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let gateway = app.live.gateway();
    let recorded = async {
        let caller = gateway.clients().identify(&headers)?;
        let body = body.map_err(|r| {
            ApiError::BadRequest(format!("cannot read request body: {}", r.body_text()))
        })?;
        crate::feedback::record(&gateway, &app.sinks, caller, &body).await
    };
    match recorded.await {
        Ok(v) => (StatusCode::ACCEPTED, axum::Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The gateway's own header names, made once: a name given as text is
/// parsed and checked again at every use.
mod names {
    use http::HeaderName;
    pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    pub const TAGS: HeaderName = HeaderName::from_static("x-switchyard-tags");
    pub const PRIORITY: HeaderName = HeaderName::from_static("x-switchyard-priority");
    pub const TIMEOUT_MS: HeaderName = HeaderName::from_static("x-switchyard-timeout-ms");
    pub const CACHE: HeaderName = HeaderName::from_static("x-switchyard-cache");
    pub const DEPLOYMENT: HeaderName = HeaderName::from_static("x-switchyard-deployment");
    pub const ATTEMPTS: HeaderName = HeaderName::from_static("x-switchyard-attempts");
}

async fn serve(
    app: Arc<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    dialect: Dialect,
) -> Response {
    crate::busy_poll::activity();
    let request_id: Arc<str> = match headers.get(names::REQUEST_ID).and_then(|v| v.to_str().ok()) {
        Some(id) if !id.is_empty() && id.len() <= 128 => Arc::from(id),
        // The counter at a fixed width: ids sort in the order they are
        // made, so the store's index on them grows at its end.
        _ => Arc::from(format!(
            "{:08x}-{:012x}",
            app.id_prefix,
            app.next_id.fetch_add(1, Ordering::Relaxed)
        )),
    };
    // Finished below, or by its pump (a stream), or when dropped (the
    // client went away while this handler waited).
    let mut rec = Recorder::new(app.sinks.clone(), request_id.clone(), Vec::new());
    // Its trace span (a no-op unless traces are on): the record keeps it
    // open to the request's end (a stream's last chunk).
    let span = crate::telemetry::request_span(&headers, &request_id);
    if let Some(r) = rec.record() {
        r.span = span.clone();
    }
    let handled = handle_chat(&app, &request_id, &headers, body, dialect, &mut rec);
    let mut response = match tracing::Instrument::instrument(handled, span).await {
        Ok(r) => {
            rec.finish(End::Answered);
            r
        }
        Err(e) => {
            tracing::info!(request_id = %request_id, "request refused: {e}");
            let r = e.render(dialect);
            rec.finish(End::Failed {
                status: r.status().as_u16(),
            });
            r
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(names::REQUEST_ID, v);
    }
    response
}

async fn handle_chat(
    app: &AppState,
    request_id: &Arc<str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    dialect: Dialect,
    rec: &mut Recorder,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: app.max_body_bytes,
            }
        } else {
            ApiError::BadRequest(format!(
                "cannot read request body: {}",
                rejection.body_text()
            ))
        }
    })?;
    let tags: Vec<String> = headers
        .get(names::TAGS)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(',')
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let gateway = app.live.gateway();
    // Who is calling: a 401 here when keys are required and none is valid.
    let caller = gateway.clients().identify(headers)?;
    // Translated once the caller is known: a caller without a key learns
    // that, not what is wrong with its body.
    let body = match dialect {
        Dialect::OpenAi => body,
        Dialect::Anthropic => Bytes::from(
            crate::messages::request::to_canonical(&body, &|route| {
                gateway.reaches_only(route, "anthropic")
            })
            .map_err(ApiError::BadRequest)?,
        ),
    };
    let mut tags = tags;
    if let Some(c) = &caller {
        tags.extend(c.tags.iter().cloned());
        tags.push(format!("caller:{}", c.name));
    }
    if let Some(r) = rec.record() {
        r.tags = tags.clone();
        r.caller = caller.as_ref().map(|c| c.name.to_string());
    }
    let priority = match headers.get(names::PRIORITY) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| "header x-switchyard-priority is not text".to_string())
                .and_then(CallerHints::parse_priority)
                .map_err(ApiError::BadRequest)?,
        ),
    };
    let timeout = match headers.get(names::TIMEOUT_MS) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|ms| (1..=3_600_000).contains(ms))
                .map(std::time::Duration::from_millis)
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "header x-switchyard-timeout-ms must be a whole number of milliseconds from 1 to 3600000".into(),
                    )
                })?,
        ),
    };
    let text = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let cache = crate::cache::Directives::parse(text(header::CACHE_CONTROL), text(names::CACHE))
        .map_err(ApiError::BadRequest)?;
    let hints = CallerHints {
        tags,
        priority,
        caller,
        timeout,
        cache,
    };
    // Boxed: the pipeline's future (~2 KB) would otherwise be held, and
    // moved, by each of the handler's futures above it.
    let (answer, cache) = Box::pin(gateway.chat(request_id.clone(), hints, body, rec)).await?;
    let mut response = match answer {
        Answer::Complete {
            deployment,
            body,
            attempts,
        } => {
            let body = match dialect {
                Dialect::OpenAi => body,
                Dialect::Anthropic => crate::messages::answer(&body)?,
            };
            let mut r = Response::new(Body::from(body));
            set(&mut r, header::CONTENT_TYPE, "application/json");
            set_route_headers(&mut r, &deployment, attempts);
            r
        }
        Answer::Stream {
            deployment,
            events,
            attempts,
        } => {
            let mut r = match dialect {
                Dialect::OpenAi => {
                    let stream = futures_util::stream::unfold(events, |mut rx| async move {
                        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
                    });
                    Response::new(Body::from_stream(stream))
                }
                Dialect::Anthropic => {
                    Response::new(Body::from_stream(crate::messages::events(events)))
                }
            };
            set(&mut r, header::CONTENT_TYPE, "text/event-stream");
            set(&mut r, header::CACHE_CONTROL, "no-cache");
            set_route_headers(&mut r, &deployment, attempts);
            r
        }
    };
    if let Some(status) = cache {
        set(&mut response, names::CACHE, status.name());
    }
    Ok(response)
}

fn set(r: &mut Response, name: header::HeaderName, value: &'static str) {
    r.headers_mut()
        .insert(name, HeaderValue::from_static(value));
}

/// Which deployment answered and after how many attempts: authoritative,
/// whatever the body says.
fn set_route_headers(r: &mut Response, deployment: &str, attempts: usize) {
    if let Ok(v) = HeaderValue::from_str(deployment) {
        r.headers_mut().insert(names::DEPLOYMENT, v);
    }
    r.headers_mut()
        .insert(names::ATTEMPTS, HeaderValue::from(attempts));
}

async fn models_handler(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let gateway = app.live.gateway();
    // The model list is for callers too.
    if let Err(e) = gateway.clients().identify(&headers) {
        return e.into_response();
    }
    let mut r = Response::new(Body::from(gateway.models()));
    set(&mut r, header::CONTENT_TYPE, "application/json");
    r
}

/// Liveness plus a detail of every plugin: its WIT version, state (active,
/// quarantined, rejected with the reason) and faults since load. The gateway
/// keeps serving whatever a plugin does, so the status stays `ok`.
async fn healthz(State(app): State<Arc<AppState>>) -> Response {
    let gateway = app.live.gateway();
    let registry = gateway.registry();
    let mut detail = serde_json::Map::new();
    for p in registry.loaded() {
        let state = p.state();
        detail.insert(
            p.id.to_string(),
            json!({
                "kind": p.kind,
                "wit": p.wit.as_str(),
                "version": p.metadata().version,
                "hash": &p.hash[..12],
                "state": match state {
                    crate::plugins::PluginState::Active => "active",
                    crate::plugins::PluginState::Quarantined { .. } => "quarantined",
                },
                "quarantine_remaining_ms": match state {
                    crate::plugins::PluginState::Quarantined { remaining_ms } => Some(remaining_ms),
                    crate::plugins::PluginState::Active => None,
                },
                "faults": p.faults(),
                // Found slow: its calls run on the plugin runtime for this long.
                "offloaded_ms": p.offloaded_for().map(|d| d.as_millis() as u64),
            }),
        );
    }
    for (id, reason) in registry.rejected() {
        detail
            .entry(id)
            .or_insert_with(|| json!({"state": "rejected", "reason": reason}));
    }
    let count = registry.loaded().len();
    let store = store_state(&app);
    (
        StatusCode::OK,
        axum::Json(
            json!({"status": "ok", "plugins": count, "plugin_detail": detail, "store": store}),
        ),
    )
        .into_response()
}

/// The store's state for `/healthz` and `/readyz`.
fn store_state(app: &AppState) -> serde_json::Value {
    match &app.sinks.store {
        None => json!({"state": "off"}),
        Some(store) => {
            let mut s = match store.status() {
                crate::store::Status::Ok => json!({"state": "ok"}),
                crate::store::Status::Degraded(why) => json!({"state": "degraded", "reason": why}),
            };
            s["dropped"] = json!(store.dropped());
            s
        }
    }
}

/// `GET /metrics` here too with `admin.metrics_on_api` (the admin token,
/// when one is set, is asked for); otherwise not found.
async fn metrics(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let gateway = app.live.gateway();
    let config = gateway.config();
    if !config.admin.metrics_on_api {
        return ApiError::NotFound("GET /metrics".into()).into_response();
    }
    if let Some(var) = &config.admin.token_env {
        let token = config.env.get(var).unwrap_or_default();
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if token.is_empty() || !crate::admin::constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return ApiError::Unauthorized(
                "GET /metrics needs Authorization: Bearer <the token in admin.token_env>".into(),
            )
            .into_response();
        }
    }
    crate::admin::metrics_response(&app.live)
}

/// Readiness: 200 when every route has a deployment it can send to now,
/// 503 naming each route that has none and why (see
/// `pipeline::ready`); plugins, the store and Redis in the detail.
async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    let gateway = app.live.gateway();
    let (reasons, mut detail) = gateway.readiness();
    let registry = gateway.registry();
    let loaded = registry.loaded();
    detail["plugins"] = json!({
        "loaded": loaded.iter().map(|p| p.id.to_string()).collect::<Vec<_>>(),
        "quarantined": loaded.iter()
            .filter(|p| matches!(p.state(), crate::plugins::PluginState::Quarantined { .. }))
            .map(|p| p.id.to_string()).collect::<Vec<_>>(),
        "rejected": registry.rejected(),
    });
    detail["store"] = store_state(&app);
    let ready = reasons.is_empty();
    detail["status"] = json!(if ready { "ready" } else { "not_ready" });
    detail["reasons"] = json!(reasons);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(detail)).into_response()
}

/// A caller on this host: loopback, also as an IPv4-mapped IPv6 address
/// (a gateway listening on `[::]`). A reverse proxy on the same host makes
/// every caller local: expose `/admin/*` through it only with its own
/// access control.
fn is_local(ip: std::net::IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Reloads the config now: 200 with a summary of what changed, or 422 with
/// every problem (the running config keeps serving). Loopback callers only,
/// until the gateway has admin keys.
async fn admin_reload(
    State(app): State<Arc<AppState>>,
    request: axum::extract::Request,
) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    if !peer.is_some_and(is_local) {
        return (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"error": {
                "message": "/admin/reload answers loopback callers only",
                "type": "permission_error",
                "code": "admin_loopback_only",
            }})),
        )
            .into_response();
    }
    // A loopback caller may still be a browser: a page on another site (a
    // cross-origin POST needs no preflight), or one whose own name resolves
    // to 127.0.0.1 (DNS rebinding, same origin but a foreign Host). The
    // admin listener refuses both the same way.
    let host = request
        .headers()
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok());
    if host.is_some_and(|h| !crate::admin::loopback_host(h)) {
        return crate::admin::error(
            StatusCode::FORBIDDEN,
            "/admin/reload answers loopback names only (127.0.0.1, [::1], localhost)",
        );
    }
    if let Some(refused) = crate::admin::plugins::cross_origin(request.headers()) {
        return refused;
    }
    reload_response(&app.live, "POST /admin/reload").await
}

/// Reloads the config and answers: 200 with the summary, or 422 listing
/// every problem.
pub async fn reload_response(live: &Arc<Live>, trigger: &str) -> Response {
    match live.reload(trigger).await {
        Ok(summary) => (
            StatusCode::OK,
            axum::Json(json!({"status": "reloaded", "summary": summary})),
        )
            .into_response(),
        Err(problems) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({
                "status": "refused",
                "error": {
                    "message": format!("the new config was refused; the running one keeps serving: {}", problems.join("; ")),
                    "type": "invalid_config",
                    "code": "config_refused",
                },
                "problems": problems,
            })),
        )
            .into_response(),
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("{method} {}", uri.path()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn local_callers_include_mapped_loopback_only() {
        for (ip, local) in [
            ("127.0.0.1", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("10.0.0.1", false),
            ("::ffff:10.0.0.1", false),
        ] {
            assert_eq!(super::is_local(ip.parse().unwrap()), local, "{ip}");
        }
    }
}
