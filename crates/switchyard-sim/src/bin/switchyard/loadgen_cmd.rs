//! `loadgen`: an open-loop HTTP replay of a trace.
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use switchyard_sim::loadgen::{self, LoadOptions};

use crate::Error;

/// Options of `loadgen`.
#[derive(Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// Base url of the OpenAI-compatible endpoint (a gateway or one server).
    #[arg(long)]
    pub url: String,
    /// CSV trace, or a bundled trace's name (`azure`, `mooncake`; default `azure`).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Scale the arrival rate (2 = arrival times halved).
    #[arg(long, default_value_t = 1.0)]
    pub load: f64,
    /// Time compression, as given to `serve-backends --speed`: arrival times and SLOs are
    /// divided by it too.
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    pub speed: f64,
    /// The `model` of every request.
    #[arg(long, default_value = "llama-3.1-8b-instruct")]
    pub model: String,
    /// Skip the first N requests of the trace.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub skip: usize,
    /// Replay only the first N requests of the trace (after --skip).
    #[arg(long, value_name = "N")]
    pub max_requests: Option<usize>,
    /// Fleet the SLOs are computed for (5 × the unloaded time on its fastest node + 1 s;
    /// default: the built-in fleet).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seed of the synthesised priorities and tenants.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Every request ends after this many seconds at most.
    #[arg(long, default_value_t = 120.0, value_name = "S")]
    pub timeout_s: f64,
    /// Write the report, with every request's record, as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

pub fn run(args: &LoadgenArgs) -> Result<(), Error> {
    let (name, rows) = switchyard_sim::open_trace(args.trace.as_deref())?;
    if !(args.timeout_s.is_finite() && args.timeout_s > 0.0) {
        return Err("--timeout-s must be a positive number".into());
    }
    let opts = LoadOptions {
        url: args.url.clone(),
        load: args.load,
        speed: args.speed,
        model: args.model.clone(),
        skip: args.skip,
        max_requests: args.max_requests,
        seed: args.seed,
        timeout: Duration::from_secs_f64(args.timeout_s),
        fleet: crate::fleet(args.config.as_deref())?,
    };
    let report = loadgen::run(&opts, &rows)?;
    println!(
        "switchyard loadgen: {name} at load x{} speed x{} against {}",
        args.load, args.speed, args.url
    );
    println!("{}", report.summary());
    let by: Vec<String> = report
        .slo_by_priority
        .iter()
        .map(|(k, v)| format!("{k} {:.1} %", 100.0 * v))
        .collect();
    println!("SLO by class: {}", by.join(", "));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}
