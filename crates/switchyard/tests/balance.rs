//! The LoadBalancer: utilisation-normalised placement on a heterogeneous fleet, rebalance,
//! and spike strategies.
// Not library code: std's primitives are fine here (the shim rule is for src/).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
use std::sync::Arc;

use switchyard::spec::{ClassAction, LoadBalancer};
use switchyard::{ManualClock, NodeSpec, Priority, Router, Task};

fn hetero() -> Router {
    // Same speed, different sizes: a balanced fleet is equally *full*, not equally loaded.
    Router::builder()
        .clock(Arc::new(ManualClock::new()))
        .headroom(switchyard::Headroom { shares: [1.0; 4] })
        .node(
            NodeSpec::new("big")
                .max_concurrency(300)
                .max_tokens_in_flight(1_000_000),
        )
        .node(
            NodeSpec::new("mid")
                .max_concurrency(200)
                .max_tokens_in_flight(1_000_000),
        )
        .node(
            NodeSpec::new("small")
                .max_concurrency(100)
                .max_tokens_in_flight(1_000_000),
        )
        .build()
        .unwrap()
}

#[test]
fn a_heterogeneous_fleet_balances_by_utilisation() {
    let r = hetero();
    let tasks: Vec<Task> = (0..300).map(|i| Task::new(i, 100, 10)).collect();
    let p = r.distribute_load(&tasks);
    assert!(p.unplaced.is_empty());
    assert_eq!(p.leases.len(), 300);
    let count = |n: &str| {
        p.distribution
            .node_allocations
            .iter()
            .find(|(x, _)| x == n)
            .map_or(0, |(_, v)| v.len())
    };
    // Proportional to capacity (3 : 2 : 1), within a few tasks.
    assert!((140..=160).contains(&count("big")), "big {}", count("big"));
    assert!((90..=110).contains(&count("mid")), "mid {}", count("mid"));
    assert!(
        (40..=60).contains(&count("small")),
        "small {}",
        count("small")
    );
    let b = &p.distribution.balance;
    assert!(b.deviation < 0.1, "utilisation deviation {}", b.deviation);
    assert!(b.distribution_score > 0.9);
    assert!((b.utilization.cpu - 0.5).abs() < 1e-9, "300 of 600 slots");
    assert_eq!(p.distribution.health.len(), 3);
    let first = &p.distribution.node_allocations[0].1[0];
    assert!(first.expected_duration_ms > 0.0 && first.resources.tokens == 110);
    drop(p.leases);
    assert!(r.ledgers_are_zero());
}

#[test]
fn rebalance_reports_hot_nodes_and_republishes() {
    let r = hetero();
    let mut reader = r.reader();
    // Pile work on "small" by hand: lease only what lands there.
    let small = r.snapshot().node_id("small").unwrap();
    let held: Vec<_> = (0..2_000)
        .filter_map(|i| {
            let l = reader.route(&Task::new(i, 100, 10)).ok()?.1;
            (l.route().head() == small).then_some(l)
        })
        .take(60)
        .collect();
    let d = switchyard::Dispatcher::builder(r.clone())
        .workers(1)
        .control_interval(None)
        .build(switchyard::dispatcher::NoBackend)
        .unwrap();
    let adj = r.rebalance(&d.metrics());
    assert!(adj.deviation > 1.0, "{adj:?}");
    assert_eq!(adj.hot_nodes[0].0, "small");
    assert!(adj.republished);
    drop(held);
    let calm = r.rebalance(&d.metrics());
    assert_eq!(calm.deviation, 0.0);
    assert!(!calm.republished);
    assert!(r.optimize_distribution().epoch >= 1);
}

#[test]
fn spike_strategies_shed_by_class() {
    let r = hetero();
    let cap = r.capacity_per_sec();
    // 600 slots; the model's 1000-in/100-out task takes 20 + 200 + 2000 ms.
    assert!((cap - 600.0 / 2.22).abs() < 1.0, "capacity {cap}");
    let at = |x: f64| r.handle_spikes(x * cap);
    assert_eq!(at(0.5).actions, [ClassAction::Admit; 4]);
    assert_eq!(at(0.9).action(Priority::Low), ClassAction::Queue);
    let s = at(1.2);
    assert_eq!(
        (s.action(Priority::Low), s.action(Priority::Normal)),
        (ClassAction::Shed, ClassAction::Queue)
    );
    let s = at(2.0);
    assert_eq!(
        s.actions,
        [
            ClassAction::Admit,
            ClassAction::Queue,
            ClassAction::Shed,
            ClassAction::Shed
        ]
    );
    assert!((s.ratio - 2.0).abs() < 1e-9);
    assert_eq!(
        r.handle_spikes(f64::NAN).action(Priority::Critical),
        ClassAction::Admit
    );
    let empty = Router::builder().build().unwrap();
    assert_eq!(
        empty.handle_spikes(1.0).action(Priority::Normal),
        ClassAction::Shed,
        "no capacity at all"
    );
}
