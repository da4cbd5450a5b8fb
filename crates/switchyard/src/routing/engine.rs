//! The decision: filter, score, pick, reserve.
//!
//! 1. **Pool.** The shortest per-capability route list among the task's required bits (or all
//!    routes). Every candidate still gets the full four-word capability check.
//! 2. **Sample.** Pools no larger than the routes wanted are evaluated whole. Larger pools are
//!    sampled at random without repeats, up to [`MAX_DRAWS`] draws, until `alternatives + 1`
//!    feasible routes (at least two) are found. If fewer than two turn up, the pool is scanned
//!    from a random start: the decision stays complete (a feasible route is always found when
//!    one exists) at O(pool) cost only when feasible routes are rare.
//! 3. **Evaluate.** For each stage: health, free capacity against the live ledger, expected
//!    latency `(base + in·prefill + out·decode) × (1 + slowdown·u) × latency_factor` where `u`
//!    is the stage's utilisation (the largest of its in-flight, memory and token shares),
//!    memory, price and capability score. A route breaking `max_latency_ms` or
//!    `max_memory_mb` is infeasible.
//! 4. **Pick.** Power of two choices: two distinct feasible candidates drawn at random, the
//!    lower score is the primary. The others follow as alternatives, best first.
//!    Score per stage: `latency × (1 + w_load·u) × (1 + w_cost·price_rel) / (cap_factor × weight)`.
//! 5. **Reserve.** One CAS per ledger word per stage, primary first then alternatives, so the
//!    task counts as in flight at pick time and concurrent pickers see it at once.
use crate::capability::CapSet;
use crate::error::RouteError;
use crate::model::{
    AllocationResult, ModelChain, NodeId, Priority, ResourceConstraints, ResourceCost, ResourceMap,
    RouteChoice, RouteOptions, Task, MAX_ALTERNATIVES, MAX_STAGES,
};
use crate::node::{fits0, fits1, Amounts, NodeLive};
use crate::routing::slab::{LeaseShared, LeaseSlab, SlotRef, StageAmounts};
use crate::routing::table::{NodeEntry, RouteEntry, RoutingTable};
use crate::sync::Arc;

/// Pools at most this large are evaluated whole.
pub(crate) const EXHAUSTIVE: usize = 1 + MAX_ALTERNATIVES;
/// Random draws before falling back to a scan.
pub(crate) const MAX_DRAWS: usize = 16;

/// A small, fast, seedable PRNG (xorshift64*), one per picker.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        // splitmix64 of the seed, never zero
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift.
    /// Uniform in `[0, 1)`.
    #[inline]
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    #[inline]
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
}

/// Why a candidate was not feasible; ordered from "furthest from feasible" to "closest".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Miss {
    NotCapable,
    Unhealthy,
    Constraint,
    Full,
}

impl Miss {
    fn error(self) -> RouteError {
        match self {
            Miss::NotCapable => RouteError::NoCapableRoute,
            Miss::Unhealthy => RouteError::NoHealthyRoute,
            Miss::Constraint => RouteError::ConstraintsUnsatisfiable,
            Miss::Full => RouteError::Saturated,
        }
    }
}

/// What one stage of a task demands of its node, in ledger units.
#[inline]
pub(crate) fn demand(n: &NodeEntry, task: &Task) -> (u64, u64) {
    // Clamped to the 24-bit field width: a demand that large never fits a validated
    // capacity, so clamping only keeps it from spilling into the next field.
    const MAX: u64 = crate::node::MAX_LEDGER_24 as u64;
    let tokens = task.total_tokens().min(MAX);
    // ceil without a libm call (no SSE4.1 `roundsd` in the baseline target).
    let exact = tokens as f64 * n.kv_mb_per_token;
    let floor = exact as u64; // saturating cast
    let mem = if (floor as f64) < exact {
        floor + 1
    } else {
        floor
    }
    .min(MAX);
    Amounts {
        inflight: 1,
        memory_mb: mem,
        tokens,
        cpu_millis: n.cpu_millis_per_task as u64,
        gpu_millis: n.gpu_millis_per_task as u64,
    }
    .pack()
}

#[inline]
fn fmax(a: f64, b: f64) -> f64 {
    // Operands are finite here; a plain compare avoids `f64::max`'s NaN handling.
    if a > b {
        a
    } else {
        b
    }
}

#[inline]
fn utilization(n: &NodeEntry, w0: u64) -> f64 {
    let a = Amounts::unpack(w0, 0);
    let x = a.inflight as f64 * n.inv_conc;
    let y = a.memory_mb as f64 * n.inv_mem;
    let z = a.tokens as f64 * n.inv_tokens;
    let u = fmax(fmax(x, y), z);
    if u > 1.0 {
        1.0
    } else {
        u
    }
}

#[inline]
fn capability_score(table: &RoutingTable, n: &NodeEntry, required: &CapSet) -> f64 {
    if n.scores_len == 0 || required.is_empty() {
        return 1.0;
    }
    // Mean over the required capabilities this node offers (a chain's other stages may
    // offer the rest); unscored ones count as 1.
    let offered = n.caps.intersection_len(required);
    if offered == 0 {
        return 1.0;
    }
    let (mut sum, mut scored) = (0.0, 0usize);
    for &(bit, s) in table.scores_of(n) {
        if required.contains(bit as usize) {
            sum += s as f64;
            scored += 1;
        }
    }
    (sum + (offered - scored) as f64) / offered as f64
}

/// Evaluates one route for one task against the live ledgers, writing the candidate into
/// `out` (left partially written on a miss).
#[inline]
fn evaluate(
    table: &RoutingTable,
    slot: u32,
    task: &Task,
    hint: Option<NodeId>,
    out: &mut RouteChoice,
) -> Result<(), Miss> {
    let r: &RouteEntry = &table.routes[slot as usize];
    let req = &task.constraints.required;
    if !r.caps.contains_all(req) {
        return Err(Miss::NotCapable);
    }
    let w = &table.weights;
    let (input, output) = (task.input_tokens as f64, task.output_tokens as f64);
    let tokens = task.total_tokens();
    let (mut latency_sum, mut memory, mut cpu, mut price) = (0.0, 0.0, 0.0, 0.0);
    let (mut score, mut confidence, mut full) = (0.0, 1.0f64, false);
    out.route.route = r.id;
    out.route.epoch = table.epoch;
    out.route.slot = slot;
    out.route.len = r.len;
    for (i, &s) in r.stages().iter().enumerate() {
        let n = &table.nodes[s as usize];
        // The live failure streak takes a node out before the next tick does (health.rs).
        if !n.eligible || n.live.consecutive_failures() >= n.eject_after {
            return Err(Miss::Unhealthy);
        }
        out.route.stages[i] = n.id;
        let (d0, d1) = demand(n, task);
        let (w0, w1) = n.live.load_for(d1 != 0);
        let cap0 = n.cap0_class[task.constraints.priority.index()];
        full |= !(fits0(w0, d0, cap0) && (d1 == 0 || fits1(w1, d1, n.cap1)));
        if n.ns_per_token > 0 {
            // A node at its token rate counts as full: routing prefers others.
            let cost = tokens.saturating_mul(n.ns_per_token);
            full |= !n.live.rate_allows(table.now_ns(), cost, n.burst_ns);
        }
        if n.probe_only && Amounts::unpack(w0, 0).inflight >= n.probe_limit {
            return Err(Miss::Unhealthy); // half-open: its probes are out
        }
        let u = utilization(n, w0);
        // Prefix affinity: a node that recently served this key likely holds its prefix in
        // KV cache, so part of the prefill is predicted saved.
        let mut prefill = input * n.prefill_ms_per_token;
        if let Some(key) = task.affinity_key {
            if w.affinity > 0.0 && (hint == Some(n.id) || n.live.recalls(key)) {
                prefill *= 1.0 - w.affinity;
            }
        }
        let latency = (n.base_ms + prefill + output * n.decode_ms_per_token)
            * (1.0 + n.batch_slowdown * u)
            * n.latency_factor;
        let cap = capability_score(table, n, req);
        let cap_factor = fmax(1.0 - w.capability * (1.0 - cap), 0.05);
        // The weight is not in the score: it shapes which candidates are drawn (see `plan`),
        // so a node at 10 % weight gets about 10 % of a share instead of losing every pair.
        score += latency * (1.0 + w.load * u) * (1.0 + w.cost * n.price_rel) / cap_factor;
        latency_sum += latency;
        memory += Amounts::unpack(d0, 0).memory_mb as f64;
        cpu = fmax(cpu, n.cpu_share_per_task);
        price += tokens as f64 * n.price_per_token;
        let c = n.success_rate * cap;
        if c < confidence {
            confidence = c;
        }
    }
    let c = &task.constraints;
    if latency_sum > c.max_latency_ms as f64 || memory > c.max_memory_mb as f64 {
        return Err(Miss::Constraint);
    }
    if full {
        return Err(Miss::Full);
    }
    if c.max_latency_ms != u32::MAX {
        let x = latency_sum / c.max_latency_ms.max(1) as f64;
        confidence *= 1.0 - 0.5 * x * x;
    }
    out.cost = ResourceCost {
        memory_mb: memory,
        cpu_utilization: cpu,
        expected_latency_ms: latency_sum,
        estimated_tokens: tokens,
        price,
    };
    out.confidence = confidence.clamp(0.0, 1.0);
    out.score = score;
    Ok(())
}

/// Computes the primary route and alternatives for `task` on `table` into `out`.
pub(crate) fn plan(
    table: &RoutingTable,
    task: &Task,
    rng: &mut Rng,
    out: &mut RouteOptions,
) -> Result<(), RouteError> {
    out.reset(task.constraints);
    if table.routes.is_empty() {
        return Err(RouteError::EmptyFleet);
    }
    let pool = table
        .pool(&task.constraints.required)
        .ok_or(RouteError::NoCapableRoute)?;
    if pool.is_empty() {
        return Err(RouteError::NoCapableRoute);
    }
    let want = (table.weights.alternatives + 1).clamp(2, 1 + MAX_ALTERNATIVES);
    // Prefix affinity: the node that last took this key is evaluated first, and joins the
    // P2C pair if it is feasible (see `affinity.rs`).
    let hint = match (task.affinity_key, &table.hints) {
        (Some(key), Some(hints)) if table.weights.affinity > 0.0 => hints.get(key),
        _ => None,
    };
    let hint_slot = hint
        .and_then(|id| table.node_slot.get(id.0 as usize).copied())
        .filter(|&s| {
            (s as usize) < table.nodes.len()
                && table.routes[s as usize]
                    .caps
                    .contains_all(&task.constraints.required)
        });
    let mut best_miss = Miss::NotCapable;
    let mut consider = |slot: u32, out: &mut RouteOptions| {
        let Some(next) = out.next_slot() else { return };
        match evaluate(table, slot, task, hint, next) {
            Ok(()) => out.commit_slot(),
            Err(m) => {
                if m > best_miss {
                    best_miss = m;
                }
            }
        }
    };
    let exhaustive = pool.len() <= want.min(EXHAUSTIVE);
    if exhaustive {
        let start = rng.below(pool.len());
        for k in 0..pool.len() {
            consider(pool[(start + k) % pool.len()], out);
        }
    } else {
        let mut drawn = [u32::MAX; MAX_DRAWS];
        let first = match hint_slot {
            Some(s) => {
                drawn[0] = s;
                consider(s, out);
                1
            }
            None => 0,
        };
        for d in first..MAX_DRAWS {
            if out.len() >= want {
                break;
            }
            let slot = pool[rng.below(pool.len())];
            if drawn[..d].contains(&slot) {
                continue;
            }
            // Weighted draw by rejection: a route is kept with probability weight / max. A
            // rejected route is not marked as drawn, so the completeness scan still sees it.
            let w = table.routes[slot as usize].weight;
            if w < table.max_weight && rng.unit() * table.max_weight >= w {
                continue;
            }
            drawn[d] = slot;
            consider(slot, out);
        }
        if out.len() < 2 {
            // Feasible routes are rare here: scan, skipping what was already drawn.
            let start = rng.below(pool.len());
            for k in 0..pool.len() {
                if out.len() >= want {
                    break;
                }
                let slot = pool[(start + k) % pool.len()];
                if drawn.contains(&slot) {
                    continue;
                }
                consider(slot, out);
            }
        }
    }
    let n = out.len();
    if n == 0 {
        return Err(best_miss.error());
    }
    if n >= 2 {
        let found = out.choices_mut();
        // Power of two choices between two distinct feasible candidates, drawn in proportion
        // to their weights (sampled candidates already are; this matters for small pools,
        // which are evaluated whole).
        let weight = |c: &RouteChoice| {
            if exhaustive {
                table.routes[c.route.slot as usize].weight
            } else {
                1.0 // drawn in proportion already
            }
        };
        // The hinted node, when feasible, is one of the pair (and competes on score).
        let hinted = hint_slot.and_then(|s| found.iter().position(|c| c.route.slot == s));
        let a = hinted.unwrap_or_else(|| weighted_index(found, usize::MAX, &weight, rng));
        let b = weighted_index(found, a, &weight, rng);
        debug_assert_ne!(a, b, "p2c needs two distinct candidates");
        let winner = if found[b].score < found[a].score {
            b
        } else {
            a
        };
        found.swap(0, winner);
        found[1..].sort_unstable_by(|x, y| x.score.total_cmp(&y.score));
    }
    out.truncate(1 + table.weights.alternatives);
    Ok(())
}

/// An index into `found` other than `skip`, drawn in proportion to `weight`.
fn weighted_index(
    found: &[RouteChoice],
    skip: usize,
    weight: &impl Fn(&RouteChoice) -> f64,
    rng: &mut Rng,
) -> usize {
    let total: f64 = found
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != skip)
        .map(|(_, c)| weight(c))
        .sum();
    let mut x = rng.unit() * total;
    let mut last = usize::MAX;
    for (i, c) in found.iter().enumerate() {
        if i == skip {
            continue;
        }
        last = i;
        x -= weight(c);
        if x < 0.0 {
            return i;
        }
    }
    last // rounding: the last eligible index
}

/// Whether `route` is still feasible for `task` under `table`.
pub(crate) fn validate(table: &RoutingTable, route: &ModelChain, task: &Task) -> bool {
    match table.route_slot(route.route) {
        Some(slot) => evaluate(table, slot, task, None, &mut RouteChoice::default()).is_ok(),
        None => false,
    }
}

/// Reserves resources on the first route of `options` that still has room.
pub(crate) fn allocate(
    table: &RoutingTable,
    options: &RouteOptions,
    task: &Task,
) -> Result<Lease, RouteError> {
    // A tenant over its token rate has nowhere else to go: refuse before reserving.
    let tenant = crate::tenant::limit_of(table, task);
    if let (Some((shared, limit)), Some(t)) = (tenant, task.tenant) {
        let tat = &shared.tenants.tat[t.0 as usize];
        let cost = task.total_tokens().saturating_mul(limit.ns_per_token);
        if !crate::node::gcra_allows(tat, table.now_ns(), cost, limit.burst_ns) {
            return Err(RouteError::TenantRateLimited);
        }
    }
    let mut stale = true;
    for (rank, choice) in options.choices().iter().enumerate() {
        // The planned slot is only trusted when it still holds the planned route: an epoch
        // alone does not identify a snapshot (options planned on another router share it).
        let same_slot = table
            .routes
            .get(choice.route.slot as usize)
            .is_some_and(|r| r.id == choice.route.route);
        let slot = if choice.route.epoch == table.epoch && same_slot {
            Some(choice.route.slot)
        } else {
            table.route_slot(choice.route.route)
        };
        let Some(slot) = slot else { continue };
        // A chain re-created under the same name may have other stages now: then the plan
        // is stale, not a plan for the new chain.
        let r = &table.routes[slot as usize];
        let same_stages = r
            .stages()
            .iter()
            .zip(choice.route.stages())
            .all(|(&s, id)| table.nodes[s as usize].id == *id)
            && r.len == choice.route.len;
        if !same_stages {
            continue;
        }
        stale = false;
        // Returned straight through (no rebinding), so the lease is built in the caller's
        // return slot instead of being copied on the way out.
        match reserve_route(table, slot, task, choice, rank, tenant) {
            Err(RouteError::Saturated) => {}
            done => return done,
        }
    }
    Err(if stale {
        RouteError::StaleRoute
    } else {
        RouteError::Saturated
    })
}

/// Reserves `choice` (route `slot`) for `task`: `Saturated` when a stage, the lease slab or
/// a node rate has no room (try the next route), `TenantRateLimited` when the tenant's rate
/// refuses (stop). `rank` is the choice's place in the plan (above 0: a spillover).
fn reserve_route(
    table: &RoutingTable,
    slot: u32,
    task: &Task,
    choice: &RouteChoice,
    rank: usize,
    tenant: Option<(&Arc<LeaseShared>, crate::tenant::TenantLimit)>,
) -> Result<Lease, RouteError> {
    let r = &table.routes[slot as usize];
    let mut lease = Lease {
        est_output: task.output_tokens,
        shared: None,
        slot: SlotRef::NONE,
        start_ns: 0,
        tenant: 0,
        tenant_ns_per_token: 0,
        head_memory_mb: 0,
        head_cpu_millis: 0,
        parts: Default::default(),
        route: choice.route,
        predicted_ms: choice.cost.expected_latency_ms,
        allocated: ResourceMap::default(),
        priority: task.constraints.priority,
    };
    for (i, &s) in r.stages().iter().enumerate() {
        let n = &table.nodes[s as usize];
        if !n.eligible {
            return Err(RouteError::Saturated); // `lease` drops and releases what it took
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
    }
    if let Some((shared, slab)) = table
        .shared
        .as_ref()
        .and_then(|sh| sh.slab.as_ref().map(|slab| (sh, slab)))
    {
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
        let r = slab
            .register(now.saturating_add(slab.timeout_ns()), &stages[..n])
            .ok_or(RouteError::Saturated)?;
        lease.start_ns = now;
        lease.slot = r.pack();
        lease.shared = Some(Arc::clone(shared));
    }
    if let (Some((shared, limit)), Some(t)) = (tenant, task.tenant) {
        let tat = &shared.tenants.tat[t.0 as usize];
        let cost = task.total_tokens().saturating_mul(limit.ns_per_token);
        if !crate::node::gcra_take(tat, table.now_ns(), cost, limit.burst_ns) {
            // Another task of the tenant took the rest of its burst meanwhile.
            return Err(RouteError::TenantRateLimited); // the lease drops: released
        }
        if lease.shared.is_none() {
            lease.shared = Some(Arc::clone(shared));
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
    Ok(lease)
}

#[derive(Debug)]
struct Part {
    live: Arc<NodeLive>,
    d0: u64,
    d1: u64,
    /// The node's GCRA interval when the lease was taken (0: no rate reserved).
    ns_per_token: u64,
}

/// Resources reserved on every stage of one route; released exactly once, when dropped.
///
/// A lease holds each stage's live state by its stable identity, not by snapshot slot, so a
/// node removed from the fleet while the lease is out still gets its resources back, and no
/// other node is charged for them.
#[derive(Debug)]
pub struct Lease {
    parts: [Option<Part>; MAX_STAGES],
    route: ModelChain,
    predicted_ms: f64,
    /// What it holds, summed over its stages (tokens: the largest stage's).
    allocated: ResourceMap,
    /// The head node's memory and CPU capacity (for `allocation().constraints`).
    head_memory_mb: u32,
    head_cpu_millis: u32,
    /// Output tokens estimated at pick time (what the token rate reserved beside the input).
    est_output: u32,
    priority: Priority,
    /// The router's lease slab and tenant states, when the lease is recorded in the slab
    /// or charged to a tenant's rate (one pointer: the lease stays small, so it moves in
    /// registers rather than through `memcpy`).
    shared: Option<Arc<LeaseShared>>,
    /// The lease's record in the slab, packed ([`SlotRef::NONE`]: not recorded).
    slot: u64,
    /// Clock ns when the lease was taken (0 when leases do not time out).
    start_ns: u64,
    /// The tenant charged, and its ns per token (0: no tenant rate).
    tenant: u32,
    tenant_ns_per_token: u32,
}

impl Lease {
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

    fn slab(&self) -> Option<&LeaseSlab> {
        self.shared.as_ref().and_then(|s| s.slab.as_ref())
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
    /// stage's node rate and on the tenant's rate (a no-op where there is no rate limit).
    /// Call once, before completing; a ticket does it.
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
        if let (Some(shared), true) = (&self.shared, self.tenant_ns_per_token > 0) {
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
    use crate::{NodeSpec, Router, RoutingEngine, Task};

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
