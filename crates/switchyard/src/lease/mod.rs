//! Leases: what a routed task holds on every stage of its route, released exactly once.
//!
//! [`Lease`] is the RAII reservation; [`slab`] records leases when they may time out, so the
//! control thread can reclaim them exactly once; [`ticket`] wraps a lease with its task for
//! the dispatcher and failover.
pub(crate) mod slab;
pub(crate) mod ticket;

use crate::lease::slab::{LeaseShared, LeaseSlab, SlotRef};
use crate::model::{
    AllocationResult, ModelChain, Priority, ResourceConstraints, ResourceMap, MAX_STAGES,
};
use crate::node::{Amounts, NodeLive};
use crate::sync::Arc;

#[derive(Debug)]
pub(crate) struct Part {
    pub(crate) live: Arc<NodeLive>,
    pub(crate) d0: u64,
    pub(crate) d1: u64,
    /// The node's GCRA interval when the lease was taken (0: no rate reserved).
    pub(crate) ns_per_token: u64,
}

/// Resources reserved on every stage of one route; released exactly once, when dropped.
///
/// A lease holds each stage's live state by its stable identity, not by snapshot slot, so a
/// node removed from the fleet while the lease is out still gets its resources back, and no
/// other node is charged for them.
#[derive(Debug)]
#[must_use = "a lease is released as soon as it is dropped; hold it while the task runs"]
pub struct Lease {
    pub(crate) parts: [Option<Part>; MAX_STAGES],
    pub(crate) route: ModelChain,
    pub(crate) predicted_ms: f64,
    /// What it holds, summed over its stages (tokens: the largest stage's).
    pub(crate) allocated: ResourceMap,
    /// The head node's memory and CPU capacity (for `allocation().constraints`).
    pub(crate) head_memory_mb: u32,
    pub(crate) head_cpu_millis: u32,
    /// Output tokens estimated at pick time (what the token rate reserved beside the input).
    pub(crate) est_output: u32,
    pub(crate) priority: Priority,
    /// The task's latency limit, ms (`u32::MAX`: none), judged when the lease completes.
    pub(crate) slo_ms: u32,
    /// The lease's record in the slab, packed ([`SlotRef::NONE`]: not recorded).
    pub(crate) slot: u64,
    /// Clock ns when the lease was taken (0 when leases do not time out).
    pub(crate) start_ns: u64,
    /// The tenant charged, and its ns per token (0: no tenant rate).
    pub(crate) tenant: u32,
    pub(crate) tenant_ns_per_token: u32,
}

impl Lease {
    /// A lease for `task` that holds nothing yet (reservation fills it in place).
    #[inline]
    pub(crate) fn empty(task: &crate::model::Task) -> Lease {
        Lease {
            est_output: task.output_tokens,
            slot: SlotRef::NONE,
            start_ns: 0,
            tenant: 0,
            tenant_ns_per_token: 0,
            head_memory_mb: 0,
            head_cpu_millis: 0,
            parts: Default::default(),
            route: ModelChain::default(),
            predicted_ms: 0.0,
            allocated: ResourceMap::default(),
            priority: task.constraints.priority,
            slo_ms: task.constraints.max_latency_ms,
        }
    }

    /// The route the lease holds.
    pub fn route(&self) -> &ModelChain {
        &self.route
    }

    /// What it holds (the seed's `AllocationResult`).
    pub fn allocation(&self) -> AllocationResult {
        AllocationResult {
            allocated: self.allocated,
            constraints: ResourceConstraints {
                max_memory_mb: self.head_memory_mb,
                max_cpu: self.head_cpu_millis as f64 / 1000.0,
                max_tokens_per_second: 0.0,
            },
            priority: self.priority,
            timeout_ms: self.slab().map_or(0, |s| s.timeout_ns() / 1_000_000),
        }
    }

    /// The router's lease slab and tenant states, reached through the head stage's node
    /// (`None` once the lease holds nothing).
    fn shared(&self) -> Option<&LeaseShared> {
        self.parts[0].as_ref().map(|p| &*p.live.shared)
    }

    fn slab(&self) -> Option<&LeaseSlab> {
        self.shared().and_then(|s| s.slab.as_ref())
    }

    /// The registration, when the lease is recorded in the slab.
    fn registration(&self) -> Option<(&LeaseSlab, SlotRef)> {
        if self.slot == SlotRef::NONE {
            return None;
        }
        self.slab().map(|s| (s, SlotRef::unpack(self.slot)))
    }

    /// The latency predicted for the task at pick time, ms.
    pub fn predicted_latency_ms(&self) -> f64 {
        self.predicted_ms
    }

    /// The task's class.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// Releases now (the same as dropping the lease).
    pub fn release(self) {}

    /// Whether the lease still holds its resources: `false` once released, or once the
    /// control thread reclaimed it past its timeout.
    pub fn is_held(&self) -> bool {
        self.parts.iter().any(Option::is_some)
            && self
                .registration()
                .is_none_or(|(slab, r)| slab.is_active(r))
    }

    /// Ends the lease's slab record now, so the control thread can no longer reclaim it, and
    /// keeps its resources (the release, and the outcome, come later with `finish_as` or the
    /// drop). `false`: the control thread had reclaimed it already (it returned the resources
    /// and counted a timeout; the slab counts this end as late), and the lease now holds
    /// nothing. A lease without a record only checks that it still holds its stages.
    pub(crate) fn pin(&mut self) -> bool {
        if self.parts.iter().all(Option::is_none) {
            return false;
        }
        if self.end_registration() {
            return true;
        }
        self.parts = Default::default();
        false
    }

    /// Clock ns when the lease was taken, and when the control thread may reclaim it;
    /// `None` when leases do not time out.
    pub fn deadline(&self) -> Option<(u64, u64)> {
        self.registration().map(|(slab, _)| {
            (
                self.start_ns,
                self.start_ns.saturating_add(slab.timeout_ns()),
            )
        })
    }

    /// Ends the registration (if any); whether the caller should return the resources.
    fn end_registration(&mut self) -> bool {
        let ended = match self.registration() {
            Some((slab, r)) => slab.end(r),
            None => true,
        };
        self.slot = SlotRef::NONE;
        ended
    }

    /// Returns every stage's resources, once: later calls and the drop do nothing.
    pub(crate) fn release_now(&mut self) {
        if self.parts.iter().all(Option::is_none) {
            return;
        }
        let give_back = self.end_registration();
        for p in self.parts.iter_mut() {
            if let Some(p) = p.take() {
                if give_back {
                    p.live.release(p.d0, p.d1);
                }
            }
        }
    }

    /// The head stage's node and reservation, for adjustments.
    pub(crate) fn head(&self) -> Option<(&Arc<NodeLive>, u64, u64)> {
        self.parts[0].as_ref().map(|p| (&p.live, p.d0, p.d1))
    }

    /// Resizes the head stage's reservation to `d0`/`d1` (packed like the ledger) if the
    /// growth fits under `cap0`/`cap1`. Errors: the lease is no longer held, or it does not
    /// fit (then nothing changed).
    pub(crate) fn resize_head(
        &mut self,
        d0: u64,
        d1: u64,
        cap0: u64,
        cap1: u64,
    ) -> Result<(), crate::error::AdjustError> {
        use crate::error::AdjustError;
        let Some(p) = self.parts[0].as_ref() else {
            return Err(AdjustError::Released);
        };
        if let Some((slab, r)) = self.registration() {
            if !slab.begin_adjust(r) {
                return Err(AdjustError::Released);
            }
        }
        let (old, new) = (Amounts::unpack(p.d0, p.d1), Amounts::unpack(d0, d1));
        let pos = |a: u64, b: u64| a.saturating_sub(b);
        let grow = Amounts {
            inflight: 0,
            memory_mb: pos(new.memory_mb, old.memory_mb),
            tokens: pos(new.tokens, old.tokens),
            cpu_millis: pos(new.cpu_millis, old.cpu_millis),
            gpu_millis: pos(new.gpu_millis, old.gpu_millis),
        }
        .pack();
        let shrink = Amounts {
            inflight: 0,
            memory_mb: pos(old.memory_mb, new.memory_mb),
            tokens: pos(old.tokens, new.tokens),
            cpu_millis: pos(old.cpu_millis, new.cpu_millis),
            gpu_millis: pos(old.gpu_millis, new.gpu_millis),
        }
        .pack();
        let fits = grow == (0, 0) || p.live.try_reserve(grow.0, grow.1, cap0, cap1);
        let (k0, k1) = if fits {
            p.live.release(shrink.0, shrink.1);
            (d0, d1)
        } else {
            (p.d0, p.d1)
        };
        if let Some((slab, r)) = self.registration() {
            self.slot = slab.finish_adjust(r, 0, k0, k1).pack();
        }
        if !fits {
            return Err(AdjustError::Saturated);
        }
        let a = &mut self.allocated;
        let sub =
            |x: u32, o: u64, n: u64| (x as u64 + n).saturating_sub(o).min(u32::MAX as u64) as u32;
        a.memory_mb = sub(a.memory_mb, old.memory_mb, new.memory_mb);
        a.cpu_millis = sub(a.cpu_millis, old.cpu_millis, new.cpu_millis);
        a.gpu_millis = sub(a.gpu_millis, old.gpu_millis, new.gpu_millis);
        a.tokens = sub(a.tokens, old.tokens, new.tokens);
        if let Some(p) = self.parts[0].as_mut() {
            p.d0 = d0;
            p.d1 = d1;
        }
        Ok(())
    }

    /// Ends the lease with an outcome: releases every stage and records the outcome and the
    /// latency on each (what a [`Ticket`](crate::Ticket) does; for gateways that route
    /// through a [`RouteReader`](crate::RouteReader) without the dispatcher). Dropping a lease
    /// releases it without recording anything.
    pub fn complete(self, outcome: crate::model::Outcome, latency_ms: f64) {
        self.finish(outcome, latency_ms);
    }

    /// Settles the token-rate reservation to the output tokens the task really produced:
    /// refunds what it did not use, charges what it used beyond the estimate, on every
    /// stage's node rate and on the tenant's rate (a no-op where there is no rate limit, and
    /// once the lease holds nothing: after its release, or after failover found it
    /// reclaimed; a lease reclaimed past its timeout still settles until then). Call once,
    /// before completing; a ticket does it.
    pub fn settle_tokens(&mut self, actual_output: u32) {
        let delta = actual_output as i64 - self.est_output as i64;
        if delta == 0 {
            return;
        }
        for p in self.parts.iter().flatten() {
            if p.ns_per_token > 0 {
                p.live
                    .rate_settle(delta.saturating_mul(p.ns_per_token as i64));
            }
        }
        if let (Some(shared), true) = (self.shared(), self.tenant_ns_per_token > 0) {
            crate::node::gcra_settle(
                &shared.tenants.tat[self.tenant as usize],
                delta.saturating_mul(self.tenant_ns_per_token as i64),
            );
        }
        if let Some((live, ..)) = self.head() {
            live.count_settle(delta);
        }
        self.est_output = actual_output;
    }

    /// Releases every stage, then records `outcome` on each, head last: whoever sees the
    /// head's count (the dispatcher's totals) also sees every stage released.
    pub(crate) fn finish(self, outcome: crate::model::Outcome, latency_ms: f64) {
        self.finish_as(true, outcome, latency_ms);
    }

    /// As `finish`; `counted` false records the outcome for health only (a failed attempt
    /// that fails over: the task is counted once, when it finally ends).
    pub(crate) fn finish_as(
        mut self,
        counted: bool,
        outcome: crate::model::Outcome,
        latency_ms: f64,
    ) {
        if !self.end_registration() {
            // Reclaimed by the control thread, which returned the resources and recorded a
            // timeout: this late completion is counted by the slab, and nothing else.
            self.parts = Default::default();
            return;
        }
        for p in self.parts.iter().flatten() {
            p.live.release(p.d0, p.d1);
        }
        if counted && self.slo_ms != u32::MAX {
            use crate::model::Outcome::*;
            let met = match outcome {
                Success => Some(latency_ms <= self.slo_ms as f64),
                ServerError | Timeout | Abandoned => Some(false),
                // Refused by the backend or dropped by the client: not the route's doing.
                RateLimited | Cancelled => None,
            };
            if let (Some(met), Some(Some(head))) = (met, self.parts.first()) {
                head.live.count_slo(met);
            }
        }
        let n = self.route.len.max(1) as f64;
        for (i, part) in self.parts.iter_mut().enumerate().rev() {
            if let Some(p) = part.take() {
                // Each stage is judged against its share of the prediction.
                p.live.record_outcome(
                    i == 0 && counted,
                    outcome,
                    latency_ms / n,
                    self.predicted_ms / n,
                );
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.release_now();
    }
}

#[cfg(all(test, not(switchyard_loom)))]
mod test {

    use crate::spec::RoutingEngine;
    use crate::{NodeSpec, Router, Task};

    /// Options planned on one router and reserved on another with the same epoch used to index
    /// the other's routes by the planned slot, out of bounds (found by the fuzz target).
    #[test]
    fn options_from_another_router_do_not_index_out_of_bounds() {
        let big = Router::builder()
            .nodes((0..4).map(|i| NodeSpec::new(format!("n{i}"))))
            .build()
            .unwrap();
        let small = Router::builder().node(NodeSpec::new("x")).build().unwrap();
        let task = Task::new(1, 10, 10);
        let mut reader = big.reader();
        for seed in 0..16 {
            reader.reseed(seed);
            let options = reader.calculate_routes(&task).unwrap();
            if let Ok(lease) = small.reader().optimize_allocation(&options, &task) {
                drop(lease);
            }
        }
        assert!(small.ledgers_are_zero() && big.ledgers_are_zero());
    }
}
