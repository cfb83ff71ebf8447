//! Error classification for OpenAI-style upstreams (OpenAI, Azure OpenAI,
//! vLLM, Ollama, LM Studio, Groq, Together all answer errors in this shape,
//! give or take a field).

use serde_json::Value;
use switchyard_sdk::{ErrorClass, UpstreamError};

/// The fields of an error body that classification looks at.
#[derive(Default, Debug)]
pub struct ErrorInfo {
    pub message: Option<String>,
    pub code: Option<String>,
    pub kind: Option<String>,
    /// A numeric `code` some servers (vLLM) put in the body: an HTTP status.
    pub status: Option<u16>,
}

/// Reads `{"error": {...}}`, `{"error": "text"}` or a bare `{"message": ...}`.
pub fn error_info(body: &Value) -> ErrorInfo {
    let err = match body.get("error") {
        Some(Value::String(s)) => {
            return ErrorInfo {
                message: Some(s.clone()),
                ..Default::default()
            };
        }
        Some(e @ Value::Object(_)) => e,
        _ => body,
    };
    let text = |k: &str| err.get(k).and_then(Value::as_str).map(str::to_owned);
    let code = err.get("code");
    ErrorInfo {
        message: text("message"),
        code: code.and_then(Value::as_str).map(str::to_owned),
        kind: text("type"),
        status: code
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok()),
    }
}

fn is_context_length(info: &ErrorInfo) -> bool {
    let tagged = |s: &Option<String>| s.as_deref() == Some("context_length_exceeded");
    let msg = info.message.as_deref().unwrap_or("").to_ascii_lowercase();
    tagged(&info.code)
        || tagged(&info.kind)
        || msg.contains("maximum context length")
        || msg.contains("context length")
        || msg.contains("context_length_exceeded")
        || msg.contains("too many tokens")
}

fn is_content_filter(info: &ErrorInfo) -> bool {
    let tagged = |s: &Option<String>| {
        matches!(
            s.as_deref(),
            Some("content_filter" | "content_policy_violation")
        )
    };
    let msg = info.message.as_deref().unwrap_or("").to_ascii_lowercase();
    tagged(&info.code)
        || tagged(&info.kind)
        || [
            "content filter",
            "content_filter",
            "content policy",
            "content_policy",
            "content management policy",
        ]
        .iter()
        .any(|p| msg.contains(p))
}

/// The class of an error with HTTP `status`, given what its body said.
pub fn class_of(status: u16, info: &ErrorInfo, retry_after_ms: Option<u32>) -> ErrorClass {
    match status {
        429 => ErrorClass::RateLimited(retry_after_ms),
        408 | 504 => ErrorClass::Timeout,
        401 | 403 => ErrorClass::Auth,
        400 | 413 | 422 if is_context_length(info) => ErrorClass::ContextLengthExceeded,
        400 | 413 | 422 if is_content_filter(info) => ErrorClass::ContentFiltered,
        400 | 413 | 422 => ErrorClass::InvalidRequest,
        // The deployment's model is missing there; another deployment may serve.
        404 => ErrorClass::Permanent,
        500..=599 => ErrorClass::Overloaded,
        _ => ErrorClass::Permanent,
    }
}

/// Classifies a non-2xx upstream response.
pub fn classify(status: u16, headers: &[(String, String)], body: &[u8]) -> UpstreamError {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let info = json.as_ref().map(error_info).unwrap_or_default();
    let class = class_of(status, &info, switchyard_sdk::retry_after_ms(headers));
    let detail = match &info.message {
        Some(m) => m.clone(),
        None => String::from_utf8_lossy(body).chars().take(200).collect(),
    };
    UpstreamError::new(class, format!("upstream {status}: {detail}"))
}

/// Classifies an error object that arrived inside a stream (after a 200).
/// Without a better hint it is a server-side failure (500); a numeric `code`
/// in the error is taken as the status the upstream meant.
pub fn classify_stream_error(body: &Value) -> UpstreamError {
    let info = error_info(body);
    let status = info
        .status
        .filter(|s| (400..=599).contains(s))
        .unwrap_or(500);
    let mut class = class_of(status, &info, None);
    // A 500 that says what it is (context length, content filter) is that.
    if matches!(class, ErrorClass::Overloaded) {
        if is_context_length(&info) {
            class = ErrorClass::ContextLengthExceeded;
        } else if is_content_filter(&info) {
            class = ErrorClass::ContentFiltered;
        }
    }
    let detail = info
        .message
        .unwrap_or_else(|| body.to_string().chars().take(200).collect());
    UpstreamError::new(class, format!("upstream stream error: {detail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn class(status: u16, headers: &[(&str, &str)], body: &str) -> ErrorClass {
        classify(status, &h(headers), body.as_bytes()).class
    }

    #[test]
    fn rate_limits_carry_retry_after() {
        assert!(matches!(
            class(429, &[("retry-after-ms", "1500")], "{}"),
            ErrorClass::RateLimited(Some(1500))
        ));
        assert!(matches!(
            class(429, &[("retry-after", "2")], ""),
            ErrorClass::RateLimited(Some(2000))
        ));
        assert!(matches!(
            class(429, &[("retry-after", "0.25")], ""),
            ErrorClass::RateLimited(Some(250))
        ));
        assert!(matches!(
            class(429, &[("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")], ""),
            ErrorClass::RateLimited(None)
        ));
        assert!(matches!(class(429, &[], ""), ErrorClass::RateLimited(None)));
        // An HTTP-date counts from the response's own Date (the sandbox has no clock).
        assert!(matches!(
            class(
                429,
                &[
                    ("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT"),
                    ("date", "Wed, 21 Oct 2015 07:27:58 GMT")
                ],
                ""
            ),
            ErrorClass::RateLimited(Some(2000))
        ));
    }

    #[test]
    fn statuses() {
        assert!(matches!(class(408, &[], ""), ErrorClass::Timeout));
        assert!(matches!(class(504, &[], ""), ErrorClass::Timeout));
        for s in [500, 502, 503, 529, 599] {
            assert!(matches!(class(s, &[], ""), ErrorClass::Overloaded), "{s}");
        }
        assert!(matches!(class(401, &[], ""), ErrorClass::Auth));
        assert!(matches!(class(403, &[], ""), ErrorClass::Auth));
        assert!(matches!(class(404, &[], ""), ErrorClass::Permanent));
        assert!(matches!(class(418, &[], ""), ErrorClass::Permanent));
        assert!(matches!(
            class(400, &[], "{\"error\":{\"message\":\"bad\"}}"),
            ErrorClass::InvalidRequest
        ));
        assert!(matches!(
            class(422, &[], "nope"),
            ErrorClass::InvalidRequest
        ));
    }

    #[test]
    fn context_length_and_content_filter() {
        let openai = r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","code":"context_length_exceeded"}}"#;
        assert!(matches!(
            class(400, &[], openai),
            ErrorClass::ContextLengthExceeded
        ));
        let vllm = r#"{"object":"error","message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens","type":"BadRequestError","code":400}"#;
        assert!(matches!(
            class(400, &[], vllm),
            ErrorClass::ContextLengthExceeded
        ));
        assert!(matches!(
            class(413, &[], r#"{"error":"too many tokens"}"#),
            ErrorClass::ContextLengthExceeded
        ));
        let azure = r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","code":"content_filter"}}"#;
        assert!(matches!(
            class(400, &[], azure),
            ErrorClass::ContentFiltered
        ));
        assert!(matches!(
            class(
                400,
                &[],
                r#"{"error":{"code":"content_policy_violation","message":"x"}}"#
            ),
            ErrorClass::ContentFiltered
        ));
    }

    #[test]
    fn message_is_upstream_message_or_body_prefix() {
        let e = classify(400, &[], br#"{"error":{"message":"bad thing"}}"#);
        assert_eq!(e.message, "upstream 400: bad thing");
        let long = "x".repeat(500);
        let e = classify(502, &[], long.as_bytes());
        assert_eq!(e.message, format!("upstream 502: {}", "x".repeat(200)));
    }

    #[test]
    fn stream_errors_default_to_overloaded() {
        let v: Value = serde_json::from_str(r#"{"error":{"message":"boom"}}"#).unwrap();
        assert!(matches!(
            classify_stream_error(&v).class,
            ErrorClass::Overloaded
        ));
        let v: Value =
            serde_json::from_str(r#"{"error":{"message":"maximum context length is 10"}}"#)
                .unwrap();
        assert!(matches!(
            classify_stream_error(&v).class,
            ErrorClass::ContextLengthExceeded
        ));
        let v: Value =
            serde_json::from_str(r#"{"error":{"message":"slow down","code":429}}"#).unwrap();
        assert!(matches!(
            classify_stream_error(&v).class,
            ErrorClass::RateLimited(None)
        ));
    }
}
