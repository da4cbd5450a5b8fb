//! Per-class headroom: each class's ceiling is checked inside the same CAS that claims the
//! capacity, so lower classes can never take what is reserved for higher ones, however their
//! reservations interleave.
#![cfg(switchyard_loom)]

mod common;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use switchyard::{Headroom, NodeSpec, Priority, RouteError, Router, Task};

/// Two slots; low work may fill half (one slot). Two low pickers race a critical one: at
/// most one low lease at a time, and the critical task always gets the slot kept for it.
#[test]
fn low_work_never_takes_the_reserved_slot() {
    common::check(2, || {
        let r = Router::builder()
            .headroom(Headroom {
                shares: [1.0, 1.0, 1.0, 0.5],
            })
            .node(NodeSpec::new("a").max_concurrency(2))
            .build()
            .expect("valid fleet");
        let lows = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let (r, lows) = (r.clone(), Arc::clone(&lows));
                thread::spawn(move || {
                    let task = Task::new(i, 1, 1).priority(Priority::Low);
                    match r.reader().route(&task) {
                        Ok((_, lease)) => {
                            let before = lows.fetch_add(1, Ordering::SeqCst);
                            assert_eq!(before, 0, "two low leases at once past a 50 % share");
                            lows.fetch_sub(1, Ordering::SeqCst);
                            drop(lease);
                        }
                        Err(e) => assert_eq!(e, RouteError::Saturated),
                    }
                })
            })
            .collect();
        let critical = r
            .reader()
            .route(&Task::new(9, 1, 1).priority(Priority::Critical));
        assert!(
            critical.is_ok(),
            "the reserved slot was taken: {critical:?}"
        );
        drop(critical);
        for h in handles {
            h.join().unwrap();
        }
        assert!(r.ledgers_are_zero());
    });
}
