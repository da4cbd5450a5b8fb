//! The control loop: the only writer of the routing snapshot.
//!
//! Fleet changes (add, update, remove a node; add or remove a chain; new weights; a manual
//! health verdict) are validated when they are asked for and applied to the desired fleet at
//! once; the next [`tick`](crate::Router::tick) folds in what the live counters say and
//! publishes one new snapshot with one `store`. Live state is keyed by stable node id: a node
//! that is updated keeps its counters, and a node that is removed keeps its live state alive
//! for as long as any lease on it is out (the lease holds it), so nothing is lost or charged
//! to the wrong node.
//!
//! # The balance rule
//! Each tick, for each node: `u` = its utilisation now, `ū` = the fleet mean;
//! `balance = 1 / (1 + max(0, u − ū))`. A node that stays hotter than the fleet gets a
//! slightly smaller weight on top of the live-load term of the score, which damps persistent
//! hot spots (e.g. a node whose tasks run longer than modelled) without reacting to one
//! burst. `latency_factor` = the node's observed/predicted latency EWMA, clamped to
//! 0.25–20 (1 before any sample), so the latency estimate follows what the node really does.
//! `success_rate` = successes over successes + server errors + timeouts + abandoned tickets
//! since the previous tick, smoothed (rate-limited and cancelled outcomes say nothing about
//! node quality).
//!
//! `fleet.rs` holds the fleet changes, `reports.rs` what the controller reports.
mod fleet;
mod reports;
use std::collections::HashMap;

use crate::capability::{CapSet, CapabilityRegistry};
use crate::clock::Clock;
use crate::error::ConfigError;
use crate::health::{HealthPolicy, NodeHealthState, Observation, Phase, Verdict};
use crate::lease::slab::LeaseShared;
use crate::model::{HealthStatus, NodeId, Outcome};
use crate::node::{Amounts, ChainSpec, NodeLive, NodeSpec, Resolved};
use crate::routing::table::{
    ChainInput, Headroom, HealthView, NodeInput, RoutingTable, ScoringWeights, Spare,
};
use crate::sync::{arc_from_std, Arc, SnapshotCell};
use crate::tenant::TenantLimit;

pub use crate::limits::MAX_NODES;

/// Cost at slack may add latency up to this many times the fleet's typical completed
/// latency, and no more: slowing a task that is already long for a lower price is what makes
/// the tail (p99 is set by the longest tasks), while the body of the distribution can be
/// moved to cheaper nodes without moving it. Set from a 1.5 / 2 / 3 sweep over both bundled
/// traces, seeds 1-5 (docs/simulator.md).
pub(crate) const TAIL_CAP: f64 = 2.0;

/// Completed tasks with a latency limit per adjustment of the cost-at-slack margin: at the
/// default 99 % target, one miss in a window is still on target.
const SLO_WINDOW: u64 = 100;

#[derive(Debug)]
struct NodeState {
    id: NodeId,
    name: Arc<str>,
    spec: NodeSpec,
    res: Resolved,
    live: Arc<NodeLive>,
    status: HealthStatus,
    latency_factor: f64,
    balance: f64,
    success_rate: f64,
    prev_outcomes: [u64; 6],
    /// `live.slo_counts()` at the previous tick.
    prev_slo: (u64, u64),
    health: NodeHealthState,
    verdict: Verdict,
    /// Measured-quality factor on the weight (`CapabilityAwareRouter::update_routing_weights`).
    quality: f64,
    /// In-flight tasks and tokens other routers hold on the node (`Router::set_external_load`).
    external: (u64, u64),
}

#[derive(Debug)]
struct ChainState {
    number: u32,
    spec: ChainSpec,
    stages: Vec<NodeId>,
    caps: CapSet,
}

/// What one control tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickReport {
    /// Epoch of the snapshot published by this tick.
    pub epoch: u64,
    /// Nodes in it.
    pub nodes: usize,
    /// Removed nodes whose leases are still out.
    pub draining: usize,
    /// Whether this tick published a new snapshot (it does not when nothing changed).
    pub published: bool,
}

#[derive(Debug)]
pub(crate) struct Controller {
    registry: CapabilityRegistry,
    nodes: Vec<NodeState>,
    /// Removed nodes still referenced by a lease, a ticket or a snapshot (kept for reports).
    retired: Vec<(Arc<str>, Arc<NodeLive>)>,
    /// Head outcomes of removed nodes that are gone for good.
    retired_totals: [u64; 6],
    ids: HashMap<String, NodeId>,
    chains: Vec<ChainState>,
    chain_numbers: HashMap<String, u32>,
    weights: ScoringWeights,
    /// The cost-at-slack margin in use (0..=`weights.slack`), and the tasks with a latency
    /// limit completed (within it, not) since it was last adjusted.
    margin: f64,
    slo_window: (u64, u64),
    /// The fleet's typical completed latency, ms (completion-weighted mean of the nodes'
    /// latency EWMAs, smoothed over ticks; 0 before the first completion).
    typical_ms: f64,
    /// The cost-at-slack cap in force, ms (`TAIL_CAP` × `typical_ms`; infinite before any
    /// completion).
    slack_cap_ms: f64,
    policy: HealthPolicy,
    headroom: Headroom,
    /// The router's clock, handed to each snapshot for token-rate checks.
    pub(crate) clock: Option<std::sync::Arc<dyn crate::clock::Clock>>,
    /// Lease records (when leases time out: expired ones are reclaimed on each tick) and
    /// the tenants' GCRA states.
    pub(crate) shared: Arc<LeaseShared>,
    /// Token-rate limits by tenant id.
    tenant_limits: Vec<TenantLimit>,
    /// Prefix-affinity hints, handed to every snapshot.
    hints: Arc<crate::routing::affinity::AffinityHints>,
    /// Too few nodes serve: ejections are ignored (see `HealthPolicy::panic_threshold`).
    panic: bool,
    epoch: u64,
    last_tick_ns: u64,
    /// A fleet change is waiting to be published.
    dirty: bool,
    /// The snapshot last published, and older ones some reader may still hold: the control
    /// thread drops them once nobody else does, so a worker never pays for freeing a table.
    current: Option<Arc<RoutingTable>>,
    old_tables: Vec<Arc<RoutingTable>>,
    /// The emptied buffers of one snapshot nobody holds any more, for the next publish.
    spare: Option<Spare>,
}

impl Controller {
    pub(crate) fn new(
        registry: CapabilityRegistry,
        weights: ScoringWeights,
    ) -> Result<Self, ConfigError> {
        weights.validate()?;
        Ok(Self {
            registry,
            nodes: Vec::new(),
            retired: Vec::new(),
            retired_totals: [0; 6],
            ids: HashMap::new(),
            chains: Vec::new(),
            chain_numbers: HashMap::new(),
            margin: weights.slack,
            slo_window: (0, 0),
            typical_ms: 0.0,
            slack_cap_ms: f64::INFINITY,
            weights,
            policy: HealthPolicy::default(),
            headroom: Headroom::default(),
            clock: None,
            shared: Arc::new(LeaseShared::new(None)),
            tenant_limits: Vec::new(),
            hints: Arc::new(crate::routing::affinity::AffinityHints::new()),
            panic: false,
            epoch: 0,
            last_tick_ns: 0,
            dirty: true,
            current: None,
            old_tables: Vec::new(),
            spare: None,
        })
    }

    /// Recomputes weights from the live counters and publishes a new snapshot.
    pub(crate) fn tick(
        &mut self,
        cell: &SnapshotCell<RoutingTable>,
        clock: &dyn Clock,
    ) -> TickReport {
        let now = clock.now_ns();
        self.last_tick_ns = now;
        self.reclaim_expired(now);
        // Utilisation now, per node.
        let utils: Vec<f64> = self
            .nodes
            .iter()
            .map(|n| {
                let (w0, w1) = n.live.load();
                Amounts::unpack(w0, w1).utilization(&n.res.cap)
            })
            .collect();
        let mean = if utils.is_empty() {
            0.0
        } else {
            utils.iter().sum::<f64>() / utils.len() as f64
        };
        // Publish only when something moved by more than 1 %: an idle fleet churns no tables.
        let moved = |old: f64, new: f64| (new - old).abs() > 0.01 * old.abs().max(1e-9);
        let mut changed = self.dirty;
        let policy = self.policy;
        let fleet = self.nodes.len();
        let cap = ((policy.max_ejected_share * fleet as f64) as usize).max(1);
        let mut out = self.nodes.iter().filter(|n| n.health.is_out()).count();
        // A node with no completion yet is presumed as fast, relative to its prediction, as
        // the median of the nodes that have one: with a neutral 1.0 instead, a new node in a
        // fleet that runs faster than predicted would be scored slower than every peer and,
        // while load stays low, never get the request that would measure it.
        let slows: Vec<f64> = self.nodes.iter().map(|n| n.live.slowness()).collect();
        let prior = {
            let mut m: Vec<f64> = slows.iter().copied().filter(|s| *s > 0.0).collect();
            m.sort_by(f64::total_cmp);
            m.get(m.len() / 2).copied().unwrap_or(1.0)
        };
        let (mut done, mut weighted) = (0u64, 0.0f64);
        for ((n, u), &slow) in self.nodes.iter_mut().zip(&utils).zip(&slows) {
            let (balance, factor, success) = (n.balance, n.latency_factor, n.success_rate);
            n.balance = 1.0 / (1.0 + (u - mean).max(0.0));
            n.latency_factor = if slow > 0.0 { slow } else { prior }.clamp(0.25, 20.0);
            let slo = n.live.slo_counts();
            let prev_slo = std::mem::replace(&mut n.prev_slo, slo);
            self.slo_window.0 += slo.0.saturating_sub(prev_slo.0);
            self.slo_window.1 += slo.1.saturating_sub(prev_slo.1);
            let o = n.live.all_outcomes();
            let prev = std::mem::replace(&mut n.prev_outcomes, o);
            let d = |k: Outcome| o[k.index()].saturating_sub(prev[k.index()]);
            let ok = d(Outcome::Success);
            let seen = n.live.latency_ewma_ms();
            if ok > 0 && seen.is_finite() && seen > 0.0 {
                done += ok;
                weighted += ok as f64 * seen;
            }
            let failed = d(Outcome::ServerError) + d(Outcome::Timeout) + d(Outcome::Abandoned);
            if ok + failed > 0 {
                let rate = ok as f64 / (ok + failed) as f64;
                n.success_rate = 0.5 * n.success_rate + 0.5 * rate;
            } else {
                // No outcome this tick: forgive a tenth of the gap, so a node that gets little
                // traffic (degraded, slow-starting) is not judged on old failures forever.
                n.success_rate += 0.1 * (1.0 - n.success_rate);
            }
            let obs = Observation {
                ok,
                failed,
                rate_limited: d(Outcome::RateLimited),
                consecutive: n.live.consecutive_failures(),
                latency_factor: n.latency_factor,
                success_rate: n.success_rate,
            };
            let was_out = n.health.is_out();
            let (verdict, reset) = n.health.step(now, &obs, &policy, out < cap);
            match (was_out, n.health.is_out()) {
                (false, true) => out += 1,
                (true, false) => out = out.saturating_sub(1),
                _ => {}
            }
            // A failing node the cap kept serving gets its streak cleared, or the hot path's
            // gate would keep it out with no back-off and no probe.
            let capped = n.health.phase == Phase::Serving
                && policy.consecutive_failures > 0
                && obs.consecutive >= policy.consecutive_failures as u64;
            if reset || capped {
                n.live.reset_consecutive_failures();
            }

            n.status = verdict.status;
            changed |= (verdict.status, verdict.eligible, verdict.probe_only)
                != (n.verdict.status, n.verdict.eligible, n.verdict.probe_only)
                || moved(n.verdict.weight, verdict.weight);
            n.verdict = verdict;
            changed |= moved(balance, n.balance)
                || moved(factor, n.latency_factor)
                || moved(success, n.success_rate);
        }
        changed |= self.adapt_margin();
        changed |= self.adapt_cap(done, weighted);
        let serving = self
            .nodes
            .iter()
            .filter(|n| n.verdict.eligible && !n.verdict.probe_only)
            .count();
        let panic = fleet > 0 && (serving as f64) < policy.panic_threshold * fleet as f64;
        changed |= panic != self.panic;
        self.panic = panic;
        // Old snapshots first: they may be what still holds a removed node.
        self.reclaim_tables();
        // A removed node leaves the report once nothing but us holds it: then no lease or
        // ticket can still record on it, and its counts move into the retired totals.
        let totals = &mut self.retired_totals;
        self.retired.retain_mut(|(_, live)| {
            // `get_mut` succeeds only when we hold the last reference, and checks that with
            // Acquire: it synchronises with the Release of the last ticket's `Arc` drop, so
            // the outcome that ticket recorded just before is visible below (a Relaxed
            // `strong_count` would not guarantee that on weakly ordered CPUs).
            let Some(live) = Arc::get_mut(live) else {
                return true;
            };
            for (t, o) in totals.iter_mut().zip(live.outcomes()) {
                *t += o;
            }
            false
        });
        if changed {
            self.publish(cell)
        } else {
            self.report(false)
        }
    }

    /// Adjusts the cost-at-slack margin once a window of tasks with a latency limit has
    /// completed: attainment below `slo_target` halves it (a miss streak backs off within a
    /// few windows), attainment at or above it raises it by a quarter of `slack` (back to the
    /// full margin in four clean windows). Returns whether it moved.
    fn adapt_margin(&mut self) -> bool {
        let (met, late) = self.slo_window;
        if met + late < SLO_WINDOW {
            return false;
        }
        self.slo_window = (0, 0);
        let (old, max) = (self.margin, self.weights.slack);
        let attained = met as f64 / (met + late) as f64;
        self.margin = if attained < self.weights.slo_target {
            let half = 0.5 * old;
            // Below a sixty-fourth of the maximum the floor does nothing useful: off.
            if half < max / 64.0 {
                0.0
            } else {
                half
            }
        } else {
            (old + 0.25 * max).min(max)
        };
        self.margin != old
    }

    /// Follows the fleet's typical completed latency and the cost-at-slack cap it sets;
    /// returns whether the cap moved by more than a tenth (worth a new snapshot).
    fn adapt_cap(&mut self, done: u64, weighted: f64) -> bool {
        let now = weighted / done.max(1) as f64;
        if done == 0 || !now.is_finite() || now <= 0.0 {
            return false;
        }
        self.typical_ms = if self.typical_ms > 0.0 {
            0.8 * self.typical_ms + 0.2 * now
        } else {
            now
        };
        let cap = TAIL_CAP * self.typical_ms;
        let old = self.slack_cap_ms;
        let moved = !old.is_finite() || (cap - old).abs() > 0.1 * old;
        if moved {
            self.slack_cap_ms = cap;
        }
        moved
    }

    /// Reclaims leases held past their timeout: returns their resources to the ledgers and
    /// records a timeout on each stage (counted once, by the head), as a lost completion.
    fn reclaim_expired(&self, now: u64) {
        let Some(slab) = &self.shared.slab else {
            return;
        };
        let (nodes, retired) = (&self.nodes, &self.retired);
        slab.reclaim_expired(now, |stage, s| {
            // A lease holds its nodes alive, so an active record's node is current or
            // retired (a removed node stays retired while anything holds it).
            let live = nodes
                .iter()
                .map(|n| &n.live)
                .chain(retired.iter().map(|(_, l)| l))
                .find(|l| l.id == s.node);
            if let Some(live) = live {
                live.release(s.d0, s.d1);
                live.record_outcome(stage == 0, Outcome::Timeout, 0.0, 0.0);
            }
        });
    }

    fn report(&self, published: bool) -> TickReport {
        TickReport {
            epoch: self.epoch,
            nodes: self.nodes.len(),
            draining: self.retired.len(),
            published,
        }
    }

    /// Builds and stores a snapshot of the desired fleet.
    pub(crate) fn publish(&mut self, cell: &SnapshotCell<RoutingTable>) -> TickReport {
        self.epoch += 1;
        let nodes = self.nodes.iter().map(|n| NodeInput {
            id: n.id,
            name: &n.name,
            live: &n.live,
            res: &n.res,
            status: n.status,
            latency_factor: n.latency_factor,
            balance: n.balance,
            success_rate: n.success_rate,
            eligible: n.verdict.eligible,
            pinned_out: n.health.manual == Some(HealthStatus::Failed),
            probe_only: n.verdict.probe_only,
            health_weight: n.verdict.weight,
            quality: n.quality,
            external: n.external,
        });
        let chains: Vec<ChainInput> = self
            .chains
            .iter()
            .filter(|c| {
                c.stages
                    .iter()
                    .all(|id| self.nodes.iter().any(|n| n.id == *id))
            })
            .map(|c| ChainInput {
                number: c.number,
                name: arc_from_std(c.spec.name.as_str().into()),
                stages: c.stages.clone(),
                caps: c.caps,
            })
            .collect();
        // The registry only grows (names are interned, never renamed or removed), so the
        // last snapshot's copy is still exact while the count matches.
        let registry = match &self.current {
            Some(t) if t.registry.len() == self.registry.len() => Arc::clone(&t.registry),
            _ => Arc::new(self.registry.clone()),
        };
        let table = RoutingTable::build(
            self.spare.take().unwrap_or_default(),
            self.epoch,
            registry,
            nodes,
            &chains,
            self.weights,
            HealthView {
                panic: self.panic,
                consecutive_failures: self.policy.consecutive_failures,
                half_open_probes: self.policy.half_open_probes,
            },
            self.headroom,
        );
        let table = Arc::new(RoutingTable {
            clock: self.clock.clone(),
            shared: Some(Arc::clone(&self.shared)),
            tenant_limits: self.tenant_limits.clone().into_boxed_slice(),
            hints: Some(Arc::clone(&self.hints)),
            slack_margin: self.margin,
            slack_cap_ms: self.slack_cap_ms,
            tail_ms: crate::routing::select::TAIL_PICK * self.slack_cap_ms,
            ..table
        });
        cell.store(Arc::clone(&table));
        if let Some(prev) = self.current.replace(table) {
            self.old_tables.push(prev);
        }
        self.reclaim_tables();
        self.dirty = false;
        self.report(true)
    }

    /// Drops the old snapshots no reader holds any more, here on the control thread, and
    /// keeps the buffers of one for the next publish (emptied: the `Arc`s its entries held,
    /// removed nodes' among them, are released now).
    fn reclaim_tables(&mut self) {
        // Backwards, so that what `swap_remove` moves into place was already looked at.
        for i in (0..self.old_tables.len()).rev() {
            if Arc::strong_count(&self.old_tables[i]) > 1 {
                continue;
            }
            let table = self.old_tables.swap_remove(i);
            // `try_unwrap` confirms we hold the last reference, with Acquire ordering
            // against the Release of the reader that dropped the one before it; a reader
            // cannot take a new one, since the cell holds a newer table.
            match Arc::try_unwrap(table) {
                Ok(table) if self.spare.is_none() => self.spare = Some(Spare::from_table(table)),
                Ok(_) => {}
                Err(table) => self.old_tables.push(table),
            }
        }
    }
}

#[cfg(all(test, not(switchyard_loom)))]
mod test {
    use crate::sync::Arc;
    use crate::{NodeSpec, Router, ScoringWeights};

    /// Publishes a new snapshot (a weight change, then a tick).
    fn republish(router: &Router, load: f64) {
        let w = ScoringWeights {
            load,
            ..ScoringWeights::default()
        };
        router.set_weights(w).unwrap();
        assert!(router.tick().published);
    }

    #[test]
    fn cost_at_slack_is_capped_at_twice_the_typical_latency_once_tasks_complete() {
        use crate::{Outcome, Task};
        let router = Router::builder()
            .nodes((0..2).map(|i| NodeSpec::new(format!("n{i}"))))
            .build()
            .unwrap();
        assert_eq!(
            router.snapshot().slack_cap_ms,
            f64::INFINITY,
            "no completion yet"
        );
        let mut reader = router.reader();
        let mut finish = |latency_ms: f64, outcome: Outcome| {
            let (_, lease) = reader.route(&Task::new(1, 10, 10)).unwrap();
            lease.complete(outcome, latency_ms);
        };
        for _ in 0..4 {
            finish(400.0, Outcome::Success);
        }
        router.tick();
        let cap = router.snapshot().slack_cap_ms;
        assert!((cap - 800.0).abs() < 1e-6, "cap {cap}");
        // Failures and latencies that are not numbers change nothing.
        finish(f64::NAN, Outcome::Success);
        finish(f64::INFINITY, Outcome::Success);
        finish(-1.0, Outcome::Success);
        finish(5.0, Outcome::ServerError);
        router.tick();
        assert!((router.snapshot().slack_cap_ms - 800.0).abs() < 1e-6);
        // A finite latency beyond `f32` is clamped, not an infinite EWMA that turns NaN.
        finish(f64::MAX, Outcome::Success);
        router.tick();
        assert!(router.snapshot().slack_cap_ms.is_finite());
        // Slower completions move it (smoothed over ticks: a fifth of the way per tick).
        for _ in 0..20 {
            for _ in 0..4 {
                finish(2_000.0, Outcome::Success);
            }
            router.tick();
        }
        let cap = router.snapshot().slack_cap_ms;
        assert!(cap > 2_000.0 && cap.is_finite(), "cap {cap}");
        for m in router.node_metrics() {
            assert!(
                m.latency_ewma_ms.is_finite(),
                "{}: {}",
                m.name,
                m.latency_ewma_ms
            );
        }
    }

    #[test]
    fn a_publish_fills_the_buffers_of_a_table_nobody_holds_and_never_of_a_held_one() {
        let router = Router::builder()
            .nodes((0..8).map(|i| NodeSpec::new(format!("n{i}"))))
            .build()
            .unwrap();
        let a = router.snapshot();
        let a_nodes = a.nodes.as_ptr();
        drop(a);
        // B retires A, which nobody holds: its buffers are kept, emptied, and C is built in
        // them.
        republish(&router, 2.0);
        {
            let ctl = router.control();
            let spare = ctl.spare.as_ref().expect("A's buffers are kept");
            assert_eq!(spare.nodes.as_ptr(), a_nodes);
            assert!(spare.nodes.is_empty() && spare.nodes.capacity() == 8);
            assert!(spare.routes.is_empty() && spare.all.is_empty());
        }
        republish(&router, 3.0);
        let c = router.snapshot();
        assert_eq!(c.nodes.as_ptr(), a_nodes, "C is built in A's node buffer");
        assert_eq!(c.weights.load, 3.0);
        let names: Vec<_> = c.nodes.iter().map(|n| n.name.to_string()).collect();
        assert_eq!(names, (0..8).map(|i| format!("n{i}")).collect::<Vec<_>>());
        assert_eq!(c.routes.len(), 8);
        assert_eq!(&*c.all, &[0, 1, 2, 3, 4, 5, 6, 7]);
        assert!(c.check_invariants().is_ok());
        // Held: C stays intact while D and E are published, and neither is built in it.
        republish(&router, 4.0);
        republish(&router, 5.0);
        let e = router.snapshot();
        assert!(router
            .control()
            .old_tables
            .iter()
            .any(|t| Arc::ptr_eq(t, &c)));
        assert_ne!(e.nodes.as_ptr(), c.nodes.as_ptr());
        assert_eq!(c.weights.load, 3.0);
        assert_eq!(c.nodes.len(), 8);
        assert_eq!(&*c.nodes[7].name, "n7");
        assert_eq!(e.weights.load, 5.0);
    }
}
