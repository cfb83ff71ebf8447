//! An upstream answer's body as the pipeline reads it: a stream of what has
//! arrived, gathered a burst at a time (see [`ReplyBody::gather`]).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Body as _;

use super::root_cause;

/// The body of a [`Reply`](super::Reply), as a stream of the HTTP client's
/// pieces (one per HTTP chunk; trailers and empty pieces skipped).
/// [`ReplyBody::gather`] joins a piece with those that arrived with it.
pub struct ReplyBody(BodyInner);

enum BodyInner {
    Http {
        incoming: hyper::body::Incoming,
        /// The body's end (or its failure), seen by [`ReplyBody::gather`]
        /// after its batch and reported by the next poll.
        end: Option<Option<BodyError>>,
        /// The end was reported: the stream is fused.
        done: bool,
        /// A connection this body's reader drives (see [`super::direct`]):
        /// hyper's pooled client drives its own in a task of its own.
        held: Option<super::direct::Held>,
    },
    Full(Option<Bytes>),
    /// An in-process body in pieces, each read on its own as a paced
    /// upstream's events are: the stream is pending once before each.
    Pieces {
        pieces: std::collections::VecDeque<Bytes>,
        /// The next piece has "arrived" (its pending poll was made).
        arrived: bool,
    },
}

/// The most of a finished stream's body read to give its connection back
/// ([`ReplyBody::finish_in_background`]), and for how long.
const DRAIN_BYTES: usize = 64 << 10;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Most yields [`ReplyBody::gather`] makes while gathering one batch.
const GATHER_YIELDS: usize = 64;

impl ReplyBody {
    /// A whole body already in memory (the in-process upstream).
    pub(super) fn full(bytes: Bytes) -> Self {
        Self(BodyInner::Full(Some(bytes)))
    }

    /// A body that has ended (what a read-out or given-up body is left as).
    pub fn ended() -> Self {
        Self(BodyInner::Full(None))
    }

    /// In-process pieces (one is a whole body, [`ReplyBody::full`]).
    pub(super) fn pieces(mut pieces: Vec<Bytes>) -> Self {
        if pieces.len() <= 1 {
            return Self::full(pieces.pop().unwrap_or_default());
        }
        Self(BodyInner::Pieces {
            pieces: pieces.into(),
            arrived: false,
        })
    }

    pub(super) fn http(incoming: hyper::body::Incoming) -> Self {
        Self(BodyInner::Http {
            incoming,
            end: None,
            done: false,
            held: None,
        })
    }

    /// A body read from a connection that its reader drives.
    pub(super) fn direct(incoming: hyper::body::Incoming, held: super::direct::Held) -> Self {
        Self(BodyInner::Http {
            incoming,
            end: None,
            done: false,
            held: Some(held),
        })
    }

    /// The stream is over (its `[DONE]` was read): what is left of the body
    /// (the end of its HTTP framing, if it was not read with the last
    /// events) is read in the background, at most [`DRAIN_BYTES`] within
    /// [`DRAIN_TIME`], so a connection this task drove goes back to its pool
    /// rather than closed. (Dropped, a body closes its connection: right
    /// for a stream the client left, which the upstream should stop.)
    pub fn finish_in_background(&mut self) {
        use futures_util::StreamExt;
        if !matches!(
            self.0,
            BodyInner::Http {
                held: Some(_),
                done: false,
                ..
            }
        ) {
            return;
        }
        let mut body = std::mem::replace(self, Self::ended());
        // Usually the end came with the last events: no task.
        let mut quiet = super::direct::quiet();
        let mut read = 0;
        loop {
            match body.poll_next_unpin(&mut quiet) {
                Poll::Ready(Some(Ok(piece))) => {
                    read += piece.len();
                    if read > DRAIN_BYTES {
                        return;
                    }
                }
                Poll::Ready(_) => return,
                Poll::Pending => break,
            }
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let _ = tokio::time::timeout(DRAIN_TIME, async {
                while let Some(Ok(piece)) = body.next().await {
                    read += piece.len();
                    if read > DRAIN_BYTES {
                        return;
                    }
                }
            })
            .await;
        });
    }

    /// `first` (the piece just read) joined with every piece that follows
    /// it at once. The HTTP client hands a body over one HTTP chunk at a
    /// time from its connection task, and most upstreams send one chunk per
    /// SSE event: without gathering, a burst of events read from the socket
    /// at once would cost one adapter call and one write to the client per
    /// event. Gathering yields to the runtime (so the connection task can
    /// decode what it has already read) and stops at the first piece that
    /// is not there yet: a slow stream's events are not delayed. It takes at
    /// most [`GATHER_YIELDS`] yields, so it needs no timeout; and it should
    /// not be under one: cancelled, it would drop what it gathered. (Read
    /// `first` with `next()` under the idle timeout: that is cancel-safe.)
    pub async fn gather(&mut self, first: Bytes) -> Bytes {
        use futures_util::StreamExt;
        // In-process pieces stand for a paced stream, whose events come a
        // wake-up each: gathering would find nothing (and its poll would
        // take the wait the pump's own poll should see).
        if matches!(self.0, BodyInner::Full(_) | BodyInner::Pieces { .. }) {
            return first;
        }
        // A body whose connection this task drives has, at each poll, what
        // the connection read: no other task needs to run in between.
        let driven = matches!(self.0, BodyInner::Http { held: Some(_), .. });
        let mut joined: Option<bytes::BytesMut> = None;
        for _ in 0..GATHER_YIELDS {
            if !driven {
                tokio::task::yield_now().await;
            }
            let more = std::future::poll_fn(|cx| Poll::Ready(self.poll_next_unpin(cx))).await;
            match more {
                Poll::Ready(Some(Ok(more))) => {
                    joined
                        .get_or_insert_with(|| {
                            let mut j = bytes::BytesMut::with_capacity(first.len() * 8);
                            j.extend_from_slice(&first);
                            j
                        })
                        .extend_from_slice(&more);
                }
                Poll::Ready(ended) => {
                    // Reported by the next call, after this batch.
                    if let BodyInner::Http { end, done, .. } = &mut self.0 {
                        *end = Some(ended.and_then(Result::err));
                        *done = false;
                    }
                    break;
                }
                Poll::Pending => break,
            }
        }
        joined.map_or(first, bytes::BytesMut::freeze)
    }
}

/// The body's next frame; with a connection to drive, the connection is
/// polled here (see [`super::direct::Held::poll_body`]).
fn poll_frame(
    incoming: &mut hyper::body::Incoming,
    held: &mut Option<super::direct::Held>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
    let Some(conn) = held else {
        return Pin::new(incoming).poll_frame(cx);
    };
    let frame = conn.poll_body(incoming, cx);
    if conn.ended() {
        // The body ends (or fails) with its connection.
        *held = None;
    }
    frame
}

/// A body that broke while being read (the connection failed or the
/// upstream sent something that is not HTTP).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(pub(super) String);

impl futures_util::Stream for ReplyBody {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let (incoming, end, done, held) = match &mut self.get_mut().0 {
            BodyInner::Full(bytes) => return Poll::Ready(bytes.take().map(Ok)),
            BodyInner::Pieces { pieces, arrived } => {
                if pieces.is_empty() {
                    return Poll::Ready(None);
                }
                if !*arrived {
                    // Comes with the next wake-up, as a read would.
                    *arrived = true;
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                *arrived = false;
                return Poll::Ready(pieces.pop_front().map(Ok));
            }
            BodyInner::Http {
                incoming,
                end,
                done,
                held,
            } => (incoming, end, done, held),
        };
        if *done {
            return Poll::Ready(None);
        }
        if let Some(end) = end.take() {
            // Reported once; the body is fused after it.
            *done = true;
            return Poll::Ready(end.map(Err));
        }
        loop {
            let frame = match poll_frame(incoming, held, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    *done = true;
                    // Read to its end: the connection can serve another.
                    if let Some(held) = held.take() {
                        held.release();
                    }
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    *done = true;
                    *held = None;
                    return Poll::Ready(Some(Err(BodyError(root_cause(&e)))));
                }
                Poll::Ready(Some(Ok(frame))) => frame,
            };
            // Trailers carry nothing an adapter reads.
            if let Ok(data) = frame.into_data()
                && !data.is_empty()
            {
                return Poll::Ready(Some(Ok(data)));
            }
        }
    }
}
