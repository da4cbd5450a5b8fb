//! The response body the gateway serves: a whole buffer, a stream passed through from the
//! model server ([`Relay`](crate::relay::Relay)), or another service's body (through the layer).
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;

/// Errors of bodies passed through the layer.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A response body of the gateway.
#[derive(Debug)]
pub struct GatewayBody {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Full(Option<Bytes>),
    Relay(Box<crate::relay::Relay>),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl GatewayBody {
    /// A body of one buffer.
    pub fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        Self {
            inner: Inner::Full((!b.is_empty()).then_some(b)),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self {
            inner: Inner::Full(None),
        }
    }

    /// A stream passed through from the model server.
    pub(crate) fn relay(r: crate::relay::Relay) -> Self {
        Self {
            inner: Inner::Relay(Box::new(r)),
        }
    }

    /// Any other body (an inner service's, under the layer).
    pub fn boxed<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self {
            inner: Inner::Boxed(body.map_err(Into::into).boxed_unsync()),
        }
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Relay(r) => r.poll_frame(cx),
            Inner::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Relay(_) => false,
            Inner::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Inner::Relay(_) => SizeHint::default(),
            Inner::Boxed(b) => b.size_hint(),
        }
    }
}
