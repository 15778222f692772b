//! The response body type: a complete buffer, or a chunk sequence that can be
//! paced (`slow_stream`) or cut short (`cut_stream`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

/// How long a cut stream lingers before dropping the connection, so that the
/// chunks already produced are flushed to the client first.
const CUT_GRACE: Duration = Duration::from_millis(50);

/// The error that makes hyper abort the connection mid-body.
#[derive(Debug)]
pub struct StreamCut;

impl fmt::Display for StreamCut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stream cut by mock fault")
    }
}

impl std::error::Error for StreamCut {}

pub enum MockBody {
    Full(Option<Bytes>),
    Chunks(Chunks),
}

impl MockBody {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        MockBody::Full(Some(bytes.into()))
    }
}

/// A chunk sequence with an optional gap between chunks and an optional cut.
pub struct Chunks {
    chunks: std::vec::IntoIter<Bytes>,
    gap: Option<Duration>,
    /// Abort after this many chunks.
    cut_after: Option<usize>,
    sent: usize,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Counts streams whose client went away before the last chunk (see `/_mock/stats`).
    abandoned: Option<Arc<AtomicU64>>,
}

impl Chunks {
    pub fn new(chunks: Vec<Bytes>) -> Self {
        Chunks { chunks: chunks.into_iter(), gap: None, cut_after: None, sent: 0, sleep: None, abandoned: None }
    }

    /// Counts this stream in `counter` if it is dropped before its last chunk was sent.
    pub fn watched(mut self, counter: Arc<AtomicU64>) -> Self {
        self.abandoned = Some(counter);
        self
    }

    /// Waits `gap` between consecutive chunks.
    pub fn paced(mut self, gap: Duration) -> Self {
        self.gap = Some(gap);
        self
    }

    /// Sends about half the chunks (at least one), then aborts.
    pub fn cut_in_half(mut self) -> Self {
        self.cut_after = Some((self.chunks.len() / 2).max(1));
        self
    }

    /// Completes once `duration` has elapsed since the first call.
    fn wait(&mut self, cx: &mut Context<'_>, duration: Duration) -> Poll<()> {
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(duration)));
        ready!(sleep.as_mut().poll(cx));
        self.sleep = None;
        Poll::Ready(())
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, StreamCut>>> {
        if self.cut_after == Some(self.sent) {
            ready!(self.wait(cx, CUT_GRACE));
            return Poll::Ready(Some(Err(StreamCut)));
        }
        if self.chunks.as_slice().is_empty() {
            return Poll::Ready(None);
        }
        if let (Some(gap), true) = (self.gap, self.sent > 0) {
            ready!(self.wait(cx, gap));
        }
        let chunk = self.chunks.next();
        self.sent += 1;
        Poll::Ready(chunk.map(|c| Ok(Frame::data(c))))
    }
}

impl Drop for Chunks {
    fn drop(&mut self) {
        let cut = self.cut_after.is_some_and(|n| self.sent >= n);
        if !self.chunks.as_slice().is_empty() && !cut {
            if let Some(counter) = &self.abandoned {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = StreamCut;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, StreamCut>>> {
        match self.get_mut() {
            MockBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            MockBody::Chunks(chunks) => chunks.poll_next(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(bytes) => bytes.is_none(),
            MockBody::Chunks(chunks) => chunks.cut_after.is_none() && chunks.chunks.as_slice().is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            MockBody::Full(None) => SizeHint::with_exact(0),
            MockBody::Chunks(_) => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn chunks(n: usize) -> Vec<Bytes> {
        (0..n).map(|i| Bytes::from(format!("{i};"))).collect()
    }

    #[tokio::test]
    async fn streams_every_chunk() {
        let body = MockBody::Chunks(Chunks::new(chunks(3)));
        let collected = body.collect().await.expect("complete").to_bytes();
        assert_eq!(collected, Bytes::from_static(b"0;1;2;"));
    }

    #[tokio::test]
    async fn cut_stream_sends_half_then_fails() {
        let mut body = MockBody::Chunks(Chunks::new(chunks(6)).cut_in_half());
        let mut got = Vec::new();
        let error = loop {
            match body.frame().await {
                Some(Ok(frame)) => got.extend(frame.into_data().ok()),
                Some(Err(e)) => break Some(e),
                None => break None,
            }
        };
        assert!(error.is_some());
        assert_eq!(got.len(), 3);
    }

    #[tokio::test]
    async fn paced_stream_waits_between_chunks() {
        let start = tokio::time::Instant::now();
        let body = MockBody::Chunks(Chunks::new(chunks(3)).paced(Duration::from_millis(20)));
        body.collect().await.expect("complete");
        assert!(start.elapsed() >= Duration::from_millis(40));
    }
}
