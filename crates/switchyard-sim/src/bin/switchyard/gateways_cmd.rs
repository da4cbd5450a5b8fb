//! `gateways`: switchyard's gateway, vllm-router and SGLang's gateway side by side in front
//! of the same simulated servers.
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use switchyard_sim::gateways::{self, CompareOptions, Gateway, TraceRun};

use crate::Error;

/// The fleet compared on by default: six loopback servers of one model.
const DEFAULT_CONFIG: &str = include_str!("../../../../switchyard-gateway/examples/gateway.toml");

/// Default arrival-rate multipliers, chosen so that the simulated fleet is busy without
/// being swamped (see docs/serve.md).
pub const DEFAULT_LOADS: [(&str, f64); 2] = [("azure", 45.0), ("mooncake", 3.0)];

/// Options of `gateways`.
#[derive(Args, Debug, Clone)]
pub struct GatewaysArgs {
    /// A short run for CI: the first 600 Azure requests and the last 150 Mooncake ones
    /// (where prefixes repeat most), at speed 4, with shorter overhead loops.
    #[arg(long)]
    pub quick: bool,
    /// Also write the comparison as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Fleet config (default: the gateway crate's examples/gateway.toml, built in).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Gateways to compare, comma-separated or repeated (default: switchyard,
    /// vllm-router/power_of_two, vllm-router/cache_aware, sglang-router/cache_aware,
    /// sglang-router/power_of_two).
    #[arg(long = "gateway", value_delimiter = ',')]
    pub gateways: Vec<String>,
    /// Traces to replay, comma-separated (bundled names or files; default azure,mooncake).
    #[arg(long, value_delimiter = ',')]
    pub traces: Vec<PathBuf>,
    /// Arrival-rate multiplier for every trace (default: azure 45, mooncake 3, others 1).
    #[arg(long)]
    pub load: Option<f64>,
    /// Time compression of servers and load alike (default 2; 4 with --quick).
    #[arg(long, value_name = "X")]
    pub speed: Option<f64>,
    /// Replay at most N requests of each trace (after the quick slice, if any).
    #[arg(long, value_name = "N")]
    pub max_requests: Option<usize>,
    /// Virtual environment of the peers (default: peers-venv in the build's target
    /// directory); created and filled with pip when they are missing.
    #[arg(long, value_name = "DIR")]
    pub venv: Option<PathBuf>,
    /// Do not install missing peers (skip them instead).
    #[arg(long)]
    pub no_install: bool,
    /// Seed of the synthesised priorities and tenants.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Every replayed request ends after this many seconds at most.
    #[arg(long, default_value_t = 120.0, value_name = "S")]
    pub timeout_s: f64,
    /// What to measure, comma-separated: `traces` (the replays), `overhead` (zero-latency
    /// loops), `kill` (a server killed mid-replay). Default: all three.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub scenarios: Vec<String>,
    /// Rows of the first trace replayed in the kill scenario (default 1500; 300 with --quick).
    #[arg(long, value_name = "N")]
    pub kill_requests: Option<usize>,
}

/// The build's target directory: `CARGO_TARGET_DIR`, else two levels above this binary.
fn target_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(d));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.to_path_buf())
}

fn gateway_bin() -> Option<PathBuf> {
    if let Some(b) = std::env::var_os("SWITCHYARD_GATEWAY_BIN") {
        return Some(PathBuf::from(b));
    }
    let exe = std::env::current_exe().ok()?;
    let b = exe.parent()?.join("switchyard-gateway");
    b.exists().then_some(b)
}

pub fn run(args: &GatewaysArgs) -> Result<(), Error> {
    if !(args.timeout_s.is_finite() && args.timeout_s > 0.0) {
        return Err("--timeout-s must be a positive number".into());
    }
    let config_text = match &args.config {
        Some(p) => {
            std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?
        }
        None => DEFAULT_CONFIG.to_string(),
    };
    let gws = if args.gateways.is_empty() {
        Gateway::all()
    } else {
        args.gateways
            .iter()
            .map(|g| {
                Gateway::parse(g.trim()).ok_or_else(|| {
                    format!(
                        "unknown gateway `{g}` (switchyard, vllm-router/POLICY, sglang-router/POLICY)"
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    let names: Vec<PathBuf> = if args.traces.is_empty() {
        vec!["azure".into(), "mooncake".into()]
    } else {
        args.traces.clone()
    };
    let mut traces = Vec::new();
    for t in &names {
        let (_, rows) = switchyard_sim::open_trace(Some(t))?;
        let short = t.display().to_string();
        let load = args.load.unwrap_or_else(|| {
            DEFAULT_LOADS
                .iter()
                .find(|(n, _)| *n == short)
                .map_or(1.0, |(_, l)| *l)
        });
        let mut rows = if args.quick {
            if short == "mooncake" {
                rows[rows.len().saturating_sub(150)..].to_vec()
            } else {
                rows[..rows.len().min(600)].to_vec()
            }
        } else {
            rows
        };
        if let Some(n) = args.max_requests {
            rows.truncate(n);
        }
        traces.push(TraceRun {
            name: short,
            rows,
            load,
        });
    }
    let venv = match &args.venv {
        Some(v) => v.clone(),
        None => target_dir()
            .ok_or("cannot tell the target directory: give --venv")?
            .join("peers-venv"),
    };
    let mut scen = [("traces", true), ("overhead", true), ("kill", true)];
    if !args.scenarios.is_empty() {
        for (_, on) in scen.iter_mut() {
            *on = false;
        }
        for want in &args.scenarios {
            let Some((_, on)) = scen.iter_mut().find(|(n, _)| *n == want.trim()) else {
                return Err(format!("unknown scenario `{want}` (traces, overhead, kill)").into());
            };
            *on = true;
        }
    }
    let work_dir = std::env::temp_dir().join(format!("switchyard-gateways-{}", std::process::id()));
    let opts = CompareOptions {
        config_text,
        traces,
        speed: args.speed.unwrap_or(if args.quick { 4.0 } else { 2.0 }),
        gateways: gws,
        switchyard_bin: gateway_bin(),
        venv,
        install: !args.no_install,
        work_dir: work_dir.clone(),
        overhead_requests: if args.quick { 2000 } else { 20_000 },
        overhead_concurrency: 8,
        max_rps_concurrency: 64,
        max_rps_time: Duration::from_secs(if args.quick { 3 } else { 10 }),
        seed: args.seed,
        timeout: Duration::from_secs_f64(args.timeout_s),
        run_traces: scen[0].1,
        run_overhead: scen[1].1,
        fixed_requests: if args.quick { 2000 } else { 10_000 },
        fixed_rps: 1000.0,
        kill_requests: if scen[2].1 {
            args.kill_requests
                .unwrap_or(if args.quick { 300 } else { 1500 })
        } else {
            0
        },
    };
    // Interrupted: the guards will not drop, so kill what was started from here.
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                let Ok(mut term) = signal(SignalKind::terminate()) else {
                    return;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
        });
        gateways::kill_all_started();
        eprintln!("gateways: interrupted; every gateway started was killed");
        std::process::exit(130);
    });
    let result = gateways::run(&opts);
    let keep_logs = result.is_err();
    let c = result?;
    println!(
        "switchyard gateways: speed x{}, {}",
        opts.speed,
        opts.traces
            .iter()
            .map(|t| format!("{} ({} requests, load x{})", t.name, t.rows.len(), t.load))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "direct to the servers (zero latency, {} concurrent): p50 {:.0} µs, p99 {:.0} µs, {:.0} req/s",
        opts.overhead_concurrency, c.direct.p50_us, c.direct.p99_us, c.direct.rps
    );
    print!("{}", gateways::table(&c));
    for (name, g) in &c.gateways {
        println!("{name}: {}", g.command);
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&c)?)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if !keep_logs && c.skipped.is_empty() {
        let _ = std::fs::remove_dir_all(&work_dir);
    } else {
        eprintln!("gateways: logs kept in {}", work_dir.display());
    }
    Ok(())
}
