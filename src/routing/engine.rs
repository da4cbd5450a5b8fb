//! The decision: filter, score, pick, reserve.
//!
//! 1. **Pool.** The shortest per-capability route list among the task's required bits (or all
//!    routes). Every candidate still gets the full four-word capability check.
//! 2. **Sample.** Small pools (≤ [`EXHAUSTIVE`] routes) are evaluated whole. Larger pools are
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
use crate::node::{fits0, fits1, pack0, pack1, unpack0, unpack1, NodeLive};
use crate::routing::table::{NodeEntry, RouteEntry, RoutingTable};
use crate::sync::Arc;

/// Pools at most this large are evaluated whole.
pub(crate) const EXHAUSTIVE: usize = 8;
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
    #[inline]
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() >> 32) * n as u64 >> 32) as usize
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
    let tokens = task.total_tokens().min(u32::MAX as u64);
    let mem = (tokens as f64 * n.kv_mb_per_token).ceil();
    let mem = if mem >= u32::MAX as f64 {
        u32::MAX as u64
    } else {
        mem as u64
    };
    (
        pack0(
            1,
            n.cpu_millis_per_task as u64,
            n.gpu_millis_per_task as u64,
        ),
        pack1(mem, tokens),
    )
}

#[inline]
fn utilization(n: &NodeEntry, w0: u64, w1: u64) -> f64 {
    let (inflight, _, _) = unpack0(w0);
    let (mem, tok) = unpack1(w1);
    let a = inflight as f64 * n.inv_conc;
    let b = mem as f64 * n.inv_mem;
    let c = tok as f64 * n.inv_tokens;
    a.max(b).max(c).min(1.0)
}

#[inline]
fn capability_score(n: &NodeEntry, required: &CapSet) -> f64 {
    if n.scores.is_empty() || required.is_empty() {
        return 1.0;
    }
    let (mut sum, mut count) = (0.0, 0u32);
    for bit in required.iter() {
        if !n.caps.contains(bit) {
            continue; // offered by another stage of a chain
        }
        let s = n
            .scores
            .iter()
            .find(|&&(b, _)| b as usize == bit)
            .map_or(1.0, |&(_, s)| s as f64);
        sum += s;
        count += 1;
    }
    if count == 0 {
        1.0
    } else {
        sum / count as f64
    }
}

/// Evaluates one route for one task against the live ledgers.
#[inline]
fn evaluate(table: &RoutingTable, slot: u32, task: &Task) -> Result<RouteChoice, Miss> {
    let r: &RouteEntry = &table.routes[slot as usize];
    let req = &task.constraints.required;
    if !r.caps.contains_all(req) {
        return Err(Miss::NotCapable);
    }
    let w = &table.weights;
    let (input, output) = (task.input_tokens as f64, task.output_tokens as f64);
    let mut cost = ResourceCost {
        estimated_tokens: task.total_tokens(),
        ..ResourceCost::default()
    };
    let (mut score, mut confidence, mut full) = (0.0, 1.0f64, false);
    let mut chain = ModelChain {
        route: r.id,
        epoch: table.epoch,
        slot,
        stages: [NodeId(0); MAX_STAGES],
        len: r.len,
    };
    for (i, &s) in r.stages().iter().enumerate() {
        let n = &table.nodes[s as usize];
        if !n.eligible {
            return Err(Miss::Unhealthy);
        }
        chain.stages[i] = n.id;
        let (w0, w1) = n.live.load();
        let (d0, d1) = demand(n, task);
        full |= !(fits0(w0, d0, n.cap0) && fits1(w1, d1, n.cap1));
        let u = utilization(n, w0, w1);
        let latency = (n.base_ms + input * n.prefill_ms_per_token + output * n.decode_ms_per_token)
            * (1.0 + n.batch_slowdown * u)
            * n.latency_factor;
        let cap = capability_score(n, req);
        let cap_factor = (1.0 - w.capability * (1.0 - cap)).max(0.05);
        score +=
            latency * (1.0 + w.load * u) * (1.0 + w.cost * n.price_rel) / (cap_factor * n.weight);
        cost.expected_latency_ms += latency;
        cost.memory_mb += unpack1(d1).0 as f64;
        cost.cpu_utilization = cost.cpu_utilization.max(n.cpu_share_per_task);
        cost.price += task.total_tokens() as f64 * n.price_per_token;
        confidence = confidence.min(n.success_rate * cap);
    }
    let c = &task.constraints;
    if cost.expected_latency_ms > c.max_latency_ms as f64 || cost.memory_mb > c.max_memory_mb as f64
    {
        return Err(Miss::Constraint);
    }
    if full {
        return Err(Miss::Full);
    }
    if c.max_latency_ms != u32::MAX {
        let x = cost.expected_latency_ms / c.max_latency_ms.max(1) as f64;
        confidence *= 1.0 - 0.5 * x * x;
    }
    Ok(RouteChoice {
        route: chain,
        cost,
        confidence: confidence.clamp(0.0, 1.0),
        score,
    })
}

/// Computes the primary route and alternatives for `task` on `table`.
pub(crate) fn plan(
    table: &RoutingTable,
    task: &Task,
    rng: &mut Rng,
) -> Result<RouteOptions, RouteError> {
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
    let mut found = [RouteChoice::default(); 1 + MAX_ALTERNATIVES];
    let mut nfound = 0usize;
    let mut best_miss = Miss::NotCapable;
    let mut consider =
        |slot: u32, found: &mut [RouteChoice; 1 + MAX_ALTERNATIVES], nfound: &mut usize| {
            match evaluate(table, slot, task) {
                Ok(choice) => {
                    if *nfound < found.len() {
                        found[*nfound] = choice;
                        *nfound += 1;
                    }
                }
                Err(m) => best_miss = best_miss.max(m),
            }
        };
    if pool.len() <= EXHAUSTIVE {
        let start = rng.below(pool.len());
        for k in 0..pool.len() {
            consider(pool[(start + k) % pool.len()], &mut found, &mut nfound);
        }
    } else {
        let mut drawn = [u32::MAX; MAX_DRAWS];
        for d in 0..MAX_DRAWS {
            if nfound >= want {
                break;
            }
            let slot = pool[rng.below(pool.len())];
            if drawn[..d].contains(&slot) {
                continue;
            }
            drawn[d] = slot;
            consider(slot, &mut found, &mut nfound);
        }
        if nfound < 2 {
            // Feasible routes are rare here: scan, skipping what was already drawn.
            let start = rng.below(pool.len());
            for k in 0..pool.len() {
                if nfound >= want {
                    break;
                }
                let slot = pool[(start + k) % pool.len()];
                if drawn.contains(&slot) {
                    continue;
                }
                consider(slot, &mut found, &mut nfound);
            }
        }
    }
    if nfound == 0 {
        return Err(best_miss.error());
    }
    let found = &mut found[..nfound];
    if nfound >= 2 {
        // Power of two choices between two distinct random feasible candidates.
        let a = rng.below(nfound);
        let mut b = rng.below(nfound - 1);
        if b >= a {
            b += 1;
        }
        debug_assert_ne!(a, b, "p2c needs two distinct candidates");
        let winner = if found[b].score < found[a].score {
            b
        } else {
            a
        };
        found.swap(0, winner);
        found[1..].sort_unstable_by(|x, y| x.score.total_cmp(&y.score));
    }
    let mut out = RouteOptions::new(task.constraints);
    for c in found.iter().take(1 + table.weights.alternatives) {
        out.push(*c);
    }
    Ok(out)
}

/// Whether `route` is still feasible for `task` under `table`.
pub(crate) fn validate(table: &RoutingTable, route: &ModelChain, task: &Task) -> bool {
    match table.route_slot(route.route) {
        Some(slot) => evaluate(table, slot, task).is_ok(),
        None => false,
    }
}

/// Reserves resources on the first route of `options` that still has room.
pub(crate) fn allocate(
    table: &RoutingTable,
    options: &RouteOptions,
    task: &Task,
    timeout_ms: u64,
) -> Result<Lease, RouteError> {
    let mut stale = true;
    for choice in options.choices() {
        let slot = if choice.route.epoch == table.epoch {
            Some(choice.route.slot)
        } else {
            table.route_slot(choice.route.route)
        };
        let Some(slot) = slot else { continue };
        stale = false;
        if let Some(lease) = reserve_route(table, slot, task, choice, timeout_ms) {
            return Ok(lease);
        }
    }
    Err(if stale {
        RouteError::StaleRoute
    } else {
        RouteError::Saturated
    })
}

fn reserve_route(
    table: &RoutingTable,
    slot: u32,
    task: &Task,
    choice: &RouteChoice,
    timeout_ms: u64,
) -> Option<Lease> {
    let r = &table.routes[slot as usize];
    let mut lease = Lease {
        parts: Default::default(),
        route: choice.route,
        predicted_ms: choice.cost.expected_latency_ms,
        allocation: AllocationResult {
            allocated: ResourceMap::default(),
            constraints: ResourceConstraints::default(),
            priority: task.constraints.priority,
            timeout_ms,
        },
    };
    for (i, &s) in r.stages().iter().enumerate() {
        let n = &table.nodes[s as usize];
        if !n.eligible {
            return None; // `lease` drops and releases what it took
        }
        let (d0, d1) = demand(n, task);
        if !n.live.try_reserve(d0, d1, n.cap0, n.cap1) {
            return None;
        }
        lease.parts[i] = Some(Part {
            live: Arc::clone(&n.live),
            d0,
            d1,
        });
        let (_, cpu, gpu) = unpack0(d0);
        let (mem, tok) = unpack1(d1);
        let a = &mut lease.allocation.allocated;
        a.memory_mb = a.memory_mb.saturating_add(mem as u32);
        a.cpu_millis = a.cpu_millis.saturating_add(cpu as u32);
        a.gpu_millis = a.gpu_millis.saturating_add(gpu as u32);
        a.tokens = a.tokens.max(tok as u32);
        if i == 0 {
            let (_, cpu_cap, _) = unpack0(n.cap0);
            lease.allocation.constraints = ResourceConstraints {
                max_memory_mb: unpack1(n.cap1).0 as u32,
                max_cpu: cpu_cap as f64 / 1000.0,
                max_tokens_per_second: 0.0,
            };
        }
    }
    Some(lease)
}

#[derive(Debug)]
struct Part {
    live: Arc<NodeLive>,
    d0: u64,
    d1: u64,
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
    allocation: AllocationResult,
}

impl Lease {
    /// The route the lease holds.
    pub fn route(&self) -> &ModelChain {
        &self.route
    }

    /// What it holds (the seed's `AllocationResult`).
    pub fn allocation(&self) -> &AllocationResult {
        &self.allocation
    }

    /// The latency predicted for the task at pick time, ms.
    pub fn predicted_latency_ms(&self) -> f64 {
        self.predicted_ms
    }

    /// The task's class.
    pub fn priority(&self) -> Priority {
        self.allocation.priority
    }

    /// Releases now (the same as dropping the lease).
    pub fn release(self) {}

    pub(crate) fn record_outcome(&self, outcome: crate::model::Outcome, latency_ms: f64) {
        let n = self.parts.iter().flatten().count().max(1) as f64;
        for p in self.parts.iter().flatten() {
            // Each stage is judged against its share of the prediction.
            p.live
                .record_outcome(outcome, latency_ms / n, self.predicted_ms / n);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        for p in self.parts.iter_mut() {
            if let Some(p) = p.take() {
                p.live.release(p.d0, p.d1);
            }
        }
    }
}
