//! The immutable routing snapshot.
//!
//! Built whole by the control thread, published through one `ArcSwap`, read by every picker.
//! Flat boxed slices only, so a snapshot drops cheaply wherever its last reader lets go.
use crate::capability::{CapSet, CapabilityRegistry};
use crate::error::ConfigError;
use crate::lease::slab::LeaseShared;
use crate::model::{HealthStatus, NodeId, RouteId, MAX_ALTERNATIVES, MAX_STAGES};
use crate::node::{NodeLive, Resolved};
use crate::sync::{Arc, Ordering};

/// How routes are ranked. Lower scores win; see `docs/architecture.md` for the formula.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoringWeights {
    /// How strongly live utilisation (0–1) inflates a route's score.
    pub load: f64,
    /// How strongly price (relative to the fleet mean) inflates a route's score.
    pub cost: f64,
    /// How strongly a capability score below 1 inflates a route's score (0–1).
    pub capability: f64,
    /// Alternatives returned beside the primary route (0..=4).
    pub alternatives: usize,
    /// Prefix affinity: how much of the prefill a node is predicted to save on the part of the
    /// prompt it recently served (the same affinity key, or the longest shared run of
    /// [`Prefix`](crate::Prefix) blocks): 1 trusts the match in full, 0 turns affinity off
    /// (0–1). A soft factor: it lowers the predicted latency, which then competes with load,
    /// cost and capability in the score.
    pub affinity: f64,
    /// Cost at slack: the largest margin, as a share of a task's latency limit
    /// (`max_latency_ms`), below which predicted latency stops counting and price decides
    /// (0–1; 0 turns it off). The margin in use adapts between 0 and this value from the
    /// measured SLO attainment (see [`slo_target`](Self::slo_target)). Whatever the margin,
    /// the floor stays below twice the fleet's typical completed latency, so a long task is
    /// not moved to a slower node for its price (see docs/architecture.md, "The decision").
    pub slack: f64,
    /// The SLO attainment the adaptive margin defends (0–1): over each window of completed
    /// tasks with a latency limit, attainment below it halves the margin, attainment at or
    /// above it raises the margin by a quarter of `slack`.
    pub slo_target: f64,
}

impl Default for ScoringWeights {
    /// `load` 2, `cost` 0.25, `capability` 1, two alternatives, `affinity` 0.75: a match
    /// is measured per node, but a server's cache may have evicted what the router last sent
    /// there; of 0.5, 0.75 and 1 on the Mooncake trace (5 seeds, docs/simulator.md), 0.75 had
    /// the best p99 with prefix hits within a point of the best.
    fn default() -> Self {
        Self {
            load: 2.0,
            cost: 0.25,
            capability: 1.0,
            alternatives: 2,
            affinity: 0.75,
            slack: DEFAULT_SLACK,
            slo_target: 0.99,
        }
    }
}

/// The default cost-at-slack margin: a route predicted to finish within 40 % of the task's
/// latency limit has slack, and price decides among such routes. From a 0.25/0.3/0.35/0.4/0.5
/// sweep of both bundled traces at loads 1, 2 and 4 (docs/simulator.md): 0.4 is the smallest
/// margin at which the Azure trace's cost meets the cheapest policy's at full SLO attainment
/// at every load; wider margins buy little more and lengthen the tail.
pub const DEFAULT_SLACK: f64 = 0.4;

impl ScoringWeights {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (field, v, max) in [
            ("weights.load", self.load, 1e6),
            ("weights.cost", self.cost, 1e6),
            ("weights.capability", self.capability, 1.0),
            ("weights.affinity", self.affinity, 1.0),
            ("weights.slack", self.slack, 1.0),
            ("weights.slo_target", self.slo_target, 1.0),
        ] {
            if !(v.is_finite() && (0.0..=max).contains(&v)) {
                return Err(ConfigError::InvalidNumber {
                    owner: "router".into(),
                    field,
                    value: v,
                });
            }
        }
        if self.alternatives > MAX_ALTERNATIVES {
            return Err(ConfigError::InvalidSetting {
                field: "weights.alternatives",
                reason: "at most 4 alternatives",
            });
        }
        Ok(())
    }
}

/// One node as the hot path sees it.
///
/// Laid out for the decision on a large fleet, where a candidate's entry is rarely in the
/// core's own caches: every field a candidate's evaluation reads comes first, in the order
/// it reads them, in the first three cache lines of the entry (190 bytes), and the entry
/// starts on a line. What it does not read (names, the capability set a single-stage
/// route has already passed, the fields of rare branches) follows.
#[derive(Debug)]
#[repr(C, align(64))]
pub(crate) struct NodeEntry {
    pub(crate) live: Arc<NodeLive>,
    /// The live failure streak that takes the node out at once (`u64::MAX`: never).
    pub(crate) eject_after: u64,
    pub(crate) kv_mb_per_token: f64,
    pub(crate) cpu_millis_per_task: u32,
    pub(crate) gpu_millis_per_task: u32,
    /// Word-0 capacity each priority class may fill (see [`Headroom`]): the node's capacity
    /// scaled by the class's share, so lower classes leave the last of it to higher ones.
    pub(crate) cap0_class: [u64; 4],
    pub(crate) cap1: u64,
    /// GCRA token rate (0 = none) and burst, from the spec.
    pub(crate) ns_per_token: u64,
    pub(crate) inv_conc: f64,
    pub(crate) inv_mem: f64,
    pub(crate) inv_tokens: f64,
    /// Work other routers put on this node (`Router::set_external_load`), as of the tick
    /// that built this snapshot: added into the utilisation the score reads (its shares of
    /// the node's concurrency and tokens; already taken out of `cap0_class`, so admission
    /// leaves it room too).
    pub(crate) ext_util: f64,
    pub(crate) prefill_ms_per_token: f64,
    pub(crate) base_ms: f64,
    pub(crate) decode_ms_per_token: f64,
    pub(crate) batch_slowdown: f64,
    /// Observed/predicted latency, from the control thread (1 = as modelled).
    pub(crate) latency_factor: f64,
    /// Price relative to the fleet mean (1 = average).
    pub(crate) price_rel: f64,
    pub(crate) cpu_share_per_task: f64,
    pub(crate) price_per_token: f64,
    pub(crate) success_rate: f64,
    pub(crate) id: NodeId,
    /// Whether new tasks may be placed here.
    pub(crate) eligible: bool,
    /// Half-open: only `probe_limit` tasks at a time.
    pub(crate) probe_only: bool,
    // What a candidate's evaluation does not read, or reads only on rare branches.
    pub(crate) burst_ns: u64,
    pub(crate) probe_limit: u64,
    pub(crate) caps: CapSet,
    /// This node's capability scores: `scores_at..scores_at + scores_len` in the table's
    /// shared score slice (one allocation per table, so dropping a table frees few blocks).
    pub(crate) scores_at: u32,
    pub(crate) scores_len: u16,
    pub(crate) status: HealthStatus,
    pub(crate) cap0: u64,
    /// Static weight × balance × health (> 0).
    pub(crate) weight: f64,
    pub(crate) name: Arc<str>,
}

/// One route (a node, or a configured chain) as the hot path sees it: what a draw and an
/// evaluation read (61 bytes) in the entry's first cache line, the name after it.
#[derive(Debug, Clone)]
#[repr(C, align(64))]
pub(crate) struct RouteEntry {
    pub(crate) caps: CapSet,
    pub(crate) stages: [u32; MAX_STAGES],
    /// The lowest weight among its stages: the draw probability relative to `max_weight`.
    pub(crate) weight: f64,
    pub(crate) id: RouteId,
    pub(crate) len: u8,
    pub(crate) name: Arc<str>,
}

impl RouteEntry {
    #[inline]
    pub(crate) fn stages(&self) -> &[u32] {
        &self.stages[..self.len as usize]
    }
}

/// Inputs the control thread hands to [`RoutingTable::build`], one per node, borrowed from
/// its own state (a tick copies nothing per node but the table's entries).
#[derive(Debug, Clone)]
pub(crate) struct NodeInput<'a> {
    pub(crate) id: NodeId,
    pub(crate) name: &'a Arc<str>,
    pub(crate) live: &'a Arc<NodeLive>,
    pub(crate) res: &'a Resolved,
    pub(crate) status: HealthStatus,
    pub(crate) latency_factor: f64,
    pub(crate) balance: f64,
    pub(crate) success_rate: f64,
    /// From the health verdict.
    pub(crate) eligible: bool,
    /// Failed by hand (`Router::set_health`): out even in panic mode.
    pub(crate) pinned_out: bool,
    pub(crate) probe_only: bool,
    pub(crate) health_weight: f64,
    /// Measured-quality factor (1 = neutral).
    pub(crate) quality: f64,
    /// In-flight tasks and tokens other routers hold on the node (0, 0: none).
    pub(crate) external: (u64, u64),
}

/// Capacity headroom per priority class: the share of each node's capacity (in-flight tasks,
/// memory, tokens) a class may fill. Defaults: critical 100 %, high 95 %, normal 85 %,
/// low 75 %. A low task can never take the last quarter of a node, so under saturation the
/// lowest classes are refused (shed) first and critical work still finds room; all of it is
/// enforced by the one CAS that reserves a lease, against the class's ceiling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Headroom {
    /// Shares for critical, high, normal and low, each in (0, 1], non-increasing.
    pub shares: [f64; 4],
}

impl Default for Headroom {
    fn default() -> Self {
        Self {
            shares: [1.0, 0.95, 0.85, 0.75],
        }
    }
}

impl Headroom {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (i, &v) in self.shares.iter().enumerate() {
            if !(v.is_finite() && v > 0.0 && v <= 1.0) || (i > 0 && v > self.shares[i - 1]) {
                return Err(ConfigError::InvalidNumber {
                    owner: "headroom".into(),
                    field: "headroom.shares",
                    value: v,
                });
            }
        }
        Ok(())
    }

    /// Word-0 ceilings per class; each field at least 1 so a tiny node still serves.
    pub(crate) fn class_caps(&self, cap: &crate::node::Amounts) -> [u64; 4] {
        let scale = |x: u64, share: f64| ((x as f64 * share).floor() as u64).clamp(1.min(x), x);
        std::array::from_fn(|c| {
            let s = self.shares[c];
            crate::node::Amounts {
                inflight: scale(cap.inflight, s),
                memory_mb: scale(cap.memory_mb, s),
                tokens: scale(cap.tokens, s),
                ..Default::default()
            }
            .pack()
            .0
        })
    }
}

/// Fleet-wide health settings a snapshot carries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct HealthView {
    /// Too few nodes serve: route across all of them, ignoring ejections.
    pub(crate) panic: bool,
    pub(crate) consecutive_failures: u32,
    pub(crate) half_open_probes: u32,
}

impl Default for HealthView {
    fn default() -> Self {
        Self {
            panic: false,
            consecutive_failures: 0,
            half_open_probes: 1,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ChainInput {
    pub(crate) number: u32,
    pub(crate) name: Arc<str>,
    pub(crate) stages: Vec<NodeId>,
    /// Declared capabilities; empty means the union of the stages'.
    pub(crate) caps: CapSet,
}

/// The buffers of a snapshot no reader holds any more, emptied, for the next
/// [`RoutingTable::build`] to fill: at steady state a control tick then allocates no table
/// memory (a 4096-node table is about 1.6 MB, rebuilt on every tick that changes a weight).
#[derive(Debug, Default)]
pub(crate) struct Spare {
    pub(crate) nodes: Vec<NodeEntry>,
    pub(crate) routes: Vec<RouteEntry>,
    pub(crate) by_cap: Vec<Vec<u32>>,
    pub(crate) by_cap_score: Vec<Vec<f32>>,
    pub(crate) all: Vec<u32>,
    pub(crate) node_slot: Vec<u32>,
    pub(crate) chain_slot: Vec<u32>,
    pub(crate) scores: Vec<(u16, f32)>,
}

impl Spare {
    /// Takes the buffers of `table`, dropping what they hold (the entries' `Arc`s).
    pub(crate) fn from_table(table: RoutingTable) -> Self {
        fn empty<T>(b: Box<[T]>) -> Vec<T> {
            let mut v = b.into_vec();
            v.clear();
            v
        }
        Self {
            nodes: empty(table.nodes),
            routes: empty(table.routes),
            by_cap: table.by_cap.into_vec().into_iter().map(empty).collect(),
            by_cap_score: table
                .by_cap_score
                .into_vec()
                .into_iter()
                .map(empty)
                .collect(),
            all: empty(table.all),
            node_slot: empty(table.node_slot),
            chain_slot: empty(table.chain_slot),
            scores: empty(table.scores),
        }
    }
}

/// An immutable view of the fleet at one epoch.
///
/// Obtain one with [`Router::snapshot`](crate::Router::snapshot); it is what every routing
/// decision reads.
#[derive(Debug)]
pub struct RoutingTable {
    pub(crate) epoch: u64,
    pub(crate) registry: Arc<CapabilityRegistry>,
    pub(crate) nodes: Box<[NodeEntry]>,
    pub(crate) routes: Box<[RouteEntry]>,
    /// For each capability bit, the slots of the routes that offer it.
    pub(crate) by_cap: Box<[Box<[u32]>]>,
    /// Beside each entry of `by_cap[bit]`: the route's capability score for a task that
    /// requires `bit` alone (its node's score for `bit`, 1 when unscored), precomputed for
    /// single-stage routes; NaN for chains, whose score depends on which stages offer what.
    pub(crate) by_cap_score: Box<[Box<[f32]>]>,
    /// Every route slot, for tasks with no requirement.
    pub(crate) all: Box<[u32]>,
    /// Stable node id → node slot (`u32::MAX` when absent).
    pub(crate) node_slot: Box<[u32]>,
    /// Stable chain number → route slot (`u32::MAX` when absent).
    pub(crate) chain_slot: Box<[u32]>,
    pub(crate) weights: ScoringWeights,
    /// The cost-at-slack margin in use (0..=`weights.slack`): a route predicted within this
    /// share of the task's latency limit is scored at the limit's share, so price decides.
    pub(crate) slack_margin: f64,
    /// The most latency, ms, cost at slack may add to a route (the fleet's typical latency
    /// times a factor; infinite until a task has completed).
    pub(crate) slack_cap_ms: f64,
    /// A route predicted longer than this, ms, makes its task a tail task (see
    /// `select::plan`): `TAIL_PICK` × `slack_cap_ms`, infinite while the cap is.
    pub(crate) tail_ms: f64,
    /// Every node's capability scores, back to back (see `NodeEntry::scores_at`).
    pub(crate) scores: Box<[(u16, f32)]>,
    /// Too few nodes serve, so ejections are ignored.
    pub(crate) panic: bool,
    /// The largest route weight (draws are accepted with probability weight / max).
    pub(crate) max_weight: f64,
    /// The router's clock, read only for nodes with a token-rate limit.
    pub(crate) clock: Option<std::sync::Arc<dyn crate::clock::Clock>>,
    /// The lease slab (timeouts on) and the tenants' GCRA states, shared by every snapshot.
    pub(crate) shared: Option<Arc<crate::lease::slab::LeaseShared>>,
    /// Token-rate limits by tenant id (shorter than the id: no limit).
    pub(crate) tenant_limits: Box<[crate::tenant::TenantLimit]>,
    /// Which node last took each affinity key (shared by every snapshot).
    pub(crate) hints: Option<Arc<crate::routing::affinity::AffinityHints>>,
}

const ABSENT: u32 = u32::MAX;

/// A class's word-0 ceiling less the in-flight tasks and tokens other routers hold on the
/// node (each field saturating at 0: a node full elsewhere admits nothing here).
fn minus_external(cap0: u64, in_flight: u64, tokens: u64) -> u64 {
    if in_flight == 0 && tokens == 0 {
        return cap0;
    }
    let mut a = crate::node::Amounts::unpack(cap0, 0);
    a.inflight = a.inflight.saturating_sub(in_flight);
    a.tokens = a.tokens.saturating_sub(tokens);
    a.pack().0
}

impl RoutingTable {
    /// Builds a snapshot in `spare`'s buffers (or new ones). Never panics: a chain naming a
    /// node that is not in `nodes` is left out, and non-finite or non-positive factors are
    /// clamped to neutral values.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn build<'a>(
        spare: Spare,
        epoch: u64,
        registry: Arc<CapabilityRegistry>,
        nodes: impl ExactSizeIterator<Item = NodeInput<'a>> + Clone,
        chains: &[ChainInput],
        weights: ScoringWeights,
        health: HealthView,
        headroom: Headroom,
    ) -> Self {
        let Spare {
            nodes: mut entries,
            mut routes,
            by_cap: by_cap_spare,
            by_cap_score: mut by_cap_score_spare,
            mut all,
            mut node_slot,
            mut chain_slot,
            mut scores,
        } = spare;
        let max_id = nodes
            .clone()
            .map(|n| n.id.0 as usize + 1)
            .max()
            .unwrap_or(0);
        node_slot.resize(max_id, ABSENT);
        let mean_price = if nodes.len() == 0 {
            0.0
        } else {
            nodes.clone().map(|n| n.res.price_per_token).sum::<f64>() / nodes.len() as f64
        };
        let sane = |v: f64, lo: f64, hi: f64, default: f64| {
            if v.is_finite() {
                v.clamp(lo, hi)
            } else {
                default
            }
        };
        entries.reserve_exact(nodes.len());
        for n in nodes {
            if node_slot[n.id.0 as usize] != ABSENT {
                continue; // duplicate id: first wins
            }
            node_slot[n.id.0 as usize] = entries.len() as u32;
            let cap = n.res.cap;
            let (conc, cpu, mem, tok) = (cap.inflight, cap.cpu_millis, cap.memory_mb, cap.tokens);
            let (cap0, cap1) = cap.pack();
            let (ext_in, ext_tok) = n.external;
            let cap0_class = headroom
                .class_caps(&cap)
                .map(|c| minus_external(c, ext_in, ext_tok));
            let ext_util = (ext_in as f64 / conc.max(1) as f64)
                .max(ext_tok as f64 / tok.max(1) as f64)
                .min(1.0);
            // Static weight × balance × the health verdict's factor (slow start, degraded,
            // rate limited).
            let weight = sane(
                n.res.weight
                    * sane(n.balance, 0.01, 100.0, 1.0)
                    * sane(n.health_weight, 0.01, 1.0, 1.0)
                    * sane(n.quality, 0.01, 100.0, 1.0),
                1e-6,
                1e6,
                1.0,
            );
            entries.push(NodeEntry {
                id: n.id,
                name: n.name.clone(),
                live: n.live.clone(),
                caps: n.res.caps,
                scores_at: {
                    let at = scores.len() as u32;
                    scores.extend_from_slice(
                        &n.res.scores[..n.res.scores.len().min(u16::MAX as usize)],
                    );
                    at
                },
                scores_len: n.res.scores.len().min(u16::MAX as usize) as u16,
                cap0,
                cap0_class,
                cap1,
                inv_conc: 1.0 / conc.max(1) as f64,
                inv_mem: 1.0 / mem.max(1) as f64,
                inv_tokens: 1.0 / tok.max(1) as f64,
                cpu_millis_per_task: n.res.cpu_millis_per_task,
                gpu_millis_per_task: n.res.gpu_millis_per_task,
                cpu_share_per_task: if cpu == 0 {
                    0.0
                } else {
                    n.res.cpu_millis_per_task as f64 / cpu as f64
                },
                kv_mb_per_token: sane(n.res.kv_mb_per_token, 0.0, 1e9, 0.0),
                base_ms: sane(n.res.base_ms, 0.0, 1e9, 0.0),
                prefill_ms_per_token: sane(n.res.prefill_ms_per_token, 0.0, 1e9, 0.0),
                decode_ms_per_token: sane(n.res.decode_ms_per_token, 0.0, 1e9, 0.0),
                batch_slowdown: sane(n.res.batch_slowdown, 0.0, 1e6, 0.0),
                price_per_token: sane(n.res.price_per_token, 0.0, 1e12, 0.0),
                price_rel: if mean_price > 0.0 && mean_price.is_finite() {
                    sane(n.res.price_per_token / mean_price, 0.0, 1e6, 1.0)
                } else {
                    1.0
                },
                latency_factor: sane(n.latency_factor, 0.01, 1e3, 1.0),
                weight,
                success_rate: sane(n.success_rate, 0.0, 1.0, 1.0),
                status: n.status,
                eligible: !n.pinned_out && (n.eligible || health.panic),
                probe_only: n.probe_only && !health.panic,
                probe_limit: health.half_open_probes.max(1) as u64,
                ns_per_token: n.res.ns_per_token,
                burst_ns: n.res.burst_ns,
                eject_after: if health.panic || health.consecutive_failures == 0 {
                    u64::MAX
                } else if n.probe_only {
                    1
                } else {
                    health.consecutive_failures as u64
                },
                ext_util,
            });
        }
        routes.reserve_exact(entries.len() + chains.len());
        routes.extend(entries.iter().enumerate().map(|(slot, e)| RouteEntry {
            id: RouteId::node(e.id),
            name: e.name.clone(),
            caps: e.caps,
            stages: {
                let mut s = [0u32; MAX_STAGES];
                s[0] = slot as u32;
                s
            },
            len: 1,
            weight: e.weight,
        }));
        let max_chain = chains
            .iter()
            .map(|c| c.number as usize + 1)
            .max()
            .unwrap_or(0);
        chain_slot.resize(max_chain, ABSENT);
        'chains: for c in chains {
            if c.stages.is_empty()
                || c.stages.len() > MAX_STAGES
                || chain_slot[c.number as usize] != ABSENT
            {
                continue;
            }
            let mut stages = [0u32; MAX_STAGES];
            let mut union = CapSet::EMPTY;
            let mut weight = f64::MAX;
            for (i, id) in c.stages.iter().enumerate() {
                let slot = node_slot.get(id.0 as usize).copied().unwrap_or(ABSENT);
                if slot == ABSENT {
                    continue 'chains;
                }
                stages[i] = slot;
                union = union.union(&entries[slot as usize].caps);
                weight = weight.min(entries[slot as usize].weight);
            }
            chain_slot[c.number as usize] = routes.len() as u32;
            routes.push(RouteEntry {
                id: RouteId::chain(c.number),
                name: c.name.clone(),
                caps: if c.caps.is_empty() { union } else { c.caps },
                stages,
                len: c.stages.len() as u8,
                weight,
            });
        }
        let ncaps = registry.len();
        let mut by_cap = by_cap_spare;
        by_cap.resize_with(ncaps, Vec::new);
        for (slot, r) in routes.iter().enumerate() {
            for bit in r.caps.iter() {
                if bit < ncaps {
                    by_cap[bit].push(slot as u32);
                }
            }
        }
        by_cap_score_spare.resize_with(ncaps, Vec::new);
        let by_cap_score = by_cap
            .iter()
            .zip(by_cap_score_spare)
            .enumerate()
            .map(|(bit, (list, mut out))| {
                out.extend(
                    list.iter()
                        .map(|&slot| match *routes[slot as usize].stages() {
                            [node] => {
                                let n = &entries[node as usize];
                                let at = n.scores_at as usize;
                                scores[at..at + n.scores_len as usize]
                                    .iter()
                                    .find(|&&(b, _)| b as usize == bit)
                                    .map_or(1.0, |&(_, s)| s)
                            }
                            _ => f32::NAN,
                        }),
                );
                out.into_boxed_slice()
            })
            .collect();
        let mut weights = weights;
        weights.alternatives = weights.alternatives.min(MAX_ALTERNATIVES);
        let max_weight = routes.iter().map(|r| r.weight).fold(0.0, f64::max);
        RoutingTable {
            max_weight,
            clock: None,
            shared: None,
            tenant_limits: Box::new([]),
            hints: None,
            epoch,
            registry,
            all: {
                all.extend(0..routes.len() as u32);
                all.into_boxed_slice()
            },
            nodes: entries.into_boxed_slice(),
            routes: routes.into_boxed_slice(),
            by_cap: by_cap.into_iter().map(Vec::into_boxed_slice).collect(),
            by_cap_score,
            node_slot: node_slot.into_boxed_slice(),
            chain_slot: chain_slot.into_boxed_slice(),
            slack_margin: weights.slack,
            slack_cap_ms: f64::INFINITY,
            tail_ms: f64::INFINITY,
            weights,
            scores: scores.into_boxed_slice(),
            panic: health.panic,
        }
    }

    /// Whether the fleet is in panic mode (too few nodes serving: ejections ignored).
    pub fn panic_mode(&self) -> bool {
        self.panic
    }

    /// The cost-at-slack margin this snapshot scores with: a share of each task's latency
    /// limit, between 0 and [`ScoringWeights::slack`], adapted by the control thread from
    /// measured SLO attainment.
    pub fn slack_margin(&self) -> f64 {
        self.slack_margin
    }

    /// The snapshot's epoch (increases by one per publish).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Number of routes (nodes plus chains).
    pub fn route_count(&self) -> usize {
        self.routes.len()
    }

    /// The capability names, for resolving a task's requirements.
    pub fn capabilities(&self) -> &CapabilityRegistry {
        &self.registry
    }

    /// The name of a route.
    pub fn route_name(&self, id: RouteId) -> Option<&str> {
        self.route_slot(id).map(|s| &*self.routes[s as usize].name)
    }

    /// The capabilities a route offers in this snapshot.
    ///
    /// Used by tests and the fuzz targets to check that a route serves a task's requirements.
    #[cfg(any(test, fuzzing, feature = "test-hooks"))]
    pub fn route_capabilities(&self, id: RouteId) -> Option<CapSet> {
        self.route_slot(id).map(|s| self.routes[s as usize].caps)
    }

    /// The name of a node.
    pub fn node_name(&self, id: NodeId) -> Option<&str> {
        self.node(id).map(|n| &*n.name)
    }

    /// A node's health verdict in this snapshot.
    pub fn node_status(&self, id: NodeId) -> Option<HealthStatus> {
        self.node(id).map(|n| n.status)
    }

    /// The clock's time for rate checks (0 without a clock: every rate check then sees the
    /// start of time, which only a burst-sized reservation passes).
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        self.clock.as_ref().map_or(0, |c| c.now_ns())
    }

    /// The task's tenant's limit and the shared GCRA states, when its tenant has a limit.
    #[inline]
    pub(crate) fn tenant_limit(
        &self,
        task: &crate::model::Task,
    ) -> Option<(&Arc<LeaseShared>, crate::tenant::TenantLimit)> {
        let t = task.tenant?;
        let limit = *self.tenant_limits.get(t.0 as usize)?;
        if limit.ns_per_token == 0 {
            return None;
        }
        Some((self.shared.as_ref()?, limit))
    }

    /// Time until `task`'s tenant's rate admits it, ns (0: it does now, or has no limit).
    pub(crate) fn tenant_retry_after_ns(&self, task: &crate::model::Task) -> u64 {
        let Some((shared, limit)) = self.tenant_limit(task) else {
            return 0;
        };
        let now = self.now_ns();
        // Relaxed: a report.
        let tat = shared.tenants.tat[task.tenant.map_or(0, |t| t.0 as usize)]
            .load(Ordering::Relaxed)
            .max(now);
        let cost = task.total_tokens().saturating_mul(limit.ns_per_token);
        (tat + cost).saturating_sub(now + limit.burst_ns)
    }

    /// Whether a node is half-open (taking probes only). For tests and fuzzing.
    #[cfg(any(test, fuzzing, feature = "test-hooks"))]
    pub fn node_probing(&self, id: NodeId) -> Option<bool> {
        self.node(id).map(|n| n.probe_only)
    }

    /// The id of a named node (a linear search: not for the hot path).
    pub fn node_id(&self, name: &str) -> Option<NodeId> {
        self.nodes.iter().find(|n| &*n.name == name).map(|n| n.id)
    }

    #[inline]
    pub(crate) fn scores_of(&self, n: &NodeEntry) -> &[(u16, f32)] {
        let at = n.scores_at as usize;
        self.scores
            .get(at..at + n.scores_len as usize)
            .unwrap_or(&[])
    }

    pub(crate) fn node(&self, id: NodeId) -> Option<&NodeEntry> {
        let slot = *self.node_slot.get(id.0 as usize)?;
        self.nodes.get(slot as usize)
    }

    pub(crate) fn route_slot(&self, id: RouteId) -> Option<u32> {
        let slot = if id.is_chain() {
            *self.chain_slot.get((id.0 & !(1 << 31)) as usize)?
        } else {
            *self.node_slot.get(id.0 as usize)?
        };
        (slot != ABSENT).then_some(slot)
    }

    /// The candidate pool for a requirement: the shortest per-capability list among the
    /// required bits (every route in it still gets the full bitset check). `None` when a
    /// required capability has no route at all.
    #[inline]
    pub(crate) fn pool(&self, required: &CapSet) -> Option<&[u32]> {
        self.pool_counted(required).map(|(pool, ..)| pool)
    }

    /// As [`pool`](Self::pool), with the number of required capabilities counted on the way
    /// (the decision needs both; the baseline x86-64 target has no popcount instruction),
    /// and, when exactly one capability is required, its precomputed scores beside the pool
    /// (`by_cap_score`; empty otherwise).
    #[inline]
    pub(crate) fn pool_counted(&self, required: &CapSet) -> Option<(&[u32], usize, &[f32])> {
        let mut best: &[u32] = &self.all;
        let mut best_bit = usize::MAX;
        let mut count = 0;
        for bit in required.iter() {
            count += 1;
            let list = self.by_cap.get(bit).map(|b| &**b).unwrap_or(&[]);
            if list.is_empty() {
                return None;
            }
            // A capability's list as long as `all` holds the same slots in the same order:
            // prefer it, for its scores.
            if list.len() < best.len() || (best_bit == usize::MAX && list.len() == best.len()) {
                best = list;
                best_bit = bit;
            }
        }
        let scores = match self.by_cap_score.get(best_bit) {
            Some(s) if count == 1 => &**s,
            _ => &[],
        };
        Some((best, count, scores))
    }

    /// Checks the snapshot's internal invariants; returns the first broken one.
    ///
    /// Used by tests and the fuzz targets; cheap enough to call after every build there.
    #[cfg(any(test, fuzzing, feature = "test-hooks"))]
    pub fn check_invariants(&self) -> Result<(), String> {
        for (slot, n) in self.nodes.iter().enumerate() {
            if self.node_slot.get(n.id.0 as usize) != Some(&(slot as u32)) {
                return Err(format!("node slot map broken at {slot}"));
            }
            for v in [n.weight, n.latency_factor, n.price_rel, n.base_ms] {
                if !v.is_finite() || v < 0.0 {
                    return Err(format!("node {slot}: non-finite or negative factor {v}"));
                }
            }
            if n.weight <= 0.0 {
                return Err(format!("node {slot}: weight {}", n.weight));
            }
            if !(0.0..=1.0).contains(&n.success_rate) {
                return Err(format!("node {slot}: success rate {}", n.success_rate));
            }
        }
        for (slot, r) in self.routes.iter().enumerate() {
            if r.len == 0 || r.len as usize > MAX_STAGES {
                return Err(format!("route {slot}: {} stages", r.len));
            }
            if r.stages().iter().any(|&s| s as usize >= self.nodes.len()) {
                return Err(format!("route {slot}: stage out of range"));
            }
            if self.route_slot(r.id) != Some(slot as u32) {
                return Err(format!("route {slot}: id map broken"));
            }
            for bit in 0..self.by_cap.len() {
                let listed = self.by_cap[bit].contains(&(slot as u32));
                if listed != r.caps.contains(bit) {
                    return Err(format!(
                        "route {slot}: capability index broken at bit {bit}"
                    ));
                }
            }
        }
        if self.all.len() != self.routes.len() {
            return Err("route list length".into());
        }
        if self.by_cap_score.len() != self.by_cap.len() {
            return Err("capability score index length".into());
        }
        for (bit, (list, scores)) in self.by_cap.iter().zip(self.by_cap_score.iter()).enumerate() {
            if list.len() != scores.len() {
                return Err(format!("capability score index length at bit {bit}"));
            }
            for (&slot, &pre) in list.iter().zip(scores.iter()) {
                let expected = match *self.routes[slot as usize].stages() {
                    [node] => self
                        .scores_of(&self.nodes[node as usize])
                        .iter()
                        .find(|&&(b, _)| b as usize == bit)
                        .map_or(1.0, |&(_, s)| s),
                    _ => f32::NAN,
                };
                if pre.to_bits() != expected.to_bits() {
                    return Err(format!(
                        "route {slot}: precomputed score {pre} for bit {bit}, expected {expected}"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(all(test, not(switchyard_loom)))]
mod test {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    /// What a candidate's evaluation reads sits in the first three lines of a node's entry,
    /// and in the first line of a route's, and both start on a line (see their docs).
    #[test]
    fn the_fields_a_decision_reads_share_as_few_cache_lines_as_documented() {
        assert_eq!(align_of::<NodeEntry>(), 64);
        assert_eq!(align_of::<RouteEntry>(), 64);
        for end in [
            offset_of!(NodeEntry, probe_only) + 1,
            offset_of!(NodeEntry, eligible) + 1,
            offset_of!(NodeEntry, id) + size_of::<NodeId>(),
            offset_of!(NodeEntry, success_rate) + 8,
        ] {
            assert!(end <= 192, "a hot node field ends at byte {end}");
        }
        assert!(
            offset_of!(NodeEntry, burst_ns) >= 190,
            "cold fields follow the hot ones"
        );
        assert!(offset_of!(RouteEntry, len) < 64 && offset_of!(RouteEntry, weight) + 8 <= 64);
        assert!(offset_of!(RouteEntry, id) + size_of::<RouteId>() <= 64);
    }
}
