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

mod allocator;
mod balance;
mod capability;
mod clock;
#[cfg(feature = "config")]
pub mod config;
mod control;
mod dispatcher;
mod error;
mod failover;
pub mod fairness;
mod health;
mod metrics;
mod model;
mod node;
pub mod prometheus;
mod recovery;
mod router;
mod routing;
mod scoring;
mod sync;
mod tenant;

pub use allocator::{ResourceAllocator, ResourceMetrics};
pub use balance::{
    ClassAction, LoadAdjustment, LoadBalancer, LoadStrategy, Placement, REBALANCE_THRESHOLD,
    SPIKE_ADMIT_BELOW, SPIKE_SHED_LOW_FROM, SPIKE_SHED_NORMAL_FROM,
};
pub use capability::{CapSet, CapabilityRegistry, MAX_CAPABILITIES};
pub use clock::{Clock, ManualClock, SystemClock};
#[cfg(feature = "config")]
pub use config::{Config, ConfigFileError};
pub use control::{TickReport, MAX_NODES};
pub use dispatcher::{Backend, Completion, Dispatcher, DispatcherBuilder, NoBackend, Ticket};
pub use error::{AdjustError, BuildError, ConfigError, RouteError, SubmitError};
pub use failover::{
    FailoverError, FailoverReason, FailoverResult, HealthAwareRouting, HealthIncident,
    IncidentKind, Retry, RetryPolicy, RouteAdjustment, SystemHealth, MAX_ATTEMPTS,
};
pub use fairness::{token_work, FairQueue, Taken};
pub use health::HealthPolicy;
pub use metrics::{balance_deviation, LatencySummary, NodeMetrics, RoutingMetrics};
pub use model::{
    AllocationPriority, AllocationResult, BalanceMetrics, CapabilityAwareRoute, DegradationAction,
    DegradationCondition, DegradationKind, ErrorKind, ErrorRecovery, HealthAwareRoute,
    HealthStatus, LoadDistribution, ModelChain, NodeHealth, NodeId, Outcome, PerformanceMetrics,
    Priority, RecoveryAction, RecoveryKind, RecoveryStatus, ResourceConstraints, ResourceCost,
    ResourceMap, ResourceUtilization, RouteChoice, RouteConstraints, RouteId, RouteOptions,
    Severity, Task, TaskAllocation, TenantId, MAX_ALTERNATIVES, MAX_STAGES,
};
pub use node::{ChainSpec, NodeSpec, MAX_CONCURRENCY, MAX_LEDGER_24};
pub use recovery::{
    BalanceDisruption, Recovery, RecoveryId, ResourceIncident, DEFAULT_BALANCE_TARGET,
    DEFAULT_BALANCE_THRESHOLD, DEFAULT_EXHAUSTION_THRESHOLD, DEFAULT_RECOVERY_TIMEOUT_MS,
    RECOVERY_LOG_CAPACITY,
};
pub use router::{RouteReader, Router, RouterBuilder, RoutingEngine};
pub use routing::{Headroom, Lease, RoutingTable, ScoringWeights};
pub use scoring::{
    CapabilityAwareRouter, CapabilityScores, HealthWindow, HistoricalData, MAX_QUALITY_FACTOR,
    MIN_HISTORY_WINDOWS, MIN_QUALITY_FACTOR,
};
pub use tenant::MAX_TENANTS;

// The README's example is compiled and run as a doctest, so it stays true to the code.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
