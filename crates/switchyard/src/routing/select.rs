//! The decision: filter, score, pick (the plan; [`reserve`](super::reserve) takes it).
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
//!    lower score is the primary. The others follow as alternatives, best first. A *tail
//!    task*, one whose pick is predicted to take more than [`TAIL_PICK`] times the
//!    cost-at-slack cap (four times the fleet's typical completed latency), takes instead the
//!    candidate with the lowest pressure among all evaluated: the tail is chosen on latency
//!    and load, not left to a random pair and not traded for price.
//!    Pressure per stage: `latency × (1 + w_load·u) / cap_factor`, summed over the stages;
//!    score: `(max(pressure, floor) + pressure / 8) × (1 + w_cost·price_rel)`, with
//!    `floor = min(margin × max_latency_ms, 2 × the fleet's typical completed latency)`
//!    with `price_rel` the stages' mean (cost at slack: see `evaluate`). A node's weight
//!    shapes which candidates are drawn, not the score.
//! 5. **Reserve.** One CAS per ledger word per stage, primary first then alternatives, so the
//!    task counts as in flight at pick time and concurrent pickers see it at once.
use crate::capability::CapSet;
use crate::error::RouteError;
use crate::model::{
    ModelChain, NodeId, ResourceCost, RouteChoice, RouteOptions, Task, MAX_ALTERNATIVES,
};
use crate::node::{fits0, fits1, Amounts};
use crate::rng::Rng;
use crate::routing::table::{NodeEntry, RouteEntry, RoutingTable};

/// Pools at most this large are evaluated whole.
pub(crate) const EXHAUSTIVE: usize = 1 + MAX_ALTERNATIVES;
/// The share of the pressure term kept beside the cost-at-slack floor (see `evaluate`).
const TIE: f64 = 0.125;
/// A task the P2C pair would give a route predicted longer than this many times the
/// cost-at-slack cap (`RoutingTable::slack_cap_ms`, itself twice the fleet's typical
/// completed latency) is a tail task: it takes the lowest pressure among every candidate
/// evaluated, not the pair's lower score (see `plan`). Set from a 1 / 1.5 / 2 / 2.5 / 3 / 4
/// sweep over both bundled traces, seeds 1-5 (docs/simulator.md).
pub(crate) const TAIL_PICK: f64 = 2.0;
/// Random draws before falling back to a scan.
pub(crate) const MAX_DRAWS: usize = 16;

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

/// `x` as `f64`, for `x` below 2^63 (ledger fields, token and capability counts): the same
/// value as `x as f64`, through the one-instruction signed conversion. The baseline x86-64
/// target has no unsigned one, so `u64 as f64` is a branchy sequence, and the decision makes
/// several per candidate.
#[inline(always)]
fn f(x: u64) -> f64 {
    x as i64 as f64
}

/// What one stage of a task demands of its node, in ledger units.
#[inline]
pub(crate) fn demand(n: &NodeEntry, task: &Task) -> (u64, u64) {
    // Clamped to the 24-bit field width: a demand that large never fits a validated
    // capacity, so clamping only keeps it from spilling into the next field.
    const MAX: u64 = crate::node::MAX_LEDGER_24 as u64;
    let tokens = task.total_tokens().min(MAX);
    // ceil without a libm call (no SSE4.1 `roundsd` in the baseline target).
    let exact = f(tokens) * n.kv_mb_per_token;
    // Capped at the field's width first (a NaN, which validation keeps out, counts as the
    // cap), so the cast is a signed truncation of a value that fits: a few instructions
    // instead of the saturating unsigned cast's branches.
    let capped = if exact < MAX as f64 {
        exact
    } else {
        MAX as f64
    };
    let floor = capped as i64 as u64;
    let mem = if f(floor) < capped { floor + 1 } else { floor };
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
fn fmin(a: f64, b: f64) -> f64 {
    // As `fmax`: operands are not NaN here (an infinite cap is fine).
    if a < b {
        a
    } else {
        b
    }
}

#[inline]
fn utilization(n: &NodeEntry, w0: u64, external: f64) -> f64 {
    let a = Amounts::unpack(w0, 0);
    let x = f(a.inflight) * n.inv_conc;
    let y = f(a.memory_mb) * n.inv_mem;
    let z = f(a.tokens) * n.inv_tokens;
    // Other routers' work on the node (0 without fleet mode), read from the snapshot.
    let u = fmax(fmax(x, y), z) + external;
    if u > 1.0 {
        1.0
    } else {
        u
    }
}

#[inline]
fn capability_score(
    table: &RoutingTable,
    n: &NodeEntry,
    required: &CapSet,
    req_len: usize,
    single: bool,
) -> f64 {
    if n.scores_len == 0 || req_len == 0 {
        return 1.0;
    }
    // Mean over the required capabilities this node offers (a chain's other stages may
    // offer the rest); unscored ones count as 1. A single-stage route passed the
    // capability check, so its node offers all `req_len` (no popcount per candidate).
    let offered = if single {
        req_len
    } else {
        n.caps.intersection_len(required)
    };
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
    (sum + f((offered - scored) as u64)) / f(offered as u64)
}

/// The share of the task's prompt predicted cached on `n`: all of it when `n` recently took
/// the task's affinity key, else the longest sampled prefix depth `n` took (its own recent
/// keys, or the fleet-wide hint) over the prompt's blocks.
#[inline]
fn held_share(task: &Task, n: &NodeEntry, hint: Option<(NodeId, f64)>) -> f64 {
    if let Some(key) = task.affinity_key {
        let hinted = matches!(hint, Some((id, _)) if id == n.id);
        return if hinted || n.live.recalls(key) {
            1.0
        } else {
            0.0
        };
    }
    if task.prefix.is_empty() {
        return 0.0;
    }
    let own = f(n.live.prefix_depth(&task.prefix) as u64) / f(task.prefix.blocks() as u64);
    match hint {
        Some((id, share)) if id == n.id => fmax(own, share),
        _ => own,
    }
}

/// What the stages of one route add up to (see `evaluate`).
struct Sums {
    latency: f64,
    memory: f64,
    cpu: f64,
    price: f64,
    /// The pressure term (see the module docs).
    pressure: f64,
    price_rel: f64,
    confidence: f64,
    full: bool,
}

/// The task's figures every stage reads, taken once per decision.
struct Demand<'a> {
    task: &'a Task,
    input: f64,
    output: f64,
    tokens: u64,
    req_len: usize,
    hint: Option<(NodeId, f64)>,
    /// Affinity is on and the task has a key or a prefix to match.
    affinity: bool,
    /// The task's latency and memory limits (infinite: none).
    max_latency: f64,
    max_memory: f64,
    /// `1 / max_latency_ms` for the confidence (0: no latency limit).
    inv_latency: f64,
    /// The cost-at-slack floor of the score (see `evaluate`).
    floor: f64,
    /// The price of the task's tokens per unit of a node's price per token.
    price_tokens: f64,
}

impl<'a> Demand<'a> {
    fn new(
        table: &RoutingTable,
        task: &'a Task,
        req_len: usize,
        hint: Option<(NodeId, f64)>,
    ) -> Self {
        let c = &task.constraints;
        let has_latency = c.max_latency_ms != u32::MAX;
        // `u32::MAX` means no limit: infinite, so no sum is above it.
        let limit = |x: u32| {
            if x == u32::MAX {
                f64::INFINITY
            } else {
                x as f64
            }
        };
        Demand {
            task,
            input: task.input_tokens as f64,
            output: task.output_tokens as f64,
            tokens: task.total_tokens(),
            req_len,
            hint,
            affinity: table.weights.affinity > 0.0
                && (task.affinity_key.is_some() || !task.prefix.is_empty()),
            max_latency: limit(c.max_latency_ms),
            max_memory: limit(c.max_memory_mb),
            inv_latency: if has_latency {
                1.0 / c.max_latency_ms.max(1) as f64
            } else {
                0.0
            },
            floor: if has_latency {
                fmin(
                    table.slack_margin * c.max_latency_ms as f64,
                    table.slack_cap_ms,
                )
            } else {
                0.0
            },
            price_tokens: f(task.total_tokens()),
        }
    }
}

/// Adds one stage (node `n`) of a route to `sums`. `single`: the route has this one stage
/// (so it offers every required capability). `pre`: its capability score, when the table
/// has it precomputed (`RoutingTable::by_cap_score`).
#[inline(always)]
fn add_stage(
    table: &RoutingTable,
    n: &NodeEntry,
    t: &Demand<'_>,
    single: bool,
    pre: Option<f64>,
    sums: &mut Sums,
) -> Result<(), Miss> {
    let task = t.task;
    // The live failure streak takes a node out before the next tick does (health.rs).
    if !n.eligible || n.live.consecutive_failures() >= n.eject_after {
        return Err(Miss::Unhealthy);
    }
    let w = &table.weights;
    let (d0, d1) = demand(n, task);
    let (w0, w1) = n.live.load_for(d1 != 0);
    let cap0 = n.cap0_class[task.constraints.priority.index()];
    sums.full |= !(fits0(w0, d0, cap0) && (d1 == 0 || fits1(w1, d1, n.cap1)));
    if n.ns_per_token > 0 {
        // A node at its token rate counts as full: routing prefers others.
        let cost = t.tokens.saturating_mul(n.ns_per_token);
        sums.full |= !n.live.rate_allows(table.now_ns(), cost, n.burst_ns);
    }
    if n.probe_only && Amounts::unpack(w0, 0).inflight >= n.probe_limit {
        return Err(Miss::Unhealthy); // half-open: its probes are out
    }
    let u = utilization(n, w0, n.ext_util);
    // Prefix affinity: a node that recently served this key, or the leading blocks of
    // this prompt, likely holds them in KV cache, so that share of the prefill is
    // predicted saved (discounted by `w.affinity`, the odds it is still cached).
    let mut prefill = t.input * n.prefill_ms_per_token;
    if t.affinity {
        let held = held_share(task, n, t.hint);
        if held > 0.0 {
            prefill *= 1.0 - w.affinity * held;
        }
    }
    let latency = (n.base_ms + prefill + t.output * n.decode_ms_per_token)
        * (1.0 + n.batch_slowdown * u)
        * n.latency_factor;
    let cap = match pre {
        Some(c) => c,
        None => capability_score(table, n, &task.constraints.required, t.req_len, single),
    };
    let cap_factor = fmax(1.0 - w.capability * (1.0 - cap), 0.05);
    // The weight is not in the score: it shapes which candidates are drawn (see `plan`),
    // so a node at 10 % weight gets about 10 % of a share instead of losing every pair.
    // The pressure term: latency inflated by load, deflated by capability quality.
    sums.pressure += latency * (1.0 + w.load * u) / cap_factor;
    sums.price_rel += n.price_rel;
    sums.latency += latency;
    sums.memory += f(Amounts::unpack(d0, 0).memory_mb);
    sums.cpu = fmax(sums.cpu, n.cpu_share_per_task);
    sums.price += t.price_tokens * n.price_per_token;
    let c = n.success_rate * cap;
    if c < sums.confidence {
        sums.confidence = c;
    }
    Ok(())
}

/// Evaluates one route for one task against the live ledgers, writing the candidate into
/// `out` (left partially written on a miss).
#[inline]
fn evaluate(
    table: &RoutingTable,
    slot: u32,
    t: &Demand<'_>,
    cap: Option<f64>,
    out: &mut RouteChoice,
) -> Result<(), Miss> {
    let task = t.task;
    let r: &RouteEntry = &table.routes[slot as usize];
    if !r.caps.contains_all(&task.constraints.required) {
        return Err(Miss::NotCapable);
    }
    let mut sums = Sums {
        latency: 0.0,
        memory: 0.0,
        cpu: 0.0,
        price: 0.0,
        pressure: 0.0,
        price_rel: 0.0,
        confidence: 1.0,
        full: false,
    };
    out.route.route = r.id;
    out.route.epoch = table.epoch;
    out.route.slot = slot;
    out.route.len = r.len;
    if let [s] = *r.stages() {
        // The common single-stage route, straight-line: the stage loop's set-up (every
        // invariant hoisted out of it, most spilled to the stack) cost more than the stage.
        let n = &table.nodes[s as usize];
        add_stage(table, n, t, true, cap, &mut sums)?;
        out.route.stages[0] = n.id;
    } else {
        for (i, &s) in r.stages().iter().enumerate() {
            let n = &table.nodes[s as usize];
            add_stage(table, n, t, false, None, &mut sums)?;
            out.route.stages[i] = n.id;
        }
    }
    if sums.latency > t.max_latency || sums.memory > t.max_memory {
        return Err(Miss::Constraint);
    }
    if sums.full {
        return Err(Miss::Full);
    }
    // With no latency limit `inv_latency` is 0 and the factor 1.
    let x = sums.latency * t.inv_latency;
    let confidence = sums.confidence * (1.0 - 0.5 * x * x);
    out.cost = ResourceCost {
        memory_mb: sums.memory,
        cpu_utilization: sums.cpu,
        expected_latency_ms: sums.latency,
        estimated_tokens: t.tokens,
        price: sums.price,
    };
    out.confidence = confidence.clamp(0.0, 1.0);
    // Cost at slack: below `slack_margin × max_latency_ms` the pressure term is held at
    // that floor, so among routes that fit the limit with room to spare price decides (the
    // eighth of the pressure term kept beside the floor still prefers the less loaded of two
    // equally priced routes). Above it the pressure term rises and latency and load take over.
    // With no limit, or a margin of 0, the floor is 0: the score is `pressure × price`. The
    // floor never exceeds `slack_cap_ms` (twice the fleet's typical completed latency, infinite
    // until one completes): a task long in absolute terms is scored on latency, not moved to a
    // slower node for its price, since such tasks make the tail.
    // (`floor` is taken once per decision, in `Demand::new`.)
    let score = sums.pressure;
    let price_rel = if r.len <= 1 {
        sums.price_rel
    } else {
        sums.price_rel / f(r.len as u64)
    };
    out.score = (fmax(score, t.floor) + TIE * score) * (1.0 + table.weights.cost * price_rel);
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
    let (pool, req_len, pool_scores) = table
        .pool_counted(&task.constraints.required)
        .ok_or(RouteError::NoCapableRoute)?;
    if pool.is_empty() {
        return Err(RouteError::NoCapableRoute);
    }
    let want = (table.weights.alternatives + 1).clamp(2, 1 + MAX_ALTERNATIVES);
    // Prefix affinity: the node that last took this key is evaluated first, and joins the
    // P2C pair if it is feasible (see `affinity.rs`).
    let hint = match (task.affinity_key, &table.hints) {
        _ if table.weights.affinity <= 0.0 => None,
        (Some(key), Some(hints)) => hints.get(key).map(|n| (n, 1.0)),
        (None, Some(hints)) if !task.prefix.is_empty() => hints
            .deepest(&task.prefix)
            .map(|(n, d)| (n, f(d as u64) / f(task.prefix.blocks() as u64))),
        _ => None,
    };
    let hint_slot = hint
        .and_then(|(id, _)| table.node_slot.get(id.0 as usize).copied())
        .filter(|&s| {
            (s as usize) < table.nodes.len()
                && table.routes[s as usize]
                    .caps
                    .contains_all(&task.constraints.required)
        });
    let demand = Demand::new(table, task, req_len, hint);
    let mut best_miss = Miss::NotCapable;
    // `at`: the candidate's index in the pool (for its precomputed capability score), or
    // `usize::MAX` for the hinted node.
    let mut consider = |at: usize, slot: u32, out: &mut RouteOptions| {
        let Some(next) = out.next_slot() else { return };
        let cap = pool_scores.get(at).map(|&s| s as f64);
        match evaluate(table, slot, &demand, cap, next) {
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
            let at = (start + k) % pool.len();
            consider(at, pool[at], out);
        }
    } else {
        let mut drawn = [u32::MAX; MAX_DRAWS];
        let first = match hint_slot {
            Some(s) => {
                drawn[0] = s;
                consider(usize::MAX, s, out);
                1
            }
            None => 0,
        };
        for d in first..MAX_DRAWS {
            if out.len() >= want {
                break;
            }
            let at = rng.below(pool.len());
            let slot = pool[at];
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
            consider(at, slot, out);
        }
        if out.len() < 2 {
            // Feasible routes are rare here: scan, skipping what was already drawn.
            let start = rng.below(pool.len());
            for k in 0..pool.len() {
                if out.len() >= want {
                    break;
                }
                let at = (start + k) % pool.len();
                let slot = pool[at];
                if drawn.contains(&slot) {
                    continue;
                }
                consider(at, slot, out);
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
        // to their weights. Sampled candidates were drawn in proportion already, so two
        // uniform indices do; small pools, evaluated whole, draw by weight.
        // The hinted node, when feasible, is one of the pair (and competes on score).
        let hinted = hint_slot.and_then(|s| found.iter().position(|c| c.route.slot == s));
        let (a, b) = if exhaustive {
            let weight = |c: &RouteChoice| table.routes[c.route.slot as usize].weight;
            let a = hinted.unwrap_or_else(|| weighted_index(found, usize::MAX, &weight, rng));
            (a, weighted_index(found, a, &weight, rng))
        } else {
            let a = hinted.unwrap_or_else(|| rng.below(n));
            // Uniform over the other n − 1 indices.
            let b = rng.below(n - 1);
            (a, if b >= a { b + 1 } else { b })
        };
        debug_assert_ne!(a, b, "p2c needs two distinct candidates");
        let mut winner = if found[b].score < found[a].score {
            b
        } else {
            a
        };
        // The tail is not for sale, nor left to chance: when the pair's pick is predicted to
        // take far longer than the fleet's typical task (`TAIL_PICK`), every candidate
        // evaluated competes on its score without the price factor, which ranks them by
        // their pressure terms (predicted latency, inflated by load, deflated by capability
        // quality). A random pair of two slow nodes would otherwise make the p99, and the
        // price factor would hold a long task off the fast nodes it needs. (`tail_ms` is
        // infinite until a task completes: no task is a tail task before the fleet's typical
        // latency is known; it is kept in the table, not multiplied out per decision.)
        if found[winner].cost.expected_latency_ms > table.tail_ms {
            let mut best = unpriced(table, &found[winner]);
            for (i, c) in found.iter().enumerate() {
                let u = unpriced(table, c);
                if u < best {
                    (winner, best) = (i, u);
                }
            }
        }
        if winner != 0 {
            found.swap(0, winner);
        }
        // The alternatives, best first; two of them (the default) need one compare.
        match &mut found[1..] {
            [x, y] => {
                if y.score.total_cmp(&x.score).is_lt() {
                    std::mem::swap(x, y);
                }
            }
            rest => rest.sort_unstable_by(|x, y| x.score.total_cmp(&y.score)),
        }
    }
    out.truncate(1 + table.weights.alternatives);
    Ok(())
}

/// A candidate's score without its price factor: `max(pressure, floor) + pressure / 8`,
/// which orders candidates as their pressure terms do (see `evaluate`). Only a tail task's
/// pick needs it, so the price factor is taken again here instead of kept per candidate.
fn unpriced(table: &RoutingTable, c: &RouteChoice) -> f64 {
    let r = &table.routes[c.route.slot as usize];
    let stages = r.stages();
    let sum: f64 = stages
        .iter()
        .map(|&s| table.nodes[s as usize].price_rel)
        .sum();
    let price_rel = sum / f(stages.len().max(1) as u64);
    // `weights.cost` and every `price_rel` are validated non-negative: the factor is ≥ 1.
    c.score / (1.0 + table.weights.cost * price_rel)
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
        Some(slot) => {
            let demand = Demand::new(table, task, task.constraints.required.len(), None);
            evaluate(table, slot, &demand, None, &mut RouteChoice::default()).is_ok()
        }
        None => false,
    }
}

#[cfg(all(test, not(switchyard_loom)))]
mod test {
    use super::*;
    use crate::{ChainSpec, NodeSpec, Router};

    /// A tail task (predicted far beyond the fleet's typical latency) takes the candidate
    /// with the lowest pressure among all evaluated, whatever its price and whatever the
    /// pair; the body of the distribution keeps the priced P2C pick.
    #[test]
    fn a_tail_task_takes_the_fastest_candidate_evaluated_and_the_body_the_cheaper() {
        use crate::Outcome;
        // `fast` is 1.3 times faster than the others and 6.7 times pricier: on score (price
        // counted) a slow node wins every pair, and every pair of these three holds one.
        let router = Router::builder()
            .node(
                NodeSpec::new("fast")
                    .speed(10.0, 10_000.0, 13.0)
                    .cost_per_1k_tokens(2.0),
            )
            .nodes((0..2).map(|i| {
                NodeSpec::new(format!("slow{i}"))
                    .speed(10.0, 10_000.0, 10.0)
                    .cost_per_1k_tokens(0.3)
            }))
            .build()
            .unwrap();
        let fast = router.snapshot().node_id("fast").unwrap();
        let long = Task::new(1, 1_000, 1_000); // about 77 s on `fast`
        let short = Task::new(2, 10, 1); // about 90 ms
        let mut reader = router.reader();
        let primaries = |task: &Task, reader: &mut crate::RouteReader| {
            (0..200)
                .filter(|_| {
                    let (options, _lease) = reader.route(task).unwrap();
                    options.primary().route.stages()[0] == fast
                })
                .count()
        };
        // No task has completed: the typical latency is unknown and no task is a tail task.
        assert_eq!(primaries(&long, &mut reader), 0);
        // Tasks complete in about 100 ms: the cap is twice that, the tail beyond 400 ms.
        for _ in 0..8 {
            let (_, lease) = reader.route(&short).unwrap();
            lease.complete(Outcome::Success, 100.0);
        }
        router.tick();
        let cap = router.snapshot().slack_cap_ms;
        assert!((cap - 200.0).abs() < 1e-6, "cap {cap}");
        assert_eq!(
            primaries(&long, &mut reader),
            200,
            "every long task on the fastest"
        );
        assert_eq!(
            primaries(&short, &mut reader),
            0,
            "short tasks still priced"
        );
    }

    /// The capability scores precomputed beside each pool give every candidate the same
    /// score, confidence and cost as computing them per candidate.
    #[test]
    fn precomputed_capability_scores_match_the_computed_ones() {
        let router = Router::builder()
            .capabilities(["chat", "code", "vision"])
            .node(
                NodeSpec::new("a")
                    .capabilities(["chat", "code"])
                    .capability_score("code", 0.5),
            )
            .node(
                NodeSpec::new("b")
                    .capabilities(["chat", "vision"])
                    .capability_score("chat", 0.8)
                    .capability_score("vision", 0.3),
            )
            .node(NodeSpec::new("c").capabilities(["code"]))
            .chain(ChainSpec::new("ab", ["a", "b"]))
            .build()
            .unwrap();
        let table = router.reader().snapshot().clone();
        table.check_invariants().unwrap();
        let mut compared = 0;
        for name in ["chat", "code", "vision"] {
            let task = Task::new(1, 200, 50)
                .require(router.resolve(&[name]).unwrap())
                .max_latency_ms(60_000);
            let (pool, req_len, scores) = table.pool_counted(&task.constraints.required).unwrap();
            assert_eq!((req_len, scores.len()), (1, pool.len()));
            let demand = Demand::new(&table, &task, req_len, None);
            for (at, &slot) in pool.iter().enumerate() {
                let (mut pre, mut computed) = (RouteChoice::default(), RouteChoice::default());
                let a = evaluate(&table, slot, &demand, Some(scores[at] as f64), &mut pre);
                let b = evaluate(&table, slot, &demand, None, &mut computed);
                assert_eq!(a, b);
                assert_eq!(pre, computed, "{name}, slot {slot}");
                compared += 1;
            }
        }
        // chat: a, b, ab; code: a, c, ab; vision: b, ab.
        assert_eq!(compared, 8);
    }
}
