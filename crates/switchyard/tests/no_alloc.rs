//! The steady-state decision allocates nothing: a counting global allocator watches
//! `RouteReader::route` + lease drop after a warm-up, and a warm `FairQueue`.
// Not library code: std's primitives are fine here (the shim rule is for src/).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
#![allow(unsafe_code)] // a counting global allocator needs it; the library itself forbids unsafe
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use switchyard::{ChainSpec, NodeSpec, Router, Task};

struct Counting;
thread_local! {
    // Only this test's thread is watched: the harness's own threads may allocate meanwhile.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static ALLOCS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to the system allocator (and counts), so it upholds
// exactly the `GlobalAlloc` contract that `System` does.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn routing_allocates_nothing_in_steady_state() {
    let caps = ["chat", "code", "long-context", "vision"];
    let router = Router::builder()
        .capabilities(caps)
        .nodes((0..64).map(|i| {
            NodeSpec::new(format!("n{i}"))
                .capabilities(caps.iter().copied().take(1 + i % 4))
                .capability_score("chat", 0.5 + (i % 5) as f64 / 10.0)
        }))
        .chain(ChainSpec::new("c", ["n1", "n2"]))
        .build()
        .unwrap();
    let sets = [
        router.resolve::<&str>(&[]).unwrap(),
        router.resolve(&["chat"]).unwrap(),
        router.resolve(&["code"]).unwrap(),
        router.resolve(&["chat", "long-context"]).unwrap(),
        router.resolve(&["vision"]).unwrap(),
    ];
    let tasks: Vec<Task> = (0..1000u64)
        .map(|i| {
            Task::new(i, 100 + i as u32 % 4000, 10 + i as u32 % 200)
                .require(sets[i as usize % sets.len()])
                .max_latency_ms(if i % 3 == 0 { 100_000 } else { u32::MAX })
        })
        .collect();
    let mut reader = router.reader();
    for t in &tasks {
        drop(reader.route(t).unwrap());
    }
    COUNTING.with(|c| c.set(true));
    let mut ok = 0;
    for _ in 0..10 {
        for t in &tasks {
            if let Ok((_routes, lease)) = reader.route(t) {
                ok += 1;
                drop(lease);
            }
        }
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(ok, 10_000);
    assert_eq!(
        ALLOCS.load(Ordering::SeqCst),
        0,
        "allocations on the routing hot path"
    );
}

#[test]
fn fair_queue_allocates_nothing_once_warm() {
    use switchyard::fairness::FairQueue;
    use switchyard::TenantId;
    let mut q = FairQueue::new();
    let cycle = |q: &mut FairQueue<u64>| {
        // 8 tenants (and anonymous tasks) queue, are served, requeued and shed.
        for i in 0..512u64 {
            let tenant = (i % 9 != 0).then_some(TenantId((i % 8) as u32));
            q.push(tenant, 100 + i % 300, i);
        }
        for _ in 0..200 {
            let taken = q.take().unwrap();
            if taken.item() % 3 == 0 {
                q.requeue_front(taken);
                let _ = q.pop();
            } else {
                let _ = q.charge(taken);
            }
        }
        q.remove_front_while(|&i| i % 2 == 0, drop);
        q.drain().for_each(drop);
    };
    cycle(&mut q);
    COUNTING.with(|c| c.set(true));
    for _ in 0..10 {
        cycle(&mut q);
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(
        ALLOCS.load(Ordering::SeqCst),
        0,
        "allocations in a warm FairQueue"
    );
}
