//! Lease timeouts: the control thread reclaiming an expired lease races its owner ending it.
//! Whatever the interleaving, the resources return exactly once (a second return would wrap
//! the ledger past zero), and the task is counted once: as its owner's outcome when the
//! owner won, as a timeout plus one late completion when the control thread won.
#![cfg(switchyard_loom)]

mod common;

use loom::thread;
use switchyard::spec::ResourceAllocator;
use switchyard::{Headroom, ManualClock, NodeSpec, Outcome, Router, Task};

fn router(clock: &ManualClock) -> Router {
    Router::builder()
        .headroom(Headroom { shares: [1.0; 4] })
        .clock(std::sync::Arc::new(clock.clone()))
        .lease_timeout_ms(10)
        .lease_slots(1)
        .node(NodeSpec::new("a").max_concurrency(1).memory(100, 1.0))
        .build()
        .expect("valid fleet")
}

/// A router with a two-record lease slab (two shards of one record under loom) on a node
/// with room for more leases than that.
fn two_record_router(clock: &ManualClock) -> Router {
    Router::builder()
        .headroom(Headroom { shares: [1.0; 4] })
        .clock(std::sync::Arc::new(clock.clone()))
        .lease_timeout_ms(10)
        .lease_slots(2)
        .node(NodeSpec::new("a").max_concurrency(4))
        .build()
        .expect("valid fleet")
}

fn check_counted_once(r: &Router) {
    assert!(r.ledgers_are_zero(), "{:?}", r.node_metrics());
    assert_eq!(r.in_flight(), 0);
    let done = r.finished();
    let (reclaimed, late) = r.lease_counts();
    match reclaimed {
        0 => {
            assert_eq!(late, 0);
            assert_eq!(done[Outcome::Success], 1);
            assert_eq!(done[Outcome::Timeout], 0);
        }
        1 => {
            assert_eq!(late, 1, "the owner finished after the reclaim");
            assert_eq!(done[Outcome::Success], 0);
            assert_eq!(done[Outcome::Timeout], 1);
        }
        n => panic!("reclaimed {n} times"),
    }
}

/// The owner completes while the control thread's tick reclaims.
#[test]
fn completion_races_reclaim() {
    common::check(2, || {
        let clock = ManualClock::new();
        let r = router(&clock);
        let (_, lease) = r.reader().route(&Task::new(1, 5, 5)).unwrap();
        clock.advance_ms(10);
        let control = {
            let r = r.clone();
            thread::spawn(move || {
                r.tick();
            })
        };
        lease.complete(Outcome::Success, 1.0);
        control.join().unwrap();
        check_counted_once(&r);
        // The record is free again: a new lease can take it.
        assert!(r.reader().route(&Task::new(2, 5, 5)).is_ok());
    });
}

/// The owner grows its allocation while the control thread reclaims it: the reclaimer
/// returns either the old amounts (and the adjustment fails) or the new ones, never a mix.
#[test]
fn adjustment_races_reclaim() {
    common::check(2, || {
        let clock = ManualClock::new();
        let r = router(&clock);
        let mut reader = r.reader();
        let (_, mut lease) = reader.route(&Task::new(1, 5, 5)).unwrap();
        clock.advance_ms(10);
        let control = {
            let r = r.clone();
            thread::spawn(move || {
                r.tick();
            })
        };
        let mut m = reader.monitor_usage(&lease);
        m.used.memory_mb = 60;
        let _ = reader.adjust_allocation(&mut lease, &m);
        lease.complete(Outcome::Success, 1.0);
        control.join().unwrap();
        check_counted_once(&r);
    });
}

/// Two owners on two threads take and complete leases on a two-record slab at once (the free
/// stacks' concurrent pops and pushes, and the scan bounds). Under loom the slab has two
/// shards of one record each and the two readers have different lanes, so each pops its own
/// shard, and afterwards one reader's second lease moves on to the other shard. The records
/// must come back exactly once each, so afterwards two leases can be held at once again, a
/// third is refused (the slab is full), and an expired one is reclaimed by a tick.
#[test]
fn two_owners_share_a_two_record_slab() {
    common::check(2, || {
        let clock = ManualClock::new();
        let r = two_record_router(&clock);
        let other = {
            let r = r.clone();
            thread::spawn(move || {
                let (_, lease) = r.reader().route(&Task::new(1, 5, 5)).unwrap();
                lease.complete(Outcome::Success, 1.0);
            })
        };
        let (_, lease) = r.reader().route(&Task::new(2, 5, 5)).unwrap();
        lease.complete(Outcome::Success, 1.0);
        other.join().unwrap();

        assert!(r.ledgers_are_zero());
        assert_eq!(r.finished()[Outcome::Success], 2);
        let mut reader = r.reader();
        let (_, l1) = reader.route(&Task::new(3, 5, 5)).expect("a free record");
        let (_, l2) = reader.route(&Task::new(4, 5, 5)).expect("the other record");
        assert!(
            reader.route(&Task::new(5, 5, 5)).is_err(),
            "two records only"
        );
        clock.advance_ms(10);
        r.tick();
        assert_eq!(r.lease_counts(), (2, 0), "both expired leases reclaimed");
        assert!(r.ledgers_are_zero());
        drop((l1, l2));
        assert_eq!(r.lease_counts(), (2, 2));
    });
}

/// One owner holds a lease (its lane's shard is then empty) and asks for a second, which must
/// move on to the other shard, while a second owner takes a lease from that shard, its own:
/// three pops race for two records. Exactly one of the two racing pops wins the last record,
/// nothing is reserved for the loser, and every record comes back once.
#[test]
fn a_pop_moving_on_to_another_shard_races_that_shards_owner() {
    common::check(2, || {
        let clock = ManualClock::new();
        let r = two_record_router(&clock);
        let mut mine = r.reader();
        let (_, held) = mine.route(&Task::new(1, 5, 5)).unwrap();
        let other = {
            let mut theirs = r.reader();
            thread::spawn(move || theirs.route(&Task::new(2, 5, 5)).ok().map(|(_, l)| l))
        };
        let second = mine.route(&Task::new(3, 5, 5)).ok().map(|(_, l)| l);
        let theirs = other.join().unwrap();
        assert!(
            second.is_some() != theirs.is_some(),
            "exactly one of the racing pops takes the last record"
        );
        assert_eq!(r.in_flight(), 2);
        drop((held, second, theirs));
        assert!(r.ledgers_are_zero());
        let mut reader = r.reader();
        let both = (
            reader.route(&Task::new(4, 5, 5)),
            reader.route(&Task::new(5, 5, 5)),
        );
        assert!(
            both.0.is_ok() && both.1.is_ok(),
            "both records are free again"
        );
        assert_eq!(r.lease_counts(), (0, 0));
    });
}
