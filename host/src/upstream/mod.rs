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
//! key goes where the deployment's declared auth scheme says, nowhere else
//! (see [`egress`]).
//!
//! The client is hyper's pooled client used directly: a request is one URI
//! built from the base checked at start and the adapter's path, handed to
//! the connection pool. (A general-purpose client reparses the URL for its
//! redirect policy on every request, and a gateway follows no redirects.)
//! [`Upstream::in_process`] swaps the network for a function, so benchmarks
//! can measure the whole request path without sockets.

mod body;
mod connect;
mod direct;
mod egress;
mod proxy;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

pub use body::{BodyError, ReplyBody};
pub use egress::{BaseUrl, check_path};
pub use proxy::Proxies;

use crate::config::Timeouts;
use crate::domain::{AuthScheme, HeaderBlock, UpstreamRequest, UpstreamResponse};
use crate::failover::{Attempt, FailureClass};

/// Largest upstream body read into memory for one non-streamed answer.
pub const MAX_UPSTREAM_BODY: usize = 32 << 20;

type Connector = connect::Bounded<hyper_rustls::HttpsConnector<proxy::Via>>;

/// An upstream stand-in for benchmarks and tests: answers a request in
/// process, with no socket. The body comes in the pieces given, each read
/// on its own (a paced stream's events); one piece is a whole body.
pub type InProcess = Arc<dyn Fn(Request<Bytes>) -> Response<Vec<Bytes>> + Send + Sync>;

/// Where requests go.
enum Transport {
    /// Pooled connections, one set per distinct connect timeout in the config.
    Http(HashMap<u64, Pools>),
    InProcess(InProcess),
}

/// The connections of one connect timeout: `http` upstreams' driven by
/// the requests' own tasks ([`direct`]), `https` ones' by hyper's pooled
/// client.
#[derive(Clone)]
struct Pools {
    client: Client<Connector, Full<Bytes>>,
    direct: direct::DirectPool,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request got no response head.
#[derive(Debug)]
enum SendError {
    /// No connection could be made (the connector's error).
    Connect(BoxError),
    /// The request or its response failed on the connection.
    Request(BoxError),
}

impl From<hyper_util::client::legacy::Error> for SendError {
    fn from(e: hyper_util::client::legacy::Error) -> Self {
        if e.is_connect() {
            Self::Connect(Box::new(e))
        } else {
            Self::Request(Box::new(e))
        }
    }
}

/// The gateway's way out to its upstreams.
pub struct Upstream {
    transport: Transport,
    proxies: Proxies,
}

/// What the host needs to send to one deployment.
pub struct Endpoint<'a> {
    pub deployment: &'a str,
    /// Checked once at start; the adapter's path is appended per request.
    pub base_url: &'a BaseUrl,
    pub api_key: Option<&'a str>,
    pub api_key_env: Option<&'a str>,
    /// Declared once (adapter metadata or deployment config).
    pub auth: &'a AuthScheme,
    pub timeouts: &'a Timeouts,
    /// The response headers the adapter reads (its declaration); `None`: all.
    pub response_headers: Option<&'a [String]>,
    /// The answer is a stream. From an `http` upstream, it is read on a
    /// connection the request's own task drives ([`direct`]): its events
    /// come in many HTTP chunks, each a hand-over between two tasks with
    /// hyper's pooled client. A whole answer comes in one or two, where the
    /// pooled client's connection tasks cost less (measured: 6–8 µs of CPU a
    /// request at 64 connections, as the server's and the client's code
    /// each run for many requests in a row).
    pub streamed: bool,
}

/// An upstream's answer once its headers arrived; the body is read by
/// [`Upstream::read_body`] or streamed.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: ReplyBody,
}

impl Upstream {
    /// Pooled clients for each connect timeout the config uses.
    pub fn new(
        connect_timeouts: impl IntoIterator<Item = u64>,
        proxies: Proxies,
    ) -> Result<Self, String> {
        let mut clients = HashMap::new();
        for ms in connect_timeouts {
            clients
                .entry(ms)
                .or_insert_with(|| http_client(ms, &proxies));
        }
        Ok(Self {
            transport: Transport::Http(clients),
            proxies,
        })
    }

    /// The same pools (a reloaded config keeps its connections), with a
    /// client added for each new connect timeout.
    pub fn extended(&self, connect_timeouts: impl IntoIterator<Item = u64>) -> Self {
        match &self.transport {
            Transport::InProcess(answer) => Self::in_process(answer.clone()),
            Transport::Http(existing) => {
                let mut clients = HashMap::new();
                for ms in connect_timeouts {
                    let pools = existing
                        .get(&ms)
                        .cloned()
                        .unwrap_or_else(|| http_client(ms, &self.proxies));
                    clients.insert(ms, pools);
                }
                Self {
                    transport: Transport::Http(clients),
                    proxies: self.proxies.clone(),
                }
            }
        }
    }

    /// An upstream that answers every request with `answer`, in process.
    pub fn in_process(answer: InProcess) -> Self {
        Self {
            transport: Transport::InProcess(answer),
            proxies: Proxies::default(),
        }
    }

    /// Sends the adapter's request with the deployment's key attached and
    /// waits for the response headers, at most the first-byte timeout.
    pub async fn send(
        &self,
        to: &Endpoint<'_>,
        request: UpstreamRequest,
    ) -> Result<Reply, Attempt> {
        let fail = |class, message: String| Attempt::new(to.deployment, class, message);
        let refused = |e: String| {
            fail(
                FailureClass::Plugin,
                format!("adapter request refused: {e}"),
            )
        };
        check_path(&request.path).map_err(refused)?;
        let method = http::Method::from_bytes(request.method.as_bytes()).map_err(|_| {
            fail(
                FailureClass::Plugin,
                format!("adapter returned invalid method {:?}", request.method),
            )
        })?;
        // v0.1 adapters chose the scheme per request; v0.2 ones declare it.
        let auth = request.auth.as_ref().unwrap_or(to.auth);
        // A deployment without `api_key_env` sends no key (local servers such
        // as Ollama or vLLM need none); one whose variable is unset fails.
        let key = match (auth, to.api_key_env) {
            (AuthScheme::None, _) | (_, None) => None,
            (_, Some(env)) => Some(to.api_key.ok_or_else(|| {
                fail(
                    FailureClass::Auth,
                    format!("no API key: the environment variable {env} (api_key_env) is not set"),
                )
            })?),
        };
        let key_param = match (auth, key) {
            (AuthScheme::Query(param), Some(key)) => Some((param.as_str(), key)),
            _ => None,
        };
        let uri: http::Uri = to
            .base_url
            .join(&request.path, key_param)
            .parse()
            .map_err(|_| refused(format!("path {:?} is not a valid URI path", request.path)))?;
        let mut headers =
            egress::headers(&request.headers, auth, key).map_err(|(class, m)| fail(class, m))?;
        if self.proxies.any()
            && let Some(credentials) = self.proxies.authorization(&uri)
        {
            headers.insert(http::header::PROXY_AUTHORIZATION, credentials);
        }
        let mut outgoing = Request::new(Bytes::from(request.body));
        *outgoing.method_mut() = method;
        *outgoing.uri_mut() = uri;
        *outgoing.headers_mut() = headers;

        let pools = match &self.transport {
            Transport::InProcess(answer) => {
                let (parts, body) = answer(outgoing).into_parts();
                return Ok(Reply {
                    status: parts.status,
                    headers: parts.headers,
                    body: ReplyBody::pieces(body),
                });
            }
            Transport::Http(clients) => clients.get(&to.timeouts.connect_ms).ok_or_else(|| {
                fail(
                    FailureClass::Transport,
                    "no HTTP client for this deployment".into(),
                )
            })?,
        };
        let outgoing = outgoing.map(Full::new);
        let wait = to.timeouts.first_byte();
        let sent = if to.streamed && outgoing.uri().scheme() == Some(&http::uri::Scheme::HTTP) {
            let sent = tokio::time::timeout(wait, pools.direct.send(outgoing)).await;
            sent.map(|r| r.map(|(response, held)| (response, Some(held))))
        } else {
            let sent = tokio::time::timeout(wait, pools.client.request(outgoing)).await;
            sent.map(|r| r.map(|response| (response, None)).map_err(SendError::from))
        };
        match sent {
            Err(_) => Err(fail(
                FailureClass::Timeout,
                format!(
                    "no response headers within {} ms (first_byte_ms)",
                    to.timeouts.first_byte_ms
                ),
            )),
            Ok(Err(SendError::Connect(e))) if timed_out(&*e) => Err(fail(
                FailureClass::Connect,
                format!(
                    "connect timed out after {} ms (connect_ms)",
                    to.timeouts.connect_ms
                ),
            )),
            Ok(Err(SendError::Connect(e))) => Err(fail(
                FailureClass::Connect,
                format!("cannot connect: {}", root_cause(&*e)),
            )),
            Ok(Err(SendError::Request(e))) => Err(fail(
                FailureClass::Transport,
                format!("request failed: {}", root_cause(&*e)),
            )),
            Ok(Ok((response, held))) => {
                let (parts, body) = response.into_parts();
                Ok(Reply {
                    status: parts.status,
                    headers: parts.headers,
                    body: match held {
                        Some(held) => ReplyBody::direct(body, held),
                        None => ReplyBody::http(body),
                    },
                })
            }
        }
    }

    /// Reads a whole body, bounded by the idle and total timeouts and by
    /// [`MAX_UPSTREAM_BODY`].
    pub async fn read_body(
        to: &Endpoint<'_>,
        reply: Reply,
        started: Instant,
    ) -> Result<UpstreamResponse, Attempt> {
        use futures_util::StreamExt;
        let fail = |class, message: String| Attempt::new(to.deployment, class, message);
        let headers = header_block(&reply.headers, to.response_headers);
        let mut stream = reply.body;
        let total_deadline = started + to.timeouts.total();
        let mut body = Vec::new();
        loop {
            let wait = to
                .timeouts
                .idle()
                .min(total_deadline.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(wait, stream.next()).await {
                Err(_) => {
                    return Err(fail(
                        FailureClass::Timeout,
                        format!(
                            "response body stalled (idle_ms {} / total_ms {})",
                            to.timeouts.idle_ms, to.timeouts.total_ms
                        ),
                    ));
                }
                Ok(Some(Err(e))) => {
                    return Err(fail(
                        FailureClass::Transport,
                        format!("reading body failed: {e}"),
                    ));
                }
                Ok(None) => break,
                Ok(Some(Ok(chunk))) => {
                    if body.len() + chunk.len() > MAX_UPSTREAM_BODY {
                        return Err(fail(
                            FailureClass::Permanent,
                            format!("response body exceeds {MAX_UPSTREAM_BODY} bytes"),
                        ));
                    }
                    if body.is_empty() {
                        body = Vec::from(chunk);
                    } else {
                        body.extend_from_slice(&chunk);
                    }
                }
            }
        }
        Ok(UpstreamResponse {
            status: reply.status.as_u16(),
            headers,
            body,
        })
    }
}

/// Pools whose connections are bounded by `ms` (see [`Upstream`]).
fn http_client(ms: u64, proxies: &Proxies) -> Pools {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(Duration::from_millis(ms)));
    http.set_nodelay(true);
    http.enforce_http(false);
    // A pooled connection silently dropped by a NAT or a load
    // balancer is found dead in ~1 min, not when a request waits out
    // its first-byte timeout on it.
    http.set_keepalive(Some(Duration::from_secs(15)));
    http.set_keepalive_interval(Some(Duration::from_secs(15)));
    http.set_keepalive_retries(Some(3));
    http.set_tcp_user_timeout(Some(Duration::from_secs(30)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_webpki_roots()
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(proxy::Via::new(http, proxies.clone()));
    // `connect_ms` bounds the whole connection: name resolution, TCP
    // and the TLS handshake (the connector's own timeout is TCP only).
    let https = connect::Bounded::new(https, Duration::from_millis(ms));
    // Redirects are not followed (this client has none): a gateway
    // must not replay a POST wherever a redirect points. A request
    // that was sent is never retried here: that is the failover
    // engine's decision.
    let direct = direct::DirectPool::new(https.clone());
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        // A request that never left because its pooled connection
        // was found closed (the upstream's idle timeout) is sent on
        // a fresh one: nothing was sent, so nothing is replayed.
        .retry_canceled_requests(true)
        .build(https);
    Pools { client, direct }
}

/// [`header_block`] of headers given as name and value text (a recorded
/// answer: conformance fixtures, benches); a name or value HTTP would not
/// carry is an error naming it.
pub fn recorded_header_block<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    wanted: Option<&[String]>,
) -> Result<HeaderBlock, String> {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| format!("response header name {name:?}: {e}"))?;
        let value = http::HeaderValue::from_str(value)
            .map_err(|e| format!("response header {name} value {value:?}: {e}"))?;
        map.append(name, value);
    }
    Ok(header_block(&map, wanted))
}

/// Response headers as an adapter sees them: those that are text, but for
/// [`UNSHOWN_RESPONSE_HEADERS`], and only those it reads when it said which
/// (`wanted`: names, or prefixes ending in `-`, lower case). A value that
/// is not visible text (`HeaderValue::to_str`) is left out, so no value
/// holds a line break.
pub fn header_block(headers: &HeaderMap, wanted: Option<&[String]>) -> HeaderBlock {
    let read = |name: &str| {
        wanted.is_none_or(|w| {
            w.iter().any(|n| match n.strip_suffix('-') {
                Some(_) => name.starts_with(n.as_str()),
                None => name == n,
            })
        })
    };
    headers
        .iter()
        .filter(|(k, _)| !UNSHOWN_RESPONSE_HEADERS.contains(k) && read(k.as_str()))
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect()
}

/// Response headers no adapter is shown: how the connection went and how
/// the body was framed (the host read it: a stream arrives as events, an
/// answer whole), transport policy for browsers, and cookies (a provider's
/// session is not the sandbox's business). Each header shown costs two
/// copies into the sandbox on every answer, and providers send a dozen of
/// these.
const UNSHOWN_RESPONSE_HEADERS: [http::HeaderName; 12] = [
    http::header::CONNECTION,
    http::HeaderName::from_static("keep-alive"),
    http::HeaderName::from_static("proxy-connection"),
    http::header::TRANSFER_ENCODING,
    http::header::CONTENT_LENGTH,
    http::header::TE,
    http::header::TRAILER,
    http::header::UPGRADE,
    http::header::PROXY_AUTHENTICATE,
    http::header::SET_COOKIE,
    http::header::ALT_SVC,
    http::header::STRICT_TRANSPORT_SECURITY,
];

/// Whether a connect error was the connect timeout.
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// The error and its innermost cause (e.g. "Connection refused"). Transport
/// errors never contain the URL, which may carry an API key as a query
/// parameter: this text reaches logs and the caller's error body.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = e;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_headers_are_shown_as_received_ones() {
        let pairs = |v: &'static [(&'static str, &'static str)]| v.iter().copied();
        let wanted = ["date".to_string(), "x-ratelimit-".to_string()];
        let recorded = || {
            pairs(&[
                ("Date", "Fri, 04 Dec 2026 16:27:39 GMT"),
                ("connection", "keep-alive"),
                ("x-ratelimit-remaining-requests", "9"),
                ("server", "x"),
            ])
        };
        let shown = recorded_header_block(recorded(), Some(&wanted)).unwrap();
        assert_eq!(
            shown.as_str(),
            "date: Fri, 04 Dec 2026 16:27:39 GMT\nx-ratelimit-remaining-requests: 9\n"
        );
        assert_eq!(
            shown.pairs().collect::<Vec<_>>(),
            [
                ("date", "Fri, 04 Dec 2026 16:27:39 GMT"),
                ("x-ratelimit-remaining-requests", "9"),
            ]
        );
        let all = recorded_header_block(recorded(), None).unwrap();
        assert_eq!(all.pairs().count(), 3);
        let bad = recorded_header_block(pairs(&[("bad name", "1")]), None).unwrap_err();
        assert!(bad.contains("\"bad name\""), "{bad}");
        let bad = recorded_header_block(pairs(&[("x-a", "line\nbreak")]), None).unwrap_err();
        assert!(bad.contains("x-a value"), "{bad}");
    }

    #[test]
    fn adapters_see_the_answer_headers_not_the_connection_ones() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("content-type", "application/json"),
            ("date", "Fri, 04 Dec 2026 16:27:39 GMT"),
            ("x-ratelimit-remaining-tokens", "9"),
            ("retry-after", "2"),
            ("anthropic-ratelimit-requests-remaining", "1"),
            ("x-request-id", "req_1"),
            ("content-length", "242"),
            ("transfer-encoding", "chunked"),
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("set-cookie", "__cf_bm=secret; path=/"),
            ("set-cookie", "_cfuvid=secret; path=/"),
            ("alt-svc", "h3=\":443\""),
            ("strict-transport-security", "max-age=31536000"),
        ] {
            h.append(http::HeaderName::from_static(k), v.parse().unwrap());
        }
        h.append("x-binary", http::HeaderValue::from_bytes(b"\xff").unwrap());
        let names = |wanted: Option<&[String]>| -> Vec<String> {
            header_block(&h, wanted)
                .pairs()
                .map(|(k, _)| k.to_owned())
                .collect()
        };
        assert_eq!(
            names(None),
            [
                "content-type",
                "date",
                "x-ratelimit-remaining-tokens",
                "retry-after",
                "anthropic-ratelimit-requests-remaining",
                "x-request-id",
            ]
        );
        // An adapter that said what it reads gets only that: names exactly,
        // prefixes ending in `-`; never a hidden one, even when named.
        let wanted: Vec<String> = ["date", "x-ratelimit-", "retry", "set-cookie", "connection"]
            .map(String::from)
            .into();
        assert_eq!(
            names(Some(&wanted)),
            ["date", "x-ratelimit-remaining-tokens"]
        );
        assert!(names(Some(&[])).is_empty());
    }

    fn endpoint<'a>(base: &'a BaseUrl, timeouts: &'a Timeouts) -> Endpoint<'a> {
        static QUERY: std::sync::LazyLock<AuthScheme> =
            std::sync::LazyLock::new(|| AuthScheme::Query("key".into()));
        Endpoint {
            deployment: "d",
            base_url: base,
            api_key: Some("SECRET"),
            api_key_env: Some("K"),
            auth: &QUERY,
            timeouts,
            response_headers: None,
            streamed: false,
        }
    }

    fn request() -> UpstreamRequest {
        UpstreamRequest {
            method: "POST".into(),
            path: "/v1/x".into(),
            headers: vec![],
            body: b"{}".to_vec(),
            auth: None,
        }
    }

    #[tokio::test]
    async fn errors_never_show_the_url_and_its_key() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = BaseUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let timeouts = Timeouts::default();
        let upstream = Upstream::new([timeouts.connect_ms], Proxies::default()).unwrap();
        let Err(e) = upstream.send(&endpoint(&base, &timeouts), request()).await else {
            panic!("nothing listens there");
        };
        assert_eq!(e.class, FailureClass::Connect);
        assert!(!e.message.contains("SECRET"), "{}", e.message);
        assert!(e.message.contains("cannot connect"), "{}", e.message);
    }

    #[tokio::test]
    async fn chunks_that_arrived_together_are_read_together() {
        use futures_util::StreamExt;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let events: Vec<String> = (0..6).map(|i| format!("data: {{\"n\":{i}}}\n\n")).collect();
        let mut wire = String::from(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
        );
        for e in &events {
            wire.push_str(&format!("{:X}\r\n{e}\r\n", e.len()));
        }
        wire.push_str("0\r\n\r\n");
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = socket.read(&mut buf).await;
            // Six HTTP chunks in one write, as an upstream streaming fast does.
            socket.write_all(wire.as_bytes()).await.unwrap();
            let _ = socket.read(&mut buf).await;
        });
        let base = BaseUrl::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let timeouts = Timeouts::default();
        let mut to = endpoint(&base, &timeouts);
        to.api_key_env = None;
        let upstream = Upstream::new([timeouts.connect_ms], Proxies::default()).unwrap();
        let reply = upstream.send(&to, request()).await.unwrap();
        let mut body = reply.body;
        let mut items = Vec::new();
        while let Some(item) = body.next().await {
            items.push(body.gather(item.unwrap()).await);
        }
        assert!(body.next().await.is_none(), "fused after its end");
        assert_eq!(items.concat(), events.concat().into_bytes());
        assert!(items.len() <= 2, "{} reads for one write", items.len());
    }

    #[tokio::test]
    async fn in_process_answers_see_what_the_network_would() {
        let seen = Arc::new(std::sync::Mutex::new(None));
        let keep = seen.clone();
        let upstream = Upstream::in_process(Arc::new(move |r: Request<Bytes>| {
            *keep.lock().unwrap() = Some(r.uri().to_string());
            Response::new(vec![Bytes::from_static(b"ans"), Bytes::from_static(b"wer")])
        }));
        let base = BaseUrl::parse("http://h:1/api").unwrap();
        let timeouts = Timeouts::default();
        let to = endpoint(&base, &timeouts);
        let reply = upstream.send(&to, request()).await.unwrap();
        let body = Upstream::read_body(&to, reply, Instant::now())
            .await
            .unwrap();
        assert_eq!(body.body, b"answer");
        assert_eq!(
            seen.lock().unwrap().as_deref(),
            Some("http://h:1/api/v1/x?key=SECRET")
        );
    }
}
