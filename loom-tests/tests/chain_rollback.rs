//! A two-stage chain reserved by two pickers at once: the loser rolls back every stage it
//! took, the ledger of the head and its node token rate alike.
#![cfg(switchyard_loom)]

mod common;

use loom::thread;
use switchyard::{ChainSpec, Headroom, ManualClock, NodeSpec, RouteError, Router, Task};

/// Two pickers race for chain "c" = head → tail, where the tail takes one task and the head
/// has a token rate whose burst holds exactly two tasks. One gets the chain; the other is
/// refused with `Saturated` (by the plan, which saw the tail full, or by the reservation,
/// which then gives back the head's ledger and rate). Afterwards the ledgers are zero and the
/// head's rate still has room for exactly one more task (the winner's tokens are spent: it
/// was dropped, not settled).
///
/// This once failed: a reservation refused at the tail gave back the head's ledger but not
/// the tokens `rate_take` had charged, so after the race the head refused the third task.
#[test]
fn racing_chain_reservations_roll_back_ledger_and_rate() {
    common::check(2, || {
        let clock = ManualClock::new();
        let r = Router::builder()
            .headroom(Headroom { shares: [1.0; 4] })
            .clock(std::sync::Arc::new(clock.clone()))
            .capabilities(["c"])
            .node(
                NodeSpec::new("head")
                    .max_concurrency(4)
                    .token_rate(1_000.0, 0.2),
            )
            .node(NodeSpec::new("tail").max_concurrency(1))
            .chain(ChainSpec::new("c", ["head", "tail"]).capabilities(["c"]))
            .build()
            .expect("valid fleet");
        clock.advance_ms(10_000);
        let task = Task::new(1, 80, 20).require(r.resolve(&["c"]).unwrap());
        let other = {
            let r = r.clone();
            thread::spawn(move || r.reader().route(&task).map(|(_, l)| l))
        };
        let mine = r.reader().route(&task).map(|(_, l)| l);
        let theirs = other.join().unwrap();
        let won = [&mine, &theirs].iter().filter(|x| x.is_ok()).count();
        assert_eq!(won, 1, "the tail takes one task");
        for x in [&mine, &theirs] {
            if let Err(e) = x {
                assert_eq!(*e, RouteError::Saturated);
            }
        }
        drop((mine, theirs));
        assert!(r.ledgers_are_zero());
        let (_, third) = r
            .reader()
            .route(&task)
            .expect("the loser gave back the head's rate");
        drop(third);
        assert_eq!(
            r.reader().route(&task).err(),
            Some(RouteError::Saturated),
            "the burst holds two tasks"
        );
        assert!(r.ledgers_are_zero());
    });
}
