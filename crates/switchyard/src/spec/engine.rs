//! The seed's `RoutingEngine`, implemented by [`RouteReader`] (the fast path) and `&Router`.
use crate::error::RouteError;
use crate::lease::Lease;
use crate::model::{ModelChain, RouteOptions, Task};
use crate::rng::with_rng;
use crate::router::{RouteReader, Router};
use crate::routing::{reserve, select};

/// The seed's `RoutingEngine`: plan routes, reserve the best feasible one, validate a route.
pub trait RoutingEngine {
    /// Primary route plus alternatives on distinct routes, with costs and confidences.
    ///
    /// # Errors
    /// A [`RouteError`] naming the first obstacle when no route is feasible.
    fn calculate_routes(&mut self, task: &Task) -> Result<RouteOptions, RouteError>;

    /// Reserves the task's resources on the first route of `options` that still has room.
    ///
    /// # Errors
    /// [`RouteError::Saturated`] when none has room, [`RouteError::StaleRoute`] when none
    /// is still in the fleet.
    fn optimize_allocation(
        &mut self,
        options: &RouteOptions,
        task: &Task,
    ) -> Result<Lease, RouteError>;

    /// Whether `route` is still feasible for `task` under the current snapshot.
    fn validate_route(&mut self, route: &ModelChain, task: &Task) -> bool;
}

/// `&Router` routes through a guard load per call (≈ 20 ns); a [`RouteReader`] is faster.
impl RoutingEngine for &Router {
    fn calculate_routes(&mut self, task: &Task) -> Result<RouteOptions, RouteError> {
        let t = self.inner.table.load();
        let mut out = RouteOptions::default();
        with_rng(|rng| select::plan(&t, task, rng, &mut out))?;
        Ok(out)
    }

    fn optimize_allocation(
        &mut self,
        options: &RouteOptions,
        task: &Task,
    ) -> Result<Lease, RouteError> {
        let t = self.inner.table.load();
        reserve::allocate(&t, options, task, reserve::thread_lane())
    }

    fn validate_route(&mut self, route: &ModelChain, task: &Task) -> bool {
        select::validate(&self.inner.table.load(), route, task)
    }
}

impl RoutingEngine for RouteReader {
    fn calculate_routes(&mut self, task: &Task) -> Result<RouteOptions, RouteError> {
        let table = self.cache.load();
        let mut out = RouteOptions::default();
        select::plan(table, task, &mut self.rng, &mut out)?;
        Ok(out)
    }

    fn optimize_allocation(
        &mut self,
        options: &RouteOptions,
        task: &Task,
    ) -> Result<Lease, RouteError> {
        let table = self.cache.load();
        reserve::allocate(table, options, task, self.lane)
    }

    fn validate_route(&mut self, route: &ModelChain, task: &Task) -> bool {
        select::validate(self.cache.load(), route, task)
    }
}
