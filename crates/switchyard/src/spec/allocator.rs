//! The seed's `ResourceAllocator`: allocate, monitor, adjust and release the resources a
//! task holds on its route.
//!
//! An allocation is a [`Lease`]: taking it reserves the route's memory, CPU, GPU share,
//! tokens in flight and token rate in one CAS per ledger word per stage, against the
//! capacity the task's class may fill ([`Headroom`](crate::Headroom)). Releasing it is
//! idempotent and dropping it releases too. With
//! [`RouterBuilder::lease_timeout_ms`](crate::RouterBuilder::lease_timeout_ms) set, a lease
//! held past its timeout is reclaimed by the control thread; see `docs/admission.md`.
use crate::error::{AdjustError, RouteError};
use crate::lease::Lease;
use crate::model::{AllocationResult, ResourceMap, RouteOptions, Task};
use crate::node::Amounts;
use crate::router::RouteReader;

/// What an allocation holds and how its node is doing (the seed's `ResourceMetrics`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ResourceMetrics {
    /// What the allocation holds, summed over its stages (tokens: the largest stage's).
    pub allocated: ResourceMap,
    /// What the task really uses. [`monitor_usage`](ResourceAllocator::monitor_usage) fills
    /// it with `allocated`; a gateway that learns the real figure (a backend's KV usage, the
    /// tokens generated so far) writes it here and passes the metrics to
    /// [`adjust_allocation`](ResourceAllocator::adjust_allocation).
    pub used: ResourceMap,
    /// The head node's utilisation now: the largest of its in-flight, memory and token
    /// shares (0–1).
    pub node_utilization: f64,
    /// Time since the allocation was taken, ms (0 when leases do not time out: no clock is
    /// read for them).
    pub held_ms: f64,
    /// Time left before the control thread may reclaim it, ms (`None`: no timeout).
    pub remaining_ms: Option<f64>,
    /// Whether it still holds its resources (`false` once released or reclaimed).
    pub held: bool,
}

/// The seed's `ResourceAllocator`, implemented by [`RouteReader`].
///
/// # Examples
/// ```
/// use switchyard::{NodeSpec, Router, Task};
/// use switchyard::spec::{ResourceAllocator, RoutingEngine};
/// let router = Router::builder()
///     .node(NodeSpec::new("a").memory(1000, 1.0).max_concurrency(8))
///     .build()?;
/// let mut reader = router.reader();
/// let task = Task::new(1, 100, 100); // 200 tokens: 1 MB per 1000 tokens → 1 MB
/// let routes = reader.calculate_routes(&task)?;
/// let mut lease = reader.allocate_resources(&routes, &task)?;
/// let mut m = reader.monitor_usage(&lease);
/// assert_eq!(m.allocated.memory_mb, 1);
/// m.used.memory_mb = 40; // the backend reports a larger KV footprint
/// let now = reader.adjust_allocation(&mut lease, &m)?;
/// assert_eq!(now.allocated.memory_mb, 40);
/// reader.release_resources(&mut lease);
/// reader.release_resources(&mut lease); // idempotent
/// assert!(router.ledgers_are_zero());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait ResourceAllocator {
    /// Reserves resources on the first route of `routes` that has room for `task`.
    ///
    /// # Errors
    /// [`RouteError::Saturated`] when none has, [`RouteError::StaleRoute`] when the routes
    /// are gone from the fleet.
    fn allocate_resources(
        &mut self,
        routes: &RouteOptions,
        task: &Task,
    ) -> Result<Lease, RouteError>;

    /// What `allocation` holds now, with its head node's utilisation and its age.
    fn monitor_usage(&mut self, allocation: &Lease) -> ResourceMetrics;

    /// Grows or shrinks `allocation` so it holds `metrics.used`: the difference from
    /// `metrics.allocated` is applied to the route's first stage (the node that holds the
    /// task's live state). Growth must fit the node's capacity for the allocation's class.
    ///
    /// # Errors
    /// [`AdjustError::Saturated`] when the growth does not fit (nothing changed);
    /// [`AdjustError::Released`] when the allocation was released or reclaimed.
    fn adjust_allocation(
        &mut self,
        allocation: &mut Lease,
        metrics: &ResourceMetrics,
    ) -> Result<AllocationResult, AdjustError>;

    /// Returns everything `allocation` holds. Idempotent; dropping the lease does the same.
    fn release_resources(&mut self, allocation: &mut Lease);
}

impl ResourceAllocator for RouteReader {
    fn allocate_resources(
        &mut self,
        routes: &RouteOptions,
        task: &Task,
    ) -> Result<Lease, RouteError> {
        crate::spec::RoutingEngine::optimize_allocation(self, routes, task)
    }

    fn monitor_usage(&mut self, allocation: &Lease) -> ResourceMetrics {
        let allocated = allocation.allocation().allocated;
        let table = self.snapshot();
        let node_utilization = allocation.head().map_or(0.0, |(live, ..)| {
            let (w0, w1) = live.load();
            table
                .node_slot
                .get(live.id.0 as usize)
                .and_then(|&s| table.nodes.get(s as usize))
                .map_or(0.0, |n| {
                    Amounts::unpack(w0, w1).utilization(&Amounts::unpack(n.cap0, n.cap1))
                })
        });
        let (held_ms, remaining_ms) = match allocation.deadline() {
            Some((start, deadline)) => {
                let now = table.now_ns();
                (
                    now.saturating_sub(start) as f64 / 1e6,
                    Some(deadline.saturating_sub(now) as f64 / 1e6),
                )
            }
            None => (0.0, None),
        };
        ResourceMetrics {
            allocated,
            used: allocated,
            node_utilization,
            held_ms,
            remaining_ms,
            held: allocation.is_held(),
        }
    }

    fn adjust_allocation(
        &mut self,
        allocation: &mut Lease,
        metrics: &ResourceMetrics,
    ) -> Result<AllocationResult, AdjustError> {
        let Some((live, d0, d1)) = allocation.head() else {
            return Err(AdjustError::Released);
        };
        let id = live.id;
        let old = Amounts::unpack(d0, d1);
        let delta = |held: u64, from: u32, to: u32| (held + to as u64).saturating_sub(from as u64);
        let (a, u) = (metrics.allocated, metrics.used);
        let new = Amounts {
            inflight: old.inflight,
            memory_mb: delta(old.memory_mb, a.memory_mb, u.memory_mb),
            tokens: delta(old.tokens, a.tokens, u.tokens),
            cpu_millis: delta(old.cpu_millis, a.cpu_millis, u.cpu_millis),
            gpu_millis: delta(old.gpu_millis, a.gpu_millis, u.gpu_millis),
        };
        let class = allocation.priority().index();
        let table = self.snapshot();
        // A node gone from the fleet can still shrink what it holds, never grow.
        let (cap0, cap1) = table
            .node_slot
            .get(id.0 as usize)
            .and_then(|&s| table.nodes.get(s as usize))
            .map_or((d0, d1), |n| (n.cap0_class[class], n.cap1));
        // Fields past their ledger width can never fit: refuse rather than wrap.
        const M24: u64 = crate::node::MAX_LEDGER_24 as u64;
        let m32 = u32::MAX as u64;
        if new.memory_mb > M24 || new.tokens > M24 || new.cpu_millis > m32 || new.gpu_millis > m32 {
            return Err(AdjustError::Saturated);
        }
        let (n0, n1) = new.pack();
        allocation.resize_head(n0, n1, cap0, cap1)?;
        Ok(allocation.allocation())
    }

    fn release_resources(&mut self, allocation: &mut Lease) {
        allocation.release_now();
    }
}
