//! `Dispatcher::submit_inline`: the caller routes while the dispatcher is idle, and the
//! queue takes over as soon as anything is queued or waits for room.
// Not library code: std's primitives are fine here (the shim rule is for src/).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread::{self, ThreadId};
use std::time::Duration;

use switchyard::{
    Backend, Completion, Dispatcher, NodeSpec, Outcome, RouteError, RouteOptions, Router,
    SubmitError, Task, Ticket,
};

/// Records, per task, the thread that dispatched or rejected it; completes at once unless
/// told to keep tickets (then they wait in `held`), and blocks task `block` in `dispatch`
/// on `gate` (twice: entered, then released).
struct Recorder {
    seen: Mutex<Vec<(u64, ThreadId, Option<RouteError>)>>,
    keep: bool,
    held: Mutex<Vec<Ticket>>,
    block: Option<(u64, Arc<Barrier>)>,
}

impl Recorder {
    fn new(keep: bool, block: Option<(u64, Arc<Barrier>)>) -> Self {
        Self {
            seen: Mutex::new(Vec::new()),
            keep,
            held: Mutex::new(Vec::new()),
            block,
        }
    }

    fn seen(&self) -> Vec<(u64, ThreadId, Option<RouteError>)> {
        self.seen.lock().unwrap().clone()
    }

    fn thread_of(&self, id: u64) -> Option<ThreadId> {
        self.seen().iter().find(|s| s.0 == id).map(|s| s.1)
    }
}

impl Backend for Recorder {
    type Payload = ();
    fn dispatch(&self, task: Task, _: (), _: &RouteOptions, ticket: Ticket) {
        self.seen
            .lock()
            .unwrap()
            .push((task.id, thread::current().id(), None));
        if let Some((id, gate)) = &self.block {
            if *id == task.id {
                gate.wait();
                gate.wait();
            }
        }
        if self.keep {
            self.held.lock().unwrap().push(ticket);
        } else {
            ticket.complete(Completion::success(1.0, task.output_tokens));
        }
    }

    fn reject(&self, task: Task, _: (), e: RouteError) {
        self.seen
            .lock()
            .unwrap()
            .push((task.id, thread::current().id(), Some(e)));
    }
}

fn one_node(concurrency: u32) -> Router {
    Router::builder()
        .capabilities(["chat", "vision"])
        .node(
            NodeSpec::new("a")
                .capabilities(["chat"])
                .max_concurrency(concurrency),
        )
        .build()
        .unwrap()
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..5_000 {
        if f() {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
    panic!("timed out waiting until {what}");
}

#[test]
fn an_idle_dispatcher_routes_on_the_calling_thread() {
    let d = Dispatcher::builder(one_node(8))
        .workers(1)
        .build(Recorder::new(false, None))
        .unwrap();
    for id in 0..50 {
        d.submit_inline(Task::new(id, 10, 5), ()).unwrap();
    }
    let me = thread::current().id();
    let seen = d.backend().seen();
    assert_eq!(
        seen.len(),
        50,
        "every task was handed over before submit returned"
    );
    assert!(seen.iter().all(|s| s.1 == me && s.2.is_none()));
    let m = d.metrics();
    assert_eq!(m.dispatched, 50);
    assert_eq!(m.decision_latency.count, 50, "each decision is timed");
    assert_eq!(m.outcome(Outcome::Success), 50);
    assert_eq!(d.decision_histogram().len(), 50);
    assert!(d.router().ledgers_are_zero());
}

#[test]
fn a_task_no_route_can_take_is_rejected_on_the_calling_thread() {
    let router = one_node(8);
    let vision = router.resolve(&["vision"]).unwrap();
    let d = Dispatcher::builder(router)
        .workers(1)
        .build(Recorder::new(false, None))
        .unwrap();
    d.submit_inline(Task::new(7, 10, 5).require(vision), ())
        .unwrap();
    let seen = d.backend().seen();
    assert_eq!(
        seen,
        vec![(7, thread::current().id(), Some(RouteError::NoCapableRoute))]
    );
    let m = d.metrics();
    assert_eq!(m.dispatched, 0);
    let no_capable = m
        .no_route
        .iter()
        .find(|(name, _)| *name == RouteError::NoCapableRoute.name())
        .map(|(_, n)| *n);
    assert_eq!(no_capable, Some(1));
}

#[test]
fn a_queued_task_sends_later_ones_through_the_queue_in_order() {
    let gate = Arc::new(Barrier::new(2));
    let d = Dispatcher::builder(one_node(8))
        .workers(1)
        .build(Recorder::new(false, Some((1, gate.clone()))))
        .unwrap();
    // Task 1 occupies the only worker inside `dispatch`.
    d.submit(Task::new(1, 10, 5), ()).unwrap();
    gate.wait();
    let worker = d.backend().thread_of(1).unwrap();
    // Task 2 is queued behind it; task 3 then must not overtake it on this thread.
    d.submit(Task::new(2, 10, 5), ()).unwrap();
    assert_eq!(d.queued(), 1);
    d.submit_inline(Task::new(3, 10, 5), ()).unwrap();
    assert_eq!(d.queued(), 2, "task 3 was queued, not routed here");
    gate.wait();
    wait_until("tasks 2 and 3 are dispatched", || {
        d.backend().seen().len() == 3
    });
    let order: Vec<u64> = d.backend().seen().iter().map(|s| s.0).collect();
    assert_eq!(order, vec![1, 2, 3], "FIFO kept");
    assert_eq!(d.backend().thread_of(3), Some(worker));
    // With the queue empty again, the next one is routed here.
    d.submit_inline(Task::new(4, 10, 5), ()).unwrap();
    assert_eq!(d.backend().thread_of(4), Some(thread::current().id()));
}

#[test]
fn a_task_with_no_room_waits_in_a_worker_list_and_holds_back_later_ones() {
    // Room for 100 tokens in flight: tasks 1 and 2 (60 each) cannot run together; task 3
    // (10) would fit beside task 1, but must not overtake task 2, which waits for room.
    let router = Router::builder()
        .node(
            NodeSpec::new("a")
                .max_concurrency(8)
                .max_tokens_in_flight(100),
        )
        .build()
        .unwrap();
    let d = Dispatcher::builder(router)
        .workers(1)
        .saturation_wait([Duration::from_secs(30); 4])
        .build(Recorder::new(true, None))
        .unwrap();
    let me = thread::current().id();
    d.submit_inline(Task::new(1, 50, 10), ()).unwrap();
    assert_eq!(d.backend().thread_of(1), Some(me), "room: routed here");
    // No room for task 2: queued, and held in the worker's waiting list.
    // (`waiting`, not `queued`: a task taken off the queue is counted as waiting only once
    // its worker has tried it, and a caller in between may route beside it.)
    d.submit_inline(Task::new(2, 50, 10), ()).unwrap();
    wait_until("task 2 waits in the worker's list", || d.waiting() == 1);
    assert_eq!(d.queued(), 0);
    assert_eq!(d.backend().seen().len(), 1);
    // While it waits, task 3 goes through the queue too and waits behind it, though the
    // caller would have found room for it.
    d.submit_inline(Task::new(3, 5, 5), ()).unwrap();
    wait_until("task 3 waits behind it", || d.waiting() == 2);
    let m = d.metrics();
    assert_eq!((m.waiting, m.queued, m.dispatched), (2, 0, 1));
    assert_eq!(m.submitted, 3, "the waiting tasks count as submitted");
    thread::sleep(Duration::from_millis(5));
    assert_eq!(
        d.backend().seen().len(),
        1,
        "task 3 did not overtake task 2"
    );
    // Room comes: task 2, then task 3 beside it, on the worker, in order.
    let t = d.backend().held.lock().unwrap().pop().unwrap();
    t.complete(Completion::success(1.0, 10));
    wait_until("tasks 2 and 3 are dispatched", || {
        d.backend().seen().len() == 3
    });
    let seen = d.backend().seen();
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(seen[1].1 != me && seen[2].1 != me);
    for t in d.backend().held.lock().unwrap().drain(..) {
        t.complete(Completion::success(1.0, 5));
    }
    // Nothing waits any more: the caller routes again.
    wait_until("the worker's list is empty", || d.waiting() == 0);
    d.submit_inline(Task::new(4, 5, 5), ()).unwrap();
    assert_eq!(d.backend().thread_of(4), Some(me));
    for t in d.backend().held.lock().unwrap().drain(..) {
        t.complete(Completion::success(1.0, 5));
    }
    assert!(d.router().ledgers_are_zero());
}

#[test]
fn after_shutdown_the_task_is_handed_back() {
    let d = Dispatcher::builder(one_node(8))
        .workers(1)
        .build(Recorder::new(false, None))
        .unwrap();
    d.shutdown();
    match d.submit_inline(Task::new(9, 10, 5), ()) {
        Err(SubmitError::ShutDown((task, ()))) => assert_eq!(task.id, 9),
        other => panic!("expected ShutDown, got {other:?}"),
    }
    assert!(d.backend().seen().is_empty());
}

#[test]
fn many_callers_lose_no_task_and_no_count() {
    const THREADS: u64 = 4;
    const EACH: u64 = 3_000;
    let router = Router::builder()
        .nodes((0..4).map(|i| NodeSpec::new(format!("n{i}")).max_concurrency(1_000)))
        .build()
        .unwrap();
    struct Count(AtomicU64);
    impl Backend for Count {
        type Payload = mpsc::Sender<u64>;
        fn dispatch(&self, task: Task, tx: Self::Payload, _: &RouteOptions, ticket: Ticket) {
            self.0.fetch_add(1, Ordering::Relaxed);
            let _ = tx.send(task.id);
            ticket.complete(Completion::success(1.0, 1));
        }
    }
    let d = Arc::new(
        Dispatcher::builder(router)
            .workers(2)
            .build(Count(AtomicU64::new(0)))
            .unwrap(),
    );
    let (tx, rx) = mpsc::channel();
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (d, tx) = (d.clone(), tx.clone());
            thread::spawn(move || {
                for i in 0..EACH {
                    d.submit_inline(Task::new(t * EACH + i, 10, 1), tx.clone())
                        .unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    for t in threads {
        t.join().unwrap();
    }
    d.shutdown();
    assert!(d.wait_for_tickets(Duration::from_secs(10)));
    let mut ids: Vec<u64> = rx.iter().collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (0..THREADS * EACH).collect::<Vec<_>>(),
        "each task once"
    );
    let m = d.metrics();
    assert_eq!(m.dispatched, THREADS * EACH);
    assert_eq!(m.outcome(Outcome::Success), THREADS * EACH);
    // Inline and queued decisions together, none lost by callers sharing a slot.
    assert_eq!(m.decision_latency.count, THREADS * EACH);
    assert!(d.router().ledgers_are_zero());
}
