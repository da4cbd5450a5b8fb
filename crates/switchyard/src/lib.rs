//! # switchyard
//!
//! A lock-free, in-process task router for AI inference gateways.
//!
//! On every request a gateway hands switchyard a [`Task`]; switchyard picks the model backend
//! (or chain of backends) that should serve it, reserves what the task needs on that route,
//! hands it to the gateway's [`Backend`] with a [`Ticket`], and, when the ticket completes,
//! releases the reservation and learns from the outcome. Decisions read an atomically swapped
//! [`RoutingTable`] snapshot and per-node atomics: no locks, no allocation, no string hashing
//! on the hot path.
//!
//! ```
//! use switchyard::{NodeSpec, Router, Task};
//!
//! let router = Router::builder()
//!     .capabilities(["chat", "long-context"])
//!     .node(NodeSpec::new("h100-a").capabilities(["chat", "long-context"]).max_concurrency(64))
//!     .node(NodeSpec::new("l4-b").capabilities(["chat"]).max_concurrency(16))
//!     .build()?;
//! let needs = router.resolve(&["long-context"])?;
//! let task = Task::new(7, 30_000, 200).require(needs);
//!
//! let mut reader = router.reader(); // one per thread
//! let (routes, lease) = reader.route(&task)?; // plan + reserve
//! assert_eq!(router.snapshot().route_name(routes.primary().route.route), Some("h100-a"));
//! drop(lease); // released exactly once
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! See `docs/architecture.md` for the flow and the table of every atomic and its ordering.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![doc(test(attr(deny(warnings))))]

// Floors, bottom up (imports only point down; docs/architecture.md draws the plan):
// sync clock rng capability error · model metrics config · node tenant health retry ·
// lease routing · control router failover · dispatcher · spec recovery fairness prometheus.
mod capability;
mod clock;
#[cfg(feature = "config")]
pub mod config;
mod control;
pub mod dispatcher;
mod error;
mod failover;
pub mod fairness;
pub mod health;
mod lease;
pub mod metrics;
mod model;
mod node;
mod per;
pub mod prometheus;
pub mod recovery;
mod retry;
mod rng;
mod router;
mod routing;
pub mod spec;
mod sync;
mod tenant;

pub mod limits;

pub use capability::CapSet;
pub use clock::{Clock, ManualClock, SystemClock};
#[cfg(feature = "config")]
pub use config::{Config, ConfigFileError};
pub use control::TickReport;
pub use dispatcher::{Backend, Dispatcher, DispatcherBuilder};
pub use error::{AdjustError, BuildError, ConfigError, RouteError, SubmitError};
pub use failover::{FailoverError, FailoverReason, Retry};
pub use health::HealthPolicy;
pub use lease::ticket::{Completion, Ticket};
pub use lease::Lease;
pub use metrics::{LatencySummary, NodeMetrics, RoutingMetrics};
pub use model::{
    HealthStatus, ModelChain, NodeHealth, NodeId, Outcome, Prefix, Priority, RouteChoice,
    RouteConstraints, RouteId, RouteOptions, Task, TenantId, PREFIX_DEPTHS, PREFIX_LADDER,
};
pub use node::{ChainSpec, NodeSpec};
pub use per::{PerClass, PerOutcome};
pub use retry::RetryPolicy;
pub use router::{RouteReader, Router, RouterBuilder};
pub use routing::{Headroom, RoutingTable, ScoringWeights};

// The README's example is compiled and run as a doctest, so it stays true to the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
