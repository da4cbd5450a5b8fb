//! `switchyard fleet`: three `switchyard-gateway` replicas in front of the same simulated
//! servers, requests spread round-robin over them, run once with fleet mode (sharing
//! through a `redis-server` started here on a free loopback port) and once as independent
//! replicas; see `docs/fleet.md` for what each figure means.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use switchyard_sim::gateways::{free_port, ProcGuard};
use switchyard_sim::loadgen::{self, HttpClient};
use switchyard_sim::serve::{self, Fault, ServeOptions, ServerSet};

use crate::Error;

/// Options of `fleet`.
#[derive(Args, Debug, Clone)]
pub struct FleetArgs {
    /// Short phases (about a minute in all; the CI smoke run).
    #[arg(long)]
    pub quick: bool,
    /// Write the figures as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Gateway replicas.
    #[arg(long, default_value_t = 3)]
    pub replicas: usize,
    /// Fleet mode's sync interval, ms.
    #[arg(long, default_value_t = 100)]
    pub sync_interval_ms: u64,
    /// Scale every phase's length (the tests' smoke run uses a fraction of `--quick`).
    #[arg(long, default_value_t = 1.0, hide = true)]
    pub phase_scale: f64,
}

/// Four identical nodes; small enough that a 2-core machine drives them near capacity.
const NODES: usize = 4;
const MODEL: &str = "llama-3.1-8b-instruct";
/// The limited tenant's cluster-wide rate (tokens/s) and burst (s).
const TENANT_RATE: f64 = 1000.0;
const TENANT_BURST_S: f64 = 0.5;
/// Output tokens of every request, and the prompt (200 bytes: 50 tokens as the gateway
/// counts them).
const MAX_TOKENS: u32 = 48;
const PROMPT_BYTES: usize = 200;
/// A request meets its SLO when it completes within this (the unloaded time is about
/// 350 ms: 16 tokens at 50 tokens/s plus the base latency).
const SLO_MS: f64 = 2000.0;

fn fleet_config(ports: &[u16]) -> String {
    let mut s = String::from(
        "[admission]\nheadroom = [1.0, 1.0, 1.0, 1.0]\n\n[gateway]\nworkers = 1\nio_threads = 2\nreload_interval_ms = 60000\nprefix_block_bytes = 0\nshutdown_grace_ms = 2000\nsaturation_wait_ms = [1000, 1000, 1000, 1000]\n\n",
    );
    for (i, p) in ports.iter().enumerate() {
        s += &format!(
            "[[node]]\nname = \"n{i}\"\nurl = \"http://127.0.0.1:{p}\"\nmodels = [\"{MODEL}\"]\n\
             max_concurrency = 8\nmax_tokens_in_flight = 100000\nmemory_mb = 60000\n\
             kv_mb_per_1k_tokens = 10.0\nbase_latency_ms = 20.0\nprefill_tokens_per_sec = 20000.0\n\
             decode_tokens_per_sec = 50.0\nbatch_slowdown = 0.6\n\n"
        );
    }
    s += &format!(
        "[[tenant]]\nid = 1\nmax_tokens_per_second = {TENANT_RATE}\ntoken_burst_seconds = {TENANT_BURST_S}\n"
    );
    s
}

/// A phase's lengths (s).
struct Phases {
    tenant_s: f64,
    load_s: f64,
    down_s: f64,
    outage_s: f64,
    load_rps: f64,
    low_s: f64,
    low_rps: f64,
}

/// One mode's figures.
#[derive(Debug, Clone, Default, Serialize)]
struct ModeFigures {
    /// Tokens admitted for the limited tenant beyond what one gateway with its limit admits
    /// (rate × time + burst), as a fraction of rate × time.
    tenant_overshoot: f64,
    /// Mean over 100 ms samples of the coefficient of variation of the nodes' requests
    /// running + waiting at the servers.
    balance_deviation: f64,
    /// Attempts the gateways sent to a node after it went hard down (failures counted on
    /// it, fleet-wide).
    requests_to_down_node: u64,
    /// Share of the load phase's requests completed within `SLO_MS`.
    slo_attainment: f64,
    /// Time to first token, ms, 99th percentile, of the load phase's completed requests.
    ttft_p99_ms: f64,
    /// Extra figures.
    tenant_admitted_tokens: f64,
    tenant_budget_tokens: f64,
    load_requests: usize,
    load_errors: usize,
    ttft_p50_ms: f64,
    /// The same at low load (about a fifth of capacity).
    low_load_slo_attainment: f64,
    low_load_ttft_p99_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Outage {
    seconds: f64,
    /// Untenanted requests sent while Redis was down (and 3 s after it came back).
    requests: usize,
    /// Of those, the ones that did not complete with 200.
    failed: usize,
    /// Tenant tokens admitted during the outage over rate × time (the local shares hold it
    /// near 0; without them it would be about replicas − 1).
    tenant_overshoot: f64,
    /// Whether every replica reported the shared view again after Redis came back, and when.
    resumed: bool,
    resumed_after_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Report {
    fleet: ModeFigures,
    independent: ModeFigures,
    staleness_p50_ms: f64,
    staleness_p99_ms: f64,
    redis_outage_failed_requests: usize,
    outage: Outage,
    replicas: usize,
    sync_interval_ms: u64,
    quick: bool,
}

fn gateway_bin() -> Option<PathBuf> {
    if let Some(b) = std::env::var_os("SWITCHYARD_GATEWAY_BIN") {
        return Some(PathBuf::from(b));
    }
    let exe = std::env::current_exe().ok()?;
    let b = exe.parent()?.join("switchyard-gateway");
    b.exists().then_some(b)
}

pub fn run(args: &FleetArgs) -> Result<(), Error> {
    let bin = gateway_bin().ok_or(
        "the switchyard-gateway binary was not found next to this one (build it with \
         `cargo build -p switchyard-gateway`, or set SWITCHYARD_GATEWAY_BIN)",
    )?;
    if args.replicas < 2 {
        return Err("--replicas must be at least 2".into());
    }
    let phases = if args.quick {
        Phases {
            tenant_s: 5.0,
            load_s: 8.0,
            down_s: 3.0,
            outage_s: 4.0,
            load_rps: 24.0,
            low_s: 5.0,
            low_rps: 6.0,
        }
    } else {
        Phases {
            tenant_s: 20.0,
            load_s: 30.0,
            down_s: 4.0,
            outage_s: 10.0,
            load_rps: 24.0,
            low_s: 20.0,
            low_rps: 6.0,
        }
    };
    if !(args.phase_scale.is_finite() && args.phase_scale > 0.0) {
        return Err("--phase-scale must be a positive number".into());
    }
    let phases = Phases {
        tenant_s: phases.tenant_s * args.phase_scale,
        load_s: phases.load_s * args.phase_scale,
        down_s: phases.down_s * args.phase_scale,
        outage_s: phases.outage_s * args.phase_scale,
        low_s: phases.low_s * args.phase_scale,
        ..phases
    };
    let work = std::env::temp_dir().join(format!("switchyard-fleet-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    // The simulated servers, on their own runtime.
    let placeholder = fleet_config(&[1; NODES]);
    let cfg = switchyard::Config::parse("fleet scenario", &placeholder)?;
    let servers = serve::spawn(
        &cfg,
        &ServeOptions {
            ephemeral: true,
            workers: 1,
            ..ServeOptions::default()
        },
    )?;
    let ports: Vec<u16> = servers.addrs.iter().map(|(_, a)| a.port()).collect();
    let config = fleet_config(&ports);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let servers = Arc::new(servers);
    let result = rt.block_on(scenario(
        args,
        &phases,
        &bin,
        &work,
        &config,
        servers.clone(),
    ));
    drop(rt);
    if let Ok(s) = Arc::try_unwrap(servers) {
        s.shutdown();
    }
    let report = result?;
    print_report(&report);
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n")?;
        println!("wrote {}", p.display());
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

fn print_report(r: &Report) {
    println!(
        "switchyard fleet: {} replicas, sync every {} ms{}",
        r.replicas,
        r.sync_interval_ms,
        if r.quick { " (quick)" } else { "" }
    );
    println!(
        "{:<14} {:>16} {:>18} {:>20} {:>15} {:>12}",
        "mode",
        "tenant_overshoot",
        "balance_deviation",
        "requests_to_down",
        "slo_attainment",
        "ttft_p99_ms"
    );
    for (name, m) in [("fleet", &r.fleet), ("independent", &r.independent)] {
        println!(
            "{:<14} {:>15.1}% {:>18.3} {:>20} {:>14.1}% {:>12.0}",
            name,
            100.0 * m.tenant_overshoot,
            m.balance_deviation,
            m.requests_to_down_node,
            100.0 * m.slo_attainment,
            m.ttft_p99_ms
        );
    }
    for (name, m) in [("fleet", &r.fleet), ("independent", &r.independent)] {
        println!(
            "{name:<14} at low load: slo_attainment {:.1}%, ttft_p99_ms {:.0}",
            100.0 * m.low_load_slo_attainment,
            m.low_load_ttft_p99_ms
        );
    }
    println!(
        "staleness of the shared view: p50 {:.0} ms, p99 {:.0} ms",
        r.staleness_p50_ms, r.staleness_p99_ms
    );
    println!(
        "Redis stopped for {:.0} s: {} of {} requests failed; tenant overshoot meanwhile {:.1}%; shared view resumed: {} ({:.0} ms after restart)",
        r.outage.seconds,
        r.outage.failed,
        r.outage.requests,
        100.0 * r.outage.tenant_overshoot,
        r.outage.resumed,
        r.outage.resumed_after_ms
    );
}

/// A `redis-server` on a loopback port, restartable on the same port.
struct Redis {
    port: u16,
    log: PathBuf,
    proc: Option<ProcGuard>,
}

impl Redis {
    fn start(work: &Path) -> Result<Redis, Error> {
        let mut r = Redis {
            port: free_port()?,
            log: work.join("redis.log"),
            proc: None,
        };
        r.spawn()?;
        Ok(r)
    }

    fn spawn(&mut self) -> Result<(), Error> {
        let mut c = Command::new("redis-server");
        c.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        let p = ProcGuard::start(c, &self.log).map_err(|e| {
            format!("fleet mode needs `redis-server` (Debian: apt-get install redis-server): {e}")
        })?;
        self.proc = Some(p);
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > end {
                return Err("redis-server did not come up".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Replicas {
    procs: Vec<ProcGuard>,
    urls: Vec<String>,
}

async fn start_replicas(
    bin: &Path,
    work: &Path,
    config: &str,
    n: usize,
    fleet: Option<(&Redis, u64, &str)>,
    client: &HttpClient,
) -> Result<Replicas, Error> {
    let mut procs = Vec::new();
    let mut urls = Vec::new();
    for i in 0..n {
        let mut text = config.to_string();
        if let Some((redis, iv, prefix)) = fleet {
            text += &format!(
                "\n[fleet]\nredis = \"redis://127.0.0.1:{}\"\nreplica = \"r{i}\"\nsync_interval_ms = {iv}\nkey_prefix = \"{prefix}\"\n",
                redis.port
            );
        }
        let path = work.join(format!("gateway-{i}.toml"));
        std::fs::write(&path, text)?;
        let port = free_port()?;
        let mut c = Command::new(bin);
        c.arg("--config")
            .arg(&path)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn");
        let log = work.join(format!(
            "gateway-{i}-{}.log",
            if fleet.is_some() {
                "fleet"
            } else {
                "independent"
            }
        ));
        procs.push(ProcGuard::start(c, &log)?);
        urls.push(format!("http://127.0.0.1:{port}"));
    }
    for (i, u) in urls.iter().enumerate() {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if get(client, &format!("{u}/health")).await.is_some() {
                break;
            }
            if Instant::now() > end || procs[i].exited() {
                return Err(format!(
                    "gateway replica {i} did not become ready:\n{}",
                    procs[i].log_tail(20)
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(Replicas { procs, urls })
}

async fn get(client: &HttpClient, url: &str) -> Option<String> {
    let req = hyper::Request::get(url)
        .body(Full::new(Bytes::new()))
        .ok()?;
    let r = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .ok()?
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    let b = r.into_body().collect().await.ok()?.to_bytes();
    Some(String::from_utf8_lossy(&b).into_owned())
}

/// The value of the sample `name{labels}` (labels as written, e.g. `node="n0"`), summed
/// when several match.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    let mut sum = 0.0;
    for l in text.lines() {
        let Some(rest) = l.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue;
        }
        if labels.iter().all(|x| rest.contains(x)) {
            if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
                if v.is_finite() {
                    sum += v;
                }
            }
        }
    }
    sum
}

async fn metrics_of(client: &HttpClient, urls: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for u in urls {
        out.push(
            get(client, &format!("{u}/metrics"))
                .await
                .unwrap_or_default(),
        );
    }
    out
}

/// One request's fate in a phase.
#[derive(Debug, Clone)]
struct Rec {
    at_s: f64,
    status: u16,
    ok: bool,
    ttft_ms: Option<f64>,
    e2e_ms: f64,
}

fn prompt(i: u64) -> String {
    let mut s = format!("request {i}: ");
    while s.len() < PROMPT_BYTES {
        s.push_str("the quick brown fox jumps over the lazy dog ");
    }
    s.truncate(PROMPT_BYTES);
    s
}

/// Tokens the gateway charges a request: prompt bytes / 4 + max_tokens.
const COST: f64 = (PROMPT_BYTES / 4) as f64 + MAX_TOKENS as f64;

/// Open loop: Poisson arrivals at `rps` for `dur`, round-robin over `urls`.
async fn open_loop(
    client: &HttpClient,
    urls: &[String],
    rps: f64,
    dur: Duration,
    tenant: Option<u32>,
    stream: bool,
    seed: u64,
) -> Vec<Rec> {
    let start = Instant::now();
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = 0.0f64;
    let mut tasks = Vec::new();
    let mut i = 0u64;
    while next < dur.as_secs_f64() {
        let at = start + Duration::from_secs_f64(next);
        tokio::time::sleep_until(at.into()).await;
        let url = format!("{}/v1/chat/completions", urls[i as usize % urls.len()]);
        let body = serde_json::json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": prompt(i)}],
            "max_tokens": MAX_TOKENS,
            "stream": stream,
        })
        .to_string();
        let mut headers = Vec::new();
        if let Some(t) = tenant {
            headers.push(("x-switchyard-tenant", t.to_string()));
        }
        let c = client.clone();
        let at_s = next;
        tasks.push(tokio::spawn(async move {
            let o = loadgen::send(&c, &url, body, &headers, Duration::from_secs(30), stream).await;
            Rec {
                at_s,
                status: o.status,
                ok: o.error.is_none() && o.status == 200,
                ttft_ms: o.ttft_ms,
                e2e_ms: o.e2e_ms,
            }
        }));
        i += 1;
        // xorshift64, then an exponential gap.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let u = ((rng >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        next += -u.ln() / rps;
    }
    let mut out = Vec::new();
    for t in tasks {
        if let Ok(r) = t.await {
            out.push(r);
        }
    }
    out
}

/// Samples the servers' running + waiting requests per node every 100 ms until `stop`.
async fn sample_balance(servers: Arc<ServerSet>, stop: Arc<std::sync::atomic::AtomicBool>) -> f64 {
    let mut cvs = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let v: Vec<f64> = servers
            .stats()
            .values()
            .map(|s| (s.running + s.waiting) as f64)
            .collect();
        let mean = v.iter().sum::<f64>() / v.len().max(1) as f64;
        if mean > 0.0 {
            let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64;
            cvs.push(var.sqrt() / mean);
        }
    }
    if cvs.is_empty() {
        0.0
    } else {
        cvs.iter().sum::<f64>() / cvs.len() as f64
    }
}

fn overshoot(recs: &[Rec], secs: f64) -> (f64, f64, f64) {
    let admitted = recs.iter().filter(|r| r.ok).count() as f64 * COST;
    let budget = TENANT_RATE * secs + TENANT_RATE * TENANT_BURST_S;
    (
        ((admitted - budget) / (TENANT_RATE * secs)).max(0.0),
        admitted,
        budget,
    )
}

fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    loadgen::quantile(&mut v, q)
}

#[allow(clippy::too_many_arguments)] // one call site per mode; a struct would only rename them
async fn run_mode(
    args: &FleetArgs,
    ph: &Phases,
    bin: &Path,
    work: &Path,
    config: &str,
    servers: Arc<ServerSet>,
    redis: Option<&mut Redis>,
    client: &HttpClient,
    report: &mut Report,
) -> Result<ModeFigures, Error> {
    let fleet = redis.is_some();
    let prefix = format!("scenario-{}", std::process::id());
    let reps = start_replicas(
        bin,
        work,
        config,
        args.replicas,
        redis
            .as_deref()
            .map(|r| (r, args.sync_interval_ms, prefix.as_str())),
        client,
    )
    .await?;
    let name = if fleet { "fleet" } else { "independent" };
    let mut m = ModeFigures::default();

    // 1. The limited tenant floods at three times its cluster-wide rate.
    eprintln!("[{name}] tenant limit: {} s", ph.tenant_s);
    let rps = 3.0 * TENANT_RATE / COST;
    let recs = open_loop(
        client,
        &reps.urls,
        rps,
        Duration::from_secs_f64(ph.tenant_s),
        Some(1),
        false,
        1,
    )
    .await;
    (
        m.tenant_overshoot,
        m.tenant_admitted_tokens,
        m.tenant_budget_tokens,
    ) = overshoot(&recs, ph.tenant_s);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 2a. Low load: SLO attainment and TTFT, where sharing should cost nothing.
    eprintln!("[{name}] low load: {} rps for {} s", ph.low_rps, ph.low_s);
    let recs = open_loop(
        client,
        &reps.urls,
        ph.low_rps,
        Duration::from_secs_f64(ph.low_s),
        None,
        true,
        6,
    )
    .await;
    m.low_load_slo_attainment = recs.iter().filter(|r| r.ok && r.e2e_ms <= SLO_MS).count() as f64
        / recs.len().max(1) as f64;
    m.low_load_ttft_p99_ms = quantile(
        recs.iter()
            .filter(|r| r.ok)
            .filter_map(|r| r.ttft_ms)
            .collect(),
        0.99,
    );
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 2b. Load: balance, SLO attainment, TTFT.
    eprintln!("[{name}] load: {} rps for {} s", ph.load_rps, ph.load_s);
    servers.reset();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn(sample_balance(servers.clone(), stop.clone()));
    let recs = open_loop(
        client,
        &reps.urls,
        ph.load_rps,
        Duration::from_secs_f64(ph.load_s),
        None,
        true,
        2,
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    m.balance_deviation = sampler.await.unwrap_or(0.0);
    m.load_requests = recs.len();
    m.load_errors = recs.iter().filter(|r| !r.ok).count();
    m.slo_attainment = recs.iter().filter(|r| r.ok && r.e2e_ms <= SLO_MS).count() as f64
        / recs.len().max(1) as f64;
    let ttft: Vec<f64> = recs
        .iter()
        .filter(|r| r.ok)
        .filter_map(|r| r.ttft_ms)
        .collect();
    m.ttft_p50_ms = quantile(ttft.clone(), 0.5);
    m.ttft_p99_ms = quantile(ttft, 0.99);
    if fleet {
        let texts = metrics_of(client, &reps.urls).await;
        let mut p50s: Vec<f64> = texts
            .iter()
            .map(|t| 1e3 * metric(t, "switchyard_fleet_staleness_p50_seconds", &[]))
            .collect();
        report.staleness_p50_ms = quantile(std::mem::take(&mut p50s), 0.5);
        report.staleness_p99_ms = texts
            .iter()
            .map(|t| 1e3 * metric(t, "switchyard_fleet_staleness_p99_seconds", &[]))
            .fold(0.0, f64::max);
    }

    // 3. A node goes hard down under load.
    eprintln!("[{name}] node n0 hard down: {} s", ph.down_s);
    // Attempts on n0 that did not finish as a task there: leases taken on it less the
    // tasks it finished (any outcome) and those still in flight, summed over replicas.
    let failed_on = |texts: &[String]| -> f64 {
        texts
            .iter()
            .map(|t| {
                let n0 = ["node=\"n0\""];
                metric(t, "switchyard_node_leases_total", &n0)
                    - metric(t, "switchyard_node_tasks_total", &n0)
                    - metric(t, "switchyard_node_in_flight", &n0)
            })
            .sum()
    };
    let urls = reps.urls.clone();
    let c = client.clone();
    let rps = ph.load_rps / 2.0;
    let dur = Duration::from_secs_f64(ph.down_s + 1.0);
    let load = tokio::spawn(async move { open_loop(&c, &urls, rps, dur, None, true, 3).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Requests in flight on n0 when it goes down fail with it: sent before it was down,
    // they are not counted.
    let texts = metrics_of(client, &reps.urls).await;
    let before = failed_on(&texts);
    let in_flight: f64 = texts
        .iter()
        .map(|t| metric(t, "switchyard_node_in_flight", &["node=\"n0\""]))
        .sum();
    servers.set_fault(
        "n0",
        Fault {
            down: true,
            ..Fault::default()
        },
    );
    let _ = load.await;
    let texts = metrics_of(client, &reps.urls).await;
    let after = failed_on(&texts);
    m.requests_to_down_node = (after - before - in_flight).max(0.0) as u64;
    servers.set_fault("n0", Fault::default());

    // 4. Fleet mode only: Redis stopped under load, then restarted.
    if let Some(redis) = redis {
        eprintln!("[{name}] Redis stopped for {} s", ph.outage_s);
        let (urls, c) = (reps.urls.clone(), client.clone());
        let total = Duration::from_secs_f64(ph.outage_s + 5.0);
        let rps = ph.load_rps / 3.0;
        let load =
            tokio::spawn(async move { open_loop(&c, &urls, rps, total, None, true, 4).await });
        let (urls, c) = (reps.urls.clone(), client.clone());
        let trps = 2.0 * TENANT_RATE / COST;
        let tenant =
            tokio::spawn(async move { open_loop(&c, &urls, trps, total, Some(1), false, 5).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        redis.stop();
        let down_at = 1.0;
        tokio::time::sleep(Duration::from_secs_f64(ph.outage_s)).await;
        redis.spawn()?;
        let up_at = Instant::now();
        let mut resumed = false;
        while up_at.elapsed() < Duration::from_secs(10) {
            let texts = metrics_of(client, &reps.urls).await;
            if texts
                .iter()
                .all(|t| t.contains("switchyard_fleet_local_fallback 0"))
            {
                resumed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let resumed_after = up_at.elapsed().as_secs_f64() * 1e3;
        let recs = load.await.unwrap_or_default();
        let trecs = tenant.await.unwrap_or_default();
        let window = |r: &&Rec| r.at_s >= down_at && r.at_s <= down_at + ph.outage_s + 3.0;
        let during: Vec<&Rec> = recs.iter().filter(window).collect();
        let t_during: Vec<Rec> = trecs
            .iter()
            .filter(|r| r.at_s >= down_at + 0.5 && r.at_s <= down_at + ph.outage_s)
            .cloned()
            .collect();
        report.outage = Outage {
            seconds: ph.outage_s,
            requests: during.len(),
            failed: during.iter().filter(|r| !r.ok).count(),
            tenant_overshoot: overshoot(&t_during, ph.outage_s - 0.5).0,
            resumed,
            resumed_after_ms: resumed_after,
        };
        report.redis_outage_failed_requests = report.outage.failed;
        let statuses: BTreeMap<u16, usize> = during.iter().fold(BTreeMap::new(), |mut m, r| {
            *m.entry(r.status).or_default() += 1;
            m
        });
        eprintln!("[{name}] outage statuses: {statuses:?}");
    }
    for mut p in reps.procs {
        p.stop();
    }
    // The down node's ejection must not carry into the next mode: the servers are reset.
    servers.reset();
    Ok(m)
}

async fn scenario(
    args: &FleetArgs,
    ph: &Phases,
    bin: &Path,
    work: &Path,
    config: &str,
    servers: Arc<ServerSet>,
) -> Result<Report, Error> {
    let client = loadgen::client(256);
    let mut report = Report {
        replicas: args.replicas,
        sync_interval_ms: args.sync_interval_ms,
        quick: args.quick,
        ..Report::default()
    };
    let mut redis = Redis::start(work)?;
    report.fleet = run_mode(
        args,
        ph,
        bin,
        work,
        config,
        servers.clone(),
        Some(&mut redis),
        &client,
        &mut report,
    )
    .await?;
    redis.stop();
    report.independent = run_mode(
        args,
        ph,
        bin,
        work,
        config,
        servers,
        None,
        &client,
        &mut report,
    )
    .await?;
    Ok(report)
}
