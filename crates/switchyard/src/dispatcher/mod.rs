//! The dispatch runtime: per-core workers fed by work-stealing queues.
//!
//! ```text
//! submit(task) ─► Injector ─► worker i: local FIFO ◄─steal─ worker j
//!                                 │ route (snapshot + P2C + lease), record latency
//!                                 ▼
//!                       Backend::dispatch(task, routes, Ticket)
//!                                 │ later, any thread
//!                                 ▼
//!                       Ticket::complete(..) / drop ─► lease released, counters
//! ```
//!
//! # Accounting: every task ends exactly once
//! A task submitted successfully ends in exactly one of: `Backend::dispatch` (then its
//! [`Ticket`] ends it: completed, or dropped = [`Outcome::Abandoned`](crate::Outcome::Abandoned)), or
//! `Backend::reject` with a [`RouteError`]. A task refused by `submit` is handed back in the
//! [`SubmitError`]. A ticket is consumed by `complete`, so it cannot complete twice; its
//! lease is released by the same consumption or by its `Drop`, never both.
//!
//! # Saturation: wait, then shed by class
//! A task whose feasible routes are all full (`RouteError::Saturated`) is not refused at
//! once: the worker keeps it in a local waiting list (one per class, no shared state)
//! and retries it, highest class first, every 50 µs while busy or every 200 µs while that is
//! all it has, until it fits or its class's [`saturation_wait`](DispatcherBuilder::saturation_wait)
//! runs out; then it ends through `Backend::reject` with `Saturated`. With per-class
//! headroom, a sustained overload therefore sheds the lowest classes first. Shutdown drains
//! the waiting lists too (each bounded by its wait).
//!
//! # Fairness between tenants inside a class
//! Each class's waiting list is a [`FairQueue`](crate::fairness::FairQueue): one FIFO per tenant, and
//! the tenant served next is the one that has had the least token work
//! ([`token_work`](crate::fairness::token_work) of the tasks routed from the list, over its
//! [`tenant_weight`](DispatcherBuilder::tenant_weight)). A tenant is charged only when its
//! task is routed, never for a retry that found the class still full. While tasks of a class
//! wait, a new task of that class joins them rather than being routed ahead of them, so a
//! flooding tenant gets its share of the capacity that frees up, not all of it; its excess
//! waits and is shed when its wait runs out. Expired tasks are shed from every tenant's
//! FIFO at each retry, not only from the head served next.
//!
//! # Parking (no lost wake-ups)
//! `queued` counts tasks submitted and not yet taken by a worker. A submitter increments it,
//! pushes, then checks `sleepers`. A worker with nothing to do announces itself in
//! `sleeping[i]` and `sleepers`, then re-checks `queued` before parking. Both sides use `SeqCst`
//! on those two locations (a store-buffering pattern: Acquire/Release alone would let each side
//! miss the other's write), so either the worker sees the task or the submitter sees the
//! sleeper and unparks it; the parker keeps an unpark that arrives before `park` as a token.
//!
//! # Shutdown drains
//! 1. `shutdown` is set (`SeqCst`); every worker is unparked.
//! 2. `submit` increments `queued` *before* reading `shutdown` (both `SeqCst`), so a submit
//!    that got past the check is counted in `queued` before any worker can see `shutdown`.
//! 3. A worker exits only when `shutdown` is set and `queued` is zero: every accepted task has
//!    been taken, routed and handed over or rejected.
//! 4. The control thread stops; all threads are joined. Tickets still out complete later as
//!    usual and release their leases; [`Dispatcher::wait_for_tickets`] waits for them.
mod builder;
#[cfg(not(switchyard_loom))]
mod inline;
mod worker;

pub use builder::DispatcherBuilder;

use std::num::NonZeroU32;
use std::time::Duration;

use crate::error::{RouteError, SubmitError};
use crate::lease::ticket::Ticket;
use crate::metrics::{
    balance_deviation, new_histogram, AtomicHistogram, LatencySummary, RoutingMetrics,
};
use crate::model::{RouteOptions, Task, TenantId};
use crate::router::Router;
use crate::sync::{
    thread, Arc, AtomicBool, AtomicU64, AtomicUsize, CachePadded, Injector, Mutex, Ordering,
    Stealer, Unparker,
};

/// Where routed tasks go: the gateway's side of the dispatcher.
///
/// Each submitted task travels with a [`Payload`](Backend::Payload), whatever the gateway
/// needs to serve it (the HTTP request and the channel to answer on, say). The payload is
/// moved with the task through the queues, never cloned, and handed to exactly one of
/// `dispatch` or `reject` (or back to the caller inside a [`SubmitError`]), so the gateway
/// keeps no side table from task id to request.
///
/// `dispatch` runs on a worker thread: hand the task to an I/O runtime and return quickly.
/// A panic inside it is caught; the ticket is then dropped and counted as abandoned.
pub trait Backend: Send + Sync + 'static {
    /// What travels with each task: `()` when the backend needs nothing but the task.
    type Payload: Send + 'static;

    /// Serve `task` on `routes.primary()` (alternatives are there for failover) and
    /// complete `ticket` when it ends, from any thread.
    fn dispatch(&self, task: Task, payload: Self::Payload, routes: &RouteOptions, ticket: Ticket);

    /// `task` found no route; it ends here with `error`, and its payload with it (answer
    /// the client from it). The default drops both.
    fn reject(&self, task: Task, payload: Self::Payload, error: RouteError) {
        let _ = (task, payload, error);
    }
}

/// A task and its payload, as they travel through the queues.
#[derive(Debug)]
pub(crate) struct Job<P> {
    pub(crate) task: Task,
    pub(crate) payload: P,
}

/// Per-worker figures; each field has one writer (its worker).
#[derive(Debug)]
pub(crate) struct WorkerStats {
    pub(crate) latency: AtomicHistogram,
    pub(crate) dispatched: AtomicU64,
    /// Tasks dispatched, by priority class.
    pub(crate) admitted: [AtomicU64; 4],
    pub(crate) no_route: [AtomicU64; RouteError::ALL.len()],
    /// Tasks refused for lack of capacity, by priority class.
    pub(crate) shed: [AtomicU64; 4],
    pub(crate) panics: AtomicU64,
}

impl WorkerStats {
    fn new() -> Self {
        Self {
            latency: AtomicHistogram::new(),
            dispatched: AtomicU64::new(0),
            admitted: Default::default(),
            no_route: Default::default(),
            shed: Default::default(),
            panics: AtomicU64::new(0),
        }
    }
}

/// Single-writer increment (no lock prefix): only the owning worker writes.
#[inline]
pub(crate) fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

pub(crate) struct Shared<B: Backend> {
    pub(crate) router: Router,
    pub(crate) backend: B,
    pub(crate) injector: Injector<Job<B::Payload>>,
    pub(crate) stealers: Box<[Stealer<Job<B::Payload>>]>,
    pub(crate) sleeping: Box<[CachePadded<AtomicBool>]>,
    pub(crate) unparkers: Box<[Unparker]>,
    pub(crate) sleepers: CachePadded<AtomicUsize>,
    pub(crate) queued: CachePadded<AtomicUsize>,
    pub(crate) capacity: usize,
    pub(crate) shutdown: AtomicBool,
    pub(crate) stats: Box<[CachePadded<WorkerStats>]>,
    /// Figures of the decisions `submit_inline` made on callers' threads: a slot per
    /// caller number modulo their count, so that callers mostly write lines of their own.
    pub(crate) callers: Box<[CachePadded<WorkerStats>]>,
    /// Tasks held in the workers' waiting lists (saturated: waiting for room). Written only
    /// when a list grows or shrinks; read by `submit_inline`.
    pub(crate) saturated: CachePadded<AtomicUsize>,
    /// Times decisions (read-only after construction).
    pub(crate) stopwatch: crate::clock::Stopwatch,
    /// Distinguishes this dispatcher in callers' thread-local readers (none under loom,
    /// where `submit_inline` is `submit`).
    #[cfg_attr(switchyard_loom, allow(dead_code))]
    pub(crate) id: u64,
    refused: AtomicU64,
    pub(crate) spin_rounds: u32,
    /// How long a saturated task of each class may wait for capacity before it is shed.
    pub(crate) saturation_wait: [Duration; 4],
    /// Fair-share weights of tenants while they wait (others weigh 1).
    pub(crate) tenant_weights: Box<[(TenantId, NonZeroU32)]>,
}

impl<B: Backend> Shared<B> {
    /// The workers' figures and the inline callers'.
    fn all_stats(&self) -> impl Iterator<Item = &WorkerStats> {
        self.stats.iter().chain(self.callers.iter()).map(|w| &**w)
    }

    /// Wakes one parked worker, if any announced itself.
    fn notify_one(&self) {
        // SeqCst: the other half of the store-buffering pair with the worker's announce
        // (`sleepers.fetch_add`) and re-check (`queued.load`); see the module docs.
        if self.sleepers.load(Ordering::SeqCst) == 0 {
            return;
        }
        for (i, s) in self.sleeping.iter().enumerate() {
            // Relaxed first, so that a scan does not write the flag line of every busy worker
            // it passes: a worker stores its flag before its `sleepers` increment (both
            // SeqCst), and the SeqCst load above that saw the increment synchronises with it,
            // so that worker's `true` is visible here unless another notifier (or the worker
            // itself) has cleared it since. SeqCst swap: claims the sleeper exactly once
            // against its own clearing swap.
            if s.load(Ordering::Relaxed) && s.swap(false, Ordering::SeqCst) {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                self.unparkers[i].unpark();
                return;
            }
        }
    }

    fn notify_all(&self) {
        for u in self.unparkers.iter() {
            u.unpark();
        }
    }
}

/// The per-core dispatch runtime.
///
/// # Examples
/// ```
/// use switchyard::{Backend, Completion, Dispatcher, NodeSpec, RouteOptions, Router, Task, Ticket};
///
/// /// Answers each request with the name of the node it was routed to.
/// struct Echo;
/// impl Backend for Echo {
///     type Payload = std::sync::mpsc::Sender<String>; // e.g. the HTTP response channel
///     fn dispatch(&self, _task: Task, reply: Self::Payload, routes: &RouteOptions, ticket: Ticket) {
///         let _ = reply.send(format!("routed to node {}", routes.primary().route.head().0));
///         ticket.complete(Completion::success(1.0, 10)); // usually later, from an I/O thread
///     }
/// }
///
/// let router = Router::builder().node(NodeSpec::new("a")).build()?;
/// let d = Dispatcher::builder(router).workers(2).build(Echo)?;
/// let (tx, rx) = std::sync::mpsc::channel();
/// for id in 0..100 {
///     d.submit(Task::new(id, 100, 10), tx.clone()).expect("room in the queue");
/// }
/// d.shutdown();
/// assert_eq!(rx.try_iter().count(), 100);
/// assert_eq!(d.metrics().outcome(switchyard::Outcome::Success), 100);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Dispatcher<B: Backend> {
    shared: Arc<Shared<B>>,
    handles: Mutex<Vec<thread::JoinHandle<()>>>,
    stop_control: Arc<AtomicBool>,
}

impl<B: Backend> std::fmt::Debug for Dispatcher<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("workers", &self.shared.stealers.len())
            .field("capacity", &self.shared.capacity)
            .finish_non_exhaustive()
    }
}

impl Dispatcher<NoBackend> {
    /// A builder over `router`.
    pub fn builder(router: Router) -> DispatcherBuilder {
        DispatcherBuilder {
            router,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pin: false,
            capacity: 65_536,
            control_interval: Some(Duration::from_millis(10)),
            spin_rounds: 64,
            saturation_wait: [
                Duration::from_secs(1),
                Duration::from_millis(500),
                Duration::from_millis(200),
                Duration::from_millis(50),
            ],
            tenant_weights: Vec::new(),
        }
    }
}

/// A placeholder type for [`Dispatcher::builder`]; the backend is chosen at `build`.
#[derive(Debug)]
pub struct NoBackend;

impl Backend for NoBackend {
    type Payload = ();
    fn dispatch(&self, _task: Task, _payload: (), _routes: &RouteOptions, _ticket: Ticket) {}
}

impl<B: Backend> Dispatcher<B> {
    /// Queues a task and its payload from any thread. Never blocks.
    ///
    /// # Errors
    /// [`SubmitError::Full`] at capacity, [`SubmitError::ShutDown`] after shutdown; either
    /// way the task and its payload are handed back.
    pub fn submit(
        &self,
        task: Task,
        payload: B::Payload,
    ) -> Result<(), SubmitError<(Task, B::Payload)>> {
        let s = &*self.shared;
        // SeqCst: ordered before the `shutdown` load below against `shutdown()`'s store and
        // the workers' exit check (see "Shutdown drains"), and half of the parking pair.
        let before = s.queued.fetch_add(1, Ordering::SeqCst);
        if s.shutdown.load(Ordering::SeqCst) {
            s.queued.fetch_sub(1, Ordering::SeqCst);
            s.refused.fetch_add(1, Ordering::Relaxed);
            return Err(SubmitError::ShutDown((task, payload)));
        }
        if before >= s.capacity {
            // SeqCst: undoes the increment above in the same total order (see above).
            s.queued.fetch_sub(1, Ordering::SeqCst);
            // Relaxed: report counter.
            s.refused.fetch_add(1, Ordering::Relaxed);
            return Err(SubmitError::Full((task, payload)));
        }
        s.injector.push(Job { task, payload });
        s.notify_one();
        Ok(())
    }

    /// As [`submit`](Self::submit), but while no task is queued and none waits for room the
    /// calling thread routes the task itself and hands it to the backend before returning,
    /// instead of waking a worker to do it.
    ///
    /// A queued task costs two hand-offs between threads (the submitter wakes a worker, the
    /// worker hands the task back to the caller's I/O runtime), each a wake-up of tens of
    /// microseconds on an idle machine: most of what a gateway adds to a request at light
    /// load. While the queue is empty it has nothing to order, balance or hold back, so the
    /// decision is the same one a worker would make: the same plan and reserve on the same
    /// snapshot, its latency recorded and its outcome counted in [`metrics`](Self::metrics).
    /// Once tasks queue up (a burst, or a fleet saturated so that tasks wait for room), this
    /// is `submit`, and the workers keep their order, fairness and priorities.
    ///
    /// `Backend::dispatch` (or `reject`) then runs on the calling thread: from an async
    /// runtime's thread it should spawn, not block, as it should on a worker. A task the
    /// fleet has no room for right now is queued as by `submit`, to wait for room in a
    /// worker's waiting list (its decision is then timed twice in the decision histogram:
    /// here, and again by the worker). The first call from a thread allocates that thread's
    /// reader.
    ///
    /// # Errors
    /// As [`submit`](Self::submit).
    ///
    /// # Examples
    /// ```
    /// use switchyard::{Backend, Completion, Dispatcher, NodeSpec, RouteOptions, Router, Task, Ticket};
    ///
    /// struct Done;
    /// impl Backend for Done {
    ///     type Payload = ();
    ///     fn dispatch(&self, _: Task, _: (), _: &RouteOptions, ticket: Ticket) {
    ///         ticket.complete(Completion::success(1.0, 10));
    ///     }
    /// }
    ///
    /// let router = Router::builder().node(NodeSpec::new("a")).build()?;
    /// let d = Dispatcher::builder(router).workers(1).build(Done)?;
    /// d.submit_inline(Task::new(1, 100, 10), ()).expect("room in the queue");
    /// // Nothing was queued, so the task was routed and handed over on this thread.
    /// assert_eq!(d.metrics().dispatched, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn submit_inline(
        &self,
        task: Task,
        payload: B::Payload,
    ) -> Result<(), SubmitError<(Task, B::Payload)>> {
        #[cfg(switchyard_loom)]
        return self.submit(task, payload);
        #[cfg(not(switchyard_loom))]
        {
            let s = &*self.shared;
            // Acquire on `shutdown`: pairs with its SeqCst store, so a caller that sees it
            // refuses through `submit`. A caller that misses a concurrent shutdown serves its
            // task here before returning, as a worker drains a task submitted just before.
            // Relaxed on the two counts: hints only (nothing is read through them); a stale
            // reading routes one task here that the queue would have taken, or the reverse.
            if s.shutdown.load(Ordering::Acquire)
                || s.queued.load(Ordering::Relaxed) != 0
                || s.saturated.load(Ordering::Relaxed) != 0
            {
                return self.submit(task, payload);
            }
            let mut routes = RouteOptions::default();
            let Some((slot, routed)) = inline::route_here(s, &task, &mut routes) else {
                return self.submit(task, payload);
            };
            let ctx = worker::Ctx {
                shared: s,
                stats: &s.callers[slot],
                many_writers: true,
            };
            match routed {
                Ok(lease) => ctx.hand_over(lease, Job { task, payload }, &routes),
                // No room now: wait for it in a worker's list, like a submitted task.
                Err(RouteError::Saturated) => return self.submit(task, payload),
                Err(e) => ctx.reject(Job { task, payload }, e),
            }
            Ok(())
        }
    }

    /// The router.
    pub fn router(&self) -> &Router {
        &self.shared.router
    }

    /// Tasks queued, not yet taken by a worker.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Tasks taken by workers and held in their waiting lists: every feasible route was full
    /// when they were tried, and they wait for room (or their class's `saturation_wait`).
    ///
    /// A worker publishes its count after it has tried a task it took from the queue, so a
    /// task just taken shows in neither [`queued`](Self::queued) nor here for that moment.
    pub fn waiting(&self) -> usize {
        // Relaxed: a gauge; see `Waiting::publish`.
        self.shared.saturated.load(Ordering::Relaxed)
    }

    fn dispatched(&self) -> u64 {
        // Relaxed: report counters; see `in_flight` for how they pair with outcomes.
        self.shared
            .all_stats()
            .map(|w| w.dispatched.load(Ordering::Relaxed))
            .sum()
    }

    /// Tickets out with the backend: tasks dispatched minus tasks finished.
    ///
    /// Finished tasks are counted on the router's nodes, so this is exact when the router
    /// serves one dispatcher (the usual set-up); with several dispatchers on one router, it
    /// counts the others' finished tickets too.
    pub fn in_flight(&self) -> u64 {
        // Finished first (Acquire, pairing with the Release increment of a finishing ticket),
        // then dispatched: a ticket that finished was counted as dispatched before it existed,
        // so the difference never dips below the truth.
        let finished: u64 = self.shared.router.finished().total();
        self.dispatched().saturating_sub(finished)
    }

    /// Stops accepting tasks, drains the queues (every accepted task is routed and handed
    /// over or rejected), and joins the threads. Idempotent; also run on drop.
    pub fn shutdown(&self) {
        // SeqCst: see "Shutdown drains".
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.notify_all();
        let handles = std::mem::take(&mut *self.handles.lock().unwrap_or_else(|e| e.into_inner()));
        let mut control = None;
        for h in handles {
            if h.thread().name() == Some("switchyard-control") {
                control = Some(h);
                continue;
            }
            let _ = h.join();
        }
        // Release: pairs with the control loop's Acquire load.
        self.stop_control.store(true, Ordering::Release);
        if let Some(h) = control {
            h.thread().unpark();
            let _ = h.join();
        }
    }

    /// Waits until no ticket is out, up to `timeout`; returns whether none is.
    pub fn wait_for_tickets(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self.in_flight() == 0 {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Decision latency, counts by outcome, per-node load and balance.
    pub fn metrics(&self) -> RoutingMetrics {
        let s = &*self.shared;
        // Finished before dispatched, as in `in_flight`: a task counted as finished was
        // counted as dispatched before its ticket existed, so the report never shows fewer
        // tasks in flight than there are.
        let outcomes = s.router.finished();
        let mut h = new_histogram();
        let mut dispatched = 0;
        let mut no_route = [0u64; RouteError::ALL.len()];
        let mut shed = [0u64; 4];
        let mut admitted = [0u64; 4];
        for w in s.all_stats() {
            for (i, c) in w.admitted.iter().enumerate() {
                // Relaxed: report counters (each read whole; nothing is published through them).
                admitted[i] += c.load(Ordering::Relaxed);
            }
            for (i, c) in w.shed.iter().enumerate() {
                // Relaxed: report counters (each read whole; nothing is published through them).
                shed[i] += c.load(Ordering::Relaxed);
            }
            w.latency.merge_into(&mut h);
            // Relaxed: report counters (each read whole; nothing is published through them).
            dispatched += w.dispatched.load(Ordering::Relaxed);
            for (i, c) in w.no_route.iter().enumerate() {
                no_route[i] += c.load(Ordering::Relaxed);
            }
        }
        let nodes = s.router.live_nodes();
        let utils: Vec<f64> = nodes
            .iter()
            .filter(|n| !n.draining)
            .map(|n| n.utilization)
            .collect();
        let queued = self.queued() as u64;
        let waiting = self.waiting() as u64;
        let (reclaimed_leases, late_completions) = s.router.lease_counts();
        RoutingMetrics {
            admitted_by_class: admitted.into(),
            spillovers: nodes.iter().map(|n| n.spillovers).sum(),
            settle_corrections: nodes.iter().map(|n| n.settle_corrections).sum(),
            settled_tokens: nodes.iter().map(|n| n.settled_tokens).sum(),
            reclaimed_leases,
            late_completions,
            utilization: crate::metrics::fleet_utilization(&nodes),
            decision_latency: LatencySummary::of(&h),
            submitted: dispatched + no_route.iter().sum::<u64>() + queued + waiting,
            // Relaxed: a report counter.
            refused: s.refused.load(Ordering::Relaxed),
            dispatched,
            no_route: RouteError::ALL
                .iter()
                .map(|e| (e.name(), no_route[e.index()]))
                .collect(),
            in_flight: dispatched.saturating_sub(outcomes.total()),
            shed_by_class: shed.into(),
            outcomes,
            queued,
            waiting,
            balance_deviation: balance_deviation(&utils),
            nodes,
            epoch: s.router.snapshot().epoch(),
        }
    }

    /// Every worker's decision latencies (plan + reserve, in nanoseconds) merged into one
    /// histogram: the data behind `metrics().decision_latency`, for buckets of one's own
    /// (as [`prometheus::render`](crate::prometheus::render) draws). Off the hot path: it
    /// allocates the histogram.
    pub fn decision_histogram(&self) -> hdrhistogram::Histogram<u64> {
        let mut h = new_histogram();
        for w in self.shared.all_stats() {
            w.latency.merge_into(&mut h);
        }
        h
    }

    /// The backend the dispatcher hands tickets to.
    pub fn backend(&self) -> &B {
        &self.shared.backend
    }

    /// Panics caught inside `Backend::dispatch`.
    pub fn backend_panics(&self) -> u64 {
        self.shared
            .all_stats()
            .map(|w| w.panics.load(Ordering::Relaxed))
            .sum()
    }
}

impl<B: Backend> Drop for Dispatcher<B> {
    fn drop(&mut self) {
        self.shutdown();
    }
}
