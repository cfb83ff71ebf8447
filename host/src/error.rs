//! The one place internal errors become HTTP responses, in OpenAI's error
//! format (`{"error": {"message", "type", "code"}}`), so clients written for
//! OpenAI handle Switchyard's errors unchanged.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::failover::{Attempt, FailureClass};

/// An error returned to the API caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is wrong; the message says where.
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is larger than the {limit} bytes this gateway accepts")]
    PayloadTooLarge { limit: usize },
    #[error("model {0:?} is not configured here; GET /v1/models lists the models you can use")]
    ModelNotFound(String),
    #[error("no route {0}")]
    NotFound(String),
    /// An upstream said the caller's request is invalid; retrying elsewhere would not help.
    #[error("deployment {deployment:?} rejected the request: {message}")]
    UpstreamRejected { deployment: String, message: String },
    /// The strategy left no candidate to try.
    #[error("no deployment of model {model:?} can serve this request: {reason}")]
    NoCandidate { model: String, reason: String },
    /// A spent budget with `action: reject` covers this request.
    #[error(
        "budget {budget:?} is spent: ${spent:.6} of ${limit:.6} this {period}; requests it covers are refused until the window ends"
    )]
    BudgetExceeded {
        budget: String,
        spent: f64,
        limit: f64,
        period: &'static str,
        retry_after_s: u64,
    },
    /// No valid client key where one is required.
    #[error("{0}")]
    Unauthorized(String),
    /// A client key on a route it may not use.
    #[error("client key {key:?} may not use model {model:?}")]
    Forbidden { key: String, model: String },
    /// The request's whole deadline (`timeouts.request_ms` or its
    /// `x-switchyard-timeout-ms`) passed before it was answered.
    #[error(
        "no answer within the request's deadline of {ms} ms (timeouts.request_ms or x-switchyard-timeout-ms)"
    )]
    DeadlineExceeded { ms: u64 },
    /// The provider's content filter refused the request or the answer
    /// (returned, not sent to another model: `on_content_filter`).
    #[error("deployment {deployment:?} refused by its content filter: {message}")]
    ContentFiltered { deployment: String, message: String },
    /// A client key at one of its own limits.
    #[error("client key {key:?} is at its {limit} limit ({max}); try again in {retry_after_ms} ms")]
    CallerRateLimited {
        key: String,
        limit: &'static str,
        max: u64,
        retry_after_ms: u64,
    },
    /// A concurrency cap (the gateway's or a route's) stayed full for the
    /// queue's whole wait.
    #[error("{what} has {max} requests in flight (max_in_flight) and none freed up in time")]
    AtCapacity { what: String, max: u32 },
    /// A feature's dependency is off or failing (e.g. feedback without the store).
    #[error("{0}")]
    Unavailable(String),
    /// A caller acting on another caller's request.
    #[error("{0}")]
    NotYours(String),
    /// An answer that cannot be put in the caller's dialect.
    #[error("{0}")]
    Untranslatable(String),
    /// Every candidate was tried and failed.
    #[error("all {} deployment(s) of model {model:?} failed: {}", .attempts.len(), summary(.attempts))]
    AllFailed {
        model: String,
        attempts: Vec<Attempt>,
    },
}

fn summary(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| {
            let class = serde_json::to_value(a.class)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            format!("{} ({class}): {}", a.deployment, a.message)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_)
            | ApiError::UpstreamRejected { .. }
            | ApiError::ContentFiltered { .. } => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::ModelNotFound(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::NoCandidate { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::BudgetExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::CallerRateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::AtCapacity { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Untranslatable(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotYours(_) => StatusCode::FORBIDDEN,
            // Held back at a concurrency cap (and perhaps limits): capacity.
            ApiError::AllFailed { attempts, .. } if held_at_capacity(attempts) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::AllFailed { attempts, .. } if all_rate_limited(attempts) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            // Every deployment that could serve it is down (circuit open).
            ApiError::AllFailed { attempts, .. } if held_by_circuits(attempts) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // Every deployment refused this request for what it contains: a
            // 5xx would make OpenAI clients retry it unchanged.
            ApiError::AllFailed { attempts, .. } if request_specific(attempts).is_some() => {
                StatusCode::BAD_REQUEST
            }
            // The gateway itself is saturated: a 503 with Retry-After, which
            // clients back off from, never a 502 that they retry at once.
            ApiError::AllFailed { attempts, .. } if saturated(attempts) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // Every adapter said this request cannot be expressed for its provider.
            ApiError::AllFailed { attempts, .. } if all_unsupported(attempts) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::AllFailed { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// OpenAI's `type` and `code` fields.
    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::BadRequest(_) => ("invalid_request_error", "invalid_request"),
            ApiError::PayloadTooLarge { .. } => ("invalid_request_error", "request_too_large"),
            ApiError::ModelNotFound(_) => ("invalid_request_error", "model_not_found"),
            ApiError::NotFound(_) => ("invalid_request_error", "not_found"),
            ApiError::UpstreamRejected { .. } => {
                ("invalid_request_error", "upstream_rejected_request")
            }
            ApiError::NoCandidate { .. } => ("server_error", "no_candidate"),
            ApiError::ContentFiltered { .. } => ("invalid_request_error", "content_filter"),
            ApiError::DeadlineExceeded { .. } => ("server_error", "request_timeout"),
            ApiError::BudgetExceeded { .. } => ("insufficient_quota", "budget_exceeded"),
            ApiError::Unauthorized(_) => ("invalid_request_error", "invalid_api_key"),
            ApiError::Forbidden { .. } => ("permission_error", "model_not_allowed"),
            ApiError::CallerRateLimited { .. } => ("rate_limit_error", "client_key_rate_limited"),
            ApiError::AtCapacity { .. } => ("server_error", "at_capacity"),
            ApiError::Untranslatable(_) => ("upstream_error", "untranslatable_answer"),
            ApiError::Unavailable(_) => ("server_error", "unavailable"),
            ApiError::NotYours(_) => ("permission_error", "not_your_request"),
            ApiError::AllFailed { attempts, .. } if held_at_capacity(attempts) => {
                ("server_error", "at_capacity")
            }
            ApiError::AllFailed { attempts, .. } if all_rate_limited(attempts) => {
                ("rate_limit_error", "all_deployments_rate_limited")
            }
            ApiError::AllFailed { attempts, .. } if held_by_circuits(attempts) => {
                ("server_error", "deployments_unavailable")
            }
            ApiError::AllFailed { attempts, .. } if saturated(attempts) => {
                ("server_error", "gateway_saturated")
            }
            ApiError::AllFailed { attempts, .. } if all_unsupported(attempts) => {
                ("invalid_request_error", "unsupported_by_provider")
            }
            ApiError::AllFailed { attempts, .. } => match request_specific(attempts) {
                Some(FailureClass::ContextLengthExceeded) => {
                    ("invalid_request_error", "context_length_exceeded")
                }
                Some(_) => ("invalid_request_error", "content_filter"),
                None => ("upstream_error", "all_deployments_failed"),
            },
        }
    }
}

/// The class every attempt failed with, when it is one that blames the
/// request (context length, content filter).
fn request_specific(attempts: &[Attempt]) -> Option<FailureClass> {
    let first = attempts.first()?.class;
    (first.is_request_specific() && attempts.iter().all(|a| a.class == first)).then_some(first)
}

/// Some attempt found the gateway saturated and none failed upstream in a way
/// that blames a deployment.
fn saturated(attempts: &[Attempt]) -> bool {
    attempts
        .iter()
        .any(|a| a.class == FailureClass::GatewaySaturated)
        && attempts.iter().all(|a| {
            matches!(
                a.class,
                FailureClass::GatewaySaturated | FailureClass::Unsupported
            )
        })
}

fn all_unsupported(attempts: &[Attempt]) -> bool {
    !attempts.is_empty()
        && attempts
            .iter()
            .all(|a| a.class == FailureClass::Unsupported)
}

/// Held back (some at a deployment's concurrency cap), the rest unable to
/// serve now: capacity, a 503.
fn held_at_capacity(attempts: &[Attempt]) -> bool {
    crate::failover::may_free_up(attempts)
        && attempts.iter().any(|a| a.class == FailureClass::AtCapacity)
}

/// Held back with some circuit open and none at a cap: the deployments
/// are down, a 503 with Retry-After when the first may be back.
fn held_by_circuits(attempts: &[Attempt]) -> bool {
    crate::failover::may_free_up(attempts)
        && attempts
            .iter()
            .any(|a| a.class == FailureClass::CircuitOpen)
}

/// Every deployment that could serve the request is at a limit (its own,
/// a key's, the provider's): a 429. Those that never could (wrong dialect,
/// no usable key) do not turn it into a 502.
fn all_rate_limited(attempts: &[Attempt]) -> bool {
    attempts
        .iter()
        .any(|a| a.class == FailureClass::RateLimited)
        && attempts.iter().all(|a| {
            matches!(
                a.class,
                FailureClass::RateLimited | FailureClass::Unsupported | FailureClass::Auth
            )
        })
}

/// The error JSON dialect a caller speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `{"error": {"message", "type", "code"}}`.
    OpenAi,
    /// `{"type": "error", "error": {"type", "message"}}`.
    Anthropic,
}

/// Anthropic's error type for an HTTP status.
fn anthropic_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.render(Dialect::OpenAi)
    }
}

impl ApiError {
    /// The response in `dialect`'s error JSON; the status and `Retry-After`
    /// are the same in both.
    pub fn render(self, dialect: Dialect) -> Response {
        let status = self.status();
        let (kind, code) = self.kind();
        let mut error = json!({ "message": self.to_string(), "type": kind, "code": code });
        let mut retry_after = None;
        if let ApiError::BudgetExceeded {
            budget,
            retry_after_s,
            ..
        } = &self
        {
            error["budget"] = json!(budget);
            retry_after = Some(retry_after_s.saturating_mul(1000));
        }
        if let ApiError::CallerRateLimited { retry_after_ms, .. } = &self {
            retry_after = Some(*retry_after_ms);
        }
        if let ApiError::AtCapacity { .. } = &self {
            retry_after = Some(1000);
        }
        if let ApiError::AllFailed { attempts, .. } = &self {
            error["attempts"] = json!(attempts);
            if status == StatusCode::TOO_MANY_REQUESTS {
                retry_after = attempts.iter().filter_map(|a| a.retry_after_ms).min();
            }
            if held_by_circuits(attempts) && !held_at_capacity(attempts) {
                // When the first circuit may close.
                retry_after = attempts.iter().filter_map(|a| a.retry_after_ms).min();
            } else if status == StatusCode::SERVICE_UNAVAILABLE {
                // The earliest a limit frees up, or a second for a cap.
                retry_after = Some(
                    attempts
                        .iter()
                        .filter_map(|a| a.retry_after_ms)
                        .min()
                        .unwrap_or(1000)
                        .min(1000),
                );
            }
        }
        let body = match dialect {
            Dialect::OpenAi => json!({ "error": error }),
            Dialect::Anthropic => json!({
                "type": "error",
                "error": {"type": anthropic_type(status), "message": error["message"]},
            }),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(ms) = retry_after
            && let Ok(v) = HeaderValue::from_str(&ms.div_ceil(1000).max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}
