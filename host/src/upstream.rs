//! Sending requests to upstreams: one pooled HTTP client per connect timeout,
//! the secret attached here (never in a plugin), and the three timeouts that
//! keep a dead, silent or stalling upstream from hanging a request.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::Timeouts;
use crate::failover::{Attempt, FailureClass};
use crate::plugins::bindings::adapter::{AuthScheme, HttpRequest, HttpResponse};

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
    pub timeouts: &'a Timeouts,
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
        request: HttpRequest,
    ) -> Result<reqwest::Response, Attempt> {
        let fail = |class, message: String| Attempt::new(to.deployment, class, message);
        let client = self.clients.get(&to.timeouts.connect_ms).ok_or_else(|| {
            fail(
                FailureClass::Transport,
                "no HTTP client for this deployment".into(),
            )
        })?;
        let mut url = join(to.base_url, &request.path);
        let method = reqwest::Method::from_bytes(request.method.as_bytes()).map_err(|_| {
            fail(
                FailureClass::Plugin,
                format!("adapter returned invalid method {:?}", request.method),
            )
        })?;
        let mut headers = HeaderMap::with_capacity(request.headers.len() + 1);
        for (name, value) in &request.headers {
            let (Ok(name), Ok(value)) = (
                HeaderName::try_from(name.as_str()),
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
        if let (false, Some(env)) = (matches!(request.auth, AuthScheme::None), to.api_key_env) {
            let Some(key) = to.api_key else {
                return Err(fail(
                    FailureClass::Auth,
                    format!("no API key: the environment variable {env} (api_key_env) is not set"),
                ));
            };
            match &request.auth {
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
    ) -> Result<HttpResponse, Attempt> {
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
        Ok(HttpResponse {
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
