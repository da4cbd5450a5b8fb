//! The gateway: router, dispatcher, upstream pool and fleet table, the request handler, the
//! accept loop with its graceful drain, and the hot reload of the fleet file.
use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::Instant;

use switchyard::{CapSet, Config, Dispatcher, HealthStatus, RouteError, Router, SubmitError, Task};

use crate::body::{BoxError, GatewayBody};
use crate::error::ApiError;
use crate::metrics::{HttpMetrics, RouteLabel};
use crate::proxy::{Ctx, ProxyBackend};
use crate::request::{self, Endpoint};
use crate::settings::GatewaySettings;

/// Why a gateway could not start or a reload was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError(String);

impl fmt::Display for GatewayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GatewayError {}

impl From<String> for GatewayError {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// The fleet as the HTTP side sees it, swapped whole on reload.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) settings: Arc<GatewaySettings>,
    /// Node name -> base url (`http://host:port`, no trailing slash).
    pub(crate) upstreams: HashMap<String, Arc<str>>,
    /// Model name -> the capability set requests for it require.
    pub(crate) models: HashMap<String, CapSet>,
    /// Models in the order the file names them.
    pub(crate) model_list: Vec<String>,
}

/// What the request handler and the backend share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) router: Router,
    pub(crate) state: ArcSwap<State>,
    pub(crate) metrics: HttpMetrics,
    pub(crate) client: Client<HttpConnector, Full<Bytes>>,
    pub(crate) handle: tokio::runtime::Handle,
    pub(crate) draining: AtomicBool,
    /// Fleet mode (a `[fleet]` table): the request path's view of it.
    pub(crate) fleet: Option<Arc<crate::fleet::FleetShared>>,
    next_id: AtomicU64,
    shed_log: LogEvery,
    pause_log: LogEvery,
}

/// At most one log line a second for an event that can come in floods; it says how many.
#[derive(Debug)]
struct LogEvery {
    start: std::time::Instant,
    last_s: AtomicU64,
    count: AtomicU64,
}

impl LogEvery {
    fn new() -> Self {
        Self {
            start: std::time::Instant::now(),
            last_s: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Counts one event; returns how many to report when a line is due.
    fn hit(&self) -> Option<u64> {
        self.count.fetch_add(1, Ordering::Relaxed);
        let now = self.start.elapsed().as_secs() + 1;
        let last = self.last_s.load(Ordering::Relaxed);
        if now > last
            && self
                .last_s
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.count.swap(0, Ordering::Relaxed));
        }
        None
    }
}

impl Shared {
    pub(crate) fn queue_wait_and_shed(&self, ctx: &Ctx, error: RouteError) {
        self.metrics.queue_wait.observe(ctx.submitted.elapsed());
        if let Some(n) = self.shed_log.hit() {
            tracing::warn!(reason = error.name(), requests = n, "shedding requests");
        }
    }

    pub(crate) fn log_pause(&self, node: &str, pause: Duration) {
        if let Some(n) = self.pause_log.hit() {
            tracing::info!(
                node,
                pause_ms = pause.as_millis() as u64,
                pauses = n,
                "model server asked for a pause (429)"
            );
        }
    }

    pub(crate) fn count_cancel(&self) {
        self.metrics.client_cancels.fetch_add(1, Ordering::Relaxed);
    }
}

struct Inner {
    shared: Arc<Shared>,
    dispatcher: Dispatcher<ProxyBackend>,
    path: Option<PathBuf>,
    reload_lock: Mutex<()>,
    closed: AtomicBool,
}

/// An OpenAI-compatible gateway over a switchyard router. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("path", &self.inner.path)
            .field("in_flight", &self.inner.shared.router.in_flight())
            .finish_non_exhaustive()
    }
}

/// Checks what the HTTP side needs of a fleet: a node at least, and an http url for each.
fn upstreams_of(cfg: &Config) -> Result<HashMap<String, Arc<str>>, String> {
    let src = cfg.source_name();
    if cfg.nodes.is_empty() {
        return Err(format!("{src}: the fleet has no node"));
    }
    let mut out = HashMap::new();
    for n in &cfg.nodes {
        let Some(url) = n.url.as_deref() else {
            return Err(format!("{src}: node `{}` has no `url`", n.name));
        };
        let base = url.trim_end_matches('/');
        let ok = base.parse::<http::Uri>().ok().filter(|u| {
            u.scheme_str() == Some("http") && u.authority().is_some() && u.query().is_none()
        });
        if ok.is_none() {
            return Err(format!(
                "{src}: node `{}`: `url` must be an http://host:port url, not {url:?}",
                n.name
            ));
        }
        out.insert(n.name.clone(), Arc::from(base));
    }
    if cfg.models().is_empty() {
        return Err(format!(
            "{src}: no node serves a model (`models` is empty everywhere)"
        ));
    }
    Ok(out)
}

fn models_of(
    cfg: &Config,
    router: &Router,
) -> Result<(HashMap<String, CapSet>, Vec<String>), String> {
    let mut map = HashMap::new();
    let mut list = Vec::new();
    for m in cfg.models() {
        let caps = router
            .resolve(&[m])
            .map_err(|e| format!("model `{m}`: {e}"))?;
        map.insert(m.to_string(), caps);
        list.push(m.to_string());
    }
    Ok((map, list))
}

/// Reads a fleet file: the router's config and the `[gateway]` table.
fn read_file(path: &Path) -> Result<(Config, GatewaySettings), String> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{name}: cannot read: {e}"))?;
    if text.trim().is_empty() {
        return Err(format!("{name}: the file is empty"));
    }
    let cfg = Config::parse(&name, &text).map_err(|e| e.to_string())?;
    let settings = GatewaySettings::parse(&name, &text)?;
    Ok((cfg, settings))
}

fn mtime(path: &Path) -> Option<(std::time::SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Gateway {
    /// Starts a gateway over the fleet file at `path` (watched by
    /// [`watch_config`](Gateway::watch_config)). Call it inside a tokio runtime: requests are
    /// proxied on it.
    ///
    /// # Errors
    /// The file's first problem (unreadable, bad TOML, a refused node, a bad `[gateway]` key,
    /// no node or no url), or no runtime.
    pub fn from_file(path: &Path) -> Result<Gateway, GatewayError> {
        let (cfg, settings) = read_file(path)?;
        Self::build(&cfg, settings, Some(path.to_path_buf()))
    }

    /// Starts a gateway over a parsed config and settings (read them with
    /// [`GatewaySettings::parse`] or [`GatewaySettings::from_table`] on `cfg.gateway`); no file
    /// is watched. Call it inside a tokio runtime.
    ///
    /// # Errors
    /// As [`from_file`](Gateway::from_file).
    pub fn new(cfg: &Config, settings: GatewaySettings) -> Result<Gateway, GatewayError> {
        Self::build(cfg, settings, None)
    }

    fn build(
        cfg: &Config,
        settings: GatewaySettings,
        path: Option<PathBuf>,
    ) -> Result<Gateway, GatewayError> {
        settings.validate()?;
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| GatewayError("the gateway must start inside a tokio runtime".into()))?;
        let upstreams = upstreams_of(cfg)?;
        let router = cfg
            .build_router(settings.seed)
            .map_err(|e| GatewayError(e.to_string()))?;
        let (models, model_list) = models_of(cfg, &router)?;
        let fleet = crate::fleet::FleetShared::from_config(cfg)?.map(Arc::new);
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(settings.connect_timeout_ms)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            .build(connector);
        let settings = Arc::new(settings);
        let shared = Arc::new(Shared {
            router: router.clone(),
            state: ArcSwap::from_pointee(State {
                settings: settings.clone(),
                upstreams,
                models,
                model_list,
            }),
            metrics: HttpMetrics::new(),
            client,
            handle,
            draining: AtomicBool::new(false),
            fleet,
            next_id: AtomicU64::new(1),
            shed_log: LogEvery::new(),
            pause_log: LogEvery::new(),
        });
        let w = settings.saturation_wait_ms.map(Duration::from_millis);
        let dispatcher = Dispatcher::builder(router)
            .workers(settings.workers)
            .capacity(settings.queue_capacity)
            .saturation_wait(w)
            .build(ProxyBackend {
                shared: shared.clone(),
            })
            .map_err(|e| GatewayError(format!("cannot start the dispatcher: {e}")))?;
        Ok(Gateway {
            inner: Arc::new(Inner {
                shared,
                dispatcher,
                path,
                reload_lock: Mutex::new(()),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The router (for its metrics, ledgers and health).
    pub fn router(&self) -> &Router {
        &self.inner.shared.router
    }

    /// The settings in force (after the last reload).
    pub fn settings(&self) -> Arc<GatewaySettings> {
        self.inner.shared.state.load().settings.clone()
    }

    /// The models served, as `/v1/models` lists them.
    pub fn models(&self) -> Vec<String> {
        self.inner.shared.state.load().model_list.clone()
    }

    /// The tower service answering every route of the binary.
    pub fn service(&self) -> crate::GatewayService {
        crate::GatewayService::new(self.clone())
    }

    /// The tower layer that puts the OpenAI routes in front of another service.
    pub fn layer(&self) -> crate::SwitchyardLayer {
        crate::SwitchyardLayer::new(self.clone())
    }

    /// `/metrics`: the router's Prometheus text and the HTTP figures.
    pub fn metrics_text(&self) -> String {
        let d = &self.inner.dispatcher;
        let mut out = switchyard::prometheus::render(&d.metrics(), Some(&d.decision_histogram()));
        self.inner.shared.metrics.render(&mut out);
        if let Some(f) = &self.inner.shared.fleet {
            f.render(&mut out);
        }
        out
    }

    /// Starts fleet mode's control task (a gateway with a `[fleet]` table; `None` without
    /// one) and waits for its first sync, at most `warm_start_timeout_ms`: by then the
    /// shared health and load views are applied (warm start), or Redis was found
    /// unreachable and local-only limits are in force. Call it before reporting ready.
    pub async fn start_fleet(&self) -> Option<tokio::task::JoinHandle<()>> {
        let fleet = self.inner.shared.fleet.clone()?;
        let (tx, rx) = oneshot::channel();
        let wait = Duration::from_millis(fleet.settings.warm_start_timeout_ms);
        let weak = Arc::downgrade(&self.inner.shared);
        let task = self
            .inner
            .shared
            .handle
            .spawn(crate::fleet::run(weak, fleet.clone(), tx));
        if tokio::time::timeout(wait, rx).await.is_err() {
            tracing::warn!("fleet: no first sync within the warm-start timeout; starting anyway");
        }
        tracing::info!(
            replica = %fleet.settings.replica,
            mode = fleet.mode().name(),
            replicas = fleet.status().replicas,
            "fleet mode started"
        );
        Some(task)
    }

    /// Fleet mode's figures (`None` without a `[fleet]` table).
    pub fn fleet_status(&self) -> Option<crate::fleet::FleetStatus> {
        self.inner.shared.fleet.as_ref().map(|f| f.status())
    }

    /// Requests answered on `path` with `status` so far (the `/metrics` counter).
    pub fn requests_answered(&self, path: &str, status: u16) -> u64 {
        self.inner
            .shared
            .metrics
            .requests(route_label(path), status)
    }

    /// Reloads applied and refused so far.
    pub fn reloads(&self) -> (u64, u64) {
        let m = &self.inner.shared.metrics;
        (
            m.reloads_ok.load(Ordering::Relaxed),
            m.reloads_refused.load(Ordering::Relaxed),
        )
    }

    /// Whether the gateway is draining (after the shutdown signal).
    pub fn is_draining(&self) -> bool {
        self.inner.shared.draining.load(Ordering::Relaxed)
    }

    /// Re-reads the fleet file now and applies it: nodes, urls, models and the reloadable
    /// `[gateway]` keys. An unreadable, empty, half-written or invalid file, or one that would
    /// leave no node, is refused and changes nothing.
    ///
    /// # Errors
    /// Why the file was refused.
    pub fn reload(&self) -> Result<switchyard::config::ReloadReport, GatewayError> {
        let Some(path) = &self.inner.path else {
            return Err(GatewayError(
                "the gateway was not started from a file".into(),
            ));
        };
        let (cfg, settings) = read_file(path)?;
        self.apply(&cfg, settings)
    }

    /// Applies a config and settings to the running gateway (what [`reload`](Gateway::reload)
    /// does with the file's).
    ///
    /// # Errors
    /// Why it was refused; nothing changed then.
    pub fn apply(
        &self,
        cfg: &Config,
        settings: GatewaySettings,
    ) -> Result<switchyard::config::ReloadReport, GatewayError> {
        settings.validate()?;
        let new_upstreams = upstreams_of(cfg)?;
        let _guard = self
            .inner
            .reload_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let shared = &self.inner.shared;
        let old = shared.state.load_full();
        let s = &old.settings;
        let fixed = [
            ("listen", s.listen != settings.listen),
            (
                "connect_timeout_ms",
                s.connect_timeout_ms != settings.connect_timeout_ms,
            ),
            (
                "reload_interval_ms",
                s.reload_interval_ms != settings.reload_interval_ms,
            ),
            ("workers", s.workers != settings.workers),
            ("io_threads", s.io_threads != settings.io_threads),
            (
                "queue_capacity",
                s.queue_capacity != settings.queue_capacity,
            ),
            (
                "saturation_wait_ms",
                s.saturation_wait_ms != settings.saturation_wait_ms,
            ),
            (
                "max_connections",
                s.max_connections != settings.max_connections,
            ),
            (
                "pool_max_idle_per_host",
                s.pool_max_idle_per_host != settings.pool_max_idle_per_host,
            ),
            ("seed", s.seed != settings.seed),
        ];
        for (key, changed) in fixed {
            if changed {
                tracing::warn!(
                    key,
                    "[gateway] key changed on reload; it takes effect on restart"
                );
            }
        }
        let fleet_now = shared.fleet.as_ref().map(|f| &f.settings);
        let fleet_new = cfg
            .fleet
            .as_ref()
            .map(|t| crate::fleet::FleetSettings::from_table(cfg.source_name(), t));
        let fleet_changed = match (fleet_now, &fleet_new) {
            (None, None) => false,
            (Some(a), Some(Ok(b))) => a != b,
            _ => true,
        };
        if fleet_changed {
            tracing::warn!("[fleet] table changed on reload; it takes effect on restart");
        }
        // While the router switches, requests planned on either snapshot find their url.
        let mut union = old.upstreams.clone();
        union.extend(new_upstreams.iter().map(|(k, v)| (k.clone(), v.clone())));
        shared.state.store(Arc::new(State {
            settings: old.settings.clone(),
            upstreams: union,
            models: old.models.clone(),
            model_list: old.model_list.clone(),
        }));
        let applied = shared
            .router
            .apply_config(cfg)
            .map_err(|e| GatewayError(e.to_string()))
            .and_then(|report| Ok((report, models_of(cfg, &shared.router)?)));
        match applied {
            Ok((report, (models, model_list))) => {
                shared.state.store(Arc::new(State {
                    settings: Arc::new(settings),
                    upstreams: new_upstreams,
                    models,
                    model_list,
                }));
                Ok(report)
            }
            Err(e) => {
                shared.state.store(old);
                Err(e)
            }
        }
    }

    /// Watches the fleet file: every `reload_interval_ms` its modification time and size are
    /// checked, and a change is [reloaded](Gateway::reload) (a refused one is logged and the
    /// running fleet stays). Also logs node ejections and recoveries. Stops when the gateway
    /// is dropped or has shut down. `None` for a gateway not started from a file.
    pub fn watch_config(&self) -> Option<tokio::task::JoinHandle<()>> {
        let path = self.inner.path.clone()?;
        let every = Duration::from_millis(self.settings().reload_interval_ms);
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        // Taken now, not when the task first runs: a change made meanwhile is seen.
        let mut seen = mtime(&path);
        Some(self.inner.shared.handle.spawn(async move {
            let mut health: HashMap<String, HealthStatus> = HashMap::new();
            loop {
                tokio::time::sleep(every).await;
                let Some(inner) = weak.upgrade() else { return };
                if inner.closed.load(Ordering::Relaxed) {
                    return;
                }
                let gw = Gateway { inner };
                log_health(&gw, &mut health);
                let now = mtime(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                let g = gw.clone();
                let result = tokio::task::spawn_blocking(move || g.reload()).await;
                let m = &gw.inner.shared.metrics;
                match result {
                    Ok(Ok(r)) => {
                        m.reloads_ok.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            added = r.added,
                            updated = r.updated,
                            removed = r.removed,
                            epoch = r.epoch,
                            "fleet file reloaded"
                        );
                    }
                    Ok(Err(e)) => {
                        m.reloads_refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "reload refused; the running fleet stays");
                    }
                    Err(e) => {
                        m.reloads_refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "reload failed; the running fleet stays");
                    }
                }
            }
        }))
    }

    /// Serves HTTP/1.1 on `listener` until `shutdown` resolves; then stops accepting, lets the
    /// requests in flight finish for up to `shutdown_grace_ms` (every connection closed and
    /// every lease returned, so no stream is cut), stops the dispatcher, and returns.
    ///
    /// # Errors
    /// None today; the signature leaves room for listener failures.
    pub async fn serve<F>(&self, listener: TcpListener, shutdown: F) -> std::io::Result<()>
    where
        F: std::future::Future<Output = ()> + Send,
    {
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let settings = self.settings();
        let permits = Arc::new(tokio::sync::Semaphore::new(settings.max_connections));
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .keep_alive(true);
        let accept_log = LogEvery::new();
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = &mut shutdown => break,
            };
            let (io, _peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        if let Some(n) = accept_log.hit() {
                            tracing::warn!(error = %e, failures = n, "accept failed");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = &mut shutdown => break,
            };
            let _ = io.set_nodelay(true);
            let svc = hyper_util::service::TowerToHyperService::new(self.service());
            let conn = http.serve_connection(TokioIo::new(io), svc);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _ = conn.await;
                drop(permit);
            });
        }
        drop(listener);
        self.inner.shared.draining.store(true, Ordering::SeqCst);
        let grace = Duration::from_millis(self.settings().shutdown_grace_ms);
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "draining: no new connections"
        );
        let deadline = tokio::time::Instant::now() + grace;
        // Every connection finished (or the grace ran out) ...
        let drained = tokio::time::timeout_at(deadline, graceful.shutdown())
            .await
            .is_ok()
            // ... and no request still holds a lease: a response streams on its own task,
            // so the runtime must outlive it whatever the connection's state says.
            && self.leases_returned(deadline).await;
        if !drained {
            tracing::warn!("shutdown deadline passed with requests still in flight");
        }
        self.close().await;
        Ok(())
    }

    /// Waits until no request holds a lease (every stream ended) or `deadline` passes;
    /// whether it got there first.
    async fn leases_returned(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            if self.router().in_flight() == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops the dispatcher (every queued request is routed or refused) and the file watch.
    /// [`serve`](Gateway::serve) calls it on its way out.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        if let Some(f) = &self.inner.shared.fleet {
            f.stop.store(true, Ordering::SeqCst);
        }
        self.inner.shared.draining.store(true, Ordering::SeqCst);
        let g = self.clone();
        let _ = tokio::task::spawn_blocking(move || g.inner.dispatcher.shutdown()).await;
    }

    /// Handles one request (what the tower service calls).
    pub(crate) async fn handle<B>(self, req: Request<B>) -> Response<GatewayBody>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let label = route_label(req.uri().path());
        let resp = match (req.method(), label) {
            (&Method::POST, RouteLabel::ChatCompletions) => {
                self.completion(Endpoint::Chat, req).await
            }
            (&Method::POST, RouteLabel::Completions) => {
                self.completion(Endpoint::Completions, req).await
            }
            (&Method::GET, RouteLabel::Models) => self.models_response(),
            (&Method::GET, RouteLabel::Health) => self.health_response(),
            (&Method::GET, RouteLabel::Metrics) => {
                let mut r = Response::new(GatewayBody::full(self.metrics_text()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(switchyard::prometheus::CONTENT_TYPE),
                );
                r
            }
            (_, RouteLabel::Other) => ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "not_found",
                format!("no route {}", req.uri().path()),
            )
            .into_response(),
            _ => ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method_not_allowed",
                format!("{} is not allowed on {}", req.method(), req.uri().path()),
            )
            .into_response(),
        };
        self.inner
            .shared
            .metrics
            .request(label, resp.status().as_u16());
        resp
    }

    fn models_response(&self) -> Response<GatewayBody> {
        let state = self.inner.shared.state.load();
        let data: Vec<serde_json::Value> = state
            .model_list
            .iter()
            .map(|m| serde_json::json!({"id": m, "object": "model", "created": 0, "owned_by": "switchyard"}))
            .collect();
        json_response(
            StatusCode::OK,
            serde_json::json!({"object": "list", "data": data}),
        )
    }

    fn health_response(&self) -> Response<GatewayBody> {
        if self.is_draining() {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"status": "draining"}),
            );
        }
        let snap = self.router().snapshot();
        json_response(
            StatusCode::OK,
            serde_json::json!({
                "status": "ok",
                "epoch": snap.epoch(),
                "in_flight": self.router().in_flight(),
                "fleet": self.inner.shared.fleet.as_ref().map(|f| f.mode().name()),
            }),
        )
    }

    async fn completion<B>(&self, endpoint: Endpoint, req: Request<B>) -> Response<GatewayBody>
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let received = Instant::now();
        let shared = &self.inner.shared;
        let state = shared.state.load_full();
        let s = &state.settings;
        if self.is_draining() {
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "shutting_down",
                "the gateway is shutting down",
            )
            .retry_after(s.retry_after_s)
            .into_response();
        }
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
                format!("the body is over {} bytes", s.max_body_bytes),
            )
            .into_response()
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > s.max_body_bytes as u64) {
            return too_large();
        }
        let (parts, body) = req.into_parts();
        let read = tokio::time::timeout(
            Duration::from_millis(s.total_timeout_ms),
            Limited::new(body, s.max_body_bytes).collect(),
        )
        .await;
        let raw = match read {
            Err(_) => {
                return ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "invalid_request_error",
                    "body_timeout",
                    "the body did not arrive in time",
                )
                .into_response()
            }
            Ok(Err(e))
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return too_large()
            }
            Ok(Err(e)) => {
                return ApiError::bad_request(
                    "unreadable_body",
                    format!("cannot read the body: {e}"),
                )
                .into_response()
            }
            Ok(Ok(c)) => c.to_bytes(),
        };
        let parsed = match request::parse(
            endpoint,
            raw,
            s.default_max_tokens,
            s.prefix_block_bytes,
            s.include_usage,
        ) {
            Ok(p) => p,
            Err(e) => return e.into_response(),
        };
        let routing = match request::routing_headers(&parts.headers, &s.tenants) {
            Ok(r) => r,
            Err(e) => return e.into_response(),
        };
        let mut charge = None;
        if let Some(f) = &shared.fleet {
            match f.admit(routing.tenant, parsed.input_tokens, parsed.output_tokens) {
                Ok(c) => charge = c,
                Err(()) => {
                    return ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limit_error",
                        "rate_limit_exceeded",
                        "the tenant is over its cluster-wide token rate",
                    )
                    .retry_after(s.retry_after_s)
                    .into_response()
                }
            }
        }
        let Some(&caps) = state.models.get(&parsed.model) else {
            return ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                format!("the model `{}` does not exist", parsed.model),
            )
            .into_response();
        };
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let mut task = Task::new(id, parsed.input_tokens, parsed.output_tokens)
            .require(caps)
            .priority(routing.priority);
        if let Some(t) = routing.tenant {
            task = task.tenant(t);
        }
        if let Some(ms) = routing.slo_ms {
            task = task.max_latency_ms(ms);
        }
        task = task.prefix(parsed.prefix);
        let (tx, rx) = oneshot::channel();
        let ctx = Ctx {
            endpoint,
            stream: parsed.stream,
            body: parsed.body,
            auth: parts.headers.get(header::AUTHORIZATION).cloned(),
            received,
            submitted: Instant::now(),
            reply: Some(tx),
            settings: s.clone(),
            charge,
        };
        let d = &self.inner.dispatcher;
        let submitted = if s.route_inline {
            d.submit_inline(task, ctx)
        } else {
            d.submit(task, ctx)
        };
        if let Err(e) = submitted {
            shared.metrics.queue_full.fetch_add(1, Ordering::Relaxed);
            let msg = match e {
                SubmitError::Full(_) => "the gateway queue is full",
                // ShutDown, or any refusal a later core version adds.
                _ => "the gateway is shutting down",
            };
            if let Some(n) = shared.shed_log.hit() {
                tracing::warn!(reason = msg, requests = n, "shedding requests");
            }
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "overloaded",
                msg,
            )
            .retry_after(s.retry_after_s)
            .into_response();
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                "internal_error",
                "the request was lost inside the gateway",
            )
            .into_response(),
        }
    }
}

fn log_health(gw: &Gateway, seen: &mut HashMap<String, HealthStatus>) {
    for h in gw.router().node_health() {
        let prev = seen.insert(h.node.clone(), h.status);
        match (prev, h.status) {
            (Some(p), now) if p == now => {}
            (None, HealthStatus::Healthy) => {}
            (_, HealthStatus::Failed) => {
                tracing::warn!(node = %h.node, error_rate = h.error_rate, "node ejected");
            }
            (Some(HealthStatus::Failed), now) => {
                tracing::info!(node = %h.node, status = now.name(), "node recovered");
            }
            (_, now) => tracing::info!(node = %h.node, status = now.name(), "node health changed"),
        }
    }
}

pub(crate) fn route_label(path: &str) -> RouteLabel {
    match path {
        "/v1/chat/completions" => RouteLabel::ChatCompletions,
        "/v1/completions" => RouteLabel::Completions,
        "/v1/models" => RouteLabel::Models,
        "/health" => RouteLabel::Health,
        "/metrics" => RouteLabel::Metrics,
        _ => RouteLabel::Other,
    }
}

fn json_response(status: StatusCode, v: serde_json::Value) -> Response<GatewayBody> {
    let mut r = Response::new(GatewayBody::full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

// The service never fails: every error is an HTTP answer.
pub(crate) type Never = Infallible;
