//! `serve-backends`: the simulated model servers of a config, until interrupted.
use std::path::PathBuf;

use clap::Args;
use switchyard_sim::serve::{self, Fault, ServeOptions};

use crate::Error;

/// Options of `serve-backends`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// TOML config whose nodes (each with a `url` and `models`) are served.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Compress time by X: every service time is divided by it.
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    pub speed: f64,
    /// Bind every node to an ephemeral loopback port instead of its `url`.
    #[arg(long)]
    pub ephemeral: bool,
    /// Write a copy of the config whose urls are the addresses actually bound.
    #[arg(long, value_name = "OUT")]
    pub write_config: Option<PathBuf>,
    /// Where the control port listens (default: an ephemeral loopback port, printed).
    #[arg(long, value_name = "ADDR")]
    pub control: Option<std::net::SocketAddr>,
    /// A fault in force from the start, `NODE:KIND[:ARG]` (repeatable): `down`,
    /// `slow:FACTOR`, `429[:RETRY_AFTER_S]`, `5xx[:STATUS]`, `disconnect[:TOKENS]`.
    #[arg(long, value_name = "NODE:KIND[:ARG]")]
    pub fault: Vec<String>,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
}

/// Parses `NODE:KIND[:ARG]`.
pub fn parse_fault(s: &str) -> Result<(String, Fault), String> {
    let (node, spec) = s
        .split_once(':')
        .ok_or_else(|| format!("fault `{s}` is not NODE:KIND[:ARG]"))?;
    Ok((node.to_string(), Fault::parse(spec)?))
}

pub fn run(args: &ServeArgs) -> Result<(), Error> {
    let cfg = switchyard::Config::load(&args.config)?;
    let faults = args
        .fault
        .iter()
        .map(|f| parse_fault(f))
        .collect::<Result<Vec<_>, _>>()?;
    let set = serve::spawn(
        &cfg,
        &ServeOptions {
            speed: args.speed,
            ephemeral: args.ephemeral,
            control: args.control,
            faults,
            workers: args.workers,
        },
    )?;
    if let Some(out) = &args.write_config {
        let text = std::fs::read_to_string(&args.config)?;
        let copy = serve::rewrite_urls(&text, &set.urls())?;
        std::fs::write(out, copy).map_err(|e| format!("cannot write {}: {e}", out.display()))?;
    }
    for (name, url) in set.urls() {
        println!("node {name} {url}");
    }
    println!("control http://{}", set.control_addr);
    println!("ready: {} servers at speed {}", set.addrs.len(), args.speed);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    set.handle().block_on(async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let mut term = signal(SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await?;
        Ok::<(), std::io::Error>(())
    })?;
    set.shutdown();
    Ok(())
}
