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
//!   non-streaming requests runs at a fixed concurrency, once straight to the servers (in
//!   turn) and right after through the gateway; `overhead_p50_us` / `overhead_p99_us` are
//!   the differences of the latency percentiles (noise can make a small one negative), and `max_rps` the throughput of a second, more
//!   concurrent closed loop through the gateway.
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
use crate::serve::{self, ServeOptions};
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
        capabilities: cfg.capabilities.clone(),
        nodes: cfg.node_specs(),
    };
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
        opts.overhead_requests,
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
        for t in &opts.traces {
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
        // Overhead with zero-latency servers, against a direct run made just before (the
        // machine's state drifts over a long comparison).
        servers.set_speed(f64::INFINITY);
        let direct = rt.block_on(loadgen::closed_loop(
            &urls,
            &model,
            opts.overhead_concurrency,
            opts.overhead_requests,
            Duration::from_secs(60),
        ));
        let through = rt.block_on(loadgen::closed_loop(
            std::slice::from_ref(&base),
            &model,
            opts.overhead_concurrency,
            opts.overhead_requests,
            Duration::from_secs(60),
        ));
        let max = rt.block_on(loadgen::closed_loop(
            std::slice::from_ref(&base),
            &model,
            opts.max_rps_concurrency,
            usize::MAX,
            opts.max_rps_time,
        ));
        servers.set_speed(opts.speed);
        fig.overhead_p50_us = through.p50_us - direct.p50_us;
        fig.overhead_p99_us = through.p99_us - direct.p99_us;
        fig.direct_p50_us = direct.p50_us;
        fig.direct_p99_us = direct.p99_us;
        fig.max_rps = max.rps;
        fig.rss_mb = peak_rss_mb(pid);
        eprintln!(
            "gateways: {name}: overhead p50 {:.0} µs p99 {:.0} µs, max {:.0} req/s, {:.2} CPU s/1k, {:.0} MB peak RSS",
            fig.overhead_p50_us, fig.overhead_p99_us, fig.max_rps, fig.cpu_s_per_1k, fig.rss_mb
        );
        drop(guard);
        out.gateways.insert(name, fig);
    }
    drop(servers);
    Ok(out)
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
}
