//! Failover: retries on untried routes, the retry budget, typed ends, and the seed's
//! HealthAwareRouting.
// Not library code: std's primitives are fine here (the shim rule is for src/).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
use std::sync::Arc;
use std::time::Duration;

use switchyard::health::IncidentKind;
use switchyard::spec::{DegradationKind, HealthAwareRouting, HealthIncident};
use switchyard::{
    Completion, FailoverReason, HealthPolicy, HealthStatus, ManualClock, NodeSpec, Outcome,
    RetryPolicy, Router, Task, Ticket,
};

fn fleet(n: usize, retry: RetryPolicy) -> Router {
    Router::builder()
        .clock(Arc::new(ManualClock::new()))
        .retry(retry)
        .nodes((0..n).map(|i| NodeSpec::new(format!("n{i}")).max_concurrency(1_000)))
        .build()
        .unwrap()
}

fn ticket(r: &Router, id: u64) -> Ticket {
    let task = Task::new(id, 100, 10);
    let (_, lease) = r.reader().route(&task).unwrap();
    Ticket::from_lease(lease, task)
}

#[test]
fn a_failed_task_moves_to_an_untried_route_and_is_counted_once() {
    let r = fleet(3, RetryPolicy::default());
    let t = ticket(&r, 1);
    let first = t.route().unwrap().route;
    let retry = r
        .fail_over(t, Completion::failure(Outcome::ServerError, 20.0))
        .unwrap();
    assert_ne!(retry.ticket.route().unwrap().route, first);
    assert_eq!(retry.ticket.attempt(), 2);
    assert!(
        retry.backoff >= Duration::from_millis(40) && retry.backoff <= Duration::from_millis(60),
        "{:?}",
        retry.backoff
    );
    assert!(retry
        .routes
        .choices()
        .iter()
        .all(|c| c.route.route != first));
    assert_eq!(r.in_flight(), 1, "the failed attempt's lease is released");
    retry.ticket.complete(Completion::success(30.0, 10));
    let done = r.finished();
    assert_eq!(
        (done[Outcome::Success], done[Outcome::ServerError]),
        (1, 0),
        "counted once, as its end"
    );
    let errors: u64 = r.node_health().iter().map(|h| h.metrics.errors).sum();
    assert_eq!(errors, 1, "health still saw the failure");
    assert!(r.ledgers_are_zero());
}

#[test]
fn attempts_run_out_with_a_typed_error_naming_every_route() {
    let r = fleet(
        4,
        RetryPolicy {
            max_attempts: 3,
            ..Default::default()
        },
    );
    let mut t = ticket(&r, 7);
    let mut seen = vec![t.route().unwrap().route];
    let err = loop {
        match r.fail_over(t, Completion::failure(Outcome::Timeout, 5.0)) {
            Ok(retry) => {
                seen.push(retry.ticket.route().unwrap().route);
                t = retry.ticket;
            }
            Err(e) => break e,
        }
    };
    assert_eq!(err.reason, FailoverReason::AttemptsExhausted);
    assert_eq!(err.tried, seen);
    assert_eq!(err.tried.len(), 3);
    assert_eq!(err.task.id, 7);
    assert!(err.to_string().contains("no attempts left"));
    assert_eq!(r.finished()[Outcome::Timeout], 1, "the task ends once");
    assert!(r.ledgers_are_zero());
}

#[test]
fn the_retry_budget_caps_amplification() {
    // Ejection off, so only the budget limits retries here.
    let r = Router::builder()
        .clock(Arc::new(ManualClock::new()))
        .retry(RetryPolicy {
            budget_ratio: 0.2,
            min_retries_per_tick: 3,
            ..Default::default()
        })
        .health(HealthPolicy {
            consecutive_failures: 0,
            min_requests: u64::MAX,
            ..Default::default()
        })
        .nodes((0..4).map(|i| NodeSpec::new(format!("n{i}")).max_concurrency(1_000)))
        .build()
        .unwrap();
    let outcomes: Vec<_> = (0..50)
        .map(|i| {
            r.fail_over(
                ticket(&r, i),
                Completion::failure(Outcome::ServerError, 1.0),
            )
        })
        .collect();
    let retried = outcomes.iter().filter(|o| o.is_ok()).count();
    assert_eq!(retried, 3, "only the minimum before any tick");
    assert!(outcomes
        .iter()
        .filter_map(|o| o.as_ref().err())
        .all(|e| e.reason == FailoverReason::BudgetExhausted));
    drop(outcomes);
    // 47 tasks ended and 3 retries were dropped (abandoned): 50 finished, 20 % of that is 10.
    r.tick();
    let again = (100..150)
        .map(|i| {
            r.fail_over(
                ticket(&r, i),
                Completion::failure(Outcome::ServerError, 1.0),
            )
        })
        .filter(|o| o.is_ok())
        .count();
    assert_eq!(again, 10);
}

#[test]
fn what_is_not_retried() {
    let r = fleet(2, RetryPolicy::default());
    let e = r
        .fail_over(ticket(&r, 1), Completion::failure(Outcome::Cancelled, 1.0))
        .unwrap_err();
    assert_eq!(e.reason, FailoverReason::NotRetryable);
    let e = r
        .fail_over(ticket(&r, 2), Completion::success(1.0, 1))
        .unwrap_err();
    assert_eq!(e.reason, FailoverReason::NotRetryable);
    // One node: nowhere else to go.
    let solo = fleet(1, RetryPolicy::default());
    let e = solo
        .fail_over(
            ticket(&solo, 3),
            Completion::failure(Outcome::ServerError, 1.0),
        )
        .unwrap_err();
    assert_eq!(e.reason, FailoverReason::AllRoutesTried, "{e}");
    assert!(solo.ledgers_are_zero());
    assert!(Router::builder()
        .retry(RetryPolicy {
            max_attempts: 9,
            ..Default::default()
        })
        .build()
        .is_err());
    assert!(Router::builder()
        .retry(RetryPolicy {
            jitter: f64::NAN,
            ..Default::default()
        })
        .build()
        .is_err());
}

#[test]
fn health_aware_routing_reports_and_acts() {
    let r = fleet(4, RetryPolicy::default());
    r.tick();
    let h = r.check_system_health();
    assert_eq!((h.serving, h.failed, h.panic), (4, 0, false));
    assert!(r.adjust_for_degradation(&h).actions.is_empty());
    let res = r
        .trigger_failover(&HealthIncident {
            node: "n2".into(),
            kind: IncidentKind::Down,
        })
        .unwrap();
    assert_eq!((res.status, res.serving), (HealthStatus::Failed, 3));
    let mut reader = r.reader();
    let n2 = r.snapshot().node_id("n2").unwrap();
    for i in 0..200 {
        assert_ne!(
            reader
                .route(&Task::new(i, 10, 10))
                .unwrap()
                .1
                .route()
                .head(),
            n2
        );
    }
    let adj = r.adjust_for_degradation(&r.check_system_health());
    assert_eq!(adj.actions[0].kind, DegradationKind::Failover);
    r.trigger_failover(&HealthIncident {
        node: "n1".into(),
        kind: IncidentKind::Down,
    })
    .unwrap();
    r.trigger_failover(&HealthIncident {
        node: "n0".into(),
        kind: IncidentKind::Down,
    })
    .unwrap();
    let h = r.check_system_health();
    assert_eq!(h.serving, 1);
    assert!(h.panic, "one of four serving: route across all");
    assert_eq!(
        r.adjust_for_degradation(&h).actions[0].kind,
        DegradationKind::Scale
    );
    let back = r
        .trigger_failover(&HealthIncident {
            node: "n2".into(),
            kind: IncidentKind::Recovered,
        })
        .unwrap();
    assert_eq!(
        back.status,
        HealthStatus::Failed,
        "probing first (half-open)"
    );
    let deg = r
        .trigger_failover(&HealthIncident {
            node: "n3".into(),
            kind: IncidentKind::Degraded,
        })
        .unwrap();
    assert_eq!(deg.status, HealthStatus::Degraded);
    assert!(r
        .trigger_failover(&HealthIncident {
            node: "zz".into(),
            kind: IncidentKind::Down
        })
        .is_err());
}
