//! Model 2: lease reservation and release against a node's capacity.
#![cfg(switchyard_loom)]

mod common;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use switchyard::{NodeSpec, RouteError, RouteReader, Task};

/// Counts leases held at once; a lease is counted only while it is certainly held (after
/// `route` returned it, before it is dropped), so an overlap here is a real over-admission.
struct Held {
    now: AtomicUsize,
    granted: AtomicUsize,
}

fn try_route(mut reader: RouteReader, id: u64, held: &Held, capacity: usize) {
    match reader.route(&Task::new(id, 10, 10)) {
        Ok((_, lease)) => {
            let before = held.now.fetch_add(1, Ordering::SeqCst);
            assert!(
                before < capacity,
                "{} leases held at once on a node of capacity {capacity}",
                before + 1
            );
            held.granted.fetch_add(1, Ordering::SeqCst);
            held.now.fetch_sub(1, Ordering::SeqCst);
            drop(lease);
        }
        Err(e) => assert_eq!(e, RouteError::Saturated),
    }
}

fn race(capacity: usize, threads: usize) {
    let router = common::router([NodeSpec::new("a").max_concurrency(capacity as u32)]);
    let held = Arc::new(Held {
        now: AtomicUsize::new(0),
        granted: AtomicUsize::new(0),
    });
    let handles: Vec<_> = (1..threads)
        .map(|i| {
            let reader = router.reader();
            let held = Arc::clone(&held);
            thread::spawn(move || try_route(reader, i as u64, &held, capacity))
        })
        .collect();
    try_route(router.reader(), 0, &held, capacity);
    for h in handles {
        h.join().unwrap();
    }
    // Someone always gets the node: a reservation fails only while another is held.
    assert!(held.granted.load(Ordering::SeqCst) >= 1);
    if threads <= capacity {
        assert_eq!(held.granted.load(Ordering::SeqCst), threads);
    }
    assert!(router.ledgers_are_zero());
    assert_eq!(router.in_flight(), 0);
}

/// Two pickers, one slot: never both at once.
#[test]
fn capacity_one_two_threads() {
    common::check(3, || race(1, 2));
}

/// Three pickers, two slots: never all three at once.
#[test]
fn capacity_two_three_threads() {
    common::check(2, || race(2, 3));
}

/// Three pickers, one slot.
#[test]
fn capacity_one_three_threads() {
    common::check(2, || race(1, 3));
}
