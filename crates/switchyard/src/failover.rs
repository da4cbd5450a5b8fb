//! Failover and the seed's `HealthAwareRouting`.
//!
//! A task whose attempt fails goes back to the router with [`Router::fail_over`]: the failure
//! is recorded on the nodes that served the attempt (so health sees it), and the task gets a
//! fresh route, planned on the current snapshot, that excludes every route it already tried.
//! Retries draw from a budget that the control tick refills with a share of the tasks that
//! finished ([`RetryPolicy::budget_ratio`], Envoy's retry budget idea), so an outage cannot
//! multiply the load by the retry count. Back-off is exponential with jitter and is returned,
//! not slept: the gateway schedules the next attempt. A task that runs out of attempts,
//! budget or routes ends with a [`FailoverError`] naming every route it tried, and is
//! counted once, as a failure.
use std::fmt;
use std::time::Duration;

use crate::dispatcher::{new_ticket, Completion, Ticket};
use crate::error::{ConfigError, RouteError};
use crate::model::{
    DegradationAction, DegradationCondition, DegradationKind, HealthStatus, NodeHealth, Outcome,
    RouteId, RouteOptions, Task,
};
use crate::router::Router;
use crate::routing::engine;
use crate::sync::{AtomicU64, Ordering};

/// Most attempts a task can make (its first route included).
pub const MAX_ATTEMPTS: usize = 4;

/// How failed tasks are retried. Defaults after SMG's retry settings (50 ms initial back-off,
/// jitter 0.2) and Envoy's retry budget (20 % of requests, at least 3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per task, the first included (1..=4; 1 = no retry).
    pub max_attempts: u32,
    /// Retries allowed as a share of finished tasks, refilled each control tick.
    pub budget_ratio: f64,
    /// Retries always allowed per tick, however little finished.
    pub min_retries_per_tick: u64,
    /// Back-off before the second attempt, ms; doubles per attempt.
    pub backoff_base_ms: u64,
    /// Longest back-off, ms.
    pub backoff_max_ms: u64,
    /// Relative jitter on each back-off (0–1).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            budget_ratio: 0.2,
            min_retries_per_tick: 3,
            backoff_base_ms: 50,
            backoff_max_ms: 2_000,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 || self.max_attempts as usize > MAX_ATTEMPTS {
            return Err(ConfigError::InvalidSetting {
                field: "retry.max_attempts",
                reason: "must be 1..=4",
            });
        }
        for (field, v) in [
            ("retry.budget_ratio", self.budget_ratio),
            ("retry.jitter", self.jitter),
        ] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(ConfigError::InvalidNumber {
                    owner: "retry".into(),
                    field,
                    value: v,
                });
            }
        }
        if self.backoff_max_ms < self.backoff_base_ms {
            return Err(ConfigError::InvalidSetting {
                field: "retry.backoff_max_ms",
                reason: "must be at least backoff_base_ms",
            });
        }
        Ok(())
    }

    fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        let base = self
            .backoff_base_ms
            .saturating_mul(1 << attempt.saturating_sub(1).min(20))
            .min(self.backoff_max_ms) as f64;
        let jittered = base * (1.0 + self.jitter * (2.0 * unit - 1.0));
        Duration::from_micros((jittered.max(0.0) * 1000.0) as u64)
    }
}

/// The retry budget: tokens a retry takes, refilled by the control tick.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    pub(crate) policy: RetryPolicy,
    tokens: AtomicU64,
    last_finished: AtomicU64,
}

impl RetryBudget {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            tokens: AtomicU64::new(policy.min_retries_per_tick),
            last_finished: AtomicU64::new(0),
        }
    }

    /// Takes one token if there is one.
    fn try_take(&self) -> bool {
        // Relaxed: a counter; nothing is published through it.
        let mut cur = self.tokens.load(Ordering::Relaxed);
        loop {
            if cur == 0 {
                return false;
            }
            match self.tokens.compare_exchange_weak(
                cur,
                cur - 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
    }

    fn give_back(&self) {
        // Relaxed: a counter (an RMW, so no concurrent update is lost).
        self.tokens.fetch_add(1, Ordering::Relaxed);
    }

    /// Control tick: add `ratio ×` the tasks finished since the last refill, at least the
    /// minimum, and keep at most ten ticks' worth.
    pub(crate) fn refill(&self, finished_total: u64) {
        let p = &self.policy;
        // Relaxed: only the control thread refills.
        let last = self.last_finished.swap(finished_total, Ordering::Relaxed);
        let earned = (p.budget_ratio * finished_total.saturating_sub(last) as f64) as u64;
        let cap = (earned * 10).max(p.min_retries_per_tick);
        // A CAS loop, not load + store: a retry taking a token (or giving one back) between
        // the two would otherwise be erased. Relaxed: a counter; nothing is published.
        let mut cur = self.tokens.load(Ordering::Relaxed);
        loop {
            let next = cur
                .saturating_add(earned)
                .max(p.min_retries_per_tick)
                .min(cap.max(cur.min(cap)));
            match self
                .tokens
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(seen) => cur = seen,
            }
        }
    }
}

/// A failed task's next attempt.
#[derive(Debug)]
pub struct Retry {
    /// The ticket for the new route (its lease is already reserved).
    pub ticket: Ticket,
    /// The routes planned for it.
    pub routes: RouteOptions,
    /// Wait this long before sending it (jittered exponential back-off).
    pub backoff: Duration,
}

/// Why a failed task was not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailoverReason {
    /// The outcome was a success, or a client cancel: nothing to retry.
    NotRetryable,
    /// The task used all its attempts.
    AttemptsExhausted,
    /// The retry budget is spent (an outage is under way).
    BudgetExhausted,
    /// Every feasible route was already tried.
    AllRoutesTried,
    /// No route is feasible now.
    NoRoute(RouteError),
    /// The control thread had already reclaimed the attempt's lease past its timeout and
    /// counted the task as timed out: retrying would count it twice.
    Reclaimed,
}

/// A task that ends without success after failing over; the task is handed back.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverError {
    /// The task.
    pub task: Task,
    /// Its last failure.
    pub outcome: Outcome,
    /// Every route it tried, in order.
    pub tried: Vec<RouteId>,
    /// Why it stops here.
    pub reason: FailoverReason,
}

impl fmt::Display for FailoverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task {} failed ({}) after trying routes {:?}: ",
            self.task.id,
            self.outcome.name(),
            self.tried
        )?;
        match self.reason {
            FailoverReason::NotRetryable => f.write_str("not retryable"),
            FailoverReason::AttemptsExhausted => f.write_str("no attempts left"),
            FailoverReason::BudgetExhausted => f.write_str("retry budget exhausted"),
            FailoverReason::AllRoutesTried => f.write_str("every feasible route was tried"),
            FailoverReason::NoRoute(e) => write!(f, "{e}"),
            FailoverReason::Reclaimed => {
                f.write_str("the lease was reclaimed past its timeout (counted as a timeout)")
            }
        }
    }
}

impl std::error::Error for FailoverError {}

impl Router {
    /// Records a failed attempt and moves the task to a route it has not tried.
    ///
    /// # Errors
    /// A [`FailoverError`] (the task ends, counted once as `failure.outcome`) when the outcome
    /// is not retryable, or attempts, budget or routes run out.
    pub fn fail_over(
        &self,
        mut ticket: Ticket,
        failure: Completion,
    ) -> Result<Retry, FailoverError> {
        let Some(mut lease) = ticket.lease.take() else {
            return Err(self.give_up(&ticket, failure.outcome, FailoverReason::NotRetryable));
        };
        // The failed attempt produced `failure.output_tokens`: settle its rate reservation.
        lease.settle_tokens(failure.output_tokens);
        let attempt = ticket.attempts as usize;
        if attempt < MAX_ATTEMPTS {
            ticket.tried[attempt] = lease.route().route;
        }
        ticket.attempts = ticket.attempts.saturating_add(1);
        let end = |ticket: &Ticket, lease: crate::routing::Lease, reason| {
            lease.finish(failure.outcome, failure.latency_ms);
            Err(self.give_up(ticket, failure.outcome, reason))
        };
        if !lease.is_held() {
            // Reclaimed: the task already ended, as a timeout; this late end is only counted.
            return end(&ticket, lease, FailoverReason::Reclaimed);
        }
        if !failure.outcome.is_failure() || failure.outcome == Outcome::Cancelled {
            return end(&ticket, lease, FailoverReason::NotRetryable);
        }
        let budget = &self.inner.retry;
        if ticket.attempts as u32 >= budget.policy.max_attempts {
            return end(&ticket, lease, FailoverReason::AttemptsExhausted);
        }
        if !budget.try_take() {
            return end(&ticket, lease, FailoverReason::BudgetExhausted);
        }
        let table = self.inner.table.load();
        let mut routes = RouteOptions::default();
        let tried = &ticket.tried[..(ticket.attempts as usize).min(MAX_ATTEMPTS)];
        let planned =
            crate::router::with_rng(|rng| engine::plan(&table, &ticket.task, rng, &mut routes));
        let next = planned.map_err(FailoverReason::NoRoute).and_then(|()| {
            routes.retain(|c| !tried.contains(&c.route.route));
            if routes.is_empty() {
                return Err(FailoverReason::AllRoutesTried);
            }
            engine::allocate(&table, &routes, &ticket.task).map_err(FailoverReason::NoRoute)
        });
        match next {
            Ok(new_lease) => {
                // Health sees the failure; the task is counted once, when it finally ends.
                lease.finish_as(false, failure.outcome, failure.latency_ms);
                let unit = crate::router::with_rng(|rng| rng.unit());
                let backoff = budget.policy.backoff(ticket.attempts as u32, unit);
                let mut next_ticket = new_ticket(new_lease, ticket.task);
                next_ticket.tried = ticket.tried;
                next_ticket.attempts = ticket.attempts;
                Ok(Retry {
                    ticket: next_ticket,
                    routes,
                    backoff,
                })
            }
            Err(reason) => {
                budget.give_back();
                end(&ticket, lease, reason)
            }
        }
    }

    fn give_up(&self, ticket: &Ticket, outcome: Outcome, reason: FailoverReason) -> FailoverError {
        FailoverError {
            task: ticket.task,
            outcome,
            tried: ticket.tried[..(ticket.attempts as usize).min(MAX_ATTEMPTS)].to_vec(),
            reason,
        }
    }
}

// ===== HealthAwareRouting =====

/// The fleet's health at a glance (the seed's `SystemHealth`).
#[derive(Debug, Clone, PartialEq)]
pub struct SystemHealth {
    /// Every node.
    pub nodes: Vec<NodeHealth>,
    /// Nodes taking traffic normally (healthy or degraded).
    pub serving: usize,
    /// Nodes degraded (serving at reduced weight).
    pub degraded: usize,
    /// Nodes ejected or probing.
    pub failed: usize,
    /// Whether routing ignores ejections because too few nodes serve.
    pub panic: bool,
}

/// What [`HealthAwareRouting::adjust_for_degradation`] recommends (the seed's
/// `RouteAdjustment`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteAdjustment {
    /// Actions, most urgent first (empty when all is well).
    pub actions: Vec<DegradationAction>,
}

/// What happened to a node (the seed's `HealthIncident`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentKind {
    /// It is down: eject it now (recovery through half-open probes as usual).
    Down,
    /// It works poorly: pin it degraded.
    Degraded,
    /// It is back: clear any pinned verdict and probe it now.
    Recovered,
}

/// An incident reported by the gateway or an external health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthIncident {
    /// The node's name.
    pub node: String,
    /// What happened.
    pub kind: IncidentKind,
}

/// What [`HealthAwareRouting::trigger_failover`] did (the seed's `FailoverResult`).
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverResult {
    /// The node.
    pub node: String,
    /// Its verdict now.
    pub status: HealthStatus,
    /// Tasks still in flight on it (they finish or fail over on their own).
    pub in_flight: u64,
    /// Nodes that take traffic now.
    pub serving: usize,
    /// Epoch of the snapshot that carries the change.
    pub epoch: u64,
}

/// The seed's `HealthAwareRouting`.
pub trait HealthAwareRouting {
    /// Every node's health and the fleet's state.
    fn check_system_health(&self) -> SystemHealth;
    /// What to do about the state `health` describes.
    fn adjust_for_degradation(&self, health: &SystemHealth) -> RouteAdjustment;
    /// Acts on an incident at once (published before this returns).
    ///
    /// # Errors
    /// [`ConfigError::UnknownNode`] for a node that is not in the fleet.
    fn trigger_failover(&self, incident: &HealthIncident) -> Result<FailoverResult, ConfigError>;
}

impl HealthAwareRouting for Router {
    fn check_system_health(&self) -> SystemHealth {
        let nodes = self.node_health();
        let count = |s: HealthStatus| nodes.iter().filter(|n| n.status == s).count();
        SystemHealth {
            serving: count(HealthStatus::Healthy) + count(HealthStatus::Degraded),
            degraded: count(HealthStatus::Degraded),
            failed: count(HealthStatus::Failed),
            panic: self.snapshot().panic_mode(),
            nodes,
        }
    }

    fn adjust_for_degradation(&self, h: &SystemHealth) -> RouteAdjustment {
        let total = h.nodes.len().max(1) as f64;
        let mut actions = Vec::new();
        let serving_share = h.serving as f64 / total;
        if h.panic || serving_share < 0.5 {
            actions.push(DegradationAction {
                kind: DegradationKind::Scale,
                conditions: vec![DegradationCondition {
                    metric: "serving_share",
                    threshold: 0.5,
                    value: serving_share,
                }],
                params: vec![(
                    "nodes_needed",
                    (total * 0.5 - h.serving as f64).ceil().max(1.0),
                )],
            });
        }
        if h.failed > 0 {
            actions.push(DegradationAction {
                kind: DegradationKind::Failover,
                conditions: vec![DegradationCondition {
                    metric: "failed_nodes",
                    threshold: 0.0,
                    value: h.failed as f64,
                }],
                params: vec![("nodes_out", h.failed as f64)],
            });
        }
        let utils: Vec<f64> = self
            .node_metrics()
            .iter()
            .filter(|n| !n.draining)
            .map(|n| n.utilization)
            .collect();
        let deviation = crate::metrics::balance_deviation(&utils);
        if deviation > 0.5 && utils.iter().sum::<f64>() / total > 0.1 {
            actions.push(DegradationAction {
                kind: DegradationKind::Rebalance,
                conditions: vec![DegradationCondition {
                    metric: "balance_deviation",
                    threshold: 0.5,
                    value: deviation,
                }],
                params: vec![("target_deviation", 0.1)],
            });
        }
        RouteAdjustment { actions }
    }

    fn trigger_failover(&self, incident: &HealthIncident) -> Result<FailoverResult, ConfigError> {
        self.incident(&incident.node, incident.kind)?;
        let report = self.tick();
        let health = self.check_system_health();
        let node = health
            .nodes
            .iter()
            .find(|n| n.node == incident.node)
            .ok_or_else(|| ConfigError::UnknownNode(incident.node.clone()))?;
        let in_flight = self
            .node_metrics()
            .iter()
            .find(|n| n.name == incident.node)
            .map_or(0, |n| n.in_flight);
        Ok(FailoverResult {
            node: incident.node.clone(),
            status: node.status,
            in_flight,
            serving: health.serving,
            epoch: report.epoch,
        })
    }
}
