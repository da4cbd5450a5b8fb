//! Per-class headroom: lower priority classes can never take the last capacity that higher
//! ones need, and under saturation they are shed first.
// Not library code: std's primitives are fine here (the shim rule is for src/).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use switchyard::{
    Backend, Dispatcher, Headroom, NodeSpec, Priority, RouteError, RouteOptions, Router, Task,
    Ticket,
};

fn router(concurrency: u32) -> Router {
    Router::builder()
        .node(NodeSpec::new("n").max_concurrency(concurrency))
        .build()
        .unwrap()
}

#[test]
fn each_class_fills_only_its_share() {
    let r = router(20);
    let mut reader = r.reader();
    let mut held = Vec::new();
    // Default shares 100/95/85/75 % of 20: low 15, normal 17, high 19, critical 20.
    for (p, ceiling) in [
        (Priority::Low, 15),
        (Priority::Normal, 17),
        (Priority::High, 19),
        (Priority::Critical, 20),
    ] {
        loop {
            match reader.route(&Task::new(held.len() as u64, 10, 10).priority(p)) {
                Ok((_, lease)) => held.push(lease),
                Err(e) => {
                    assert_eq!(e, RouteError::Saturated);
                    break;
                }
            }
        }
        assert_eq!(held.len(), ceiling, "{p:?}");
    }
    // Once a critical slot frees, a low task still cannot take it.
    held.pop();
    assert_eq!(
        reader
            .route(&Task::new(99, 10, 10).priority(Priority::Low))
            .unwrap_err(),
        RouteError::Saturated
    );
    assert!(reader
        .route(&Task::new(99, 10, 10).priority(Priority::Critical))
        .is_ok());
    drop(held);
    assert!(r.ledgers_are_zero());
    assert!(
        r.set_headroom(Headroom {
            shares: [1.0, 0.9, 0.95, 0.5]
        })
        .is_err(),
        "must not increase"
    );
    assert!(r
        .set_headroom(Headroom {
            shares: [1.0, 0.9, 0.8, f64::NAN]
        })
        .is_err());
    assert!(r
        .set_headroom(Headroom {
            shares: [1.0, 1.0, 1.0, 1.0]
        })
        .is_ok());
}

/// Four threads each hold up to 30 leases (two threads low work only, two mixed classes) on a node of 40 (demand far above
/// capacity, so every class presses on its ceiling). Per class, the leases held at once never
/// exceed the class's ceiling: a lease of class p is granted only while the node holds at
/// most p's ceiling, so the class's own count is bounded by it at every instant. Each thread
/// counts its class's leases up after the reservation and down before the release, so the
/// count can only under-read what is held, and the bound is hard.
#[test]
fn ceilings_hold_under_concurrent_mixed_classes() {
    // Default shares 100/95/85/75 % of 40.
    fn ceiling(p: Priority) -> u64 {
        match p {
            Priority::Critical => 40,
            Priority::High => 38,
            Priority::Normal => 34,
            Priority::Low => 30,
        }
    }
    let r = router(40);
    let held: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let peak: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let total_peak = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (r, held, peak, total_peak) =
                (r.clone(), held.clone(), peak.clone(), total_peak.clone());
            std::thread::spawn(move || {
                let mut reader = r.reader();
                let mut mine = Vec::new();
                for i in 0..4_000u64 {
                    // Threads 0 and 1 ask for low work only: together they could take 60
                    // slots, so a missing low ceiling shows.
                    let p = if t < 2 {
                        Priority::Low
                    } else {
                        Priority::ALL[((i + t) % 4) as usize]
                    };
                    if let Ok((_, lease)) = reader.route(&Task::new(i, 10, 10).priority(p)) {
                        let now = held[p.index()].fetch_add(1, Ordering::SeqCst) + 1;
                        peak[p.index()].fetch_max(now, Ordering::SeqCst);
                        total_peak.fetch_max(r.node_metrics()[0].in_flight, Ordering::SeqCst);
                        mine.push((p, lease));
                    }
                    if (mine.len() >= 30 || i % 7 == 0) && !mine.is_empty() {
                        let (p, lease) = mine.remove(i as usize % mine.len());
                        held[p.index()].fetch_sub(1, Ordering::SeqCst);
                        drop(lease);
                    }
                }
                for (p, lease) in mine {
                    held[p.index()].fetch_sub(1, Ordering::SeqCst);
                    drop(lease);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for p in Priority::ALL {
        let peak = peak[p.index()].load(Ordering::SeqCst);
        assert!(peak <= ceiling(p), "{p:?}: {peak} held at once");
        assert!(peak > 0, "{p:?} never got a lease");
    }
    assert!(total_peak.load(Ordering::SeqCst) <= 40);
    assert!(r.ledgers_are_zero());
}

struct Hold(std::sync::Mutex<Vec<Ticket>>);
impl Backend for Hold {
    type Payload = ();
    fn dispatch(&self, _t: Task, _payload: (), _r: &RouteOptions, ticket: Ticket) {
        self.0.lock().unwrap().push(ticket);
    }
}

#[test]
fn saturation_sheds_the_lowest_classes_first() {
    let r = router(20);
    let d = Dispatcher::builder(r.clone())
        .workers(1)
        .control_interval(None)
        .build(Hold(Default::default()))
        .unwrap();
    // 100 tasks, 25 of each class, all held: capacity 20 fills up; who got in?
    for i in 0..100u64 {
        d.submit(
            Task::new(i, 10, 10).priority(Priority::ALL[(i % 4) as usize]),
            (),
        )
        .unwrap();
    }
    d.shutdown();
    let m = d.metrics();
    assert_eq!(m.dispatched, 20);
    let shed = m.shed_by_class;
    assert_eq!(shed.total(), 80);
    assert!(shed[Priority::Low] >= shed[Priority::Normal]);
    assert!(shed[Priority::Normal] >= shed[Priority::High]);
    assert!(shed[Priority::High] >= shed[Priority::Critical]);
    assert!(
        shed[Priority::Critical] < 25,
        "critical work got capacity: {shed:?}"
    );
}

/// Completes every ticket 2 ms later, on another thread.
struct Slow(std::sync::Mutex<std::sync::mpsc::Sender<Ticket>>);
impl Backend for Slow {
    type Payload = ();
    fn dispatch(&self, _t: Task, _payload: (), _r: &RouteOptions, ticket: Ticket) {
        let _ = self.0.lock().unwrap().send(ticket);
    }
}

fn slow_backend() -> (Slow, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel::<Ticket>();
    let io = std::thread::spawn(move || {
        for t in rx {
            std::thread::sleep(std::time::Duration::from_millis(2));
            t.complete(switchyard::Completion::success(2.0, 1));
        }
    });
    (Slow(std::sync::Mutex::new(tx)), io)
}

#[test]
fn a_burst_above_capacity_waits_for_capacity_instead_of_failing() {
    use std::time::Duration;
    let r = router(4);
    let (backend, io) = slow_backend();
    let d = Dispatcher::builder(r.clone())
        .workers(2)
        .saturation_wait([Duration::from_secs(5); 4])
        .build(backend)
        .unwrap();
    // 60 tasks at once on 3 usable slots (normal: 85 % of 4): they wait and flow through.
    for i in 0..60 {
        d.submit(Task::new(i, 10, 10), ()).unwrap();
    }
    d.shutdown(); // drains: waiting tasks are retried until they fit
    drop(d);
    io.join().unwrap();
    let done = r.finished();
    assert_eq!(done[switchyard::Outcome::Success], 60, "{done:?}");
    assert!(r.ledgers_are_zero());
}

#[test]
fn a_zero_wait_sheds_at_once() {
    use std::time::Duration;
    let r = router(4);
    let (backend, io) = slow_backend();
    let d = Dispatcher::builder(r.clone())
        .workers(1)
        .saturation_wait([Duration::ZERO; 4])
        .build(backend)
        .unwrap();
    for i in 0..60 {
        d.submit(Task::new(i, 10, 10), ()).unwrap();
    }
    d.shutdown();
    let m = d.metrics();
    assert!(m.shed_by_class[Priority::Normal] > 0);
    assert_eq!(m.dispatched + m.no_route_total(), 60);
    drop(d);
    io.join().unwrap();
}

/// Keeps every ticket with its task's id, in dispatch order.
struct Keep(std::sync::Mutex<Vec<(u64, Ticket)>>);
impl Backend for Keep {
    type Payload = ();
    fn dispatch(&self, t: Task, _payload: (), _r: &RouteOptions, ticket: Ticket) {
        self.0.lock().unwrap().push((t.id, ticket));
    }
}

#[test]
fn a_waiting_critical_task_is_not_overtaken_by_lower_classes_needing_the_same() {
    use std::time::{Duration, Instant};
    // 1000 tokens in flight: low work may fill 750 (three tasks of 250); a critical task of
    // 600 fits only once two of them are done.
    let r = Router::builder()
        .node(
            NodeSpec::new("a")
                .max_concurrency(16)
                .max_tokens_in_flight(1_000),
        )
        .build()
        .unwrap();
    let d = Dispatcher::builder(r.clone())
        .workers(1)
        .control_interval(None)
        .saturation_wait([Duration::from_secs(30); 4])
        .build(Keep(Default::default()))
        .unwrap();
    let dispatched = |n: usize| {
        let t0 = Instant::now();
        while d.backend().0.lock().unwrap().len() < n {
            assert!(t0.elapsed() < Duration::from_secs(10), "stuck before {n}");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let low = |id| Task::new(id, 200, 50).priority(Priority::Low);
    for id in 0..3 {
        d.submit(low(id), ()).unwrap();
    }
    dispatched(3);
    d.submit(Task::new(100, 500, 100).priority(Priority::Critical), ())
        .unwrap();
    for id in 3..6 {
        d.submit(low(id), ()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(d.backend().0.lock().unwrap().len(), 3, "nothing fits yet");
    // One low task ends: another low one would fit (750), the critical one not yet.
    let (_, t) = d.backend().0.lock().unwrap().remove(0);
    t.complete(switchyard::Completion::success(1.0, 50));
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(
        d.backend().0.lock().unwrap().len(),
        2,
        "a low task took the room the critical one is waiting for"
    );
    // A second one ends: the critical task goes first.
    let (_, t) = d.backend().0.lock().unwrap().remove(0);
    t.complete(switchyard::Completion::success(1.0, 50));
    dispatched(2);
    assert_eq!(d.backend().0.lock().unwrap()[1].0, 100);
    // Then the low ones follow as room frees.
    for (_, t) in std::mem::take(&mut *d.backend().0.lock().unwrap()) {
        t.complete(switchyard::Completion::success(1.0, 50));
    }
    d.shutdown();
    for (_, t) in std::mem::take(&mut *d.backend().0.lock().unwrap()) {
        t.complete(switchyard::Completion::success(1.0, 50));
    }
    assert!(r.ledgers_are_zero());
}

/// `saturation_wait([Duration::MAX; 4])`, "never shed": saturated tasks wait, and each is
/// served once capacity frees; none is lost or shed and no worker dies. This once panicked a
/// worker: its deadline was `Instant::now() + wait`, which overflows for `Duration::MAX`,
/// outside the worker's `catch_unwind`, so its waiting tasks were dropped and later submits
/// were accepted and never handled. The deadline saturates now.
#[test]
fn a_saturation_wait_of_duration_max_waits_and_serves_every_task() {
    use std::collections::BTreeSet;
    use std::time::{Duration, Instant};
    let r = Router::builder()
        .headroom(Headroom { shares: [1.0; 4] })
        .node(NodeSpec::new("n").max_concurrency(2))
        .build()
        .unwrap();
    let d = Dispatcher::builder(r.clone())
        .workers(2)
        .control_interval(None)
        .saturation_wait([Duration::MAX; 4])
        .build(Keep(Default::default()))
        .unwrap();
    let held = |n: usize| {
        let t0 = Instant::now();
        while d.backend().0.lock().unwrap().len() < n {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "stuck below {n} held: a waiting task was lost"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    for id in 0..8 {
        d.submit(
            Task::new(id, 10, 10).priority(Priority::ALL[id as usize % 4]),
            (),
        )
        .unwrap();
    }
    held(2);
    // Six tasks wait (on both workers) for the two slots.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(d.backend().0.lock().unwrap().len(), 2, "over capacity");
    let mut served = BTreeSet::new();
    while served.len() < 8 {
        let next = d.backend().0.lock().unwrap().pop();
        match next {
            Some((id, t)) => {
                assert!(served.insert(id), "task {id} dispatched twice");
                t.complete(switchyard::Completion::success(1.0, 10));
            }
            None => {
                let t0 = Instant::now();
                while d.backend().0.lock().unwrap().is_empty() {
                    assert!(
                        t0.elapsed() < Duration::from_secs(20),
                        "served {served:?}; the rest never came"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    assert_eq!(served, (0..8).collect());
    // Both workers are alive: a later task is still handled.
    d.submit(Task::new(100, 10, 10), ()).unwrap();
    held(1);
    for (_, t) in std::mem::take(&mut *d.backend().0.lock().unwrap()) {
        t.complete(switchyard::Completion::success(1.0, 10));
    }
    d.shutdown();
    let m = d.metrics();
    assert_eq!((m.submitted, m.dispatched, m.refused), (9, 9, 0));
    assert_eq!(m.shed_by_class.iter().map(|(_, n)| n).sum::<u64>(), 0);
    assert_eq!(d.backend_panics(), 0);
    assert!(r.ledgers_are_zero());
}

#[test]
fn a_task_with_a_latency_budget_waits_half_of_it_for_room() {
    use std::time::{Duration, Instant};
    let r = router(4);
    let keep = Arc::new(Keep(std::sync::Mutex::new(Vec::new())));
    struct Shared(Arc<Keep>);
    impl Backend for Shared {
        type Payload = ();
        fn dispatch(&self, t: Task, p: (), r: &RouteOptions, ticket: Ticket) {
            self.0.dispatch(t, p, r, ticket);
        }
    }
    let d = Dispatcher::builder(r.clone())
        .workers(1)
        .saturation_wait([Duration::from_millis(20); 4])
        .build(Shared(keep.clone()))
        .unwrap();
    // Normal work fills 3 of the 4 slots; the tickets are kept, so nothing frees up.
    for i in 0..3 {
        d.submit(Task::new(i, 10, 10), ()).unwrap();
    }
    let until = |what: &str, ok: &dyn Fn() -> bool| {
        let end = Instant::now() + Duration::from_secs(20);
        while !ok() {
            assert!(Instant::now() < end, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    until("the first three were not dispatched", &|| {
        keep.0.lock().unwrap().len() == 3
    });
    // Two more: one with no budget (sheds after its class's 20 ms), one with a minute's budget
    // (may wait 30 s).
    d.submit(Task::new(10, 10, 10), ()).unwrap();
    d.submit(Task::new(11, 10, 10).max_latency_ms(60_000), ())
        .unwrap();
    until("the task with no budget was not shed", &|| {
        d.metrics().shed_by_class[Priority::Normal] == 1
    });
    // Well past 20 ms, the budgeted task still waits; room frees and it is served.
    assert_eq!(keep.0.lock().unwrap().len(), 3);
    drop(keep.0.lock().unwrap().drain(..1).collect::<Vec<_>>());
    until("the budgeted task was not served", &|| {
        keep.0.lock().unwrap().iter().any(|(id, _)| *id == 11)
    });
    assert_eq!(d.metrics().shed_by_class[Priority::Normal], 1);
    keep.0.lock().unwrap().clear();
    d.shutdown();
    assert!(r.ledgers_are_zero());
}
