//! `switchyard-gateway --config FILE [--listen ADDR]`: the OpenAI-compatible gateway in front
//! of the model servers of a fleet file, hot-reloading it; SIGTERM or SIGINT drains and exits 0.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use switchyard_gateway::Gateway;

#[derive(Debug, Parser)]
#[command(name = "switchyard-gateway", version, about)]
struct Args {
    /// The fleet file (TOML): nodes with `url` and `models`, and a `[gateway]` table.
    #[arg(long)]
    config: PathBuf,
    /// Listen address; overrides `[gateway] listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
}

/// The shutdown signal: SIGTERM or SIGINT. The handlers are installed here, when it is
/// called, not when the returned future is first polled, so a signal that comes at any time
/// after start-up drains instead of killing the process.
fn signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        match handlers {
            (Some(mut term), Some(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (Some(mut one), None) | (None, Some(mut one)) => {
                one.recv().await;
            }
            (None, None) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown signal received");
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // The I/O thread count is a [gateway] key: read it before the runtime starts.
    let io_threads = match std::fs::read_to_string(&args.config) {
        Ok(text) => match switchyard_gateway::GatewaySettings::parse(
            &args.config.display().to_string(),
            &text,
        ) {
            Ok(s) => s.io_threads,
            Err(e) => {
                eprintln!("switchyard-gateway: {e}");
                return ExitCode::from(2);
            }
        },
        Err(e) => {
            eprintln!("switchyard-gateway: {}: {e}", args.config.display());
            return ExitCode::from(2);
        }
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if io_threads > 0 {
        rt.worker_threads(io_threads);
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchyard-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let gw = match Gateway::from_file(&args.config) {
            Ok(gw) => gw,
            Err(e) => {
                eprintln!("switchyard-gateway: {e}");
                return ExitCode::from(2);
            }
        };
        let addr = match args.listen {
            Some(a) => a,
            None => match gw.settings().listen.parse() {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("switchyard-gateway: bad listen address: {e}");
                    return ExitCode::from(2);
                }
            },
        };
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("switchyard-gateway: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        // The signal handlers go in before we report ready (see `signal`).
        let shutdown = signal();
        // Fleet mode: the shared health and load are loaded before we report ready.
        let _fleet = gw.start_fleet().await;
        let local = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        tracing::info!(
            listen = %local,
            models = ?gw.models(),
            "switchyard-gateway ready"
        );
        // One plain line on stdout for whoever started us: the address actually bound
        // (`--listen 127.0.0.1:0` picks a free port). /health answers 200 from now on.
        println!("switchyard-gateway listening on {local}");
        {
            use std::io::Write as _;
            let _ = std::io::stdout().flush();
        }
        let _watch = gw.watch_config();
        if let Err(e) = gw.serve(listener, shutdown).await {
            eprintln!("switchyard-gateway: {e}");
            return ExitCode::FAILURE;
        }
        tracing::info!("drained; exiting");
        ExitCode::SUCCESS
    })
}
