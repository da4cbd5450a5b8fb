//! Error recovery (the seed's ErrorRecovery): the documented action for each case, and a log
//! whose entries settle against the router's state.
// Not library code: std's primitives are fine here (the shim rule is for src/).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
use std::sync::Arc;

use switchyard::recovery::{
    BalanceDisruption, Recovery, RecoveryId, ResourceIncident, RECOVERY_LOG_CAPACITY,
};
use switchyard::spec::{ErrorKind, RecoveryAction, RecoveryKind, RecoveryStatus, Severity};
use switchyard::{Lease, ManualClock, NodeSpec, Outcome, Priority, RouteError, Router, Task};

/// "a" offers chat and code, "b" chat only; `conc` slots each.
fn fleet(conc: u32) -> (Router, ManualClock) {
    let clock = ManualClock::new();
    let r = Router::builder()
        .clock(Arc::new(clock.clone()))
        .capabilities(["chat", "code", "vision"])
        .node(
            NodeSpec::new("a")
                .capabilities(["chat", "code"])
                .max_concurrency(conc),
        )
        .node(
            NodeSpec::new("b")
                .capabilities(["chat"])
                .max_concurrency(conc),
        )
        .build()
        .unwrap();
    r.tick();
    (r, clock)
}

fn task(r: &Router, id: u64, caps: &[&str]) -> Task {
    Task::new(id, 100, 10).require(r.resolve(caps).unwrap())
}

/// Holds `k` code tasks (all on "a"), as critical tasks, which may fill a node whole
/// (lower classes leave headroom).
fn hold_code(r: &Router, k: u64) -> Vec<Lease> {
    hold(r, k, "code")
}

fn hold(r: &Router, k: u64, cap: &str) -> Vec<Lease> {
    let mut reader = r.reader();
    (0..k)
        .map(|i| {
            let t = task(r, 1_000 + i, &[cap]).priority(Priority::Critical);
            reader.route(&t).unwrap().1
        })
        .collect()
}

fn param(a: &RecoveryAction, name: &str) -> f64 {
    a.params
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no `{name}` in {:?}", a.params))
        .1
}

fn status(rec: &Recovery, id: RecoveryId) -> RecoveryStatus {
    rec.get(id).unwrap().status
}

#[test]
fn saturated_retries_after_the_back_off_and_settles_when_a_slot_frees() {
    let (r, _) = fleet(1);
    let rec = Recovery::new(r.clone());
    let held = hold_code(&r, 1);
    let t = task(&r, 1, &["code"]);
    let err = r.reader().route(&t).unwrap_err();
    assert_eq!(err, RouteError::Saturated);
    let a = rec.handle_routing_failure(&err, &t);
    assert_eq!(a.kind, RecoveryKind::Retry);
    assert_eq!(
        param(&a, "backoff_ms"),
        50.0,
        "the retry policy's base back-off"
    );
    assert_eq!(param(&a, "in_flight"), 1.0);
    // No latency sample yet: the task's unloaded latency, 20 + 100/5 + 10·20 = 240 ms.
    let want = 1.0 - (-50.0f64 / 240.0).exp();
    assert!((a.probability - want).abs() < 1e-9, "{}", a.probability);
    let id = rec.last_id().unwrap();
    let e = rec.get(id).unwrap();
    assert_eq!(
        (e.kind, e.severity, e.status),
        (
            ErrorKind::Routing,
            Severity::Medium,
            RecoveryStatus::Pending
        )
    );
    assert!(rec.settle().is_empty(), "still saturated");
    drop(held);
    assert_eq!(rec.settle(), vec![(id, RecoveryStatus::Completed)]);
    assert_eq!(rec.open(), 0);
}

#[test]
fn saturated_probability_follows_the_observed_completion_rate() {
    let (r, _) = fleet(1);
    // Teach "a" a 100 ms latency.
    let mut reader = r.reader();
    for i in 0..50 {
        let (_, lease) = reader.route(&task(&r, i, &["code"])).unwrap();
        lease.complete(Outcome::Success, 100.0);
    }
    let rec = Recovery::new(r.clone());
    let _held = hold_code(&r, 1);
    let t = task(&r, 99, &["code"]);
    let a = rec.handle_routing_failure(&RouteError::Saturated, &t);
    let rate = param(&a, "completions_per_s") / 1000.0;
    assert!(
        (rate * 100.0 - 1.0).abs() < 0.05,
        "one in flight at ~100 ms: {rate}"
    );
    assert!((a.probability - (1.0 - (-50.0 * rate).exp())).abs() < 1e-9);
}

#[test]
fn a_task_no_node_can_ever_hold_asks_for_scale() {
    let (r, _) = fleet(4);
    let rec = Recovery::new(r.clone());
    // More tokens than a node holds in flight: saturated even on an idle fleet.
    let t = Task::new(1, 300_000, 10);
    assert_eq!(r.reader().route(&t).unwrap_err(), RouteError::Saturated);
    let a = rec.handle_routing_failure(&RouteError::Saturated, &t);
    assert_eq!(a.kind, RecoveryKind::Scale);
    assert_eq!(a.probability, 0.0);
    assert_eq!(param(&a, "needed_tokens"), 300_010.0);
    assert!(param(&a, "needed_memory_mb") > 38_000.0);
    assert_eq!(rec.recoveries()[0].severity, Severity::High);
}

#[test]
fn no_healthy_route_fails_over_and_completes_when_the_node_serves_again() {
    let (r, clock) = fleet(100);
    clock.advance_ms(60_000);
    r.tick();
    let rec = Recovery::new(r.clone());
    let t = task(&r, 1, &["code"]);
    // "a", the only code node, fails three times in a row: out at once, ejected at the tick.
    let mut reader = r.reader();
    for i in 0..3 {
        let (_, lease) = reader.route(&task(&r, 10 + i, &["code"])).unwrap();
        lease.complete(Outcome::ServerError, 10.0);
    }
    r.tick();
    let err = reader.route(&t).unwrap_err();
    assert_eq!(err, RouteError::NoHealthyRoute);
    let a = rec.handle_routing_failure(&err, &t);
    assert_eq!(a.kind, RecoveryKind::Failover);
    assert_eq!(
        (param(&a, "capable_routes"), param(&a, "routes_out")),
        (1.0, 1.0)
    );
    // a's smoothed success rate after one all-failed tick: ½·1 + ½·0.
    assert!((a.probability - 0.5).abs() < 1e-9, "{}", a.probability);
    let id = rec.last_id().unwrap();
    let e = rec.get(id).unwrap();
    assert_eq!(
        (e.severity, e.status),
        (Severity::Critical, RecoveryStatus::InProgress)
    );
    clock.advance_ms(1_000);
    r.tick();
    assert!(rec.settle().is_empty(), "still ejected");
    // After the 5 s ejection the router probes "a" on its own: the task routes again.
    clock.advance_ms(5_000);
    r.tick();
    assert_eq!(rec.settle(), vec![(id, RecoveryStatus::Completed)]);
}

#[test]
fn an_open_recovery_fails_after_its_timeout() {
    let (r, clock) = fleet(10);
    r.set_health("a", switchyard::HealthStatus::Failed).unwrap();
    r.tick();
    let rec = Recovery::new(r.clone()).timeout_ms(2_000);
    let t = task(&r, 1, &["code"]);
    rec.handle_routing_failure(&RouteError::NoHealthyRoute, &t);
    let id = rec.last_id().unwrap();
    clock.advance_ms(1_999);
    assert!(rec.settle().is_empty());
    clock.advance_ms(1);
    assert_eq!(rec.settle(), vec![(id, RecoveryStatus::Failed)]);
    // Closed entries are not re-checked.
    r.set_health("a", switchyard::HealthStatus::Healthy)
        .unwrap();
    r.tick();
    assert!(rec.settle().is_empty());
    assert_eq!(status(&rec, id), RecoveryStatus::Failed);
}

#[test]
fn unsatisfiable_constraints_retry_when_only_load_breaks_them_else_scale() {
    let (r, _) = fleet(4);
    let rec = Recovery::new(r.clone());
    // Unloaded, a code task takes 240 ms on "a"; two of four slots busy make it 360 ms.
    let held = hold_code(&r, 2);
    let t = task(&r, 1, &["code"]).max_latency_ms(300);
    let err = r.reader().route(&t).unwrap_err();
    assert_eq!(err, RouteError::ConstraintsUnsatisfiable);
    let a = rec.handle_routing_failure(&err, &t);
    assert_eq!(a.kind, RecoveryKind::Retry);
    assert_eq!(param(&a, "max_latency_ms"), 300.0);
    assert!((param(&a, "unloaded_latency_ms") - 240.0).abs() < 1e-9);
    assert!((a.probability - 0.2).abs() < 1e-9, "headroom 1 − 240/300");
    let id = rec.last_id().unwrap();
    assert!(rec.settle().is_empty());
    drop(held);
    assert_eq!(rec.settle(), vec![(id, RecoveryStatus::Completed)]);

    // No node is ever fast enough: scale (or relax), naming the latency limit.
    let t = task(&r, 2, &["code"]).max_latency_ms(100);
    let a = rec.handle_routing_failure(&RouteError::ConstraintsUnsatisfiable, &t);
    assert_eq!(a.kind, RecoveryKind::Scale);
    assert_eq!(a.probability, 0.0);
    assert_eq!(param(&a, "max_latency_ms"), 100.0);
    assert!((param(&a, "best_latency_ms") - 240.0).abs() < 1e-9);
    assert!(a.params.iter().all(|(n, _)| *n != "max_memory_mb"));

    // Or too little memory allowed: 110 tokens × 128 MB/1000 = 15 MB.
    let t = task(&r, 3, &["code"]).max_memory_mb(10);
    assert_eq!(
        r.reader().route(&t).unwrap_err(),
        RouteError::ConstraintsUnsatisfiable
    );
    let a = rec.handle_routing_failure(&RouteError::ConstraintsUnsatisfiable, &t);
    assert_eq!(a.kind, RecoveryKind::Scale);
    assert_eq!(
        (param(&a, "max_memory_mb"), param(&a, "needed_memory_mb")),
        (10.0, 15.0)
    );
    assert!(a.params.iter().all(|(n, _)| *n != "max_latency_ms"));
}

#[test]
fn missing_capabilities_and_an_empty_fleet_ask_for_scale() {
    let (r, _) = fleet(4);
    let rec = Recovery::new(r.clone());
    let t = task(&r, 1, &["vision", "code"]);
    assert_eq!(
        r.reader().route(&t).unwrap_err(),
        RouteError::NoCapableRoute
    );
    let a = rec.handle_routing_failure(&RouteError::NoCapableRoute, &t);
    assert_eq!(a.kind, RecoveryKind::Scale);
    assert_eq!(param(&a, "missing_capabilities"), 1.0);
    assert_eq!(a.probability, 0.0);
    assert_eq!(rec.recoveries()[0].severity, Severity::High);

    let empty = Router::builder()
        .clock(Arc::new(ManualClock::new()))
        .build()
        .unwrap();
    let rec = Recovery::new(empty.clone());
    let t = Task::new(1, 10, 10);
    assert_eq!(
        empty.reader().route(&t).unwrap_err(),
        RouteError::EmptyFleet
    );
    let a = rec.handle_routing_failure(&RouteError::EmptyFleet, &t);
    assert_eq!(
        (a.kind, param(&a, "nodes_needed"), a.probability),
        (RecoveryKind::Scale, 1.0, 0.0)
    );
    let id = rec.last_id().unwrap();
    let e = rec.get(id).unwrap();
    assert_eq!(
        (e.severity, e.status),
        (Severity::Critical, RecoveryStatus::Pending)
    );
    // Someone scales: once the node is published the task routes.
    empty.add_node(NodeSpec::new("new")).unwrap();
    assert!(rec.settle().is_empty(), "not published yet");
    empty.tick();
    assert_eq!(rec.settle(), vec![(id, RecoveryStatus::Completed)]);
}

#[test]
fn a_stale_route_retries_at_once() {
    let (r, _) = fleet(4);
    let rec = Recovery::new(r.clone());
    let t = task(&r, 1, &["chat"]);
    let a = rec.handle_routing_failure(&RouteError::StaleRoute, &t);
    assert_eq!(
        (a.kind, param(&a, "backoff_ms"), a.probability),
        (RecoveryKind::Retry, 0.0, 1.0)
    );
    assert_eq!(rec.recoveries()[0].severity, Severity::Low);
    // With nothing capable left, a retry cannot work.
    let gone = task(&r, 2, &["vision"]);
    let a = rec.handle_routing_failure(&RouteError::StaleRoute, &gone);
    assert_eq!(a.probability, 0.0);
    assert_eq!(
        rec.settle().len(),
        1,
        "the first one routes, the second not"
    );
    // An error that no longer matches the snapshot (nothing capable is left): scale.
    for err in [
        RouteError::NoHealthyRoute,
        RouteError::ConstraintsUnsatisfiable,
    ] {
        let a = rec.handle_routing_failure(&err, &gone);
        assert_eq!(
            (a.kind, param(&a, "capable_routes"), a.probability),
            (RecoveryKind::Scale, 0.0, 0.0)
        );
    }
}

#[test]
fn an_exhausted_node_is_rebalanced_when_the_fleet_has_room() {
    let clock = ManualClock::new();
    let r = Router::builder()
        .clock(Arc::new(clock.clone()))
        .capabilities(["chat", "code"])
        .node(
            NodeSpec::new("a")
                .capabilities(["chat", "code"])
                .max_concurrency(10),
        )
        .nodes(["b", "c"].map(|n| NodeSpec::new(n).capabilities(["chat"]).max_concurrency(10)))
        .build()
        .unwrap();
    r.tick();
    let rec = Recovery::new(r.clone());
    let mut held = hold_code(&r, 9);
    let a = rec.mitigate_resource_exhaustion(&ResourceIncident::new("a"));
    assert_eq!(a.kind, RecoveryKind::Rebalance);
    assert!((param(&a, "utilization") - 0.9).abs() < 1e-9);
    // Mean 0.3: move ⌈(0.9 − 0.3) × 10⌉ = 6 tasks' worth; b and c have ⌊0.9 × 10⌋ = 9 each.
    assert!((param(&a, "target_utilization") - 0.3).abs() < 1e-9);
    assert_eq!(
        (param(&a, "shift_tasks"), param(&a, "spare_tasks")),
        (6.0, 18.0)
    );
    assert_eq!(a.probability, 1.0);
    let id = rec.last_id().unwrap();
    let e = rec.get(id).unwrap();
    assert_eq!(
        (e.kind, e.severity, e.status),
        (
            ErrorKind::Resource,
            Severity::Medium,
            RecoveryStatus::InProgress
        )
    );
    assert!(rec.settle().is_empty());
    held.truncate(4);
    assert_eq!(rec.settle(), vec![(id, RecoveryStatus::Completed)]);

    // Below the threshold: nothing to do.
    let a = rec.mitigate_resource_exhaustion(&ResourceIncident::new("a").threshold(0.5));
    assert_eq!(
        (a.kind, param(&a, "shift_tasks"), a.probability),
        (RecoveryKind::Rebalance, 0.0, 1.0)
    );
    assert_eq!(
        status(&rec, rec.last_id().unwrap()),
        RecoveryStatus::Completed
    );
    // An unknown node: nothing to act on.
    let a = rec.mitigate_resource_exhaustion(&ResourceIncident::new("zz"));
    assert_eq!((a.kind, a.probability), (RecoveryKind::Scale, 0.0));
    assert_eq!(status(&rec, rec.last_id().unwrap()), RecoveryStatus::Failed);
}

#[test]
fn an_exhausted_fleet_asks_for_scale() {
    let clock = ManualClock::new();
    let r = Router::builder()
        .clock(Arc::new(clock.clone()))
        .capabilities(["chat", "code"])
        .node(
            NodeSpec::new("a")
                .capabilities(["code"])
                .max_concurrency(10),
        )
        .node(
            NodeSpec::new("b")
                .capabilities(["chat"])
                .max_concurrency(10),
        )
        .build()
        .unwrap();
    r.tick();
    let rec = Recovery::new(r.clone()).timeout_ms(10_000);
    let held_a = hold_code(&r, 10);
    let held_b = hold(&r, 9, "chat");
    let a = rec.mitigate_resource_exhaustion(&ResourceIncident::new("a"));
    assert_eq!(a.kind, RecoveryKind::Scale);
    // Target min(mean 0.95, 0.9): shift ⌈0.1 × 10⌉ = 1; b sits at the threshold: no spare.
    assert_eq!(
        (
            param(&a, "shift_tasks"),
            param(&a, "spare_tasks"),
            param(&a, "nodes_needed")
        ),
        (1.0, 0.0, 1.0)
    );
    assert_eq!(a.probability, 0.0);
    let id = rec.last_id().unwrap();
    let e = rec.get(id).unwrap();
    assert_eq!(
        (e.severity, e.status),
        (Severity::High, RecoveryStatus::Pending)
    );
    // Nobody scales and the load stays: it fails at the timeout.
    clock.advance_ms(10_000);
    assert_eq!(rec.settle(), vec![(id, RecoveryStatus::Failed)]);
    // A removed node is no longer exhausted.
    rec.mitigate_resource_exhaustion(&ResourceIncident::new("a"));
    let id = rec.last_id().unwrap();
    r.remove_node("a").unwrap();
    assert_eq!(rec.settle(), vec![(id, RecoveryStatus::Completed)]);
    drop((held_a, held_b));
    assert!(r.ledgers_are_zero());
}

#[test]
fn imbalance_is_rebalanced_and_settles_when_deviation_drops() {
    let (r, clock) = fleet(10);
    let rec = Recovery::new(r.clone());
    let held = hold_code(&r, 8);
    let d = BalanceDisruption::measure(&r);
    // 0.8 and 0: busiest over mean (0.4), minus one.
    assert!((d.deviation - 1.0).abs() < 1e-9);
    let a = rec.restore_balance(&d);
    assert_eq!(a.kind, RecoveryKind::Rebalance);
    assert_eq!(param(&a, "target_deviation"), 0.1);
    assert_eq!(param(&a, "threshold"), 0.5);
    assert!((param(&a, "hottest_utilization") - 0.8).abs() < 1e-9);
    assert_eq!(a.probability, 1.0, "both nodes serve");
    let id = rec.last_id().unwrap();
    let e = rec.get(id).unwrap();
    assert_eq!(
        (e.kind, e.severity, e.status),
        (
            ErrorKind::Balance,
            Severity::Low,
            RecoveryStatus::InProgress
        )
    );
    clock.advance_ms(1_000);
    assert!(rec.settle().is_empty(), "still uneven");
    drop(held);
    assert_eq!(rec.settle(), vec![(id, RecoveryStatus::Completed)]);

    // A deviation under the threshold needs nothing; a NaN is measured again (idle: 0).
    let a = rec.restore_balance(&BalanceDisruption::new(0.3));
    assert_eq!((a.kind, a.probability), (RecoveryKind::Rebalance, 1.0));
    assert_eq!(
        status(&rec, rec.last_id().unwrap()),
        RecoveryStatus::Completed
    );
    let a = rec.restore_balance(&BalanceDisruption::new(f64::NAN).threshold(f64::NAN));
    assert_eq!(param(&a, "deviation"), 0.0);
    assert_eq!(param(&a, "threshold"), 0.5);

    // With one node serving there is nowhere to move load; a big deviation is medium.
    r.set_health("b", switchyard::HealthStatus::Failed).unwrap();
    let a = rec.restore_balance(&BalanceDisruption::new(3.0).target(0.9));
    assert_eq!(a.probability, 0.0);
    assert_eq!(
        param(&a, "target_deviation"),
        0.5,
        "the target is at most the threshold"
    );
    assert_eq!(
        rec.get(rec.last_id().unwrap()).unwrap().severity,
        Severity::Medium
    );
}

#[test]
fn marks_win_over_settle_and_the_log_is_bounded() {
    let (r, _) = fleet(10);
    let rec = Recovery::new(r.clone());
    let held = hold_code(&r, 8);
    rec.restore_balance(&BalanceDisruption::measure(&r));
    let id = rec.last_id().unwrap();
    assert_eq!(
        rec.mark(id, RecoveryStatus::Failed),
        Some(RecoveryStatus::InProgress)
    );
    assert_eq!(rec.mark(RecoveryId(9_999), RecoveryStatus::Failed), None);
    drop(held);
    assert!(rec.settle().is_empty(), "a closed entry stays as marked");
    assert_eq!(status(&rec, id), RecoveryStatus::Failed);
    assert_eq!(rec.clone().entries().len(), 1, "clones share the log");

    for _ in 0..RECOVERY_LOG_CAPACITY + 5 {
        rec.restore_balance(&BalanceDisruption::new(0.0));
    }
    let entries = rec.entries();
    assert_eq!(entries.len(), RECOVERY_LOG_CAPACITY);
    assert_eq!(
        entries[0].0,
        RecoveryId(6),
        "the oldest closed entries went first"
    );
    assert_eq!(rec.recoveries().len(), RECOVERY_LOG_CAPACITY);
    assert!(rec.get(RecoveryId(0)).is_none());
    assert_eq!(rec.router().snapshot().node_count(), 2);
}
