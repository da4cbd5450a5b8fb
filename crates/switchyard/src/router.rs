//! [`Router`]: the routing engine, its snapshot and its control loop, shareable across threads.
use crate::capability::CapSet;
use crate::clock::{Clock, SystemClock};
use crate::control::{Controller, TickReport};
use crate::error::{ConfigError, RouteError};
use crate::health::HealthPolicy;
use crate::lease::Lease;
use crate::model::{HealthStatus, NodeId, RouteOptions, Task};
use crate::node::{ChainSpec, NodeSpec};
use crate::rng::Rng;
use crate::routing::table::{RoutingTable, ScoringWeights};
use crate::routing::{reserve, select};
use crate::sync::{Arc, AtomicU64, Mutex, Ordering, SnapshotCell, SnapshotReader};

/// Lease records when timeouts are on and the builder names no number.
const DEFAULT_LEASE_SLOTS: usize = 16_384;

/// Shards of the lease slab: two per core, a power of two, at most 64 (two under loom, so
/// its models reach the pop that moves on to another shard).
fn slab_shards() -> usize {
    if cfg!(switchyard_loom) {
        return 2;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (2 * cores).next_power_of_two().min(64)
}

#[derive(Debug)]
pub(crate) struct RouterInner {
    pub(crate) table: SnapshotCell<RoutingTable>,
    control: Mutex<Controller>,
    pub(crate) clock: std::sync::Arc<dyn Clock>,
    seed: AtomicU64,
    pub(crate) retry: crate::retry::RetryBudget,
}

/// The routing engine with its fleet: cheap to clone, shareable between threads.
///
/// Reads take the current snapshot wait-free; fleet changes are validated at once and
/// published by the next [`tick`](Router::tick) (the dispatcher's control thread ticks on its
/// own; tests and simulations tick by hand against a [`ManualClock`](crate::ManualClock)).
///
/// # Examples
/// ```
/// use switchyard::{NodeSpec, Router, Task};
/// use switchyard::spec::RoutingEngine;
/// let router = Router::builder()
///     .capabilities(["chat", "code"])
///     .node(NodeSpec::new("a").capabilities(["chat", "code"]))
///     .node(NodeSpec::new("b").capabilities(["chat"]))
///     .build()?;
/// let code = router.resolve(&["code"])?;
/// let task = Task::new(1, 500, 50).require(code);
/// let mut reader = router.reader();
/// let routes = reader.calculate_routes(&task)?;
/// assert_eq!(router.snapshot().route_name(routes.primary().route.route), Some("a"));
/// let lease = reader.optimize_allocation(&routes, &task)?;
/// assert_eq!(router.in_flight(), 1);
/// drop(lease);
/// assert_eq!(router.in_flight(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Router {
    pub(crate) inner: Arc<RouterInner>,
}

/// Builds a [`Router`].
#[derive(Debug, Default)]
pub struct RouterBuilder {
    capabilities: Vec<String>,
    nodes: Vec<NodeSpec>,
    chains: Vec<ChainSpec>,
    weights: ScoringWeights,
    clock: Option<std::sync::Arc<dyn Clock>>,
    seed: u64,
    lease_timeout_ms: u64,
    lease_slots: usize,
    health: HealthPolicy,
    retry: crate::retry::RetryPolicy,
    headroom: crate::routing::Headroom,
    tenant_rates: Vec<(crate::model::TenantId, f64, f64)>,
}

impl RouterBuilder {
    /// Limits a tenant's tokens per second (input plus estimated output, settled to the
    /// actual output on completion), with a burst of `burst_seconds` worth. A task of a
    /// tenant over its rate is refused with [`RouteError::TenantRateLimited`].
    pub fn tenant_rate(
        mut self,
        tenant: crate::model::TenantId,
        per_second: f64,
        burst_seconds: f64,
    ) -> Self {
        self.tenant_rates.push((tenant, per_second, burst_seconds));
        self
    }

    /// Sets the capacity share each priority class may fill (default 100/95/85/75 %).
    pub fn headroom(mut self, headroom: crate::routing::Headroom) -> Self {
        self.headroom = headroom;
        self
    }

    /// Sets how failed tasks are retried ([`Router::fail_over`]).
    pub fn retry(mut self, policy: crate::retry::RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Sets the health policy (ejection, probing, slow start, panic threshold).
    pub fn health(mut self, policy: HealthPolicy) -> Self {
        self.health = policy;
        self
    }

    /// Declares capability names (interned in order).
    pub fn capabilities<I, S>(mut self, caps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.capabilities.extend(caps.into_iter().map(Into::into));
        self
    }

    /// Adds a node.
    pub fn node(mut self, spec: NodeSpec) -> Self {
        self.nodes.push(spec);
        self
    }

    /// Adds nodes.
    pub fn nodes<I: IntoIterator<Item = NodeSpec>>(mut self, specs: I) -> Self {
        self.nodes.extend(specs);
        self
    }

    /// Adds a chain (its stages must be nodes of this builder).
    pub fn chain(mut self, spec: ChainSpec) -> Self {
        self.chains.push(spec);
        self
    }

    /// Sets the scoring weights.
    pub fn weights(mut self, w: ScoringWeights) -> Self {
        self.weights = w;
        self
    }

    /// Sets the logical clock (default: [`SystemClock`]).
    pub fn clock(mut self, clock: std::sync::Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Seeds the pickers' random streams (default 0), for reproducible runs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Leases (and the tickets that hold them) older than `ms` are reclaimed by the control
    /// thread's next tick: their resources return to the ledgers and a timeout is recorded on
    /// their nodes, so a completion that never comes cannot hold capacity forever. A late
    /// completion of a reclaimed lease is counted
    /// ([`Router::lease_counts`]) and returns nothing twice. 0 (the default) turns timeouts
    /// off; then leases are not recorded at all and cost nothing extra.
    ///
    /// Each lease then takes one record of a fixed slab ([`lease_slots`](Self::lease_slots)).
    pub fn lease_timeout_ms(mut self, ms: u64) -> Self {
        self.lease_timeout_ms = ms;
        self
    }

    /// Records for outstanding leases when timeouts are on (default 16 384, 120 bytes
    /// each): with every record taken, routing fails with `Saturated`.
    pub fn lease_slots(mut self, n: usize) -> Self {
        self.lease_slots = n;
        self
    }

    /// Validates everything and publishes the first snapshot (epoch 1). An empty fleet is
    /// allowed (nodes can be added later); routing on it fails with
    /// [`RouteError::EmptyFleet`].
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn build(self) -> Result<Router, ConfigError> {
        let mut ctl = Controller::new(Default::default(), self.weights)?;
        for c in &self.capabilities {
            ctl.declare_capability(c)?;
        }
        // Before the nodes: each node's live state keeps the router's lease state.
        if self.lease_timeout_ms > 0 {
            let slots = if self.lease_slots == 0 {
                DEFAULT_LEASE_SLOTS
            } else {
                self.lease_slots
            };
            ctl.shared = Arc::new(crate::lease::slab::LeaseShared::new(Some(
                crate::lease::slab::LeaseSlab::new(slots, self.lease_timeout_ms, slab_shards()),
            )));
        }
        for n in self.nodes {
            ctl.add_node(n)?;
        }
        for c in self.chains {
            ctl.add_chain(c)?;
        }
        ctl.set_policy(self.health)?;
        let clock = self
            .clock
            .unwrap_or_else(|| std::sync::Arc::new(SystemClock::default()));
        ctl.clock = Some(clock.clone());
        ctl.set_headroom(self.headroom)?;
        for (t, rate, burst) in self.tenant_rates {
            ctl.set_tenant_rate(t, crate::tenant::TenantLimit::new(t, rate, burst)?);
        }
        self.retry.validate()?;
        let cell = SnapshotCell::new(Arc::new(RoutingTable::build(
            Default::default(),
            0,
            Arc::new(ctl.registry().clone()),
            std::iter::empty(),
            &[],
            ScoringWeights::default(),
            Default::default(),
            Default::default(),
        )));
        ctl.publish(&cell);
        Ok(Router {
            inner: Arc::new(RouterInner {
                table: cell,
                control: Mutex::new(ctl),
                clock,
                seed: AtomicU64::new(self.seed),
                retry: crate::retry::RetryBudget::new(self.retry),
            }),
        })
    }
}

impl Router {
    /// A builder.
    pub fn builder() -> RouterBuilder {
        RouterBuilder::default()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<RoutingTable> {
        self.inner.table.load_full()
    }

    /// Resolves capability names against the current snapshot.
    ///
    /// # Errors
    /// [`ConfigError::UnknownCapability`] for a name never declared.
    pub fn resolve<S: AsRef<str>>(&self, names: &[S]) -> Result<CapSet, ConfigError> {
        self.inner.table.load().registry.resolve(names)
    }

    /// A per-thread reader with a cached snapshot and its own random stream: what workers use.
    pub fn reader(&self) -> RouteReader {
        // Relaxed: a counter that only needs distinct values.
        let n = self.inner.seed.fetch_add(1, Ordering::Relaxed);
        RouteReader {
            router: self.clone(),
            cache: self.inner.table.reader(),
            rng: Rng::new(n),
            lane: n as usize,
        }
    }

    /// The logical clock.
    pub fn clock(&self) -> &std::sync::Arc<dyn Clock> {
        &self.inner.clock
    }

    pub(crate) fn control(&self) -> impl std::ops::DerefMut<Target = Controller> + '_ {
        // A panic while holding the control lock cannot leave the controller half-changed in
        // a way later calls can't handle, so recover from poisoning instead of panicking.
        self.inner.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Declares a capability name (published by the next tick).
    ///
    /// # Errors
    /// [`ConfigError::TooManyCapabilities`] or [`ConfigError::InvalidName`].
    pub fn declare_capability(&self, name: &str) -> Result<usize, ConfigError> {
        self.control().declare_capability(name)
    }

    /// Adds a node (published by the next tick).
    ///
    /// # Errors
    /// The first problem with the spec.
    pub fn add_node(&self, spec: NodeSpec) -> Result<NodeId, ConfigError> {
        self.control().add_node(spec)
    }

    /// Replaces a node's spec, keeping its live counters (published by the next tick).
    ///
    /// # Errors
    /// [`ConfigError::UnknownNode`] or the first problem with the spec.
    pub fn update_node(&self, spec: NodeSpec) -> Result<(), ConfigError> {
        self.control().update_node(spec)
    }

    /// Removes a node; its outstanding leases still release into its own ledger.
    ///
    /// # Errors
    /// [`ConfigError::UnknownNode`].
    pub fn remove_node(&self, name: &str) -> Result<(), ConfigError> {
        self.control().remove_node(name)
    }

    /// Adds a chain.
    ///
    /// # Errors
    /// [`ConfigError::BadChain`], [`ConfigError::UnknownNode`], ….
    pub fn add_chain(&self, spec: ChainSpec) -> Result<(), ConfigError> {
        self.control().add_chain(spec)
    }

    /// Removes a chain.
    ///
    /// # Errors
    /// [`ConfigError::UnknownNode`] when no chain has that name.
    pub fn remove_chain(&self, name: &str) -> Result<(), ConfigError> {
        self.control().remove_chain(name)
    }

    /// Replaces the scoring weights.
    ///
    /// # Errors
    /// [`ConfigError::InvalidNumber`] for a NaN, negative or out-of-range weight.
    pub fn set_weights(&self, w: ScoringWeights) -> Result<(), ConfigError> {
        self.control().set_weights(w)
    }

    /// Sets a node's measured-quality factor on its weight (see
    /// [`CapabilityAwareRouter`](crate::spec::CapabilityAwareRouter)).
    pub(crate) fn set_quality(&self, name: &str, quality: f64) -> Result<(), ConfigError> {
        self.control().set_quality(name, quality)
    }

    /// Replaces the per-class headroom (published by the next tick).
    ///
    /// # Errors
    /// [`ConfigError::InvalidNumber`] for a share outside (0, 1] or a share above a higher
    /// class's.
    pub fn set_headroom(&self, headroom: crate::routing::Headroom) -> Result<(), ConfigError> {
        self.control().set_headroom(headroom)
    }

    /// Replaces the health policy.
    ///
    /// # Errors
    /// [`ConfigError::InvalidNumber`] / [`ConfigError::InvalidSetting`] for a bad threshold.
    pub fn set_health_policy(&self, policy: HealthPolicy) -> Result<(), ConfigError> {
        self.control().set_policy(policy)
    }

    /// Sets a node's health verdict by hand (e.g. from an external health check):
    /// `Failed` or `Degraded` pin it until set back to `Healthy`, which returns the node to
    /// the automatic verdicts.
    ///
    /// # Errors
    /// [`ConfigError::UnknownNode`].
    pub fn set_health(&self, name: &str, status: HealthStatus) -> Result<(), ConfigError> {
        self.control().set_status(name, status)
    }

    /// Records a failed attempt and moves the task to a route it has not tried: the failure
    /// is recorded on the nodes that served the attempt, the new route is planned on the current snapshot and reserved, and the retry
    /// is paid from the retry budget.
    ///
    /// # Errors
    /// A [`FailoverError`](crate::FailoverError) (the task ends, counted once as
    /// `failure.outcome`) when the outcome is not retryable, or attempts, budget or routes
    /// run out.
    pub fn fail_over(
        &self,
        ticket: crate::lease::ticket::Ticket,
        failure: crate::lease::ticket::Completion,
    ) -> Result<crate::failover::Retry, crate::failover::FailoverError> {
        let table = self.inner.table.load();
        crate::failover::fail_over(&table, &self.inner.retry, ticket, failure)
    }

    /// Takes a node out of routing for `pause` (what a backend's 429 `Retry-After` asks),
    /// without counting it as a failure or an ejection: no new task goes there until the
    /// first control tick after the pause ends. A longer pause already in force is kept.
    /// Takes effect on the next tick (or [`Router::tick`]).
    ///
    /// # Errors
    /// [`ConfigError::UnknownNode`].
    pub fn pause_node(&self, name: &str, pause: std::time::Duration) -> Result<(), ConfigError> {
        let ns = u64::try_from(pause.as_nanos()).unwrap_or(u64::MAX);
        let until = self.inner.clock.now_ns().saturating_add(ns);
        self.control().pause(name, until)
    }

    /// Sets the work other routers (other gateway replicas in front of the same servers) hold
    /// on a node: `in_flight` tasks and `tokens` in flight. From the next tick's snapshot on,
    /// it is added into the node's utilisation in the score and taken out of the capacity
    /// each class may fill (admission), as if this router held it. `(0, 0)` clears it. The
    /// hot path only reads it from the immutable snapshot: no atomic, no allocation.
    ///
    /// # Errors
    /// [`ConfigError::UnknownNode`].
    pub fn set_external_load(
        &self,
        name: &str,
        in_flight: u64,
        tokens: u64,
    ) -> Result<(), ConfigError> {
        self.control().set_external(name, in_flight, tokens)
    }

    /// The seed's `NodeHealth` of every node: verdict, free capacity, latency EWMA, success
    /// rate (as of the last tick), efficiency (predicted over observed latency), error rate.
    pub fn node_health(&self) -> Vec<crate::model::NodeHealth> {
        self.control().health()
    }

    /// The node specs of the desired fleet.
    pub fn node_specs(&self) -> Vec<NodeSpec> {
        self.control().node_specs()
    }

    /// One control step: read live counters, recompute weights, publish a snapshot.
    pub fn tick(&self) -> TickReport {
        let mut ctl = self.control();
        self.tick_locked(&mut ctl)
    }

    /// [`tick`](Self::tick) with the control lock already held (a reload applies every
    /// change and publishes under one hold of it).
    pub(crate) fn tick_locked(&self, ctl: &mut Controller) -> TickReport {
        let clock = self.inner.clock.clone();
        let report = ctl.tick(&self.inner.table, &*clock);
        // The retry budget earns a share of what finished since the last tick.
        self.inner.retry.refill(ctl.finished_totals().iter().sum());
        report
    }

    /// Acts on a health incident (see [`HealthAwareRouting`](crate::spec::HealthAwareRouting)).
    pub(crate) fn incident(
        &self,
        name: &str,
        kind: crate::health::IncidentKind,
    ) -> Result<(), ConfigError> {
        let now = self.inner.clock.now_ns();
        self.control().incident(name, kind, now)
    }

    /// Sets a tenant's token-rate limit (tokens per second, 0 = none; burst in seconds),
    /// published by the next tick. The tenant's schedule carries over.
    ///
    /// # Errors
    /// [`ConfigError::InvalidSetting`] for a tenant id of [`MAX_TENANTS`](crate::limits::MAX_TENANTS)
    /// or more, or a rate or burst that is not a sane finite number.
    pub fn set_tenant_rate(
        &self,
        tenant: crate::model::TenantId,
        per_second: f64,
        burst_seconds: f64,
    ) -> Result<(), ConfigError> {
        let limit = crate::tenant::TenantLimit::new(tenant, per_second, burst_seconds)?;
        self.control().set_tenant_rate(tenant, limit);
        Ok(())
    }

    /// Leases reclaimed past their timeout so far, and late completions of reclaimed leases
    /// (both 0 when timeouts are off).
    pub fn lease_counts(&self) -> (u64, u64) {
        self.control()
            .shared
            .slab
            .as_ref()
            .map_or((0, 0), |s| s.counts())
    }

    /// Tasks in flight over every node, current and draining.
    pub fn in_flight(&self) -> u64 {
        self.live_nodes().iter().map(|n| n.in_flight).sum()
    }

    /// Whether every ledger of every node (current and draining) is back at zero.
    pub fn ledgers_are_zero(&self) -> bool {
        self.control()
            .live_nodes()
            .iter()
            .all(|(_, live, ..)| live.load() == (0, 0))
    }

    /// Tasks finished through tickets, by [`Outcome`](crate::Outcome) index, each counted
    /// once, over every node this router has had.
    pub fn finished(&self) -> crate::per::PerOutcome<u64> {
        self.control().finished_totals().into()
    }

    /// Live figures of every node, current then draining (takes the control lock briefly:
    /// for reports, not for the hot path).
    pub fn node_metrics(&self) -> Vec<crate::metrics::NodeMetrics> {
        self.live_nodes()
    }

    /// Fleet-wide balance now (the seed's `crate::model::BalanceMetrics`).
    pub fn balance_metrics(&self) -> crate::model::BalanceMetrics {
        let nodes: Vec<_> = self
            .node_metrics()
            .into_iter()
            .filter(|n| !n.draining)
            .collect();
        let specs = self.node_specs();
        let utils: Vec<f64> = nodes.iter().map(|n| n.utilization).collect();
        let deviation = crate::metrics::balance_deviation(&utils);
        let share = |used: f64, cap: f64| if cap > 0.0 { used / cap } else { 0.0 };
        let (mut mem, mut mem_cap, mut tok, mut tok_cap, mut inflight, mut conc) =
            (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
        for n in &nodes {
            if let Some(s) = specs.iter().find(|s| s.name == n.name) {
                mem += n.memory_mb as f64;
                mem_cap += s.memory_mb as f64;
                tok += n.tokens_in_flight as f64;
                tok_cap += s.max_tokens_in_flight as f64;
                inflight += n.in_flight as f64;
                conc += s.max_concurrency as f64;
            }
        }
        let health = self.node_health();
        let k = health.len().max(1) as f64;
        crate::model::BalanceMetrics {
            distribution_score: 1.0 / (1.0 + deviation),
            deviation,
            utilization: crate::model::ResourceUtilization {
                memory: share(mem, mem_cap),
                cpu: share(inflight, conc),
                token_usage: share(tok, tok_cap),
            },
            performance: crate::model::PerformanceMetrics {
                response_time_ms: health
                    .iter()
                    .map(|h| h.metrics.response_time_ms)
                    .sum::<f64>()
                    / k,
                success_rate: health.iter().map(|h| h.metrics.success_rate).sum::<f64>() / k,
                efficiency: health.iter().map(|h| h.metrics.efficiency).sum::<f64>() / k,
                errors: health.iter().map(|h| h.metrics.errors).sum(),
            },
        }
    }

    /// Estimated throughput of the serving fleet, tasks per second: each node's concurrency
    /// over its typical task time (its latency EWMA once it has one, else its model's time
    /// for a 1000-in / 100-out task).
    pub fn capacity_per_sec(&self) -> f64 {
        let metrics = self.node_metrics();
        let health = self.node_health();
        self.node_specs()
            .iter()
            .filter(|s| {
                health
                    .iter()
                    .any(|h| h.node == s.name && h.status != crate::model::HealthStatus::Failed)
            })
            .map(|s| {
                let ewma = metrics
                    .iter()
                    .find(|m| m.name == s.name)
                    .map_or(0.0, |m| m.latency_ewma_ms);
                let ms = if ewma > 0.0 {
                    ewma
                } else {
                    s.service_time_ms(1_000, 100)
                };
                s.max_concurrency as f64 * 1000.0 / ms.max(1e-3)
            })
            .sum()
    }

    pub(crate) fn live_nodes(&self) -> Vec<crate::metrics::NodeMetrics> {
        self.control()
            .live_nodes()
            .into_iter()
            .map(|(name, live, cap, draining)| {
                crate::metrics::NodeMetrics::read(&name, &live, &cap, draining)
            })
            .collect()
    }
}

/// A per-thread routing handle: a cached snapshot (≈ 1.4 ns a load) and its own PRNG.
///
/// Not `Sync`: give each thread its own, from [`Router::reader`].
#[derive(Debug)]
pub struct RouteReader {
    router: Router,
    pub(crate) cache: SnapshotReader<RoutingTable>,
    pub(crate) rng: Rng,
    /// Which shard of the lease slab this reader records its leases in first (readers are
    /// numbered as they are made, so readers on different threads use different shards).
    pub(crate) lane: usize,
}

impl RouteReader {
    /// Plans and reserves in one step on one snapshot: the dispatcher's hot path.
    ///
    /// # Errors
    /// As [`RoutingEngine::calculate_routes`](crate::spec::RoutingEngine::calculate_routes) and [`RoutingEngine::optimize_allocation`](crate::spec::RoutingEngine::optimize_allocation).
    #[inline]
    pub fn route(&mut self, task: &Task) -> Result<(RouteOptions, Lease), RouteError> {
        let mut options = RouteOptions::default();
        let lease = self.route_into(task, &mut options)?;
        Ok((options, lease))
    }

    /// As [`route`](Self::route), writing the routes into a buffer the caller reuses (no
    /// copy of the options on return).
    ///
    /// # Errors
    /// As [`route`](Self::route); `options` then holds nothing useful.
    #[inline]
    pub fn route_into(
        &mut self,
        task: &Task,
        options: &mut RouteOptions,
    ) -> Result<Lease, RouteError> {
        let table = self.cache.load();
        select::plan(table, task, &mut self.rng, options)?;
        reserve::allocate_planned(table, options, task, self.lane)
    }

    /// The router this reader reads.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The snapshot this reader currently sees (refreshed if a newer one was published).
    pub fn snapshot(&mut self) -> &Arc<RoutingTable> {
        self.cache.load()
    }

    /// Reseeds the reader's random stream (for reproducible simulations).
    pub fn reseed(&mut self, seed: u64) {
        self.rng = Rng::new(seed);
    }
}
