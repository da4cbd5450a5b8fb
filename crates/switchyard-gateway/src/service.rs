//! The tower side: [`GatewayService`] answers every route of the binary; [`SwitchyardLayer`]
//! puts the OpenAI routes in front of a service of one's own.
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;

use crate::body::{BoxError, GatewayBody};
use crate::gateway::Never;
use crate::Gateway;

/// The gateway as a tower `Service`: `POST /v1/chat/completions`, `POST /v1/completions`,
/// `GET /v1/models`, `GET /health`, `GET /metrics`; anything else is a 404 in the OpenAI
/// error shape. It never fails: every error is an HTTP answer.
#[derive(Debug, Clone)]
pub struct GatewayService {
    gw: Gateway,
}

impl GatewayService {
    /// The service of `gw` (also [`Gateway::service`]).
    pub fn new(gw: Gateway) -> Self {
        Self { gw }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<B> tower_service::Service<Request<B>> for GatewayService
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<GatewayBody>;
    type Error = Never;
    type Future = BoxFuture<Result<Response<GatewayBody>, Never>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Never>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let gw = self.gw.clone();
        Box::pin(async move { Ok(gw.handle(req).await) })
    }
}

/// A tower `Layer`: requests for `/v1/chat/completions`, `/v1/completions` and `/v1/models`
/// go through switchyard; everything else reaches the wrapped service. Mount
/// [`Gateway::metrics_text`] on a route of your own for `/metrics`.
///
/// ```no_run
/// # fn demo(gw: switchyard_gateway::Gateway) {
/// use tower_layer::Layer;
/// # #[derive(Clone)] struct Mine;
/// # impl tower_service::Service<http::Request<hyper::body::Incoming>> for Mine {
/// #     type Response = http::Response<http_body_util::Full<bytes::Bytes>>;
/// #     type Error = std::convert::Infallible;
/// #     type Future = std::future::Ready<Result<Self::Response, Self::Error>>;
/// #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> { std::task::Poll::Ready(Ok(())) }
/// #     fn call(&mut self, _: http::Request<hyper::body::Incoming>) -> Self::Future { std::future::ready(Ok(Default::default())) }
/// # }
/// let svc = gw.layer().layer(Mine); // your own service behind the OpenAI routes
/// # let _ = svc; }
/// ```
#[derive(Debug, Clone)]
pub struct SwitchyardLayer {
    gw: Gateway,
}

impl SwitchyardLayer {
    /// The layer of `gw` (also [`Gateway::layer`]).
    pub fn new(gw: Gateway) -> Self {
        Self { gw }
    }
}

impl<S> tower_layer::Layer<S> for SwitchyardLayer {
    type Service = Switchyard<S>;

    fn layer(&self, inner: S) -> Switchyard<S> {
        Switchyard {
            gw: self.gw.clone(),
            inner,
        }
    }
}

/// The service [`SwitchyardLayer`] makes.
#[derive(Debug, Clone)]
pub struct Switchyard<S> {
    gw: Gateway,
    inner: S,
}

fn is_ours(path: &str) -> bool {
    matches!(
        path,
        "/v1/chat/completions" | "/v1/completions" | "/v1/models"
    )
}

impl<S, B, RB> tower_service::Service<Request<B>> for Switchyard<S>
where
    S: tower_service::Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Response = Response<GatewayBody>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<GatewayBody>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if is_ours(req.uri().path()) {
            let gw = self.gw.clone();
            return Box::pin(async move { Ok(gw.handle(req).await) });
        }
        // The ready service handles the call; a clone takes its place for the next one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let r = inner.call(req).await?;
            Ok(r.map(GatewayBody::boxed))
        })
    }
}
