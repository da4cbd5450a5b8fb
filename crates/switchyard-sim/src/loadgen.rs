//! The load generator (`switchyard loadgen`): an open-loop replay of a trace's arrival times
//! over HTTP against an OpenAI-compatible endpoint, and a closed-loop driver for measuring
//! what a gateway adds.
//!
//! Each trace row becomes a streaming `POST /v1/chat/completions` with one user message built
//! by [`prompt_for`] (the row's `hash_ids` become shared text blocks) and `max_tokens` = the
//! row's output tokens, sent at `arrival_ms / load / speed` after the start whether or not
//! earlier requests have finished. Priorities and tenants are the simulator's
//! ([`synthesize`] with the run's seed: 10 % critical, 20 % high, 40 %
//! normal, 30 % low, 8 tenants), the SLO is the simulator's rule ([`slo_ms`](crate::slo_ms):
//! 5 × the unloaded service time on the fleet's fastest node + 1 s) divided by the speed, and
//! all three go with the request as `x-switchyard-priority`, `x-switchyard-tenant` and
//! `x-switchyard-slo-ms`. A request meets its SLO when its stream ends complete (`[DONE]`)
//! within that time of its send.
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Request;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde_json::json;
use switchyard::Priority;

use crate::fleet::{default_fleet, synthesize, FleetConfig};
use crate::prompt::prompt_for;
use crate::trace::TraceRow;

/// A pooled HTTP/1 client.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A client keeping up to `idle` connections per host.
pub fn client(idle: usize) -> HttpClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(idle)
        .pool_idle_timeout(Duration::from_secs(30))
        .build(c)
}

/// Settings of an open-loop replay.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Base url of the endpoint (`http://HOST:PORT`).
    pub url: String,
    /// Arrival-rate multiplier: arrival times are divided by it.
    pub load: f64,
    /// Time compression: arrival times and SLOs are divided by it as well (give the servers
    /// the same speed).
    pub speed: f64,
    /// The `model` field of every request.
    pub model: String,
    /// Skip the first N rows of the trace.
    pub skip: usize,
    /// Replay only the first N rows (after `skip`).
    pub max_requests: Option<usize>,
    /// Seed of the synthesised priorities and tenants.
    pub seed: u64,
    /// Every request ends within this (real) time, answered or not.
    pub timeout: Duration,
    /// The fleet the SLOs are computed for (its fastest node).
    pub fleet: FleetConfig,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:18100".into(),
            load: 1.0,
            speed: 1.0,
            model: "llama-3.1-8b-instruct".into(),
            skip: 0,
            max_requests: None,
            seed: 1,
            timeout: Duration::from_secs(120),
            fleet: default_fleet(),
        }
    }
}

/// One request's fate.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    /// Row of the trace.
    pub index: usize,
    /// When it was sent, real ms after the replay began.
    pub sent_ms: f64,
    /// HTTP status (0: no answer).
    pub status: u16,
    /// Error class when the request did not complete: `connect`, `timeout`,
    /// `http_<status>`, `stream_broken` (the stream broke after it began), `incomplete`
    /// (the stream ended without `[DONE]`).
    pub error: Option<String>,
    /// Time to the first content chunk, ms.
    pub ttft_ms: Option<f64>,
    /// Send to end of the answer, ms.
    pub e2e_ms: f64,
    /// Content chunks received.
    pub chunks: u32,
    /// `usage.completion_tokens` when the stream carried it.
    pub usage_tokens: Option<u32>,
    /// Tokens asked for.
    pub max_tokens: u32,
    /// The SLO, real ms.
    pub slo_ms: f64,
    /// Completed within the SLO.
    pub slo_met: bool,
    /// `critical`, `high`, `normal` or `low`.
    pub priority: &'static str,
    /// Tenant id.
    pub tenant: u32,
}

/// Figures of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// Requests sent.
    pub requests: usize,
    /// Requests that completed (status 200, stream ended with `[DONE]`).
    pub completed: usize,
    /// Share of all requests that completed within their SLO.
    pub slo_attainment: f64,
    /// Time to first token of completed requests, ms, median.
    pub ttft_p50_ms: f64,
    /// Likewise, 99th percentile.
    pub ttft_p99_ms: f64,
    /// End-to-end latency of completed requests, ms, median.
    pub e2e_p50_ms: f64,
    /// Likewise, 99th percentile.
    pub e2e_p99_ms: f64,
    /// Requests completed within their SLO per second of the run.
    pub goodput_rps: f64,
    /// Requests that did not complete.
    pub errors: usize,
    /// Those by class (see [`RequestRecord::error`]).
    pub errors_by_class: BTreeMap<String, usize>,
    /// Wall time from the first send to the last answer, s.
    pub duration_s: f64,
    /// SLO attainment by priority class.
    pub slo_by_priority: BTreeMap<String, f64>,
    /// Every request, in trace order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<RequestRecord>,
}

/// The value at quantile `q` (nearest rank) of `v`, sorted here; 0 when empty.
pub fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

impl LoadReport {
    /// Summarises records of a run that took `duration_s`.
    pub fn from_records(records: Vec<RequestRecord>, duration_s: f64) -> Self {
        let done: Vec<&RequestRecord> = records.iter().filter(|r| r.error.is_none()).collect();
        let mut ttft: Vec<f64> = done.iter().filter_map(|r| r.ttft_ms).collect();
        let mut e2e: Vec<f64> = done.iter().map(|r| r.e2e_ms).collect();
        let met = records.iter().filter(|r| r.slo_met).count();
        let mut errors_by_class = BTreeMap::new();
        for r in &records {
            if let Some(e) = &r.error {
                *errors_by_class.entry(e.clone()).or_insert(0) += 1;
            }
        }
        let mut by: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for r in &records {
            let e = by.entry(r.priority.to_string()).or_default();
            e.0 += 1;
            e.1 += r.slo_met as usize;
        }
        let n = records.len();
        Self {
            requests: n,
            completed: done.len(),
            slo_attainment: if n == 0 { 0.0 } else { met as f64 / n as f64 },
            ttft_p50_ms: quantile(&mut ttft, 0.5),
            ttft_p99_ms: quantile(&mut ttft, 0.99),
            e2e_p50_ms: quantile(&mut e2e, 0.5),
            e2e_p99_ms: quantile(&mut e2e, 0.99),
            goodput_rps: if duration_s > 0.0 {
                met as f64 / duration_s
            } else {
                0.0
            },
            errors: n - done.len(),
            errors_by_class,
            duration_s,
            slo_by_priority: by
                .into_iter()
                .map(|(k, (n, m))| (k, m as f64 / n as f64))
                .collect(),
            records,
        }
    }

    /// A short human-readable summary.
    pub fn summary(&self) -> String {
        let errs: Vec<String> = self
            .errors_by_class
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        format!(
            "{} requests in {:.1} s: {} completed, SLO {:.1} %, TTFT p50 {:.0} ms p99 {:.0} ms, \
             e2e p50 {:.0} ms p99 {:.0} ms, goodput {:.2} req/s, errors {}{}",
            self.requests,
            self.duration_s,
            self.completed,
            100.0 * self.slo_attainment,
            self.ttft_p50_ms,
            self.ttft_p99_ms,
            self.e2e_p50_ms,
            self.e2e_p99_ms,
            self.goodput_rps,
            self.errors,
            if errs.is_empty() {
                String::new()
            } else {
                format!(" ({})", errs.join(", "))
            }
        )
    }
}

fn priority_name(p: Priority) -> &'static str {
    match p {
        Priority::Critical => "critical",
        Priority::High => "high",
        Priority::Normal => "normal",
        _ => "low",
    }
}

/// Why a replay could not start.
#[derive(Debug)]
pub struct LoadError(pub String);

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LoadError {}

struct Planned {
    index: usize,
    at: Duration,
    slo_ms: f64,
    priority: &'static str,
    tenant: u32,
}

/// Replays `rows` (see the [module docs](self)) on a runtime of its own; blocks until every
/// request has ended.
///
/// # Errors
/// A [`LoadError`] for a bad load or speed, an empty trace or a url that is not `http://`.
pub fn run(opts: &LoadOptions, rows: &[TraceRow]) -> Result<LoadReport, LoadError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("loadgen")
        .enable_all()
        .build()
        .map_err(|e| LoadError(format!("cannot start the runtime: {e}")))?;
    rt.block_on(run_async(opts, rows))
}

/// [`run`] on the caller's runtime.
///
/// # Errors
/// As [`run`].
pub async fn run_async(opts: &LoadOptions, rows: &[TraceRow]) -> Result<LoadReport, LoadError> {
    for (what, x) in [("load", opts.load), ("speed", opts.speed)] {
        if !(x.is_finite() && x > 0.0) {
            return Err(LoadError(format!(
                "{what} must be a positive number, got {x}"
            )));
        }
    }
    if !opts.url.starts_with("http://") {
        return Err(LoadError(format!("url `{}` is not http://", opts.url)));
    }
    let rows = &rows[opts.skip.min(rows.len())..];
    let rows = &rows[..opts.max_requests.unwrap_or(rows.len()).min(rows.len())];
    if rows.is_empty() {
        return Err(LoadError("no request to send".into()));
    }
    // Priorities and tenants exactly as the simulator draws them.
    let router = default_fleet()
        .router(opts.seed)
        .map_err(|e| LoadError(e.to_string()))?;
    let tasks =
        synthesize(&router, rows, "code", opts.seed).map_err(|e| LoadError(e.to_string()))?;
    let all: Vec<usize> = (0..opts.fleet.nodes.len()).collect();
    let t0 = rows[0].arrival_ms as f64;
    let plan: Vec<Planned> = rows
        .iter()
        .zip(&tasks)
        .enumerate()
        .map(|(i, (r, t))| Planned {
            index: i,
            at: Duration::from_secs_f64(
                ((r.arrival_ms as f64 - t0) / opts.load / opts.speed / 1000.0).max(0.0),
            ),
            slo_ms: crate::slo_ms(&opts.fleet, &all, r.input_tokens, r.output_tokens) / opts.speed,
            priority: priority_name(t.constraints.priority),
            tenant: t.tenant.map_or(0, |t| t.0),
        })
        .collect();
    let client = client(4096);
    let url: Arc<str> = format!("{}/v1/chat/completions", opts.url.trim_end_matches('/')).into();
    let model: Arc<str> = opts.model.as_str().into();
    let start = tokio::time::Instant::now();
    let wall = Instant::now();
    let mut handles = Vec::with_capacity(plan.len());
    for p in plan {
        let row = rows[p.index].clone();
        let (client, url, model, timeout) =
            (client.clone(), url.clone(), model.clone(), opts.timeout);
        handles.push(tokio::spawn(async move {
            tokio::time::sleep_until(start + p.at).await;
            let sent_ms = start.elapsed().as_secs_f64() * 1000.0;
            let body = json!({
                "model": &*model,
                "messages": [{"role": "user", "content": prompt_for(&row, p.index)}],
                "max_tokens": row.output_tokens,
                "stream": true,
                "stream_options": {"include_usage": true},
            })
            .to_string();
            let headers = [
                ("x-switchyard-priority", p.priority.to_string()),
                ("x-switchyard-tenant", p.tenant.to_string()),
                ("x-switchyard-slo-ms", format!("{}", p.slo_ms.ceil() as u64)),
            ];
            let out = send(&client, &url, body, &headers, timeout, true).await;
            let done = out.error.is_none();
            RequestRecord {
                index: p.index,
                sent_ms,
                status: out.status,
                error: out.error,
                ttft_ms: out.ttft_ms,
                e2e_ms: out.e2e_ms,
                chunks: out.chunks,
                usage_tokens: out.usage_tokens,
                max_tokens: row.output_tokens,
                slo_ms: p.slo_ms,
                slo_met: done && out.e2e_ms <= p.slo_ms,
                priority: p.priority,
                tenant: p.tenant,
            }
        }));
    }
    let mut records = Vec::with_capacity(handles.len());
    for h in handles {
        records.push(
            h.await
                .map_err(|e| LoadError(format!("a request task failed: {e}")))?,
        );
    }
    Ok(LoadReport::from_records(
        records,
        wall.elapsed().as_secs_f64(),
    ))
}

/// What one request gave.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// HTTP status (0: none).
    pub status: u16,
    /// Error class, none when the request completed.
    pub error: Option<String>,
    /// First content chunk, ms after the send.
    pub ttft_ms: Option<f64>,
    /// End, ms after the send.
    pub e2e_ms: f64,
    /// Content chunks.
    pub chunks: u32,
    /// `usage.completion_tokens`, when sent.
    pub usage_tokens: Option<u32>,
}

/// Sends one JSON request and reads its answer to the end (an SSE stream when `stream`),
/// within `timeout`.
pub async fn send(
    client: &HttpClient,
    url: &str,
    body: String,
    headers: &[(&'static str, String)],
    timeout: Duration,
    stream: bool,
) -> Outcome {
    let t = Instant::now();
    let mut out = Outcome::default();
    let r = tokio::time::timeout(
        timeout,
        exchange(client, url, body, headers, stream, t, &mut out),
    )
    .await;
    out.e2e_ms = t.elapsed().as_secs_f64() * 1000.0;
    match r {
        Err(_) => out.error = Some("timeout".into()),
        Ok(Err(class)) => out.error = Some(class),
        Ok(Ok(())) => {}
    }
    out
}

async fn exchange(
    client: &HttpClient,
    url: &str,
    body: String,
    headers: &[(&'static str, String)],
    stream: bool,
    t: Instant,
    out: &mut Outcome,
) -> Result<(), String> {
    let mut req = Request::post(url)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| "bad_request".to_string())?;
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            req.headers_mut().insert(*k, v);
        }
    }
    let resp = client.request(req).await.map_err(|e| {
        if e.is_connect() {
            "connect".to_string()
        } else {
            "no_answer".to_string()
        }
    })?;
    out.status = resp.status().as_u16();
    let ok = resp.status().is_success();
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut done = false;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| {
            if ok {
                "stream_broken".to_string()
            } else {
                format!("http_{}", out.status)
            }
        })?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        if !ok || !stream {
            if !stream && ok && out.ttft_ms.is_none() {
                out.ttft_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
            }
            buf.extend_from_slice(data);
            continue;
        }
        buf.extend_from_slice(data);
        // Complete events end with a blank line.
        let mut consumed = 0;
        while let Some(pos) = find(&buf[consumed..], b"\n\n") {
            let event = &buf[consumed..consumed + pos];
            consumed += pos + 2;
            for line in event.split(|b| *b == b'\n') {
                let Some(payload) = line.strip_prefix(b"data:") else {
                    continue;
                };
                let payload = payload.trim_ascii();
                if payload == b"[DONE]" {
                    done = true;
                    continue;
                }
                if has_content(payload) {
                    out.chunks += 1;
                    if out.ttft_ms.is_none() {
                        out.ttft_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                if find(payload, b"\"usage\"").is_some() {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(payload) {
                        if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                            out.usage_tokens = Some(n as u32);
                        }
                    }
                }
            }
        }
        buf.drain(..consumed);
    }
    if !ok {
        return Err(format!("http_{}", out.status));
    }
    if stream && !done {
        return Err("incomplete".into());
    }
    if !stream {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&buf) {
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                out.usage_tokens = Some(n as u32);
            }
        }
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether an SSE chunk carries generated text (a non-empty `content` or `text`).
fn has_content(payload: &[u8]) -> bool {
    for key in [&b"\"content\":\""[..], &b"\"text\":\""[..]] {
        if let Some(p) = find(payload, key) {
            if payload.get(p + key.len()).is_some_and(|c| *c != b'"') {
                return true;
            }
        }
    }
    false
}

/// Figures of a closed-loop run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ClosedReport {
    /// Requests completed.
    pub completed: usize,
    /// Requests that failed.
    pub errors: usize,
    /// Latency, µs, median.
    pub p50_us: f64,
    /// Latency, µs, 99th percentile.
    pub p99_us: f64,
    /// Completed requests per second.
    pub rps: f64,
}

impl ClosedReport {
    /// The figures of completed requests' latencies `lat` (µs) and `errors` failures over
    /// `secs` seconds.
    fn new(mut lat: Vec<f64>, errors: usize, secs: f64) -> Self {
        Self {
            completed: lat.len(),
            errors,
            p50_us: quantile(&mut lat, 0.5),
            p99_us: quantile(&mut lat, 0.99),
            rps: if secs > 0.0 {
                lat.len() as f64 / secs
            } else {
                0.0
            },
        }
    }
}

/// A closed loop: `concurrency` clients each send a small non-streaming chat request as
/// soon as their previous one ends, to `urls` in turn, until `requests` have been sent or
/// `max_time` has passed; each request times out after 10 s.
pub async fn closed_loop(
    urls: &[String],
    model: &str,
    concurrency: usize,
    requests: usize,
    max_time: Duration,
) -> ClosedReport {
    let sides = [urls.to_vec()];
    let [r] = closed_loop_sides(&sides, model, concurrency, requests, max_time).await;
    r
}

/// A closed loop as [`closed_loop`], its requests taking turns between the sides (request
/// `i` goes to side `i mod N`, and to that side's urls in turn): each side's report then
/// covers the same stretch of time under the same load on the machine, so the difference
/// of two sides' percentiles is what one adds to the other, not how the machine drifted
/// between two runs. `requests` counts all sides together.
pub async fn closed_loop_sides<const N: usize>(
    sides: &[Vec<String>; N],
    model: &str,
    concurrency: usize,
    requests: usize,
    max_time: Duration,
) -> [ClosedReport; N] {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let client = client(concurrency.max(1) * 2);
    let next = Arc::new(AtomicUsize::new(0));
    let sides = Arc::new(chat_urls(sides));
    let body = ping_body(model);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, next, sides, body) =
            (client.clone(), next.clone(), sides.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat: [Vec<f64>; N] = std::array::from_fn(|_| Vec::new());
            let mut errors = [0; N];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests || start.elapsed() > max_time {
                    break;
                }
                let Some(url) = pick(&sides, i) else { break };
                let o = send(
                    &client,
                    url,
                    body.clone(),
                    &[],
                    Duration::from_secs(10),
                    false,
                )
                .await;
                if o.error.is_none() {
                    lat[i % N].push(o.e2e_ms * 1000.0);
                } else {
                    errors[i % N] += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut lat: [Vec<f64>; N] = std::array::from_fn(|_| Vec::new());
    let mut errors = [0; N];
    for t in tasks {
        if let Ok((l, e)) = t.await {
            for (k, l) in l.into_iter().enumerate() {
                lat[k].extend(l);
                errors[k] += e[k];
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let mut lat = lat.into_iter();
    std::array::from_fn(|k| ClosedReport::new(lat.next().unwrap_or_default(), errors[k], secs))
}

/// Each side's urls with the chat path.
fn chat_urls<const N: usize>(sides: &[Vec<String>; N]) -> [Vec<Arc<str>>; N] {
    std::array::from_fn(|k| {
        sides[k]
            .iter()
            .map(|u| format!("{}/v1/chat/completions", u.trim_end_matches('/')).into())
            .collect()
    })
}

/// Request `i`'s url: side `i mod N`, that side's urls in turn (`None`: the side has none).
fn pick<const N: usize>(sides: &[Vec<Arc<str>>; N], i: usize) -> Option<&str> {
    let side = &sides[i % N];
    (!side.is_empty()).then(|| &*side[(i / N) % side.len()])
}

fn ping_body(model: &str) -> String {
    json!({"model": model, "messages": [{"role": "user", "content": "ping ping"}],
           "max_tokens": 4})
    .to_string()
}

/// An open loop at a fixed rate: `requests` small non-streaming chat requests, one every
/// `1 / rps` seconds whatever the answers do, to `urls` in turn; each times out after 10 s.
/// The report's `rps` is the completed requests over the time from the first send to the
/// last answer.
pub async fn fixed_rate(urls: &[String], model: &str, rps: f64, requests: usize) -> ClosedReport {
    let [r] = fixed_rate_sides(&[urls.to_vec()], model, rps, requests).await;
    r
}

/// An open loop as [`fixed_rate`] on each side at once, `requests` per side at `rps` each,
/// interleaved: side `k`'s requests leave `k / N` of a period after side 0's, so that every
/// side meets the same machine at the same moments (see [`closed_loop_sides`]).
pub async fn fixed_rate_sides<const N: usize>(
    sides: &[Vec<String>; N],
    model: &str,
    rps: f64,
    requests: usize,
) -> [ClosedReport; N] {
    let rps = if rps.is_finite() && rps > 0.0 {
        rps
    } else {
        1.0
    };
    let client = client(256);
    let sides = chat_urls(sides);
    let body = ping_body(model);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(requests * N);
    for i in 0..requests * N {
        let Some(url) = pick(&sides, i) else { continue };
        let (client, url, body): (_, Arc<str>, _) = (client.clone(), url.into(), body.clone());
        // Request i is side i mod N's (i / N)-th: at (i / N) periods plus (i mod N) / N of one.
        let at = start + Duration::from_secs_f64(i as f64 / N as f64 / rps);
        tasks.push((
            i % N,
            tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                let o = send(&client, &url, body, &[], Duration::from_secs(10), false).await;
                o.error.is_none().then_some(o.e2e_ms * 1000.0)
            }),
        ));
    }
    let mut lat: [Vec<f64>; N] = std::array::from_fn(|_| Vec::with_capacity(requests));
    let mut errors = [0; N];
    for (k, t) in tasks {
        match t.await {
            Ok(Some(l)) => lat[k].push(l),
            _ => errors[k] += 1,
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let mut lat = lat.into_iter();
    std::array::from_fn(|k| ClosedReport::new(lat.next().unwrap_or_default(), errors[k], secs))
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn paired_sides_take_turns_and_each_side_its_urls_in_turn() {
        let sides = chat_urls(&[
            vec!["http://a".to_string(), "http://b/".to_string()],
            vec!["http://g".to_string()],
        ]);
        let got: Vec<&str> = (0..6).map(|i| pick(&sides, i).unwrap()).collect();
        let (a, b, g) = (
            "http://a/v1/chat/completions",
            "http://b/v1/chat/completions",
            "http://g/v1/chat/completions",
        );
        assert_eq!(got, [a, g, b, g, a, g]);
        let empty = chat_urls(&[vec![], vec!["http://g".to_string()]]);
        assert_eq!(pick(&empty, 0), None);
        assert_eq!(pick(&empty, 1), Some(g));
    }

    #[test]
    fn quantiles_and_content_detection() {
        let mut v = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&mut v, 0.5), 3.0);
        assert_eq!(quantile(&mut v, 0.99), 5.0);
        assert_eq!(quantile(&mut [], 0.5), 0.0);
        assert!(has_content(br#"{"choices":[{"delta":{"content":"hi "}}]}"#));
        assert!(!has_content(
            br#"{"choices":[{"delta":{"role":"assistant","content":""}}]}"#
        ));
        assert!(has_content(br#"{"choices":[{"text":"x"}]}"#));
        assert!(!has_content(br#"{"choices":[],"usage":{}}"#));
    }

    #[test]
    fn report_counts_errors_by_class() {
        let rec = |error: Option<&str>, met: bool| RequestRecord {
            index: 0,
            sent_ms: 0.0,
            status: if error.is_none() { 200 } else { 503 },
            error: error.map(str::to_string),
            ttft_ms: Some(1.0),
            e2e_ms: 2.0,
            chunks: 1,
            usage_tokens: Some(1),
            max_tokens: 1,
            slo_ms: 10.0,
            slo_met: met,
            priority: "high",
            tenant: 0,
        };
        let r = LoadReport::from_records(
            vec![
                rec(None, true),
                rec(None, false),
                rec(Some("http_503"), false),
            ],
            2.0,
        );
        assert_eq!((r.requests, r.completed, r.errors), (3, 2, 1));
        assert_eq!(r.errors_by_class["http_503"], 1);
        assert!((r.slo_attainment - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(r.goodput_rps, 0.5);
    }
}
