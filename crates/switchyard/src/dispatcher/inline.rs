//! Routing on the submitting thread while the dispatcher is idle ([`Dispatcher::submit_inline`]).
//!
//! A task queued for a parked worker costs two hand-offs between threads before its request
//! leaves the gateway: the submitter wakes the worker (a futex wake, then the time the
//! scheduler takes to run it), and the worker hands the routed task to the I/O runtime, which
//! may have to wake one of its own threads. On an idle or lightly loaded machine those wake-ups,
//! tens of microseconds each, are most of what a gateway adds to a request. When no task is
//! queued and none waits for room, the queue has nothing to order, balance or hold back, so
//! the caller may as well make the decision itself: the same plan and reserve on the same
//! snapshot, with a reader of its own, its latency recorded and its outcome counted like a
//! worker's.
//!
//! Each calling thread keeps, in a thread-local, one [`RouteReader`] per dispatcher it
//! submitted to (at most [`MAX_READERS`], the least recently added dropped first) and a
//! number that picks its figures' slot among the dispatcher's caller slots.
//!
//! [`Dispatcher::submit_inline`]: super::Dispatcher::submit_inline
//! [`RouteReader`]: crate::router::RouteReader
use std::cell::RefCell;

use super::worker::Ctx;
use super::{Backend, Shared};
use crate::error::RouteError;
use crate::lease::Lease;
use crate::model::{RouteOptions, Task};
use crate::router::RouteReader;
use crate::sync::{AtomicUsize, Ordering};

/// Readers one thread keeps, for as many dispatchers. A reader holds its router alive, so a
/// thread that submitted to dispatchers since dropped holds at most this many stale routers.
pub(super) const MAX_READERS: usize = 4;

/// Hands out the calling threads' slot numbers.
static NEXT_CALLER: AtomicUsize = AtomicUsize::new(0);

struct Caller {
    /// This thread's number; its slot in a dispatcher is this modulo the dispatcher's slots.
    number: usize,
    /// `(dispatcher id, reader)`, most recently added last.
    readers: Vec<(u64, RouteReader)>,
}

thread_local! {
    static CALLER: RefCell<Option<Caller>> = const { RefCell::new(None) };
}

/// Routes `task` on this thread for the dispatcher `shared`, recording the decision in this
/// thread's slot. Returns the slot and the result, or `None` when the thread-local cannot be
/// used (the thread is being torn down, or this is a re-entrant call): then queue the task.
pub(super) fn route_here<B: Backend>(
    shared: &Shared<B>,
    task: &Task,
    routes: &mut RouteOptions,
) -> Option<(usize, Result<Lease, RouteError>)> {
    CALLER
        .try_with(|cell| {
            let mut guard = cell.try_borrow_mut().ok()?;
            let caller = guard.get_or_insert_with(|| Caller {
                // Relaxed: only distinct-ish numbers are needed (slots spread the writers).
                number: NEXT_CALLER.fetch_add(1, Ordering::Relaxed),
                readers: Vec::with_capacity(MAX_READERS),
            });
            let slot = caller.number % shared.callers.len();
            let i = match caller.readers.iter().position(|(id, _)| *id == shared.id) {
                Some(i) => i,
                None => {
                    // First task from this thread: a reader of its own (allocates once).
                    if caller.readers.len() == MAX_READERS {
                        caller.readers.remove(0);
                    }
                    caller.readers.push((shared.id, shared.router.reader()));
                    caller.readers.len() - 1
                }
            };
            let ctx = Ctx {
                shared,
                stats: &shared.callers[slot],
                many_writers: true,
            };
            let routed = ctx.try_route(&mut caller.readers[i].1, task, routes);
            Some((slot, routed))
        })
        .ok()
        .flatten()
}
