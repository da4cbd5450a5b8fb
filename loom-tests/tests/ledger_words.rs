//! The two-word ledger: a node whose tasks hold a GPU claims `w1` after `w0` and gives `w0`
//! back when `w1` is full.
#![cfg(switchyard_loom)]

mod common;

use loom::thread;
use switchyard::{NodeSpec, RouteError, Task};

/// Two pickers race for a node with room for two tasks in `w0` (concurrency) but one GPU
/// in `w1`. Both may claim `w0`; only one gets the GPU, and the other gives its `w0` share
/// back. Exactly one wins, the other is refused `Saturated`; afterwards the ledgers are
/// zero and the node again takes one task, then refuses a second while the first is held.
/// It fails when the `w0` give-back is left out of `try_reserve` (a task slot leaks).
#[test]
fn gpu_word_full_gives_back_the_first_word() {
    common::check(2, || {
        let router = common::router([NodeSpec::new("a")
            .max_concurrency(2)
            .compute(0.0, 0.0, 1.0, 1.0)]);
        let task = Task::new(1, 10, 10);
        let other = {
            let mut reader = router.reader();
            thread::spawn(move || reader.route(&task).map(|(_, l)| l))
        };
        let mine = router.reader().route(&task).map(|(_, l)| l);
        let theirs = other.join().unwrap();
        assert_eq!(
            [&mine, &theirs].iter().filter(|x| x.is_ok()).count(),
            1,
            "one GPU"
        );
        for x in [&mine, &theirs] {
            if let Err(e) = x {
                assert_eq!(*e, RouteError::Saturated);
            }
        }
        drop((mine, theirs));
        assert!(router.ledgers_are_zero());
        let (_, held) = router.reader().route(&task).expect("the GPU is free again");
        assert_eq!(
            router.reader().route(&task).err(),
            Some(RouteError::Saturated)
        );
        drop(held);
        assert!(router.ledgers_are_zero());
    });
}
