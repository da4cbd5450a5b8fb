//! The switchyard command line: `simulate` (the default) replays a trace through a real
//! dispatcher with simulated backends; `bench` measures the hot path.
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod bench;
mod compare;
mod faults;
mod replay;

#[cfg(not(miri))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A lock-free task router for AI inference gateways.
#[derive(Parser, Debug)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    sim: SimArgs,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Replay a request trace through a real dispatcher with simulated backends (default).
    Simulate(SimArgs),
    /// Measure routing and dispatch on this machine.
    Bench(BenchArgs),
    /// Compare routing policies on a trace in virtual time (discrete-event simulation).
    Compare(compare::CompareArgs),
}

/// Options of `simulate`.
#[derive(Args, Debug, Clone)]
pub struct SimArgs {
    /// CSV trace `arrival_ms,input_tokens,output_tokens[,hash_ids]` (default: the bundled
    /// Azure 2023 code trace).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Scale the arrival rate (2 = twice as many requests per second).
    #[arg(long, default_value_t = 1.0)]
    pub load: f64,
    /// Compress time: 200 replays 200 trace seconds per real second.
    #[arg(long, default_value_t = 200.0)]
    pub speed: f64,
    /// Dispatcher worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Seed for synthesised task attributes and the pickers.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Capability every task requires besides long-context (`code` for the Azure code
    /// trace, `chat` otherwise).
    #[arg(long, default_value = "code")]
    pub base_capability: String,
    /// TOML fleet configuration (see `examples/fleet.toml`; default: the built-in fleet).
    /// While the replay runs, a change to the file is validated and applied live.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Inject a fault (repeatable), in trace seconds: `down:NODE:START:END`,
    /// `flap:NODE:PERIOD:START:END`, `ratelimit:NODE:START:END`,
    /// `slow:NODE:FACTOR:START:END`, `outage:START:END`.
    #[arg(long)]
    pub fault: Vec<String>,
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
) -> Result<switchyard::sim::FleetConfig, switchyard::ConfigFileError> {
    Ok(match config {
        Some(p) => {
            let cfg = switchyard::Config::load(p)?;
            switchyard::sim::FleetConfig {
                capabilities: cfg.capabilities.clone(),
                nodes: cfg.node_specs(),
            }
        }
        None => switchyard::sim::default_fleet(),
    })
}

/// The bundled Azure trace: `data/` under the working directory, else under the crate.
pub fn default_trace() -> PathBuf {
    switchyard::sim::bundled_trace()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Some(Cmd::Bench(b)) => bench::run(&b),
        Some(Cmd::Simulate(s)) => replay::run(&s),
        Some(Cmd::Compare(c)) => compare::run(&c),
        None => replay::run(&cli.sim),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: error: {e}");
            ExitCode::FAILURE
        }
    }
}
