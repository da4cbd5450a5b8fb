//! Routing behaviour through the public API: constraints, capabilities, chains, errors,
//! fleet changes with leases out.
// Not library code: std's primitives are fine here (the shim rule is for src/).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
use switchyard::spec::RoutingEngine;
use switchyard::{
    CapSet, ChainSpec, ConfigError, HealthStatus, NodeSpec, Priority, RouteError, Router,
    ScoringWeights, Task,
};

fn fleet() -> Router {
    Router::builder()
        .capabilities(["chat", "code", "long-context", "vision"])
        .node(
            NodeSpec::new("fast")
                .capabilities(["chat", "code", "long-context"])
                .speed(10.0, 20_000.0, 100.0)
                .cost_per_1k_tokens(3.0),
        )
        .node(
            NodeSpec::new("slow")
                .capabilities(["chat", "code"])
                .speed(50.0, 2_000.0, 20.0)
                .cost_per_1k_tokens(0.5),
        )
        .node(
            NodeSpec::new("cheap")
                .capabilities(["chat"])
                .speed(30.0, 4_000.0, 40.0)
                .cost_per_1k_tokens(0.2),
        )
        .node(
            NodeSpec::new("eyes")
                .capabilities(["vision", "chat"])
                .max_concurrency(2),
        )
        .build()
        .unwrap()
}

fn name(r: &Router, id: switchyard::RouteId) -> String {
    r.snapshot().route_name(id).unwrap().to_string()
}

#[test]
fn required_capabilities_are_never_violated() {
    let r = fleet();
    let mut reader = r.reader();
    let long = r.resolve(&["long-context"]).unwrap();
    for i in 0..200 {
        let t = Task::new(i, 30_000, 100).require(long);
        let routes = reader.calculate_routes(&t).unwrap();
        assert_eq!(name(&r, routes.primary().route.route), "fast");
        assert!(routes.alternatives().is_empty(), "only one node is capable");
    }
    let vision_code = r.resolve(&["vision", "code"]).unwrap();
    assert_eq!(
        reader
            .calculate_routes(&Task::new(1, 10, 10).require(vision_code))
            .unwrap_err(),
        RouteError::NoCapableRoute
    );
    // A bit that was never interned can't be served either.
    assert_eq!(
        reader
            .calculate_routes(&Task::new(1, 10, 10).require(CapSet::from_bits([200])))
            .unwrap_err(),
        RouteError::NoCapableRoute
    );
}

#[test]
fn latency_and_memory_constraints_filter_routes() {
    let r = fleet();
    let mut reader = r.reader();
    let chat = r.resolve(&["chat"]).unwrap();
    // 2000 in / 100 out: fast ≈ 10+100+1000 ms, slow ≈ 50+1000+5000, cheap ≈ 30+500+2500,
    // eyes (defaults) ≈ 20+400+2000.
    let t = Task::new(1, 2_000, 100).require(chat).max_latency_ms(2_000);
    for _ in 0..100 {
        let routes = reader.calculate_routes(&t).unwrap();
        for c in routes.choices() {
            assert!(c.cost.expected_latency_ms <= 2_000.0, "{c:?}");
        }
        assert_eq!(name(&r, routes.primary().route.route), "fast");
    }
    let impossible = Task::new(2, 2_000, 100).require(chat).max_latency_ms(5);
    assert_eq!(
        reader.calculate_routes(&impossible).unwrap_err(),
        RouteError::ConstraintsUnsatisfiable
    );
    // 128 MB per 1k tokens by default: 10k tokens ≈ 1281 MB.
    let mem = Task::new(3, 9_000, 1_000)
        .require(chat)
        .max_memory_mb(1_000);
    assert_eq!(
        reader.calculate_routes(&mem).unwrap_err(),
        RouteError::ConstraintsUnsatisfiable
    );
    let mem_ok = Task::new(3, 9_000, 1_000)
        .require(chat)
        .max_memory_mb(2_000);
    let routes = reader.calculate_routes(&mem_ok).unwrap();
    assert!(routes
        .choices()
        .iter()
        .all(|c| c.cost.memory_mb <= 2_000.0 && c.cost.memory_mb >= 1_280.0));
}

#[test]
fn alternatives_are_distinct_and_ranked() {
    let r = fleet();
    let mut reader = r.reader();
    let chat = r.resolve(&["chat"]).unwrap();
    for i in 0..200 {
        let routes = reader
            .calculate_routes(&Task::new(i, 500, 50).require(chat))
            .unwrap();
        let ids: Vec<_> = routes.choices().iter().map(|c| c.route.route).collect();
        let mut dedup = ids.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(ids.len(), dedup.len(), "distinct routes");
        assert_eq!(ids.len(), 3, "primary + 2 alternatives by default");
        let alts = routes.alternatives();
        assert!(
            alts.windows(2).all(|w| w[0].score <= w[1].score),
            "alternatives best first"
        );
        for c in routes.choices() {
            assert!((0.0..=1.0).contains(&c.confidence));
            assert!(c.cost.expected_latency_ms > 0.0 && c.cost.price > 0.0);
        }
        assert_eq!(routes.estimated_costs().count(), 3);
        assert_eq!(routes.confidence_scores().count(), 3);
    }
}

#[test]
fn load_spreads_across_capable_nodes() {
    // Identical nodes: P2C over live in-flight counts keeps them within a task or two.
    let r = Router::builder()
        .nodes((0..8).map(|i| NodeSpec::new(format!("n{i}")).max_concurrency(1000)))
        .build()
        .unwrap();
    let mut reader = r.reader();
    let mut leases = Vec::new();
    for i in 0..800 {
        leases.push(reader.route(&Task::new(i, 100, 10)).unwrap().1);
    }
    let snap = r.snapshot();
    let mut per = std::collections::HashMap::new();
    for l in &leases {
        *per.entry(snap.node_name(l.route().head()).unwrap().to_string())
            .or_insert(0) += 1;
    }
    let max = *per.values().max().unwrap();
    let min = *per.values().min().unwrap();
    assert_eq!(per.len(), 8);
    assert!(max - min <= 4, "spread {min}..{max}");
    drop(leases);
    assert!(r.ledgers_are_zero());
}

#[test]
fn capacity_is_respected_and_saturation_is_typed() {
    let r = fleet();
    let mut reader = r.reader();
    let vision = r.resolve(&["vision"]).unwrap();
    // Critical may fill the whole node (lower classes stop short: tests/admission.rs).
    let t = Task::new(1, 10, 10)
        .require(vision)
        .priority(Priority::Critical);
    let a = reader.route(&t).unwrap().1;
    let b = reader.route(&t).unwrap().1;
    assert_eq!(reader.route(&t).unwrap_err(), RouteError::Saturated);
    assert_eq!(a.allocation().allocated.tokens, 20);
    assert_eq!(a.allocation().priority, Priority::Critical);
    drop(a);
    let c = reader.route(&t).unwrap().1;
    drop((b, c));
    assert!(r.ledgers_are_zero());
}

#[test]
fn chains_sum_their_stages_and_reserve_every_stage() {
    let r = Router::builder()
        .capabilities(["guarded-chat", "chat", "guard"])
        .node(
            NodeSpec::new("guard")
                .capabilities(["guard"])
                .speed(5.0, 50_000.0, 1_000.0)
                .max_concurrency(1),
        )
        .node(
            NodeSpec::new("llm")
                .capabilities(["chat"])
                .speed(20.0, 5_000.0, 50.0),
        )
        .chain(ChainSpec::new("guarded", ["guard", "llm"]).capabilities(["guarded-chat"]))
        .build()
        .unwrap();
    let snap = r.snapshot();
    assert_eq!(snap.route_count(), 3);
    let mut reader = r.reader();
    let gc = r.resolve(&["guarded-chat"]).unwrap();
    let t = Task::new(1, 1_000, 100).require(gc);
    let (routes, lease) = reader.route(&t).unwrap();
    let p = routes.primary();
    assert!(p.route.route.is_chain());
    assert_eq!(p.route.stages().len(), 2);
    let guard = 5.0 + 1_000.0 * 1000.0 / 50_000.0 + 100.0 * 1000.0 / 1_000.0;
    let llm = 20.0 + 1_000.0 * 1000.0 / 5_000.0 + 100.0 * 1000.0 / 50.0;
    assert!(
        (p.cost.expected_latency_ms - (guard + llm)).abs() < 1e-6,
        "{:?}",
        p.cost
    );
    assert_eq!(r.in_flight(), 2, "both stages hold the task");
    // The guard stage is full now, so the chain is saturated.
    assert_eq!(reader.route(&t).unwrap_err(), RouteError::Saturated);
    drop(lease);
    assert!(r.ledgers_are_zero());
    // Bad chains are typed errors.
    assert!(matches!(
        r.add_chain(ChainSpec::new("x", Vec::<String>::new())),
        Err(ConfigError::BadChain { .. })
    ));
    assert_eq!(
        r.add_chain(ChainSpec::new("y", ["nope"])),
        Err(ConfigError::UnknownNode("nope".into()))
    );
    assert!(matches!(
        r.add_chain(ChainSpec::new("guarded", ["llm"])),
        Err(ConfigError::Duplicate { .. })
    ));
}

#[test]
fn bad_input_gives_typed_errors() {
    assert!(matches!(
        Router::builder()
            .node(NodeSpec::new("a").weight(f64::NAN))
            .build(),
        Err(ConfigError::InvalidNumber {
            field: "weight",
            ..
        })
    ));
    assert!(matches!(
        Router::builder()
            .node(NodeSpec::new("a").cost_per_1k_tokens(-1.0))
            .build(),
        Err(ConfigError::InvalidNumber {
            field: "cost_per_1k_tokens",
            ..
        })
    ));
    assert!(matches!(
        Router::builder()
            .node(NodeSpec::new("a").max_tokens_in_flight(0))
            .build(),
        Err(ConfigError::ZeroCapacity {
            field: "max_tokens_in_flight",
            ..
        })
    ));
    assert_eq!(
        Router::builder()
            .node(NodeSpec::new("a").capabilities(["typo"]))
            .build()
            .unwrap_err(),
        ConfigError::UnknownCapability("typo".into())
    );
    assert!(matches!(
        Router::builder()
            .node(NodeSpec::new("a"))
            .node(NodeSpec::new("a"))
            .build(),
        Err(ConfigError::Duplicate { what: "node", .. })
    ));
    let w = ScoringWeights {
        load: f64::INFINITY,
        ..Default::default()
    };
    assert!(matches!(
        Router::builder().weights(w).build(),
        Err(ConfigError::InvalidNumber { .. })
    ));
    let w = ScoringWeights {
        alternatives: 9,
        ..Default::default()
    };
    assert!(matches!(
        Router::builder().weights(w).build(),
        Err(ConfigError::InvalidSetting { .. })
    ));
    // An empty fleet builds, and routing on it is a typed error.
    let empty = Router::builder().build().unwrap();
    assert_eq!(
        empty.reader().route(&Task::new(1, 1, 1)).unwrap_err(),
        RouteError::EmptyFleet
    );
    assert!(empty.resolve(&["chat"]).is_err());
    assert_eq!(
        empty.remove_node("x"),
        Err(ConfigError::UnknownNode("x".into()))
    );
    assert_eq!(
        empty.set_health("x", HealthStatus::Failed),
        Err(ConfigError::UnknownNode("x".into()))
    );
}

#[test]
fn removing_a_node_with_a_lease_out_loses_nothing() {
    let r = fleet();
    let mut reader = r.reader();
    let vision = r.resolve(&["vision"]).unwrap();
    let (routes, lease) = reader
        .route(&Task::new(1, 100, 100).require(vision))
        .unwrap();
    r.remove_node("eyes").unwrap();
    let report = r.tick();
    assert_eq!((report.nodes, report.draining), (3, 1));
    assert_eq!(
        reader
            .route(&Task::new(2, 1, 1).require(vision))
            .unwrap_err(),
        RouteError::NoCapableRoute
    );
    assert_eq!(
        r.in_flight(),
        1,
        "the draining node still reports its lease"
    );
    // A plan from the old snapshot is now stale.
    assert_eq!(
        reader
            .optimize_allocation(&routes, &Task::new(3, 1, 1))
            .unwrap_err(),
        RouteError::StaleRoute
    );
    drop(lease);
    assert!(r.ledgers_are_zero());
    assert_eq!(r.tick().draining, 0);
    // Re-adding the name gets the same stable id.
    let id = r
        .add_node(NodeSpec::new("eyes").capabilities(["vision"]))
        .unwrap();
    r.tick();
    assert_eq!(r.snapshot().node_id("eyes"), Some(id));
    assert_eq!(r.snapshot().node_id("missing"), None);
}

#[test]
fn updates_keep_live_counters_and_health_verdicts_apply() {
    let r = fleet();
    let mut reader = r.reader();
    let vision = r.resolve(&["vision"]).unwrap();
    let lease = reader
        .route(&Task::new(1, 10, 10).require(vision))
        .unwrap()
        .1;
    r.update_node(
        NodeSpec::new("eyes")
            .capabilities(["vision", "chat"])
            .max_concurrency(1),
    )
    .unwrap();
    let epoch = r.tick().epoch;
    assert!(reader.snapshot().epoch() >= epoch);
    // The in-flight task survived the update, and the new capacity of 1 is already used.
    assert_eq!(
        reader
            .route(&Task::new(2, 10, 10).require(vision))
            .unwrap_err(),
        RouteError::Saturated
    );
    drop(lease);
    r.set_health("eyes", HealthStatus::Failed).unwrap();
    r.tick();
    assert_eq!(
        r.snapshot()
            .node_status(r.snapshot().node_id("eyes").unwrap()),
        Some(HealthStatus::Failed)
    );
    assert_eq!(
        reader
            .route(&Task::new(3, 10, 10).require(vision))
            .unwrap_err(),
        RouteError::NoHealthyRoute
    );
    assert!(matches!(
        r.update_node(NodeSpec::new("ghost")),
        Err(ConfigError::UnknownNode(_))
    ));
}

#[test]
fn validate_route_follows_the_snapshot() {
    let r = fleet();
    let mut reader = r.reader();
    let chat = r.resolve(&["chat"]).unwrap();
    let t = Task::new(1, 100, 10).require(chat);
    let routes = reader.calculate_routes(&t).unwrap();
    let primary = routes.primary().route;
    assert!(reader.validate_route(&primary, &t));
    let n = r.snapshot().route_name(primary.route).unwrap().to_string();
    r.set_health(&n, HealthStatus::Failed).unwrap();
    r.tick();
    assert!(!reader.validate_route(&primary, &t));
    r.remove_node(&n).unwrap();
    r.tick();
    assert!(!(&r).validate_route(&primary, &t));
}

#[test]
fn router_level_engine_matches_reader() {
    let r = fleet();
    let chat = r.resolve(&["chat"]).unwrap();
    let t = Task::new(1, 100, 10).require(chat);
    let mut engine = &r;
    let routes = engine.calculate_routes(&t).unwrap();
    let lease = engine.optimize_allocation(&routes, &t).unwrap();
    assert_eq!(lease.route(), &routes.primary().route);
    assert!(lease.predicted_latency_ms() > 0.0);
    lease.release();
    assert!(r.ledgers_are_zero());
}

#[test]
fn capability_scores_and_cost_steer_the_choice() {
    let r = Router::builder()
        .capabilities(["code"])
        .node(
            NodeSpec::new("good")
                .capabilities(["code"])
                .capability_score("code", 1.0),
        )
        .node(
            NodeSpec::new("bad")
                .capabilities(["code"])
                .capability_score("code", 0.2),
        )
        .build()
        .unwrap();
    let mut reader = r.reader();
    let code = r.resolve(&["code"]).unwrap();
    for i in 0..50 {
        let routes = reader
            .calculate_routes(&Task::new(i, 100, 10).require(code))
            .unwrap();
        assert_eq!(name(&r, routes.primary().route.route), "good");
        assert!(routes.primary().confidence > routes.alternatives()[0].confidence);
    }
    let r = Router::builder()
        .node(NodeSpec::new("pricey").cost_per_1k_tokens(10.0))
        .node(NodeSpec::new("thrifty").cost_per_1k_tokens(0.1))
        .build()
        .unwrap();
    let mut reader = r.reader();
    let routes = reader.calculate_routes(&Task::new(1, 100, 10)).unwrap();
    assert_eq!(name(&r, routes.primary().route.route), "thrifty");
}

#[test]
fn control_tick_learns_latency_from_completions() {
    use switchyard::{Backend, Completion, Dispatcher, RouteOptions, Ticket};
    struct SlowA;
    impl Backend for SlowA {
        type Payload = ();
        fn dispatch(&self, _t: Task, _payload: (), routes: &RouteOptions, ticket: Ticket) {
            let p = routes.primary().cost.expected_latency_ms;
            let head = ticket.route().unwrap().head();
            // node 0 ("a") really takes 10× its model
            let f = if head.0 == 0 { 10.0 } else { 1.0 };
            ticket.complete(Completion::success(p * f, 10));
        }
    }
    let r = Router::builder()
        .node(NodeSpec::new("a").max_concurrency(1000))
        .node(NodeSpec::new("b").max_concurrency(1000))
        .build()
        .unwrap();
    let d = Dispatcher::builder(r.clone())
        .workers(1)
        .control_interval(None)
        .build(SlowA)
        .unwrap();
    for i in 0..400 {
        d.submit(Task::new(i, 100, 10), ()).unwrap();
    }
    d.shutdown();
    r.tick();
    let snap = r.snapshot();
    let mut reader = r.reader();
    let mut a = 0;
    for i in 0..200 {
        let routes = reader.calculate_routes(&Task::new(i, 100, 10)).unwrap();
        if routes.primary().route.head().0 == 0 {
            a += 1;
        }
    }
    assert_eq!(snap.node_count(), 2);
    assert!(
        a < 20,
        "the slow node should rarely be primary after learning, got {a}/200"
    );
}

#[test]
fn an_idle_fleet_publishes_nothing_and_old_snapshots_are_freed_by_the_controller() {
    // A manual clock: with real time, slow start's weight ramp would count as a change.
    let r = Router::builder()
        .clock(std::sync::Arc::new(switchyard::ManualClock::new()))
        .node(NodeSpec::new("fast"))
        .node(NodeSpec::new("slow"))
        .build()
        .unwrap();
    let first = r.tick();
    let idle = r.tick();
    assert!(!idle.published, "nothing changed");
    assert_eq!(idle.epoch, first.epoch);
    // A reader holding an old snapshot keeps it alive; the controller frees it later.
    let old = r.snapshot();
    r.set_weights(ScoringWeights {
        load: 3.0,
        ..Default::default()
    })
    .unwrap();
    let changed = r.tick();
    assert!(changed.published && changed.epoch == first.epoch + 1);
    let weak = std::sync::Arc::downgrade(&old);
    drop(old);
    assert!(
        weak.upgrade().is_some(),
        "the controller still holds the retired snapshot"
    );
    r.set_health("fast", HealthStatus::Degraded).unwrap();
    r.tick();
    assert!(
        weak.upgrade().is_none(),
        "freed by the controller once nobody else held it"
    );
}

#[test]
fn node_health_reports_free_capacity_and_errors() {
    use switchyard::{Backend, Completion, Dispatcher, Outcome, RouteOptions, Ticket};
    struct FailEven;
    impl Backend for FailEven {
        type Payload = ();
        fn dispatch(&self, t: Task, _payload: (), _r: &RouteOptions, ticket: Ticket) {
            if t.id % 2 == 0 {
                ticket.complete(Completion::failure(Outcome::ServerError, 5.0));
            } else {
                ticket.complete(Completion::success(5.0, 1));
            }
        }
    }
    let r = Router::builder()
        .node(
            NodeSpec::new("solo")
                .max_concurrency(4)
                .memory(1_000, 100.0),
        )
        .build()
        .unwrap();
    let d = Dispatcher::builder(r.clone())
        .workers(1)
        .control_interval(None)
        .build(FailEven)
        .unwrap();
    for i in 0..10 {
        d.submit(Task::new(i, 5, 5), ()).unwrap();
    }
    d.shutdown();
    r.tick();
    let lease = r.reader().route(&Task::new(99, 1_000, 0)).unwrap().1;
    let h = &r.node_health()[0];
    assert_eq!(h.node, "solo");
    assert_eq!(h.metrics.errors, 5);
    assert!((h.error_rate - 0.5).abs() < 1e-9);
    assert!(
        (h.metrics.success_rate - 0.75).abs() < 1e-9,
        "smoothed from 1.0 toward 0.5"
    );
    assert_eq!(h.available.memory_mb, 900);
    assert!(h.metrics.response_time_ms > 0.0);
    drop(lease);
}

#[test]
fn weights_give_proportional_shares_not_winner_take_all() {
    // Same speed and load; "light" has a quarter of the weight. Weighted P2C (weights shape
    // the draw, the score compares load and latency) gives it about 1/5 of the traffic; a
    // weight inside the score would give it nothing.
    let r = Router::builder()
        .node(NodeSpec::new("full").max_concurrency(10_000))
        .node(NodeSpec::new("light").max_concurrency(10_000).weight(0.25))
        .node(NodeSpec::new("full2").max_concurrency(10_000))
        .node(NodeSpec::new("full3").max_concurrency(10_000))
        .build()
        .unwrap();
    let mut reader = r.reader();
    let snap = r.snapshot();
    let light = snap.node_id("light").unwrap();
    let n = 20_000;
    let mut hits = 0;
    for i in 0..n {
        let (_, lease) = reader.route(&Task::new(i, 100, 10)).unwrap();
        if lease.route().head() == light {
            hits += 1;
        }
    } // leases dropped at once: no load builds up, only the weights differ
    let share = hits as f64 / n as f64;
    assert!((0.04..0.12).contains(&share), "share {share}");
}

#[test]
fn small_pools_weigh_the_pair_too() {
    // Two nodes (a pool evaluated whole): the weight-0.25 node is primary about 1/5 of the
    // time when loads and latencies tie.
    let r = Router::builder()
        .node(NodeSpec::new("a").max_concurrency(10_000))
        .node(NodeSpec::new("b").max_concurrency(10_000).weight(0.25))
        .build()
        .unwrap();
    let mut reader = r.reader();
    let b = r.snapshot().node_id("b").unwrap();
    let n = 20_000;
    let hits = (0..n)
        .filter(|&i| {
            reader
                .route(&Task::new(i, 100, 10))
                .unwrap()
                .1
                .route()
                .head()
                == b
        })
        .count();
    let share = hits as f64 / n as f64;
    assert!((0.12..0.28).contains(&share), "share {share}");
}

#[test]
fn prefix_affinity_is_a_soft_factor() {
    // Two identical nodes: a task whose affinity key was just routed to one prefers it
    // (its prefill is predicted half cached) while loads are equal...
    let r = Router::builder()
        .node(NodeSpec::new("a").max_concurrency(10))
        .node(NodeSpec::new("b").max_concurrency(10))
        .build()
        .unwrap();
    let mut reader = r.reader();
    let first = reader
        .route(&Task::new(1, 8_000, 10).affinity(42))
        .unwrap()
        .1;
    let home = first.route().head();
    drop(first);
    for i in 0..50 {
        let (routes, lease) = reader.route(&Task::new(i, 8_000, 10).affinity(42)).unwrap();
        assert_eq!(
            lease.route().head(),
            home,
            "affinity wins while loads are equal"
        );
        assert!(
            routes.primary().cost.expected_latency_ms
                < routes.alternatives()[0].cost.expected_latency_ms
        );
    }
    // ...but not against load: with its home half busy, the task goes to the idle node.
    let held = (0..1_000)
        .map(|i| reader.route(&Task::new(100 + i, 10, 1)).unwrap().1)
        .find(|l| l.route().head() == home)
        .expect("a lease on the home node");
    let name = r.snapshot().node_name(home).unwrap().to_string();
    r.update_node(NodeSpec::new(name).max_concurrency(2))
        .unwrap();
    r.tick();
    let (_, lease) = reader.route(&Task::new(9, 8_000, 10).affinity(42)).unwrap();
    assert_ne!(
        lease.route().head(),
        home,
        "a busy home loses to an idle node"
    );
    drop((held, lease));
    assert!(r
        .set_weights(ScoringWeights {
            affinity: 2.0,
            ..Default::default()
        })
        .is_err());
}

/// "fast" predicts 1 060 ms for a 1 000-in, 100-out task at four times the price of "cheap",
/// which predicts 2 120 ms.
fn fast_and_cheap(slack: f64) -> Router {
    Router::builder()
        .weights(ScoringWeights {
            slack,
            ..Default::default()
        })
        .node(
            NodeSpec::new("fast")
                .speed(10.0, 20_000.0, 100.0)
                .cost_per_1k_tokens(4.0)
                .max_concurrency(1_000),
        )
        .node(
            NodeSpec::new("cheap")
                .speed(20.0, 10_000.0, 50.0)
                .cost_per_1k_tokens(1.0)
                .max_concurrency(1_000),
        )
        .build()
        .unwrap()
}

#[test]
fn price_decides_at_slack_and_latency_when_the_limit_is_near() {
    let primary = |r: &Router, limit: u32| {
        let task = Task::new(1, 1_000, 100).max_latency_ms(limit);
        let routes = r.reader().calculate_routes(&task).unwrap();
        let c = routes.primary();
        assert!(
            (c.cost.expected_latency_ms
                - if name(r, c.route.route) == "fast" {
                    1_060.0
                } else {
                    2_120.0
                })
            .abs()
                < 1.0,
            "the model's prediction: {}",
            c.cost.expected_latency_ms
        );
        name(r, c.route.route)
    };
    let r = fast_and_cheap(0.4);
    assert_eq!(r.snapshot().slack_margin(), 0.4);
    // Both fit 10 s with room to spare (floor 4 s): the cheaper wins.
    assert_eq!(primary(&r, 10_000), "cheap");
    // Both fit 3 s, but only "fast" with room (floor 1.2 s, "cheap" needs 2.1 s): speed wins.
    assert_eq!(primary(&r, 3_000), "fast");
    // No limit, no slack: the score is latency × price, and "fast" is worth its price.
    assert_eq!(primary(&r, u32::MAX), "fast");
    // With the margin off, the same loose limit goes to the fastest.
    assert_eq!(primary(&fast_and_cheap(0.0), 10_000), "fast");
}

#[test]
fn cost_at_slack_adds_at_most_twice_the_typical_latency() {
    use switchyard::Outcome;
    let r = fast_and_cheap(0.4);
    let big = Task::new(1, 1_000, 100).max_latency_ms(10_000);
    let head = |r: &Router| {
        let routes = r.reader().calculate_routes(&big).unwrap();
        name(r, routes.primary().route.route)
    };
    // Nothing completed yet: the floor is 40 % of 10 s, and "cheap" (2.1 s) wins on price.
    assert_eq!(head(&r), "cheap");
    // Small tasks complete as predicted ("cheap", 230 ms): the typical latency is 230 ms, so
    // cost at slack may add up to 460 ms. The big task's 2.1 s on "cheap" is far past that,
    // and latency decides it: "fast".
    let mut reader = r.reader();
    for i in 0..20 {
        let (routes, lease) = reader
            .route(&Task::new(i, 100, 10).max_latency_ms(10_000))
            .unwrap();
        let predicted = routes.primary().cost.expected_latency_ms;
        assert_eq!(name(&r, routes.primary().route.route), "cheap");
        lease.complete(Outcome::Success, predicted);
    }
    r.tick();
    assert_eq!(head(&r), "fast");
    // The small tasks themselves still go to the cheaper node.
    let routes = r
        .reader()
        .calculate_routes(&Task::new(2, 100, 10).max_latency_ms(10_000))
        .unwrap();
    assert_eq!(name(&r, routes.primary().route.route), "cheap");
}

#[test]
fn misses_halve_the_slack_margin_and_clean_windows_restore_it() {
    use switchyard::Outcome;
    let r = fast_and_cheap(0.4);
    let mut reader = r.reader();
    // 100 tasks with a 100 s limit (loose enough that no learned slowdown makes a route
    // infeasible), task `i` finishing as `end(i)`; then a tick. Returns the margin.
    let mut window = |end: &dyn Fn(u64) -> (Outcome, f64)| {
        for i in 0..100 {
            let task = Task::new(i, 1_000, 100).max_latency_ms(100_000);
            let (_, lease) = reader.route(&task).unwrap();
            let (outcome, ms) = end(i);
            lease.complete(outcome, ms);
        }
        r.tick();
        r.snapshot().slack_margin()
    };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    let met = |_| (Outcome::Success, 1_500.0);
    assert!(
        close(window(&|_| (Outcome::Success, 100_500.0)), 0.2),
        "late: halved"
    );
    // 98 % attainment is under the 99 % target; failures count as misses.
    let two_failed = |i| {
        if i % 50 == 0 {
            (Outcome::ServerError, 10.0)
        } else {
            met(i)
        }
    };
    assert!(close(window(&two_failed), 0.1), "two failed: halved");
    // Cancelled tasks are not counted: 50 late ones do not fill a window.
    let half = |i| {
        if i % 2 == 0 {
            (Outcome::Cancelled, 10.0)
        } else {
            (Outcome::Success, 100_500.0)
        }
    };
    assert!(close(window(&half), 0.1), "half a window: unchanged");
    // The 50 late tasks carried over plus 100 met: 67 % attainment, halved again.
    assert!(close(window(&met), 0.05));
    // On target (one failure in 100) raises it by a quarter of the maximum.
    let one_failed = |i| {
        if i == 7 {
            (Outcome::ServerError, 10.0)
        } else {
            met(i)
        }
    };
    assert!(close(window(&one_failed), 0.15), "99 %: raised");
    assert!(close(window(&met), 0.25));
    assert!(close(window(&met), 0.35));
    assert!(close(window(&met), 0.4), "capped at the maximum");
    assert!(close(window(&met), 0.4));
    // Tasks without a latency limit are not counted either.
    for i in 0..200 {
        let (_, lease) = reader.route(&Task::new(i, 1_000, 100)).unwrap();
        lease.complete(Outcome::Success, 1e9);
    }
    r.tick();
    assert!(close(r.snapshot().slack_margin(), 0.4));
}
