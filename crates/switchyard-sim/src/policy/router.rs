//! The switchyard router itself as a simulated policy.
use switchyard::Headroom;
use switchyard::Lease;
use switchyard::ManualClock;
use switchyard::{ConfigError, RouteError};
use switchyard::{Outcome, RouteOptions};
use switchyard::{RouteReader, Router};

use super::{policy_seed, Decision, Policy, View};
use crate::fleet::FleetConfig;
use crate::workload::SimTask;

/// Virtual time between [`Router::tick`]s in the `switchyard` policy, ns.
pub const SWITCHYARD_TICK_NS: u64 = 10_000_000;

/// The real library router: one [`RouteReader`] on a [`Router`] built from the fleet with a
/// [`ManualClock`] the simulator advances. Each pick is `route_into`, whose [`Lease`] is held
/// until the task finishes in virtual time and is then ended with [`Lease::complete`] and the
/// task's latency (what the dispatcher's `Ticket::complete` does), so the router learns from
/// outcomes as in a gateway. [`Router::tick`] runs every 10 ms of virtual time.
///
/// Errors map to decisions: `Saturated`, `NoHealthyRoute` and `StaleRoute` wait at the
/// gateway; `NoCapableRoute` and `EmptyFleet` fail; `ConstraintsUnsatisfiable` (no route
/// predicted within the task's `max_latency_ms`) is shed.
#[derive(Debug)]
pub struct SwitchyardPolicy {
    router: Router,
    reader: RouteReader,
    clock: ManualClock,
    options: RouteOptions,
    leases: Vec<Option<Lease>>,
}

impl SwitchyardPolicy {
    /// A router over `fleet`, seeded by `seed` (through [`policy_seed`]), on a fresh
    /// [`ManualClock`].
    ///
    /// # Errors
    /// The fleet's first [`ConfigError`].
    pub fn new(fleet: &FleetConfig, seed: u64) -> Result<Self, ConfigError> {
        Self::with_headroom(fleet, seed, Headroom::default())
    }

    /// [`new`](Self::new) with the router's per-class `headroom`.
    ///
    /// # Errors
    /// The fleet's first [`ConfigError`].
    pub fn with_headroom(
        fleet: &FleetConfig,
        seed: u64,
        headroom: Headroom,
    ) -> Result<Self, ConfigError> {
        let clock = ManualClock::new();
        let router = Router::builder()
            .capabilities(fleet.capabilities.iter().cloned())
            .nodes(fleet.nodes.iter().cloned())
            .weights(fleet.weights)
            .clock(std::sync::Arc::new(clock.clone()))
            .seed(policy_seed(seed, 3))
            .headroom(headroom)
            .build()?;
        let mut reader = router.reader();
        reader.reseed(policy_seed(seed, 4));
        Ok(Self {
            router,
            reader,
            clock,
            options: RouteOptions::default(),
            leases: Vec::new(),
        })
    }

    /// The router (e.g. to check [`Router::ledgers_are_zero`] after a run).
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// Leases still held.
    pub fn leases_held(&self) -> usize {
        self.leases.iter().filter(|l| l.is_some()).count()
    }
}

impl Policy for SwitchyardPolicy {
    fn name(&self) -> &str {
        "switchyard"
    }

    fn pick(&mut self, task: &SimTask, view: &View<'_>) -> Decision {
        self.clock.set_ns(view.now_ns);
        match self.reader.route_into(&task.task, &mut self.options) {
            Ok(lease) => {
                let node = lease.route().head().0 as usize;
                if self.leases.len() <= task.index {
                    self.leases.resize_with(task.index + 1, || None);
                }
                self.leases[task.index] = Some(lease);
                Decision::Dispatch(node)
            }
            Err(RouteError::Saturated | RouteError::NoHealthyRoute | RouteError::StaleRoute) => {
                Decision::Wait
            }
            Err(RouteError::ConstraintsUnsatisfiable | RouteError::TenantRateLimited) => {
                Decision::Shed
            }
            // NoCapableRoute, EmptyFleet, and any obstacle a later version adds.
            Err(_) => Decision::Fail,
        }
    }

    /// Releases the lease unused (dropping it returns its reservation).
    fn withdraw(&mut self, task: &SimTask) {
        if let Some(slot) = self.leases.get_mut(task.index) {
            drop(slot.take());
        }
    }

    fn on_finish(&mut self, task: &SimTask, _node: usize, latency_ms: f64, now_ns: u64) {
        self.clock.set_ns(now_ns);
        if let Some(lease) = self.leases.get_mut(task.index).and_then(Option::take) {
            lease.complete(Outcome::Success, latency_ms);
        }
    }

    fn tick_interval_ns(&self) -> Option<u64> {
        Some(SWITCHYARD_TICK_NS)
    }

    fn on_tick(&mut self, now_ns: u64) {
        self.clock.set_ns(now_ns);
        self.router.tick();
    }
}
