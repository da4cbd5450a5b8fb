//! Token-rate limits per node (GCRA in the node's ledger line): reserve at pick time, settle
//! to the actual tokens at completion; a limited node is a routing input, not an error, until
//! every feasible node is limited.
use std::sync::Arc;

use switchyard::{Completion, ManualClock, NodeSpec, RouteError, Router, Task, Ticket};

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
