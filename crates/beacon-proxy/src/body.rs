//! The response body type: a complete buffer, a metered SSE stream, or an upstream body
//! relayed as it is (the unmetered Responses retrieval routes).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A metered stream (`meter::stream::MeteredSse` of some API), which never fails: stream
/// errors become the API's error event.
pub type SseBody = Pin<Box<dyn Body<Data = Bytes, Error = Infallible> + Send>>;

/// Every response Beacon sends has this body.
pub enum ProxyBody {
    /// A body sent in one frame.
    Full(Option<Bytes>),
    /// A streamed completion.
    Sse(SseBody),
    /// An upstream body relayed frame by frame; an upstream failure aborts the response.
    /// Boxed: the variant is rare, and every response moves a `ProxyBody` several times.
    Relay(Box<Incoming>),
}

impl ProxyBody {
    /// A complete body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self::Full(None)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
            Self::Sse(s) => s
                .as_mut()
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|e| match e {}))),
            Self::Relay(b) => Pin::new(b.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
            Self::Sse(_) => false,
            Self::Relay(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Sse(_) => SizeHint::default(),
            Self::Relay(b) => b.size_hint(),
        }
    }
}
