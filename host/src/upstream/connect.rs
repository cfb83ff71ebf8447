//! A connector bounded in time as a whole: the HTTP connector's own timeout
//! covers only the TCP connect to each address, not name resolution or the
//! TLS handshake, so an upstream that accepts TCP and then stalls its
//! handshake would otherwise hold a request until its first-byte timeout.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `inner`, failing with [`std::io::ErrorKind::TimedOut`] past `limit`.
#[derive(Clone)]
pub struct Bounded<C> {
    inner: C,
    limit: Duration,
}

impl<C> Bounded<C> {
    pub fn new(inner: C, limit: Duration) -> Self {
        Self { inner, limit }
    }
}

impl<C> tower_service::Service<Uri> for Bounded<C>
where
    C: tower_service::Service<Uri> + Send,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let limit = self.limit;
        // Boxed: once per new connection, not per request.
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(done) => done.map_err(Into::into),
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connection not established within {} ms", limit.as_millis()),
                )) as BoxError),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stalled_connection_fails_at_the_limit() {
        let stalled = tower::service_fn(|_: Uri| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok::<_, std::io::Error>(())
        });
        let mut bounded = Bounded::new(stalled, Duration::from_millis(20));
        let started = std::time::Instant::now();
        let e = tower_service::Service::call(&mut bounded, Uri::from_static("http://h/"))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        let io = e.downcast_ref::<std::io::Error>().unwrap();
        assert_eq!(io.kind(), std::io::ErrorKind::TimedOut);
    }
}
