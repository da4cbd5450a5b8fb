//! Capability scoring (the seed's CapabilityAwareRouter): scores move routing, invalid input
//! changes nothing, weights follow measured quality without compounding, thresholds follow
//! the fleet's history.
// Not library code: std's primitives are fine here (the shim rule is for src/).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
use std::collections::HashMap;
use std::sync::Arc;

use switchyard::spec::{
    CapabilityAwareRouter, CapabilityScores, HealthWindow, HistoricalData, PerformanceMetrics,
};
use switchyard::{
    ChainSpec, ConfigError, HealthPolicy, ManualClock, NodeSpec, RouteError, Router, Task,
};

fn router(nodes: impl IntoIterator<Item = NodeSpec>) -> Router {
    let r = Router::builder()
        .clock(Arc::new(ManualClock::new()))
        .capabilities(["chat", "code"])
        .nodes(nodes)
        .build()
        .unwrap();
    r.tick();
    r
}

fn both(name: &str) -> NodeSpec {
    NodeSpec::new(name)
        .capabilities(["chat", "code"])
        .max_concurrency(1_000)
}

/// Routes `k` tasks needing `caps`, dropping each lease at once; picks per node.
fn shares(r: &Router, caps: &[&str], k: u64) -> HashMap<String, u64> {
    let task_caps = r.resolve(caps).unwrap();
    let mut reader = r.reader();
    reader.reseed(7);
    let snap = r.snapshot();
    let mut picks = HashMap::new();
    for i in 0..k {
        let (_, lease) = reader
            .route(&Task::new(i, 200, 20).require(task_caps))
            .unwrap();
        let name = snap.node_name(lease.route().head()).unwrap().to_string();
        *picks.entry(name).or_insert(0) += 1;
        drop(lease);
    }
    picks
}

fn spec<'a>(specs: &'a [NodeSpec], name: &str) -> &'a NodeSpec {
    specs.iter().find(|s| s.name == name).unwrap()
}

fn perf(success_rate: f64, efficiency: f64) -> PerformanceMetrics {
    PerformanceMetrics {
        success_rate,
        efficiency,
        ..Default::default()
    }
}

#[test]
fn a_low_score_moves_tasks_needing_that_capability_away() {
    let r = router(["a", "b", "c"].map(both));
    let before = shares(&r, &["code"], 3_000);
    let a_before = before.get("a").copied().unwrap_or(0);
    assert!(a_before > 700, "even at first: {before:?}");

    let changed = r
        .incorporate_scores(&CapabilityScores::new().score("a", "code", 0.1))
        .unwrap();
    assert_eq!(changed, 1);
    // Not published until the next tick.
    assert!(shares(&r, &["code"], 300).get("a").copied().unwrap_or(0) > 50);
    r.tick();
    let after = shares(&r, &["code"], 3_000);
    let a_after = after.get("a").copied().unwrap_or(0);
    assert!(
        a_after * 10 < a_before,
        "code tasks leave a: {a_before} before, {a_after} after ({after:?})"
    );
    // Chat tasks do not care about a's code score.
    let chat = shares(&r, &["chat"], 3_000);
    assert!(chat.get("a").copied().unwrap_or(0) > 700, "{chat:?}");
    // The score is in the spec (so a config reload or update keeps seeing it).
    assert_eq!(
        spec(&r.node_specs(), "a").capability_scores,
        vec![("code".to_string(), 0.1)]
    );
    // The same score again changes nothing; restoring it brings a back.
    assert_eq!(
        r.incorporate_scores(&CapabilityScores::new().score("a", "code", 0.1))
            .unwrap(),
        0
    );
    let mut back = CapabilityScores::new();
    back.insert("a", "code", 1.0);
    back.insert("b", "code", 1.0); // unscored counts as 1: no change
    assert_eq!(r.incorporate_scores(&back).unwrap(), 1);
    r.tick();
    assert!(shares(&r, &["code"], 3_000).get("a").copied().unwrap_or(0) > 700);
}

#[test]
fn scores_keep_live_counters() {
    let r = router(["a", "b"].map(both));
    let (_, lease) = r.reader().route(&Task::new(1, 10, 10)).unwrap();
    r.incorporate_scores(
        &CapabilityScores::new()
            .score("a", "chat", 0.5)
            .score("b", "chat", 0.5),
    )
    .unwrap();
    r.tick();
    assert_eq!(r.in_flight(), 1, "the lease survived the update");
    drop(lease);
    assert!(r.ledgers_are_zero());
}

#[test]
fn invalid_scores_give_typed_errors_and_change_nothing() {
    let r = Router::builder()
        .clock(Arc::new(ManualClock::new()))
        .capabilities(["chat", "code", "vision"])
        .node(both("a"))
        .node(NodeSpec::new("b").capabilities(["chat"]))
        .build()
        .unwrap();
    let before = r.node_specs();
    let epoch = r.tick().epoch;
    let cases = [
        ConfigError::UnknownNode("zz".into()),
        ConfigError::UnknownCapability("audio".into()),
        ConfigError::InvalidSetting {
            field: "capability_scores",
            reason: "a node can only be scored on a capability it offers",
        },
    ];
    for want in cases {
        // A valid score comes first in each set: it must not be applied either.
        assert_eq!(
            r.incorporate_scores(&scores_with_bad(&want)).unwrap_err(),
            want
        );
    }
    for bad in [f64::NAN, -0.1, 1.5, f64::INFINITY] {
        let e = r
            .incorporate_scores(
                &CapabilityScores::new()
                    .score("a", "chat", 0.3)
                    .score("a", "code", bad),
            )
            .unwrap_err();
        match e {
            ConfigError::InvalidNumber {
                owner,
                field: "capability_score",
                value,
            } => {
                assert_eq!(owner, "a");
                assert!(value.to_bits() == bad.to_bits());
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(r.node_specs(), before, "nothing changed");
    assert_eq!(r.tick().epoch, epoch, "nothing to publish");
    assert!(CapabilityScores::new().is_empty());
    assert_eq!(r.incorporate_scores(&CapabilityScores::new()).unwrap(), 0);
}

/// A valid score followed by the bad one `want` describes.
fn scores_with_bad(want: &ConfigError) -> CapabilityScores {
    let valid = CapabilityScores::new().score("a", "chat", 0.3);
    match want {
        ConfigError::UnknownNode(n) => valid.score(n.clone(), "code", 0.5),
        ConfigError::UnknownCapability(c) => valid.score("a", c.clone(), 0.5),
        _ => valid.score("b", "vision", 0.5),
    }
}

#[test]
fn weights_follow_measured_quality_without_compounding() {
    let r = router(["a", "b", "c", "d"].map(|n| both(n).weight(2.0)));
    // a fails half its requests: 2 × 0.5² = 0.5.
    let w = r
        .update_routing_weights(&[("a".into(), perf(0.5, 1.0)), ("b".into(), perf(1.0, 1.0))])
        .unwrap();
    assert_eq!(w, vec![("a".to_string(), 0.5), ("b".to_string(), 2.0)]);
    // The configured weight stays; the factor sits beside it in the controller.
    assert_eq!(spec(&r.node_specs(), "a").weight, 2.0);
    // Again with the same metrics: the same weight, not 0.125.
    let w = r
        .update_routing_weights(&[("a".into(), perf(0.5, 1.0))])
        .unwrap();
    assert_eq!(w, vec![("a".to_string(), 0.5)]);
    r.tick();
    // Weights shape the draw: a (0.5 against 2) gets clearly less than a fair quarter.
    let low = shares(&r, &[], 4_000).get("a").copied().unwrap_or(0);
    assert!(low < 600, "a at a quarter of the weight: {low} of 4000");
    // It recovers: back to its configured weight.
    let w = r
        .update_routing_weights(&[("a".into(), perf(1.0, 1.0))])
        .unwrap();
    assert_eq!(w, vec![("a".to_string(), 2.0)]);
    r.tick();
    let back = shares(&r, &[], 4_000).get("a").copied().unwrap_or(0);
    assert!(back > 800, "a back to a fair share: {back} of 4000");
    // Slower than modelled lowers, faster raises, both clamped.
    let w = r
        .update_routing_weights(&[
            ("a".into(), perf(1.0, 0.5)),
            ("b".into(), perf(1.0, 10.0)),
            ("c".into(), perf(0.0, 1.0)),
            ("d".into(), perf(0.9, 1.0)),
            ("a".into(), perf(1.0, 0.25)), // the last metrics of a node win
        ])
        .unwrap();
    assert_eq!(w.len(), 4);
    assert_eq!(w[0], ("a".to_string(), 0.5));
    assert_eq!(w[1], ("b".to_string(), 8.0));
    assert_eq!(w[2], ("c".to_string(), 2.0 * 0.05));
    assert!((w[3].1 - 2.0 * 0.81).abs() < 1e-12);
}

#[test]
fn the_quality_factor_sits_beside_the_configured_weight() {
    let r = router([both("a"), both("b")]);
    let w = r
        .update_routing_weights(&[("a".into(), perf(0.5, 1.0))])
        .unwrap();
    assert_eq!(w, vec![("a".to_string(), 0.25)]);
    assert_eq!(
        spec(&r.node_specs(), "a").weight,
        1.0,
        "the configured weight is untouched"
    );
    // An operator (or a config reload) sets a new weight: the factor applies to it.
    r.update_node(spec(&r.node_specs(), "a").clone().weight(3.0))
        .unwrap();
    let w = r
        .update_routing_weights(&[("a".into(), perf(0.5, 1.0))])
        .unwrap();
    assert_eq!(w, vec![("a".to_string(), 0.75)]);
    // Quality restored: the configured weight again; a clone shares the router's state.
    let w = r
        .clone()
        .update_routing_weights(&[("a".into(), perf(1.0, 1.0))])
        .unwrap();
    assert_eq!(w, vec![("a".to_string(), 3.0)]);
}

#[test]
fn invalid_performance_changes_nothing() {
    let r = router([both("a"), both("b")]);
    let before = r.node_specs();
    let e = r
        .update_routing_weights(&[("a".into(), perf(0.5, 1.0)), ("x".into(), perf(1.0, 1.0))])
        .unwrap_err();
    assert_eq!(e, ConfigError::UnknownNode("x".into()));
    for (s, eff, field) in [
        (f64::NAN, 1.0, "success_rate"),
        (1.2, 1.0, "success_rate"),
        (-0.1, 1.0, "success_rate"),
        (1.0, -1.0, "efficiency"),
        (1.0, f64::INFINITY, "efficiency"),
    ] {
        let e = r
            .update_routing_weights(&[("a".into(), perf(0.5, 1.0)), ("b".into(), perf(s, eff))])
            .unwrap_err();
        assert!(
            matches!(&e, ConfigError::InvalidNumber { owner, field: f, .. } if owner == "b" && *f == field),
            "{e:?}"
        );
    }
    assert_eq!(r.node_specs(), before);
    assert_eq!(r.update_routing_weights(&[]).unwrap(), vec![]);
}

/// Ten nodes × `n` windows: mostly near the model, with a tail.
fn history(policy: HealthPolicy) -> HistoricalData {
    let mut h = HistoricalData::new().starting_from(policy);
    for node in 0..10 {
        for w in 0..10 {
            let i = node * 10 + w; // 0..100
                                   // Latency factors 1.0 .. 2.98 in steps of 0.02: p95 = 1.0 + 94 × 0.02 = 2.88.
            let factor = 1.0 + i as f64 * 0.02;
            // Errors 0..=19 per 100 requests, i % 20, each five times: the 5th lowest success
            // rate (p5, nearest rank of 100) is 0.81.
            let errors = (i % 20) as u64;
            h.record(&format!("n{node}"), HealthWindow::new(100, errors, factor));
        }
    }
    h
}

#[test]
fn thresholds_follow_the_fleets_history() {
    let r = router([both("a")]);
    let p = r
        .adjust_thresholds(&history(HealthPolicy::default()))
        .unwrap();
    // p95 of factors 2.88 × 1.5 = 4.32; p5 of success rates 0.81 − 0.05 = 0.76.
    assert!((p.degraded_latency_factor - 4.32).abs() < 1e-9, "{p:?}");
    assert!((p.degraded_success_rate - 0.76).abs() < 1e-9, "{p:?}");
    // Isolated errors (streak 1) never reach the gate: it stays.
    assert_eq!(p.consecutive_failures, 3);
    // Everything else comes from the starting policy.
    assert_eq!(p.base_ejection_ms, HealthPolicy::default().base_ejection_ms);

    // A fleet that runs at its model keeps the defaults (the rule never tightens them).
    let mut calm = HistoricalData::new();
    for i in 0..20 {
        calm.record(&format!("n{}", i % 4), HealthWindow::new(50, 0, 1.0));
    }
    let p = r.adjust_thresholds(&calm).unwrap();
    assert_eq!(p.degraded_latency_factor, 3.0);
    assert_eq!(p.degraded_success_rate, 0.9);

    // A very slow, flaky fleet: capped at 20 and at the failure-rate floor.
    let mut bad = HistoricalData::new().starting_from(HealthPolicy {
        failure_rate: 0.4,
        ..Default::default()
    });
    for i in 0..20 {
        bad.record("n", HealthWindow::new(10, 7, 50.0 + i as f64));
    }
    let p = r.adjust_thresholds(&bad).unwrap();
    assert_eq!(p.degraded_latency_factor, 20.0);
    assert!((p.degraded_success_rate - 0.6).abs() < 1e-12, "{p:?}");
}

#[test]
fn flapping_raises_the_streak_gate() {
    let r = router([both("a")]);
    let mut h = HistoricalData::new();
    for i in 0..40u64 {
        // One window in four: a burst of 4 or 5 failures in 100 requests that otherwise go
        // well (success rate ≥ 0.95, over the derived threshold).
        let w = if i % 4 == 0 {
            HealthWindow::new(100, 5, 1.0).streak(4 + (i / 4) % 2)
        } else {
            HealthWindow::new(100, 0, 1.0)
        };
        h.record(&format!("n{}", i % 5), w);
    }
    let p = r.adjust_thresholds(&h).unwrap();
    // p90 of the false trips' streaks (4 and 5) is 5: the gate becomes 6.
    assert_eq!(p.consecutive_failures, 6, "{p:?}");
    // A disabled gate stays disabled.
    let off = h.clone().starting_from(HealthPolicy {
        consecutive_failures: 0,
        ..Default::default()
    });
    assert_eq!(r.adjust_thresholds(&off).unwrap().consecutive_failures, 0);
    // Bursts on a node that is failing anyway are no false trips.
    let mut failing = HistoricalData::new();
    for _ in 0..20 {
        failing.record("n", HealthWindow::new(10, 6, 1.0).streak(6));
    }
    assert_eq!(
        r.adjust_thresholds(&failing).unwrap().consecutive_failures,
        3
    );
}

#[test]
fn derived_thresholds_are_applied() {
    // A node 3.5× slower than modelled is degraded under the default (3) but not under the
    // derived threshold of a fleet that routinely runs at 3×.
    let clock = ManualClock::new();
    let r = Router::builder()
        .clock(Arc::new(clock.clone()))
        .node(NodeSpec::new("slow").max_concurrency(100))
        .build()
        .unwrap();
    clock.advance_ms(60_000);
    let mut reader = r.reader();
    for i in 0..20 {
        let (_, lease) = reader.route(&Task::new(i, 100, 10)).unwrap();
        let predicted = lease.predicted_latency_ms();
        lease.complete(switchyard::Outcome::Success, predicted * 3.5);
    }
    r.tick();
    let status = || {
        let s = r.snapshot();
        s.node_status(s.node_id("slow").unwrap()).unwrap()
    };
    assert_eq!(status(), switchyard::HealthStatus::Degraded);
    let mut h = HistoricalData::new();
    for _ in 0..20 {
        h.record("slow", HealthWindow::new(100, 0, 3.0));
    }
    let p = r.adjust_thresholds(&h).unwrap();
    assert_eq!(p.degraded_latency_factor, 4.5);
    r.tick();
    assert_eq!(status(), switchyard::HealthStatus::Healthy);
}

#[test]
fn bad_history_is_refused_and_changes_nothing() {
    let r = router([both("a")]);
    let refused = |h: &HistoricalData| r.adjust_thresholds(h).unwrap_err();
    let mut short = HistoricalData::new();
    for _ in 0..9 {
        short.record("a", HealthWindow::new(10, 0, 1.0));
    }
    short.record("a", HealthWindow::new(0, 0, 1.0)); // empty windows do not count
    assert_eq!(short.windows(), 10);
    assert!(matches!(
        refused(&short),
        ConfigError::InvalidSetting {
            field: "history",
            ..
        }
    ));
    for (w, field) in [
        (HealthWindow::new(10, 0, f64::NAN), "history.latency_factor"),
        (HealthWindow::new(10, 0, 0.0), "history.latency_factor"),
        (HealthWindow::new(10, 11, 1.0), "history.errors"),
        (
            HealthWindow::new(10, 2, 1.0).streak(3),
            "history.longest_streak",
        ),
    ] {
        let mut h = history(HealthPolicy::default());
        h.record("n3", w);
        let e = refused(&h);
        let got = match &e {
            ConfigError::InvalidNumber { field, owner, .. } => {
                assert_eq!(owner, "n3");
                *field
            }
            ConfigError::InvalidSetting { field, .. } => *field,
            other => panic!("{other:?}"),
        };
        assert_eq!(got, field);
    }
    // A starting policy the router refuses is refused too.
    let e = r
        .adjust_thresholds(
            &history(HealthPolicy::default()).starting_from(HealthPolicy {
                half_open_probes: 0,
                ..Default::default()
            }),
        )
        .unwrap_err();
    assert!(matches!(e, ConfigError::InvalidSetting { .. }));
    assert_eq!(history(HealthPolicy::default()).nodes().len(), 10);
    assert_eq!(
        *history(HealthPolicy::default()).policy(),
        HealthPolicy::default()
    );
}

#[test]
fn capability_aware_route_names_capabilities_and_scores() {
    let r = router([
        both("a")
            .capability_score("code", 0.9)
            .capability_score("chat", 0.6),
        both("b").capability_score("code", 0.2),
    ]);
    let code = r.resolve(&["code"]).unwrap();
    let task = Task::new(1, 100, 10).require(code);
    let view = r.capability_aware_route(&task).unwrap();
    // b's 0.2 against a's 0.9: a wins every pair.
    assert_eq!(
        r.snapshot().route_name(view.route.primary().route.route),
        Some("a")
    );
    assert_eq!(view.required_capabilities, vec![("code".to_string(), 0.0)]);
    let scores: HashMap<String, f64> = view.scores.iter().cloned().collect();
    assert_eq!(scores.len(), 2, "every capability the primary offers");
    assert!((scores["chat"] - 0.6).abs() < 1e-6);
    assert!((scores["code"] - 0.9).abs() < 1e-6);
    assert!((view.confidence - view.route.primary().confidence).abs() < 1e-12);
    assert!(
        view.confidence > 0.85 && view.confidence <= 0.9,
        "success rate 1 × score 0.9: {}",
        view.confidence
    );
    assert_eq!(r.in_flight(), 0, "nothing reserved");

    // A chain's score on a capability is the lowest of its stages that offer it.
    let r2 = router([
        NodeSpec::new("a")
            .capabilities(["code"])
            .capability_score("code", 0.9),
        NodeSpec::new("g").capabilities(["chat"]),
    ]);
    r2.add_chain(ChainSpec::new("guarded", ["g", "a"]).capabilities(["chat", "code"]))
        .unwrap();
    r2.tick();
    let both_caps = r2.resolve(&["chat", "code"]).unwrap();
    let view = r2
        .capability_aware_route(&Task::new(2, 10, 10).require(both_caps))
        .unwrap();
    assert_eq!(
        r2.snapshot().route_name(view.route.primary().route.route),
        Some("guarded")
    );
    let scores: HashMap<String, f64> = view.scores.into_iter().collect();
    assert_eq!(scores["chat"], 1.0, "g is unscored on chat");
    assert!((scores["code"] - 0.9).abs() < 1e-6, "only a offers code");
    assert_eq!(view.required_capabilities.len(), 2);
    // Errors are the planner's.
    let vision = Router::builder().capabilities(["vision"]).build().unwrap();
    let v = vision.resolve(&["vision"]).unwrap();
    assert_eq!(
        vision.capability_aware_route(&Task::new(3, 1, 1).require(v)),
        Err(RouteError::EmptyFleet)
    );
}

#[test]
fn a_node_never_measured_is_presumed_like_its_measured_peers() {
    // a and b run five times faster than modelled; c joined late and has no completion. Were
    // c scored at its model's latency it would look five times slower than its peers and,
    // with low load, never get the request that would measure it.
    let clock = ManualClock::new();
    let r = Router::builder()
        .clock(Arc::new(clock.clone()))
        .capabilities(["chat"])
        .nodes(["a", "b", "c"].map(|n| {
            NodeSpec::new(n)
                .capabilities(["chat"])
                .max_concurrency(1_000)
        }))
        .build()
        .unwrap();
    r.pause_node("c", std::time::Duration::from_secs(1))
        .unwrap();
    r.tick();
    let mut reader = r.reader();
    for i in 0..40 {
        let (_, lease) = reader.route(&Task::new(i, 200, 20)).unwrap();
        let head = r
            .snapshot()
            .node_name(lease.route().head())
            .unwrap()
            .to_string();
        assert_ne!(head, "c", "c is paused");
        let predicted = lease.predicted_latency_ms();
        lease.complete(switchyard::Outcome::Success, predicted * 0.2);
    }
    clock.advance_ms(2_000);
    r.tick();
    let picks = shares(&r, &[], 300);
    let c = picks.get("c").copied().unwrap_or(0);
    assert!(
        (60..=140).contains(&c),
        "c should get about a third of 300 decisions: {picks:?}"
    );
}
