//! Simulated OpenAI-compatible model servers (`switchyard serve-backends`).
//!
//! One process serves every node of a config, each on its own port (the node's `url`, or an
//! ephemeral loopback port), with the simulator's service-time model: a request is admitted
//! while the node has a free sequence slot and its running requests' tokens (input + output)
//! fit `min(KV memory, max_tokens_in_flight)` (an idle node takes any request), else it waits
//! in the node's FIFO queue; once admitted, its leading prompt blocks found in the node's LRU
//! [`PrefixCache`](crate::PrefixCache) come off its prefill, and its first token comes
//! `(base + uncached/prefill) × (1 + batch_slowdown × u)` after admission, each further one
//! `1/decode × (1 + batch_slowdown × u)` later, with `u` the share of the node's slots held by
//! the other running requests when it starts. Times are divided by the set's speed.
//!
//! Routes: `POST /v1/chat/completions`, `POST /v1/completions` (streaming with `"stream":
//! true`, a final `usage` chunk with `stream_options.include_usage`), `GET /v1/models`,
//! `GET /health`, `GET /health_generate`, `GET /metrics` (vLLM names), the load and info
//! endpoints the peer gateways poll (`GET /get_load`, `GET /v1/loads`, `GET /get_model_info`,
//! `GET /get_server_info`, `GET /server_info`, `GET /model_info`, `POST /flush_cache`), and
//! `POST /control/fault` / `GET /control/stats` for the node itself. The set's control port
//! answers `POST /control/fault/NODE`, `GET /control/stats`, `POST /control/speed` and
//! `POST /control/reset`.
use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::watch;

mod http;
mod node;

pub use node::{Fault, NodeStats};

use http::{error, RespBody};
use node::Node;

/// How to start a [`ServerSet`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Service times are divided by this (`f64::INFINITY`: zero-latency servers).
    pub speed: f64,
    /// Bind every node to an ephemeral loopback port instead of its `url`.
    pub ephemeral: bool,
    /// Where the set's control port listens (default: an ephemeral loopback port).
    pub control: Option<SocketAddr>,
    /// Faults in force from the start, by node name.
    pub faults: Vec<(String, Fault)>,
    /// Runtime worker threads (default 2).
    pub workers: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            speed: 1.0,
            ephemeral: false,
            control: None,
            faults: Vec::new(),
            workers: 2,
        }
    }
}

/// Why the servers could not start.
#[derive(Debug)]
pub enum ServeError {
    /// A node has no `url` (and the set is not ephemeral), or one that is not `http://HOST:PORT`.
    BadUrl(String),
    /// A fault names a node the config lacks.
    UnknownNode(String),
    /// The speed is not a positive number.
    BadSpeed(f64),
    /// The config has no node.
    NoNodes,
    /// Binding a port or starting the runtime failed.
    Io(String, io::Error),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::BadUrl(m) => f.write_str(m),
            ServeError::UnknownNode(n) => write!(f, "no node named `{n}` in the config"),
            ServeError::BadSpeed(s) => write!(f, "speed must be a positive number, got {s}"),
            ServeError::NoNodes => f.write_str("the config has no node to serve"),
            ServeError::Io(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl std::error::Error for ServeError {}

/// The simulated servers of one config, running on their own runtime until dropped (or
/// [`shutdown`](Self::shutdown)).
pub struct ServerSet {
    /// Each node's name and bound address, in config order.
    pub addrs: Vec<(String, SocketAddr)>,
    /// The control port.
    pub control_addr: SocketAddr,
    nodes: Vec<Arc<Node>>,
    speed: Arc<AtomicU64>,
    shutdown: watch::Sender<bool>,
    rt: Option<Runtime>,
}

impl std::fmt::Debug for ServerSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSet")
            .field("addrs", &self.addrs)
            .field("control_addr", &self.control_addr)
            .finish_non_exhaustive()
    }
}

/// `http://HOST:PORT[/]` → `HOST:PORT`.
fn url_addr(url: &str) -> Option<SocketAddr> {
    let rest = url.strip_prefix("http://")?.trim_end_matches('/');
    if rest.contains('/') {
        return None;
    }
    use std::net::ToSocketAddrs;
    rest.to_socket_addrs().ok()?.next()
}

/// Starts a simulated server for every node of `cfg` (see the [module docs](self)).
///
/// # Errors
/// A [`ServeError`]: a node without a usable `url` (unless ephemeral), a fault naming an
/// unknown node, a bad speed, or a port that cannot be bound.
pub fn spawn(cfg: &switchyard::Config, opts: &ServeOptions) -> Result<ServerSet, ServeError> {
    if opts.speed.is_nan() || opts.speed <= 0.0 {
        return Err(ServeError::BadSpeed(opts.speed));
    }
    if cfg.nodes.is_empty() {
        return Err(ServeError::NoNodes);
    }
    let speed = Arc::new(AtomicU64::new(opts.speed.to_bits()));
    let specs = cfg.node_specs();
    let mut listeners = Vec::new();
    let mut nodes = Vec::new();
    for (nc, spec) in cfg.nodes.iter().zip(specs) {
        let addr: SocketAddr = if opts.ephemeral {
            SocketAddr::from(([127, 0, 0, 1], 0))
        } else {
            let url = nc.url.as_deref().ok_or_else(|| {
                ServeError::BadUrl(format!(
                    "node `{}` has no `url` (give it one, or serve on ephemeral ports)",
                    nc.name
                ))
            })?;
            url_addr(url).ok_or_else(|| {
                ServeError::BadUrl(format!(
                    "node `{}`: url `{url}` is not `http://HOST:PORT`",
                    nc.name
                ))
            })?
        };
        let l = StdListener::bind(addr)
            .map_err(|e| ServeError::Io(format!("node `{}`: cannot bind {addr}", nc.name), e))?;
        l.set_nonblocking(true)
            .map_err(|e| ServeError::Io("set_nonblocking".into(), e))?;
        listeners.push(l);
        nodes.push(Arc::new(Node::new(
            nc.name.clone(),
            nc.models.clone(),
            spec,
            speed.clone(),
        )));
    }
    for (name, f) in &opts.faults {
        let n = nodes
            .iter()
            .find(|n| &n.name == name)
            .ok_or_else(|| ServeError::UnknownNode(name.clone()))?;
        n.set_fault(f.clone());
    }
    let control_bind = opts
        .control
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let control = StdListener::bind(control_bind)
        .map_err(|e| ServeError::Io(format!("control port: cannot bind {control_bind}"), e))?;
    control
        .set_nonblocking(true)
        .map_err(|e| ServeError::Io("set_nonblocking".into(), e))?;
    let control_addr = control
        .local_addr()
        .map_err(|e| ServeError::Io("local_addr".into(), e))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(opts.workers.max(1))
        .thread_name("sim-server")
        .enable_all()
        .build()
        .map_err(|e| ServeError::Io("cannot start the runtime".into(), e))?;
    let (shutdown, rx) = watch::channel(false);
    let mut addrs = Vec::new();
    for (l, n) in listeners.into_iter().zip(&nodes) {
        let addr = l
            .local_addr()
            .map_err(|e| ServeError::Io("local_addr".into(), e))?;
        addrs.push((n.name.clone(), addr));
        let _guard = rt.enter();
        let l = TcpListener::from_std(l).map_err(|e| ServeError::Io("listener".into(), e))?;
        rt.spawn(accept_loop(l, addr, n.clone(), rx.clone()));
    }
    {
        let _guard = rt.enter();
        let l = TcpListener::from_std(control).map_err(|e| ServeError::Io("listener".into(), e))?;
        let ctl = Arc::new(Control {
            nodes: nodes.clone(),
            speed: speed.clone(),
        });
        rt.spawn(control_loop(l, ctl, rx));
    }
    Ok(ServerSet {
        addrs,
        control_addr,
        nodes,
        speed,
        shutdown,
        rt: Some(rt),
    })
}

impl ServerSet {
    /// Each node's name and `http://ADDR` url, in config order.
    pub fn urls(&self) -> Vec<(String, String)> {
        self.addrs
            .iter()
            .map(|(n, a)| (n.clone(), format!("http://{a}")))
            .collect()
    }

    /// The runtime the servers run on.
    pub fn handle(&self) -> tokio::runtime::Handle {
        self.rt
            .as_ref()
            .expect("the runtime lives until drop")
            .handle()
            .clone()
    }

    /// Sets the fault of node `name`; false if there is no such node.
    pub fn set_fault(&self, name: &str, fault: Fault) -> bool {
        match self.nodes.iter().find(|n| n.name == name) {
            Some(n) => {
                n.set_fault(fault);
                true
            }
            None => false,
        }
    }

    /// Changes the speed of every node (requests already running keep theirs).
    pub fn set_speed(&self, speed: f64) {
        self.speed.store(speed.to_bits(), Ordering::Relaxed);
    }

    /// Every node's counters, by name.
    pub fn stats(&self) -> BTreeMap<String, NodeStats> {
        self.nodes
            .iter()
            .map(|n| (n.name.clone(), n.stats()))
            .collect()
    }

    /// The counters summed over the nodes.
    pub fn total(&self) -> NodeStats {
        let mut t = NodeStats::default();
        for n in &self.nodes {
            let s = n.stats();
            t.requests += s.requests;
            t.completed += s.completed;
            t.faulted += s.faulted;
            t.queued += s.queued;
            t.prefix_queries += s.prefix_queries;
            t.prefix_hits += s.prefix_hits;
            t.prompt_tokens += s.prompt_tokens;
            t.generation_tokens += s.generation_tokens;
            t.running += s.running;
            t.waiting += s.waiting;
            t.running_tokens += s.running_tokens;
        }
        t
    }

    /// Clears every node's counters and prefix cache.
    pub fn reset(&self) {
        for n in &self.nodes {
            n.reset();
        }
    }

    /// Stops the servers: ports close, running requests are cut.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for ServerSet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A copy of a config's TOML text whose nodes' `url`s are `urls` (by node name). Comments
/// are not kept.
///
/// # Errors
/// A message when the text is not TOML.
pub fn rewrite_urls(toml_text: &str, urls: &[(String, String)]) -> Result<String, String> {
    let mut t: toml::Table = toml_text.parse().map_err(|e| format!("{e}"))?;
    if let Some(toml::Value::Array(nodes)) = t.get_mut("node") {
        for n in nodes.iter_mut() {
            let Some(tbl) = n.as_table_mut() else {
                continue;
            };
            let name = tbl.get("name").and_then(|v| v.as_str()).map(str::to_string);
            if let Some((_, u)) = urls.iter().find(|(k, _)| Some(k) == name.as_ref()) {
                tbl.insert("url".into(), toml::Value::String(u.clone()));
            }
        }
    }
    toml::to_string(&t).map_err(|e| e.to_string())
}

async fn accept_loop(
    l: TcpListener,
    addr: SocketAddr,
    node: Arc<Node>,
    mut stop: watch::Receiver<bool>,
) {
    let mut listener = Some(l);
    loop {
        let changed = node.fault_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if node.is_down() {
            // Down: close the port, so connections are refused, until the fault clears.
            listener = None;
            tokio::select! {
                _ = changed => {}
                _ = stop.changed() => return,
            }
            continue;
        }
        let l = match &listener {
            Some(l) => l,
            None => {
                match TcpListener::bind(addr).await {
                    Ok(l) => listener = Some(l),
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                }
                continue;
            }
        };
        tokio::select! {
            r = l.accept() => {
                let Ok((stream, _)) = r else { continue };
                if node.is_down() {
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let n = node.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| http::handle(n.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            _ = changed => {}
            _ = stop.changed() => return,
        }
    }
}

struct Control {
    nodes: Vec<Arc<Node>>,
    speed: Arc<AtomicU64>,
}

async fn control_loop(l: TcpListener, ctl: Arc<Control>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            r = l.accept() => {
                let Ok((stream, _)) = r else { continue };
                let c = ctl.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| control(c.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
            _ = stop.changed() => return,
        }
    }
}

async fn control(
    ctl: Arc<Control>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, std::convert::Infallible> {
    use http_body_util::BodyExt;
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let ok = |v: serde_json::Value| {
        let mut r = Response::new(
            http_body_util::Full::new(bytes::Bytes::from(v.to_string()))
                .map_err(|n| match n {})
                .boxed(),
        );
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        r
    };
    let bad = |m: String| error(StatusCode::BAD_REQUEST, "invalid_request_error", &m);
    Ok(match (&method, path.as_str()) {
        (&Method::GET, "/control/stats") => {
            let m: BTreeMap<_, _> = ctl
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.stats()))
                .collect();
            ok(json!({"speed": f64::from_bits(ctl.speed.load(Ordering::Relaxed)), "nodes": m}))
        }
        (&Method::POST, "/control/reset") => {
            for n in &ctl.nodes {
                n.reset();
            }
            ok(json!({"reset": true}))
        }
        (&Method::POST, "/control/speed") => {
            match serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["speed"].as_f64())
                .filter(|s| *s > 0.0)
            {
                Some(s) => {
                    ctl.speed.store(s.to_bits(), Ordering::Relaxed);
                    ok(json!({"speed": s}))
                }
                None => bad("expected {\"speed\": X} with X > 0".into()),
            }
        }
        (&Method::POST, p) if p.starts_with("/control/fault/") => {
            let name = &p["/control/fault/".len()..];
            match ctl.nodes.iter().find(|n| n.name == name) {
                None => error(
                    StatusCode::NOT_FOUND,
                    "invalid_request_error",
                    &format!("no node `{name}`"),
                ),
                Some(n) => match serde_json::from_slice::<Fault>(if body.is_empty() {
                    b"{}"
                } else {
                    &body
                }) {
                    Ok(f) => {
                        n.set_fault(f.clone());
                        ok(json!({"node": name, "fault": f}))
                    }
                    Err(e) => bad(e.to_string()),
                },
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            &format!("no route {method} {path}"),
        ),
    })
}
