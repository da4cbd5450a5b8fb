//! The three handlers: routing failures, resource exhaustion and imbalance, each answered
//! with a [`RecoveryAction`] recorded in the log (the rules are in the module docs of
//! `recovery/mod.rs`).
use super::tracker::{current_deviation, plans, Check, Recovery};
use super::{
    BalanceDisruption, ResourceIncident, DEFAULT_BALANCE_TARGET, DEFAULT_BALANCE_THRESHOLD,
    DEFAULT_EXHAUSTION_THRESHOLD,
};
use crate::error::RouteError;
use crate::model::{ErrorKind, RecoveryAction, RecoveryKind, RecoveryStatus, Severity, Task};
use crate::node::{fits0, fits1, Amounts};
use crate::routing::select;
use crate::routing::table::RoutingTable;

impl Recovery {
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
