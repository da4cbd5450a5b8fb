//! An ejection verdict is published while a worker, on a snapshot from before the ejection,
//! holds a lease on the node and completes it with a failure.
#![cfg(switchyard_loom)]

mod common;

use loom::thread;
use switchyard::{
    Completion, HealthPolicy, HealthStatus, NodeId, NodeSpec, Outcome, RouteError, Router, Task,
    Ticket,
};

/// Nodes "a" (the only one offering "x") and "b". No slow start, so a tick's verdicts never
/// depend on the wall clock (a real-time weight ramp would make loom's replays diverge).
fn fleet(consecutive_failures: u32) -> (Router, NodeId, Task) {
    let router = Router::builder()
        .capabilities(["x"])
        .health(HealthPolicy {
            consecutive_failures,
            slow_start_ms: 0,
            ..Default::default()
        })
        .nodes([NodeSpec::new("a").capabilities(["x"]), NodeSpec::new("b")])
        .build()
        .expect("valid fleet");
    let a = router.snapshot().node_id("a").expect("a is in the fleet");
    let needs_a = Task::new(1, 10, 10).require(router.resolve(&["x"]).unwrap());
    (router, a, needs_a)
}

/// Routes `n` plain tasks on a fresh reader, one lease at a time, and returns how many
/// landed on `a`.
fn fresh_routes_on(router: &Router, a: NodeId, n: u64) -> usize {
    let mut reader = router.reader();
    (0..n)
        .filter(|&i| {
            let (_, lease) = reader
                .route(&Task::new(100 + i, 10, 10))
                .expect("b always serves");
            lease.route().head() == a
        })
        .count()
}

fn health_of(router: &Router, name: &str) -> switchyard::NodeHealth {
    router
        .node_health()
        .into_iter()
        .find(|h| h.node == name)
        .expect("node in the report")
}

/// Thread 1 routes a task only "a" serves with a reader made before the ejection, wraps the
/// lease in a ticket (`Ticket::from_lease`) and completes it with a server error. Thread 2
/// marks "a" failed by hand, ticks, and routes on a fresh reader at once.
///
/// The task is counted once (or, if the ejection was published before thread 1 loaded its
/// snapshot, refused with `NoHealthyRoute`), the lease is released once, the failure shows
/// in `node_health`, and no reader made after the tick picks "a": one of two nodes serving
/// is not below the default panic threshold (0.5), so the ejection is honoured.
#[test]
fn manual_ejection_while_ticket_completes() {
    common::check(2, || {
        let (router, a, needs_a) = fleet(HealthPolicy::default().consecutive_failures);
        let mut reader = router.reader();
        let worker = thread::spawn(move || match reader.route(&needs_a) {
            Ok((_, lease)) => {
                assert_eq!(lease.route().head(), a);
                let ticket = Ticket::from_lease(lease, needs_a);
                ticket.complete(Completion::failure(Outcome::ServerError, 5.0));
                true
            }
            Err(e) => {
                // Only once the ejection is out: the reader's snapshot was already new.
                assert_eq!(e, RouteError::NoHealthyRoute);
                assert_eq!(reader.snapshot().node_status(a), Some(HealthStatus::Failed));
                false
            }
        });
        let control = {
            let router = router.clone();
            thread::spawn(move || {
                router.set_health("a", HealthStatus::Failed).unwrap();
                let report = router.tick();
                assert!(report.published, "{report:?}");
                let snap = router.snapshot();
                assert_eq!(snap.node_status(a), Some(HealthStatus::Failed));
                assert!(!snap.panic_mode(), "1 of 2 serving is not below 0.5");
                assert_eq!(fresh_routes_on(&router, a, 1), 0, "routed to ejected a");
            })
        };
        let routed = worker.join().unwrap();
        control.join().unwrap();

        let finished = router.finished();
        assert_eq!(finished.total(), u64::from(routed), "{finished:?}");
        assert_eq!(finished[Outcome::ServerError], u64::from(routed));
        let h = health_of(&router, "a");
        assert_eq!(h.status, HealthStatus::Failed);
        assert_eq!(h.metrics.errors, u64::from(routed));
        assert!(router.ledgers_are_zero());
        assert_eq!(router.in_flight(), 0);
        assert_eq!(fresh_routes_on(&router, a, 2), 0, "routed to ejected a");
        // Another tick keeps the verdict and stays out of panic mode.
        router.tick();
        assert!(!router.snapshot().panic_mode());
        assert_eq!(health_of(&router, "a").status, HealthStatus::Failed);
    });
}

/// The policy variant, with `consecutive_failures: 1`: the task's lease on "a" was taken
/// before anything happened; thread 1 completes it (`Lease::complete`) with a server error and
/// routes again, while thread 2 ticks (which ejects "a" if it already sees the failure) and
/// routes on a fresh reader.
///
/// Thread 1's next decision never picks "a" (its own failure streak gates it before any
/// tick); thread 2's fresh reader never does once the tick published the ejection; after
/// both, no fresh reader picks "a", the next tick ejects it if the racing one did not, the
/// failure is counted once and every lease is back.
#[test]
fn policy_ejection_while_lease_completes() {
    common::check(2, || {
        let (router, a, needs_a) = fleet(1);
        let (_, lease) = router.reader().route(&needs_a).expect("a serves x");
        assert_eq!(lease.route().head(), a);
        let worker = {
            let router = router.clone();
            thread::spawn(move || {
                lease.complete(Outcome::ServerError, 5.0);
                assert_eq!(fresh_routes_on(&router, a, 1), 0, "a's streak must gate it");
            })
        };
        let control = {
            let router = router.clone();
            thread::spawn(move || {
                router.tick();
                let ejected = router.snapshot().node_status(a) == Some(HealthStatus::Failed);
                let on_a = fresh_routes_on(&router, a, 1);
                if ejected {
                    assert_eq!(on_a, 0, "routed to a after its ejection was published");
                }
            })
        };
        worker.join().unwrap();
        control.join().unwrap();

        assert_eq!(
            fresh_routes_on(&router, a, 2),
            0,
            "routed to a after its failure"
        );
        router.tick();
        let snap = router.snapshot();
        assert_eq!(snap.node_status(a), Some(HealthStatus::Failed));
        assert!(!snap.panic_mode(), "1 of 2 serving is not below 0.5");
        let finished = router.finished();
        assert_eq!(finished.total(), 1, "{finished:?}");
        assert_eq!(finished[Outcome::ServerError], 1);
        let h = health_of(&router, "a");
        assert_eq!(h.status, HealthStatus::Failed);
        assert_eq!(h.metrics.errors, 1);
        assert!(router.ledgers_are_zero());
        assert_eq!(router.in_flight(), 0);
        assert_eq!(fresh_routes_on(&router, a, 2), 0, "routed to ejected a");
    });
}

/// Two leases on "a" complete with a server error at the same moment, on two threads, with
/// `consecutive_failures: 2`. The failure streak is one `fetch_add` per failure (an RMW, so
/// neither increment can be lost): after both, the streak is 2 and the hot path gates "a"
/// (a task only "a" serves finds no healthy route) before any tick; the tick then ejects it.
///
/// Issue #11 suspected a lost update here (a load then a store of the count). The load and
/// store are only in a success's reset, which is in effect an unconditional `store(0)` (the
/// load skips a redundant write) and so orders like one; failures only add. This model checks
/// that two concurrent failures never count as one.
#[test]
fn two_concurrent_failures_both_count() {
    common::check(2, || {
        let (router, a, needs_a) = fleet(2);
        let mut reader = router.reader();
        let (_, l1) = reader.route(&needs_a).expect("a serves x");
        let (_, l2) = reader.route(&needs_a).expect("a has room for two");
        assert_eq!((l1.route().head(), l2.route().head()), (a, a));
        let other = thread::spawn(move || l1.complete(Outcome::ServerError, 5.0));
        l2.complete(Outcome::ServerError, 5.0);
        other.join().unwrap();

        assert_eq!(
            router.reader().route(&needs_a).err(),
            Some(RouteError::NoHealthyRoute),
            "two failures counted as one: a's streak did not gate it"
        );
        router.tick();
        assert_eq!(router.snapshot().node_status(a), Some(HealthStatus::Failed));
        let finished = router.finished();
        assert_eq!(finished[Outcome::ServerError], 2, "{finished:?}");
        assert!(router.ledgers_are_zero());
    });
}
