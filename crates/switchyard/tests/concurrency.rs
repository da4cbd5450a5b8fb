//! Concurrency through the public API: capacity under many threads, every task ends exactly
//! once under concurrent submitters and completers, with dropped tickets, across shutdown.
// Not library code: std's primitives are fine here (the shim rule is for src/).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::Duration;

use switchyard::{
    Backend, BuildError, Completion, Dispatcher, NodeSpec, Outcome, RouteError, RouteOptions,
    Router, SubmitError, Task, Ticket,
};

#[test]
fn capacity_is_never_exceeded_under_many_threads() {
    const CAP: u32 = 5;
    let router = Router::builder()
        .nodes((0..3).map(|i| {
            NodeSpec::new(format!("n{i}"))
                .max_concurrency(CAP)
                .max_tokens_in_flight(1_000)
        }))
        .build()
        .unwrap();
    // Per node: how many leases are held right now, and the most ever seen.
    let held: Arc<Vec<AtomicU64>> = Arc::new((0..3).map(|_| AtomicU64::new(0)).collect());
    let peak: Arc<Vec<AtomicU64>> = Arc::new((0..3).map(|_| AtomicU64::new(0)).collect());
    let saturated = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let (router, held, peak, saturated) = (
                router.clone(),
                held.clone(),
                peak.clone(),
                saturated.clone(),
            );
            thread::spawn(move || {
                let mut reader = router.reader();
                for i in 0..3_000u64 {
                    // 20 + 30 tokens: the token limit (1000) allows 20, concurrency allows 5.
                    match reader.route(&Task::new(t * 10_000 + i, 20, 30)) {
                        Ok((_, lease)) => {
                            let n = lease.route().head().0 as usize;
                            let now = held[n].fetch_add(1, Ordering::SeqCst) + 1;
                            peak[n].fetch_max(now, Ordering::SeqCst);
                            if i % 7 == 0 {
                                thread::yield_now();
                            }
                            held[n].fetch_sub(1, Ordering::SeqCst);
                            drop(lease);
                        }
                        Err(RouteError::Saturated) => {
                            saturated.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("unexpected {e}"),
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for p in peak.iter() {
        // `held` is incremented after the reservation and decremented before the release,
        // so it can only under-count the ledger: its peak bounds what the ledger allowed.
        assert!(p.load(Ordering::SeqCst) <= CAP as u64);
    }
    assert!(router.ledgers_are_zero());
}

/// Completes every ticket on a pool of completer threads; drops every 5th; panics once, on
/// the first task it is handed from its 13th dispatch on whose id is 3 modulo 5 (one the
/// completers would have completed as a success). Records every task id it is handed,
/// dispatched or rejected, and the id it panicked on.
///
/// (Not a fixed id: the dispatcher may reject any one task as saturated, and a test waiting
/// for that task's dispatch would then wait for ever.)
struct Pool {
    tx: Mutex<mpsc::Sender<(Task, Ticket)>>,
    dispatched: Mutex<Vec<u64>>,
    rejected: Mutex<Vec<u64>>,
    panicked: Mutex<Option<u64>>,
}

impl Backend for Pool {
    type Payload = ();
    fn dispatch(&self, task: Task, _payload: (), _routes: &RouteOptions, ticket: Ticket) {
        let n = {
            let mut dispatched = self.dispatched.lock().unwrap();
            dispatched.push(task.id);
            dispatched.len()
        };
        if n >= 13 && task.id % 5 == 3 {
            let mut panicked = self.panicked.lock().unwrap();
            if panicked.is_none() {
                *panicked = Some(task.id);
                drop(panicked); // not poisoned by the panic
                panic!("backend bug on purpose");
            }
        }
        self.tx.lock().unwrap().send((task, ticket)).unwrap();
    }
    fn reject(&self, task: Task, _payload: (), _error: RouteError) {
        self.rejected.lock().unwrap().push(task.id);
    }
}

/// Four submitters keep submitting (retrying a task the full queue hands back) until the
/// dispatcher refuses them as shut down, while two completers end the tickets. Every task id
/// is accounted for exactly once: an accepted one is dispatched or rejected once (never both,
/// never twice), a refused one never reaches the backend; every dispatched ticket ends once.
///
/// Shutdown comes only once real work was done (2000 tasks dispatched, the panic among them), so
/// the test cannot pass on zeros, and it checks ids, not totals, so a task counted twice
/// cannot hide behind one that was lost.
#[test]
fn every_task_ends_exactly_once_across_shutdown() {
    use std::collections::HashMap;
    use std::time::Instant;
    let router = Router::builder()
        .nodes((0..4).map(|i| NodeSpec::new(format!("n{i}")).max_concurrency(64)))
        .build()
        .unwrap();
    let (tx, rx) = mpsc::channel::<(Task, Ticket)>();
    let backend = Pool {
        tx: Mutex::new(tx),
        dispatched: Mutex::new(Vec::new()),
        rejected: Mutex::new(Vec::new()),
        panicked: Mutex::new(None),
    };
    let rx = Arc::new(Mutex::new(rx));
    let ended = Arc::new(Mutex::new(Vec::new()));
    let completers: Vec<_> = (0..2)
        .map(|_| {
            let (rx, ended) = (rx.clone(), ended.clone());
            thread::spawn(move || loop {
                let msg = rx.lock().unwrap().recv();
                match msg {
                    Ok((task, ticket)) => {
                        if task.id % 5 == 0 {
                            drop(ticket); // abandoned
                        } else if task.id % 5 == 1 {
                            ticket.complete(Completion::failure(Outcome::ServerError, 1.0));
                        } else {
                            ticket.complete(Completion::success(2.0, task.output_tokens));
                        }
                        ended.lock().unwrap().push(task.id);
                    }
                    Err(_) => return,
                }
            })
        })
        .collect();
    let d = Arc::new(
        Dispatcher::builder(router.clone())
            .workers(2)
            .capacity(256)
            .control_interval(Some(Duration::from_millis(1)))
            .build(backend)
            .unwrap(),
    );
    let submitters: Vec<_> = (0..4u64)
        .map(|s| {
            let d = d.clone();
            thread::spawn(move || {
                let (mut accepted, mut refused, mut full) = (Vec::new(), Vec::new(), 0u64);
                for i in 0.. {
                    let task = Task::new(s * 1_000_000 + i, 50, 5);
                    loop {
                        match d.submit(task, ()) {
                            Ok(()) => {
                                accepted.push(task.id);
                                break;
                            }
                            Err(SubmitError::Full(back)) => {
                                assert_eq!(back, (task, ()), "the task comes back untouched");
                                full += 1;
                                thread::yield_now();
                            }
                            Err(e) => {
                                assert_eq!(
                                    e.into_inner(),
                                    (task, ()),
                                    "the task comes back untouched"
                                );
                                refused.push(task.id);
                                return (accepted, refused, full);
                            }
                        }
                    }
                }
                unreachable!()
            })
        })
        .collect();
    // Shut down while the submitters are still running, once real work was done.
    let t0 = Instant::now();
    loop {
        let b = d.backend();
        let n = b.dispatched.lock().unwrap().len();
        let panicked = b.panicked.lock().unwrap().is_some();
        if n >= 2_000 && panicked {
            break;
        }
        assert!(
            b.rejected.lock().unwrap().len() < 10_000,
            "the fleet rejects instead of serving"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no progress: {n} dispatched"
        );
        thread::sleep(Duration::from_millis(1));
    }
    d.shutdown();
    let (mut accepted, mut refused, mut full) = (Vec::new(), Vec::new(), 0);
    for s in submitters {
        let (a, r, f) = s.join().unwrap();
        full += f;
        assert_eq!(r.len(), 1, "a submitter stops at its first ShutDown");
        accepted.extend(a);
        refused.extend(r);
    }
    assert!(d.wait_for_tickets(Duration::from_secs(10)), "tickets drain");
    let m = d.metrics();
    assert_eq!(m.submitted, accepted.len() as u64);
    assert_eq!(
        m.refused,
        full + refused.len() as u64,
        "refused: full, then shut down"
    );
    // Per id: each accepted task reached the backend exactly once, dispatched or rejected.
    let b = d.backend();
    let dispatched = b.dispatched.lock().unwrap().clone();
    let rejected = b.rejected.lock().unwrap().clone();
    let mut seen: HashMap<u64, u32> = HashMap::new();
    for &id in dispatched.iter().chain(&rejected) {
        *seen.entry(id).or_default() += 1;
    }
    for &id in &accepted {
        assert_eq!(
            seen.remove(&id),
            Some(1),
            "accepted task {id} reached the backend"
        );
    }
    assert!(
        seen.is_empty(),
        "tasks never accepted reached the backend: {seen:?}"
    );
    for id in &refused {
        assert!(!dispatched.contains(id) && !rejected.contains(id));
    }
    assert_eq!(m.dispatched, dispatched.len() as u64);
    assert_eq!(m.no_route_total(), rejected.len() as u64);
    assert_eq!(
        m.outcomes.total(),
        m.dispatched,
        "every dispatched task counted exactly once"
    );
    assert_eq!(
        m.outcomes[Outcome::ServerError],
        dispatched.iter().filter(|&&id| id % 5 == 1).count() as u64
    );
    assert_eq!(m.in_flight, 0);
    assert_eq!(m.queued, 0);
    // One decision per accepted task, plus one per retry of a task that waited for capacity.
    assert!(m.decision_latency.count >= accepted.len() as u64);
    assert_eq!(d.backend_panics(), 1, "one dispatch panicked, once");
    let panicked = b.panicked.lock().unwrap().expect("a dispatch panicked");
    assert!(router.ledgers_are_zero(), "every lease released");
    // After shutdown, submissions are refused with the task handed back.
    let t = Task::new(99, 1, 1);
    assert_eq!(d.submit(t, ()), Err(SubmitError::ShutDown((t, ()))));
    drop(d);
    for c in completers {
        c.join().unwrap();
    }
    // Every dispatched ticket ended exactly once: the completers saw each id once (the
    // panicked one never reached them: its dispatch panicked, which drops the ticket,
    // counted as abandoned).
    let mut ended = ended.lock().unwrap().clone();
    ended.sort_unstable();
    let mut expected: Vec<u64> = dispatched
        .iter()
        .copied()
        .filter(|&id| id != panicked)
        .collect();
    expected.sort_unstable();
    assert_eq!(ended.len(), expected.len());
    assert!(ended == expected, "a ticket ended twice or never");
}

struct Hold(Mutex<Vec<Ticket>>);
impl Backend for Hold {
    type Payload = ();
    fn dispatch(&self, _t: Task, _payload: (), _r: &RouteOptions, ticket: Ticket) {
        self.0.lock().unwrap().push(ticket);
    }
}

#[test]
fn full_queue_hands_the_task_back_and_metrics_add_up() {
    let router = Router::builder()
        // Full shares for every class: this test is about the queue, not headroom.
        .headroom(switchyard::Headroom { shares: [1.0; 4] })
        .node(NodeSpec::new("a").max_concurrency(2))
        .build()
        .unwrap();
    let d = Dispatcher::builder(router.clone())
        .workers(1)
        .capacity(1)
        .control_interval(None)
        .build(Hold(Mutex::new(Vec::new())))
        .unwrap();
    let mut full = 0;
    for i in 0..2_000 {
        match d.submit(Task::new(i, 10, 10), ()) {
            Ok(()) => {}
            Err(SubmitError::Full(t)) => {
                assert_eq!(t.0.id, i);
                full += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    // Make sure at least three tasks got in (retrying while the queue is full).
    let mut id = 10_000;
    while d.metrics().submitted < 3 {
        if d.submit(Task::new(id, 10, 10), ()).is_err() {
            full += 1;
            thread::yield_now();
        }
        id += 1;
    }
    d.shutdown();
    let m = d.metrics();
    assert!(
        full > 0,
        "a capacity of 1 must refuse some of 2000 rapid submits"
    );
    assert_eq!(m.refused, full);
    // Two leases fit; the rest found the node saturated.
    assert_eq!(m.dispatched, 2);
    assert_eq!(m.no_route_total(), m.submitted - 2);
    assert!(m
        .no_route
        .iter()
        .any(|&(n, c)| n == "saturated" && c == m.submitted - 2));
    assert_eq!(m.in_flight, 2);
    assert_eq!(m.nodes[0].in_flight, 2);
    assert!((m.nodes[0].utilization - 1.0).abs() < 1e-9);
    assert!(m.balance_deviation.abs() < 1e-9);
    assert!(!format!("{d:?}").is_empty());
    assert!(d.router().in_flight() == 2);
    assert_eq!(d.queued(), 0);
}

#[test]
fn builder_rejects_bad_settings() {
    let router = Router::builder().node(NodeSpec::new("a")).build().unwrap();
    let e = Dispatcher::builder(router.clone())
        .workers(0)
        .build(Hold(Mutex::new(vec![])))
        .unwrap_err();
    assert!(matches!(
        e,
        BuildError::InvalidSetting {
            field: "workers",
            ..
        }
    ));
    let e = Dispatcher::builder(router.clone())
        .capacity(0)
        .build(Hold(Mutex::new(vec![])))
        .unwrap_err();
    assert!(e.to_string().contains("capacity"));
    let e = Dispatcher::builder(router)
        .control_interval(Some(Duration::ZERO))
        .build(Hold(Mutex::new(vec![])))
        .unwrap_err();
    assert!(matches!(
        e,
        BuildError::InvalidSetting {
            field: "control_interval",
            ..
        }
    ));
}

#[test]
fn idle_workers_park_and_wake_for_new_work() {
    struct Count(AtomicU64);
    impl Backend for Count {
        type Payload = ();
        fn dispatch(&self, _t: Task, _payload: (), _r: &RouteOptions, ticket: Ticket) {
            self.0.fetch_add(1, Ordering::SeqCst);
            ticket.complete(Completion::success(1.0, 1));
        }
    }
    let router = Router::builder().node(NodeSpec::new("a")).build().unwrap();
    let d = Dispatcher::builder(router)
        .workers(2)
        .spin_rounds(1)
        .pin_cores(true)
        .build(Count(AtomicU64::new(0)))
        .unwrap();
    for round in 0..20u64 {
        // Let the workers go idle and park between bursts.
        thread::sleep(Duration::from_millis(2));
        for i in 0..10 {
            d.submit(Task::new(round * 100 + i, 1, 1), ()).unwrap();
        }
    }
    d.shutdown();
    assert_eq!(d.metrics().outcome(Outcome::Success), 200);
}

/// A payload that knows its task and counts how often it is dropped.
#[derive(Debug)]
struct Request {
    task: u64,
    body: String,
    drops: Arc<AtomicUsize>,
}

impl Drop for Request {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// Checks that each payload arrives with its own task, intact, then lets it go.
struct PayloadBackend {
    served: AtomicU64,
    rejected: AtomicU64,
}

impl Backend for PayloadBackend {
    type Payload = Request;
    fn dispatch(&self, task: Task, payload: Request, _routes: &RouteOptions, ticket: Ticket) {
        assert_eq!(payload.task, task.id, "a payload travels with its own task");
        assert_eq!(payload.body, format!("request {}", task.id));
        self.served.fetch_add(1, Ordering::SeqCst);
        // Completed on another thread, as an I/O runtime would.
        thread::spawn(move || {
            drop(payload);
            ticket.complete(Completion::success(1.0, 1));
        });
    }

    fn reject(&self, task: Task, payload: Request, e: RouteError) {
        assert_eq!(payload.task, task.id);
        assert_eq!(e, RouteError::NoCapableRoute);
        self.rejected.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn every_payload_reaches_dispatch_reject_or_the_caller_exactly_once() {
    let router = Router::builder()
        .capabilities(["chat", "vision"])
        .node(
            NodeSpec::new("a")
                .capabilities(["chat"])
                .max_concurrency(64),
        )
        .build()
        .unwrap();
    let vision = router.resolve(&["vision"]).unwrap();
    let backend = PayloadBackend {
        served: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
    };
    let d = Dispatcher::builder(router)
        .workers(2)
        .capacity(64)
        .build(backend)
        .unwrap();
    let drops = Arc::new(AtomicUsize::new(0));
    let (mut handed_back, n) = (0u64, 2_000u64);
    for id in 0..n {
        // Every tenth task needs a capability no node has: it is rejected with its payload.
        let mut task = Task::new(id, 10, 1);
        if id % 10 == 0 {
            task = task.require(vision);
        }
        let request = Request {
            task: id,
            body: format!("request {id}"),
            drops: drops.clone(),
        };
        if let Err(e) = d.submit(task, request) {
            let (task, request) = e.into_inner();
            assert_eq!(
                request.task, task.id,
                "a refused payload comes back with its task"
            );
            handed_back += 1;
        }
    }
    d.shutdown();
    assert!(d.wait_for_tickets(Duration::from_secs(10)));
    let b = d.backend();
    let (served, rejected) = (
        b.served.load(Ordering::SeqCst),
        b.rejected.load(Ordering::SeqCst),
    );
    assert_eq!(served + rejected + handed_back, n, "every task ends once");
    assert!(served > 0 && rejected > 0);
    assert_eq!(
        drops.load(Ordering::SeqCst) as u64,
        n,
        "every payload dropped exactly once"
    );
}
