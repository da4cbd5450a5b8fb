//! The side-by-side gateway comparison (`switchyard gateways`).
//!
//! The simulated servers of one config start once, on ephemeral loopback ports; then each
//! gateway in turn is started in front of all of them, made ready (`GET /health` answers 200
//! and one chat request goes through), and measured:
//!
//! * **traces** — for each trace, the servers' counters and prefix caches are reset and the
//!   trace is replayed through the gateway by the [load generator](crate::loadgen) (open
//!   loop, streaming, the same requests at the same times for every gateway);
//!   `prefix_hit_rate` is the servers' prefix-cache hit tokens over queried tokens in that
//!   replay, `cpu_s_per_1k` the gateway process's user + system CPU seconds (`/proc/PID/stat`)
//!   per 1000 requests over the replays, `rss_mb` its peak resident memory (`VmHWM`);
//! * **overhead** — the servers are switched to zero latency and a closed loop of small
//!   non-streaming requests runs at a fixed concurrency, its requests taking turns between
//!   going straight to the servers (in turn) and going through the gateway, so that both
//!   sides meet the same machine at the same moments; `overhead_p50_us` / `overhead_p99_us`
//!   are the differences of the two sides' latency percentiles (noise can make a small one
//!   negative), and `max_rps` the throughput of a second, more concurrent closed loop through
//!   the gateway; `overhead_1k_p50_us` / `overhead_1k_p99_us` are the same differences for an
//!   open loop sending 1000 req/s through the gateway and, interleaved half a period later,
//!   1000 req/s straight to the servers;
//! * **kill** — the servers' speed restored, the start of the first trace is replayed again
//!   and a third of the way through one server is killed (its port refuses connections, its
//!   open connections close without an answer) and stays down to the end: the figures say
//!   whether any request hung (ended only by the client's timeout), was lost (got no HTTP
//!   status), and how many of the requests sent after the kill, every one of which had
//!   healthy servers to go to, completed.
//!
//! Then the gateway is stopped (killed with everything it started, also on error: see
//! [`ProcGuard`]). The peers run with their documented defaults plus the policy named, their
//! host and their own Prometheus port on loopback.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Serialize;

mod procs;

pub use procs::{cpu_seconds, descendants, free_port, kill_all_started, peak_rss_mb, ProcGuard};

use crate::loadgen::{self, LoadOptions, LoadReport};
use crate::serve::{self, Fault, ServeOptions};
use crate::trace::TraceRow;

/// The pinned version of vllm-router installed for the comparison.
pub const VLLM_ROUTER_VERSION: &str = "0.1.17";
/// The pinned version of SGLang's gateway (`sglang-router`) installed for the comparison.
pub const SGLANG_ROUTER_VERSION: &str = "0.3.2";

/// A gateway of the comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gateway {
    /// This workspace's `switchyard-gateway` binary, with its default settings.
    Switchyard,
    /// `vllm-router --policy POLICY`.
    VllmRouter(String),
    /// `sglang-router launch --policy POLICY`.
    SglangRouter(String),
}

impl Gateway {
    /// The gateways compared by default: switchyard, vllm-router (`power_of_two`,
    /// `cache_aware`), SGLang's gateway (`cache_aware`, `power_of_two`).
    pub fn all() -> Vec<Gateway> {
        vec![
            Gateway::Switchyard,
            Gateway::VllmRouter("power_of_two".into()),
            Gateway::VllmRouter("cache_aware".into()),
            Gateway::SglangRouter("cache_aware".into()),
            Gateway::SglangRouter("power_of_two".into()),
        ]
    }

    /// Its name in reports: `switchyard`, `vllm-router/POLICY`, `sglang-router/POLICY`.
    pub fn name(&self) -> String {
        match self {
            Gateway::Switchyard => "switchyard".into(),
            Gateway::VllmRouter(p) => format!("vllm-router/{p}"),
            Gateway::SglangRouter(p) => format!("sglang-router/{p}"),
        }
    }

    /// Parses a [`name`](Self::name).
    pub fn parse(s: &str) -> Option<Gateway> {
        if s == "switchyard" {
            return Some(Gateway::Switchyard);
        }
        let (k, p) = s.split_once('/')?;
        match k {
            "vllm-router" => Some(Gateway::VllmRouter(p.into())),
            "sglang-router" => Some(Gateway::SglangRouter(p.into())),
            _ => None,
        }
    }
}

/// One trace of a comparison.
#[derive(Debug, Clone)]
pub struct TraceRun {
    /// Its name in reports.
    pub name: String,
    /// The rows replayed (already sliced).
    pub rows: Vec<TraceRow>,
    /// Arrival-rate multiplier.
    pub load: f64,
}

/// Settings of a comparison.
#[derive(Debug, Clone)]
pub struct CompareOptions {
    /// The fleet's config TOML text (node urls are replaced by the ephemeral ones).
    pub config_text: String,
    /// Traces to replay through each gateway.
    pub traces: Vec<TraceRun>,
    /// Time compression of servers and load generator alike.
    pub speed: f64,
    /// Gateways, in order.
    pub gateways: Vec<Gateway>,
    /// The `switchyard-gateway` binary (none: skipped with a note).
    pub switchyard_bin: Option<PathBuf>,
    /// The virtual environment holding (or to hold) the peers.
    pub venv: PathBuf,
    /// Install missing peers into `venv` with pip.
    pub install: bool,
    /// Where logs and the rewritten config go.
    pub work_dir: PathBuf,
    /// Closed-loop requests of the overhead measurement (per side).
    pub overhead_requests: usize,
    /// Concurrency of the overhead measurement.
    pub overhead_concurrency: usize,
    /// Concurrency of the max-throughput loop.
    pub max_rps_concurrency: usize,
    /// Duration of the max-throughput loop.
    pub max_rps_time: Duration,
    /// Seed of the synthesised priorities and tenants.
    pub seed: u64,
    /// Per-request timeout of the replays.
    pub timeout: Duration,
    /// Replay the traces.
    pub run_traces: bool,
    /// Measure the overhead (closed loops and the fixed-rate open loop).
    pub run_overhead: bool,
    /// Requests of the fixed-rate overhead loop (per side; 0: not measured).
    pub fixed_requests: usize,
    /// Its rate, req/s.
    pub fixed_rps: f64,
    /// Rows of the first trace replayed in the kill scenario (0: not run).
    pub kill_requests: usize,
}

/// A gateway's figures while a server is killed a third of the way through a replay.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KillFigures {
    /// The server killed.
    pub node: String,
    /// When, s after the replay began.
    pub killed_at_s: f64,
    /// Requests sent.
    pub requests: usize,
    /// Requests that completed.
    pub completed: usize,
    /// Requests that ended only by the client's timeout.
    pub hung: usize,
    /// Requests that got no HTTP status (the connection closed without an answer).
    pub lost: usize,
    /// Requests in flight at the kill (sent before it, ended after it).
    pub in_flight_at_kill: usize,
    /// Those that did not complete.
    pub in_flight_failed: usize,
    /// Requests sent after the kill: every one had healthy servers to go to.
    pub after_kill: usize,
    /// The share of those that completed.
    pub after_kill_success: f64,
    /// Requests that did not complete, by class.
    pub errors_by_class: BTreeMap<String, usize>,
}

impl KillFigures {
    /// Classifies the records of a replay in which `node` was killed at `killed_at_s`.
    pub fn from_records(node: &str, killed_at_s: f64, records: &[loadgen::RequestRecord]) -> Self {
        let kill_ms = killed_at_s * 1000.0;
        let mut k = KillFigures {
            node: node.to_string(),
            killed_at_s,
            requests: records.len(),
            ..KillFigures::default()
        };
        let mut after_ok = 0;
        for r in records {
            let ok = r.error.is_none();
            k.completed += ok as usize;
            if let Some(e) = &r.error {
                *k.errors_by_class.entry(e.clone()).or_insert(0) += 1;
                k.hung += (e == "timeout") as usize;
                k.lost += (r.status == 0 && e != "timeout") as usize;
            }
            if r.sent_ms >= kill_ms {
                k.after_kill += 1;
                after_ok += ok as usize;
            } else if r.sent_ms + r.e2e_ms >= kill_ms {
                k.in_flight_at_kill += 1;
                k.in_flight_failed += (!ok) as usize;
            }
        }
        k.after_kill_success = if k.after_kill > 0 {
            after_ok as f64 / k.after_kill as f64
        } else {
            0.0
        };
        k
    }
}

/// A gateway's figures over one trace, or pooled over all of them.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TraceFigures {
    /// Share of requests completed within their SLO.
    pub slo_attainment: f64,
    /// Time to first token, ms, median.
    pub ttft_p50_ms: f64,
    /// Time to first token, ms, 99th percentile.
    pub ttft_p99_ms: f64,
    /// End-to-end latency, ms, median.
    pub e2e_p50_ms: f64,
    /// End-to-end latency, ms, 99th percentile.
    pub e2e_p99_ms: f64,
    /// Requests within their SLO per second.
    pub goodput_rps: f64,
    /// Requests that did not complete.
    pub errors: usize,
    /// Those by class.
    pub errors_by_class: BTreeMap<String, usize>,
    /// Servers' prefix-cache hit tokens over queried tokens.
    pub prefix_hit_rate: f64,
    /// Requests sent.
    pub requests: usize,
}

/// A gateway's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GatewayFigures {
    /// Pooled over the traces (percentiles over all requests).
    #[serde(flatten)]
    pub pooled: TraceFigures,
    /// Gateway CPU seconds (user + system) per 1000 requests of the replays.
    pub cpu_s_per_1k: f64,
    /// Peak resident memory of the gateway process, MB.
    pub rss_mb: f64,
    /// Added median latency with zero-latency servers, µs.
    pub overhead_p50_us: f64,
    /// Added 99th-percentile latency with zero-latency servers, µs.
    pub overhead_p99_us: f64,
    /// Highest request rate sustained in the closed loop, req/s.
    pub max_rps: f64,
    /// Added median latency at a fixed 1000 req/s with zero-latency servers, µs.
    pub overhead_1k_p50_us: f64,
    /// Likewise, 99th percentile.
    pub overhead_1k_p99_us: f64,
    /// The kill scenario (none: not run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill: Option<KillFigures>,
    /// The direct closed loop's median latency measured just before this gateway's, µs.
    pub direct_p50_us: f64,
    /// Likewise, 99th percentile.
    pub direct_p99_us: f64,
    /// Per trace.
    pub traces: BTreeMap<String, TraceFigures>,
    /// The command line it was started with.
    pub command: String,
}

/// The comparison's result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Comparison {
    /// Figures by gateway name.
    pub gateways: BTreeMap<String, GatewayFigures>,
    /// Gateways skipped, with the reason.
    pub skipped: BTreeMap<String, String>,
    /// Straight to the servers (zero latency): median and p99 latency (µs) and req/s.
    pub direct: loadgen::ClosedReport,
    /// Settings: speed, traces, loads, versions.
    pub settings: BTreeMap<String, String>,
}

/// Why the comparison could not run at all (a gateway that fails is skipped instead).
#[derive(Debug)]
pub struct CompareError(pub String);

impl std::fmt::Display for CompareError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CompareError {}

fn version_of(python: &Path, dist: &str) -> Option<String> {
    let out = Command::new(python)
        .args([
            "-c",
            &format!("import importlib.metadata as m; print(m.version('{dist}'))"),
        ])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Makes sure `venv` holds the pinned peers, creating it and installing them with pip when
/// `install` is set. Returns a note per peer that cannot be had.
pub fn ensure_peers(venv: &Path, install: bool) -> BTreeMap<&'static str, String> {
    let mut missing = BTreeMap::new();
    let python = venv.join("bin").join("python");
    let wanted = [
        ("vllm-router", VLLM_ROUTER_VERSION),
        ("sglang-router", SGLANG_ROUTER_VERSION),
    ];
    let mut need: Vec<String> = wanted
        .iter()
        .filter(|(d, v)| version_of(&python, d).as_deref() != Some(v))
        .map(|(d, v)| format!("{d}=={v}"))
        .collect();
    if !need.is_empty() && install {
        if !python.exists() {
            eprintln!(
                "gateways: creating a virtual environment in {}",
                venv.display()
            );
            let ok = Command::new("python3")
                .args(["-m", "venv"])
                .arg(venv)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("gateways: note: `python3 -m venv` failed");
            }
        }
        if python.exists() {
            eprintln!("gateways: pip install {}", need.join(" "));
            let ok = Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(&need)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                eprintln!("gateways: note: pip could not install {}", need.join(" "));
            }
        }
        need.retain(|spec| {
            let (d, v) = spec.split_once("==").unwrap_or((spec, ""));
            version_of(&python, d).as_deref() != Some(v)
        });
    }
    for spec in need {
        let (d, _) = spec.split_once("==").unwrap_or((&spec, ""));
        let name = if d == "vllm-router" {
            "vllm-router"
        } else {
            "sglang-router"
        };
        missing.insert(
            name,
            format!(
                "{spec} is not installed in {} ({})",
                venv.display(),
                if install {
                    "pip could not install it"
                } else {
                    "installing was not allowed"
                }
            ),
        );
    }
    missing
}

/// The command that starts `gw` on `port` in front of `urls`, or why it cannot run.
fn command_for(
    gw: &Gateway,
    opts: &CompareOptions,
    urls: &[String],
    config: &Path,
    port: u16,
) -> Result<Command, String> {
    let bin = |name: &str| opts.venv.join("bin").join(name);
    let prom = free_port().map_err(|e| e.to_string())?;
    let mut cmd = match gw {
        Gateway::Switchyard => {
            let Some(b) = opts.switchyard_bin.as_ref().filter(|b| b.exists()) else {
                return Err(
                    "the switchyard-gateway binary was not found (build it with \
                            `cargo build -p switchyard-gateway`, or set SWITCHYARD_GATEWAY_BIN)"
                        .into(),
                );
            };
            let mut c = Command::new(b);
            c.arg("--config")
                .arg(config)
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"));
            return Ok(c);
        }
        Gateway::VllmRouter(p) => {
            let mut c = Command::new(bin("vllm-router"));
            c.arg("--worker-urls").args(urls).args(["--policy", p]);
            c
        }
        Gateway::SglangRouter(p) => {
            let mut c = Command::new(bin("sglang-router"));
            c.arg("launch")
                .arg("--worker-urls")
                .args(urls)
                .args(["--policy", p]);
            c
        }
    };
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--prometheus-host", "127.0.0.1"])
        .args(["--prometheus-port", &prom.to_string()])
        // No model hub: these servers name no tokenizer, and nothing may leave loopback.
        .env("HF_HUB_OFFLINE", "1")
        .env("NO_PROXY", "*");
    Ok(cmd)
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd
        .get_program()
        .to_string_lossy()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        // Keep no machine paths in reports: the config file by its name only.
        let a = if a.contains('/') && !a.starts_with("http") {
            a.rsplit('/').next().unwrap_or_default().to_string()
        } else {
            a.to_string()
        };
        s.push(' ');
        s.push_str(&a);
    }
    s
}

/// Polls `GET /health` until 200, then sends chat requests until one is answered 200.
async fn wait_ready(
    guard: &mut ProcGuard,
    base: &str,
    model: &str,
    within: Duration,
) -> Result<(), String> {
    let client = loadgen::client(4);
    let deadline = Instant::now() + within;
    let health = format!("{base}/health");
    loop {
        if guard.exited() {
            return Err(format!(
                "it exited; last log lines:\n{}",
                guard.log_tail(15)
            ));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "not ready within {} s; last log lines:\n{}",
                within.as_secs(),
                guard.log_tail(15)
            ));
        }
        let req = hyper::Request::get(&health)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("a valid request");
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(2), client.request(req)).await,
            Ok(Ok(r)) if r.status().is_success()
        );
        if ok {
            let body = serde_json::json!({"model": model,
                "messages": [{"role": "user", "content": "ready?"}], "max_tokens": 2})
            .to_string();
            let o = loadgen::send(
                &client,
                &format!("{base}/v1/chat/completions"),
                body,
                &[],
                Duration::from_secs(5),
                false,
            )
            .await;
            if o.error.is_none() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn figures(report: &LoadReport, hit_rate: f64) -> TraceFigures {
    TraceFigures {
        slo_attainment: report.slo_attainment,
        ttft_p50_ms: report.ttft_p50_ms,
        ttft_p99_ms: report.ttft_p99_ms,
        e2e_p50_ms: report.e2e_p50_ms,
        e2e_p99_ms: report.e2e_p99_ms,
        goodput_rps: report.goodput_rps,
        errors: report.errors,
        errors_by_class: report.errors_by_class.clone(),
        prefix_hit_rate: hit_rate,
        requests: report.requests,
    }
}

/// Runs the comparison (see the [module docs](self)), printing progress to stderr.
///
/// # Errors
/// A [`CompareError`] when the config does not parse or the servers cannot start; a gateway
/// that cannot start is skipped and named in [`Comparison::skipped`].
pub fn run(opts: &CompareOptions) -> Result<Comparison, CompareError> {
    let err = |m: String| CompareError(m);
    let cfg = switchyard::Config::parse("gateways config", &opts.config_text)
        .map_err(|e| err(e.to_string()))?;
    let model = cfg
        .models()
        .first()
        .map(|m| m.to_string())
        .ok_or_else(|| err("the config's nodes serve no model".into()))?;
    std::fs::create_dir_all(&opts.work_dir)
        .map_err(|e| err(format!("cannot create {}: {e}", opts.work_dir.display())))?;
    let servers = serve::spawn(
        &cfg,
        &ServeOptions {
            speed: opts.speed,
            ephemeral: true,
            ..ServeOptions::default()
        },
    )
    .map_err(|e| err(e.to_string()))?;
    let urls: Vec<String> = servers.urls().into_iter().map(|(_, u)| u).collect();
    let config_path = opts.work_dir.join("gateways-fleet.toml");
    let text = serve::rewrite_urls(&opts.config_text, &servers.urls()).map_err(err)?;
    std::fs::write(&config_path, text)
        .map_err(|e| err(format!("cannot write {}: {e}", config_path.display())))?;
    let fleet = crate::FleetConfig {
        weights: cfg.scoring_weights(),
        capabilities: cfg.capabilities.clone(),
        nodes: cfg.node_specs(),
    };
    // The server the kill scenario kills: the first serving the model.
    let victim = cfg
        .nodes
        .iter()
        .find(|n| n.models.contains(&model))
        .map(|n| n.name.clone());
    let mut out = Comparison::default();
    out.settings.insert("speed".into(), opts.speed.to_string());
    out.settings
        .insert("vllm-router".into(), VLLM_ROUTER_VERSION.into());
    out.settings
        .insert("sglang-router".into(), SGLANG_ROUTER_VERSION.into());
    for t in &opts.traces {
        out.settings.insert(
            format!("trace {}", t.name),
            format!("{} requests at load x{}", t.rows.len(), t.load),
        );
    }
    let needs_peers = opts.gateways.iter().any(|g| *g != Gateway::Switchyard);
    let missing = if needs_peers {
        ensure_peers(&opts.venv, opts.install)
    } else {
        BTreeMap::new()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("gateways")
        .enable_all()
        .build()
        .map_err(|e| err(format!("cannot start the runtime: {e}")))?;
    // The baseline: straight to the servers at zero latency.
    servers.set_speed(f64::INFINITY);
    out.direct = rt.block_on(loadgen::closed_loop(
        &urls,
        &model,
        opts.overhead_concurrency,
        if opts.run_overhead {
            opts.overhead_requests
        } else {
            0
        },
        Duration::from_secs(60),
    ));
    servers.set_speed(opts.speed);
    eprintln!(
        "gateways: direct to the servers: p50 {:.0} µs, p99 {:.0} µs, {:.0} req/s",
        out.direct.p50_us, out.direct.p99_us, out.direct.rps
    );
    for gw in &opts.gateways {
        let name = gw.name();
        let peer = match gw {
            Gateway::Switchyard => None,
            Gateway::VllmRouter(_) => Some("vllm-router"),
            Gateway::SglangRouter(_) => Some("sglang-router"),
        };
        if let Some(why) = peer.and_then(|p| missing.get(p)) {
            eprintln!("gateways: skipping {name}: {why}");
            out.skipped.insert(name, why.clone());
            continue;
        }
        let port = free_port().map_err(|e| err(e.to_string()))?;
        let cmd = match command_for(gw, opts, &urls, &config_path, port) {
            Ok(c) => c,
            Err(why) => {
                eprintln!("gateways: skipping {name}: {why}");
                out.skipped.insert(name, why);
                continue;
            }
        };
        let command = describe(&cmd);
        eprintln!("gateways: starting {command}");
        let log = opts
            .work_dir
            .join(format!("gateway-{}.log", name.replace('/', "-")));
        let mut guard = match ProcGuard::start(cmd, &log) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("gateways: skipping {name}: cannot start it: {e}");
                out.skipped.insert(name, format!("cannot start it: {e}"));
                continue;
            }
        };
        let base = format!("http://127.0.0.1:{port}");
        if let Err(why) = rt.block_on(wait_ready(
            &mut guard,
            &base,
            &model,
            Duration::from_secs(90),
        )) {
            eprintln!("gateways: skipping {name}: {why}");
            out.skipped.insert(name, why);
            continue;
        }
        let pid = guard.pid();
        let mut fig = GatewayFigures {
            command,
            ..GatewayFigures::default()
        };
        let mut pooled_records = Vec::new();
        let mut pooled_secs = 0.0;
        let (mut hits, mut queries) = (0u64, 0u64);
        let cpu0 = cpu_seconds(pid);
        for t in opts.traces.iter().filter(|_| opts.run_traces) {
            servers.reset();
            let lo = LoadOptions {
                url: base.clone(),
                load: t.load,
                speed: opts.speed,
                model: model.clone(),
                skip: 0,
                max_requests: None,
                seed: opts.seed,
                timeout: opts.timeout,
                fleet: fleet.clone(),
            };
            let report = match rt.block_on(loadgen::run_async(&lo, &t.rows)) {
                Ok(r) => r,
                Err(e) => return Err(err(format!("{name} on {}: {e}", t.name))),
            };
            let s = servers.total();
            let rate = if s.prefix_queries > 0 {
                s.prefix_hits as f64 / s.prefix_queries as f64
            } else {
                0.0
            };
            hits += s.prefix_hits;
            queries += s.prefix_queries;
            eprintln!(
                "gateways: {name} on {}: {}, prefix hits {:.1} %",
                t.name,
                report.summary(),
                100.0 * rate
            );
            fig.traces.insert(t.name.clone(), figures(&report, rate));
            pooled_secs += report.duration_s;
            pooled_records.extend(report.records);
        }
        let cpu = cpu_seconds(pid) - cpu0;
        let pooled = LoadReport::from_records(pooled_records, pooled_secs);
        fig.pooled = figures(
            &pooled,
            if queries > 0 {
                hits as f64 / queries as f64
            } else {
                0.0
            },
        );
        fig.cpu_s_per_1k = if pooled.requests > 0 {
            cpu * 1000.0 / pooled.requests as f64
        } else {
            0.0
        };
        if opts.run_overhead {
            overhead(&rt, opts, &servers, &urls, &base, &model, &mut fig);
        }
        fig.rss_mb = peak_rss_mb(pid);
        eprintln!(
            "gateways: {name}: overhead p50 {:.0} µs p99 {:.0} µs (at 1000 req/s: {:.0} / {:.0} µs), \
             max {:.0} req/s, {:.2} CPU s/1k, {:.0} MB peak RSS",
            fig.overhead_p50_us,
            fig.overhead_p99_us,
            fig.overhead_1k_p50_us,
            fig.overhead_1k_p99_us,
            fig.max_rps,
            fig.cpu_s_per_1k,
            fig.rss_mb
        );
        if let (Some(t), Some(victim), true) =
            (opts.traces.first(), &victim, opts.kill_requests > 0)
        {
            servers.reset();
            let k = kill_run(&rt, opts, &servers, &base, &model, &fleet, t, victim)
                .map_err(|e| err(format!("{name}, kill scenario: {e}")))?;
            eprintln!(
                "gateways: {name}, {victim} killed at {:.1} s: {} requests, {} completed, {} hung, \
                 {} lost; in flight at the kill {} ({} failed); after it {} ({:.1} % completed)",
                k.killed_at_s,
                k.requests,
                k.completed,
                k.hung,
                k.lost,
                k.in_flight_at_kill,
                k.in_flight_failed,
                k.after_kill,
                100.0 * k.after_kill_success
            );
            fig.kill = Some(k);
        }
        drop(guard);
        out.gateways.insert(name, fig);
    }
    drop(servers);
    Ok(out)
}

/// The overhead loops (see the [module docs](self)) with zero-latency servers, each against a
/// direct run made just before it (the machine's state drifts over a long comparison).
fn overhead(
    rt: &tokio::runtime::Runtime,
    opts: &CompareOptions,
    servers: &serve::ServerSet,
    urls: &[String],
    base: &str,
    model: &str,
    fig: &mut GatewayFigures,
) {
    let base = base.to_string();
    servers.set_speed(f64::INFINITY);
    // Paired: the clients' requests take turns between the servers and the gateway, so both
    // sides meet the same machine at the same moments (see `loadgen::closed_loop_sides`).
    let sides = [urls.to_vec(), vec![base.clone()]];
    let [direct, through] = rt.block_on(loadgen::closed_loop_sides(
        &sides,
        model,
        opts.overhead_concurrency,
        2 * opts.overhead_requests,
        Duration::from_secs(120),
    ));
    let max = rt.block_on(loadgen::closed_loop(
        std::slice::from_ref(&base),
        model,
        opts.max_rps_concurrency,
        usize::MAX,
        opts.max_rps_time,
    ));
    fig.overhead_p50_us = through.p50_us - direct.p50_us;
    fig.overhead_p99_us = through.p99_us - direct.p99_us;
    fig.direct_p50_us = direct.p50_us;
    fig.direct_p99_us = direct.p99_us;
    fig.max_rps = max.rps;
    if opts.fixed_requests > 0 {
        let [direct, through] = rt.block_on(loadgen::fixed_rate_sides(
            &sides,
            model,
            opts.fixed_rps,
            opts.fixed_requests,
        ));
        fig.overhead_1k_p50_us = through.p50_us - direct.p50_us;
        fig.overhead_1k_p99_us = through.p99_us - direct.p99_us;
    }
    servers.set_speed(opts.speed);
}

/// The kill scenario (see the [module docs](self)): the first `kill_requests` rows of `t`
/// replayed through the gateway at `base`, with `victim` killed a third of the way through
/// the replay's arrivals and back up once it has ended.
#[allow(clippy::too_many_arguments)]
fn kill_run(
    rt: &tokio::runtime::Runtime,
    opts: &CompareOptions,
    servers: &serve::ServerSet,
    base: &str,
    model: &str,
    fleet: &crate::FleetConfig,
    t: &TraceRun,
    victim: &str,
) -> Result<KillFigures, loadgen::LoadError> {
    let rows = &t.rows[..opts.kill_requests.min(t.rows.len())];
    let span_ms = match (rows.first(), rows.last()) {
        (Some(a), Some(b)) => b.arrival_ms.saturating_sub(a.arrival_ms) as f64,
        _ => 0.0,
    };
    let kill_at = Duration::from_secs_f64(span_ms / t.load / opts.speed / 1000.0 / 3.0);
    let lo = LoadOptions {
        url: base.to_string(),
        load: t.load,
        speed: opts.speed,
        model: model.to_string(),
        skip: 0,
        max_requests: None,
        seed: opts.seed,
        timeout: opts.timeout,
        fleet: fleet.clone(),
    };
    let down = Fault {
        down: true,
        ..Fault::default()
    };
    let report = rt.block_on(async {
        let replay = loadgen::run_async(&lo, rows);
        let kill = async {
            tokio::time::sleep(kill_at).await;
            servers.set_fault(victim, down);
        };
        let (report, ()) = tokio::join!(replay, kill);
        report
    });
    servers.set_fault(victim, Fault::default());
    let report = report?;
    Ok(KillFigures::from_records(
        victim,
        kill_at.as_secs_f64(),
        &report.records,
    ))
}

/// The comparison as a table, one gateway a row.
pub fn table(c: &Comparison) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<26} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>6} {:>8} {:>7} {:>9} {:>9} {:>8}",
        "gateway",
        "SLO%",
        "ttft50",
        "ttft99",
        "e2e50",
        "e2e99",
        "good/s",
        "errs",
        "hit%",
        "cpu/1k",
        "rssMB",
        "ovh50us",
        "ovh99us",
        "max/s"
    );
    for (name, g) in &c.gateways {
        let p = &g.pooled;
        let _ = writeln!(
            s,
            "{:<26} {:>6.1} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.2} {:>6} {:>6.1} {:>8.3} {:>7.0} {:>9.0} {:>9.0} {:>8.0}",
            name,
            100.0 * p.slo_attainment,
            p.ttft_p50_ms,
            p.ttft_p99_ms,
            p.e2e_p50_ms,
            p.e2e_p99_ms,
            p.goodput_rps,
            p.errors,
            100.0 * p.prefix_hit_rate,
            g.cpu_s_per_1k,
            g.rss_mb,
            g.overhead_p50_us,
            g.overhead_p99_us,
            g.max_rps
        );
        for (t, f) in &g.traces {
            let _ = writeln!(
                s,
                "  {:<24} {:>6.1} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>8.2} {:>6} {:>6.1}",
                t,
                100.0 * f.slo_attainment,
                f.ttft_p50_ms,
                f.ttft_p99_ms,
                f.e2e_p50_ms,
                f.e2e_p99_ms,
                f.goodput_rps,
                f.errors,
                100.0 * f.prefix_hit_rate
            );
        }
    }
    if c.gateways
        .values()
        .any(|g| g.kill.is_some() || g.overhead_1k_p99_us != 0.0)
    {
        let _ = writeln!(
            s,
            "\n{:<26} {:>9} {:>9} {:>10} {:>6} {:>6} {:>6} {:>10} {:>7} {:>7}",
            "gateway",
            "1k:ovh50",
            "1k:ovh99",
            "killed at",
            "reqs",
            "hung",
            "lost",
            "inflt/fail",
            "after",
            "after%"
        );
        for (name, g) in &c.gateways {
            let k = g.kill.clone().unwrap_or_default();
            let _ = writeln!(
                s,
                "{:<26} {:>9.0} {:>9.0} {:>9.1}s {:>6} {:>6} {:>6} {:>10} {:>7} {:>7.1}",
                name,
                g.overhead_1k_p50_us,
                g.overhead_1k_p99_us,
                k.killed_at_s,
                k.requests,
                k.hung,
                k.lost,
                format!("{}/{}", k.in_flight_at_kill, k.in_flight_failed),
                k.after_kill,
                100.0 * k.after_kill_success
            );
        }
    }
    for (name, why) in &c.skipped {
        let first = why.lines().next().unwrap_or_default();
        let _ = writeln!(s, "{name:<26} skipped: {first}");
    }
    s
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn gateway_names_round_trip() {
        for g in Gateway::all() {
            assert_eq!(Gateway::parse(&g.name()), Some(g));
        }
        assert_eq!(Gateway::parse("nginx/x"), None);
    }

    fn rec(sent_ms: f64, e2e_ms: f64, status: u16, error: Option<&str>) -> loadgen::RequestRecord {
        loadgen::RequestRecord {
            index: 0,
            sent_ms,
            status,
            error: error.map(str::to_string),
            ttft_ms: None,
            e2e_ms,
            chunks: 0,
            usage_tokens: None,
            max_tokens: 1,
            slo_ms: 1.0,
            slo_met: false,
            priority: "normal",
            tenant: 0,
        }
    }

    #[test]
    fn kill_figures_classify_by_the_kill_instant() {
        let records = [
            rec(0.0, 500.0, 200, None),                    // ended before the kill
            rec(900.0, 300.0, 200, Some("stream_broken")), // in flight, cut
            rec(950.0, 400.0, 200, None),                  // in flight, survived
            rec(1000.0, 50.0, 200, None),                  // after
            rec(1500.0, 10.0, 0, Some("connect")),         // after, lost
            rec(2000.0, 120_000.0, 0, Some("timeout")),    // after, hung
        ];
        let k = KillFigures::from_records("a", 1.0, &records);
        assert_eq!(k.requests, 6);
        assert_eq!(k.completed, 3);
        assert_eq!(k.hung, 1);
        assert_eq!(k.lost, 1);
        assert_eq!((k.in_flight_at_kill, k.in_flight_failed), (2, 1));
        assert_eq!(k.after_kill, 3);
        assert!((k.after_kill_success - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(k.errors_by_class.get("timeout"), Some(&1));
        assert_eq!(k.errors_by_class.get("stream_broken"), Some(&1));
    }
}
