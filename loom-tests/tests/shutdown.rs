//! Model 5: `shutdown` drains against a racing submitter.
#![cfg(switchyard_loom)]

mod common;

use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;
use switchyard::{Backend, Completion, NodeSpec, RouteOptions, Task, Ticket};

/// Sets bit `id` for each task it is handed; a second hand-over of the same task fails.
struct Once(Arc<AtomicU64>);

impl Backend for Once {
    type Payload = ();
    fn dispatch(&self, task: Task, _payload: (), _routes: &RouteOptions, ticket: Ticket) {
        let bit = 1 << task.id;
        let before = self.0.fetch_or(bit, Ordering::SeqCst);
        assert_eq!(
            before & bit,
            0,
            "task {} reached the backend twice",
            task.id
        );
        ticket.complete(Completion::success(1.0, 1));
    }
}

/// A submitter sends tasks 1 and 2 (queue capacity 1) while the main thread shuts down.
/// Every task either comes back from `submit` (`ShutDown` or `Full`) or reaches the backend
/// exactly once, before `shutdown` returns.
#[test]
fn submit_races_shutdown() {
    common::check(2, || {
        let router = common::router([NodeSpec::new("a")]);
        let handed = Arc::new(AtomicU64::new(0));
        let d = Arc::new(common::dispatcher(&router, 1, Once(Arc::clone(&handed))));
        let submitter = {
            let d = Arc::clone(&d);
            thread::spawn(move || {
                let mut accepted = 0u64;
                for id in 1..=2u64 {
                    match d.submit(Task::new(id, 10, 10), ()) {
                        Ok(()) => accepted |= 1 << id,
                        Err(e) => {
                            assert_eq!(e.into_inner().0.id, id, "the refused task is handed back")
                        }
                    }
                }
                accepted
            })
        };
        d.shutdown();
        // Whatever was accepted before shutdown returned has been handed over by now.
        let at_shutdown = handed.load(Ordering::SeqCst);
        let accepted = submitter.join().unwrap();
        assert_eq!(
            at_shutdown & !accepted,
            0,
            "a refused task reached the backend"
        );
        // A submit racing the tail of shutdown is either refused or drained by it.
        let m = d.metrics();
        assert_eq!(
            handed.load(Ordering::SeqCst),
            accepted,
            "accepted {accepted:#b}; backend panics {}; queued {}; {m:?}",
            d.backend_panics(),
            d.queued()
        );
        assert_eq!(m.dispatched, u64::from(accepted.count_ones()));
        assert_eq!(m.refused, 2 - u64::from(accepted.count_ones()));
        assert_eq!(m.in_flight, 0);
        // The backend's own assertion runs under the worker's catch_unwind: surface it.
        assert_eq!(d.backend_panics(), 0);
        assert!(router.ledgers_are_zero());
    });
}

/// A task waits for capacity (its node's one slot is held by a lease, its class may wait
/// for ever) while another thread releases the lease and the main thread shuts down.
/// `shutdown` returns only after the waiting task has been handed over: a worker never
/// exits with a task on its waiting list, and no task is lost to shutdown.
#[test]
fn shutdown_drains_a_waiting_task() {
    common::check(2, || {
        let router = common::router([NodeSpec::new("a").max_concurrency(1)]);
        let (_, lease) = router.reader().route(&Task::new(9, 10, 10)).unwrap();
        let handed = Arc::new(AtomicU64::new(0));
        let d = switchyard::Dispatcher::builder(router.clone())
            .workers(1)
            .capacity(4)
            .control_interval(None)
            .spin_rounds(0)
            .saturation_wait([std::time::Duration::MAX; 4])
            .build(Once(Arc::clone(&handed)))
            .expect("valid dispatcher");
        d.submit(Task::new(1, 10, 10), ()).unwrap();
        let releaser = thread::spawn(move || drop(lease));
        d.shutdown();
        assert_eq!(
            handed.load(Ordering::SeqCst),
            0b10,
            "the waiting task was served"
        );
        releaser.join().unwrap();
        let m = d.metrics();
        assert_eq!((m.dispatched, m.in_flight), (1, 0));
        assert_eq!(m.shed_by_class.total(), 0, "{m:?}");
        assert_eq!(d.backend_panics(), 0);
        assert!(router.ledgers_are_zero());
    });
}
