//! Model 1: snapshot publication (`tick` after `add_node`/`remove_node`) against a reader
//! that routes and drops its lease.
#![cfg(switchyard_loom)]

mod common;

use loom::thread;
use switchyard::{NodeSpec, Task};

/// A reader never sees epochs go backwards while another thread adds "b", publishes,
/// removes "b" and publishes again, and every lease it takes (possibly on "b" while "b" is
/// being removed) is given back: all ledgers end at zero with nothing in flight, and "b"
/// leaves the report once nothing holds it.
#[test]
fn publish_vs_reader() {
    common::check(2, || {
        let router = common::router([NodeSpec::new("a")]);
        let mut reader = router.reader();
        let publisher = {
            let router = router.clone();
            thread::spawn(move || {
                router.add_node(NodeSpec::new("b")).unwrap();
                assert_eq!(router.tick().epoch, 2);
                router.remove_node("b").unwrap();
                assert_eq!(router.tick().epoch, 3);
            })
        };
        let task = Task::new(1, 10, 10);
        let mut last = 0;
        for _ in 0..2 {
            let (options, lease) = reader.route(&task).expect("node a is always routable");
            let epoch = lease.route().epoch;
            assert_eq!(options.primary().route.epoch, epoch);
            assert!((1..=3).contains(&epoch), "epoch {epoch}");
            assert!(
                epoch >= last,
                "reader went back from epoch {last} to {epoch}"
            );
            last = epoch;
            drop(lease);
        }
        publisher.join().unwrap();
        assert!(router.ledgers_are_zero());
        assert_eq!(router.in_flight(), 0);
        // The reader keeps the last snapshot it loaded (so perhaps "b") until its next load;
        // once it is gone, "b" leaves the report within a few ticks.
        drop(reader);
        let reports: Vec<_> = (0..4).map(|_| router.tick()).collect();
        assert!(reports.iter().all(|r| r.nodes == 1), "{reports:?}");
        assert!(reports.iter().any(|r| r.draining == 0), "{reports:?}");
    });
}
