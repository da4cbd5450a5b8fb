//! Removing a node and adding it back while a picker is mid-route.
#![cfg(switchyard_loom)]

mod common;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use switchyard::{NodeSpec, RouteError, RouteReader, Task};

fn try_route(mut reader: RouteReader, id: u64, held: &AtomicUsize) -> bool {
    match reader.route(&Task::new(id, 10, 10)) {
        Ok((_, lease)) => {
            let before = held.fetch_add(1, Ordering::SeqCst);
            assert_eq!(before, 0, "two leases held at once on node a (capacity 1)");
            held.fetch_sub(1, Ordering::SeqCst);
            drop(lease);
            true
        }
        Err(e) => {
            assert!(
                matches!(e, RouteError::Saturated | RouteError::EmptyFleet),
                "{e:?}"
            );
            false
        }
    }
}

/// "a" (capacity 1) is removed and re-added while a picker routes on an older snapshot.
/// The controller promises that a node re-added while its old leases drain gets its old
/// live state back, so the capacity still holds across the two incarnations.
#[test]
fn readd_node_keeps_capacity() {
    common::check(2, || {
        let router = common::router([NodeSpec::new("a").max_concurrency(1)]);
        let held = Arc::new(AtomicUsize::new(0));
        let picker = {
            let reader = router.reader();
            let held = Arc::clone(&held);
            thread::spawn(move || try_route(reader, 1, &held))
        };
        let control = {
            let router = router.clone();
            let held = Arc::clone(&held);
            thread::spawn(move || {
                router.remove_node("a").unwrap();
                router.tick();
                router
                    .add_node(NodeSpec::new("a").max_concurrency(1))
                    .unwrap();
                router.tick();
                try_route(router.reader(), 2, &held)
            })
        };
        picker.join().unwrap();
        control.join().unwrap();
        assert!(router.ledgers_are_zero());
        assert_eq!(router.in_flight(), 0);
    });
}
