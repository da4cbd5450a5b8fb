//! What the gateway adds to a request: a zero-latency model server answered directly and
//! through an in-process gateway, closed loop at a fixed concurrency, on loopback.
//!
//! `cargo run --release -p switchyard-gateway --example overhead [-- CONCURRENCY REQUESTS SENTENCES]`
//!
//! One process holds the server, the gateway and the clients, so on a small machine they
//! compete for the same cores: read the figures as an upper bound of the gateway's share.
use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

const ANSWER: &str = r#"{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":1,"total_tokens":11}}"#;

async fn server() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((io, _)) = l.accept().await else {
                continue;
            };
            let _ = io.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let _ = req.into_body().collect().await;
                        let mut r =
                            http::Response::new(Full::new(Bytes::from_static(ANSWER.as_bytes())));
                        r.headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, Infallible>(r)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(io), svc)
                    .await;
            });
        }
    });
    addr
}

async fn run(
    url: String,
    concurrency: usize,
    requests: usize,
    body: Bytes,
) -> (Vec<Duration>, Duration) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(requests / concurrency);
            for _ in 0..requests / concurrency {
                let req = http::Request::post(url.as_str())
                    .header("content-type", "application/json")
                    .body(Full::new(body.clone()))
                    .unwrap();
                let t = Instant::now();
                let r = client.request(req).await.expect("request");
                assert!(r.status().is_success(), "status {}", r.status());
                let _ = r.into_body().collect().await.expect("body");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let took = start.elapsed();
    all.sort();
    (all, took)
}

fn pct(v: &[Duration], p: f64) -> f64 {
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1e6
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let concurrency = args.first().copied().unwrap_or(16);
    let requests = args.get(1).copied().unwrap_or(20_000);
    // Prompt length: this many 45-byte sentences.
    let repeat = args.get(2).copied().unwrap_or(40);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let up = server().await;
        let toml = format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\n\n[[node]]\nname = \"a\"\nurl = \"http://{up}\"\nmodels = [\"m\"]\nmax_concurrency = 1024\nmax_tokens_in_flight = 16000000\n"
        );
        let cfg = switchyard::Config::parse("overhead", &toml).unwrap();
        let settings = switchyard_gateway::GatewaySettings::from_table(cfg.gateway.as_ref()).unwrap();
        let gw = switchyard_gateway::Gateway::new(&cfg, settings).unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gaddr = l.local_addr().unwrap();
        let g = gw.clone();
        tokio::spawn(async move { g.serve(l, std::future::pending()).await });
        let prompt = "The quick brown fox jumps over the lazy dog. ".repeat(repeat);
        let body = Bytes::from(format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"{prompt}"}}],"max_tokens":16}}"#
        ));
        // Warm both paths' connection pools.
        let _ = run(format!("http://{up}/v1/chat/completions"), concurrency, concurrency * 20, body.clone()).await;
        let _ = run(format!("http://{gaddr}/v1/chat/completions"), concurrency, concurrency * 20, body.clone()).await;
        let (d, dt) = run(format!("http://{up}/v1/chat/completions"), concurrency, requests, body.clone()).await;
        let (g, gt) = run(format!("http://{gaddr}/v1/chat/completions"), concurrency, requests, body).await;
        println!("concurrency {concurrency}, {} requests each way", d.len());
        println!(
            "direct : p50 {:>7.0} us  p99 {:>7.0} us  {:>7.0} req/s",
            pct(&d, 0.5),
            pct(&d, 0.99),
            d.len() as f64 / dt.as_secs_f64()
        );
        println!(
            "gateway: p50 {:>7.0} us  p99 {:>7.0} us  {:>7.0} req/s",
            pct(&g, 0.5),
            pct(&g, 0.99),
            g.len() as f64 / gt.as_secs_f64()
        );
        println!(
            "added  : p50 {:>7.0} us  p99 {:>7.0} us",
            pct(&g, 0.5) - pct(&d, 0.5),
            pct(&g, 0.99) - pct(&d, 0.99)
        );
        assert!(gw.router().ledgers_are_zero());
    });
}
