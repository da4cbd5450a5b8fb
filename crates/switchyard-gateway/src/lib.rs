//! # switchyard-gateway
//!
//! An OpenAI-compatible HTTP/1.1 gateway on the switchyard router: each completion request
//! becomes a [`switchyard::Task`] routed through the per-core [`switchyard::Dispatcher`], then
//! proxied to the chosen node's model server, failed over before the first byte reaches the
//! client, and streamed through chunk by chunk after it.
//!
//! The library part is a [`Gateway`] (the router, dispatcher, upstream pool and fleet table),
//! its tower [`GatewayService`] (every route of the binary) and [`SwitchyardLayer`] (the
//! OpenAI routes in front of a service of one's own); the `switchyard-gateway` binary serves
//! the service with [`Gateway::serve`]. `docs/gateway.md` describes the request path, the
//! headers, the `[gateway]` keys, the failure classes and the metrics.
//!
//! **Fleet mode** (a `[fleet]` table; `docs/fleet.md`): replicas share tenant budgets, per-node
//! load and health verdicts through Redis, on a control task started by
//! [`Gateway::start_fleet`]; requests never wait on the network.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use switchyard_gateway::Gateway;
//! let gw = Gateway::from_file("gateway.toml".as_ref())?;
//! let listener = tokio::net::TcpListener::bind(gw.settings().listen.as_str()).await?;
//! let _reloader = gw.watch_config();
//! gw.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod body;
mod error;
mod fleet;
mod gateway;
mod metrics;
mod proxy;
mod relay;
mod request;
mod service;
mod settings;
mod sse;

pub use body::{BoxError, GatewayBody};
pub use fleet::{FleetMode, FleetSettings, FleetStatus};
pub use gateway::{Gateway, GatewayError};
pub use request::{NODE_HEADER, PRIORITY_HEADER, SLO_HEADER, TENANT_HEADER};
pub use service::{GatewayService, Switchyard, SwitchyardLayer};
pub use settings::GatewaySettings;

pub(crate) use gateway::Shared;
