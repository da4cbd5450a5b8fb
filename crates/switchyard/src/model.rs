//! The seed's types, in Rust.
//!
//! Everything a decision touches is `Copy` and fixed-size ([`RouteOptions`] holds its
//! alternatives inline), so routing allocates nothing. Seed names map as follows:
//! `RouteOptions`, `ResourceCost`, `RouteConstraints`, `AllocationResult`, `ResourceMap`,
//! `AllocationPriority` ([`Priority`]), `ResourceConstraints`, `TaskAllocation`, `NodeHealth`,
//! `PerformanceMetrics`, `ModelChain` (a route: one node, or an ordered chain of stages).
//! The seed's `priority: 'high' | 'medium' | 'low'` on constraints uses the four allocation
//! classes instead, so one priority scale runs through routing and admission.
use crate::capability::CapSet;

pub use crate::limits::{MAX_ALTERNATIVES, MAX_STAGES};

/// A stable node identifier: survives snapshot rebuilds, never reused for another node name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub u32);

/// A stable route identifier: a node (top bit clear) or a configured chain (top bit set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct RouteId(pub u32);

impl RouteId {
    const CHAIN_BIT: u32 = 1 << 31;

    /// The route that is one node.
    pub fn node(id: NodeId) -> Self {
        RouteId(id.0)
    }

    /// The route that is configured chain number `chain`.
    pub fn chain(chain: u32) -> Self {
        RouteId(chain | Self::CHAIN_BIT)
    }

    /// Whether this is a multi-stage chain.
    pub fn is_chain(self) -> bool {
        self.0 & Self::CHAIN_BIT != 0
    }
}

/// A tenant, for fairness and quotas (interned by the gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TenantId(pub u32);

/// Allocation priority classes (the seed's `AllocationPriority`), most important first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Priority {
    /// Must not be shed while anything lower is running.
    Critical = 0,
    /// Interactive traffic.
    High = 1,
    /// The default.
    #[default]
    Normal = 2,
    /// Batch traffic: shed first.
    Low = 3,
}

/// The seed's name for [`Priority`].
pub type AllocationPriority = Priority;

impl Priority {
    /// All classes, most important first.
    pub const ALL: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
    ];

    /// The class's index (0 = critical).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

/// What a route must satisfy (the seed's `RouteConstraints`).
///
/// Limits are integers so that a NaN can never reach the hot path; `u32::MAX` means none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteConstraints {
    /// Largest acceptable expected end-to-end latency, in ms.
    pub max_latency_ms: u32,
    /// Largest acceptable memory reservation (KV cache), in MB.
    pub max_memory_mb: u32,
    /// The task's class.
    pub priority: Priority,
    /// Capabilities every stage set of the route must offer.
    pub required: CapSet,
}

impl Default for RouteConstraints {
    fn default() -> Self {
        Self {
            max_latency_ms: u32::MAX,
            max_memory_mb: u32::MAX,
            priority: Priority::Normal,
            required: CapSet::EMPTY,
        }
    }
}

/// One request to route.
///
/// # Examples
/// ```
/// use switchyard::{CapSet, Priority, Task};
/// let t = Task::new(1, 1200, 80)
///     .require(CapSet::from_bits([0]))
///     .priority(Priority::High)
///     .max_latency_ms(2_000);
/// assert_eq!(t.constraints.priority, Priority::High);
/// assert_eq!(t.total_tokens(), 1280);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Task {
    /// The gateway's identifier.
    pub id: u64,
    /// Prompt tokens (known).
    pub input_tokens: u32,
    /// Output tokens (an estimate; settled on completion).
    pub output_tokens: u32,
    /// Constraints, priority and required capabilities.
    pub constraints: RouteConstraints,
    /// Optional tenant.
    pub tenant: Option<TenantId>,
    /// Optional affinity key (a session, or any key whose node should be met again).
    pub affinity_key: Option<u64>,
    /// The prompt's leading blocks (empty when unknown): the node that served the longest
    /// shared prefix gets the prefix-affinity credit.
    pub prefix: Prefix,
}

impl Task {
    /// A task with no requirements and no limits.
    pub fn new(id: u64, input_tokens: u32, output_tokens: u32) -> Self {
        Self {
            id,
            input_tokens,
            output_tokens,
            constraints: RouteConstraints::default(),
            tenant: None,
            affinity_key: None,
            prefix: Prefix::EMPTY,
        }
    }

    /// Sets the required capabilities.
    pub fn require(mut self, caps: CapSet) -> Self {
        self.constraints.required = caps;
        self
    }

    /// Sets the priority class.
    pub fn priority(mut self, p: Priority) -> Self {
        self.constraints.priority = p;
        self
    }

    /// Sets the latency limit.
    pub fn max_latency_ms(mut self, ms: u32) -> Self {
        self.constraints.max_latency_ms = ms;
        self
    }

    /// Sets the memory limit.
    pub fn max_memory_mb(mut self, mb: u32) -> Self {
        self.constraints.max_memory_mb = mb;
        self
    }

    /// Sets the tenant.
    pub fn tenant(mut self, t: TenantId) -> Self {
        self.tenant = Some(t);
        self
    }

    /// Sets the affinity key.
    pub fn affinity(mut self, key: u64) -> Self {
        self.affinity_key = Some(key);
        self
    }

    /// Sets the prompt's prefix blocks.
    pub fn prefix(mut self, p: Prefix) -> Self {
        self.prefix = p;
        self
    }

    /// Input plus estimated output tokens.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens as u64 + self.output_tokens as u64
    }
}

/// Keys a [`Prefix`] keeps: one per depth of [`PREFIX_LADDER`] the prompt reaches, and one
/// for its full length.
pub const PREFIX_DEPTHS: usize = PREFIX_LADDER.len() + 1;

/// The block depths a [`Prefix`] samples, each at most 1.5 times the one before, so the depth
/// credited to a match is at least two thirds of the true one up to 192 blocks.
pub const PREFIX_LADDER: [u32; 15] = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192];

/// A prompt's leading blocks as chained keys, the way a paged KV cache names them: the key at
/// depth `d` covers blocks `0..d`, so two prompts share the key at depth `d` exactly when they
/// share their first `d` blocks.
///
/// Keys are kept at the depths of [`PREFIX_LADDER`] and at the prompt's full block count (at
/// most [`PREFIX_DEPTHS`], 72 bytes, `Copy`): the longest prefix a node holds is found with
/// a binary search over them, at most 5 probes, and a match is credited at the deepest
/// sampled depth it reaches.
///
/// # Examples
/// ```
/// use switchyard::Prefix;
/// let a = Prefix::from_blocks([7, 8, 9]);
/// let b = Prefix::from_blocks([7, 8, 10]);
/// assert_eq!(a.blocks(), 3);
/// assert_eq!(a.common_depth(&b), 2);
/// assert_eq!(a.common_depth(&a), 3);
/// assert_eq!(Prefix::from_blocks([1, 8, 9]).common_depth(&a), 0);
/// // Five shared blocks of six are credited at the sampled depth 4.
/// let long = Prefix::from_blocks([1, 2, 3, 4, 5, 6]);
/// assert_eq!(long.common_depth(&Prefix::from_blocks([1, 2, 3, 4, 5, 0])), 4);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prefix {
    /// The top 32 bits of each chained hash: a false match needs two prompts to agree on
    /// 32 bits at one depth and land on the same node slot.
    keys: [u32; PREFIX_DEPTHS],
    len: u8,
    blocks: u32,
}

/// splitmix64's finaliser: a key for every (chain, block) pair, never zero in practice.
#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[inline]
fn wide(k: u32) -> u64 {
    1 << 63 | u64::from(k)
}

impl Prefix {
    /// No blocks: the task gets no prefix credit.
    pub const EMPTY: Prefix = Prefix {
        keys: [0; PREFIX_DEPTHS],
        len: 0,
        blocks: 0,
    };

    /// From the prompt's block ids in order: any 64-bit id per block such that equal blocks
    /// get equal ids (a hash of the block's text or tokens, or a trace's `hash_ids`). The ids
    /// are chained here, so they need not cover what came before them.
    pub fn from_blocks<I: IntoIterator<Item = u64>>(ids: I) -> Self {
        let mut p = Self::EMPTY;
        let mut h = 0x6A09_E667_F3BC_C909u64;
        let mut n = 0u32;
        for id in ids {
            h = mix64(h ^ mix64(id.wrapping_add(0x9E37_79B9_7F4A_7C15)));
            n = n.saturating_add(1);
            if PREFIX_LADDER.get(p.len as usize) == Some(&n) {
                p.keys[p.len as usize] = (h >> 32) as u32;
                p.len += 1;
            }
        }
        // The whole prompt's key takes the last place, unless it was just kept on the ladder.
        if n > 0 && (p.len == 0 || PREFIX_LADDER[p.len as usize - 1] != n) {
            p.keys[p.len as usize] = (h >> 32) as u32;
            p.len += 1;
        }
        p.blocks = n;
        p
    }

    /// The prompt's block count.
    pub fn blocks(&self) -> u32 {
        self.blocks
    }

    /// Whether the prompt has no blocks.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sampled keys, shallowest first, as 64-bit keys with the top bit set (so they
    /// never equal a small affinity key sharing a table with them).
    pub(crate) fn keys(&self) -> impl Iterator<Item = u64> + '_ {
        self.keys[..self.len as usize].iter().map(|&k| wide(k))
    }

    /// The block depth the `i`-th key covers.
    #[inline]
    pub(crate) fn depth(&self, i: usize) -> u32 {
        if i + 1 == self.len as usize {
            self.blocks
        } else {
            PREFIX_LADDER[i]
        }
    }

    /// The deepest sampled depth whose key `holds` accepts, by binary search: a holder of a
    /// depth's key holds every shallower one (they name parts of the same prefix).
    #[inline]
    pub(crate) fn deepest(&self, mut holds: impl FnMut(u64) -> bool) -> u32 {
        let (mut lo, mut hi) = (0usize, self.len as usize);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if holds(wide(self.keys[mid - 1])) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        if lo == 0 {
            0
        } else {
            self.depth(lo - 1)
        }
    }

    /// The longest sampled depth at which both prompts agree.
    pub fn common_depth(&self, other: &Prefix) -> u32 {
        self.deepest(|key| other.keys().any(|k| k == key))
    }
}

/// The estimated cost of serving a task on one route (the seed's `ResourceCost`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ResourceCost {
    /// Memory (KV cache) the task reserves, in MB, summed over stages.
    pub memory_mb: f64,
    /// Share of the route's CPU the task takes (0–1, the busiest stage).
    pub cpu_utilization: f64,
    /// Expected end-to-end latency under current load, in ms, summed over stages.
    pub expected_latency_ms: f64,
    /// Tokens the task reserves (input plus estimated output), per stage.
    pub estimated_tokens: u64,
    /// Price of the task, in the fleet's cost unit, summed over stages.
    pub price: f64,
}

/// Resources held by an allocation (the seed's `ResourceMap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResourceMap {
    /// Memory in MB.
    pub memory_mb: u32,
    /// CPU in thousandths of a core.
    pub cpu_millis: u32,
    /// GPU in thousandths of a device (0 when none).
    pub gpu_millis: u32,
    /// Token quota (tokens in flight).
    pub tokens: u32,
}

/// A node's resource limits (the seed's `ResourceConstraints`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ResourceConstraints {
    /// Memory limit in MB.
    pub max_memory_mb: u32,
    /// CPU limit in cores.
    pub max_cpu: f64,
    /// Token rate limit (0 = none).
    pub max_tokens_per_second: f64,
}

/// What an allocation holds (the seed's `AllocationResult`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AllocationResult {
    /// Resources held, summed over the route's stages.
    pub allocated: ResourceMap,
    /// Limits of the primary stage.
    pub constraints: ResourceConstraints,
    /// The task's class.
    pub priority: Priority,
    /// How long the allocation may be held before the control thread may reclaim it
    /// (0 = no limit, or the lease was released and holds nothing).
    pub timeout_ms: u64,
}

/// One task placed on one node (the seed's `TaskAllocation`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskAllocation {
    /// The task.
    pub task_id: u64,
    /// Resources it holds.
    pub resources: ResourceMap,
    /// Its class.
    pub priority: Priority,
    /// When it started, in clock ns.
    pub start_ns: u64,
    /// Expected duration in ms.
    pub expected_duration_ms: f64,
}

/// A node's health verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HealthStatus {
    /// Serving normally.
    #[default]
    Healthy,
    /// Serving, with reduced weight.
    Degraded,
    /// Ejected: receives no new tasks.
    Failed,
}

impl HealthStatus {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Failed => "failed",
        }
    }
}

/// Measured quality of a node (the seed's `PerformanceMetrics`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PerformanceMetrics {
    /// Latency EWMA in ms.
    pub response_time_ms: f64,
    /// Successful share of finished tasks (1 when none finished).
    pub success_rate: f64,
    /// Predicted over observed latency (1 = as modelled; lower = slower than modelled).
    pub efficiency: f64,
    /// Failed tasks so far.
    pub errors: u64,
}

/// A node's health report (the seed's `NodeHealth`).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeHealth {
    /// The node's name.
    pub node: String,
    /// Its verdict.
    pub status: HealthStatus,
    /// Capacity still free.
    pub available: ResourceMap,
    /// Measured quality.
    pub metrics: PerformanceMetrics,
    /// Failed share of finished tasks.
    pub error_rate: f64,
}

/// A route: one node, or an ordered chain of stages (the seed's `ModelChain`).
///
/// A chain's cost and latency are the sums over its stages. The route carries the stable ids
/// of its stages and the snapshot slot it was planned on, so it can be validated and leased
/// against a newer snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelChain {
    /// Stable id (a node or a configured chain).
    pub route: RouteId,
    /// Epoch of the snapshot the route was planned on.
    pub epoch: u64,
    pub(crate) slot: u32,
    pub(crate) stages: [NodeId; MAX_STAGES],
    pub(crate) len: u8,
}

impl ModelChain {
    /// The stages, in order.
    pub fn stages(&self) -> &[NodeId] {
        &self.stages[..self.len as usize]
    }

    /// The first (or only) stage.
    pub fn head(&self) -> NodeId {
        self.stages[0]
    }
}

/// One candidate route with its estimate and confidence.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RouteChoice {
    /// The route.
    pub route: ModelChain,
    /// Its estimated cost.
    pub cost: ResourceCost,
    /// Confidence that it meets the constraints and succeeds (0–1).
    pub confidence: f64,
    /// The score it was ranked by (lower is better).
    pub score: f64,
}

/// The primary route and its alternatives (the seed's `RouteOptions`).
///
/// The seed's `estimatedCosts` and `confidenceScores` are per-route fields of
/// [`RouteChoice`]; [`RouteOptions::estimated_costs`] and [`RouteOptions::confidence_scores`]
/// give them in the seed's shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RouteOptions {
    choices: [RouteChoice; 1 + MAX_ALTERNATIVES],
    len: u8,
    /// The constraints the routes were chosen under.
    pub constraints: RouteConstraints,
}

impl Default for RouteOptions {
    fn default() -> Self {
        Self::new(RouteConstraints::default())
    }
}

impl RouteOptions {
    pub(crate) fn new(constraints: RouteConstraints) -> Self {
        Self {
            choices: [RouteChoice::default(); 1 + MAX_ALTERNATIVES],
            len: 0,
            constraints,
        }
    }

    /// Empties the options for a new decision (the buffer is reused, not re-initialised).
    #[inline]
    pub(crate) fn reset(&mut self, constraints: RouteConstraints) {
        self.len = 0;
        self.constraints = constraints;
    }

    /// The next free slot, to be filled in place and then committed.
    #[inline]
    pub(crate) fn next_slot(&mut self) -> Option<&mut RouteChoice> {
        self.choices.get_mut(self.len as usize)
    }

    #[inline]
    pub(crate) fn commit_slot(&mut self) {
        self.len += 1;
    }

    #[inline]
    pub(crate) fn choices_mut(&mut self) -> &mut [RouteChoice] {
        &mut self.choices[..self.len as usize]
    }

    /// Keeps the routes for which `keep` holds, in order.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&RouteChoice) -> bool) {
        let mut w = 0;
        for r in 0..self.len as usize {
            if keep(&self.choices[r]) {
                self.choices[w] = self.choices[r];
                w += 1;
            }
        }
        self.len = w as u8;
    }

    #[inline]
    pub(crate) fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n as u8);
    }

    /// Number of routes (primary plus alternatives).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether there is no route (only in a buffer that was never filled).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every route, primary first.
    pub fn choices(&self) -> &[RouteChoice] {
        &self.choices[..self.len as usize]
    }

    /// The primary route.
    pub fn primary(&self) -> &RouteChoice {
        &self.choices[0]
    }

    /// The alternatives, best first, on routes distinct from the primary.
    pub fn alternatives(&self) -> &[RouteChoice] {
        &self.choices[1..self.len as usize]
    }

    /// Estimated cost of each route, primary first.
    pub fn estimated_costs(&self) -> impl Iterator<Item = ResourceCost> + '_ {
        self.choices().iter().map(|c| c.cost)
    }

    /// Confidence of each route, keyed by route id, primary first.
    pub fn confidence_scores(&self) -> impl Iterator<Item = (RouteId, f64)> + '_ {
        self.choices().iter().map(|c| (c.route.route, c.confidence))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn route_ids_distinguish_chains() {
        assert!(!RouteId::node(NodeId(5)).is_chain());
        assert!(RouteId::chain(5).is_chain());
        assert_ne!(RouteId::node(NodeId(5)), RouteId::chain(5));
    }

    #[test]
    fn options_hold_at_most_capacity() {
        let mut o = RouteOptions::new(RouteConstraints::default());
        assert!(o.is_empty());
        for i in 0..10 {
            let pushed = match o.next_slot() {
                Some(c) => {
                    c.route.route = RouteId(i);
                    o.commit_slot();
                    true
                }
                None => false,
            };
            assert_eq!(pushed, (i as usize) < 1 + MAX_ALTERNATIVES);
        }
        assert_eq!(o.len(), 5);
        assert_eq!(o.choices().len(), 1 + MAX_ALTERNATIVES);
        assert_eq!(o.primary().route.route, RouteId(0));
        assert_eq!(o.alternatives().len(), MAX_ALTERNATIVES);
        assert_eq!(o.estimated_costs().count(), 5);
        assert_eq!(o.confidence_scores().nth(1).unwrap().0, RouteId(1));
        o.truncate(2);
        assert_eq!(o.alternatives().len(), 1);
        o.reset(RouteConstraints::default());
        assert!(o.is_empty());
    }

    #[test]
    fn priority_order_and_names() {
        assert!(Priority::Critical < Priority::Low);
        assert_eq!(
            Priority::ALL.map(Priority::name),
            ["critical", "high", "normal", "low"]
        );
        assert_eq!(Priority::Low.index(), 3);
        assert_eq!(HealthStatus::Failed.name(), "failed");
        let t = Task::new(1, 2, 3)
            .tenant(TenantId(4))
            .affinity(9)
            .max_memory_mb(10);
        assert_eq!(
            (t.tenant, t.affinity_key, t.constraints.max_memory_mb),
            (Some(TenantId(4)), Some(9), 10)
        );
    }
}

/// How a dispatched task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Outcome {
    /// Served.
    Success,
    /// The backend said "too many requests" (HTTP 429): the node is busy, not broken.
    RateLimited,
    /// The backend failed (HTTP 5xx, connection reset).
    ServerError,
    /// The backend did not answer in time.
    Timeout,
    /// The client went away; says nothing about the node.
    Cancelled,
    /// The ticket was dropped without being completed (a bug or a crash in the gateway).
    Abandoned,
}

impl Outcome {
    /// Every outcome, in counter order.
    pub const ALL: [Outcome; 6] = [
        Outcome::Success,
        Outcome::RateLimited,
        Outcome::ServerError,
        Outcome::Timeout,
        Outcome::Cancelled,
        Outcome::Abandoned,
    ];

    /// Index into per-outcome counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::RateLimited => "rate_limited",
            Outcome::ServerError => "server_error",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
            Outcome::Abandoned => "abandoned",
        }
    }

    /// Whether the task failed.
    pub fn is_failure(self) -> bool {
        self != Outcome::Success
    }
}

// ===== the rest of the seed's types (filled by the balancer, health and recovery layers) =====

/// Utilisation of a set of nodes (the seed's `ResourceUtilization`), each 0–1.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ResourceUtilization {
    /// Reserved over available memory.
    pub memory: f64,
    /// Reserved over available CPU.
    pub cpu: f64,
    /// Tokens in flight over token capacity.
    pub token_usage: f64,
}

/// How evenly load is spread (the seed's `BalanceMetrics`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BalanceMetrics {
    /// 1 = perfectly even, 0 = everything on one node: `1 / (1 + deviation)`.
    pub distribution_score: f64,
    /// Busiest node's utilisation over the mean, minus one.
    pub deviation: f64,
    /// Fleet-wide utilisation.
    pub utilization: ResourceUtilization,
    /// Fleet-wide quality.
    pub performance: PerformanceMetrics,
}

/// Tasks placed per node, with balance and health (the seed's `LoadDistribution`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LoadDistribution {
    /// Node name → the tasks placed on it.
    pub node_allocations: Vec<(String, Vec<TaskAllocation>)>,
    /// How even the placement is.
    pub balance: BalanceMetrics,
    /// Health of every node.
    pub health: Vec<NodeHealth>,
}

/// Which layer an error came from (the seed's `ErrorRecovery.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No route could be found or used.
    Routing,
    /// A resource ran out.
    Resource,
    /// Load is unevenly spread.
    Balance,
}

/// How bad an incident is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Cosmetic.
    Low,
    /// Degraded service.
    Medium,
    /// Failing requests.
    High,
    /// Outage.
    Critical,
}

/// What recovery does (the seed's `RecoveryAction.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryKind {
    /// Try the same route again.
    Retry,
    /// Move to an alternative route.
    Failover,
    /// Shift load between nodes.
    Rebalance,
    /// Ask for more capacity.
    Scale,
}

/// One recovery step (the seed's `RecoveryAction`).
#[derive(Debug, Clone, PartialEq)]
pub struct RecoveryAction {
    /// What to do.
    pub kind: RecoveryKind,
    /// Named numeric parameters (e.g. `("backoff_ms", 50.0)`).
    pub params: Vec<(&'static str, f64)>,
    /// Estimated probability that it works (0–1).
    pub probability: f64,
}

/// Where a recovery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryStatus {
    /// Decided, not started.
    Pending,
    /// Under way.
    InProgress,
    /// Worked.
    Completed,
    /// Did not work.
    Failed,
}

/// An incident and what is being done about it (the seed's `ErrorRecovery`).
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorRecovery {
    /// Which layer.
    pub kind: ErrorKind,
    /// How bad.
    pub severity: Severity,
    /// The step taken.
    pub action: RecoveryAction,
    /// Where it stands.
    pub status: RecoveryStatus,
}

/// A route with the capability view that chose it (the seed's `CapabilityAwareRoute`).
#[derive(Debug, Clone, PartialEq)]
pub struct CapabilityAwareRoute {
    /// The routes.
    pub route: RouteOptions,
    /// Required capability → minimum score.
    pub required_capabilities: Vec<(String, f64)>,
    /// Capability → the primary route's score.
    pub scores: Vec<(String, f64)>,
    /// Confidence in the primary route.
    pub confidence: f64,
}

/// What to do about degradation (the seed's `DegradationAction.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DegradationKind {
    /// Add capacity.
    Scale,
    /// Shift load.
    Rebalance,
    /// Move traffic off failing nodes.
    Failover,
}

/// A condition that triggers a degradation action or a failover.
#[derive(Debug, Clone, PartialEq)]
pub struct DegradationCondition {
    /// The metric (e.g. `"error_rate"`).
    pub metric: &'static str,
    /// The threshold it crossed.
    pub threshold: f64,
    /// Its value now.
    pub value: f64,
}

/// The seed's `DegradationAction`.
#[derive(Debug, Clone, PartialEq)]
pub struct DegradationAction {
    /// What to do.
    pub kind: DegradationKind,
    /// Why.
    pub conditions: Vec<DegradationCondition>,
    /// Named numeric parameters.
    pub params: Vec<(&'static str, f64)>,
}

/// Health checks and the response to degradation (the seed's `HealthAwareRoute`).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthAwareRoute {
    /// Every node's health.
    pub health: Vec<NodeHealth>,
    /// What is being done.
    pub degradation_response: DegradationAction,
    /// What triggers failover (the seed's `FailoverCondition`s).
    pub failover_triggers: Vec<DegradationCondition>,
}
