//! Prefix affinity as a soft factor: a task whose affinity key was recently routed meets that
//! node in its power-of-two-choices pair and wins it on equal load (its predicted prefill is
//! discounted), but loses it when that node is much busier.
// Not library code: std's primitives are fine here (the shim rule is for src/).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
use switchyard::{Headroom, NodeSpec, Prefix, Priority, Router, ScoringWeights, Task};

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
    Task::new(id, 2_000, 50)
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
    // Fill its node to 15 of 16: utilisation inflates its score far more than its prefill
    // saves, so the idle node wins the pair.
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

fn blocks(ids: impl IntoIterator<Item = u64>) -> Task {
    Task::new(0, 8_000, 50)
        .prefix(Prefix::from_blocks(ids))
        .priority(Priority::Critical)
}

#[test]
fn a_conversations_next_turn_returns_to_the_node_holding_its_earlier_turns() {
    let r = fleet(1.0);
    let mut reader = r.reader();
    let system = 0xC0DE;
    let mut same = 0;
    for c in 0..50u64 {
        let turn1: Vec<u64> = std::iter::once(system)
            .chain((0..12).map(|b| c << 32 | b))
            .collect();
        let (_, first) = reader.route(&blocks(turn1.clone())).unwrap();
        let node = first.route().head();
        drop(first);
        // The next turn sends the whole first turn again, then more.
        let turn2 = turn1.iter().copied().chain((100..104).map(|b| c << 32 | b));
        let (_, next) = reader.route(&blocks(turn2)).unwrap();
        same += usize::from(next.route().head() == node);
    }
    assert_eq!(same, 50);
}

#[test]
fn a_system_prompt_shared_by_everyone_does_not_pin_them_to_one_node() {
    let r = fleet(1.0);
    let mut reader = r.reader();
    let mut heads = std::collections::BTreeSet::new();
    let mut held = Vec::new();
    for c in 0..40u64 {
        let ids = std::iter::once(7).chain((0..30).map(|b| c << 32 | b));
        let (_, lease) = reader.route(&blocks(ids)).unwrap();
        heads.insert(lease.route().head());
        held.push(lease);
    }
    assert!(
        heads.len() >= 5,
        "40 prompts landed on {} nodes",
        heads.len()
    );
}

#[test]
fn the_longest_shared_prefix_wins_over_a_shorter_one() {
    // Each node also has a capability of its own name, so a test can fill one.
    let r = Router::builder()
        .headroom(Headroom { shares: [1.0; 4] })
        .capabilities((0..10).map(|i| format!("n{i}")))
        .nodes((0..10).map(|i| {
            NodeSpec::new(format!("n{i}"))
                .capabilities([format!("n{i}")])
                .max_concurrency(16)
                .speed(10.0, 1_000.0, 50.0)
        }))
        .seed(5)
        .build()
        .unwrap();
    let mut reader = r.reader();
    let mut checked = 0;
    for c in 0..40u64 {
        let base = c << 32;
        let long: Vec<u64> = (0..3).chain(50..60).map(|b| base | b).collect();
        // Two earlier prompts: one shares 13 blocks with the probe, then one (routed later,
        // so it holds the newer hint for the first 3 blocks) shares 3; its own node is full
        // meanwhile, so it goes elsewhere.
        let (_, b) = reader.route(&blocks(long.clone())).unwrap();
        let nb = b.route().head();
        drop(b);
        let name = r.snapshot().node_name(nb).unwrap().to_string();
        let there = r.resolve(&[name.as_str()]).unwrap();
        let fill: Vec<_> = (0..16)
            .map(|i| reader.route(&Task::new(i, 1, 1).require(there)).unwrap())
            .collect();
        let short = (0..3).chain([99]).map(|b| base | b);
        let (_, a) = reader.route(&blocks(short)).unwrap();
        let na = a.route().head();
        drop((a, fill));
        if na == nb {
            continue;
        }
        checked += 1;
        let probe = long.iter().copied().chain([base | 5000]);
        let (_, p) = reader.route(&blocks(probe)).unwrap();
        assert_eq!(p.route().head(), nb, "conversation {c}");
    }
    assert!(checked >= 10, "only {checked} conversations had two nodes");
}
