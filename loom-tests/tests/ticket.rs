//! Model 3: a ticket ends its task exactly once, whether the backend completes it on
//! another thread or drops it.
#![cfg(switchyard_loom)]

mod common;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread::{self, JoinHandle};
use switchyard::{Backend, Completion, NodeSpec, Outcome, RouteOptions, Task, Ticket};

#[derive(Default)]
struct State {
    seen: AtomicUsize,
    completers: Mutex<Vec<JoinHandle<()>>>,
}

/// Odd tasks: the ticket goes to a fresh thread that completes it. Even tasks: the ticket
/// is dropped on the worker (abandoned).
struct Handoff(Arc<State>);

impl Backend for Handoff {
    type Payload = ();
    fn dispatch(&self, task: Task, _payload: (), _routes: &RouteOptions, ticket: Ticket) {
        self.0.seen.fetch_add(1, Ordering::SeqCst);
        assert_eq!(ticket.task_id(), task.id);
        if task.id % 2 == 1 {
            let h = thread::spawn(move || ticket.complete(Completion::success(1.0, 1)));
            self.0.completers.lock().unwrap().push(h);
        } else {
            drop(ticket);
        }
    }
}

/// Task 1 completes on a completer thread while the worker drops task 2's ticket and the
/// main thread shuts down: each task is counted once, as Success or Abandoned, and every
/// lease is back.
#[test]
fn complete_on_another_thread_vs_drop() {
    common::check(2, || {
        let router = common::router([NodeSpec::new("a").max_concurrency(2)]);
        let state = Arc::new(State::default());
        let d = common::dispatcher(&router, 16, Handoff(Arc::clone(&state)));
        d.submit(Task::new(1, 10, 10), ()).unwrap();
        d.submit(Task::new(2, 10, 10), ()).unwrap();
        d.shutdown();
        let completers = std::mem::take(&mut *state.completers.lock().unwrap());
        for h in completers {
            h.join().unwrap();
        }
        let m = d.metrics();
        assert_eq!(state.seen.load(Ordering::SeqCst), 2);
        assert_eq!(m.dispatched, 2);
        assert_eq!(m.outcome(Outcome::Success), 1);
        assert_eq!(m.outcome(Outcome::Abandoned), 1);
        assert_eq!(m.outcomes.total(), m.dispatched);
        // The backend's own assertion runs under the worker's catch_unwind: surface it.
        assert_eq!(d.backend_panics(), 0);
        assert_eq!(m.in_flight, 0);
        assert_eq!(d.in_flight(), 0);
        assert!(router.ledgers_are_zero());
        assert_eq!(router.in_flight(), 0);
    });
}

/// The completer races the dispatcher's `in_flight` and metrics readers: whatever they
/// read mid-flight is within bounds, and the final figures are exact.
#[test]
fn in_flight_read_while_completing() {
    common::check(2, || {
        let router = common::router([NodeSpec::new("a")]);
        let state = Arc::new(State::default());
        let d = common::dispatcher(&router, 16, Handoff(Arc::clone(&state)));
        d.submit(Task::new(1, 10, 10), ()).unwrap();
        assert!(d.in_flight() <= 1);
        d.shutdown();
        assert!(d.in_flight() <= 1);
        let completers = std::mem::take(&mut *state.completers.lock().unwrap());
        for h in completers {
            h.join().unwrap();
        }
        let m = d.metrics();
        assert_eq!(
            (m.dispatched, m.outcome(Outcome::Success), m.in_flight),
            (1, 1, 0)
        );
        assert_eq!(d.in_flight(), 0);
        assert!(router.ledgers_are_zero());
    });
}

#[derive(Default)]
struct Holding {
    held: AtomicUsize,
    ticket: Mutex<Option<Ticket>>,
}

/// Task 1's ticket is kept by the backend until after the report; task 2 completes inline.
struct KeepFirst(Arc<Holding>);

impl Backend for KeepFirst {
    type Payload = ();
    fn dispatch(&self, task: Task, _payload: (), _routes: &RouteOptions, ticket: Ticket) {
        if task.id == 1 {
            *self.0.ticket.lock().unwrap() = Some(ticket);
            self.0.held.fetch_add(1, Ordering::SeqCst);
        } else {
            ticket.complete(Completion::success(1.0, 1));
        }
    }
}

/// `Dispatcher::metrics().in_flight` never reports fewer tickets out than there are: it
/// reads the finished count before the dispatched count, as `in_flight()` does. (It once
/// read them the other way round: with task 1's ticket out for the whole report, reading
/// `dispatched` = 1, then task 2 dispatched and completed, then `finished` = 1, reported 0.)
#[test]
fn metrics_in_flight_never_under_reports() {
    common::check(2, || {
        let router = common::router([NodeSpec::new("a")]);
        let state = Arc::new(Holding::default());
        let d = common::dispatcher(&router, 16, KeepFirst(Arc::clone(&state)));
        d.submit(Task::new(1, 10, 10), ()).unwrap();
        d.submit(Task::new(2, 10, 10), ()).unwrap();
        // Once seen here, task 1's ticket stays out until after both reads below.
        let out = state.held.load(Ordering::SeqCst) as u64;
        assert!(d.in_flight() >= out, "in_flight() under-reports");
        let m = d.metrics();
        assert!(
            m.in_flight >= out,
            "metrics().in_flight = {} with task 1's ticket out (dispatched {}, outcomes {:?})",
            m.in_flight,
            m.dispatched,
            m.outcomes
        );
        d.shutdown();
        let ticket = state.ticket.lock().unwrap().take();
        if let Some(t) = ticket {
            t.complete(Completion::success(1.0, 1));
        }
        let m = d.metrics();
        assert_eq!((m.dispatched, m.in_flight), (2, 0));
        assert!(router.ledgers_are_zero());
    });
}
