//! Test adapter that tries to take over the upstream request: the host owns
//! `host`, `content-length`, the auth header and every hop-by-hop header, and
//! refuses paths that leave the deployment's base URL, so none of these
//! attacks may reach the upstream.
//!
//! The deployment's `model` picks the attack; the request is otherwise a
//! valid OpenAI one (and answers are read as OpenAI's), so a test sees the
//! gateway either serve it with the attack neutralised or refuse it:
//!
//! | model | attack |
//! |---|---|
//! | `clean` | none (the control) |
//! | `host` | `Host: evil.example` |
//! | `authorization` | `Authorization: Bearer stolen` |
//! | `x-api-key` | `x-api-key: planted`, the header this adapter's key goes in |
//! | `content-length` | `Content-Length: 1` |
//! | `transfer-encoding` | `Transfer-Encoding: chunked` |
//! | `connection` | `Connection: close`, `Keep-Alive`, `Upgrade`, `TE`, `Trailer`, `Proxy-Authorization` |
//! | `dotdot` | path `/../admin` |
//! | `dotdot-encoded` | path `/%2e%2E/admin` |
//! | `absolute` | path `http://evil.example/x` |
//! | `authority` | path `//evil.example/x` |
//! | `backslash` | path `/..\admin` |
//! | `slow` | none, but building and parsing each burn 1 ms (moves the adapter's calls to the plugin runtime) |
//! | `not-a-completion` | none, but a whole answer comes back as `{"text": ...}`, not a chat completion |
//! | `pretty-chunks` | none, but stream chunks are pretty-printed JSON (line breaks inside) |
//! | `junk-chunks` | none, but each stream chunk is plain text, not JSON |
//!
//! Any other model fails the build (so a typo in a test is not a silent pass).

use serde_json::Value;
use switchyard_sdk::{
    Adapter, AuthScheme, BuildError, ChatResponse, ErrorClass, HttpRequest, HttpResponse, Metadata,
    StateReader, StateWriter, StreamEvent, StreamOutput, StreamParser, Target, UpstreamError,
    Usage, export_adapter,
};

struct Hostile;

impl Adapter for Hostile {
    type Stream = Stream;

    fn metadata() -> Metadata {
        Metadata::new("hostile", env!("CARGO_PKG_VERSION"), &["streaming"])
    }

    /// The key goes in `x-api-key`, so the `x-api-key` attack collides with it.
    fn auth() -> AuthScheme {
        AuthScheme::Header("x-api-key".into())
    }

    fn build_request(target: &Target, request: &str) -> Result<HttpRequest, BuildError> {
        let mut body: Value = serde_json::from_str(request)
            .map_err(|e| BuildError::InvalidRequest(format!("request is not JSON: {e}")))?;
        let Some(obj) = body.as_object_mut() else {
            return Err(BuildError::InvalidRequest(
                "request is not a JSON object".into(),
            ));
        };
        obj.insert("model".into(), Value::String(target.model.clone()));
        let body = serde_json::to_vec(&body).map_err(|e| BuildError::Failed(e.to_string()))?;
        attack(
            &target.model,
            HttpRequest::post_json("/chat/completions", body),
        )
    }

    fn parse_response(
        target: &Target,
        response: &HttpResponse,
    ) -> Result<ChatResponse, UpstreamError> {
        if target.model == "slow" {
            burn_1ms();
        }
        let mut v: Value = serde_json::from_slice(&response.body)
            .map_err(|e| overloaded(format!("body is not JSON: {e}")))?;
        let Some(obj) = v
            .as_object_mut()
            .filter(|o| o.get("choices").is_some_and(Value::is_array))
        else {
            return Err(overloaded("response has no choices array".into()));
        };
        obj.insert("model".into(), Value::String(target.deployment.clone()));
        let usage = usage_of(obj.get("usage"));
        if target.model == "not-a-completion" {
            return Ok(ChatResponse::new(r#"{"text":"hi"}"#.into(), usage));
        }
        Ok(ChatResponse::new(v.to_string(), usage))
    }

    fn classify_error(response: &HttpResponse) -> UpstreamError {
        let class = match response.status {
            429 => ErrorClass::RateLimited(response.retry_after_ms()),
            401 | 403 => ErrorClass::Auth,
            400 | 422 => ErrorClass::InvalidRequest,
            408 | 504 => ErrorClass::Timeout,
            500..=599 => ErrorClass::Overloaded,
            _ => ErrorClass::Permanent,
        };
        UpstreamError::new(class, format!("upstream {}", response.status))
    }
}

export_adapter!(Hostile);

/// `request` with the attack named `name`.
fn attack(name: &str, request: HttpRequest) -> Result<HttpRequest, BuildError> {
    let path = |path: &str| HttpRequest {
        path: path.into(),
        ..request.clone()
    };
    Ok(match name {
        "clean" | "not-a-completion" | "pretty-chunks" | "junk-chunks" => request,
        // Not an attack: a build slow enough to move this adapter's calls
        // to the plugin runtime.
        "slow" => {
            burn_1ms();
            request
        }
        // Not an attack: a request this provider cannot express (the caller's 400).
        "unsupported" => {
            return Err(BuildError::InvalidRequest(
                "n > 1 is not supported by this provider".into(),
            ));
        }
        "host" => request.with_header("Host", "evil.example"),
        "authorization" => request.with_header("Authorization", "Bearer stolen"),
        "x-api-key" => request.with_header("x-api-key", "planted"),
        "content-length" => request.with_header("Content-Length", "1"),
        "transfer-encoding" => request.with_header("Transfer-Encoding", "chunked"),
        "connection" => request
            .with_header("Connection", "close")
            .with_header("Keep-Alive", "timeout=600")
            .with_header("Upgrade", "websocket")
            .with_header("TE", "trailers")
            .with_header("Trailer", "X-Evil")
            .with_header("Proxy-Authorization", "Basic ZXZpbDpldmls"),
        "dotdot" => path("/../admin"),
        "dotdot-encoded" => path("/%2e%2E/admin"),
        "absolute" => path("http://evil.example/x"),
        "authority" => path("//evil.example/x"),
        "backslash" => path("/..\\admin"),
        other => {
            return Err(BuildError::Failed(format!(
                "hostile: unknown attack {other:?}"
            )));
        }
    })
}

/// Spins for a millisecond of the host's clock.
/// At least 1 ms of wall time and at least 20,000 clock reads: CPU the host
/// sees whatever the scheduler does (wall time alone passes while the thread
/// is descheduled, and a call that used little CPU counts as fast).
fn burn_1ms() {
    let start = switchyard_sdk::now_ns();
    let mut reads = 0u32;
    while switchyard_sdk::now_ns() - start < 1_000_000 || reads < 20_000 {
        reads += 1;
    }
}

fn overloaded(message: String) -> UpstreamError {
    UpstreamError::new(ErrorClass::Overloaded, message)
}

fn usage_of(v: Option<&Value>) -> Option<Usage> {
    let u = v.filter(|u| u.is_object())?;
    let n = |k: &str| {
        u.get(k)
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(u32::MAX.into()) as u32
    };
    Some(Usage::new(n("prompt_tokens"), n("completion_tokens")))
}

/// Passes OpenAI chunks through, naming the deployment.
pub struct Stream {
    /// Some choice carried a non-null `finish_reason`.
    finished: bool,
}

impl StreamParser for Stream {
    fn begin(_target: &Target, _request: &str, _headers: &str) -> Result<Self, UpstreamError> {
        Ok(Stream { finished: false })
    }

    fn event(
        &mut self,
        target: &Target,
        event: &StreamEvent,
        out: &mut StreamOutput,
    ) -> Result<(), UpstreamError> {
        match event.data.trim() {
            "" => return Ok(()),
            "[DONE]" => {
                out.set_done();
                return Ok(());
            }
            _ => {}
        }
        let mut v: Value = serde_json::from_str(event.data)
            .map_err(|e| overloaded(format!("malformed stream chunk: {e}")))?;
        let Some(obj) = v.as_object_mut() else {
            return Err(overloaded("malformed stream chunk".into()));
        };
        if obj.get("error").is_some_and(|e| !e.is_null()) {
            return Err(overloaded(format!(
                "upstream stream error: {}",
                obj["error"]
            )));
        }
        obj.insert("model".into(), Value::String(target.deployment.clone()));
        if let Some(u) = usage_of(obj.get("usage")) {
            out.set_usage(u);
        }
        let finish = |c: &Value| c.get("finish_reason").is_some_and(|f| !f.is_null());
        if obj
            .get("choices")
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(finish))
        {
            self.finished = true;
        }
        match target.model.as_str() {
            "pretty-chunks" => out.push(serde_json::to_string_pretty(&v).unwrap_or_default()),
            "junk-chunks" => out.push("hello"),
            _ => out.push(v.to_string()),
        }
        Ok(())
    }

    fn end(&mut self, _target: &Target, out: &mut StreamOutput) -> Result<(), UpstreamError> {
        if out.is_done() || self.finished {
            Ok(())
        } else {
            Err(overloaded("stream ended before completion".into()))
        }
    }

    fn save(&self) -> Vec<u8> {
        StateWriter::new().bool(self.finished).finish()
    }

    fn restore(state: &[u8]) -> Result<Self, UpstreamError> {
        let mut r = StateReader::new(state);
        let finished = r.bool()?;
        r.finish()?;
        Ok(Stream { finished })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_sdk::run;

    fn build(model: &str) -> Result<HttpRequest, BuildError> {
        let target = Target {
            deployment: "d".into(),
            model: model.into(),
        };
        run::build_request::<Hostile>(&target, r#"{"model":"route","messages":[]}"#)
    }

    /// The headers beyond the `content-type` every request has.
    fn extra_headers(model: &str) -> Vec<(String, String)> {
        let r = build(model).unwrap();
        assert_eq!(r.headers[0].0, "content-type");
        r.headers[1..].to_vec()
    }

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn metadata_puts_the_key_in_x_api_key() {
        assert_eq!(
            run::metadata::<Hostile>().auth,
            AuthScheme::Header("x-api-key".into())
        );
    }

    #[test]
    fn clean_is_a_valid_openai_request() {
        let r = build("clean").unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/chat/completions")
        );
        assert!(extra_headers("clean").is_empty());
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["model"], "clean");
        assert_eq!(body["messages"], serde_json::json!([]));
    }

    #[test]
    fn header_attacks() {
        for (model, want) in [
            ("host", pairs(&[("Host", "evil.example")])),
            (
                "authorization",
                pairs(&[("Authorization", "Bearer stolen")]),
            ),
            ("x-api-key", pairs(&[("x-api-key", "planted")])),
            ("content-length", pairs(&[("Content-Length", "1")])),
            (
                "transfer-encoding",
                pairs(&[("Transfer-Encoding", "chunked")]),
            ),
        ] {
            assert_eq!(extra_headers(model), want, "{model}");
            assert_eq!(build(model).unwrap().path, "/chat/completions");
        }
        let names: Vec<String> = extra_headers("connection")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            names,
            [
                "Connection",
                "Keep-Alive",
                "Upgrade",
                "TE",
                "Trailer",
                "Proxy-Authorization"
            ]
        );
        assert_eq!(extra_headers("connection")[0].1, "close");
    }

    #[test]
    fn path_attacks() {
        for (model, path) in [
            ("dotdot", "/../admin"),
            ("dotdot-encoded", "/%2e%2E/admin"),
            ("absolute", "http://evil.example/x"),
            ("authority", "//evil.example/x"),
            ("backslash", "/..\\admin"),
        ] {
            let r = build(model).unwrap();
            assert_eq!(r.path, path, "{model}");
            assert_eq!(r.headers.len(), 1, "{model}");
        }
    }

    #[test]
    fn unknown_attacks_and_bad_requests_fail() {
        assert!(matches!(build("nope"), Err(BuildError::Failed(m)) if m.contains("nope")));
        let target = Target {
            deployment: "d".into(),
            model: "clean".into(),
        };
        assert!(matches!(
            run::build_request::<Hostile>(&target, "[]"),
            Err(BuildError::InvalidRequest(_))
        ));
    }

    #[test]
    fn answers_pass_through() {
        let target = Target {
            deployment: "d".into(),
            model: "clean".into(),
        };
        let response = HttpResponse {
            status: 200,
            headers: String::new(),
            body: br#"{"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1}}"#.to_vec(),
        };
        let r = run::parse_response::<Hostile>(&target, &response).unwrap();
        assert_eq!(r.usage, Some(Usage::new(2, 1)));
        let start = run::begin_stream::<Hostile>(&target, "{}", "").unwrap();
        let step = run::parse_stream::<Hostile>(
            &start.state,
            &[
                StreamEvent::data(
                    r#"{"choices":[{"delta":{"content":"x"},"finish_reason":null}]}"#,
                ),
                StreamEvent::data("[DONE]"),
            ],
        )
        .unwrap();
        assert_eq!(step.chunks.len(), 1);
        assert!(step.done);
        let state = step.state.unwrap_or(start.state);
        run::end_stream::<Hostile>(&state).unwrap();
        let cut = run::begin_stream::<Hostile>(&target, "{}", "").unwrap();
        assert!(run::end_stream::<Hostile>(&cut.state).is_err());
    }
}
