//! Sending requests to upstreams: one pooled HTTP client per connect timeout,
//! the secret attached here (never in a plugin), and the three timeouts that
//! keep a dead, silent or stalling upstream from hanging a request.
//!
//! Egress is the host's: an adapter supplies method, path, headers and body,
//! but the host owns the transport. Headers that steer the connection or
//! carry credentials (`host`, `content-length`, hop-by-hop headers, auth
//! headers, anything containing the key) are dropped from what the adapter
//! returns; a path that could leave the deployment's base URL (dot segments,
//! also percent-encoded, a scheme, an authority, backslashes) is refused. The
//! key goes where the deployment's declared auth scheme says, nowhere else.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::Timeouts;
use crate::domain::{AuthScheme, UpstreamRequest, UpstreamResponse};
use crate::failover::{Attempt, FailureClass};

/// Largest upstream body read into memory for one non-streamed answer.
pub const MAX_UPSTREAM_BODY: usize = 32 << 20;

/// Pooled HTTP clients, one per distinct connect timeout in the config.
pub struct Upstream {
    clients: HashMap<u64, reqwest::Client>,
}

/// What the host needs to send to one deployment.
pub struct Endpoint<'a> {
    pub deployment: &'a str,
    /// Parsed once at start; the adapter's path is appended per request.
    pub base_url: &'a reqwest::Url,
    pub api_key: Option<&'a str>,
    pub api_key_env: Option<&'a str>,
    /// Declared once (adapter metadata or deployment config).
    pub auth: &'a AuthScheme,
    pub timeouts: &'a Timeouts,
}

/// Headers only the host may set: they steer the connection, frame the
/// body or carry credentials.
const HOST_OWNED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "trailers",
    "upgrade",
    "authorization",
    "cookie",
    "expect",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
];

/// Checks an adapter's path: it must stay below the base URL's path.
pub fn check_path(path_and_query: &str) -> Result<(), String> {
    let path = path_and_query.split(['?', '#']).next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(format!("path {path_and_query:?} does not start with '/'"));
    }
    if path.starts_with("//") || path.contains("://") {
        return Err(format!("path {path_and_query:?} names another host"));
    }
    if path.contains('\\') || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(format!(
            "path {path_and_query:?} contains a backslash, a space or a control character"
        ));
    }
    for segment in path.split('/') {
        let decoded = percent_decode(segment);
        if decoded == "." || decoded == ".." || decoded.contains('/') || decoded.contains('\\') {
            return Err(format!(
                "path {path_and_query:?} has a dot segment or an encoded separator, which could leave the base URL"
            ));
        }
    }
    Ok(())
}

/// Percent-decodes a path segment (repeatedly, so `%252e` is caught too).
fn percent_decode(segment: &str) -> String {
    let mut current = segment.to_string();
    for _ in 0..3 {
        if !current.contains('%') {
            break;
        }
        let bytes = current.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%'
                && i + 2 < bytes.len()
                && let Some(v) = current
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        current = String::from_utf8_lossy(&out).into_owned();
    }
    current
}

impl Upstream {
    pub fn new(connect_timeouts: impl IntoIterator<Item = u64>) -> reqwest::Result<Self> {
        let mut clients = HashMap::new();
        for ms in connect_timeouts {
            if clients.contains_key(&ms) {
                continue;
            }
            let client = reqwest::Client::builder()
                .connect_timeout(Duration::from_millis(ms))
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(256)
                .tcp_nodelay(true)
                // A gateway must not replay a POST wherever a redirect points,
                // and retries are the failover engine's decision, not the
                // client's. Both layers off also saves work on every request.
                .redirect(reqwest::redirect::Policy::none())
                .retry(reqwest::retry::never())
                .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
                .build()?;
            clients.insert(ms, client);
        }
        Ok(Self { clients })
    }

    /// Sends the adapter's request with the deployment's key attached and
    /// waits for the response headers, at most the first-byte timeout.
    pub async fn send(
        &self,
        to: &Endpoint<'_>,
        request: UpstreamRequest,
    ) -> Result<reqwest::Response, Attempt> {
        let fail = |class, message: String| Attempt::new(to.deployment, class, message);
        let client = self.clients.get(&to.timeouts.connect_ms).ok_or_else(|| {
            fail(
                FailureClass::Transport,
                "no HTTP client for this deployment".into(),
            )
        })?;
        check_path(&request.path).map_err(|e| {
            fail(
                FailureClass::Plugin,
                format!("adapter request refused: {e}"),
            )
        })?;
        let mut url = join(to.base_url, &request.path);
        if !url
            .path()
            .starts_with(to.base_url.path().trim_end_matches('/'))
        {
            return Err(fail(
                FailureClass::Plugin,
                format!(
                    "adapter request refused: path {:?} leaves the base URL's path",
                    request.path
                ),
            ));
        }
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| {
            fail(
                FailureClass::Plugin,
                format!("adapter returned invalid method {:?}", request.method),
            )
        })?;
        // v0.1 adapters chose the scheme per request; v0.2 ones declare it.
        let auth = request.auth.as_ref().unwrap_or(to.auth);
        let auth_header = match auth {
            AuthScheme::Header(name) => Some(name.to_ascii_lowercase()),
            _ => None,
        };
        let mut headers = HeaderMap::with_capacity(request.headers.len() + 1);
        for (name, value) in &request.headers {
            let lower = name.to_ascii_lowercase();
            let carries_key = to
                .api_key
                .is_some_and(|k| !k.is_empty() && value.contains(k));
            if HOST_OWNED_HEADERS.contains(&lower.as_str())
                || auth_header.as_deref() == Some(lower.as_str())
                || carries_key
            {
                tracing::debug!(header = %lower, "dropped a header the host owns from the adapter's request");
                continue;
            }
            let (Ok(name), Ok(value)) = (
                HeaderName::try_from(lower.as_str()),
                HeaderValue::try_from(value.as_str()),
            ) else {
                return Err(fail(
                    FailureClass::Plugin,
                    format!("adapter returned invalid header {name:?}"),
                ));
            };
            headers.append(name, value);
        }
        // A deployment without `api_key_env` sends no key (local servers such
        // as Ollama or vLLM need none); one whose variable is unset fails.
        if let (false, Some(env)) = (matches!(auth, AuthScheme::None), to.api_key_env) {
            let Some(key) = to.api_key else {
                return Err(fail(
                    FailureClass::Auth,
                    format!("no API key: the environment variable {env} (api_key_env) is not set"),
                ));
            };
            match auth {
                AuthScheme::None => {}
                AuthScheme::Bearer => {
                    let mut v = HeaderValue::try_from(format!("Bearer {key}")).map_err(|_| {
                        fail(
                            FailureClass::Auth,
                            "API key is not a valid header value".into(),
                        )
                    })?;
                    v.set_sensitive(true);
                    headers.insert(reqwest::header::AUTHORIZATION, v);
                }
                AuthScheme::Header(name) => {
                    let name = HeaderName::try_from(name.as_str()).map_err(|_| {
                        fail(
                            FailureClass::Plugin,
                            format!("adapter asked for invalid auth header {name:?}"),
                        )
                    })?;
                    let mut v = HeaderValue::try_from(key).map_err(|_| {
                        fail(
                            FailureClass::Auth,
                            "API key is not a valid header value".into(),
                        )
                    })?;
                    v.set_sensitive(true);
                    headers.insert(name, v);
                }
                AuthScheme::Query(param) => {
                    url.query_pairs_mut().append_pair(param, key);
                }
            }
        }
        let send = client
            .request(method, url)
            .headers(headers)
            .body(request.body)
            .send();
        match tokio::time::timeout(to.timeouts.first_byte(), send).await {
            Err(_) => Err(fail(
                FailureClass::Timeout,
                format!(
                    "no response headers within {} ms (first_byte_ms)",
                    to.timeouts.first_byte_ms
                ),
            )),
            Ok(Err(e)) if e.is_connect() => Err(fail(
                FailureClass::Connect,
                format!("cannot connect: {}", root_cause(e)),
            )),
            Ok(Err(e)) if e.is_timeout() => Err(fail(
                FailureClass::Connect,
                format!(
                    "connect timed out after {} ms (connect_ms)",
                    to.timeouts.connect_ms
                ),
            )),
            Ok(Err(e)) => Err(fail(
                FailureClass::Transport,
                format!("request failed: {}", root_cause(e)),
            )),
            Ok(Ok(response)) => Ok(response),
        }
    }

    /// Reads a whole body, bounded by the idle and total timeouts and by
    /// [`MAX_UPSTREAM_BODY`].
    pub async fn read_body(
        to: &Endpoint<'_>,
        mut response: reqwest::Response,
        started: Instant,
    ) -> Result<UpstreamResponse, Attempt> {
        let fail = |class, message: String| Attempt::new(to.deployment, class, message);
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let total_deadline = started + to.timeouts.total();
        let mut body = Vec::new();
        loop {
            let wait = to
                .timeouts
                .idle()
                .min(total_deadline.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(wait, response.chunk()).await {
                Err(_) => {
                    return Err(fail(
                        FailureClass::Timeout,
                        format!(
                            "response body stalled (idle_ms {} / total_ms {})",
                            to.timeouts.idle_ms, to.timeouts.total_ms
                        ),
                    ));
                }
                Ok(Err(e)) => {
                    return Err(fail(
                        FailureClass::Transport,
                        format!("reading body failed: {}", root_cause(e)),
                    ));
                }
                Ok(Ok(None)) => break,
                Ok(Ok(Some(chunk))) => {
                    if body.len() + chunk.len() > MAX_UPSTREAM_BODY {
                        return Err(fail(
                            FailureClass::Permanent,
                            format!("response body exceeds {MAX_UPSTREAM_BODY} bytes"),
                        ));
                    }
                    body.extend_from_slice(&chunk);
                }
            }
        }
        Ok(UpstreamResponse {
            status,
            headers,
            body,
        })
    }
}

/// reqwest nests the useful message (e.g. "Connection refused") in sources.
/// The URL is left out: it may carry an API key as a query parameter, and
/// this text reaches logs and the caller's error body.
fn root_cause(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut inner: &(dyn std::error::Error + 'static) = &e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    let top = e.to_string();
    let cause = inner.to_string();
    if top == cause {
        top
    } else {
        format!("{top}: {cause}")
    }
}

/// The adapter's path (and query) appended to the deployment's base URL,
/// without reparsing the base.
fn join(base: &reqwest::Url, path_and_query: &str) -> reqwest::Url {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut url = base.clone();
    let joined = format!("{}{}", base.path().trim_end_matches('/'), path);
    url.set_path(&joined);
    url.set_query(query);
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_could_leave_the_base_are_refused() {
        for ok in [
            "/chat/completions",
            "/models/m:generate?alt=sse",
            "/v1/a.b/c..d",
        ] {
            assert!(check_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/../admin",
            "/v1/..",
            "/./x",
            "/%2e%2E/admin",
            "/%2e/admin",
            "/%252e%252e/admin",
            "/a%2fb",
            "//evil.example/x",
            "http://evil.example/x",
            "/..\\admin",
            "relative",
            "/a b",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn errors_never_show_the_url_and_its_key() {
        let client = reqwest::Client::new();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = client
            .get(format!("http://127.0.0.1:{port}/v1/x?key=SECRET"))
            .send()
            .await
            .unwrap_err();
        let text = root_cause(e);
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.to_lowercase().contains("connect"), "{text}");
    }

    #[test]
    fn adapter_path_is_appended_to_the_base() {
        let base = reqwest::Url::parse("http://h:1/v1/").unwrap();
        assert_eq!(
            join(&base, "/chat/completions").as_str(),
            "http://h:1/v1/chat/completions"
        );
        let base = reqwest::Url::parse("https://h/v1beta").unwrap();
        assert_eq!(
            join(&base, "/models/m:generate?alt=sse").as_str(),
            "https://h/v1beta/models/m:generate?alt=sse"
        );
        let mut url = join(&base, "/x");
        url.query_pairs_mut().append_pair("key", "a b&c");
        assert_eq!(url.as_str(), "https://h/v1beta/x?key=a+b%26c");
    }
}
