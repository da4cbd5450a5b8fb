//! Node removal while a lease on it is out.
#![cfg(switchyard_loom)]

mod common;

use loom::thread;
use switchyard::{NodeSpec, RouteError, Router, Task};

/// A lease taken on "a" is dropped while another thread removes "a" and publishes, and a
/// second reader routes meanwhile (on "a", or on the empty fleet once the removal is out).
fn race() -> Router {
    let router = common::router([NodeSpec::new("a").max_concurrency(2)]);
    let task = Task::new(1, 10, 10);
    let (_, lease) = router.reader().route(&task).expect("a has room");
    let remover = {
        let router = router.clone();
        thread::spawn(move || {
            router.remove_node("a").unwrap();
            router.tick();
        })
    };
    let other = {
        let mut reader = router.reader();
        thread::spawn(move || match reader.route(&Task::new(2, 10, 10)) {
            Ok((_, lease)) => drop(lease),
            Err(e) => assert_eq!(e, RouteError::EmptyFleet),
        })
    };
    drop(lease);
    remover.join().unwrap();
    other.join().unwrap();
    router
}

/// The released resources land in the removed node's own ledger: every ledger ends at zero
/// and nothing is in flight.
#[test]
fn remove_node_while_lease_out() {
    common::check(2, || {
        let router = race();
        assert!(router.ledgers_are_zero());
        assert_eq!(router.in_flight(), 0);
        assert_eq!(router.tick().nodes, 0);
    });
}

/// Once every lease and reader is gone, a removed node leaves the report ("draining": removed
/// nodes whose leases are still out) within a few ticks.
#[test]
fn removed_node_leaves_report_once_drained() {
    common::check(2, || {
        let router = race();
        let reports: Vec<_> = (0..4).map(|_| router.tick()).collect();
        assert!(
            reports.iter().any(|r| r.draining == 0),
            "a removed node with nothing out is still draining after 4 ticks: {reports:?}"
        );
    });
}
