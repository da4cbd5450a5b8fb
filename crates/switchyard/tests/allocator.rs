//! The seed's `ResourceAllocator`: allocate, monitor, adjust, release; lease timeouts
//! reclaimed by the control thread, with late completions counted and never released twice.
// Not library code: std's primitives are fine here (the shim rule is for src/).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use switchyard::spec::{ResourceAllocator, RoutingEngine};
use switchyard::{
    AdjustError, Backend, Completion, Dispatcher, Headroom, ManualClock, NodeSpec, Outcome,
    Priority, RouteError, RouteOptions, Router, Task, Ticket,
};

fn router(timeout_ms: u64) -> (Router, ManualClock) {
    let clock = ManualClock::new();
    let r = Router::builder()
        .clock(Arc::new(clock.clone()))
        .headroom(Headroom { shares: [1.0; 4] })
        .lease_timeout_ms(timeout_ms)
        .node(
            NodeSpec::new("a")
                .max_concurrency(8)
                .memory(1_000, 1.0)
                .compute(4.0, 0.5, 0.0, 0.0),
        )
        .build()
        .unwrap();
    (r, clock)
}

fn memory_in_use(r: &Router) -> u64 {
    r.node_metrics()[0].memory_mb
}

#[test]
fn adjust_grows_within_capacity_and_shrinks_back() {
    let (r, _) = router(0);
    let mut reader = r.reader();
    let task = Task::new(1, 500, 500); // 1000 tokens × 1 MB/1k = 1 MB
    let routes = reader.calculate_routes(&task).unwrap();
    let mut lease = reader.allocate_resources(&routes, &task).unwrap();
    let mut m = reader.monitor_usage(&lease);
    assert_eq!(m.allocated.memory_mb, 1);
    assert_eq!(m.allocated.cpu_millis, 500);
    assert!(m.held);
    assert_eq!(m.remaining_ms, None, "no timeout configured");

    m.used.memory_mb = 600;
    let after = reader.adjust_allocation(&mut lease, &m).unwrap();
    assert_eq!(after.allocated.memory_mb, 600);
    assert_eq!(memory_in_use(&r), 600);

    // 600 + 500 more would pass the node's 1000 MB: refused, nothing changes.
    let mut m = reader.monitor_usage(&lease);
    m.used.memory_mb = 1_100;
    assert_eq!(
        reader.adjust_allocation(&mut lease, &m).unwrap_err(),
        AdjustError::Saturated
    );
    assert_eq!(lease.allocation().allocated.memory_mb, 600);
    assert_eq!(memory_in_use(&r), 600);

    // Shrink, and give CPU back too.
    m.used.memory_mb = 10;
    m.used.cpu_millis = 100;
    reader.adjust_allocation(&mut lease, &m).unwrap();
    assert_eq!(memory_in_use(&r), 10);
    assert_eq!(r.node_metrics()[0].cpu_millis, 100);

    reader.release_resources(&mut lease);
    assert!(r.ledgers_are_zero());
    reader.release_resources(&mut lease);
    drop(lease);
    assert!(
        r.ledgers_are_zero(),
        "release is idempotent, drop adds nothing"
    );
    assert!(!reader.monitor_usage(&lease_after_release()).held);
}

fn lease_after_release() -> switchyard::Lease {
    let (r, _) = router(0);
    let mut reader = r.reader();
    let (_, mut lease) = reader.route(&Task::new(1, 1, 1)).unwrap();
    reader.release_resources(&mut lease);
    lease
}

#[test]
fn growth_respects_the_class_ceiling() {
    let clock = ManualClock::new();
    let r = Router::builder()
        .clock(Arc::new(clock))
        .node(NodeSpec::new("a").max_concurrency(8).memory(1_000, 1.0))
        .build()
        .unwrap();
    let mut reader = r.reader();
    // Low fills 75 % by default: 750 MB; critical may fill all 1000.
    for (p, ceiling) in [(Priority::Low, 750), (Priority::Critical, 1_000)] {
        let task = Task::new(1, 10, 10).priority(p);
        let (_, mut lease) = reader.route(&task).unwrap();
        let mut m = reader.monitor_usage(&lease);
        m.used.memory_mb = ceiling + 1;
        assert_eq!(
            reader.adjust_allocation(&mut lease, &m).unwrap_err(),
            AdjustError::Saturated
        );
        m.used.memory_mb = ceiling;
        assert!(reader.adjust_allocation(&mut lease, &m).is_ok(), "{p:?}");
    }
    assert!(r.ledgers_are_zero());
}

#[test]
fn an_expired_lease_is_reclaimed_and_its_late_completion_releases_nothing() {
    let (r, clock) = router(100);
    let mut reader = r.reader();
    let (_, lease) = reader.route(&Task::new(1, 500, 500)).unwrap();
    let (_, kept) = reader.route(&Task::new(2, 500, 500)).unwrap();
    let m = reader.monitor_usage(&lease);
    assert_eq!(m.remaining_ms, Some(100.0));

    clock.advance_ms(99);
    r.tick();
    assert!(lease.is_held(), "not yet due");
    assert_eq!(r.lease_counts(), (0, 0));

    clock.advance_ms(1);
    r.tick();
    assert!(!lease.is_held() && !kept.is_held());
    assert_eq!(r.lease_counts(), (2, 0), "both were due");
    assert!(
        r.ledgers_are_zero(),
        "the control thread returned everything"
    );
    assert_eq!(r.finished()[Outcome::Timeout], 2);

    // The owners finish late: counted, nothing returned twice (a second release would wrap
    // the ledger far past zero), no second outcome.
    lease.complete(Outcome::Success, 5.0);
    drop(kept);
    assert_eq!(r.lease_counts(), (2, 2));
    assert!(r.ledgers_are_zero());
    assert_eq!(r.finished()[Outcome::Success], 0);
    assert_eq!(r.finished()[Outcome::Timeout], 2);

    // A reclaimed allocation cannot be adjusted.
    let (_, mut third) = reader.route(&Task::new(3, 1, 1)).unwrap();
    clock.advance_ms(500);
    r.tick();
    let m = reader.monitor_usage(&third);
    assert!(!m.held);
    assert_eq!(
        reader.adjust_allocation(&mut third, &m).unwrap_err(),
        AdjustError::Released
    );
}

#[test]
fn a_lease_ended_in_time_is_not_reclaimed() {
    let (r, clock) = router(100);
    let mut reader = r.reader();
    let (_, lease) = reader.route(&Task::new(1, 10, 10)).unwrap();
    clock.advance_ms(50);
    lease.complete(Outcome::Success, 50.0);
    clock.advance_ms(1_000);
    r.tick();
    assert_eq!(r.lease_counts(), (0, 0));
    assert_eq!(r.finished()[Outcome::Success], 1);
    assert!(r.ledgers_are_zero());
}

#[test]
fn a_full_lease_slab_saturates_routing_until_a_record_frees() {
    let clock = ManualClock::new();
    let r = Router::builder()
        .clock(Arc::new(clock))
        .lease_timeout_ms(1_000)
        .lease_slots(2)
        .node(NodeSpec::new("a").max_concurrency(100))
        .build()
        .unwrap();
    let mut reader = r.reader();
    let a = reader
        .route(&Task::new(1, 1, 1).priority(Priority::Critical))
        .unwrap();
    let _b = reader
        .route(&Task::new(2, 1, 1).priority(Priority::Critical))
        .unwrap();
    assert_eq!(
        reader
            .route(&Task::new(3, 1, 1).priority(Priority::Critical))
            .unwrap_err(),
        RouteError::Saturated
    );
    assert_eq!(
        r.in_flight(),
        2,
        "the refused lease gave back what it had reserved"
    );
    drop(a);
    assert!(reader
        .route(&Task::new(4, 1, 1).priority(Priority::Critical))
        .is_ok());
}

/// Keeps every ticket: a backend that never answers.
struct Hung(Mutex<Vec<Ticket>>);
impl Backend for Hung {
    type Payload = ();
    fn dispatch(&self, _t: Task, _payload: (), _r: &RouteOptions, ticket: Ticket) {
        self.0.lock().unwrap().push(ticket);
    }
}

#[test]
fn tickets_of_a_hung_backend_are_reclaimed_and_capacity_comes_back() {
    let (r, clock) = router(1_000);
    let d = Dispatcher::builder(r.clone())
        .workers(1)
        .control_interval(None)
        .saturation_wait([std::time::Duration::ZERO; 4])
        .build(Hung(Mutex::new(Vec::new())))
        .unwrap();
    for i in 0..12 {
        d.submit(Task::new(i, 10, 10), ()).unwrap();
    }
    // Capacity 8: eight are held by the hung backend, four shed.
    while d.metrics().dispatched + d.metrics().no_route_total() < 12 {
        std::thread::yield_now();
    }
    assert_eq!(d.metrics().dispatched, 8);
    clock.advance_ms(1_001);
    r.tick();
    assert!(
        r.ledgers_are_zero(),
        "capacity is back though no ticket completed"
    );
    assert_eq!(r.lease_counts(), (8, 0));
    assert_eq!(
        d.in_flight(),
        0,
        "reclaimed tickets count as finished (timeout)"
    );
    // New work gets the capacity.
    for i in 12..16 {
        d.submit(Task::new(i, 10, 10), ()).unwrap();
    }
    // The backend's list, not `dispatched`: that is counted before the ticket reaches it.
    while d.backend().0.lock().unwrap().len() < 12 {
        std::thread::yield_now();
    }
    // The backend wakes up and completes the old tickets: counted late, nothing released.
    let tickets: Vec<Ticket> = std::mem::take(&mut *d.backend().0.lock().unwrap());
    for t in tickets {
        t.complete(Completion::success(1.0, 10));
    }
    assert_eq!(r.lease_counts(), (8, 8));
    assert_eq!(
        r.in_flight(),
        0,
        "the four new tickets were completed with the old"
    );
    assert!(r.ledgers_are_zero());
    d.shutdown();
}

#[test]
fn random_concurrent_allocate_adjust_release_and_reclaim_return_every_ledger_to_zero() {
    let (r, clock) = router(50);
    let stop = Arc::new(AtomicU64::new(0));
    let control = {
        let (r, clock, stop) = (r.clone(), clock.clone(), stop.clone());
        std::thread::spawn(move || {
            while stop.load(Ordering::Relaxed) == 0 {
                clock.advance_ms(7);
                r.tick();
                std::thread::yield_now();
            }
        })
    };
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let r = r.clone();
            std::thread::spawn(move || {
                let mut reader = r.reader();
                let mut held = Vec::new();
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ t;
                for i in 0..5_000u64 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    match x % 4 {
                        0 | 1 => {
                            if let Ok((_, l)) = reader.route(&Task::new(i, 100, 100)) {
                                held.push(l);
                            }
                        }
                        2 if !held.is_empty() => {
                            let k = (x >> 8) as usize % held.len();
                            let mut m = reader.monitor_usage(&held[k]);
                            m.used.memory_mb = (x >> 20) as u32 % 300;
                            m.used.cpu_millis = (x >> 40) as u32 % 900;
                            let _ = reader.adjust_allocation(&mut held[k], &m);
                        }
                        _ if !held.is_empty() => {
                            let k = (x >> 8) as usize % held.len();
                            held.swap_remove(k).complete(Outcome::Success, 1.0);
                        }
                        _ => {}
                    }
                    let n = r.node_metrics();
                    assert!(n[0].in_flight <= 8 && n[0].memory_mb <= 1_000, "{:?}", n[0]);
                }
                held
            })
        })
        .collect();
    let mut left: Vec<_> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    stop.store(1, Ordering::Relaxed);
    control.join().unwrap();
    let (reclaimed, late) = r.lease_counts();
    assert!(late <= reclaimed);
    // What the workers still hold is reclaimed, every lease exactly once, by the next tick
    // past the timeout (one fresh lease at least, so the check never runs on nothing).
    if !left.iter().any(|l| l.is_held()) {
        left.push(r.reader().route(&Task::new(1, 100, 100)).unwrap().1);
    }
    // (Some may have been reclaimed already, before the control thread stopped.)
    let n = left.iter().filter(|l| l.is_held()).count() as u64;
    assert!(n > 0);
    clock.advance_ms(1_000);
    r.tick();
    assert_eq!(
        r.lease_counts(),
        (reclaimed + n, late),
        "each of the {n} leases still held is reclaimed once"
    );
    assert!(r.ledgers_are_zero(), "the reclaim returned every ledger");
    assert!(left.iter().all(|l| !l.is_held()));
    let all = left.len() as u64;
    drop(left);
    assert_eq!(
        r.lease_counts(),
        (reclaimed + n, late + all),
        "their owners' later ends are late"
    );
    assert!(r.ledgers_are_zero(), "{:?}", r.node_metrics());
}

#[test]
fn a_full_primary_spills_over_to_an_alternative_before_anything_is_refused() {
    let r = Router::builder()
        .headroom(Headroom { shares: [1.0; 4] })
        .node(
            NodeSpec::new("cheap")
                .max_concurrency(1)
                .cost_per_1k_tokens(0.1),
        )
        .node(
            NodeSpec::new("dear")
                .max_concurrency(1)
                .cost_per_1k_tokens(5.0),
        )
        .build()
        .unwrap();
    let mut reader = r.reader();
    let task = Task::new(1, 100, 100);
    let routes = reader.calculate_routes(&task).unwrap();
    assert_eq!(routes.alternatives().len(), 1);
    let first = reader.allocate_resources(&routes, &task).unwrap();
    assert_eq!(first.route().route, routes.primary().route.route);
    // Same plan, primary now full: the costlier alternative still meets the constraints.
    let second = reader.allocate_resources(&routes, &task).unwrap();
    assert_eq!(second.route().route, routes.alternatives()[0].route.route);
    let spilled: u64 = r.node_metrics().iter().map(|n| n.spillovers).sum();
    assert_eq!(spilled, 1);
    // Both full: now, and only now, refused.
    assert_eq!(
        reader.allocate_resources(&routes, &task).unwrap_err(),
        RouteError::Saturated
    );
}

/// Completes every ticket at once with a fixed output-token count.
struct Immediate(u32);
impl Backend for Immediate {
    type Payload = ();
    fn dispatch(&self, _t: Task, _payload: (), _r: &RouteOptions, ticket: Ticket) {
        ticket.complete(Completion::success(1.0, self.0));
    }
}

#[test]
fn metrics_count_admissions_by_class_and_settlements() {
    let r = Router::builder()
        .node(NodeSpec::new("a").max_concurrency(64).memory(10_000, 1.0))
        .build()
        .unwrap();
    let d = Dispatcher::builder(r.clone())
        .workers(1)
        .control_interval(None)
        .build(Immediate(30))
        .unwrap();
    for (i, p) in [
        Priority::Critical,
        Priority::Low,
        Priority::Low,
        Priority::Normal,
    ]
    .into_iter()
    .enumerate()
    {
        // Estimated 50 output tokens, 30 produced: each settles 20 back.
        d.submit(Task::new(i as u64, 10, 50).priority(p), ())
            .unwrap();
    }
    d.shutdown();
    let m = d.metrics();
    assert_eq!(m.admitted_by_class, [1, 0, 1, 2]);
    assert_eq!(m.settle_corrections, 4);
    assert_eq!(m.settled_tokens, -80);
    assert_eq!(
        (m.reclaimed_leases, m.late_completions, m.spillovers),
        (0, 0, 0)
    );
    assert_eq!(m.utilization.memory, 0.0, "all released");
    let text = switchyard::prometheus::render(&m, None);
    assert!(
        text.contains("switchyard_admitted_total{class=\"low\"} 2\n"),
        "{text}"
    );
    assert!(text.contains("switchyard_settle_corrections_total 4\n"));
}

#[test]
fn fleet_utilization_is_reserved_over_capacity() {
    let (r, _) = router(0);
    let d = Dispatcher::builder(r.clone())
        .workers(1)
        .control_interval(None)
        .build(Hung(Mutex::new(Vec::new())))
        .unwrap();
    // Two tasks of 1000 tokens: 2 MB of 1000, 1000 CPU millis of 4000.
    d.submit(Task::new(1, 500, 500), ()).unwrap();
    d.submit(Task::new(2, 500, 500), ()).unwrap();
    while d.metrics().dispatched < 2 {
        std::thread::yield_now();
    }
    let u = d.metrics().utilization;
    assert!((u.memory - 0.002).abs() < 1e-9, "{u:?}");
    assert!((u.cpu - 0.25).abs() < 1e-9, "{u:?}");
    d.backend().0.lock().unwrap().clear();
    d.shutdown();
}

#[test]
fn a_reclaimed_attempt_is_not_failed_over_and_counted_twice() {
    let (r, clock) = router(100);
    // A second node to fail over to.
    r.add_node(NodeSpec::new("b").max_concurrency(8)).unwrap();
    r.tick();
    let mut reader = r.reader();
    let task = Task::new(1, 10, 10);
    let (_, lease) = reader.route(&task).unwrap();
    let ticket = Ticket::from_lease(lease, task);
    clock.advance_ms(100);
    r.tick(); // reclaimed, counted as a timeout
    let e = r
        .fail_over(ticket, Completion::failure(Outcome::ServerError, 5.0))
        .unwrap_err();
    assert_eq!(e.reason, switchyard::FailoverReason::Reclaimed);
    let done = r.finished();
    assert_eq!(done.total(), 1, "counted once: {done:?}");
    assert_eq!(done[Outcome::Timeout], 1);
    assert_eq!(r.lease_counts(), (1, 1));
    assert!(r.ledgers_are_zero());
}
