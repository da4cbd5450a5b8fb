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
use std::collections::VecDeque;

use crate::error::RouteError;
use crate::metrics::balance_deviation;
use crate::model::{
    ErrorKind, ErrorRecovery, RecoveryAction, RecoveryKind, RecoveryStatus, RouteOptions, Severity,
    Task,
};
use crate::node::{fits0, fits1, Amounts};
use crate::router::Router;
use crate::routing::select;
use crate::routing::table::RoutingTable;
use crate::sync::{Arc, Mutex};

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

/// A node running short of capacity (the seed's `ResourceIncident`).
///
/// # Examples
/// ```
/// use switchyard::recovery::ResourceIncident;
/// let i = ResourceIncident::new("h100-a").threshold(0.8);
/// assert_eq!((i.node.as_str(), i.threshold), ("h100-a", 0.8));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceIncident {
    /// The node.
    pub node: String,
    /// Utilisation (0–1) at and above which it counts as exhausted; a value outside
    /// 0.05–1 is clamped, a NaN means the default.
    pub threshold: f64,
}

impl ResourceIncident {
    /// An incident on `node` at the default threshold ([`DEFAULT_EXHAUSTION_THRESHOLD`]).
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            threshold: DEFAULT_EXHAUSTION_THRESHOLD,
        }
    }

    /// Sets the threshold.
    pub fn threshold(mut self, t: f64) -> Self {
        self.threshold = t;
        self
    }
}

/// Load spread unevenly (the seed's `BalanceDisruption`).
///
/// # Examples
/// ```
/// use switchyard::{NodeSpec, Router};
/// use switchyard::recovery::BalanceDisruption;
/// let router = Router::builder().node(NodeSpec::new("a")).build()?;
/// let d = BalanceDisruption::measure(&router);
/// assert_eq!(d.deviation, 0.0); // idle
/// assert_eq!((d.threshold, d.target), (0.5, 0.1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BalanceDisruption {
    /// The observed deviation: busiest utilisation over the mean, minus one (see
    /// [`balance_deviation`]); a NaN or infinite value is measured again.
    pub deviation: f64,
    /// Deviation above which to act (default [`DEFAULT_BALANCE_THRESHOLD`]).
    pub threshold: f64,
    /// Deviation to aim for (default [`DEFAULT_BALANCE_TARGET`], at most the threshold).
    pub target: f64,
}

impl BalanceDisruption {
    /// A disruption of `deviation`, with the default threshold and target.
    pub fn new(deviation: f64) -> Self {
        Self {
            deviation,
            threshold: DEFAULT_BALANCE_THRESHOLD,
            target: DEFAULT_BALANCE_TARGET,
        }
    }

    /// The router's deviation now, over its current (not draining) nodes.
    pub fn measure(router: &Router) -> Self {
        Self::new(current_deviation(router))
    }

    /// Sets the threshold.
    pub fn threshold(mut self, t: f64) -> Self {
        self.threshold = t;
        self
    }

    /// Sets the target.
    pub fn target(mut self, t: f64) -> Self {
        self.target = t;
        self
    }
}

/// What `settle` checks for an open entry.
#[derive(Debug, Clone)]
enum Check {
    /// The task plans on the current snapshot.
    Routes(Task),
    /// The node is below the threshold, or gone.
    NodeBelow { node: String, threshold: f64 },
    /// The fleet's deviation is at or below the threshold.
    Balanced { threshold: f64 },
    /// Nothing to wait for.
    Nothing,
}

#[derive(Debug)]
struct Entry {
    id: RecoveryId,
    recovery: ErrorRecovery,
    check: Check,
    opened_ns: u64,
}

#[derive(Debug, Default)]
struct Log {
    next: u64,
    entries: VecDeque<Entry>,
}

fn is_open(s: RecoveryStatus) -> bool {
    matches!(s, RecoveryStatus::Pending | RecoveryStatus::InProgress)
}

/// The seed's `ErrorRecovery`: answers routing failures, resource exhaustion and imbalance
/// with a [`RecoveryAction`], and keeps a log of [`ErrorRecovery`] entries tracked to their
/// end. See the module docs of `recovery.rs` for every rule.
///
/// Clones share the log.
///
/// # Examples
/// ```
/// use std::sync::Arc;
/// use switchyard::{ManualClock, NodeSpec, RouteError, Router, Task};
/// use switchyard::recovery::Recovery;
/// use switchyard::spec::{RecoveryKind, RecoveryStatus};
/// let router = Router::builder()
///     .clock(Arc::new(ManualClock::new()))
///     .node(NodeSpec::new("a").max_concurrency(1))
///     .build()?;
/// let recovery = Recovery::new(router.clone());
/// let task = Task::new(1, 100, 10);
/// let (_, lease) = router.reader().route(&task)?;
/// let err = router.reader().route(&task).unwrap_err();
/// assert_eq!(err, RouteError::Saturated);
/// let action = recovery.handle_routing_failure(&err, &task);
/// assert_eq!(action.kind, RecoveryKind::Retry);
/// let id = recovery.last_id().unwrap();
/// drop(lease); // the slot frees
/// recovery.settle();
/// assert_eq!(recovery.get(id).unwrap().status, RecoveryStatus::Completed);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Recovery {
    router: Router,
    log: Arc<Mutex<Log>>,
    timeout_ns: u64,
}

impl Recovery {
    /// A recovery handle over `router`, with an empty log and the default timeout.
    pub fn new(router: Router) -> Self {
        Self {
            router,
            log: Arc::new(Mutex::new(Log::default())),
            timeout_ns: DEFAULT_RECOVERY_TIMEOUT_MS.saturating_mul(1_000_000),
        }
    }

    /// Sets how long an entry may stay open before [`settle`](Self::settle) fails it, ms
    /// (on the router's clock).
    pub fn timeout_ms(mut self, ms: u64) -> Self {
        self.timeout_ns = ms.saturating_mul(1_000_000);
        self
    }

    /// The router.
    pub fn router(&self) -> &Router {
        &self.router
    }

    fn log(&self) -> impl std::ops::DerefMut<Target = Log> + '_ {
        // Every update leaves the log consistent, so a poisoned lock is safe to recover.
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(
        &self,
        kind: ErrorKind,
        severity: Severity,
        action: &RecoveryAction,
        status: RecoveryStatus,
        check: Check,
    ) {
        let now = self.router.clock().now_ns();
        let mut log = self.log();
        if log.entries.len() >= RECOVERY_LOG_CAPACITY {
            match log.entries.iter().position(|e| !is_open(e.recovery.status)) {
                Some(i) => {
                    log.entries.remove(i);
                }
                None => {
                    log.entries.pop_front();
                }
            }
        }
        let id = RecoveryId(log.next);
        log.next += 1;
        log.entries.push_back(Entry {
            id,
            recovery: ErrorRecovery {
                kind,
                severity,
                action: action.clone(),
                status,
            },
            check,
            opened_ns: now,
        });
    }

    /// What to do about a task that found no route; see the module docs' table.
    pub fn handle_routing_failure(&self, error: &RouteError, task: &Task) -> RecoveryAction {
        let table = self.router.snapshot();
        let backoff = self.router.inner.retry.policy.backoff_base_ms as f64;
        let routes = capable_routes(&table, task);
        let action = |kind, params, probability: f64| RecoveryAction {
            kind,
            params,
            probability: probability.clamp(0.0, 1.0),
        };
        let scale_none = || {
            action(
                RecoveryKind::Scale,
                vec![("capable_routes", 0.0), ("nodes_needed", 1.0)],
                0.0,
            )
        };
        let (severity, act) = match error {
            RouteError::Saturated => {
                if routes.iter().any(|r| r.fits_idle && !r.out) {
                    let rate = completion_rate_per_ms(&table, &routes, task);
                    let in_flight = in_flight(&table, &routes);
                    (
                        Severity::Medium,
                        action(
                            RecoveryKind::Retry,
                            vec![
                                ("backoff_ms", backoff),
                                ("in_flight", in_flight as f64),
                                ("completions_per_s", rate * 1000.0),
                            ],
                            1.0 - (-backoff * rate).exp(),
                        ),
                    )
                } else {
                    let memory = routes.iter().map(|r| r.memory_mb).fold(f64::MAX, f64::min);
                    (
                        Severity::High,
                        action(
                            RecoveryKind::Scale,
                            vec![
                                ("needed_tokens", task.total_tokens() as f64),
                                (
                                    "needed_memory_mb",
                                    if routes.is_empty() { 0.0 } else { memory },
                                ),
                            ],
                            0.0,
                        ),
                    )
                }
            }
            RouteError::NoHealthyRoute => {
                if routes.is_empty() {
                    (Severity::Critical, scale_none())
                } else {
                    let out = routes.iter().filter(|r| r.out).count();
                    let probing = routes.iter().filter(|r| r.probing).count();
                    let best = routes.iter().map(|r| r.success).fold(0.0, f64::max);
                    (
                        Severity::Critical,
                        action(
                            RecoveryKind::Failover,
                            vec![
                                ("capable_routes", routes.len() as f64),
                                ("routes_out", out as f64),
                                ("probing_routes", probing as f64),
                                ("backoff_ms", backoff),
                            ],
                            best,
                        ),
                    )
                }
            }
            RouteError::ConstraintsUnsatisfiable => {
                let c = &task.constraints;
                let (lat_max, mem_max) = (c.max_latency_ms as f64, c.max_memory_mb as f64);
                let usable: Vec<&RouteView> = routes.iter().filter(|r| !r.out).collect();
                let idle_ok = usable
                    .iter()
                    .filter(|r| r.unloaded_ms <= lat_max && r.memory_mb <= mem_max)
                    .map(|r| r.unloaded_ms)
                    .fold(f64::INFINITY, f64::min);
                if usable.is_empty() {
                    (Severity::Medium, scale_none())
                } else if idle_ok.is_finite() {
                    (
                        Severity::Medium,
                        action(
                            RecoveryKind::Retry,
                            vec![
                                ("backoff_ms", backoff),
                                ("max_latency_ms", lat_max),
                                ("unloaded_latency_ms", idle_ok),
                            ],
                            1.0 - idle_ok / lat_max.max(1.0),
                        ),
                    )
                } else {
                    let best_lat = usable
                        .iter()
                        .map(|r| r.unloaded_ms)
                        .fold(f64::INFINITY, f64::min);
                    let best_mem = usable
                        .iter()
                        .map(|r| r.memory_mb)
                        .fold(f64::INFINITY, f64::min);
                    // Each binds alone, or neither does and only their combination fails.
                    let (lat_binds, mem_binds) = (best_lat > lat_max, best_mem > mem_max);
                    let both = !lat_binds && !mem_binds;
                    let mut params = Vec::new();
                    if lat_binds || both {
                        params.push(("max_latency_ms", lat_max));
                        params.push(("best_latency_ms", best_lat));
                    }
                    if mem_binds || both {
                        params.push(("max_memory_mb", mem_max));
                        params.push(("needed_memory_mb", best_mem));
                    }
                    (Severity::Medium, action(RecoveryKind::Scale, params, 0.0))
                }
            }
            RouteError::NoCapableRoute => {
                let missing = task
                    .constraints
                    .required
                    .iter()
                    .filter(|&bit| table.by_cap.get(bit).is_none_or(|l| l.is_empty()))
                    .count();
                (
                    Severity::High,
                    action(
                        RecoveryKind::Scale,
                        vec![
                            ("missing_capabilities", missing as f64),
                            ("nodes_needed", 1.0),
                        ],
                        0.0,
                    ),
                )
            }
            RouteError::TenantRateLimited => {
                let wait_ms = table.tenant_retry_after_ns(task) as f64 / 1e6;
                (
                    Severity::Low,
                    action(RecoveryKind::Retry, vec![("backoff_ms", wait_ms)], 1.0),
                )
            }
            RouteError::EmptyFleet => (
                Severity::Critical,
                action(RecoveryKind::Scale, vec![("nodes_needed", 1.0)], 0.0),
            ),
            RouteError::StaleRoute => (
                Severity::Low,
                action(
                    RecoveryKind::Retry,
                    vec![("backoff_ms", 0.0)],
                    if plans(&table, task) { 1.0 } else { 0.0 },
                ),
            ),
        };
        let status = match act.kind {
            RecoveryKind::Failover | RecoveryKind::Rebalance => RecoveryStatus::InProgress,
            RecoveryKind::Retry | RecoveryKind::Scale => RecoveryStatus::Pending,
        };
        self.record(
            ErrorKind::Routing,
            severity,
            &act,
            status,
            Check::Routes(*task),
        );
        act
    }

    /// What to do about a node running short of capacity; see the module docs.
    pub fn mitigate_resource_exhaustion(&self, incident: &ResourceIncident) -> RecoveryAction {
        let t = if incident.threshold.is_nan() {
            DEFAULT_EXHAUSTION_THRESHOLD
        } else {
            incident.threshold.clamp(0.05, 1.0)
        };
        let metrics: Vec<_> = self
            .router
            .node_metrics()
            .into_iter()
            .filter(|m| !m.draining)
            .collect();
        let specs = self.router.node_specs();
        let health = self.router.node_health();
        let cap_of = |name: &str| {
            specs
                .iter()
                .find(|s| s.name == name)
                .map_or(0.0, |s| s.max_concurrency as f64)
        };
        let serving = |name: &str| {
            health
                .iter()
                .any(|h| h.node == name && h.status != crate::model::HealthStatus::Failed)
        };
        let check = Check::NodeBelow {
            node: incident.node.clone(),
            threshold: t,
        };
        let Some(me) = metrics.iter().find(|m| m.name == incident.node) else {
            // Not in the fleet: nothing to act on.
            let act = RecoveryAction {
                kind: RecoveryKind::Scale,
                params: vec![("known_node", 0.0)],
                probability: 0.0,
            };
            self.record(
                ErrorKind::Resource,
                Severity::Low,
                &act,
                RecoveryStatus::Failed,
                Check::Nothing,
            );
            return act;
        };
        let u = me.utilization;
        if u < t {
            let act = RecoveryAction {
                kind: RecoveryKind::Rebalance,
                params: vec![("utilization", u), ("threshold", t), ("shift_tasks", 0.0)],
                probability: 1.0,
            };
            self.record(
                ErrorKind::Resource,
                Severity::Low,
                &act,
                RecoveryStatus::Completed,
                check,
            );
            return act;
        }
        let pool: Vec<_> = metrics.iter().filter(|m| serving(&m.name)).collect();
        let mean = if pool.is_empty() {
            u
        } else {
            pool.iter().map(|m| m.utilization).sum::<f64>() / pool.len() as f64
        };
        let target = mean.min(t);
        // Whole tasks, with a little slack for rounding ((0.9 − 0.3) × 10 is 6.000…01).
        let shift = ((u - target) * cap_of(&me.name) - 1e-9).ceil().max(1.0);
        let spare: f64 = pool
            .iter()
            .filter(|m| m.name != me.name)
            .map(|m| ((t - m.utilization).max(0.0) * cap_of(&m.name) + 1e-9).floor())
            .sum();
        let severity = if u >= 1.0 {
            Severity::High
        } else {
            Severity::Medium
        };
        let act = if spare >= shift {
            RecoveryAction {
                kind: RecoveryKind::Rebalance,
                params: vec![
                    ("utilization", u),
                    ("target_utilization", target),
                    ("shift_tasks", shift),
                    ("spare_tasks", spare),
                ],
                probability: 1.0,
            }
        } else {
            let mean_cap = if specs.is_empty() {
                1.0
            } else {
                specs.iter().map(|s| s.max_concurrency as f64).sum::<f64>() / specs.len() as f64
            };
            RecoveryAction {
                kind: RecoveryKind::Scale,
                params: vec![
                    ("utilization", u),
                    ("shift_tasks", shift),
                    ("spare_tasks", spare),
                    (
                        "nodes_needed",
                        ((shift - spare) / (mean_cap * t).max(1.0)).ceil().max(1.0),
                    ),
                ],
                probability: (spare / shift).clamp(0.0, 1.0),
            }
        };
        let status = if act.kind == RecoveryKind::Rebalance {
            RecoveryStatus::InProgress
        } else {
            RecoveryStatus::Pending
        };
        self.record(ErrorKind::Resource, severity, &act, status, check);
        act
    }

    /// What to do about uneven load; see the module docs.
    pub fn restore_balance(&self, disruption: &BalanceDisruption) -> RecoveryAction {
        let t = if disruption.threshold.is_finite() && disruption.threshold >= 0.0 {
            disruption.threshold
        } else {
            DEFAULT_BALANCE_THRESHOLD
        };
        let target = if disruption.target.is_finite() && disruption.target >= 0.0 {
            disruption.target.min(t)
        } else {
            DEFAULT_BALANCE_TARGET.min(t)
        };
        let d = if disruption.deviation.is_finite() {
            disruption.deviation
        } else {
            current_deviation(&self.router)
        };
        if d <= t {
            let act = RecoveryAction {
                kind: RecoveryKind::Rebalance,
                params: vec![("deviation", d), ("threshold", t)],
                probability: 1.0,
            };
            self.record(
                ErrorKind::Balance,
                Severity::Low,
                &act,
                RecoveryStatus::Completed,
                Check::Balanced { threshold: t },
            );
            return act;
        }
        let utils: Vec<f64> = self
            .router
            .node_metrics()
            .iter()
            .filter(|m| !m.draining)
            .map(|m| m.utilization)
            .collect();
        let health = self.router.node_health();
        let nodes = health.len();
        let serving = health
            .iter()
            .filter(|h| h.status != crate::model::HealthStatus::Failed)
            .count();
        let mean = if utils.is_empty() {
            0.0
        } else {
            utils.iter().sum::<f64>() / utils.len() as f64
        };
        let hottest = utils.iter().copied().fold(0.0, f64::max);
        let act = RecoveryAction {
            kind: RecoveryKind::Rebalance,
            params: vec![
                ("deviation", d),
                ("threshold", t),
                ("target_deviation", target),
                ("hottest_utilization", hottest),
                ("mean_utilization", mean),
                ("serving_nodes", serving as f64),
            ],
            probability: if serving >= 2 {
                serving as f64 / nodes as f64
            } else {
                0.0
            },
        };
        let severity = if d > 2.0 * t {
            Severity::Medium
        } else {
            Severity::Low
        };
        self.record(
            ErrorKind::Balance,
            severity,
            &act,
            RecoveryStatus::InProgress,
            Check::Balanced { threshold: t },
        );
        act
    }

    /// Every entry of the log, oldest first.
    pub fn recoveries(&self) -> Vec<ErrorRecovery> {
        self.log()
            .entries
            .iter()
            .map(|e| e.recovery.clone())
            .collect()
    }

    /// Every entry of the log with its id, oldest first.
    pub fn entries(&self) -> Vec<(RecoveryId, ErrorRecovery)> {
        self.log()
            .entries
            .iter()
            .map(|e| (e.id, e.recovery.clone()))
            .collect()
    }

    /// One entry, if the log still holds it.
    pub fn get(&self, id: RecoveryId) -> Option<ErrorRecovery> {
        self.log()
            .entries
            .iter()
            .find(|e| e.id == id)
            .map(|e| e.recovery.clone())
    }

    /// The id of the newest entry.
    pub fn last_id(&self) -> Option<RecoveryId> {
        self.log().entries.back().map(|e| e.id)
    }

    /// Entries still pending or in progress.
    pub fn open(&self) -> usize {
        self.log()
            .entries
            .iter()
            .filter(|e| is_open(e.recovery.status))
            .count()
    }

    /// Sets an entry's status by hand (e.g. `InProgress` once the gateway retries, `Failed`
    /// when it gives up). Returns the previous status, or `None` when the log does not hold
    /// `id`.
    pub fn mark(&self, id: RecoveryId, status: RecoveryStatus) -> Option<RecoveryStatus> {
        let mut log = self.log();
        let e = log.entries.iter_mut().find(|e| e.id == id)?;
        Some(std::mem::replace(&mut e.recovery.status, status))
    }

    /// Re-checks every open entry against the router's current state: completes those whose
    /// condition holds, fails those open longer than the timeout. Returns the entries it
    /// closed, with their new status.
    pub fn settle(&self) -> Vec<(RecoveryId, RecoveryStatus)> {
        let open: Vec<(RecoveryId, Check, u64)> = self
            .log()
            .entries
            .iter()
            .filter(|e| is_open(e.recovery.status))
            .map(|e| (e.id, e.check.clone(), e.opened_ns))
            .collect();
        if open.is_empty() {
            return Vec::new();
        }
        let table = self.router.snapshot();
        let now = self.router.clock().now_ns();
        let mut deviation = None;
        let mut metrics = None;
        let mut verdicts = Vec::new();
        for (id, check, opened) in open {
            let done = match &check {
                Check::Routes(task) => plans(&table, task),
                Check::NodeBelow { node, threshold } => metrics
                    .get_or_insert_with(|| self.router.node_metrics())
                    .iter()
                    .find(|m| m.name == *node && !m.draining)
                    .is_none_or(|m| m.utilization < *threshold),
                Check::Balanced { threshold } => {
                    *deviation.get_or_insert_with(|| current_deviation(&self.router)) <= *threshold
                }
                Check::Nothing => true,
            };
            if done {
                verdicts.push((id, RecoveryStatus::Completed));
            } else if now.saturating_sub(opened) >= self.timeout_ns {
                verdicts.push((id, RecoveryStatus::Failed));
            }
        }
        let mut log = self.log();
        let mut closed = Vec::new();
        for (id, status) in verdicts {
            // Marked by hand meanwhile: the hand wins.
            if let Some(e) = log
                .entries
                .iter_mut()
                .find(|e| e.id == id && is_open(e.recovery.status))
            {
                e.recovery.status = status;
                closed.push((id, status));
            }
        }
        closed
    }
}

/// The deviation over the router's current nodes (0 when idle).
fn current_deviation(router: &Router) -> f64 {
    let utils: Vec<f64> = router
        .node_metrics()
        .iter()
        .filter(|m| !m.draining)
        .map(|m| m.utilization)
        .collect();
    balance_deviation(&utils)
}

/// Whether `task` plans on `table` now (nothing is reserved).
fn plans(table: &RoutingTable, task: &Task) -> bool {
    let mut options = RouteOptions::default();
    crate::rng::with_rng(|rng| select::plan(table, task, rng, &mut options)).is_ok()
}

/// One capable route, as recovery sees it.
#[derive(Debug)]
struct RouteView {
    stages: Vec<u32>,
    /// A stage is ejected.
    out: bool,
    /// No stage ejected, but a stage is half-open.
    probing: bool,
    /// The lowest smoothed success rate of its stages.
    success: f64,
    /// Expected latency with every stage idle, ms.
    unloaded_ms: f64,
    /// KV memory the task would reserve, MB, over all stages.
    memory_mb: f64,
    /// Every stage could hold the task when idle.
    fits_idle: bool,
}

/// Every route offering the task's capabilities in `table`.
fn capable_routes(table: &RoutingTable, task: &Task) -> Vec<RouteView> {
    let req = &task.constraints.required;
    let Some(pool) = table.pool(req) else {
        return Vec::new();
    };
    let (input, output) = (task.input_tokens as f64, task.output_tokens as f64);
    pool.iter()
        .filter_map(|&slot| table.routes.get(slot as usize))
        .filter(|r| r.caps.contains_all(req))
        .map(|r| {
            let mut v = RouteView {
                stages: r.stages().to_vec(),
                out: false,
                probing: false,
                success: 1.0,
                unloaded_ms: 0.0,
                memory_mb: 0.0,
                fits_idle: true,
            };
            for &s in r.stages() {
                let Some(n) = table.nodes.get(s as usize) else {
                    continue;
                };
                v.out |= !n.eligible;
                v.probing |= n.probe_only;
                v.success = v.success.min(n.success_rate);
                v.unloaded_ms +=
                    (n.base_ms + input * n.prefill_ms_per_token + output * n.decode_ms_per_token)
                        * n.latency_factor;
                let (d0, d1) = select::demand(n, task);
                v.memory_mb += Amounts::unpack(d0, 0).memory_mb as f64;
                // Against the share of capacity the task's class may fill, as the picker checks.
                let cap0 = n.cap0_class[task.constraints.priority.index()];
                v.fits_idle &= fits0(0, d0, cap0) && (d1 == 0 || fits1(0, d1, n.cap1));
            }
            v.probing &= !v.out;
            v
        })
        .collect()
}

/// Distinct node slots of the routes that are not out.
fn serving_nodes(routes: &[RouteView]) -> Vec<u32> {
    let mut slots: Vec<u32> = routes
        .iter()
        .filter(|r| !r.out)
        .flat_map(|r| r.stages.iter().copied())
        .collect();
    slots.sort_unstable();
    slots.dedup();
    slots
}

/// Tasks in flight on the serving capable nodes.
fn in_flight(table: &RoutingTable, routes: &[RouteView]) -> u64 {
    serving_nodes(routes)
        .into_iter()
        .filter_map(|s| table.nodes.get(s as usize))
        .map(|n| Amounts::unpack(n.live.load().0, 0).inflight)
        .sum()
}

/// Completions per ms expected on the serving capable nodes: in flight over latency, with the
/// latency EWMA where there is one and the task's unloaded latency there otherwise.
fn completion_rate_per_ms(table: &RoutingTable, routes: &[RouteView], task: &Task) -> f64 {
    let (input, output) = (task.input_tokens as f64, task.output_tokens as f64);
    serving_nodes(routes)
        .into_iter()
        .filter_map(|s| table.nodes.get(s as usize))
        .map(|n| {
            let k = Amounts::unpack(n.live.load().0, 0).inflight as f64;
            let ewma = n.live.latency_ewma_ms();
            let latency = if ewma > 0.0 {
                ewma
            } else {
                (n.base_ms + input * n.prefill_ms_per_token + output * n.decode_ms_per_token)
                    * n.latency_factor
            };
            if latency > 0.0 {
                k / latency
            } else {
                0.0
            }
        })
        .sum()
}
