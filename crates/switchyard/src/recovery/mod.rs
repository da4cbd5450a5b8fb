//! Error recovery: the seed's `ErrorRecovery`, with a log that tracks each recovery to its end.
//!
//! A [`Recovery`] handle answers three kinds of trouble with a [`RecoveryAction`] (what to do,
//! named numeric parameters, and an estimated probability that it works) and records an
//! [`ErrorRecovery`] entry for it. [`Recovery::settle`] re-checks every open entry against
//! the router's current state and completes it when its condition holds, or fails it once it
//! has been open longer than the timeout (default [`DEFAULT_RECOVERY_TIMEOUT_MS`]).
//!
//! Nothing here is on the hot path: each call reads the snapshot and the live counters once
//! and takes the log's lock briefly (never while calling into the router).
//!
//! # Routing failures ([`Recovery::handle_routing_failure`])
//! | error | action | parameters | probability | severity | done when |
//! | --- | --- | --- | --- | --- | --- |
//! | `Saturated` | `Retry` after the retry policy's base back-off | `backoff_ms`, `in_flight`, `completions_per_s` | `1 − exp(−backoff × completion rate)`: the chance at least one capable slot frees within the back-off if completions arrive as a Poisson stream at the observed rate (in flight / latency EWMA per node; optimistic: other waiting tasks compete for it) | medium | the task routes |
//! | `Saturated`, and no capable node could hold the task even idle | `Scale` | `needed_tokens`, `needed_memory_mb` | 0 | high | the task routes |
//! | `NoHealthyRoute` | `Failover`: traffic waits for (or the gateway falls back from) capable routes that the router probes back in on its own | `capable_routes`, `routes_out`, `probing_routes`, `backoff_ms` | the best measured success rate among the capable routes | critical | the task routes (a capable node serves or probes again) |
//! | `ConstraintsUnsatisfiable`, met by some capable route when idle | `Retry` once load drops | `backoff_ms`, `max_latency_ms`, `unloaded_latency_ms` | the idle route's headroom, `1 − unloaded/max_latency` (a heuristic: the more headroom, the more load it tolerates) | medium | the task routes |
//! | `ConstraintsUnsatisfiable`, met by none even idle | `Scale` (or relax the constraint) | the binding one: `max_latency_ms` + `best_latency_ms`, and/or `max_memory_mb` + `needed_memory_mb` | 0 | medium | the task routes |
//! | `NoCapableRoute` | `Scale` | `missing_capabilities`, `nodes_needed` | 0 | high | the task routes |
//! | `EmptyFleet` | `Scale` | `nodes_needed` | 0 | critical | the task routes |
//! | `StaleRoute` | `Retry` at once | `backoff_ms` = 0 | 1 if the task plans on the current snapshot, else 0 | low | the task routes |
//!
//! # Resource exhaustion ([`Recovery::mitigate_resource_exhaustion`])
//! A node at or above its incident's utilisation threshold (default 0.9) must shed
//! `shift_tasks = ⌈(u − target) × max_concurrency⌉` tasks' worth of load, where `target` is
//! the lower of the threshold and the fleet's mean utilisation. The other serving nodes have
//! `spare_tasks = Σ ⌊(threshold − uᵢ)⁺ × max_concurrencyᵢ⌋`. When the spare covers the shift,
//! the action is `Rebalance` (the load-aware pick already moves new tasks away; probability
//! 1); otherwise `Scale` with `nodes_needed = ⌈(shift − spare) / (mean max_concurrency ×
//! threshold)⌉` and probability `spare / shift`, the share the fleet absorbs until capacity
//! arrives. A node below its threshold needs nothing (a completed `Rebalance` with
//! `shift_tasks` 0). Done when the node is below the threshold or no longer in the fleet.
//!
//! # Balance ([`Recovery::restore_balance`])
//! A deviation (busiest utilisation over the mean, minus one) above the disruption's threshold
//! (default 0.5, as [`HealthAwareRouting`](crate::spec::HealthAwareRouting) uses) gets a `Rebalance`
//! towards its target (default 0.1, the seed's "load balance deviation < 10 %"), with
//! probability = the share of nodes serving (0 when fewer than two serve: nowhere to move
//! load). Done when the measured deviation is at or below the threshold (an idle fleet is
//! balanced).
//!
//! # Status
//! Entries for what the router does by itself (`Rebalance`, `Failover`) start `InProgress`;
//! entries that need the caller (`Retry`, `Scale`) start `Pending`; entries with nothing to
//! do start `Completed`. [`Recovery::mark`] sets any status by hand.
//!
//! [`RecoveryAction`]: crate::spec::RecoveryAction
//! [`ErrorRecovery`]: crate::spec::ErrorRecovery
mod handlers;
mod incident;
mod tracker;

pub use incident::{BalanceDisruption, ResourceIncident};
pub use tracker::Recovery;

/// How long a recovery may stay open before [`Recovery::settle`] fails it, ms.
pub const DEFAULT_RECOVERY_TIMEOUT_MS: u64 = 60_000;
/// Most entries the log keeps; past it, the oldest closed entry (else the oldest) goes.
pub const RECOVERY_LOG_CAPACITY: usize = 1024;
/// Default utilisation from which a node counts as exhausted.
pub const DEFAULT_EXHAUSTION_THRESHOLD: f64 = 0.9;
/// Default deviation above which balance is restored.
pub const DEFAULT_BALANCE_THRESHOLD: f64 = 0.5;
/// Default deviation a rebalance aims for.
pub const DEFAULT_BALANCE_TARGET: f64 = 0.1;

/// A recovery's identifier in its [`Recovery`] log: increasing, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecoveryId(pub u64);
