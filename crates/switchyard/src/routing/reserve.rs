//! Reserving a planned route: one CAS per ledger word per stage, primary first then the
//! alternatives (spillover), plus the node and tenant token rates and the lease slab.
use crate::error::RouteError;
use crate::lease::slab::{LeaseShared, StageAmounts};
use crate::lease::{Lease, Part};
use crate::model::{RouteChoice, RouteOptions, Task, MAX_STAGES};
use crate::node::Amounts;
use crate::routing::select::demand;
use crate::routing::table::RoutingTable;
use crate::sync::Arc;

/// Reserves resources on the first route of `options` that still has room. `lane`: which
/// shard of the lease slab to record the lease in first (when leases time out); callers
/// routing at once should pass different lanes (a reader's own, or [`thread_lane`]).
pub(crate) fn allocate(
    table: &RoutingTable,
    options: &RouteOptions,
    task: &Task,
    lane: usize,
) -> Result<Lease, RouteError> {
    allocate_on(table, options, task, true, lane)
}

pub(crate) use crate::rng::thread_lane;

/// As [`allocate`], for `options` that `select::plan` has just written from this same
/// `table` (`RouteReader::route_into`): every planned slot holds its planned route, so the
/// checks that options from another snapshot or router are not stale are skipped.
pub(crate) fn allocate_planned(
    table: &RoutingTable,
    options: &RouteOptions,
    task: &Task,
    lane: usize,
) -> Result<Lease, RouteError> {
    allocate_on(table, options, task, false, lane)
}

/// [`allocate`]; `check`: whether the options may come from another snapshot or router.
#[inline(always)]
fn allocate_on(
    table: &RoutingTable,
    options: &RouteOptions,
    task: &Task,
    check: bool,
    lane: usize,
) -> Result<Lease, RouteError> {
    let tenant = tenant_allows(table, task)?;
    // One lease, filled in place by each attempt and emptied by a failed one: built once and
    // moved once, on the way out (a lease is too large to move in registers).
    let mut lease = Lease::empty(task);
    let mut stale = check;
    for (rank, choice) in options.choices().iter().enumerate() {
        let slot = if check {
            let Some(slot) = current_slot(table, choice) else {
                continue;
            };
            stale = false;
            slot
        } else {
            debug_assert_eq!(
                table.routes[choice.route.slot as usize].id,
                choice.route.route
            );
            choice.route.slot
        };
        match reserve_route(table, slot, task, choice, rank, tenant, lane, &mut lease) {
            Ok(()) => return Ok(lease),
            Err(RouteError::Saturated) => {}
            Err(e) => return Err(e),
        }
    }
    Err(if stale {
        RouteError::StaleRoute
    } else {
        RouteError::Saturated
    })
}

/// The slot of `table` that holds `choice`'s route with the same stages; `None` when the
/// plan is stale there.
fn current_slot(table: &RoutingTable, choice: &RouteChoice) -> Option<u32> {
    // The planned slot is only trusted when it still holds the planned route: an epoch
    // alone does not identify a snapshot (options planned on another router share it).
    let same_slot = table
        .routes
        .get(choice.route.slot as usize)
        .is_some_and(|r| r.id == choice.route.route);
    let slot = if choice.route.epoch == table.epoch && same_slot {
        choice.route.slot
    } else {
        table.route_slot(choice.route.route)?
    };
    // A chain re-created under the same name may have other stages now: then the plan is
    // stale, not a plan for the new chain.
    let r = &table.routes[slot as usize];
    let same_stages = r
        .stages()
        .iter()
        .zip(choice.route.stages())
        .all(|(&s, id)| table.nodes[s as usize].id == *id)
        && r.len == choice.route.len;
    same_stages.then_some(slot)
}

/// The task's tenant rate limit, if it has one; `TenantRateLimited` when the tenant is over
/// its rate: it has nowhere else to go, so it is refused before anything is reserved.
#[inline]
fn tenant_allows<'t>(
    table: &'t RoutingTable,
    task: &Task,
) -> Result<Option<(&'t Arc<LeaseShared>, crate::tenant::TenantLimit)>, RouteError> {
    let tenant = table.tenant_limit(task);
    if let (Some((shared, limit)), Some(t)) = (tenant, task.tenant) {
        let tat = &shared.tenants.tat[t.0 as usize];
        let cost = task.total_tokens().saturating_mul(limit.ns_per_token);
        if !crate::node::gcra_allows(tat, table.now_ns(), cost, limit.burst_ns) {
            return Err(RouteError::TenantRateLimited);
        }
    }
    Ok(tenant)
}

/// Reserves `choice` (route `slot`) for `task` into `lease`, which holds nothing on entry:
/// `Saturated` when a stage, the lease slab or a node rate has no room (try the next route),
/// `TenantRateLimited` when the tenant's rate refuses (stop). On an error `lease` holds
/// nothing again. `rank` is the choice's place in the plan (above 0: a spillover); `lane`
/// as in [`allocate`]. (Eight arguments: a private step of the hot path, each one a value
/// the caller already holds; a struct for them would be built per attempt.)
#[allow(clippy::too_many_arguments)]
fn reserve_route(
    table: &RoutingTable,
    slot: u32,
    task: &Task,
    choice: &RouteChoice,
    rank: usize,
    tenant: Option<(&Arc<LeaseShared>, crate::tenant::TenantLimit)>,
    lane: usize,
    lease: &mut Lease,
) -> Result<(), RouteError> {
    let r = &table.routes[slot as usize];
    lease.route = choice.route;
    lease.predicted_ms = choice.cost.expected_latency_ms;
    if let [s] = *r.stages() {
        // The common single-stage route, straight-line (see `select::evaluate`).
        if let Err(e) = reserve_stage(table, &table.nodes[s as usize], 0, task, lease) {
            return fail(lease, task, e);
        }
    } else {
        for (i, &s) in r.stages().iter().enumerate() {
            if let Err(e) = reserve_stage(table, &table.nodes[s as usize], i, task, lease) {
                return fail(lease, task, e);
            }
        }
    }
    if let Some((shared, slab)) = table
        .shared
        .as_ref()
        .and_then(|sh| sh.slab.as_ref().map(|slab| (sh, slab)))
    {
        // The lease ends its record through its head node's copy of the same state.
        debug_assert!(lease.parts[0]
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(&p.live.shared, shared)));
        // Timeouts are on: record the lease so the control thread can reclaim it. A full slab
        // means the router is at its limit of outstanding leases: saturated.
        let now = table.now_ns();
        let mut stages = [StageAmounts {
            node: crate::model::NodeId(0),
            d0: 0,
            d1: 0,
        }; MAX_STAGES];
        let mut n = 0;
        for p in lease.parts.iter().flatten() {
            stages[n] = StageAmounts {
                node: p.live.id,
                d0: p.d0,
                d1: p.d1,
            };
            n += 1;
        }
        let deadline = now.saturating_add(slab.timeout_ns());
        let Some(r) = slab.register(deadline, &stages[..n], lane) else {
            return fail(lease, task, RouteError::Saturated);
        };
        lease.start_ns = now;
        lease.slot = r.pack();
    }
    if let (Some((shared, limit)), Some(t)) = (tenant, task.tenant) {
        let tat = &shared.tenants.tat[t.0 as usize];
        let cost = task.total_tokens().saturating_mul(limit.ns_per_token);
        if !crate::node::gcra_take(tat, table.now_ns(), cost, limit.burst_ns) {
            // Another task of the tenant took the rest of its burst meanwhile.
            return fail(lease, task, RouteError::TenantRateLimited);
        }
        lease.tenant = t.0;
        // A tenant rate is at least 1 token/s (validated), so this fits.
        lease.tenant_ns_per_token = limit.ns_per_token.min(u32::MAX as u64) as u32;
    }
    if rank > 0 {
        // The primary was full: the task spilled over to an alternative.
        if let Some((live, ..)) = lease.head() {
            live.count_spillover();
        }
    }
    Ok(())
}

/// Reserves stage `i` (node `n`) of a route into `lease`: `Saturated` when the node has no
/// room or its token rate refuses (nothing of this stage is then held).
#[inline(always)]
fn reserve_stage(
    table: &RoutingTable,
    n: &crate::routing::table::NodeEntry,
    i: usize,
    task: &Task,
    lease: &mut Lease,
) -> Result<(), RouteError> {
    if !n.eligible {
        return Err(RouteError::Saturated);
    }
    let (d0, d1) = demand(n, task);
    let cap0 = n.cap0_class[task.constraints.priority.index()];
    if !n.live.try_reserve(d0, d1, cap0, n.cap1) {
        return Err(RouteError::Saturated);
    }
    let rate_cost = task.total_tokens().saturating_mul(n.ns_per_token);
    if n.ns_per_token > 0 && !n.live.rate_take(table.now_ns(), rate_cost, n.burst_ns) {
        n.live.release(d0, d1);
        return Err(RouteError::Saturated);
    }
    if let Some(key) = task.affinity_key {
        n.live.remember(key);
        if i == 0 {
            if let Some(hints) = &table.hints {
                hints.set(key, n.id);
            }
        }
    } else if !task.prefix.is_empty() {
        n.live.remember_prefix(&task.prefix);
        if i == 0 {
            if let Some(hints) = &table.hints {
                for k in task.prefix.keys() {
                    hints.set(k, n.id);
                }
            }
        }
    }
    lease.parts[i] = Some(Part {
        live: Arc::clone(&n.live),
        d0,
        d1,
        ns_per_token: n.ns_per_token,
    });
    let d = Amounts::unpack(d0, d1);
    let a = &mut lease.allocated;
    a.memory_mb = a.memory_mb.saturating_add(d.memory_mb as u32);
    a.cpu_millis = a.cpu_millis.saturating_add(d.cpu_millis as u32);
    a.gpu_millis = a.gpu_millis.saturating_add(d.gpu_millis as u32);
    a.tokens = a.tokens.max(d.tokens as u32);
    if i == 0 {
        let cap = Amounts::unpack(n.cap0, n.cap1);
        lease.head_memory_mb = cap.memory_mb as u32;
        lease.head_cpu_millis = cap.cpu_millis as u32;
    }
    Ok(())
}

/// A reservation that fails part-way: gives back the node token rate every stage reserved so
/// far (what `rate_take` charged: the task's tokens at the stage's interval), then drops the
/// lease, which returns the ledgers. Without the refund a saturated chain retried every few
/// microseconds drained its head node's rate with no task served.
#[cold]
fn fail(lease: &mut Lease, task: &Task, e: RouteError) -> Result<(), RouteError> {
    for p in lease.parts.iter().flatten() {
        if p.ns_per_token > 0 {
            p.live
                .rate_refund(task.total_tokens().saturating_mul(p.ns_per_token));
        }
    }
    // The old lease is dropped here: its drop returns the ledgers and ends its slab record.
    *lease = Lease::empty(task);
    Err(e)
}
