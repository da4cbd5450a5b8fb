//! Routing policies for the discrete-event simulator, behind one trait.
//!
//! Each baseline follows the published behaviour and defaults of the system it stands for
//! (the table below, and docs/simulator.md), restricted to the nodes that offer the task's
//! required capabilities (the simulator passes only those as [`View::candidates`]), so every
//! policy sees the same fleet:
//!
//! | name | stands for | picks |
//! | --- | --- | --- |
//! | `round_robin` | SGLang / LiteLLM round robin | the next capable node in a fixed cyclic order |
//! | `random` | SGLang random, LiteLLM simple-shuffle without weights | a capable node uniformly at random |
//! | `least_in_flight` | LiteLLM `least-busy` | the capable node with the fewest requests outstanding (ties: first in fleet order) |
//! | `p2c_peak_ewma` | tower `p2c::Balance` + `PeakEwma`, linkerd defaults | of two distinct random capable nodes, the lower `peak-EWMA RTT × (pending + 1)` |
//! | `cache_aware` | SGLang `cache_aware` | shortest queue when imbalanced, else longest prefix match or smallest tree |
//! | `switchyard` | this crate's [`Router`] | whatever `RouteReader::route_into` reserves |
//!
//! Behind the shared gateway model (the default, see [`GatewayModel`]) a policy only chooses
//! the node, among the capable nodes that can start the task at once ([`View::candidates`]);
//! with none the task waits at the gateway, and a pick of a node without room is withdrawn
//! ([`Policy::withdraw`] tells the policy) and the task waits. Behind
//! [`GatewayModel::PerPolicy`], all but `switchyard` send every task at once and a full node
//! queues it; `switchyard` reserves capacity on the router's ledgers, so a saturated fleet
//! leaves the task waiting at the gateway ([`Decision::Wait`]) until a lease is released.
//!
//! [`GatewayModel`]: crate::GatewayModel
//! [`GatewayModel::PerPolicy`]: crate::GatewayModel::PerPolicy
//!
//! [`Router`]: switchyard::Router
mod peers;
mod router;

pub use peers::{
    CacheAware, LeastInFlight, P2cPeakEwma, PeakEwma, RandomPolicy, RoundRobin, CACHE_AWARE_ABS,
    CACHE_AWARE_EVICTION_NS, CACHE_AWARE_REL, CACHE_AWARE_THRESHOLD, PEAK_EWMA_DECAY_NS,
    PEAK_EWMA_DEFAULT_RTT_MS,
};
pub use router::{SwitchyardPolicy, SWITCHYARD_TICK_NS};

use switchyard::NodeSpec;

use crate::cache::PrefixCache;
use crate::error::SimError;
use crate::fleet::FleetConfig;
use crate::workload::{GatewayModel, SimTask};

/// What the simulator shows a policy of one node.
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// The node's description (speed model, capacity, price).
    pub spec: NodeSpec,
    /// Sequences being served.
    pub running: u32,
    /// Tasks waiting in the node's FIFO queue.
    pub queued: u32,
    /// EWMA (α = 0.2) of the node-side latency of finished tasks, ms (0 before the first).
    pub ewma_latency_ms: f64,
    /// The node's KV prefix cache (`None` when the simulation runs without one).
    pub cache: Option<PrefixCache>,
}

impl NodeStatus {
    /// An idle node.
    pub fn idle(spec: NodeSpec, cache: Option<PrefixCache>) -> Self {
        Self {
            spec,
            running: 0,
            queued: 0,
            ewma_latency_ms: 0.0,
            cache,
        }
    }

    /// Requests outstanding at the node: running plus queued.
    pub fn in_flight(&self) -> u32 {
        self.running + self.queued
    }
}

/// The simulator's state as one policy decision sees it.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// Virtual time, ns since the trace's first arrival.
    pub now_ns: u64,
    /// The nodes offering everything the task requires, ascending; behind the shared
    /// gateway model only those of them that can start the task now.
    pub candidates: &'a [usize],
    /// Every node, by index (the router's node id).
    pub nodes: &'a [NodeStatus],
}

impl View<'_> {
    /// Leading blocks of `blocks` that node `i`'s cache holds (0 without a cache).
    pub fn cached_prefix(&self, i: usize, blocks: &[u64]) -> usize {
        self.nodes[i]
            .cache
            .as_ref()
            .map_or(0, |c| c.matched_prefix(blocks))
    }
}

/// A policy's verdict on one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Send it to this node now (it queues there if the node is full).
    Dispatch(usize),
    /// Keep it in the gateway queue; retry when capacity is released.
    Wait,
    /// It cannot be served (no capable node).
    Fail,
    /// Refused by admission control (e.g. no route can meet its latency limit).
    Shed,
}

/// A routing policy under simulation.
pub trait Policy: std::fmt::Debug {
    /// The name reports use.
    fn name(&self) -> &str;

    /// Decides where `task` goes, given the simulator's `view`.
    fn pick(&mut self, task: &SimTask, view: &View<'_>) -> Decision;

    /// `task`, dispatched to `node`, finished at `now_ns` after `latency_ms` at the node
    /// (its node queue wait included).
    fn on_finish(&mut self, task: &SimTask, node: usize, latency_ms: f64, now_ns: u64) {
        let _ = (task, node, latency_ms, now_ns);
    }

    /// The gateway did not send `task` where the last [`pick`](Self::pick) said (the node
    /// had no room under the shared gateway model): release whatever that pick reserved.
    /// The task waits and is picked again later.
    fn withdraw(&mut self, task: &SimTask) {
        let _ = task;
    }

    /// How often [`on_tick`](Self::on_tick) wants to run, in virtual ns (`None`: never).
    fn tick_interval_ns(&self) -> Option<u64> {
        None
    }

    /// A periodic control step at virtual time `now_ns`.
    fn on_tick(&mut self, now_ns: u64) {
        let _ = now_ns;
    }
}

/// A policy's random stream for run seed `seed`: decorrelated from the stream
/// [`synthesize`](crate::synthesize) draws task attributes from with the same seed (equal
/// streams would tie, say, a task's priority to the node it is sent to).
pub fn policy_seed(seed: u64, salt: u64) -> u64 {
    seed ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
}

/// The policy called `name` for `fleet`, seeded by `seed`.
///
/// # Errors
/// [`SimError::UnknownPolicy`] for a name not in [`POLICY_NAMES`];
/// [`SimError::Config`] if the fleet does not build a router.
///
/// [`POLICY_NAMES`]: crate::POLICY_NAMES
///
/// # Examples
/// ```
/// use switchyard_sim::{default_fleet, make_policy};
/// let fleet = default_fleet();
/// assert_eq!(make_policy("cache_aware", &fleet, 1)?.name(), "cache_aware");
/// assert!(make_policy("fastest", &fleet, 1).is_err());
/// # Ok::<(), switchyard_sim::SimError>(())
/// ```
pub fn make_policy(
    name: &str,
    fleet: &FleetConfig,
    seed: u64,
) -> Result<Box<dyn Policy>, SimError> {
    make_policy_for(name, fleet, seed, GatewayModel::default())
}

/// [`make_policy`] for a run behind `gateway`: behind the shared model the `switchyard`
/// router gives every class the whole of each node (no per-class headroom), since the
/// gateway's queue, not the router, holds work back; behind the per-policy model it runs
/// with the router's default headroom.
///
/// # Errors
/// As [`make_policy`].
pub fn make_policy_for(
    name: &str,
    fleet: &FleetConfig,
    seed: u64,
    gateway: GatewayModel,
) -> Result<Box<dyn Policy>, SimError> {
    Ok(match name {
        "round_robin" => Box::new(RoundRobin::default()),
        "random" => Box::new(RandomPolicy::new(seed)),
        "least_in_flight" => Box::new(LeastInFlight),
        "p2c_peak_ewma" => Box::new(P2cPeakEwma::new(fleet.nodes.len(), seed)),
        "cache_aware" => Box::new(CacheAware::new(&fleet.nodes)),
        "switchyard" => Box::new(match gateway {
            GatewayModel::Shared => SwitchyardPolicy::with_headroom(
                fleet,
                seed,
                switchyard::Headroom { shares: [1.0; 4] },
            )?,
            GatewayModel::PerPolicy => SwitchyardPolicy::new(fleet, seed)?,
        }),
        other => return Err(SimError::UnknownPolicy(other.to_string())),
    })
}
