//! Google's errors: classified by the SDK's shared rules, plus the retry
//! delay Google gives in the body rather than in a header.
//!
//! A 429 from Gemini says when to retry in `error.details[]` as a
//! `google.rpc.RetryInfo` (`"retryDelay": "31s"`), usually with no
//! `Retry-After` header; without it the host would cool the deployment down
//! for a guessed time.

use std::borrow::Cow;

use serde::Deserialize;
use switchyard_sdk::errors::{classify, classify_stream_error};
use switchyard_sdk::{ErrorClass, HttpResponse, UpstreamError, parse_duration_ms};

/// What this adapter reads of Google's error body
/// (`{"error": {"status", "message", "details": [...]}}`).
#[derive(Deserialize)]
struct GoogleError<'a> {
    #[serde(borrow, default)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    details: Vec<Detail<'a>>,
}

/// One of `error.details`: an `ErrorInfo` (`reason`) or a `RetryInfo`
/// (`retryDelay`).
#[derive(Deserialize)]
struct Detail<'a> {
    #[serde(borrow, default)]
    reason: Option<Cow<'a, str>>,
    #[serde(rename = "retryDelay", borrow, default)]
    retry_delay: Option<Cow<'a, str>>,
}

/// The body's `error` object, when the body has that shape.
fn google_error(body: &[u8]) -> Option<GoogleError<'_>> {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        error: GoogleError<'a>,
    }
    serde_json::from_slice::<Body>(body).ok().map(|b| b.error)
}

/// A non-2xx response's error.
pub fn upstream(response: &HttpResponse) -> UpstreamError {
    let mut e = classify(response.status, &response.headers, &response.body);
    if e.class == ErrorClass::InvalidRequest
        && let Some(class) = deployment_fault(&response.body)
    {
        e.class = class;
    }
    with_retry_delay(e, &response.body)
}

/// Google answers some faults of the deployment, not of the request, with a
/// 400: a refused key (`API_KEY_INVALID`: "API key not valid") and a service
/// the project or its region cannot use (`FAILED_PRECONDITION`: "User
/// location is not supported"). As an invalid request they would go back to
/// the caller untried elsewhere, and one bad key would fail the whole route;
/// as `auth` and `permanent` the next deployment (or key) serves.
fn deployment_fault(body: &[u8]) -> Option<ErrorClass> {
    let error = google_error(body)?;
    let key_refused = error
        .details
        .iter()
        .any(|d| d.reason.as_deref() == Some("API_KEY_INVALID"))
        || error
            .message
            .is_some_and(|m| m.starts_with("API key not valid"));
    if key_refused {
        Some(ErrorClass::Auth)
    } else if error.status.as_deref() == Some("FAILED_PRECONDITION") {
        Some(ErrorClass::Permanent)
    } else {
        None
    }
}

/// An error object that arrived inside a stream (`event` is the whole event).
pub fn in_stream(event: &str) -> UpstreamError {
    let value = serde_json::from_str(event).unwrap_or_default();
    with_retry_delay(classify_stream_error(&value), event.as_bytes())
}

/// `e`, with the body's retry delay when it is a rate limit without one.
fn with_retry_delay(mut e: UpstreamError, body: &[u8]) -> UpstreamError {
    if e.class == ErrorClass::RateLimited(None) {
        e.class = ErrorClass::RateLimited(retry_delay_ms(body));
    }
    e
}

/// The `retryDelay` of the body's `RetryInfo` detail, in milliseconds.
fn retry_delay_ms(body: &[u8]) -> Option<u32> {
    google_error(body)?
        .details
        .iter()
        .find_map(|d| d.retry_delay.as_deref().and_then(parse_duration_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXHAUSTED: &str = r#"{"error":{"code":429,"message":"You exceeded your current quota.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaValue":"10"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"31s"}]}}"#;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: switchyard_sdk::header_block(headers),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn retry_delay_comes_from_the_body_unless_a_header_says() {
        let e = upstream(&response(429, &[], EXHAUSTED));
        assert_eq!(e.class, ErrorClass::RateLimited(Some(31_000)));
        assert_eq!(e.message, "upstream 429: You exceeded your current quota.");
        let e = upstream(&response(429, &[("retry-after", "5")], EXHAUSTED));
        assert_eq!(e.class, ErrorClass::RateLimited(Some(5_000)));
        let e = upstream(&response(
            429,
            &[],
            r#"{"error":{"code":429,"details":[{"retryDelay":"0.5s"}]}}"#,
        ));
        assert_eq!(e.class, ErrorClass::RateLimited(Some(500)));
        for body in [
            "",
            "{}",
            r#"{"error":{"details":[{"retryDelay":"soon"}]}}"#,
            r#"{"error":"x"}"#,
        ] {
            let e = upstream(&response(429, &[], body));
            assert_eq!(e.class, ErrorClass::RateLimited(None), "{body}");
        }
        // Only rate limits get a delay.
        let e = upstream(&response(503, &[], EXHAUSTED));
        assert_eq!(e.class, ErrorClass::Overloaded);
    }

    #[test]
    fn a_refused_key_or_an_unusable_project_is_the_deployment_s_fault() {
        let key = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}}]}}"#;
        assert_eq!(upstream(&response(400, &[], key)).class, ErrorClass::Auth);
        // The reason alone, or the message alone.
        let reason = r#"{"error":{"code":400,"message":"x","status":"INVALID_ARGUMENT","details":[{"reason":"API_KEY_INVALID"}]}}"#;
        assert_eq!(
            upstream(&response(400, &[], reason)).class,
            ErrorClass::Auth
        );
        let message = r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(
            upstream(&response(400, &[], message)).class,
            ErrorClass::Auth
        );
        let region = r#"{"error":{"code":400,"message":"User location is not supported for the API use.","status":"FAILED_PRECONDITION"}}"#;
        assert_eq!(
            upstream(&response(400, &[], region)).class,
            ErrorClass::Permanent
        );
        // The caller's own mistakes stay theirs.
        let bad = r#"{"error":{"code":400,"message":"Invalid JSON payload received. Unknown name \"foo\": Cannot find field.","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(
            upstream(&response(400, &[], bad)).class,
            ErrorClass::InvalidRequest
        );
        assert_eq!(
            upstream(&response(400, &[], "not json")).class,
            ErrorClass::InvalidRequest
        );
    }

    #[test]
    fn stream_errors_too() {
        assert_eq!(
            in_stream(EXHAUSTED).class,
            ErrorClass::RateLimited(Some(31_000))
        );
        let e = in_stream(
            r#"{"error":{"code":500,"message":"An internal error has occurred.","status":"INTERNAL"}}"#,
        );
        assert_eq!(e.class, ErrorClass::Overloaded);
        assert_eq!(
            e.message,
            "upstream stream error: An internal error has occurred."
        );
    }
}
