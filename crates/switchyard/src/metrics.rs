//! Decision-latency histograms and [`RoutingMetrics`].
//!
//! # Why an atomic histogram in front of hdrhistogram
//! Every decision records its latency on the worker that made it. `hdrhistogram::Histogram`
//! keeps plain `u64` counts, so reading it from another thread needs a lock or a phase swap
//! that allocates (`sync::Recorder`). Instead each worker owns an `AtomicHistogram`: the
//! same log-linear bucketing (64 sub-buckets per half-octave, under 1.6 % relative error, 1 ns
//! to 137 s), one bucket per `AtomicU64`. The owner records with a relaxed load and store (no
//! lock prefix, ≈ 2 ns); readers copy the buckets into a real `hdrhistogram::Histogram` off the
//! hot path to take percentiles.
//!
//! # Orderings
//! Single writer per histogram, so `load(Relaxed)` + `store(Relaxed)` loses no increment.
//! The histograms of `Dispatcher::submit_inline`'s callers may have several writers; they
//! record with `fetch_add(Relaxed)` (`record_shared`), which loses none either.
//! Readers use `Relaxed` loads: each bucket is read whole; a reader racing the writer may see
//! a count that is at most the in-progress decision behind, which a report tolerates.
use hdrhistogram::Histogram;

use crate::model::Outcome;
use crate::node::{Amounts, NodeLive};
use crate::sync::{AtomicU64, Ordering};

const SUB: u64 = 128;
const HALF: u64 = 64;
const MAX_EXP: u64 = 31;
// Shrunk under loom, which tracks every atomic (the bucket layout is not what loom checks).
const BUCKETS: usize = if cfg!(switchyard_loom) {
    4
} else {
    (SUB + (MAX_EXP - 1) * HALF) as usize
};

/// A single-writer, many-reader latency histogram with fixed buckets (never allocates after
/// construction).
#[derive(Debug)]
pub(crate) struct AtomicHistogram {
    buckets: Box<[AtomicU64]>,
}

#[inline]
fn index(v: u64) -> usize {
    if v < SUB {
        return (v as usize).min(BUCKETS - 1);
    }
    let msb = 63 - v.leading_zeros() as u64;
    let exp = msb - 6;
    let mant = v >> exp;
    let i = SUB + (exp - 1) * HALF + (mant - HALF);
    (i as usize).min(BUCKETS - 1)
}

fn bucket_range(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB {
        return (i, i);
    }
    let k = i - SUB;
    let exp = k / HALF + 1;
    let mant = k % HALF + HALF;
    let lo = mant << exp;
    (lo, lo + (1 << exp) - 1)
}

impl AtomicHistogram {
    pub(crate) fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Records one value. Only the owning thread may call this (see the module's orderings).
    #[inline]
    pub(crate) fn record(&self, ns: u64) {
        let b = &self.buckets[index(ns)];
        b.store(b.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Records one value from any thread (an atomic increment: several writers lose nothing).
    #[inline]
    pub(crate) fn record_shared(&self, ns: u64) {
        // Relaxed: a count read whole by reports; nothing is published through it.
        self.buckets[index(ns)].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds every bucket into `into`, at the bucket's midpoint.
    pub(crate) fn merge_into(&self, into: &mut Histogram<u64>) {
        for (i, b) in self.buckets.iter().enumerate() {
            let c = b.load(Ordering::Relaxed);
            if c > 0 {
                let (lo, hi) = bucket_range(i);
                into.saturating_record_n(lo + (hi - lo) / 2, c);
            }
        }
    }
}

/// A fresh histogram for merged decision latencies (1 ns – 2^38 ns, 3 significant digits).
pub(crate) fn new_histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts (low ≥ 1, high ≥ 2·low, sigfig ≤ 5).
    Histogram::new_with_bounds(1, 1 << 38, 3).expect("constant histogram bounds are valid")
}

/// Percentiles of decision latency, in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LatencySummary {
    /// Decisions recorded.
    pub count: u64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest.
    pub max_ns: u64,
    /// Mean.
    pub mean_ns: f64,
}

impl LatencySummary {
    /// Summarises a histogram.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Self {
            count: h.len(),
            p50_ns: h.value_at_quantile(0.5),
            p90_ns: h.value_at_quantile(0.9),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
            mean_ns: h.mean(),
        }
    }
}

/// One node's live figures.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeMetrics {
    /// Name.
    pub name: String,
    /// Tasks in flight.
    pub in_flight: u64,
    /// Largest of its in-flight, memory and token shares (0–1).
    pub utilization: f64,
    /// Memory reserved, MB.
    pub memory_mb: u64,
    /// Tokens reserved.
    pub tokens_in_flight: u64,
    /// CPU reserved, thousandths of a core.
    pub cpu_millis: u64,
    /// GPU reserved, thousandths of a device.
    pub gpu_millis: u64,
    /// Leases taken so far.
    pub leases: u64,
    /// Finished tasks by [`Outcome`] (indexed by [`Outcome::index`]).
    pub outcomes: crate::per::PerOutcome<u64>,
    /// Latency EWMA, ms.
    pub latency_ewma_ms: f64,
    /// Removed from the fleet, leases still out.
    pub draining: bool,
    /// Capacity: tasks, memory MB, tokens, CPU and GPU thousandths.
    pub capacity: crate::model::ResourceMap,
    /// Max tasks in flight.
    pub max_in_flight: u64,
    /// Tasks that landed here after their primary route was full.
    pub spillovers: u64,
    /// Completions whose output tokens differed from the estimate (settled).
    pub settle_corrections: u64,
    /// Net tokens those settlements moved (actual − estimated: positive = charged).
    pub settled_tokens: i64,
}

impl NodeMetrics {
    pub(crate) fn read(name: &str, live: &NodeLive, cap: &Amounts, draining: bool) -> Self {
        let (w0, w1) = live.load();
        let a = Amounts::unpack(w0, w1);
        let (spillovers, settle_corrections, settled_tokens) = live.admission_counts();
        Self {
            name: name.to_string(),
            in_flight: a.inflight,
            utilization: a.utilization(cap),
            memory_mb: a.memory_mb,
            tokens_in_flight: a.tokens,
            cpu_millis: a.cpu_millis,
            gpu_millis: a.gpu_millis,
            capacity: crate::model::ResourceMap {
                memory_mb: cap.memory_mb as u32,
                cpu_millis: cap.cpu_millis as u32,
                gpu_millis: cap.gpu_millis as u32,
                tokens: cap.tokens as u32,
            },
            max_in_flight: cap.inflight,
            spillovers,
            settle_corrections,
            settled_tokens,
            leases: live.leases(),
            outcomes: live.outcomes().into(),
            latency_ewma_ms: live.latency_ewma_ms(),
            draining,
        }
    }
}

/// Load-balance deviation: the busiest node's utilisation over the mean, minus one
/// (0 = perfectly even; 0 when the fleet is idle).
pub fn balance_deviation(utilizations: &[f64]) -> f64 {
    if utilizations.is_empty() {
        return 0.0;
    }
    let mean = utilizations.iter().sum::<f64>() / utilizations.len() as f64;
    if mean <= 0.0 {
        return 0.0;
    }
    utilizations.iter().cloned().fold(0.0, f64::max) / mean - 1.0
}

/// Reserved over capacity across `nodes` (draining ones left out).
pub(crate) fn fleet_utilization(nodes: &[NodeMetrics]) -> crate::model::ResourceUtilization {
    let (mut mem, mut mem_cap, mut cpu, mut cpu_cap, mut tok, mut tok_cap) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for n in nodes.iter().filter(|n| !n.draining) {
        mem += n.memory_mb as f64;
        mem_cap += n.capacity.memory_mb as f64;
        cpu += n.cpu_millis as f64;
        cpu_cap += n.capacity.cpu_millis as f64;
        tok += n.tokens_in_flight as f64;
        tok_cap += n.capacity.tokens as f64;
    }
    let share = |x: f64, c: f64| if c > 0.0 { (x / c).min(1.0) } else { 0.0 };
    crate::model::ResourceUtilization {
        memory: share(mem, mem_cap),
        cpu: share(cpu, cpu_cap),
        token_usage: share(tok, tok_cap),
    }
}

/// The seed's `RoutingMetrics`: decision latency, counts by outcome, per-node load, balance.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoutingMetrics {
    /// Decision latency (plan + reserve), from every worker's histogram.
    pub decision_latency: LatencySummary,
    /// Tasks accepted by `submit` (dispatched + no route + queued + waiting).
    pub submitted: u64,
    /// Tasks refused at `submit` (full or shut down).
    pub refused: u64,
    /// Tasks routed and handed to the backend.
    pub dispatched: u64,
    /// Tasks that found no route, by [`RouteError`](crate::RouteError) name.
    pub no_route: Vec<(&'static str, u64)>,
    /// Finished tasks by [`Outcome`] (indexed by [`Outcome::index`]).
    pub outcomes: crate::per::PerOutcome<u64>,
    /// Tasks refused for lack of capacity (`Saturated`), by priority class
    /// (indexed by [`Priority::index`](crate::Priority::index)).
    pub shed_by_class: crate::per::PerClass<u64>,
    /// Tasks routed and handed to the backend, by priority class (the dispatched ones).
    pub admitted_by_class: crate::per::PerClass<u64>,
    /// Tasks placed on an alternative route because their primary was full.
    pub spillovers: u64,
    /// Completions whose output tokens differed from the estimate, settled (refund or
    /// charge), and the net tokens moved (positive: charged).
    pub settle_corrections: u64,
    /// See `settle_corrections`.
    pub settled_tokens: i64,
    /// Leases the control thread reclaimed past their timeout, and late completions of
    /// reclaimed leases (returned nothing twice).
    pub reclaimed_leases: u64,
    /// See `reclaimed_leases`.
    pub late_completions: u64,
    /// Reserved over capacity across current nodes: memory, CPU and tokens in flight.
    pub utilization: crate::model::ResourceUtilization,
    /// Tickets out with the backend.
    pub in_flight: u64,
    /// Tasks waiting in the queues.
    pub queued: u64,
    /// Tasks taken by workers and held waiting for room (see `Dispatcher::waiting`).
    pub waiting: u64,
    /// Per-node figures (current nodes, then draining ones).
    pub nodes: Vec<NodeMetrics>,
    /// See [`balance_deviation`], over current nodes.
    pub balance_deviation: f64,
    /// Epoch of the routing snapshot.
    pub epoch: u64,
}

impl RoutingMetrics {
    /// Finished tasks with outcome `o`.
    pub fn outcome(&self, o: Outcome) -> u64 {
        self.outcomes[o]
    }

    /// Tasks that found no route.
    pub fn no_route_total(&self) -> u64 {
        self.no_route.iter().map(|(_, c)| c).sum()
    }
}

#[cfg(all(test, not(switchyard_loom)))]
mod test {
    use super::*;

    #[test]
    fn buckets_cover_values_with_bounded_error() {
        let mut prev = 0;
        for i in 0..BUCKETS {
            let (lo, hi) = bucket_range(i);
            assert!(lo >= prev, "buckets ordered");
            assert_eq!(index(lo), i);
            assert_eq!(index(hi), i);
            assert!(
                (hi - lo) as f64 <= lo as f64 / 63.0 + 1.0,
                "error bound at {i}"
            );
            prev = hi + 1;
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn merge_gives_percentiles() {
        let h = AtomicHistogram::new();
        for v in 1..=1000u64 {
            h.record(v * 100);
        }
        let mut m = new_histogram();
        h.merge_into(&mut m);
        let s = LatencySummary::of(&m);
        assert_eq!(s.count, 1000);
        assert!(
            (s.p50_ns as f64 - 50_000.0).abs() / 50_000.0 < 0.02,
            "{s:?}"
        );
        assert!(
            (s.p99_ns as f64 - 99_000.0).abs() / 99_000.0 < 0.02,
            "{s:?}"
        );
        assert!(s.max_ns >= 99_000);
        assert_eq!(
            LatencySummary::of(&new_histogram()),
            LatencySummary::default()
        );
    }

    #[test]
    fn deviation() {
        assert_eq!(balance_deviation(&[]), 0.0);
        assert_eq!(balance_deviation(&[0.0, 0.0]), 0.0);
        assert!((balance_deviation(&[0.5, 0.5]) - 0.0).abs() < 1e-12);
        assert!((balance_deviation(&[1.0, 0.5, 0.0]) - 1.0).abs() < 1e-12);
    }
}
