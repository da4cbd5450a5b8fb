//! A tenant's token rate (GCRA) taken by two pickers at once.
#![cfg(switchyard_loom)]

mod common;

use loom::thread;
use switchyard::{Headroom, ManualClock, NodeSpec, RouteError, Router, Task, TenantId};

/// Tenant 1 may burst exactly one task's tokens (1000 tokens/s, 0.1 s of burst, tasks of
/// 100 tokens) on a node with room for two. Both pickers may reserve the node; only one
/// takes the tenant's tokens, and the other gives its node reservation back and is refused
/// `TenantRateLimited`. Afterwards the ledgers are zero, a third task of the tenant is
/// refused (the winner's tokens are spent), another tenant is not, and 0.1 s later the
/// tenant fits again.
#[test]
fn two_pickers_race_for_one_tenant_burst() {
    common::check(2, || {
        let clock = ManualClock::new();
        let r = Router::builder()
            .headroom(Headroom { shares: [1.0; 4] })
            .clock(std::sync::Arc::new(clock.clone()))
            .node(NodeSpec::new("a").max_concurrency(2))
            .tenant_rate(TenantId(1), 1_000.0, 0.1)
            .build()
            .expect("valid fleet");
        clock.advance_ms(10_000);
        let task = Task::new(1, 80, 20).tenant(TenantId(1));
        let other = {
            let mut reader = r.reader();
            thread::spawn(move || reader.route(&task).map(|(_, l)| l))
        };
        let mine = r.reader().route(&task).map(|(_, l)| l);
        let theirs = other.join().unwrap();
        assert_eq!(
            [&mine, &theirs].iter().filter(|x| x.is_ok()).count(),
            1,
            "the burst holds one task"
        );
        for x in [&mine, &theirs] {
            if let Err(e) = x {
                assert_eq!(*e, RouteError::TenantRateLimited);
            }
        }
        drop((mine, theirs));
        assert!(r.ledgers_are_zero());
        assert_eq!(
            r.reader().route(&task).err(),
            Some(RouteError::TenantRateLimited)
        );
        let stranger = Task::new(2, 80, 20).tenant(TenantId(2));
        drop(
            r.reader()
                .route(&stranger)
                .expect("another tenant is not limited"),
        );
        clock.advance_ms(100);
        drop(r.reader().route(&task).expect("0.1 s refills one task"));
        assert!(r.ledgers_are_zero());
    });
}
