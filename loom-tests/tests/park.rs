//! Model 4: a worker parking against a submit (no lost wake-up).
//!
//! The main thread waits for the backend to see the tasks *before* shutting down, so
//! `shutdown`'s wake-all cannot mask a lost wake-up: if a submit's wake-up were lost, the
//! worker would stay parked, the waiter would never be signalled, and loom reports the
//! deadlock.
#![cfg(switchyard_loom)]

mod common;

use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use switchyard::{Backend, Completion, NodeSpec, RouteOptions, Task, Ticket};

#[derive(Default)]
struct Seen {
    ids: Mutex<Vec<u64>>,
    changed: Condvar,
}

impl Seen {
    fn wait_for(&self, n: usize) -> Vec<u64> {
        let mut ids = self.ids.lock().unwrap();
        while ids.len() < n {
            ids = self.changed.wait(ids).unwrap();
        }
        ids.clone()
    }
}

struct Signal(Arc<Seen>);

impl Backend for Signal {
    type Payload = ();
    fn dispatch(&self, task: Task, _payload: (), _routes: &RouteOptions, ticket: Ticket) {
        ticket.complete(Completion::success(1.0, 1));
        self.0.ids.lock().unwrap().push(task.id);
        self.0.changed.notify_all();
    }
}

/// One submitter against a worker that parks as soon as it finds nothing.
#[test]
fn submit_wakes_parked_worker() {
    common::check(3, || {
        let router = common::router([NodeSpec::new("a")]);
        let seen = Arc::new(Seen::default());
        let d = common::dispatcher(&router, 16, Signal(Arc::clone(&seen)));
        d.submit(Task::new(1, 10, 10), ()).unwrap();
        assert_eq!(seen.wait_for(1), [1]);
        d.shutdown();
        let m = d.metrics();
        assert_eq!((m.dispatched, m.in_flight), (1, 0));
        assert!(router.ledgers_are_zero());
    });
}

/// Two submitters: one may claim the sleeper while the other sees no sleeper; the worker
/// must still take both tasks before anyone shuts it down.
#[test]
fn two_submitters_one_parked_worker() {
    common::check(2, || {
        let router = common::router([NodeSpec::new("a")]);
        let seen = Arc::new(Seen::default());
        let d = Arc::new(common::dispatcher(&router, 16, Signal(Arc::clone(&seen))));
        let other = {
            let d = Arc::clone(&d);
            thread::spawn(move || d.submit(Task::new(2, 10, 10), ()).unwrap())
        };
        d.submit(Task::new(1, 10, 10), ()).unwrap();
        let mut ids = seen.wait_for(2);
        ids.sort_unstable();
        assert_eq!(ids, [1, 2]);
        other.join().unwrap();
        d.shutdown();
        let m = d.metrics();
        assert_eq!((m.dispatched, m.in_flight), (2, 0));
        assert!(router.ledgers_are_zero());
    });
}
