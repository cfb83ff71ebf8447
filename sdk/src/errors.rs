//! Classifying upstream errors, for every dialect.
//!
//! Providers answer errors in a few shapes: OpenAI's `{"error": {"message",
//! "type", "code"}}` (Azure, vLLM, Groq, Together, LM Studio give or take a
//! field), Anthropic's `{"type": "error", "error": {"type", "message"}}`,
//! Google's `{"error": {"code", "message", "status"}}`, Ollama's
//! `{"error": "text"}`. [`error_info`] reads them all, and [`class_of`]
//! decides the [`ErrorClass`] from the HTTP status and what the body said,
//! so every adapter classifies the same failure the same way.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};

use serde_json::Value;

use crate::adapter::{ErrorClass, UpstreamError};

/// The fields of an error body that classification looks at.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct ErrorInfo {
    /// The human-readable message.
    pub message: Option<String>,
    /// A string `code` (OpenAI: `context_length_exceeded`, `content_filter`).
    pub code: Option<String>,
    /// The error's `type` (OpenAI: `invalid_request_error`; Anthropic:
    /// `overloaded_error`, `rate_limit_error`, ...).
    pub kind: Option<String>,
    /// Google's `status` (`RESOURCE_EXHAUSTED`, `INVALID_ARGUMENT`, ...).
    pub status_text: Option<String>,
    /// A numeric `code` in the body (vLLM, Google): an HTTP status.
    pub status: Option<u16>,
}

impl ErrorInfo {
    /// The HTTP status the body implies on its own: its numeric code, else
    /// what its `type` or `status` names. For errors that arrive inside a
    /// 200 stream, where the response status says nothing.
    pub fn implied_status(&self) -> Option<u16> {
        if let Some(s) = self.status.filter(|s| (400..=599).contains(s)) {
            return Some(s);
        }
        let by_kind = self.kind.as_deref().and_then(|k| {
            Some(match k {
                "overloaded_error" => 529,
                "rate_limit_error" | "rate_limit_exceeded" => 429,
                "api_error" | "server_error" => 500,
                "authentication_error" => 401,
                "permission_error" => 403,
                "not_found_error" => 404,
                "request_too_large" => 413,
                "invalid_request_error" => 400,
                "timeout_error" => 504,
                _ => return None,
            })
        });
        by_kind.or_else(|| {
            Some(match self.status_text.as_deref()? {
                "RESOURCE_EXHAUSTED" => 429,
                "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => 400,
                "UNAUTHENTICATED" => 401,
                "PERMISSION_DENIED" => 403,
                "NOT_FOUND" => 404,
                "DEADLINE_EXCEEDED" => 504,
                "UNAVAILABLE" => 503,
                "INTERNAL" | "UNKNOWN" | "ABORTED" => 500,
                _ => return None,
            })
        })
    }
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
        // Anthropic's envelope has `"type": "error"` outside; the inner type counts.
        kind: text("type").filter(|k| k != "error"),
        status_text: text("status"),
        status: code
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok()),
    }
}

/// Whether the error says the prompt does not fit the model's window.
pub fn is_context_length(info: &ErrorInfo) -> bool {
    let tagged = |s: &Option<String>| s.as_deref() == Some("context_length_exceeded");
    let msg = info.message.as_deref().unwrap_or("").to_ascii_lowercase();
    tagged(&info.code)
        || tagged(&info.kind)
        || [
            "maximum context length",
            "context length",
            "context_length_exceeded",
            "context window",
            "too many tokens",
            "prompt is too long",
            "exceeds the maximum number of tokens",
        ]
        .iter()
        .any(|p| msg.contains(p))
}

/// Whether the error says a content filter refused the request.
pub fn is_content_filter(info: &ErrorInfo) -> bool {
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
    // Anthropic says "overloaded" with 529, and some proxies with other codes.
    if info.kind.as_deref() == Some("overloaded_error") {
        return ErrorClass::Overloaded;
    }
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

/// The first 200 bytes of a body (a character cut there is left out; bytes
/// that are not UTF-8 show as U+FFFD), for messages and logs.
pub fn excerpt(body: &[u8]) -> String {
    let head = &body[..body.len().min(200)];
    match core::str::from_utf8(head) {
        Ok(text) => text.into(),
        // Only the last character is cut: everything before it is text.
        Err(e) if e.error_len().is_none() => {
            String::from_utf8_lossy(&head[..e.valid_up_to()]).into_owned()
        }
        Err(_) => String::from_utf8_lossy(head).into_owned(),
    }
}

/// Classifies a non-2xx upstream response in any of the shapes above;
/// the message is the upstream's own, else the body's first 200 bytes.
pub fn classify(status: u16, headers: &str, body: &[u8]) -> UpstreamError {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let info = json.as_ref().map(error_info).unwrap_or_default();
    let class = class_of(status, &info, crate::headers::retry_after_ms(headers));
    let detail = match &info.message {
        Some(m) => m.clone(),
        None => excerpt(body),
    };
    UpstreamError::new(class, format!("upstream {status}: {detail}"))
}

/// Classifies an error object that arrived inside a stream (after a 200).
/// The status its body implies ([`ErrorInfo::implied_status`]) counts;
/// without one it is a server-side failure (500).
pub fn classify_stream_error(body: &Value) -> UpstreamError {
    let info = error_info(body);
    let status = info.implied_status().unwrap_or(500);
    let mut class = class_of(status, &info, None);
    // A 500 that says what it is (context length, content filter) is that.
    if matches!(class, ErrorClass::Overloaded) && status != 529 {
        if is_context_length(&info) {
            class = ErrorClass::ContextLengthExceeded;
        } else if is_content_filter(&info) {
            class = ErrorClass::ContentFiltered;
        }
    }
    let detail = info
        .message
        .unwrap_or_else(|| excerpt(body.to_string().as_bytes()));
    UpstreamError::new(class, format!("upstream stream error: {detail}"))
}

/// An attempt failure for a 2xx body that is not an answer: the next
/// deployment may do better, so it is `overloaded`, and the message carries
/// the body's first 200 bytes ([`excerpt`]).
pub fn unusable(what: impl core::fmt::Display, body: &[u8]) -> UpstreamError {
    UpstreamError::new(ErrorClass::Overloaded, format!("{what}: {}", excerpt(body)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn excerpts_are_200_bytes_of_whole_characters() {
        assert_eq!(super::excerpt(b"short"), "short");
        let long = "é".repeat(150); // 300 bytes
        let e = super::excerpt(long.as_bytes());
        assert_eq!(e, "é".repeat(100));
        let odd = [b'a'; 199]
            .iter()
            .chain("é".as_bytes())
            .copied()
            .collect::<alloc::vec::Vec<u8>>();
        assert_eq!(super::excerpt(&odd), "a".repeat(199));
        assert_eq!(super::excerpt(b"\xff\xfeok"), "\u{fffd}\u{fffd}ok");
    }

    use super::*;

    fn h(pairs: &[(&str, &str)]) -> String {
        crate::headers::header_block(pairs)
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
        let e = classify(400, "", br#"{"error":{"message":"bad thing"}}"#);
        assert_eq!(e.message, "upstream 400: bad thing");
        let long = "x".repeat(500);
        let e = classify(502, "", long.as_bytes());
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

#[cfg(test)]
mod dialects {
    use super::*;

    fn class(status: u16, body: &str) -> ErrorClass {
        classify(status, "", body.as_bytes()).class
    }

    #[test]
    fn anthropic_errors() {
        let overloaded =
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(class(529, overloaded), ErrorClass::Overloaded);
        let long = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#;
        assert_eq!(class(400, long), ErrorClass::ContextLengthExceeded);
        let v: Value = serde_json::from_str(overloaded).unwrap();
        assert_eq!(classify_stream_error(&v).class, ErrorClass::Overloaded);
        let v: Value = serde_json::from_str(
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow"}}"#,
        )
        .unwrap();
        assert_eq!(
            classify_stream_error(&v).class,
            ErrorClass::RateLimited(None)
        );
        let info = error_info(&serde_json::from_str(long).unwrap());
        assert_eq!(info.kind.as_deref(), Some("invalid_request_error"));
    }

    #[test]
    fn google_errors() {
        let exhausted = r#"{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}"#;
        assert_eq!(class(429, exhausted), ErrorClass::RateLimited(None));
        let v: Value =
            serde_json::from_str(r#"{"error":{"message":"try later","status":"UNAVAILABLE"}}"#)
                .unwrap();
        assert_eq!(classify_stream_error(&v).class, ErrorClass::Overloaded);
        let too_long = r#"{"error":{"code":400,"message":"The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(class(400, too_long), ErrorClass::ContextLengthExceeded);
    }

    #[test]
    fn ollama_errors() {
        assert_eq!(
            classify(404, "", br#"{"error":"model 'x' not found"}"#).message,
            "upstream 404: model 'x' not found"
        );
    }
}
