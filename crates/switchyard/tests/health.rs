//! Health verdicts, deterministic with a manual clock: fast ejection, back-off, half-open
//! probes, recovery with slow start, rate limits that never eject, the ejection cap and the
//! panic threshold.
// Not library code: std's primitives are fine here (the shim rule is for src/).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
use std::collections::HashMap;
use std::sync::Arc;

use switchyard::{
    HealthPolicy, HealthStatus, ManualClock, NodeSpec, Outcome, RouteError, Router, Task,
};

fn fleet(n: usize, policy: HealthPolicy) -> (Router, ManualClock) {
    let clock = ManualClock::new();
    let r = Router::builder()
        .clock(Arc::new(clock.clone()))
        .health(policy)
        .nodes((0..n).map(|i| NodeSpec::new(format!("n{i}")).max_concurrency(1_000)))
        .build()
        .unwrap();
    r.tick();
    (r, clock)
}

/// Routes `k` tasks, completing each at once with `outcome_for(node)`; returns picks per node.
fn run(r: &Router, k: usize, outcome_for: impl Fn(&str) -> Outcome) -> HashMap<String, usize> {
    let mut reader = r.reader();
    let snap = r.snapshot();
    let mut picks = HashMap::new();
    for i in 0..k {
        match reader.route(&Task::new(i as u64, 100, 10)) {
            Ok((_, lease)) => {
                let name = snap.node_name(lease.route().head()).unwrap().to_string();
                let o = outcome_for(&name);
                // Exactly as modelled, so latency learning stays neutral.
                let latency = lease.predicted_latency_ms();
                lease.complete(o, latency);
                *picks.entry(name).or_insert(0) += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    picks
}

fn status(r: &Router, name: &str) -> HealthStatus {
    let s = r.snapshot();
    s.node_status(s.node_id(name).unwrap()).unwrap()
}

#[test]
fn a_hard_down_node_is_out_after_three_failures_without_a_tick() {
    let (r, _clock) = fleet(4, HealthPolicy::default());
    let picks = run(&r, 400, |n| {
        if n == "n0" {
            Outcome::ServerError
        } else {
            Outcome::Success
        }
    });
    // Three failures take it out on the hot path; nothing after that reaches it.
    assert_eq!(picks.get("n0"), Some(&3), "{picks:?}");
    assert_eq!(picks.values().sum::<usize>(), 400);
    // The next tick makes it an ejection.
    r.tick();
    assert_eq!(status(&r, "n0"), HealthStatus::Failed);
    assert!(r
        .node_health()
        .iter()
        .any(|h| h.node == "n0" && h.metrics.errors == 3));
}

#[test]
fn ejection_backs_off_then_probes_then_recovers_with_slow_start() {
    let policy = HealthPolicy {
        base_ejection_ms: 1_000,
        ..Default::default()
    };
    let (r, clock) = fleet(4, policy);
    run(&r, 100, |n| {
        if n == "n0" {
            Outcome::Timeout
        } else {
            Outcome::Success
        }
    });
    r.tick();
    assert_eq!(status(&r, "n0"), HealthStatus::Failed);
    // Ejected: nothing for a second.
    clock.advance_ms(900);
    r.tick();
    assert_eq!(run(&r, 200, |_| Outcome::Success).get("n0"), None);
    // Half-open after the ejection time: one probe at a time.
    clock.advance_ms(200);
    r.tick();
    let mut reader = r.reader();
    let mut probes = Vec::new();
    for i in 0..300 {
        let (_, lease) = reader.route(&Task::new(i, 100, 10)).unwrap();
        if lease.route().head() == r.snapshot().node_id("n0").unwrap() {
            probes.push(lease);
        }
    }
    assert_eq!(probes.len(), 1, "half-open lets one probe through");
    // The probe fails: ejected again, for twice as long.
    probes.pop().unwrap().complete(Outcome::ServerError, 10.0);
    r.tick();
    assert_eq!(status(&r, "n0"), HealthStatus::Failed);
    clock.advance_ms(1_500);
    r.tick();
    assert_eq!(
        status(&r, "n0"),
        HealthStatus::Failed,
        "second ejection lasts 2 s"
    );
    clock.advance_ms(600);
    r.tick();
    // Half-open again: probes succeed (one at a time; these complete at once, so several run
    // in sequence before the next tick), and the node serves again, ramping up slowly.
    let picks = run(&r, 300, |_| Outcome::Success);
    let probes = picks.get("n0").copied().unwrap_or(0);
    assert!(
        (1..300 / 4).contains(&probes),
        "a trickle, not a share: {probes}"
    );
    r.tick();
    // Serving again: degraded until its smoothed success rate climbs back over 0.9.
    assert_eq!(status(&r, "n0"), HealthStatus::Degraded);
    let early = run(&r, 2_000, |_| Outcome::Success)
        .get("n0")
        .copied()
        .unwrap_or(0);
    clock.advance_ms(20_000);
    r.tick();
    let late = run(&r, 2_000, |_| Outcome::Success)
        .get("n0")
        .copied()
        .unwrap_or(0);
    assert!(
        early < late,
        "slow start: {early} picks while ramping, {late} after"
    );
    r.tick();
    assert_eq!(status(&r, "n0"), HealthStatus::Healthy);
}

#[test]
fn rate_limits_steer_away_but_never_eject_and_cancels_say_nothing() {
    let (r, clock) = fleet(4, HealthPolicy::default());
    clock.advance_ms(60_000); // past slow start
    r.tick();
    let storm = run(&r, 1_000, |n| {
        if n == "n0" {
            Outcome::RateLimited
        } else {
            Outcome::Success
        }
    });
    r.tick();
    assert_eq!(status(&r, "n0"), HealthStatus::Healthy, "429s never eject");
    let after = run(&r, 2_000, |_| Outcome::Success);
    let share = *after.get("n0").unwrap_or(&0) as f64 / 2_000.0;
    assert!(
        share < 0.2,
        "rate-limited node gets less than its 25 % share: {share}"
    );
    assert!(
        storm.get("n0").copied().unwrap_or(0) > 3,
        "a 429 is not a failure streak"
    );
    // Cancels neither eject nor count as failures.
    run(&r, 200, |n| {
        if n == "n1" {
            Outcome::Cancelled
        } else {
            Outcome::Success
        }
    });
    r.tick();
    assert_eq!(status(&r, "n1"), HealthStatus::Healthy);
    clock.advance_ms(2_000);
    r.tick();
    let back = run(&r, 2_000, |_| Outcome::Success);
    assert!(*back.get("n0").unwrap() > 300, "back-off over: {back:?}");
}

#[test]
fn the_ejection_cap_and_the_panic_threshold() {
    // Default cap: half the fleet. Three of four nodes fail: only two are ejected.
    let (r, _clock) = fleet(4, HealthPolicy::default());
    let bad = |n: &str| n != "n3";
    run(&r, 200, |n| {
        if bad(n) {
            Outcome::ServerError
        } else {
            Outcome::Success
        }
    });
    r.tick();
    let failed = (0..4)
        .filter(|i| status(&r, &format!("n{i}")) == HealthStatus::Failed)
        .count();
    assert_eq!(failed, 2, "at most half the fleet is ejected");
    assert!(!r.snapshot().panic_mode());

    // No cap: three of four ejected leaves 25 % serving, under the 50 % panic threshold:
    // route across all rather than none.
    let (r, _clock) = fleet(
        4,
        HealthPolicy {
            max_ejected_share: 1.0,
            ..Default::default()
        },
    );
    run(&r, 200, |n| {
        if bad(n) {
            Outcome::ServerError
        } else {
            Outcome::Success
        }
    });
    r.tick();
    assert!(r.snapshot().panic_mode());
    let picks = run(&r, 400, |_| Outcome::Success);
    assert!(
        picks.len() >= 3,
        "panic mode routes to ejected nodes too: {picks:?}"
    );
}

#[test]
fn total_outage_gives_typed_errors_between_ticks() {
    let (r, _clock) = fleet(
        2,
        HealthPolicy {
            max_ejected_share: 1.0,
            ..Default::default()
        },
    );
    let mut reader = r.reader();
    // Every node fails three times in a row: the hot path takes both out before any tick.
    let mut failures = 0;
    loop {
        match reader.route(&Task::new(failures, 10, 10)) {
            Ok((_, lease)) => {
                lease.complete(Outcome::ServerError, 1.0);
                failures += 1;
            }
            Err(e) => {
                assert_eq!(e, RouteError::NoHealthyRoute);
                break;
            }
        }
        assert!(failures <= 6);
    }
    assert_eq!(failures, 6);
    assert!(r
        .set_health_policy(HealthPolicy {
            panic_threshold: 2.0,
            ..Default::default()
        })
        .is_err());
}

#[test]
fn manual_verdicts_pin_until_cleared() {
    let (r, _clock) = fleet(3, HealthPolicy::default());
    r.set_health("n1", HealthStatus::Failed).unwrap();
    r.tick();
    assert_eq!(run(&r, 300, |_| Outcome::Success).get("n1"), None);
    r.set_health("n1", HealthStatus::Healthy).unwrap();
    r.tick();
    let p = run(&r, 300, |_| Outcome::Success);
    assert!(p.contains_key("n1"), "{p:?}");
}

#[test]
fn a_node_failed_by_hand_stays_out_even_in_panic_mode() {
    let (r, _clock) = fleet(
        4,
        HealthPolicy {
            max_ejected_share: 1.0,
            ..Default::default()
        },
    );
    r.set_health("n0", HealthStatus::Failed).unwrap();
    run(&r, 200, |n| {
        if n == "n1" || n == "n2" {
            Outcome::ServerError
        } else {
            Outcome::Success
        }
    });
    r.tick();
    assert!(r.snapshot().panic_mode(), "one of four serving");
    let picks = run(&r, 400, |_| Outcome::Success);
    assert!(!picks.contains_key("n0"), "pinned out: {picks:?}");
    assert!(
        picks.contains_key("n1") || picks.contains_key("n2"),
        "panic routes to ejected nodes: {picks:?}"
    );
}

#[test]
fn a_paused_node_takes_nothing_until_its_pause_ends_and_is_not_ejected() {
    let clock = Arc::new(ManualClock::new());
    let r = Router::builder()
        .node(NodeSpec::new("a").max_concurrency(64))
        .node(NodeSpec::new("b").max_concurrency(64))
        .clock(clock.clone())
        .build()
        .unwrap();
    let a = r.snapshot().node_id("a").unwrap();
    r.pause_node("a", std::time::Duration::from_millis(1500))
        .unwrap();
    r.tick();
    let mut reader = r.reader();
    for i in 0..200 {
        let (_, lease) = reader.route(&Task::new(i, 10, 1)).unwrap();
        assert_ne!(lease.route().head(), a, "a is paused");
    }
    clock.advance_ms(1000);
    r.tick();
    let (_, lease) = reader.route(&Task::new(1, 10, 1)).unwrap();
    assert_ne!(lease.route().head(), a, "still paused at 1 s");
    drop(lease);
    clock.advance_ms(600);
    r.tick();
    let mut on_a = 0;
    for i in 0..200 {
        let (_, lease) = reader.route(&Task::new(i, 10, 1)).unwrap();
        on_a += usize::from(lease.route().head() == a);
    }
    assert!(on_a > 40, "a is back after its pause: {on_a} of 200");
    assert!(r
        .node_health()
        .iter()
        .all(|h| h.status != HealthStatus::Failed));
    assert!(matches!(
        r.pause_node("zzz", std::time::Duration::from_secs(1)),
        Err(switchyard::ConfigError::UnknownNode(_))
    ));
}
