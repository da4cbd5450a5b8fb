//! The [`Recovery`] handle and its log: recording an entry, reading the log, and settling
//! open entries against the router's state.
use std::collections::VecDeque;

use super::{RecoveryId, DEFAULT_RECOVERY_TIMEOUT_MS, RECOVERY_LOG_CAPACITY};
use crate::metrics::balance_deviation;
use crate::model::{
    ErrorKind, ErrorRecovery, RecoveryAction, RecoveryStatus, RouteOptions, Severity, Task,
};
use crate::router::Router;
use crate::routing::select;
use crate::routing::table::RoutingTable;
use crate::sync::{Arc, Mutex};

/// What `settle` checks for an open entry.
#[derive(Debug, Clone)]
pub(super) enum Check {
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
/// end. See the module docs of `recovery/mod.rs` for every rule.
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
    pub(super) router: Router,
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

    pub(super) fn record(
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
pub(super) fn current_deviation(router: &Router) -> f64 {
    let utils: Vec<f64> = router
        .node_metrics()
        .iter()
        .filter(|m| !m.draining)
        .map(|m| m.utilization)
        .collect();
    balance_deviation(&utils)
}

/// Whether `task` plans on `table` now (nothing is reserved).
pub(super) fn plans(table: &RoutingTable, task: &Task) -> bool {
    let mut options = RouteOptions::default();
    crate::rng::with_rng(|rng| select::plan(table, task, rng, &mut options)).is_ok()
}
