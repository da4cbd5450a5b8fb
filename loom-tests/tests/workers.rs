//! Two workers: the sleeper scan of `notify_one`, the injector's batch into a worker's local
//! queue, and stealing from it, none of which a one-worker model reaches.
//!
//! Both run at preemption bound 1. At 2, loom explores schedules in which the submitter is
//! preempted between counting a task and pushing it while the two workers, each seeing the
//! task counted, poll and yield in turn for ever: a switch away from a yielding thread costs
//! loom no preemption, so that unfair path has no end and exceeds loom's branch limit. A
//! real scheduler runs the submitter; the one-worker models cover the same window at 2.
#![cfg(switchyard_loom)]

mod common;

use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;
use switchyard::{Backend, Completion, NodeSpec, RouteOptions, Task, Ticket};

/// The set of task ids handed over (bit `id`), and a condvar signalled on each.
#[derive(Default)]
struct Handed {
    bits: Mutex<u64>,
    changed: Condvar,
}

impl Handed {
    /// Blocks until the backend has seen every task in `all`.
    fn wait_for(&self, all: u64) {
        let mut bits = self.bits.lock().unwrap();
        while *bits != all {
            bits = self.changed.wait(bits).unwrap();
        }
    }
}

/// Records each task it is handed; a second hand-over of the same task fails.
struct Once(Arc<Handed>);

impl Backend for Once {
    type Payload = ();
    fn dispatch(&self, task: Task, _payload: (), _routes: &RouteOptions, ticket: Ticket) {
        ticket.complete(Completion::success(1.0, 1));
        let bit = 1 << task.id;
        let mut bits = self.0.bits.lock().unwrap();
        assert_eq!(*bits & bit, 0, "task {} handed over twice", task.id);
        *bits |= bit;
        self.0.changed.notify_all();
    }
}

/// Two tasks, two workers that park as soon as they find nothing. The first worker to take
/// from the injector moves the other task into its local queue, where the second worker may
/// steal it. The main thread waits for both tasks to reach the backend *before* shutting
/// down, so a lost wake-up (both workers parked with a task queued) is a deadlock loom
/// reports, not something `shutdown`'s wake-all hides. Each task is handed over exactly once.
#[test]
fn two_workers_two_tasks() {
    common::check(1, || {
        let router = common::router([NodeSpec::new("a")]);
        let handed = Arc::new(Handed::default());
        let d = common::dispatcher_with(&router, 2, 16, Once(Arc::clone(&handed)));
        d.submit(Task::new(1, 10, 10), ()).unwrap();
        d.submit(Task::new(2, 10, 10), ()).unwrap();
        handed.wait_for(0b110);
        d.shutdown();
        assert_eq!(d.backend_panics(), 0);
        let m = d.metrics();
        assert_eq!((m.dispatched, m.in_flight, m.queued), (2, 0, 0));
        assert!(router.ledgers_are_zero());
    });
}

/// A second submitter races the first against two parked workers: each submit may find
/// zero, one or two sleepers, and two notifiers may scan the sleepers at once; every task
/// is still taken before anyone shuts down.
#[test]
fn two_submitters_two_workers() {
    common::check(1, || {
        let router = common::router([NodeSpec::new("a")]);
        let handed = Arc::new(Handed::default());
        let d = Arc::new(common::dispatcher_with(
            &router,
            2,
            16,
            Once(Arc::clone(&handed)),
        ));
        let other = {
            let d = Arc::clone(&d);
            thread::spawn(move || d.submit(Task::new(2, 10, 10), ()).unwrap())
        };
        d.submit(Task::new(1, 10, 10), ()).unwrap();
        handed.wait_for(0b110);
        other.join().unwrap();
        d.shutdown();
        assert_eq!(d.backend_panics(), 0);
        let m = d.metrics();
        assert_eq!((m.dispatched, m.in_flight, m.queued), (2, 0, 0));
        assert!(router.ledgers_are_zero());
    });
}
