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
    slab_router(clock, 2)
}

/// A router whose lease slab holds `records` records (two shards under loom) on a node with
/// room for more leases than that.
fn slab_router(clock: &ManualClock, records: usize) -> Router {
    Router::builder()
        .headroom(Headroom { shares: [1.0; 4] })
        .clock(std::sync::Arc::new(clock.clone()))
        .lease_timeout_ms(10)
        .lease_slots(records)
        .node(NodeSpec::new("a").max_concurrency(8))
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

/// Two owners on two threads take and complete leases on a two-record slab at once: the
/// concurrent pops and pushes of one free stack, a pop that moves on to the next shard, and
/// the scan bounds. Under loom the slab has two shards of one record each; the two readers
/// are made with lanes of the same parity, so both start at the same shard, and whichever
/// pops second there moves on to the other shard unless the first has pushed its record
/// back. The records must come back exactly once each, so afterwards two leases can be held
/// at once again, a third is refused (the slab is full), and an expired one is reclaimed by
/// a tick. It fails against a free-stack pop that stores the new head instead of CASing it
/// (`two_owners_push_and_pop_one_shard` covers the push).
#[test]
fn two_owners_share_a_two_record_slab() {
    common::check(2, || {
        let clock = ManualClock::new();
        let r = two_record_router(&clock);
        // Readers take consecutive lanes: the second one made is skipped, so the first and
        // the third share a shard.
        let mut ours = r.reader();
        let _other_lane = r.reader();
        let mut theirs = r.reader();
        let other = thread::spawn(move || {
            let (_, lease) = theirs.route(&Task::new(1, 5, 5)).unwrap();
            lease.complete(Outcome::Success, 1.0);
        });
        let (_, lease) = ours.route(&Task::new(2, 5, 5)).unwrap();
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
/// two pops race for the last of two records. Exactly one of them wins it, nothing is
/// reserved for the loser, and every record comes back once.
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

/// Two owners whose readers start at the same shard, of two records, each take a lease and
/// give it back at once: two pushes, and pushes racing pops, on one free stack. A lost push
/// leaks a record and a stale one hands a record out twice, so afterwards all four records
/// (two shards of two) must fit again, and a fifth lease is refused. It fails against a
/// free-stack push that stores the new head instead of CASing it.
#[test]
fn two_owners_push_and_pop_one_shard() {
    common::check(2, || {
        let clock = ManualClock::new();
        let r = slab_router(&clock, 4);
        let mut ours = r.reader();
        let _other_lane = r.reader();
        let mut theirs = r.reader();
        let other = thread::spawn(move || {
            let (_, lease) = theirs.route(&Task::new(1, 5, 5)).unwrap();
            drop(lease);
        });
        let (_, lease) = ours.route(&Task::new(2, 5, 5)).unwrap();
        drop(lease);
        other.join().unwrap();
        assert!(r.ledgers_are_zero());
        let mut reader = r.reader();
        let held: Vec<_> = (0..4)
            .map(|i| {
                reader
                    .route(&Task::new(10 + i, 5, 5))
                    .expect("four free records")
            })
            .collect();
        assert!(
            reader.route(&Task::new(20, 5, 5)).is_err(),
            "four records only"
        );
        drop(held);
        assert_eq!(r.lease_counts(), (0, 0));
    });
}
