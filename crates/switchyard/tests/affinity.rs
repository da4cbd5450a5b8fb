//! Prefix affinity as a soft factor: a task whose affinity key was recently routed meets that
//! node in its power-of-two-choices pair and wins it on equal load (its predicted prefill is
//! discounted), but loses it when that node is much busier.
// Not library code: std's primitives are fine here (the shim rule is for src/).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
use switchyard::{Headroom, NodeSpec, Priority, Router, ScoringWeights, Task};

fn fleet(affinity: f64) -> Router {
    Router::builder()
        .headroom(Headroom { shares: [1.0; 4] })
        .weights(ScoringWeights {
            affinity,
            ..ScoringWeights::default()
        })
        .nodes((0..10).map(|i| {
            NodeSpec::new(format!("n{i}"))
                .max_concurrency(16)
                .speed(10.0, 1_000.0, 50.0)
        }))
        .seed(5)
        .build()
        .unwrap()
}

fn keyed(id: u64, key: u64) -> Task {
    Task::new(id, 20_000, 50)
        .affinity(key)
        .priority(Priority::Critical)
}

/// How many of 50 keys, each routed twice on an idle fleet, land on the same node again.
fn repeats_on_the_same_node(r: &Router) -> usize {
    let mut reader = r.reader();
    (0..50u64)
        .filter(|&k| {
            let key = 0xA5A5_0000 + k;
            let (_, first) = reader.route(&keyed(2 * k, key)).unwrap();
            let node = first.route().head();
            drop(first);
            let (_, again) = reader.route(&keyed(2 * k + 1, key)).unwrap();
            again.route().head() == node
        })
        .count()
}

#[test]
fn a_repeated_prefix_returns_to_its_node_on_an_idle_fleet() {
    assert_eq!(repeats_on_the_same_node(&fleet(0.5)), 50);
    // Without affinity, a repeat lands on the same node about as often as chance allows.
    let off = repeats_on_the_same_node(&fleet(0.0));
    assert!(off < 25, "{off} of 50 without affinity");
}

#[test]
fn a_busy_node_loses_its_prefix_to_an_idle_one() {
    let r = Router::builder()
        .headroom(Headroom { shares: [1.0; 4] })
        .capabilities(["chat", "a", "b"])
        .node(
            NodeSpec::new("a")
                .capabilities(["chat", "a"])
                .max_concurrency(16)
                .speed(10.0, 1_000.0, 50.0),
        )
        .node(
            NodeSpec::new("b")
                .capabilities(["chat", "b"])
                .max_concurrency(16)
                .speed(10.0, 1_000.0, 50.0),
        )
        .build()
        .unwrap();
    let chat = r.resolve(&["chat"]).unwrap();
    let mut reader = r.reader();
    let (_, first) = reader.route(&keyed(1, 77).require(chat)).unwrap();
    let node = first.route().head();
    drop(first);
    let name = r.snapshot().node_name(node).unwrap().to_string();
    let only_there = r.resolve(&[name.as_str()]).unwrap();
    // Equal load: the prefix stays.
    let (_, again) = reader.route(&keyed(2, 77).require(chat)).unwrap();
    assert_eq!(again.route().head(), node);
    drop(again);
    // Fill its node to 15 of 16: utilisation inflates its score far more than half its
    // prefill saves, so the idle node wins the pair.
    let held: Vec<_> = (0..15)
        .map(|i| {
            reader
                .route(&Task::new(100 + i, 1, 1).require(only_there))
                .unwrap()
        })
        .collect();
    let (_, moved) = reader.route(&keyed(3, 77).require(chat)).unwrap();
    assert_ne!(moved.route().head(), node, "the busy node kept the prefix");
    drop(held);
}
