//! Plain-HTTP upstream connections driven by the task that uses them.
//!
//! hyper's pooled client runs each connection in a task of its own: the
//! request goes to that task, the response head comes back from it, and the
//! body is handed over one HTTP chunk at a time, each a wake-up of the
//! connection's task and then of the reader's. An upstream sends one chunk
//! per stream event, so a burst of events read from the socket at once cost
//! two task switches per event (measured: ~50 µs of gateway CPU on a
//! 13-event stream, a third of what the gateway spends on it).
//!
//! Here a connection is polled by the task of the request using it: while
//! the request is sent, while its head is awaited and while its body is
//! read (see [`Held::drive`] and `ReplyBody`). Between requests it waits in
//! a pool, where nothing polls it; a connection the upstream closed
//! meanwhile is found when it is taken (polled once, it reports its end)
//! or by the sweep every [`SWEEP_EVERY`]. A request that never left because
//! its pooled connection had closed goes again on a fresh one: nothing was
//! sent, so nothing is replayed.
//!
//! Only streams from `http` upstreams (local and in-cluster servers,
//! sidecars) come here (`Endpoint::streamed`). A whole answer comes in one
//! or two chunks, where hyper's connection tasks cost less (they run many
//! requests' reads in a row; driven, a whole answer cost 6–8 µs more CPU a
//! request at 64 connections). Over TLS a connection may negotiate HTTP/2,
//! whose connection serves many requests at once and needs a task of its
//! own, so `https` stays on hyper's pooled client.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::client::legacy::connect::Connection as _;

use super::{Connector, SendError};

type Io = hyper_rustls::MaybeHttpsStream<super::proxy::Stream>;

/// A pooled connection unused this long is closed (as hyper's pool does).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream.
const MAX_IDLE_PER_HOST: usize = 256;
/// How often idle connections are checked for an upstream's close (so a
/// closed one does not linger half-open) and for the idle timeout.
const SWEEP_EVERY: Duration = Duration::from_secs(15);

/// Connections to `http` upstreams, per upstream (host and port).
#[derive(Clone)]
pub struct DirectPool(Arc<Shared>);

struct Shared {
    connector: Connector,
    idle: Mutex<HashMap<Authority, Vec<Idle>>>,
}

struct Idle {
    conn: Box<Conn>,
    since: Instant,
}

/// One HTTP/1 connection: its request handle and the connection itself,
/// which only makes progress while polled. Boxed where it is kept: with
/// TLS's state in its stream type it is kilobytes, too big to move.
struct Conn {
    send: http1::SendRequest<Full<Bytes>>,
    /// `None` once it ended. Dropping it then hands a request it never took
    /// back to its sender (an idle connection's close, read before the
    /// request was written), which sends it again on a fresh one.
    conn: Option<http1::Connection<Io, Full<Bytes>>>,
    /// Requests name their whole URL: the connection is to a proxy.
    absolute_form: bool,
}

impl Conn {
    /// Polls the connection; `Ready` once it has ended (closed or failed).
    fn drive(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(conn) = &mut self.conn else {
            return Poll::Ready(());
        };
        if Pin::new(conn).poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.conn = None;
        Poll::Ready(())
    }

    /// Open, and waiting for a request (not still writing the last one,
    /// as after an early answer to a request whose body was still going).
    fn idle(&mut self, cx: &mut Context<'_>) -> bool {
        self.drive(cx).is_pending() && self.send.is_ready()
    }
}

/// A connection in use by one response: its body's reader drives it, and
/// gives it back to the pool when the body has been read to its end.
pub struct Held {
    conn: Box<Conn>,
    pool: Arc<Shared>,
    key: Authority,
}

impl Held {
    /// The body's next frame, the connection polled to move it in: first
    /// what is there, then the connection is polled without a waker and
    /// what it moved taken, and only if nothing came is it polled with the
    /// task's waker (the socket's interest, for the wake-up). Taking a
    /// piece the connection moved wakes the waker it last polled with (its
    /// room for the next piece), which must not be this task's: it is
    /// running. A connection that ended settles the body with its end,
    /// polled with the task's waker should it not have.
    pub fn poll_body(
        &mut self,
        body: &mut Incoming,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        use http_body::Body as _;
        let mut body = Pin::new(body);
        let mut quiet = quiet();
        if let Poll::Ready(frame) = body.as_mut().poll_frame(&mut quiet) {
            return Poll::Ready(frame);
        }
        let ended = self.conn.drive(&mut quiet).is_ready();
        if !ended && let Poll::Ready(frame) = body.as_mut().poll_frame(&mut quiet) {
            return Poll::Ready(frame);
        }
        if ended || self.conn.drive(cx).is_ready() {
            return body.poll_frame(cx);
        }
        body.poll_frame(&mut quiet)
    }

    /// The connection has ended (closed or failed): nothing to give back.
    pub fn ended(&self) -> bool {
        self.conn.conn.is_none()
    }

    /// The body was read to its end: the connection goes back to the pool
    /// unless it ended (or is ending: `Connection: close`). Polled without
    /// a waker: nothing waits on an idle connection (see [`quiet`]).
    pub fn release(mut self) {
        if self.conn.idle(&mut quiet()) {
            self.pool.put(self.key, self.conn);
        }
    }
}

impl DirectPool {
    pub fn new(connector: Connector) -> Self {
        let shared = Arc::new(Shared {
            connector,
            idle: Mutex::new(HashMap::new()),
        });
        sweep_in_background(Arc::downgrade(&shared));
        Self(shared)
    }

    /// Sends `request` (its URI absolute, `http`) on a pooled connection
    /// or a new one and waits for the response head; the connection comes
    /// with it, for the body's reader to drive.
    pub async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Held), SendError> {
        let uri = request.uri().clone();
        let Some(key) = uri.authority().cloned() else {
            return Err(SendError::Connect("the URL has no host".into()));
        };
        if !request.headers().contains_key(http::header::HOST) {
            let host = host_header(&uri)
                .ok_or_else(|| SendError::Connect("the URL's host is not a valid header".into()))?;
            request.headers_mut().insert(http::header::HOST, host);
        }
        let origin = origin_form(&uri);
        loop {
            let taken = self.0.take(&key);
            let reused = taken.is_some();
            let mut conn = match taken {
                Some(conn) => conn,
                // Boxed: the connector's and the handshake's futures are
                // most of this one's size, and they run once a connection;
                // inline, every request's futures above would carry them.
                None => Box::pin(self.connect(&uri)).await?,
            };
            *request.uri_mut() = if conn.absolute_form {
                uri.clone()
            } else {
                origin.clone()
            };
            match exchange(&mut conn, request).await {
                Ok(response) => {
                    let held = Held {
                        conn,
                        pool: self.0.clone(),
                        key,
                    };
                    return Ok((response, held));
                }
                Err(mut e) => match e.take_message() {
                    // The pooled connection had closed before the request
                    // went out: a fresh one (a fresh one is not retried).
                    Some(back) if reused => request = back,
                    _ => return Err(SendError::Request(e.into_error().into())),
                },
            }
        }
    }

    async fn connect(&self, uri: &Uri) -> Result<Box<Conn>, SendError> {
        use tower_service::Service as _;
        let mut connector = self.0.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(uri.clone())
            .await
            .map_err(SendError::Connect)?;
        let absolute_form = io.connected().is_proxied();
        let (send, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| SendError::Request(e.into()))?;
        Ok(Box::new(Conn {
            send,
            conn: Some(conn),
            absolute_form,
        }))
    }

    /// Idle connections, all upstreams (tests).
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.0.idle.lock().unwrap().values().map(Vec::len).sum()
    }
}

impl Shared {
    /// The most recently used idle connection to `key` that is still open
    /// and ready for a request (polling it lets it notice a close, and
    /// makes it ready for the next request; without a waker, see [`quiet`]).
    /// Each is polled outside the lock, which every upstream's requests
    /// take.
    fn take(&self, key: &Authority) -> Option<Box<Conn>> {
        let cx = &mut quiet();
        loop {
            let mut i = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                idle.get_mut(key)?.pop()?
            };
            if i.since.elapsed() < IDLE_TIMEOUT && i.conn.idle(cx) {
                return Some(i.conn);
            }
        }
    }

    fn put(&self, key: Authority, conn: Box<Conn>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(key).or_default();
        if list.len() < MAX_IDLE_PER_HOST {
            list.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Closes idle connections the upstream closed or that idled too long
    /// (polled outside the lock, then the live ones put back).
    fn sweep(&self) {
        let lists = std::mem::take(&mut *self.idle.lock().unwrap_or_else(|p| p.into_inner()));
        let mut quiet = quiet();
        for (key, list) in lists {
            for mut i in list {
                if i.since.elapsed() < IDLE_TIMEOUT && i.conn.idle(&mut quiet) {
                    let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                    let kept = idle.entry(key.clone()).or_default();
                    if kept.len() < MAX_IDLE_PER_HOST {
                        kept.push(i);
                    }
                }
            }
        }
    }
}

/// Sweeps the pool every [`SWEEP_EVERY`] until it is dropped (a task on the
/// current runtime; none outside one, e.g. in a synchronous test).
fn sweep_in_background(pool: Weak<Shared>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(pool) = pool.upgrade() else { return };
            pool.sweep();
        }
    });
}

/// Sends `request` on `conn` and drives the connection until the response
/// head arrives (or the exchange fails).
async fn exchange(
    conn: &mut Conn,
    request: Request<Full<Bytes>>,
) -> Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<Full<Bytes>>>> {
    let answer = conn.send.try_send_request(request);
    let mut answer = std::pin::pin!(answer);
    std::future::poll_fn(|cx| {
        // The connection writes the request and reads the head (with the
        // task's waker: its socket wakes the task). Only these polls settle
        // `answer`, so it is polled without a waker (see [`quiet`]); a
        // connection that ended settles it with an error.
        if conn.drive(cx).is_ready() {
            return answer.as_mut().poll(cx);
        }
        let polled = answer.as_mut().poll(&mut quiet());
        if polled.is_pending() && !tokio::task::coop::has_budget_remaining() {
            // Out of the runtime's budget, the answer reports `Pending`
            // whatever it holds and would wake the waker it was given:
            // this task's, then, or nothing would.
            cx.waker().wake_by_ref();
        }
        polled
    })
    .await
}

/// A context whose waker does nothing. A driven connection's own pieces
/// (the response head's hand-over, the body's) are filled only by this
/// task's polls of the connection, so they need no waker; with the task's
/// own, each hand-over would wake the task that is running it and poll it
/// again for nothing. The task is woken by its connection's socket, whose
/// interest the last poll before `Pending` registers with the real waker.
pub fn quiet() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

/// `Host`: the host, and the port unless it is http's default (what
/// hyper's pooled client sends).
fn host_header(uri: &Uri) -> Option<HeaderValue> {
    let host = uri.host()?;
    let value = match uri.port_u16() {
        Some(port) if port != 80 => HeaderValue::from_str(&format!("{host}:{port}")),
        _ => HeaderValue::from_str(host),
    };
    value.ok()
}

/// The request target a server is sent: the path and query.
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(path) if path.as_str() != "/" => {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(path.clone());
            Uri::from_parts(parts).unwrap_or_default()
        }
        _ => Uri::default(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// An HTTP/1 server on loopback answering every request with `body`
    /// (`Content-Length`), closing each connection `linger` after its
    /// `answers`th answer (`0`: never). Returns its address and the
    /// connections it accepted.
    async fn server(
        answers: usize,
        linger: Duration,
        body: &'static str,
    ) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut served = 0;
                    let mut buf = Vec::new();
                    loop {
                        let mut chunk = [0u8; 4096];
                        let n = match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        buf.extend_from_slice(&chunk[..n]);
                        // Requests here have no body.
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            buf.drain(..end + 4);
                            let answer = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            socket.write_all(answer.as_bytes()).await.unwrap();
                            served += 1;
                            if served == answers {
                                tokio::time::sleep(linger).await;
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn pool() -> DirectPool {
        super::super::http_client(1_000, &super::super::Proxies::default()).direct
    }

    fn get(addr: &str) -> Request<Full<Bytes>> {
        let mut r = Request::new(Full::new(Bytes::new()));
        *r.uri_mut() = format!("http://{addr}/v1/models").parse().unwrap();
        r
    }

    /// Sends a request and reads its body to the end, driving the
    /// connection as `ReplyBody` does.
    async fn fetch(pool: &DirectPool, addr: &str) -> String {
        tokio::time::timeout(Duration::from_secs(5), fetch_now(pool, addr))
            .await
            .expect("an answer within 5 s")
    }

    async fn fetch_now(pool: &DirectPool, addr: &str) -> String {
        send_and_read(pool, get(addr)).await
    }

    async fn send_and_read(pool: &DirectPool, request: Request<Full<Bytes>>) -> String {
        let (response, held) = pool.send(request).await.unwrap();
        let mut body = super::super::ReplyBody::direct(response.into_body(), held);
        let mut text = Vec::new();
        while let Some(piece) = futures_util::StreamExt::next(&mut body).await {
            text.extend_from_slice(&piece.unwrap());
        }
        String::from_utf8(text).unwrap()
    }

    #[tokio::test]
    async fn a_connection_serves_one_request_after_another() {
        let (addr, accepted) = server(0, Duration::ZERO, "hello").await;
        let pool = pool();
        for _ in 0..5 {
            assert_eq!(fetch(&pool, &addr).await, "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_pooled_connection_the_upstream_closed_is_replaced() {
        // Each connection answers once and closes a little later, idle in
        // the pool.
        let (addr, accepted) = server(1, Duration::from_millis(20), "once").await;
        let pool = pool();
        assert_eq!(fetch(&pool, &addr).await, "once");
        assert_eq!(pool.idle_count(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(fetch(&pool, &addr).await, "once");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(fetch(&pool, &addr).await, "once");
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn an_answer_with_connection_close_is_not_pooled() {
        let (addr, accepted) = server(0, Duration::ZERO, "").await;
        let pool = pool();
        let mut request = get(&addr);
        request
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        assert_eq!(send_and_read(&pool, request).await, "");
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(fetch(&pool, &addr).await, "");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_body_left_unread_closes_its_connection() {
        let (addr, accepted) = server(0, Duration::ZERO, "a longer answer").await;
        let pool = pool();
        let (response, held) = pool.send(get(&addr)).await.unwrap();
        drop(super::super::ReplyBody::direct(response.into_body(), held));
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(fetch(&pool, &addr).await, "a longer answer");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_request_on_a_connection_found_closed_comes_back_unsent() {
        let (addr, _) = server(1, Duration::from_millis(20), "once").await;
        let pool = pool();
        assert_eq!(fetch(&pool, &addr).await, "once");
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Taken without the check `take` makes (which the runtime's budget
        // can skip): the connection reads its close before writing.
        let mut conn = {
            let mut idle = pool.0.idle.lock().unwrap();
            idle.values_mut().next().unwrap().pop().unwrap().conn
        };
        let mut request = get(&addr);
        *request.uri_mut() = origin_form(request.uri());
        let sent = tokio::time::timeout(Duration::from_secs(2), exchange(&mut conn, request))
            .await
            .expect("the request must not wait on a closed connection");
        let mut e = sent.err().unwrap();
        assert!(e.take_message().is_some(), "{:?}", e.error());
    }

    #[tokio::test]
    async fn the_sweep_closes_connections_the_upstream_closed() {
        let (addr, _) = server(1, Duration::from_millis(20), "once").await;
        let pool = pool();
        assert_eq!(fetch(&pool, &addr).await, "once");
        assert_eq!(pool.idle_count(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        pool.0.sweep();
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn requests_name_the_path_and_the_host() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = socket.read(&mut buf).await.unwrap();
            socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let pool = pool();
        let mut request = get(&addr);
        *request.uri_mut() = format!("http://{addr}/v1/chat?x=1").parse().unwrap();
        let (response, _held) = pool.send(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let head = seen.await.unwrap();
        assert!(head.starts_with("GET /v1/chat?x=1 HTTP/1.1\r\n"), "{head}");
        assert!(
            head.to_lowercase().contains(&format!("host: {addr}\r\n")),
            "{head}"
        );
        let _ = response.into_body().collect().await;
    }
}
