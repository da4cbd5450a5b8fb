//! `switchyard compare`: replay a trace in virtual time through the discrete-event simulator
//! under several routing policies (the real router among them) and compare them.
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use switchyard::sim::{compare, load_trace, SimConfig, Workload, POLICY_NAMES};

type Error = Box<dyn std::error::Error>;

/// Options of `compare`.
#[derive(Args, Debug, Clone)]
pub struct CompareArgs {
    /// CSV trace `arrival_ms,input_tokens,output_tokens[,hash_ids]` (default: the bundled
    /// Azure 2023 code trace).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Scale the arrival rate (2 = arrival times halved).
    #[arg(long, default_value_t = 1.0)]
    pub load: f64,
    /// Comma-separated policies: round_robin, random, least_in_flight, p2c_peak_ewma,
    /// cache_aware, switchyard (default: all).
    #[arg(long, value_delimiter = ',')]
    pub policy: Vec<String>,
    /// Seed for synthesised task attributes and every policy's randomness.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Also write the comparison as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Capability every task requires besides long-context.
    #[arg(long, default_value = "code")]
    pub base_capability: String,
    /// TOML fleet configuration (see `examples/fleet.toml`; default: the built-in fleet).
    #[arg(long)]
    pub config: Option<PathBuf>,
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
}

pub fn run(args: &CompareArgs) -> Result<(), Error> {
    let policies: Vec<&str> = if args.policy.is_empty() {
        POLICY_NAMES.to_vec()
    } else {
        args.policy.iter().map(|p| p.trim()).collect()
    };
    if let Some(bad) = policies.iter().find(|p| !POLICY_NAMES.contains(p)) {
        return Err(switchyard::sim::SimError::UnknownPolicy(bad.to_string()).into());
    }
    let cfg = SimConfig {
        load: args.load,
        seed: args.seed,
        base_capability: args.base_capability.clone(),
        prefix_cache: !args.no_prefix_cache,
        kv_admission: !args.no_kv_admission,
        slo_in_task: !args.no_slo_constraint,
    };
    if !(cfg.load.is_finite() && cfg.load > 0.0) {
        return Err(switchyard::sim::SimError::InvalidLoad(cfg.load).into());
    }
    let path = args.trace.clone().unwrap_or_else(crate::default_trace);
    let rows = load_trace(&path)?;
    let name = path.display().to_string();
    let started = Instant::now();
    let workload = Workload::new(
        name.clone(),
        &rows,
        crate::fleet(args.config.as_deref())?,
        &cfg,
    )?;
    let report = compare(&workload, &policies, &cfg)?;
    let wall = started.elapsed();
    let span = workload.tasks.last().map_or(0, |t| t.arrival_ns) as f64 / 1e9;
    println!(
        "switchyard compare: {name}: {} requests over {span:.0} s of virtual arrivals (load x{}), seed {}, \
         prefix cache {}, KV admission {}, SLO given to the router {}",
        workload.tasks.len(),
        cfg.load,
        cfg.seed,
        if cfg.prefix_cache { "on" } else { "off" },
        if cfg.kv_admission { "on" } else { "off" },
        if cfg.slo_in_task { "yes" } else { "no" },
    );
    println!(
        "fleet: {} nodes; latencies in virtual ms, decision latency in real ns",
        workload.fleet.nodes.len()
    );
    print!("{}", report.table());
    println!(
        "simulated {} policies in {:.2} s of wall time",
        policies.len(),
        wall.as_secs_f64()
    );
    if let Some(out) = &args.json {
        std::fs::write(out, report.to_json())
            .map_err(|e| format!("cannot write {}: {e}", out.display()))?;
        println!("wrote {}", out.display());
    }
    Ok(())
}
