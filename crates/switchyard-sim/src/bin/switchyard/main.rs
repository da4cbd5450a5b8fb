//! The switchyard command line: `simulate` (the default) compares routing policies on a
//! trace in virtual time, or with `--speed`/`--fault` replays it in real time through a real
//! dispatcher with simulated backends; `bench` measures the hot path.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod bench;
mod compare;
mod faults;
mod fleet_cmd;
mod gateways_cmd;
mod loadgen_cmd;
mod plot;
mod progress;
mod replay;
mod serve_backends;
mod tower_p2c;

#[cfg(not(miri))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Error = Box<dyn std::error::Error>;

/// A lock-free task router for AI inference gateways.
#[derive(Parser, Debug)]
#[command(
    version,
    about,
    args_conflicts_with_subcommands = true,
    allow_negative_numbers = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    sim: SimArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Compare routing policies on a trace in virtual time (discrete-event simulation; the
    /// default command). With --speed or --fault, replay the trace in real time through a
    /// real dispatcher with simulated backends instead.
    #[command(alias = "compare")]
    Simulate(Box<SimArgs>),
    /// Measure routing and dispatch on this machine.
    Bench(BenchArgs),
    /// Serve every node of a config as a simulated OpenAI-compatible model server (the
    /// simulator's service-time model, streaming at the decode rate, vLLM-style metrics,
    /// injectable faults), until interrupted.
    ServeBackends(serve_backends::ServeArgs),
    /// Replay a trace's arrival times over HTTP (open loop, streaming) against an
    /// OpenAI-compatible endpoint and report SLO attainment, TTFT, end-to-end latency,
    /// goodput and errors.
    Loadgen(loadgen_cmd::LoadgenArgs),
    /// Compare gateways side by side in front of the same simulated servers: switchyard's,
    /// vllm-router and SGLang's (installed with pip into a virtual environment when
    /// missing), on the same traces at the same load, and the overhead each adds.
    Gateways(gateways_cmd::GatewaysArgs),
    /// Run three gateway replicas in front of the same simulated servers, with fleet mode
    /// (shared tenant budgets, load and health through a redis-server started here) and as
    /// independent replicas: tenant overshoot, balance, requests to a hard-down node, SLO
    /// attainment, TTFT p99, staleness of the shared view, a Redis outage.
    Fleet(fleet_cmd::FleetArgs),
}

/// The real-time replay's speed when `--fault` is given without `--speed`.
pub const DEFAULT_SPEED: f64 = 200.0;

/// Options of `simulate`.
#[derive(Args, Debug, Clone)]
pub struct SimArgs {
    /// CSV trace `arrival_ms,input_tokens,output_tokens[,hash_ids]` (default: the bundled
    /// Azure 2023 code trace).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// TOML fleet configuration (see `examples/fleet.toml`; default: the built-in fleet).
    /// During a real-time replay, a change to the file is validated and applied live.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Scale the arrival rate (2 = arrival times halved). Default in the virtual-time
    /// comparison: the load at which the compared policies' median measured busy share is
    /// 65 %, found by replaying them from the fluid model's estimate (see the header); in
    /// the real-time replay, 1.
    #[arg(long)]
    pub load: Option<f64>,
    /// Replay in real time through a real dispatcher, compressing time by X (200 replays
    /// 200 trace seconds per real second) instead of comparing policies in virtual time.
    #[arg(long, value_name = "X")]
    pub speed: Option<f64>,
    /// Inject a fault (repeatable; implies the real-time replay, at speed 200 unless
    /// --speed says otherwise), in trace seconds: `down:NODE:START:END`,
    /// `flap:NODE:PERIOD:START:END`, `ratelimit:NODE:START:END`,
    /// `slow:NODE:FACTOR:START:END`, `outage:START:END`.
    #[arg(long)]
    pub fault: Vec<String>,
    /// Policies to compare, comma-separated or repeated: round_robin, random,
    /// least_in_flight, p2c_peak_ewma, cache_aware, switchyard (default: all).
    #[arg(long, value_delimiter = ',')]
    pub policy: Vec<String>,
    /// Seed for synthesised task attributes and every policy's randomness.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also write the comparison as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write plots (SVG and PNG) to this directory: the end-to-end latency CDF per policy,
    /// per-node utilisation over time, shed and failed tasks over time.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Capability every task requires besides long-context (`code` for the Azure code
    /// trace, `chat` otherwise).
    #[arg(long, default_value = "code")]
    pub base_capability: String,
    /// Dispatcher worker threads of the real-time replay (default 2).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Model no KV prefix cache on the nodes.
    #[arg(long)]
    pub no_prefix_cache: bool,
    /// Let nodes run more tasks than their KV memory holds (by default a node starts a task
    /// only while its running tasks' tokens fit its KV memory, as vLLM's scheduler does).
    #[arg(long)]
    pub no_kv_admission: bool,
    /// Do not give the router each task's SLO as its `max_latency_ms` (SLO attainment is
    /// still measured against it).
    #[arg(long)]
    pub no_slo_constraint: bool,
    /// A load spike, `START:SECONDS:FACTOR` in virtual seconds (after `--load`): the
    /// arrival rate is multiplied by FACTOR for SECONDS from START (the trace's own requests,
    /// compressed), and a spike report follows the table: demand over completions, critical
    /// requests admitted and within their SLO, shed by class, utilisation during the spike,
    /// balance deviation before it.
    #[arg(long, value_name = "START:SECONDS:FACTOR")]
    pub spike: Option<String>,
    /// The gateway the policies run behind: `shared` (the default: every policy behind the
    /// same queue, strict priority, tenant fairness and SLO-hopeless shedding; a policy
    /// chooses among the capable nodes that can start the task now and the task waits at
    /// the gateway while there is none, so the comparison isolates routing) or `per-policy` (each as its system ships: the peers dispatch at once and
    /// nodes queue without bound; switchyard waits and sheds by its own admission).
    #[arg(long, value_enum)]
    pub gateway: Option<GatewayArg>,
}

/// `--gateway`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayArg {
    /// Every policy behind the same gateway model.
    Shared,
    /// Each policy's own admission behaviour.
    PerPolicy,
}

impl From<GatewayArg> for switchyard_sim::GatewayModel {
    fn from(g: GatewayArg) -> Self {
        match g {
            GatewayArg::Shared => switchyard_sim::GatewayModel::Shared,
            GatewayArg::PerPolicy => switchyard_sim::GatewayModel::PerPolicy,
        }
    }
}

impl SimArgs {
    /// Whether this is a real-time replay (`--speed` or `--fault`) rather than the
    /// virtual-time comparison.
    pub fn real_time(&self) -> bool {
        self.speed.is_some() || !self.fault.is_empty()
    }

    /// Refuses the options that the chosen mode would silently ignore.
    fn check_mode(&self) -> Result<(), Error> {
        let why =
            "(they apply to the virtual-time comparison, which runs without --speed and --fault)";
        if self.real_time() {
            let mut bad = Vec::new();
            if self.policy.iter().any(|p| p.trim() != "switchyard") {
                bad.push("--policy");
            }
            for (set, flag) in [
                (self.json.is_some(), "--json"),
                (self.out.is_some(), "--out"),
                (self.no_prefix_cache, "--no-prefix-cache"),
                (self.no_kv_admission, "--no-kv-admission"),
                (self.no_slo_constraint, "--no-slo-constraint"),
                (self.spike.is_some(), "--spike"),
                (self.gateway.is_some(), "--gateway"),
            ] {
                if set {
                    bad.push(flag);
                }
            }
            if !bad.is_empty() {
                return Err(format!(
                    "{} cannot be combined with --speed or --fault {why}",
                    bad.join(", ")
                )
                .into());
            }
        } else if self.workers.is_some() {
            return Err(
                "--workers applies to the real-time replay (give --speed or --fault)".into(),
            );
        }
        Ok(())
    }
}

/// Options of `bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Fewer iterations (a smoke run).
    #[arg(long)]
    pub quick: bool,
}

/// The fleet of `--config FILE`, or the built-in one.
pub fn fleet(
    config: Option<&std::path::Path>,
) -> Result<switchyard_sim::FleetConfig, switchyard::ConfigFileError> {
    Ok(match config {
        Some(p) => {
            let cfg = switchyard::Config::load(p)?;
            switchyard_sim::FleetConfig {
                weights: cfg.scoring_weights(),
                capabilities: cfg.capabilities.clone(),
                nodes: cfg.node_specs(),
            }
        }
        None => switchyard_sim::default_fleet(),
    })
}

/// `simulate`: the virtual-time comparison, or the real-time replay.
fn simulate(args: &SimArgs) -> Result<(), Error> {
    args.check_mode()?;
    if args.real_time() {
        replay::run(args)
    } else {
        compare::run(args)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Some(Cmd::Bench(b)) => bench::run(&b),
        Some(Cmd::ServeBackends(a)) => serve_backends::run(&a),
        Some(Cmd::Loadgen(a)) => loadgen_cmd::run(&a),
        Some(Cmd::Gateways(a)) => gateways_cmd::run(&a),
        Some(Cmd::Fleet(a)) => fleet_cmd::run(&a),
        Some(Cmd::Simulate(s)) => simulate(&s),
        None => simulate(&cli.sim),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: error: {e}");
            ExitCode::FAILURE
        }
    }
}
