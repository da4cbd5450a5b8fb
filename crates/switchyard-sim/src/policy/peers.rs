//! The peer policies: the routing rules of other gateways and load balancers, as the
//! simulator compares them with the switchyard router (see the table in the module docs of
//! `policy/mod.rs`).
use switchyard::NodeSpec;

use super::{policy_seed, Decision, Policy, View};
use crate::cache::PrefixCache;
use crate::rng::Rng;
use crate::workload::SimTask;

/// Round robin: the next capable node after the last pick, in fleet order.
#[derive(Debug, Clone, Default)]
pub struct RoundRobin {
    next: usize,
}

impl Policy for RoundRobin {
    fn name(&self) -> &str {
        "round_robin"
    }

    fn pick(&mut self, _task: &SimTask, view: &View<'_>) -> Decision {
        let n = view.nodes.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if view.candidates.binary_search(&i).is_ok() {
                self.next = i + 1;
                return Decision::Dispatch(i);
            }
        }
        Decision::Fail
    }
}

/// Uniformly random over the capable nodes.
#[derive(Debug, Clone)]
pub struct RandomPolicy {
    rng: Rng,
}

impl RandomPolicy {
    /// Seeded (through [`policy_seed`]).
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng::new(policy_seed(seed, 1)),
        }
    }
}

impl Policy for RandomPolicy {
    fn name(&self) -> &str {
        "random"
    }

    fn pick(&mut self, _task: &SimTask, view: &View<'_>) -> Decision {
        match view.candidates.len() {
            0 => Decision::Fail,
            n => Decision::Dispatch(view.candidates[self.rng.below(n)]),
        }
    }
}

/// LiteLLM `least-busy`: the fewest requests outstanding (its per-deployment in-flight
/// counter), the first such node in fleet order on a tie.
#[derive(Debug, Clone, Copy, Default)]
pub struct LeastInFlight;

impl Policy for LeastInFlight {
    fn name(&self) -> &str {
        "least_in_flight"
    }

    fn pick(&mut self, _task: &SimTask, view: &View<'_>) -> Decision {
        view.candidates
            .iter()
            .min_by_key(|&&i| (view.nodes[i].in_flight(), i))
            .map_or(Decision::Fail, |&i| Decision::Dispatch(i))
    }
}

/// linkerd's default RTT estimate for an endpoint never measured, ms.
pub const PEAK_EWMA_DEFAULT_RTT_MS: f64 = 30.0;
/// linkerd's EWMA decay period, ns.
pub const PEAK_EWMA_DECAY_NS: f64 = 10e9;

/// tower's Peak-EWMA RTT estimate: a sample above the estimate replaces it; otherwise the
/// estimate moves toward the sample by `1 − e^(−elapsed/decay)`. Reading the load decays it
/// toward zero the same way (an update with a zero sample).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeakEwma {
    /// The estimate, ms.
    pub rtt_ms: f64,
    /// Virtual time of the last update, ns.
    pub update_at_ns: u64,
}

impl PeakEwma {
    /// Folds in a sample taken at `now_ns` (a zero sample only decays), returns the estimate.
    pub fn update(&mut self, sample_ms: f64, now_ns: u64, decay_ns: f64) -> f64 {
        if now_ns < self.update_at_ns {
            return self.rtt_ms;
        }
        if self.rtt_ms < sample_ms {
            self.rtt_ms = sample_ms;
        } else {
            let elapsed = (now_ns - self.update_at_ns) as f64;
            let decay = (-elapsed / decay_ns).exp();
            self.rtt_ms = self.rtt_ms * decay + sample_ms * (1.0 - decay);
        }
        self.update_at_ns = now_ns;
        self.rtt_ms
    }
}

/// tower `p2c::Balance` over `PeakEwma` endpoints with linkerd's defaults (RTT 30 ms, decay
/// 10 s): two distinct capable nodes at random; the one with the lower
/// `decayed estimate × (pending + 1)` wins (the first drawn on a tie). The RTT sample is the
/// node-side latency of a finished request (queue wait included): a non-streaming response.
#[derive(Debug, Clone)]
pub struct P2cPeakEwma {
    rng: Rng,
    estimates: Vec<PeakEwma>,
}

impl P2cPeakEwma {
    /// For `nodes` endpoints, seeded (through [`policy_seed`]).
    pub fn new(nodes: usize, seed: u64) -> Self {
        Self {
            rng: Rng::new(policy_seed(seed, 2)),
            estimates: vec![
                PeakEwma {
                    rtt_ms: PEAK_EWMA_DEFAULT_RTT_MS,
                    update_at_ns: 0,
                };
                nodes
            ],
        }
    }

    /// The endpoint's estimate as of its last update.
    pub fn estimate(&self, node: usize) -> Option<&PeakEwma> {
        self.estimates.get(node)
    }

    fn cost(&mut self, i: usize, view: &View<'_>) -> f64 {
        let rtt = self.estimates[i].update(0.0, view.now_ns, PEAK_EWMA_DECAY_NS);
        rtt * (view.nodes[i].in_flight() as f64 + 1.0)
    }
}

impl Policy for P2cPeakEwma {
    fn name(&self) -> &str {
        "p2c_peak_ewma"
    }

    fn pick(&mut self, _task: &SimTask, view: &View<'_>) -> Decision {
        let c = view.candidates;
        if self.estimates.len() < view.nodes.len() {
            self.estimates.resize(
                view.nodes.len(),
                PeakEwma {
                    rtt_ms: PEAK_EWMA_DEFAULT_RTT_MS,
                    update_at_ns: view.now_ns,
                },
            );
        }
        match c.len() {
            0 => Decision::Fail,
            1 => Decision::Dispatch(c[0]),
            n => {
                let a = self.rng.below(n);
                let mut b = self.rng.below(n - 1);
                if b >= a {
                    b += 1;
                }
                let (a, b) = (c[a], c[b]);
                let (ca, cb) = (self.cost(a, view), self.cost(b, view));
                Decision::Dispatch(if ca <= cb { a } else { b })
            }
        }
    }

    fn on_finish(&mut self, _task: &SimTask, node: usize, latency_ms: f64, now_ns: u64) {
        if let Some(e) = self.estimates.get_mut(node) {
            e.update(latency_ms, now_ns, PEAK_EWMA_DECAY_NS);
        }
    }
}

/// SGLang `cache_aware`'s default imbalance threshold: absolute in-flight difference.
pub const CACHE_AWARE_ABS: u32 = 32;
/// SGLang `cache_aware`'s default imbalance threshold: max over min in-flight.
pub const CACHE_AWARE_REL: f64 = 1.1;
/// SGLang `cache_aware`'s default match-rate threshold.
pub const CACHE_AWARE_THRESHOLD: f64 = 0.5;
/// SGLang `cache_aware`'s default eviction interval, ns.
pub const CACHE_AWARE_EVICTION_NS: u64 = 30_000_000_000;

/// SGLang's `cache_aware` (sgl-router `policies/cache_aware.rs`), on prefix blocks:
///
/// 1. Over the capable nodes, with load = requests the router sent and not yet finished: if
///    `max − min > 32` and `max > 1.1 × min` the fleet is imbalanced: pick the least loaded.
/// 2. Otherwise match the task's blocks against the policy's own approximate per-node tree
///    (what it routed there, not what the node really caches): if the best match covers
///    more than half the blocks (SGLang's `matched_rate > cache_threshold`), pick that node
///    (ties: least loaded, then fleet order); else the node whose tree is smallest
///    (SGLang's `get_smallest_tenant`; ties: fleet order).
/// 3. Insert the task's blocks into the chosen node's tree. Every 30 s (a tick, off the
///    request path like SGLang's eviction thread) each tree is evicted (LRU) down to its
///    node's KV capacity in blocks, standing in for `max_tree_size`.
///
/// The insertion is applied when the next decision (or tick) begins, so a pick the gateway
/// withdraws ([`Policy::withdraw`]: the node had no room and the task waits) leaves the
/// trees as they were: the task is inserted where it is finally sent. Applied before the
/// next match, the trees every decision sees are the same as with an immediate insertion.
#[derive(Debug, Clone)]
pub struct CacheAware {
    trees: Vec<PrefixCache>,
    /// The last pick's node and blocks, not yet inserted.
    pending: Option<usize>,
    pending_blocks: Vec<u64>,
}

impl CacheAware {
    /// For `nodes`, each tree capped at its node's KV capacity in blocks.
    pub fn new(nodes: &[NodeSpec]) -> Self {
        Self {
            trees: nodes.iter().map(PrefixCache::for_node).collect(),
            pending: None,
            pending_blocks: Vec::new(),
        }
    }

    /// Inserts the last pick's blocks into its node's tree (unless it was withdrawn).
    fn commit(&mut self) {
        if let Some(n) = self.pending.take() {
            self.trees[n].touch_without_eviction(&self.pending_blocks);
        }
    }

    /// Whether loads `max` and `min` count as imbalanced.
    pub fn imbalanced(max: u32, min: u32) -> bool {
        max - min > CACHE_AWARE_ABS && max as f64 > CACHE_AWARE_REL * min as f64
    }

    /// The router-side tree of node `i` (the last pick included).
    pub fn tree(&mut self, i: usize) -> Option<&PrefixCache> {
        self.commit();
        self.trees.get(i)
    }
}

impl Policy for CacheAware {
    fn name(&self) -> &str {
        "cache_aware"
    }

    fn pick(&mut self, task: &SimTask, view: &View<'_>) -> Decision {
        self.commit();
        let c = view.candidates;
        if c.is_empty() {
            return Decision::Fail;
        }
        if self.trees.len() < view.nodes.len() {
            for n in &view.nodes[self.trees.len()..] {
                self.trees.push(PrefixCache::for_node(&n.spec));
            }
        }
        let load = |i: usize| view.nodes[i].in_flight();
        let max = c.iter().map(|&i| load(i)).max().unwrap_or(0);
        let min = c.iter().map(|&i| load(i)).min().unwrap_or(0);
        let least_loaded = || *c.iter().min_by_key(|&&i| (load(i), i)).unwrap_or(&c[0]);
        let chosen = if Self::imbalanced(max, min) {
            least_loaded()
        } else {
            let blocks = &task.blocks;
            let (best, matched) = c
                .iter()
                .map(|&i| (i, self.trees[i].matched_prefix(blocks)))
                .min_by_key(|&(i, m)| (std::cmp::Reverse(m), load(i), i))
                .unwrap_or((c[0], 0));
            let rate = if blocks.is_empty() {
                0.0
            } else {
                matched as f64 / blocks.len() as f64
            };
            if rate > CACHE_AWARE_THRESHOLD {
                best
            } else {
                *c.iter()
                    .min_by_key(|&&i| (self.trees[i].len(), i))
                    .unwrap_or(&c[0])
            }
        };
        self.pending = Some(chosen);
        self.pending_blocks.clear();
        self.pending_blocks.extend_from_slice(&task.blocks);
        Decision::Dispatch(chosen)
    }

    fn withdraw(&mut self, _task: &SimTask) {
        self.pending = None;
    }

    fn tick_interval_ns(&self) -> Option<u64> {
        Some(CACHE_AWARE_EVICTION_NS)
    }

    /// SGLang's eviction thread: off the request path, so not timed as a decision.
    fn on_tick(&mut self, _now_ns: u64) {
        self.commit();
        for t in &mut self.trees {
            let cap = t.capacity();
            t.evict_to(cap);
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::policy::NodeStatus;
    use switchyard::Task;

    fn nodes(loads: &[u32]) -> Vec<NodeStatus> {
        loads
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                let mut n = NodeStatus::idle(NodeSpec::new(format!("n{i}")), None);
                n.running = l;
                n
            })
            .collect()
    }

    fn task(blocks: Vec<u64>) -> SimTask {
        SimTask {
            index: 0,
            task: Task::new(0, 100, 10),
            arrival_ns: 0,
            blocks,
            slo_ms: 1e9,
            class: 0,
        }
    }

    #[test]
    fn round_robin_cycles_over_capable_nodes() {
        let ns = nodes(&[0, 0, 0, 0]);
        let mut p = RoundRobin::default();
        let t = task(vec![]);
        let all = [0, 1, 2, 3];
        let v = View {
            now_ns: 0,
            candidates: &all,
            nodes: &ns,
        };
        let picks: Vec<_> = (0..6).map(|_| p.pick(&t, &v)).collect();
        let want: Vec<_> = [0, 1, 2, 3, 0, 1].map(Decision::Dispatch).to_vec();
        assert_eq!(picks, want);
        let some = [1, 3];
        let v = View {
            candidates: &some,
            ..v
        };
        assert_eq!(p.pick(&t, &v), Decision::Dispatch(3));
        assert_eq!(p.pick(&t, &v), Decision::Dispatch(1));
        let v = View {
            candidates: &[],
            ..v
        };
        assert_eq!(p.pick(&t, &v), Decision::Fail);
    }

    #[test]
    fn least_in_flight_picks_the_least_then_fleet_order() {
        let mut ns = nodes(&[3, 1, 2, 1]);
        ns[1].queued = 1;
        let mut p = LeastInFlight;
        let t = task(vec![]);
        let all = [0, 1, 2, 3];
        let v = View {
            now_ns: 0,
            candidates: &all,
            nodes: &ns,
        };
        assert_eq!(p.pick(&t, &v), Decision::Dispatch(3));
        let v = View {
            candidates: &[0, 1, 2],
            ..v
        };
        assert_eq!(p.pick(&t, &v), Decision::Dispatch(1)); // 2 vs 2: fleet order
    }

    #[test]
    fn random_stays_within_candidates() {
        let ns = nodes(&[0; 5]);
        let mut p = RandomPolicy::new(3);
        let t = task(vec![]);
        let v = View {
            now_ns: 0,
            candidates: &[1, 4],
            nodes: &ns,
        };
        let mut seen = [0; 5];
        for _ in 0..200 {
            match p.pick(&t, &v) {
                Decision::Dispatch(i) => seen[i] += 1,
                d => panic!("{d:?}"),
            }
        }
        assert_eq!((seen[0], seen[2], seen[3]), (0, 0, 0));
        assert!(seen[1] > 50 && seen[4] > 50);
    }

    #[test]
    fn peak_ewma_jumps_to_peaks_and_decays() {
        let mut e = PeakEwma {
            rtt_ms: 30.0,
            update_at_ns: 0,
        };
        assert_eq!(e.update(100.0, 1_000, PEAK_EWMA_DECAY_NS), 100.0);
        // One decay period later a zero sample leaves e^-1 of it.
        let r = e.update(0.0, 1_000 + 10_000_000_000, PEAK_EWMA_DECAY_NS);
        assert!((r - 100.0 / std::f64::consts::E).abs() < 1e-9);
        // Time going backwards changes nothing.
        assert_eq!(e.update(1e6, 5, PEAK_EWMA_DECAY_NS), r);

        let ns = nodes(&[0, 0]);
        let mut p = P2cPeakEwma::new(2, 1);
        let t = task(vec![]);
        p.on_finish(&t, 0, 5_000.0, 0);
        let v = View {
            now_ns: 0,
            candidates: &[0, 1],
            nodes: &ns,
        };
        // Node 0 measured 5 s, node 1 still at the 30 ms default: always node 1.
        for _ in 0..10 {
            assert_eq!(p.pick(&t, &v), Decision::Dispatch(1));
        }
        assert_eq!(p.estimate(0).map(|e| e.rtt_ms), Some(5_000.0));
    }

    #[test]
    fn cache_aware_switches_to_shortest_queue_at_its_thresholds() {
        assert!(CacheAware::imbalanced(40, 7)); // 33 > 32 and 40 > 7.7
        assert!(!CacheAware::imbalanced(39, 7)); // 32 is not > 32
        assert!(!CacheAware::imbalanced(400, 366)); // 34 > 32 but 400 < 402.6
        assert!(CacheAware::imbalanced(400, 363)); // 400 > 399.3
        let specs: Vec<_> = (0..2).map(|i| NodeSpec::new(format!("n{i}"))).collect();
        let mut p = CacheAware::new(&specs);
        let t = task(vec![1, 2, 3, 4]);
        // Node 0 has the prefix in its tree.
        p.trees[0].touch(&[1, 2, 3]);
        let all = [0, 1];
        let balanced = nodes(&[39, 7]);
        let v = View {
            now_ns: 1,
            candidates: &all,
            nodes: &balanced,
        };
        assert_eq!(p.pick(&t, &v), Decision::Dispatch(0)); // 3/4 matched > 0.5
        let skewed = nodes(&[40, 7]);
        let v = View {
            nodes: &skewed,
            ..v
        };
        // Imbalanced: the shortest queue, and the pick goes into node 1's tree.
        assert_eq!(p.pick(&t, &v), Decision::Dispatch(1));
        assert_eq!(p.tree(1).map(PrefixCache::len), Some(4));
        // Exactly half is not more than half: the smallest tree wins, not the match.
        let v = View {
            nodes: &balanced,
            ..v
        };
        let pick = |blocks: Vec<u64>| {
            let mut p = CacheAware::new(&specs);
            p.trees[0].touch(&[1, 2]);
            p.pick(&task(blocks), &v)
        };
        assert_eq!(pick(vec![1, 2, 77, 78]), Decision::Dispatch(1));
        assert_eq!(pick(vec![1, 2, 77]), Decision::Dispatch(0));
    }
}
