//! [`DispatcherBuilder`]: the dispatcher's settings, checked, and the threads it starts.
use std::num::NonZeroU32;
use std::time::Duration;

use crate::error::BuildError;
use crate::model::TenantId;
use crate::router::Router;
use crate::sync::{
    Arc, AtomicBool, AtomicU64, AtomicUsize, CachePadded, Injector, Mutex, Ordering, Parker, Worker,
};

use super::{worker, Backend, Dispatcher, Job, Shared, WorkerStats};

/// Builds a [`Dispatcher`].
#[derive(Debug)]
pub struct DispatcherBuilder {
    pub(super) router: Router,
    pub(super) workers: usize,
    pub(super) pin: bool,
    pub(super) capacity: usize,
    pub(super) control_interval: Option<Duration>,
    pub(super) spin_rounds: u32,
    pub(super) saturation_wait: [Duration; 4],
    pub(super) tenant_weights: Vec<(TenantId, u32)>,
}

impl DispatcherBuilder {
    /// Worker threads (default: one per available core).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Pin worker `i` to core `i mod cores` (default off: pinning helps on a dedicated box and
    /// hurts on a shared one).
    pub fn pin_cores(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }

    /// Most tasks queued at once before `submit` returns [`SubmitError::Full`](crate::SubmitError::Full) (default 65 536).
    pub fn capacity(mut self, n: usize) -> Self {
        self.capacity = n;
        self
    }

    /// How often the control thread ticks (default 10 ms; `None`: no control thread, tick by
    /// hand with [`Router::tick`]).
    pub fn control_interval(mut self, every: Option<Duration>) -> Self {
        self.control_interval = every;
        self
    }

    /// How long a task whose feasible routes are all full may wait for capacity, per class
    /// (critical, high, normal, low), before it is shed with [`RouteError::Saturated`](crate::RouteError::Saturated)
    /// (default 1 s, 500 ms, 200 ms, 50 ms; zero sheds at once). Waiting tasks are retried
    /// highest class first, so lower classes are shed first under a sustained overload. A
    /// task with a latency budget ([`Task::max_latency_ms`](crate::Task::max_latency_ms)) may
    /// wait up to half of it when that is longer than its class's wait (unless the class's
    /// wait is zero).
    pub fn saturation_wait(mut self, per_class: impl Into<crate::per::PerClass<Duration>>) -> Self {
        self.saturation_wait = per_class.into().into_array();
        self
    }

    /// `tenant`'s share while tasks wait for capacity (default 1): inside a class, waiting
    /// tasks are served by token work per tenant (see [`FairQueue`](crate::fairness::FairQueue)), and
    /// a tenant of weight 2 gets twice the token work of a tenant of weight 1 while both wait.
    /// Setting a tenant twice keeps the last weight.
    pub fn tenant_weight(mut self, tenant: TenantId, weight: u32) -> Self {
        self.tenant_weights.retain(|&(t, _)| t != tenant);
        self.tenant_weights.push((tenant, weight));
        self
    }

    /// Empty polls a worker makes (with exponential back-off) before it parks (default 64).
    /// They follow work only: a worker that napped because all it had were tasks waiting
    /// for room goes from one nap to the next retry without polling again.
    pub fn spin_rounds(mut self, n: u32) -> Self {
        self.spin_rounds = n;
        self
    }

    /// Starts the workers (and the control thread, if an interval is set).
    ///
    /// # Errors
    /// [`BuildError::InvalidSetting`] for zero workers, capacity or tenant weight;
    /// [`BuildError::Spawn`].
    pub fn build<B: Backend>(self, backend: B) -> Result<Dispatcher<B>, BuildError> {
        if self.workers == 0 {
            return Err(BuildError::InvalidSetting {
                field: "workers",
                reason: "must be at least 1",
            });
        }
        if self.capacity == 0 {
            return Err(BuildError::InvalidSetting {
                field: "capacity",
                reason: "must be at least 1",
            });
        }
        if self.control_interval == Some(Duration::ZERO) {
            return Err(BuildError::InvalidSetting {
                field: "control_interval",
                reason: "must be positive",
            });
        }
        let mut tenant_weights = Vec::with_capacity(self.tenant_weights.len());
        for &(tenant, weight) in &self.tenant_weights {
            let Some(weight) = NonZeroU32::new(weight) else {
                return Err(BuildError::InvalidSetting {
                    field: "tenant_weight",
                    reason: "must be at least 1",
                });
            };
            tenant_weights.push((tenant, weight));
        }
        let locals: Vec<Worker<Job<B::Payload>>> =
            (0..self.workers).map(|_| Worker::new_fifo()).collect();
        let parkers: Vec<Parker> = (0..self.workers).map(|_| Parker::new()).collect();
        let shared = Arc::new(Shared {
            router: self.router.clone(),
            backend,
            injector: Injector::new(),
            stealers: locals.iter().map(Worker::stealer).collect(),
            sleeping: (0..self.workers)
                .map(|_| CachePadded::new(AtomicBool::new(false)))
                .collect(),
            unparkers: parkers.iter().map(|p| p.unparker().clone()).collect(),
            sleepers: CachePadded::new(AtomicUsize::new(0)),
            queued: CachePadded::new(AtomicUsize::new(0)),
            capacity: self.capacity,
            shutdown: AtomicBool::new(false),
            stats: (0..self.workers)
                .map(|_| CachePadded::new(WorkerStats::new()))
                .collect(),
            callers: (0..self.workers.max(1) * 2)
                .map(|_| CachePadded::new(WorkerStats::new()))
                .collect(),
            saturated: CachePadded::new(AtomicUsize::new(0)),
            stopwatch: crate::clock::Stopwatch::new(),
            id: crate::sync::unique_id(),
            refused: AtomicU64::new(0),
            spin_rounds: self.spin_rounds,
            saturation_wait: self.saturation_wait,
            tenant_weights: tenant_weights.into(),
        });
        let cores = if self.pin {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut handles = Vec::with_capacity(self.workers + 1);
        let stop_control = Arc::new(AtomicBool::new(false));
        let mut started = Ok(());
        for (i, (local, parker)) in locals.into_iter().zip(parkers).enumerate() {
            let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
            let sh = Arc::clone(&shared);
            match crate::sync::spawn_named(format!("switchyard-worker-{i}"), move || {
                worker::run(i, sh, local, parker, core)
            }) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    started = Err(BuildError::Spawn(e));
                    break;
                }
            }
        }
        if let (Ok(()), Some(every)) = (&started, self.control_interval) {
            let router = self.router.clone();
            let stop = Arc::clone(&stop_control);
            match crate::sync::spawn_named("switchyard-control".into(), move || {
                control_loop(router, stop, every)
            }) {
                Ok(h) => handles.push(h),
                Err(e) => started = Err(BuildError::Spawn(e)),
            }
        }
        let d = Dispatcher {
            shared,
            handles: Mutex::new(handles),
            stop_control,
        };
        match started {
            Ok(()) => Ok(d),
            Err(e) => {
                d.shutdown();
                Err(e)
            }
        }
    }
}

fn control_loop(router: Router, stop: Arc<AtomicBool>, every: Duration) {
    // Acquire: pairs with the Release store in `shutdown`; nothing else rides on it.
    while !stop.load(Ordering::Acquire) {
        crate::sync::park_timeout(every);
        if stop.load(Ordering::Acquire) {
            break;
        }
        router.tick();
    }
}
