//! Outbound proxies, as the environment names them (`HTTPS_PROXY`,
//! `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY`, read as curl reads them).
//!
//! Platform teams often may only reach providers through an egress proxy,
//! so a gateway that ignored these variables would call out directly, or
//! not at all. An `https` upstream is reached through an HTTP `CONNECT`
//! tunnel, with TLS end to end inside it (the proxy never sees the key); a
//! plain `http` upstream is sent to the proxy in absolute form. The proxy
//! itself is spoken to in plain HTTP: a proxy URL of another scheme
//! (`https://`, `socks5://`) is refused at start rather than bypassed.
//!
//! The choice is made once per new connection, in the connector; requests
//! on a pooled connection cost nothing more.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderValue, Uri};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Which destinations go through which proxy; `None` when no variable is set.
#[derive(Clone, Default)]
pub struct Proxies(Option<Arc<Matcher>>);

impl Proxies {
    /// The proxies the environment names, checked: every proxy must be an
    /// `http://` URL.
    pub fn from_env() -> Result<Self, String> {
        let set = [
            "HTTPS_PROXY",
            "https_proxy",
            "HTTP_PROXY",
            "http_proxy",
            "ALL_PROXY",
            "all_proxy",
        ]
        .iter()
        .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()));
        if !set {
            return Ok(Self(None));
        }
        Self::checked(Matcher::from_env())
    }

    /// `matcher`, refused if it names a proxy the gateway cannot speak to.
    pub fn checked(matcher: Matcher) -> Result<Self, String> {
        for probe in ["http://switchyard.invalid/", "https://switchyard.invalid/"] {
            let Some(proxy) = matcher.intercept(&Uri::from_static(probe)) else {
                continue;
            };
            if proxy.uri().scheme_str() != Some("http") {
                return Err(format!(
                    "the outbound proxy for {} upstreams ({}_PROXY or ALL_PROXY) is {}://…: only http:// proxies are supported",
                    &probe[..probe.find(':').unwrap_or(0)],
                    if probe.starts_with("https") {
                        "HTTPS"
                    } else {
                        "HTTP"
                    },
                    proxy.uri().scheme_str().unwrap_or("?"),
                ));
            }
            if proxy.uri().host().is_none() {
                return Err("an outbound proxy URL has no host".into());
            }
        }
        Ok(Self(Some(Arc::new(matcher))))
    }

    /// Whether any proxy is configured.
    pub fn any(&self) -> bool {
        self.0.is_some()
    }

    /// The `Proxy-Authorization` a request to `uri` must carry: only a plain
    /// `http` request sent to an authenticating proxy (a tunnel carries its
    /// credentials in its `CONNECT`).
    pub fn authorization(&self, uri: &Uri) -> Option<HeaderValue> {
        let matcher = self.0.as_ref()?;
        if uri.scheme_str() != Some("http") {
            return None;
        }
        matcher.intercept(uri)?.basic_auth().cloned()
    }
}

/// TCP to the upstream, to its proxy, or through a tunnel in its proxy.
#[derive(Clone)]
pub struct Via {
    http: HttpConnector,
    proxies: Proxies,
}

impl Via {
    pub fn new(http: HttpConnector, proxies: Proxies) -> Self {
        Self { http, proxies }
    }
}

impl tower_service::Service<Uri> for Via {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower_service::Service::<Uri>::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let proxy = self.proxies.0.as_ref().and_then(|m| m.intercept(&dst));
        let mut http = self.http.clone();
        // Boxed: once per new connection, not per request.
        Box::pin(async move {
            match proxy {
                None => Ok(Stream {
                    io: tower_service::Service::call(&mut http, dst).await?,
                    absolute_form: false,
                }),
                Some(proxy) if dst.scheme_str() == Some("https") => {
                    let mut tunnel = Tunnel::new(proxy.uri().clone(), http);
                    if let Some(auth) = proxy.basic_auth() {
                        tunnel = tunnel.with_auth(auth.clone());
                    }
                    let io = tower_service::Service::call(&mut tunnel, dst)
                        .await
                        .map_err(|e| format!("through the outbound proxy: {e}"))?;
                    Ok(Stream {
                        io,
                        absolute_form: false,
                    })
                }
                Some(proxy) => Ok(Stream {
                    io: tower_service::Service::call(&mut http, proxy.uri().clone())
                        .await
                        .map_err(|e| format!("to the outbound proxy: {e}"))?,
                    absolute_form: true,
                }),
            }
        })
    }
}

/// A connection; `absolute_form` tells the client it talks to a proxy, so
/// that requests name their whole URL.
pub struct Stream {
    io: TokioIo<TcpStream>,
    absolute_form: bool,
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.absolute_form)
    }
}

impl Read for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_proxies_are_accepted() {
        let m = |all: &str| Matcher::builder().all(all.to_owned()).build();
        assert!(Proxies::checked(m("http://proxy:3128")).is_ok());
        // No scheme means http, as curl reads it.
        assert!(Proxies::checked(m("proxy:3128")).is_ok());
        let e = Proxies::checked(m("socks5://proxy:1080")).err().unwrap();
        assert!(e.contains("socks5://") && e.contains("only http://"), "{e}");
        let e = Proxies::checked(m("https://proxy:3128")).err().unwrap();
        assert!(e.contains("https://"), "{e}");
    }

    #[test]
    fn plain_http_carries_the_proxy_credentials_and_a_tunnel_does_not() {
        let proxies = Proxies::checked(
            Matcher::builder()
                .all("http://user:pass@proxy:3128".to_owned())
                .no("internal.example".to_owned())
                .build(),
        )
        .unwrap();
        let auth = proxies
            .authorization(&Uri::from_static("http://up.example/v1"))
            .unwrap();
        assert_eq!(auth, "Basic dXNlcjpwYXNz");
        assert!(
            proxies
                .authorization(&Uri::from_static("https://up.example/v1"))
                .is_none()
        );
        assert!(
            proxies
                .authorization(&Uri::from_static("http://internal.example/v1"))
                .is_none()
        );
        assert!(
            Proxies::default()
                .authorization(&Uri::from_static("http://up.example/v1"))
                .is_none()
        );
    }
}
