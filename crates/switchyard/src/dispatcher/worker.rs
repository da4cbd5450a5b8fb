//! One worker's run loop: find a task, route it, hand it over; spin briefly, then park.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use super::{bump, Backend, Job, Shared};
use crate::error::RouteError;
use crate::fairness::{token_work, FairQueue};
use crate::lease::ticket::new_ticket;
use crate::lease::Lease;
use crate::model::{RouteOptions, Task};
use crate::rng::Rng;
use crate::sync::{Arc, Ordering, Parker, Steal, Worker};

pub(super) fn run<B: Backend>(
    index: usize,
    shared: Arc<Shared<B>>,
    local: Worker<Job<B::Payload>>,
    parker: Parker,
    core: Option<core_affinity::CoreId>,
) {
    if let Some(core) = core {
        // Best effort: on a machine that refuses pinning the worker still runs.
        let _ = core_affinity::set_for_current(core);
    }
    let mut reader = shared.router.reader();
    let mut rng = Rng::new(0x5157_C4A2 ^ index as u64);
    let stats = &shared.stats[index];
    let mut waiting = Waiting::new(&shared);
    // Whether the last pass ended in a nap for waiting tasks: then no task has come since, and
    // spinning again before the next retry only burns the core (a `sched_yield` each round).
    let mut napped = false;
    loop {
        if let Some(job) = find_task(index, &shared, &local, &mut rng) {
            napped = false;
            // SeqCst: the task has left the queues; ordered with the exit check and the
            // parking re-check (module docs).
            shared.queued.fetch_sub(1, Ordering::SeqCst);
            let ctx = Ctx::worker(&shared, stats);
            ctx.admit(&mut reader, &mut waiting, job);
            if waiting.due() {
                ctx.retry(&mut reader, &mut waiting);
            }
            waiting.publish(&shared);
            continue;
        }
        // Nothing found: poll a little with back-off before parking.
        let mut found = None;
        let rounds = if napped { 0 } else { shared.spin_rounds };
        for round in 0..rounds {
            spin(round);
            found = find_task(index, &shared, &local, &mut rng);
            if found.is_some() {
                break;
            }
        }
        let ctx = Ctx::worker(&shared, stats);
        if let Some(job) = found {
            napped = false;
            // SeqCst: as for the task found above.
            shared.queued.fetch_sub(1, Ordering::SeqCst);
            ctx.admit(&mut reader, &mut waiting, job);
            waiting.publish(&shared);
            continue;
        }
        if !waiting.is_empty() {
            // Tasks wait for capacity: retry them, then nap briefly instead of parking for
            // good (capacity frees when other threads complete tickets; nothing wakes us).
            ctx.retry(&mut reader, &mut waiting);
            waiting.publish(&shared);
            if !waiting.is_empty() {
                parker.park_timeout(WAIT_POLL);
                napped = true;
                continue;
            }
        }
        napped = false;
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
struct Waiting<P> {
    /// Each task (with its payload) and the instant its class's wait runs out.
    queues: [FairQueue<(Job<P>, Instant)>; 4],
    last_retry: Option<Instant>,
    /// What this worker last added to `Shared::saturated`.
    published: usize,
}

impl<P> Waiting<P> {
    fn new<B: Backend>(shared: &Shared<B>) -> Self {
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
            published: 0,
        }
    }

    /// Brings this worker's share of `Shared::saturated` up to date. The counter is written
    /// only when the waiting list grows or shrinks, that is while the fleet is saturated,
    /// never on the common path where a task is routed at once.
    #[inline]
    fn publish<B: Backend>(&mut self, shared: &Shared<B>) {
        let n = self.len();
        if n != self.published {
            // Relaxed: a hint for `submit_inline` (whether any task waits for room); nothing
            // is published through it, and a stale reading only routes one task through the
            // queue, or one inline, that could have gone the other way.
            if n > self.published {
                shared
                    .saturated
                    .fetch_add(n - self.published, Ordering::Relaxed);
            } else {
                shared
                    .saturated
                    .fetch_sub(self.published - n, Ordering::Relaxed);
            }
            self.published = n;
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
                .is_some_and(|(j, _)| j.task.constraints.required == *caps)
        })
    }

    fn push(&mut self, job: Job<P>, deadline: Instant) {
        let task = &job.task;
        let work = token_work(task.input_tokens, task.output_tokens);
        let (class, tenant) = (task.constraints.priority.index(), task.tenant);
        self.queues[class].push(tenant, work, (job, deadline));
    }
}

/// What routing a task needs: the dispatcher, and where its figures go.
pub(super) struct Ctx<'a, B: Backend> {
    pub(super) shared: &'a Shared<B>,
    pub(super) stats: &'a super::WorkerStats,
    /// Whether other threads write `stats` too (a caller's slot of `submit_inline`): then
    /// its counters take atomic increments instead of the single writer's plain ones.
    pub(super) many_writers: bool,
}

impl<'a, B: Backend> Ctx<'a, B> {
    /// A worker's context: its own figures, one writer.
    pub(super) fn worker(shared: &'a Shared<B>, stats: &'a super::WorkerStats) -> Self {
        Self {
            shared,
            stats,
            many_writers: false,
        }
    }

    #[inline]
    fn count(&self, c: &crate::sync::AtomicU64) {
        if self.many_writers {
            // Relaxed: a report counter; the slot may have other writers.
            c.fetch_add(1, Ordering::Relaxed);
        } else {
            bump(c);
        }
    }

    /// Plans and reserves a route for `task` (the decision whose latency is recorded).
    #[inline]
    pub(super) fn try_route(
        &self,
        reader: &mut crate::router::RouteReader,
        task: &Task,
        routes: &mut RouteOptions,
    ) -> Result<Lease, RouteError> {
        let sw = &self.shared.stopwatch;
        let t0 = sw.start();
        let routed = reader.route_into(task, routes);
        let ns = sw.elapsed_ns(t0);
        if self.many_writers {
            self.stats.latency.record_shared(ns);
        } else {
            self.stats.latency.record(ns);
        }
        routed
    }

    /// Hands a routed task, its payload and its ticket to the backend.
    #[inline]
    pub(super) fn hand_over(&self, lease: Lease, job: Job<B::Payload>, routes: &RouteOptions) {
        let Job { task, payload } = job;
        // Counted before the ticket exists, so before it can finish (see `in_flight`).
        self.count(&self.stats.dispatched);
        self.count(&self.stats.admitted[task.constraints.priority.index()]);
        let ticket = new_ticket(lease, task);
        // A panicking backend must not take the worker (and the queue) down with it. The
        // ticket is dropped during unwinding and counted as abandoned.
        if catch_unwind(AssertUnwindSafe(|| {
            self.shared.backend.dispatch(task, payload, routes, ticket)
        }))
        .is_err()
        {
            self.count(&self.stats.panics);
        }
    }

    /// A task just taken from the queues: routed now, unless tasks of its class already
    /// wait for capacity; then it joins them, so that it takes its turn in fair order
    /// instead of overtaking them (a flooding tenant's fresh tasks would otherwise take every
    /// slot that frees up).
    fn admit(
        &self,
        reader: &mut crate::router::RouteReader,
        waiting: &mut Waiting<B::Payload>,
        job: Job<B::Payload>,
    ) {
        let p = job.task.constraints.priority.index();
        let behind = !waiting.queues[p].is_empty()
            || waiting.behind_higher(p, &job.task.constraints.required);
        if behind && waiting.len() < MAX_WAITING {
            let wait = self.wait_for(&job.task);
            waiting.push(job, deadline_after(wait));
            return;
        }
        let mut routes = RouteOptions::default();
        match self.try_route(reader, &job.task, &mut routes) {
            Ok(lease) => self.hand_over(lease, job, &routes),
            Err(e) => self.saturated_or_reject(waiting, job, e),
        }
    }

    /// A saturated task waits for capacity (for its class's wait); anything else ends now.
    fn saturated_or_reject(
        &self,
        waiting: &mut Waiting<B::Payload>,
        job: Job<B::Payload>,
        e: RouteError,
    ) {
        let wait = self.wait_for(&job.task);
        if e == RouteError::Saturated && !wait.is_zero() && waiting.len() < MAX_WAITING {
            waiting.push(job, deadline_after(wait));
            return;
        }
        self.reject(job, e);
    }

    /// How long `task` may wait for room: its class's saturation wait or, when the task
    /// carries a latency budget (`max_latency_ms`) and its class may wait at all, half of that
    /// budget if that is longer. A task that has spent half its budget waiting can still be
    /// served in time only by a route at least twice as fast as the budget; past that, the
    /// capacity it would take is better left to tasks that can still make theirs.
    fn wait_for(&self, task: &Task) -> Duration {
        let class = self.shared.saturation_wait[task.constraints.priority.index()];
        let budget = task.constraints.max_latency_ms;
        if budget == u32::MAX || class.is_zero() {
            return class;
        }
        class.max(Duration::from_millis(u64::from(budget / 2)))
    }

    pub(super) fn reject(&self, job: Job<B::Payload>, e: RouteError) {
        let Job { task, payload } = job;
        self.count(&self.stats.no_route[e.index()]);
        if e == RouteError::Saturated {
            self.count(&self.stats.shed[task.constraints.priority.index()]);
        }
        if catch_unwind(AssertUnwindSafe(|| {
            self.shared.backend.reject(task, payload, e)
        }))
        .is_err()
        {
            self.count(&self.stats.panics);
        }
    }

    /// Retries waiting tasks, highest class first and in fair order inside a class; sheds
    /// those whose wait ran out.
    fn retry(&self, reader: &mut crate::router::RouteReader, waiting: &mut Waiting<B::Payload>) {
        let now = Instant::now();
        waiting.last_retry = Some(now);
        // Capability sets whose head, in a higher class, still waits for room (see
        // `Waiting::behind_higher`); a handful is plenty, more only weakens the rule.
        let mut blocked = [crate::capability::CapSet::EMPTY; 4];
        let mut nblocked = 0;
        let mut routes = RouteOptions::default();
        for queue in &mut waiting.queues {
            while let Some(taken) = queue.take() {
                let (task, deadline) = {
                    let (job, deadline) = taken.item();
                    (job.task, *deadline)
                };
                let caps = task.constraints.required;
                if now < deadline && blocked[..nblocked].contains(&caps) {
                    queue.requeue_front(taken);
                    break;
                }
                match self.try_route(reader, &task, &mut routes) {
                    // Served: only now is its tenant charged its token work.
                    Ok(lease) => {
                        let (job, _) = queue.charge(taken);
                        self.hand_over(lease, job, &routes);
                    }
                    Err(RouteError::Saturated) if now < deadline => {
                        // Still full for this class: keep its place, uncharged; lower
                        // classes needing the same capabilities wait behind it.
                        if nblocked < blocked.len() && !blocked[..nblocked].contains(&caps) {
                            blocked[nblocked] = caps;
                            nblocked += 1;
                        }
                        queue.requeue_front(taken);
                        break;
                    }
                    Err(e) => {
                        let (job, _) = taken.into_inner();
                        self.reject(job, e);
                    }
                }
            }
            // Each tenant keeps its own FIFO, so a task can expire behind its tenant's head
            // while another tenant's head blocks the class: shed those on time too. (A
            // tenant's deadlines mostly grow front to back; a task with a shorter budget
            // behind one with a longer is shed when it reaches the front, or served if room
            // has come by then.)
            queue.remove_front_while(
                |&(_, deadline)| deadline <= now,
                |(job, _)| self.reject(job, RouteError::Saturated),
            );
        }
    }
}

/// The instant a wait of `wait` from now runs out; a wait too long to represent (such as
/// `Duration::MAX`, "never shed") saturates to about a century from now instead of
/// overflowing.
fn deadline_after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
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
    local: &Worker<Job<B::Payload>>,
    rng: &mut Rng,
) -> Option<Job<B::Payload>> {
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
