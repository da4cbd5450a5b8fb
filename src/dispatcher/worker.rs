//! One worker's run loop: find a task, route it, hand it over; spin briefly, then park.
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::{bump, new_ticket, Backend, Shared};
use crate::clock::Stopwatch;
use crate::model::{RouteOptions, Task};
use crate::routing::engine::Rng;
use crate::sync::{Arc, Ordering, Parker, Steal, Worker};

pub(super) fn run<B: Backend>(
    index: usize,
    shared: Arc<Shared<B>>,
    local: Worker<Task>,
    parker: Parker,
    core: Option<core_affinity::CoreId>,
) {
    if let Some(core) = core {
        // Best effort: on a machine that refuses pinning the worker still runs.
        let _ = core_affinity::set_for_current(core);
    }
    let mut reader = shared.router.reader();
    let stopwatch = Stopwatch::new();
    let mut rng = Rng::new(0x5157_C4A2 ^ index as u64);
    let stats = &shared.stats[index];
    loop {
        if let Some(task) = find_task(index, &shared, &local, &mut rng) {
            // SeqCst: the task has left the queues; ordered with the exit check and the
            // parking re-check (module docs).
            shared.queued.fetch_sub(1, Ordering::SeqCst);
            handle(&shared, stats, &mut reader, &stopwatch, task);
            continue;
        }
        // Nothing found: poll a little with back-off before parking.
        let mut found = None;
        for round in 0..shared.spin_rounds {
            spin(round);
            found = find_task(index, &shared, &local, &mut rng);
            if found.is_some() {
                break;
            }
        }
        if let Some(task) = found {
            shared.queued.fetch_sub(1, Ordering::SeqCst);
            handle(&shared, stats, &mut reader, &stopwatch, task);
            continue;
        }
        // SeqCst: see "Shutdown drains" in the module docs.
        if shared.shutdown.load(Ordering::SeqCst) && shared.queued.load(Ordering::SeqCst) == 0 {
            return;
        }
        park(index, &shared, &parker);
    }
}

fn spin(round: u32) {
    if round < 6 {
        for _ in 0..(1u32 << round) {
            std::hint::spin_loop();
        }
    } else {
        crate::sync::thread::yield_now();
    }
}

/// Announce, re-check, park; see "Parking" in the module docs.
fn park<B: Backend>(index: usize, shared: &Shared<B>, parker: &Parker) {
    // SeqCst on all four: the store-buffering pair with `submit` + `notify_one`.
    shared.sleeping[index].store(true, Ordering::SeqCst);
    shared.sleepers.fetch_add(1, Ordering::SeqCst);
    let work = shared.queued.load(Ordering::SeqCst) > 0 || shared.shutdown.load(Ordering::SeqCst);
    if !work {
        parker.park();
    } else {
        // Work is counted but perhaps not pushed yet (or shutdown drains): the loop polls
        // again at once. A real CPU runs the submitter meanwhile; tell loom, which would
        // otherwise keep scheduling this busy loop.
        #[cfg(switchyard_loom)]
        crate::sync::thread::yield_now();
    }
    // Whoever clears our flag decrements `sleepers`: us here, or a notifier that claimed us.
    if shared.sleeping[index].swap(false, Ordering::SeqCst) {
        shared.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Local queue first, then a batch from the injector, then one task from a random victim.
fn find_task<B: Backend>(
    index: usize,
    shared: &Shared<B>,
    local: &Worker<Task>,
    rng: &mut Rng,
) -> Option<Task> {
    if let Some(t) = local.pop() {
        return Some(t);
    }
    loop {
        let mut retry = false;
        match shared.injector.steal_batch_and_pop(local) {
            Steal::Success(t) => return Some(t),
            Steal::Retry => retry = true,
            Steal::Empty => {}
        }
        let n = shared.stealers.len();
        if n > 1 {
            let start = rng.below(n);
            for k in 0..n {
                let victim = (start + k) % n;
                if victim == index {
                    continue;
                }
                match shared.stealers[victim].steal() {
                    Steal::Success(t) => return Some(t),
                    Steal::Retry => retry = true,
                    Steal::Empty => {}
                }
            }
        }
        if !retry {
            return None;
        }
    }
}

#[inline]
fn handle<B: Backend>(
    shared: &Shared<B>,
    stats: &super::WorkerStats,
    reader: &mut crate::router::RouteReader,
    stopwatch: &Stopwatch,
    task: Task,
) {
    let t0 = stopwatch.start();
    let mut routes = RouteOptions::default();
    let routed = reader.route_into(&task, &mut routes);
    stats.latency.record(stopwatch.elapsed_ns(t0));
    match routed {
        Ok(lease) => {
            // Counted before the ticket exists, so before it can finish (see `in_flight`).
            bump(&stats.dispatched);
            let ticket = new_ticket(lease, task);
            // A panicking backend must not take the worker (and the queue) down with it.
            // The ticket is dropped during unwinding and counted as abandoned.
            if catch_unwind(AssertUnwindSafe(|| {
                shared.backend.dispatch(task, &routes, ticket)
            }))
            .is_err()
            {
                bump(&stats.panics);
            }
        }
        Err(e) => {
            bump(&stats.no_route[e.index()]);
            if e == crate::error::RouteError::Saturated {
                bump(&stats.shed[task.constraints.priority.index()]);
            }
            if catch_unwind(AssertUnwindSafe(|| shared.backend.reject(task, e))).is_err() {
                bump(&stats.panics);
            }
        }
    }
}
