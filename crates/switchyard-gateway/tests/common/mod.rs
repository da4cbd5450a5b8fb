//! A controllable OpenAI-compatible model server, and a gateway started in-process in front of
//! a few of them, all on loopback ephemeral ports.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use switchyard_gateway::Gateway;
use tokio::sync::{mpsc, watch};

/// Generous bound on anything awaited, so a broken test fails instead of hanging.
pub const LONG: Duration = Duration::from_secs(20);

/// A body fed from a channel; an `Err` item aborts it (the connection breaks mid-body).
pub struct ChanBody(pub mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

/// What a mock server does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer (JSON, or an SSE stream of `chunks` content chunks).
    Ok,
    /// 500 with an error body.
    Fail500,
    /// 429 with `Retry-After: secs`.
    RateLimit(u64),
    /// Never answer (not even the head).
    Hang,
    /// Send the stream's head and role chunk, then nothing.
    HangAfterHead,
    /// Stream two content chunks, then break the connection.
    DropMidStream,
    /// Stream the role chunk, then break the connection.
    DropAfterRole,
    /// Stream an `error` event, then end.
    ErrorEvent,
    /// 400 with an error body.
    Fail400,
}

pub struct MockState {
    pub mode: Mutex<Mode>,
    pub hits: AtomicUsize,
    /// Content chunks per stream.
    pub chunks: AtomicUsize,
    /// Extra bytes of content in every streamed content chunk (0: the plain `tok{i} `).
    pub pad: AtomicUsize,
    /// After this many content chunks, a stream waits for the gate to open.
    pub hold_after: Mutex<Option<usize>>,
    pub gate: watch::Sender<bool>,
    /// Streams whose client (the gateway) went away before the end.
    pub cut_off: AtomicUsize,
    /// Bodies received.
    pub bodies: Mutex<Vec<serde_json::Value>>,
    kill: watch::Sender<bool>,
}

#[derive(Clone)]
pub struct Mock {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
    pub name: String,
}

pub fn answer_json(name: &str) -> String {
    format!(
        "{{\"id\":\"cmpl-{name}\",\"object\":\"chat.completion\",\"model\":\"m\",\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"hello from {name}\"}},\"finish_reason\":\"stop\"}}],\"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":4,\"total_tokens\":9}}}}"
    )
}

pub fn role_chunk() -> String {
    "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n".into()
}

pub fn content_chunk(i: usize) -> String {
    format!("data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}}}}]}}\n\n")
}

pub fn usage_chunk(n: usize) -> String {
    format!("data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{{\"prompt_tokens\":5,\"completion_tokens\":{n},\"total_tokens\":{}}}}}\n\n", n + 5)
}

/// The exact bytes of a whole stream of `n` chunks.
pub fn whole_stream(n: usize, usage: bool) -> String {
    let mut s = role_chunk();
    for i in 0..n {
        s += &content_chunk(i);
    }
    if usage {
        s += &usage_chunk(n);
    }
    s + "data: [DONE]\n\n"
}

impl Mock {
    pub async fn start(name: &str) -> Mock {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (kill, _) = watch::channel(false);
        let (gate, _) = watch::channel(false);
        let state = Arc::new(MockState {
            mode: Mutex::new(Mode::Ok),
            hits: AtomicUsize::new(0),
            chunks: AtomicUsize::new(3),
            pad: AtomicUsize::new(0),
            hold_after: Mutex::new(None),
            gate,
            cut_off: AtomicUsize::new(0),
            bodies: Mutex::new(Vec::new()),
            kill,
        });
        let mock = Mock {
            addr,
            state: state.clone(),
            name: name.to_string(),
        };
        let m = mock.clone();
        tokio::spawn(async move {
            let mut killed = m.state.kill.subscribe();
            loop {
                let (io, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                    _ = killed.wait_for(|k| *k) => return,
                };
                let m2 = m.clone();
                let mut killed2 = m.state.kill.subscribe();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let m3 = m2.clone();
                        async move { Ok::<_, Infallible>(m3.serve(req).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(io), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = killed2.wait_for(|k| *k) => {}
                    }
                });
            }
        });
        mock
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Closes the listener and every connection: later connects are refused.
    pub fn kill(&self) {
        let _ = self.state.kill.send(true);
    }

    pub fn hold_after(&self, n: Option<usize>) {
        *self.state.hold_after.lock().unwrap() = n;
    }

    pub fn open_gate(&self) {
        let _ = self.state.gate.send(true);
    }

    async fn serve(&self, req: Request<Incoming>) -> Response<ChanBody> {
        self.state.hits.fetch_add(1, Ordering::SeqCst);
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        self.state.bodies.lock().unwrap().push(v.clone());
        let stream = v.get("stream").and_then(|s| s.as_bool()).unwrap_or(false);
        let usage = v["stream_options"]["include_usage"]
            .as_bool()
            .unwrap_or(false);
        let mode = *self.state.mode.lock().unwrap();
        let (tx, rx) = mpsc::channel(64);
        let mut resp = Response::new(ChanBody(rx));
        match mode {
            Mode::Fail500 => {
                *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                let _ = tx.try_send(Ok(Bytes::from_static(
                    b"{\"error\":{\"message\":\"boom\"}}",
                )));
                return resp;
            }
            Mode::Fail400 => {
                *resp.status_mut() = StatusCode::BAD_REQUEST;
                let _ = tx.try_send(Ok(Bytes::from_static(
                    b"{\"error\":{\"message\":\"bad temperature\"}}",
                )));
                return resp;
            }
            Mode::RateLimit(s) => {
                *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                if s > 0 {
                    resp.headers_mut().insert("retry-after", s.into());
                }
                let _ = tx.try_send(Ok(Bytes::from_static(
                    b"{\"error\":{\"message\":\"slow down\"}}",
                )));
                return resp;
            }
            Mode::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return resp;
            }
            _ => {}
        }
        if !stream {
            resp.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            let whole = answer_json(&self.name);
            if mode == Mode::DropMidStream {
                // Half the answer, then the connection breaks.
                let half = Bytes::from(whole[..whole.len() / 2].to_string());
                tokio::spawn(async move {
                    let _ = tx.send(Ok(half)).await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let _ = tx.send(Err(std::io::Error::other("cut"))).await;
                });
                return resp;
            }
            let _ = tx.try_send(Ok(Bytes::from(whole)));
            return resp;
        }
        resp.headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        let n = self.state.chunks.load(Ordering::SeqCst);
        let pad = "x".repeat(self.state.pad.load(Ordering::SeqCst));
        let hold = *self.state.hold_after.lock().unwrap();
        let mut gate = self.state.gate.subscribe();
        let state = self.state.clone();
        tokio::spawn(async move {
            let send = |s: String| {
                let tx = tx.clone();
                async move { tx.send(Ok(Bytes::from(s))).await.is_ok() }
            };
            if !send(role_chunk()).await {
                return;
            }
            if mode == Mode::ErrorEvent {
                let _ = send("data: {\"error\":{\"message\":\"engine dead\"}}\n\n".into()).await;
                return;
            }
            if mode == Mode::DropAfterRole {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = tx.send(Err(std::io::Error::other("cut"))).await;
                return;
            }
            if mode == Mode::HangAfterHead {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            for i in 0..n {
                if hold == Some(i) {
                    tokio::select! {
                        _ = gate.wait_for(|g| *g) => {}
                        _ = tx.closed() => {
                            state.cut_off.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    }
                }
                if mode == Mode::DropMidStream && i == 2 {
                    // Let the chunks sent so far leave before the connection breaks.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let _ = tx.send(Err(std::io::Error::other("cut"))).await;
                    return;
                }
                let chunk = if pad.is_empty() {
                    content_chunk(i)
                } else {
                    content_chunk(i).replacen(" \"", &format!(" {pad}\""), 1)
                };
                if !send(chunk).await {
                    state.cut_off.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
            if usage && !send(usage_chunk(n)).await {
                return;
            }
            let _ = send("data: [DONE]\n\n".into()).await;
        });
        resp
    }
}

/// A fleet file over `mocks`: `[gateway]` lines, then each node with `node_extra` lines.
pub fn fleet_toml(mocks: &[&Mock], gateway_extra: &str, node_extra: &str) -> String {
    let mut s = format!("[gateway]\n{gateway_extra}\n");
    for (k, v) in [
        ("listen", "\"127.0.0.1:0\""),
        ("reload_interval_ms", "50"),
        ("shutdown_grace_ms", "10000"),
        ("ttft_timeout_ms", "10000"),
    ] {
        if !gateway_extra.contains(&format!("{k} =")) {
            s += &format!("{k} = {v}\n");
        }
    }
    for m in mocks {
        s += &format!(
            "\n[[node]]\nname = \"{}\"\nurl = \"{}\"\nmodels = [\"m\"]\nmax_concurrency = 16\n{node_extra}\n",
            m.name,
            m.url()
        );
    }
    s
}

static NEXT_FILE: AtomicUsize = AtomicUsize::new(0);

pub fn temp_file(text: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!(
        "switchyard-gateway-test-{}-{}.toml",
        std::process::id(),
        NEXT_FILE.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::write(&p, text).unwrap();
    p
}

/// A gateway serving on an ephemeral port.
pub struct Harness {
    pub gw: Gateway,
    pub addr: SocketAddr,
    pub path: PathBuf,
    pub client: Client<HttpConnector, Full<Bytes>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    serve: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Harness {
    pub async fn start(toml: &str) -> Harness {
        let path = temp_file(toml);
        let gw = Gateway::from_file(&path).expect("gateway starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _ = gw.watch_config();
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let g = gw.clone();
        let serve = tokio::spawn(async move {
            g.serve(listener, async move {
                let _ = rx.await;
            })
            .await
        });
        Harness {
            gw,
            addr,
            path,
            client: client(),
            stop: Some(stop),
            serve: Some(serve),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn post(
        &self,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Response<Incoming> {
        let mut b = Request::post(self.url(path)).header("content-type", "application/json");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        tokio::time::timeout(LONG, self.client.request(req))
            .await
            .expect("no hang")
            .expect("request sent")
    }

    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let req = Request::get(self.url(path))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let r = tokio::time::timeout(LONG, self.client.request(req))
            .await
            .unwrap()
            .unwrap();
        let status = r.status();
        (status, read_all(r).await)
    }

    /// Sends the shutdown signal and waits for `serve` to return.
    pub fn signal_stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    /// Whether `serve` has returned.
    pub fn serve_returned(&self) -> bool {
        self.serve.as_ref().is_none_or(|j| j.is_finished())
    }

    pub async fn join(&mut self) {
        if let Some(j) = self.serve.take() {
            tokio::time::timeout(LONG, j)
                .await
                .expect("serve returns")
                .unwrap()
                .unwrap();
        }
    }

    /// Waits for every ticket to end, then checks nothing leaked, then stops the gateway.
    pub async fn finish(mut self) {
        assert!(
            wait_until(|| self.gw.router().in_flight() == 0).await,
            "tickets still out: {}",
            self.gw.router().in_flight()
        );
        assert!(self.gw.router().ledgers_are_zero(), "a ledger leaked");
        self.signal_stop();
        self.join().await;
        assert!(
            self.gw.router().ledgers_are_zero(),
            "a ledger leaked at shutdown"
        );
        let _ = std::fs::remove_file(&self.path);
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub async fn read_all(r: Response<Incoming>) -> String {
    let b = tokio::time::timeout(LONG, r.into_body().collect())
        .await
        .expect("body in time")
        .expect("body whole")
        .to_bytes();
    String::from_utf8_lossy(&b).into_owned()
}

/// Polls `f` every 10 ms for up to `LONG`.
pub async fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + LONG;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

pub const CHAT: &str = r#"{"model":"m","messages":[{"role":"user","content":"Say hello to the gateway, please."}],"max_tokens":8}"#;
pub const CHAT_STREAM: &str = r#"{"model":"m","messages":[{"role":"user","content":"Say hello to the gateway, please."}],"max_tokens":8,"stream":true}"#;
