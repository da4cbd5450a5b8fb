//! Token-rate limits per node (GCRA in the node's ledger line): reserve at pick time, settle
//! to the actual tokens at completion; a limited node is a routing input, not an error, until
//! every feasible node is limited.
// Not library code: std's primitives are fine here (the shim rule is for src/).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
use std::sync::Arc;

use switchyard::{Completion, ManualClock, NodeSpec, RouteError, Router, Task, TenantId, Ticket};

fn limited(nodes: &[(&str, f64)]) -> (Router, ManualClock) {
    let clock = ManualClock::new();
    let r = Router::builder()
        .clock(Arc::new(clock.clone()))
        .nodes(nodes.iter().map(|&(n, rate)| {
            NodeSpec::new(n)
                .max_concurrency(1_000)
                .token_rate(rate, 1.0)
        }))
        .build()
        .unwrap();
    clock.advance_ms(10_000);
    (r, clock)
}

#[test]
fn the_rate_admits_its_burst_then_refills_with_time() {
    // 1000 tokens/s, 1 s burst; tasks of 300 tokens: three fit (900), the fourth needs the
    // schedule to drain to 700 tokens ahead of now: 200 ms.
    let (r, clock) = limited(&[("n", 1_000.0)]);
    let mut reader = r.reader();
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(reader.route(&Task::new(i, 250, 50)).unwrap().1);
    }
    assert_eq!(
        reader.route(&Task::new(3, 250, 50)).unwrap_err(),
        RouteError::Saturated
    );
    // Three tasks schedule 900 tokens ahead; a fourth fits once 700 or fewer are ahead of
    // now (a 1000-token burst): after 200 ms.
    clock.advance_ms(150);
    assert_eq!(
        reader.route(&Task::new(4, 250, 50)).unwrap_err(),
        RouteError::Saturated,
        "not yet"
    );
    clock.advance_ms(60);
    assert!(
        reader.route(&Task::new(5, 250, 50)).is_ok(),
        "210 ms of refill later"
    );
    drop(held);
    assert!(
        r.ledgers_are_zero(),
        "the rate is not part of the capacity ledgers"
    );
}

#[test]
fn settling_refunds_unused_output_tokens() {
    let (r, _clock) = limited(&[("n", 1_000.0)]);
    let mut reader = r.reader();
    // Three tasks estimated at 300 tokens fill the burst...
    let tickets: Vec<Ticket> = (0..3)
        .map(|i| {
            let t = Task::new(i, 100, 200);
            Ticket::from_lease(reader.route(&t).unwrap().1, t)
        })
        .collect();
    assert_eq!(
        reader.route(&Task::new(9, 100, 200)).unwrap_err(),
        RouteError::Saturated
    );
    // ...but each produced only 20 output tokens: 3 × 180 tokens are refunded.
    for t in tickets {
        t.complete(Completion::success(10.0, 20));
    }
    let mut room = 0;
    while reader.route(&Task::new(10 + room, 100, 200)).is_ok() {
        room += 1;
    }
    assert_eq!(
        room, 2,
        "360 of the 1000-token burst used after the refund: two more fit"
    );
}

#[test]
fn overruns_are_charged() {
    let (r, clock) = limited(&[("n", 1_000.0)]);
    let mut reader = r.reader();
    let t = Task::new(1, 100, 100);
    let mut lease = reader.route(&t).unwrap().1;
    lease.settle_tokens(1_000); // produced 900 more than estimated
    drop(lease);
    assert_eq!(
        reader.route(&Task::new(2, 100, 100)).unwrap_err(),
        RouteError::Saturated,
        "1.1 s of tokens used"
    );
    clock.advance_ms(400);
    assert!(reader.route(&Task::new(3, 100, 100)).is_ok());
}

#[test]
fn a_limited_node_steers_traffic_to_others() {
    let (r, _clock) = limited(&[("slow-rate", 1_000.0), ("free", 0.0)]);
    let mut reader = r.reader();
    let limited = r.snapshot().node_id("slow-rate").unwrap();
    let leases: Vec<_> = (0..100)
        .map(|i| reader.route(&Task::new(i, 250, 50)).unwrap().1)
        .collect();
    let on_limited = leases
        .iter()
        .filter(|l| l.route().head() == limited)
        .count();
    assert!(
        on_limited <= 3,
        "only the burst lands on the limited node: {on_limited}"
    );
}

#[test]
fn bad_rates_are_typed_errors() {
    for spec in [
        NodeSpec::new("n").token_rate(f64::NAN, 1.0),
        NodeSpec::new("n").token_rate(-1.0, 1.0),
        NodeSpec::new("n").token_rate(10.0, 0.0),
    ] {
        assert!(Router::builder().node(spec).build().is_err());
    }
}

/// Node rates are bounded like tenant rates: 0 (none) or 1 to 1e12 tokens/s. A rate below one
/// token per second once passed validation, saturated the interval per token to `u64::MAX`
/// and overflowed the GCRA on the first task routed there (a panic in a debug build).
#[test]
fn node_rates_are_bounded_like_tenant_rates() {
    for bad in [
        1e-300,
        1e-3,
        0.5,
        1e12 * 1.01,
        f64::INFINITY,
        f64::MIN_POSITIVE,
    ] {
        let Err(err) = Router::builder()
            .node(NodeSpec::new("n").token_rate(bad, 1.0))
            .build()
        else {
            panic!("a node rate of {bad} tokens/s was accepted");
        };
        assert!(
            matches!(
                err,
                switchyard::ConfigError::InvalidNumber {
                    field: "max_tokens_per_second",
                    ..
                }
            ),
            "{bad}: {err:?}"
        );
    }
    // The extremes that are accepted route without overflowing, even for the largest task
    // on a clock near the end of time.
    for (rate, burst) in [(0.0, 1.0), (1.0, 3_600.0), (1e12, 1e-9), (1e12, 3_600.0)] {
        let clock = ManualClock::new();
        let r = Router::builder()
            .clock(Arc::new(clock.clone()))
            .node(
                NodeSpec::new("n")
                    .max_concurrency(1_000)
                    .token_rate(rate, burst),
            )
            .build()
            .unwrap_or_else(|e| panic!("{rate}: {e}"));
        let mut reader = r.reader();
        for now in [0, 1 << 62, u64::MAX - 1_000_000_000, u64::MAX] {
            clock.set_ns(now);
            for (input, output) in [(1, 1), (u32::MAX, u32::MAX)] {
                match reader.route(&Task::new(1, input, output)) {
                    Ok((_, lease)) => drop(lease),
                    // Too big for the node, or over its rate: refused, never a panic.
                    Err(e) => assert!(
                        matches!(
                            e,
                            RouteError::Saturated | RouteError::ConstraintsUnsatisfiable
                        ),
                        "{rate} at {now}: {e:?}"
                    ),
                }
            }
        }
        assert!(r.ledgers_are_zero());
    }
}

fn tenant_limited(per_second: f64) -> (Router, ManualClock) {
    let clock = ManualClock::new();
    let r = Router::builder()
        .clock(Arc::new(clock.clone()))
        .tenant_rate(TenantId(7), per_second, 1.0)
        .node(NodeSpec::new("a").max_concurrency(1_000))
        .node(NodeSpec::new("b").max_concurrency(1_000))
        .build()
        .unwrap();
    clock.advance_ms(10_000);
    (r, clock)
}

#[test]
fn a_tenant_over_its_rate_is_refused_on_every_node_and_others_are_not() {
    let (r, clock) = tenant_limited(1_000.0);
    let mut reader = r.reader();
    let of = |id, tenant| Task::new(id, 250, 50).tenant(TenantId(tenant));
    let held: Vec<_> = (0..3).map(|i| reader.route(&of(i, 7)).unwrap().1).collect();
    assert_eq!(
        reader.route(&of(3, 7)).unwrap_err(),
        RouteError::TenantRateLimited,
        "two nodes with room, but the tenant's quota is spent"
    );
    assert_eq!(r.in_flight(), 3, "the refused task reserved nothing");
    for i in 0..10 {
        assert!(
            reader.route(&of(10 + i, 8)).is_ok(),
            "tenant 8 has no limit"
        );
        assert!(
            reader.route(&Task::new(20 + i, 250, 50)).is_ok(),
            "nor anonymous work"
        );
    }
    clock.advance_ms(210);
    assert!(reader.route(&of(4, 7)).is_ok(), "210 ms of refill later");
    drop(held);
}

#[test]
fn a_tenants_reservation_settles_to_the_actual_tokens() {
    let (r, _clock) = tenant_limited(1_000.0);
    let mut reader = r.reader();
    let t = |id| Task::new(id, 100, 200).tenant(TenantId(7));
    let tickets: Vec<Ticket> = (0..3)
        .map(|i| Ticket::from_lease(reader.route(&t(i)).unwrap().1, t(i)))
        .collect();
    assert_eq!(
        reader.route(&t(9)).unwrap_err(),
        RouteError::TenantRateLimited
    );
    for ticket in tickets {
        ticket.complete(Completion::success(10.0, 20)); // 180 of 300 refunded each
    }
    let mut room = 0;
    while reader.route(&t(10 + room)).is_ok() {
        room += 1;
    }
    assert_eq!(
        room, 2,
        "360 of the 1000-token burst used after the refunds"
    );
}

#[test]
fn tenant_rates_change_live_and_bad_ones_are_typed_errors() {
    let (r, _clock) = tenant_limited(1_000.0);
    let mut reader = r.reader();
    let t = |id| Task::new(id, 500, 500).tenant(TenantId(7));
    let _first = reader.route(&t(1)).unwrap();
    assert_eq!(
        reader.route(&t(2)).unwrap_err(),
        RouteError::TenantRateLimited
    );
    r.set_tenant_rate(TenantId(7), 0.0, 1.0).unwrap(); // lifted
    r.tick();
    assert!(reader.route(&t(3)).is_ok());
    for (tenant, rate, burst) in [
        (TenantId(4096), 10.0, 1.0),
        (TenantId(1), f64::NAN, 1.0),
        (TenantId(1), -5.0, 1.0),
        (TenantId(1), 10.0, 0.0),
        (TenantId(1), 10.0, f64::INFINITY),
    ] {
        assert!(matches!(
            r.set_tenant_rate(tenant, rate, burst),
            Err(switchyard::ConfigError::InvalidSetting { .. })
        ));
        assert!(Router::builder()
            .tenant_rate(tenant, rate, burst)
            .build()
            .is_err());
    }
}

/// A reservation that fails after a stage took its node rate gives that rate back. A chain
/// whose tail is full is retried many times from its plan (as the dispatcher retries a
/// saturated task): the head's rate must be untouched, so the chain is served as soon as the
/// tail frees. This once failed: every failed attempt charged the head's rate for good, so
/// after ten the head refused the chain with no task served.
#[test]
fn a_saturated_chain_retried_many_times_leaves_the_head_rate_untouched() {
    use switchyard::spec::RoutingEngine;
    use switchyard::ChainSpec;
    let clock = ManualClock::new();
    let r = Router::builder()
        .clock(Arc::new(clock.clone()))
        .capabilities(["guarded"])
        .node(
            NodeSpec::new("head")
                .max_concurrency(1_000)
                .token_rate(1_000.0, 1.0),
        )
        .node(NodeSpec::new("tail").max_concurrency(1))
        .chain(ChainSpec::new("c", ["head", "tail"]).capabilities(["guarded"]))
        .build()
        .unwrap();
    clock.advance_ms(10_000);
    let mut reader = r.reader();
    let guarded = r.resolve(&["guarded"]).unwrap();
    // 100 tokens a task: the head's 1000-token burst holds ten.
    let task = Task::new(1, 80, 20).require(guarded);
    let options = reader.calculate_routes(&task).unwrap();
    let held = reader.optimize_allocation(&options, &task).unwrap();
    assert!(held.route().route.is_chain());
    for i in 0..100 {
        assert_eq!(
            reader.optimize_allocation(&options, &task).unwrap_err(),
            RouteError::Saturated,
            "attempt {i}: the tail is full"
        );
    }
    drop(held);
    assert!(r.ledgers_are_zero());
    // The held task's 100 tokens are spent (dropped, not settled); the failed attempts' are
    // not: the head still has 900 tokens of burst, nine more tasks.
    for i in 0..9 {
        let lease = reader
            .route(&task)
            .unwrap_or_else(|e| panic!("task {i} after the tail freed: {e}"));
        drop(lease);
    }
    assert_eq!(
        reader.route(&task).unwrap_err(),
        RouteError::Saturated,
        "the tenth is over the head's burst"
    );
}

/// The same when the lease slab is full: the reservation fails after every stage took its
/// rate, and gives the rate back.
#[test]
fn a_full_lease_slab_leaves_the_node_rate_untouched() {
    let clock = ManualClock::new();
    let r = Router::builder()
        .clock(Arc::new(clock.clone()))
        .lease_timeout_ms(60_000)
        .lease_slots(1)
        .node(
            NodeSpec::new("n")
                .max_concurrency(1_000)
                .token_rate(1_000.0, 1.0),
        )
        .build()
        .unwrap();
    clock.advance_ms(10_000);
    let mut reader = r.reader();
    let task = Task::new(1, 80, 20);
    let held = reader.route(&task).unwrap().1;
    for i in 0..100 {
        assert_eq!(
            reader.route(&task).unwrap_err(),
            RouteError::Saturated,
            "attempt {i}: the slab is full"
        );
    }
    drop(held);
    for i in 0..9 {
        let lease = reader
            .route(&task)
            .unwrap_or_else(|e| panic!("task {i} after the slab freed: {e}"));
        drop(lease);
    }
    assert_eq!(reader.route(&task).unwrap_err(), RouteError::Saturated);
    assert!(r.ledgers_are_zero());
}
