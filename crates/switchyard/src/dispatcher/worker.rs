//! One worker's run loop: find a task, route it, hand it over; spin briefly, then park.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use super::{bump, new_ticket, Backend, Shared};
use crate::clock::Stopwatch;
use crate::error::RouteError;
use crate::fairness::{token_work, FairQueue};
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
    let mut waiting = Waiting::new(&shared);
    loop {
        if let Some(task) = find_task(index, &shared, &local, &mut rng) {
            // SeqCst: the task has left the queues; ordered with the exit check and the
            // parking re-check (module docs).
            shared.queued.fetch_sub(1, Ordering::SeqCst);
            let ctx = Ctx {
                shared: &shared,
                stats,
                stopwatch: &stopwatch,
            };
            ctx.admit(&mut reader, &mut waiting, task);
            if waiting.due() {
                ctx.retry(&mut reader, &mut waiting);
            }
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
        let ctx = Ctx {
            shared: &shared,
            stats,
            stopwatch: &stopwatch,
        };
        if let Some(task) = found {
            // SeqCst: as for the task found above.
            shared.queued.fetch_sub(1, Ordering::SeqCst);
            ctx.admit(&mut reader, &mut waiting, task);
            continue;
        }
        if !waiting.is_empty() {
            // Tasks wait for capacity: retry them, then nap briefly instead of parking for
            // good (capacity frees when other threads complete tickets; nothing wakes us).
            ctx.retry(&mut reader, &mut waiting);
            if !waiting.is_empty() {
                parker.park_timeout(WAIT_POLL);
                continue;
            }
        }
        // SeqCst: see "Shutdown drains" in the module docs.
        if shared.shutdown.load(Ordering::SeqCst) && shared.queued.load(Ordering::SeqCst) == 0 {
            return;
        }
        park(index, &shared, &parker);
    }
}

/// How often waiting tasks are retried while the worker is busy, and how long it naps when
/// they are all it has.
const WAIT_RETRY: Duration = Duration::from_micros(50);
const WAIT_POLL: Duration = Duration::from_micros(200);
/// Most tasks one worker holds waiting for capacity; beyond, a saturated task is shed at once.
const MAX_WAITING: usize = 16_384;

/// Tasks whose feasible routes were all full, waiting for capacity, one fair queue per class
/// (worker-local: no synchronisation): inside a class, tenants are served by token work
/// (`FairQueue`), each tenant's tasks in FIFO order. Retried highest class first; a task whose
/// class's wait runs out is shed with `RouteError::Saturated`.
struct Waiting {
    /// Each task with the instant its class's wait runs out.
    queues: [FairQueue<(Task, Instant)>; 4],
    last_retry: Option<Instant>,
}

impl Waiting {
    fn new<B>(shared: &Shared<B>) -> Self {
        let queues = std::array::from_fn(|_| {
            let mut q = FairQueue::new();
            for &(tenant, weight) in shared.tenant_weights.iter() {
                q.set_weight(tenant, weight);
            }
            q
        });
        Self {
            queues,
            last_retry: None,
        }
    }

    fn len(&self) -> usize {
        self.queues.iter().map(FairQueue::len).sum()
    }

    fn is_empty(&self) -> bool {
        self.queues.iter().all(FairQueue::is_empty)
    }

    fn due(&self) -> bool {
        !self.is_empty() && self.last_retry.is_none_or(|t| t.elapsed() >= WAIT_RETRY)
    }

    /// Whether a task of class `p` needing `caps` must wait behind a higher class: some
    /// higher class's next task needs the same capabilities and still waits for room. Strict
    /// priority within a capability set keeps a large critical task from starving behind a
    /// stream of smaller lower-class ones that each fit the gap; tasks needing other
    /// capabilities go on (they may be unable to use what it waits for at all).
    fn behind_higher(&self, p: usize, caps: &crate::capability::CapSet) -> bool {
        self.queues[..p].iter().any(|q| {
            q.peek()
                .is_some_and(|(t, _)| t.constraints.required == *caps)
        })
    }

    fn push(&mut self, task: Task, deadline: Instant) {
        let work = token_work(task.input_tokens, task.output_tokens);
        self.queues[task.constraints.priority.index()].push(task.tenant, work, (task, deadline));
    }
}

/// What routing a task needs from the worker.
struct Ctx<'a, B: Backend> {
    shared: &'a Shared<B>,
    stats: &'a super::WorkerStats,
    stopwatch: &'a Stopwatch,
}

impl<B: Backend> Ctx<'_, B> {
    /// Routes and dispatches; hands the task back with the error when there is no route.
    #[inline]
    fn route(
        &self,
        reader: &mut crate::router::RouteReader,
        task: Task,
    ) -> Result<(), (Task, RouteError)> {
        let t0 = self.stopwatch.start();
        let mut routes = RouteOptions::default();
        let routed = reader.route_into(&task, &mut routes);
        self.stats.latency.record(self.stopwatch.elapsed_ns(t0));
        let lease = routed.map_err(|e| (task, e))?;
        // Counted before the ticket exists, so before it can finish (see `in_flight`).
        bump(&self.stats.dispatched);
        bump(&self.stats.admitted[task.constraints.priority.index()]);
        let ticket = new_ticket(lease, task);
        // A panicking backend must not take the worker (and the queue) down with it. The
        // ticket is dropped during unwinding and counted as abandoned.
        if catch_unwind(AssertUnwindSafe(|| {
            self.shared.backend.dispatch(task, &routes, ticket)
        }))
        .is_err()
        {
            bump(&self.stats.panics);
        }
        Ok(())
    }

    /// A task just taken from the queues: routed now, unless tasks of its class already
    /// wait for capacity; then it joins them, so that it takes its turn in fair order
    /// instead of overtaking them (a flooding tenant's fresh tasks would otherwise take every
    /// slot that frees up).
    fn admit(&self, reader: &mut crate::router::RouteReader, waiting: &mut Waiting, task: Task) {
        let p = task.constraints.priority.index();
        let behind =
            !waiting.queues[p].is_empty() || waiting.behind_higher(p, &task.constraints.required);
        if behind && waiting.len() < MAX_WAITING {
            waiting.push(task, Instant::now() + self.shared.saturation_wait[p]);
            return;
        }
        if let Err((task, e)) = self.route(reader, task) {
            self.saturated_or_reject(waiting, task, e);
        }
    }

    /// A saturated task waits for capacity (for its class's wait); anything else ends now.
    fn saturated_or_reject(&self, waiting: &mut Waiting, task: Task, e: RouteError) {
        let wait = self.shared.saturation_wait[task.constraints.priority.index()];
        if e == RouteError::Saturated && !wait.is_zero() && waiting.len() < MAX_WAITING {
            waiting.push(task, Instant::now() + wait);
            return;
        }
        self.reject(task, e);
    }

    fn reject(&self, task: Task, e: RouteError) {
        bump(&self.stats.no_route[e.index()]);
        if e == RouteError::Saturated {
            bump(&self.stats.shed[task.constraints.priority.index()]);
        }
        if catch_unwind(AssertUnwindSafe(|| self.shared.backend.reject(task, e))).is_err() {
            bump(&self.stats.panics);
        }
    }

    /// Retries waiting tasks, highest class first and in fair order inside a class; sheds
    /// those whose wait ran out.
    fn retry(&self, reader: &mut crate::router::RouteReader, waiting: &mut Waiting) {
        let now = Instant::now();
        waiting.last_retry = Some(now);
        // Capability sets whose head, in a higher class, still waits for room (see
        // `Waiting::behind_higher`); a handful is plenty, more only weakens the rule.
        let mut blocked = [crate::capability::CapSet::EMPTY; 4];
        let mut nblocked = 0;
        for queue in &mut waiting.queues {
            while let Some(taken) = queue.take() {
                let (task, deadline) = *taken.item();
                let caps = task.constraints.required;
                if now < deadline && blocked[..nblocked].contains(&caps) {
                    queue.requeue_front(taken);
                    break;
                }
                match self.route(reader, task) {
                    // Served: only now is its tenant charged its token work.
                    Ok(()) => drop(queue.charge(taken)),
                    Err((_, RouteError::Saturated)) if now < deadline => {
                        // Still full for this class: keep its place, uncharged; lower
                        // classes needing the same capabilities wait behind it.
                        if nblocked < blocked.len() && !blocked[..nblocked].contains(&caps) {
                            blocked[nblocked] = caps;
                            nblocked += 1;
                        }
                        queue.requeue_front(taken);
                        break;
                    }
                    Err((task, e)) => {
                        let _ = taken.into_inner();
                        self.reject(task, e);
                    }
                }
            }
            // Each tenant keeps its own FIFO, so a task can expire behind its tenant's head
            // while another tenant's head blocks the class: shed those on time too. (A
            // tenant's deadlines grow front to back: one class, one wait, pushed in order.)
            queue.remove_front_while(
                |&(_, deadline)| deadline <= now,
                |(task, _)| self.reject(task, RouteError::Saturated),
            );
        }
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
