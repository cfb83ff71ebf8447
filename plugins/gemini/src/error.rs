//! Google's errors: classified by the SDK's shared rules, plus the retry
//! delay Google gives in the body rather than in a header.
//!
//! A 429 from Gemini says when to retry in `error.details[]` as a
//! `google.rpc.RetryInfo` (`"retryDelay": "31s"`), usually with no
//! `Retry-After` header; without it the host would cool the deployment down
//! for a guessed time.

use serde::Deserialize;
use switchyard_sdk::errors::{classify, classify_stream_error};
use switchyard_sdk::{ErrorClass, HttpResponse, UpstreamError, parse_duration_ms};

/// A non-2xx response's error.
pub fn upstream(response: &HttpResponse) -> UpstreamError {
    let e = classify(response.status, &response.headers, &response.body);
    with_retry_delay(e, &response.body)
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
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        error: Error<'a>,
    }
    #[derive(Deserialize)]
    struct Error<'a> {
        #[serde(borrow, default)]
        details: Vec<Detail<'a>>,
    }
    #[derive(Deserialize)]
    struct Detail<'a> {
        #[serde(rename = "retryDelay", borrow, default)]
        retry_delay: Option<&'a str>,
    }
    let body: Body = serde_json::from_slice(body).ok()?;
    body.error
        .details
        .iter()
        .find_map(|d| d.retry_delay.and_then(parse_duration_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXHAUSTED: &str = r#"{"error":{"code":429,"message":"You exceeded your current quota.","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaValue":"10"}]},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"31s"}]}}"#;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
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
