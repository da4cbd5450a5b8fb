//! The tower layer in front of a service of one's own, called in-process.
mod common;

use std::convert::Infallible;
use std::task::{Context, Poll};

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower_layer::Layer;
use tower_service::Service;

#[derive(Clone)]
struct Mine;

impl Service<Request<Full<Bytes>>> for Mine {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Request<Full<Bytes>>) -> Self::Future {
        std::future::ready(Ok(Response::new(Full::new(Bytes::from(format!(
            "mine: {}",
            req.uri().path()
        ))))))
    }
}

async fn call<S>(svc: &mut S, req: Request<Full<Bytes>>) -> (StatusCode, String)
where
    S: Service<Request<Full<Bytes>>, Response = Response<switchyard_gateway::GatewayBody>>,
    S::Error: std::fmt::Debug,
{
    std::future::poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
    let r = svc.call(req).await.unwrap();
    let status = r.status();
    let b = r.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&b).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_routes_openai_paths_and_passes_the_rest_on() {
    let a = Mock::start("a").await;
    let h = Harness::start(&fleet_toml(&[&a], "", "")).await;
    let mut svc = h.gw.layer().layer(Mine);
    let (s, text) = call(
        &mut svc,
        Request::get("/elsewhere").body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!((s, text.as_str()), (StatusCode::OK, "mine: /elsewhere"));
    let (s, text) = call(
        &mut svc,
        Request::get("/v1/models").body(Full::default()).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(text.contains("\"id\":\"m\""), "{text}");
    let req = Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from(CHAT)))
        .unwrap();
    let (s, text) = call(&mut svc, req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(text, answer_json("a"));
    assert_eq!(a.hits(), 1);
    h.finish().await;
}
