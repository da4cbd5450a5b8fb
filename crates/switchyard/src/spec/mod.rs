//! The specification's interfaces, as thin adapters over the router.
//!
//! The specification this crate was built from names six interfaces; each lives here, with
//! its report types, implemented on [`Router`](crate::Router) or
//! [`RouteReader`](crate::RouteReader) over the parts that do the work
//! (`docs/spec-map.md` maps every method to the code):
//!
//! | interface | implemented on | does its work in |
//! | --- | --- | --- |
//! | [`RoutingEngine`] | `RouteReader`, `&Router` | routing (plan, reserve, validate) |
//! | [`ResourceAllocator`] | `RouteReader` | leases and their ledgers |
//! | [`LoadBalancer`] | `Router` | the control loop's weights and placement |
//! | [`CapabilityAwareRouter`] | `Router` | capability scores and quality factors |
//! | [`HealthAwareRouting`] | `Router` | health verdicts and incidents |
//! | [`ErrorRecovery`](crate::recovery::Recovery) | `Recovery` | failover, health and admission |
pub mod allocator;
pub mod balance;
pub mod engine;
pub mod health_aware;
pub mod scoring;

pub use allocator::{ResourceAllocator, ResourceMetrics};
pub use balance::{ClassAction, LoadAdjustment, LoadBalancer, LoadStrategy, Placement};
pub use engine::RoutingEngine;
pub use health_aware::{
    FailoverResult, HealthAwareRouting, HealthIncident, RouteAdjustment, SystemHealth,
};
pub use scoring::{CapabilityAwareRouter, CapabilityScores, HealthWindow, HistoricalData};

pub use crate::model::{
    AllocationPriority, AllocationResult, BalanceMetrics, CapabilityAwareRoute, DegradationAction,
    DegradationCondition, DegradationKind, ErrorKind, ErrorRecovery, HealthAwareRoute,
    LoadDistribution, PerformanceMetrics, RecoveryAction, RecoveryKind, RecoveryStatus,
    ResourceConstraints, ResourceCost, ResourceMap, ResourceUtilization, Severity, TaskAllocation,
};
