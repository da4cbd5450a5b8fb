//! Time series a simulation run records as it goes, for plots: each node's utilisation
//! averaged over fixed virtual-time buckets, and the tasks shed and failed in each bucket.
//!
//! Recording is cheap enough for the event loop: utilisation is integrated where the loop
//! already integrates it (when a node's running count changes), adding the busy time to the
//! one or two buckets the interval spans, and a shed or failed task bumps one counter.

/// The bucket width [`Series`] uses for a workload whose last arrival is at `span_ns`: a
/// 1–2–5 step (1 ms at least) that cuts the arrival span into at most 500 buckets. It
/// depends only on the workload, so every policy's series line up.
///
/// # Examples
/// ```
/// use switchyard_sim::sample_interval_ns;
/// assert_eq!(sample_interval_ns(0), 1_000_000);
/// // The bundled Azure trace spans 3 436 s: 10 s buckets.
/// assert_eq!(sample_interval_ns(3_436_000_000_000), 10_000_000_000);
/// ```
pub fn sample_interval_ns(span_ns: u64) -> u64 {
    const MAX_BUCKETS: u64 = 500;
    let mut decade = 1_000_000u64; // 1 ms
    loop {
        for step in [1, 2, 5] {
            let iv = decade.saturating_mul(step);
            if span_ns / iv < MAX_BUCKETS || iv == u64::MAX {
                return iv;
            }
        }
        decade = decade.saturating_mul(10);
    }
}

/// Most buckets a series holds; beyond, its buckets widen (see `Series::fit`).
pub const MAX_HELD_BUCKETS: usize = 4096;

/// One run's time series, in buckets of [`interval_ns`](Self::interval_ns) virtual ns
/// from the first arrival; bucket `b` covers `[b × interval, (b + 1) × interval)`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Series {
    /// Bucket width, virtual ns.
    pub interval_ns: u64,
    /// Per node (fleet order), per bucket: the node's mean utilisation over the bucket,
    /// busy sequences / `max_concurrency` (the last bucket is averaged over the part of it
    /// the run covered).
    pub node_utilization: Vec<Vec<f64>>,
    /// Per bucket: tasks shed in it (refused by the policy, or still waiting at the gateway
    /// when the run ended, counted at its end).
    pub shed: Vec<u32>,
    /// Per bucket: tasks that failed in it (no capable node).
    pub failed: Vec<u32>,
}

impl Series {
    /// An empty series for `nodes` nodes.
    pub(crate) fn new(interval_ns: u64, nodes: usize) -> Self {
        Self {
            interval_ns: interval_ns.max(1),
            node_utilization: vec![Vec::new(); nodes],
            shed: Vec::new(),
            failed: Vec::new(),
        }
    }

    /// Buckets in the series.
    pub fn buckets(&self) -> usize {
        self.shed.len()
    }

    /// Start of bucket `b`, virtual seconds.
    pub fn bucket_start_s(&self, b: usize) -> f64 {
        b as f64 * self.interval_ns as f64 / 1e9
    }

    fn bucket(&self, at: u64) -> usize {
        usize::try_from(at / self.interval_ns).unwrap_or(usize::MAX)
    }

    /// Widens the buckets (doubling the interval, merging neighbours) until `at` falls within
    /// [`MAX_HELD_BUCKETS`]: the interval is chosen from the arrival span, but tasks may run
    /// long after the last arrival (one huge request on a slow node: hours of virtual time),
    /// and the series must stay bounded in memory whatever the trace.
    fn fit(&mut self, at: u64) {
        while self.bucket(at) >= MAX_HELD_BUCKETS && self.interval_ns < u64::MAX / 2 {
            fn merge<T: Copy + std::ops::Add<Output = T>>(v: &mut Vec<T>) {
                let n = v.len().div_ceil(2);
                for i in 0..n {
                    v[i] = match v.get(2 * i + 1) {
                        Some(&b) => v[2 * i] + b,
                        None => v[2 * i],
                    };
                }
                v.truncate(n);
            }
            for v in &mut self.node_utilization {
                merge(v);
            }
            merge(&mut self.shed);
            merge(&mut self.failed);
            self.interval_ns *= 2;
        }
    }

    /// Adds `running` sequences busy on `node` over `[from, to)` (still in sequence-ns; see
    /// [`finish`](Self::finish)).
    #[inline]
    pub(crate) fn add_busy(&mut self, node: usize, from: u64, to: u64, running: f64) {
        if running <= 0.0 || to <= from {
            return;
        }
        self.fit(to - 1);
        let iv = self.interval_ns;
        let (first, last) = (self.bucket(from), self.bucket(to - 1));
        let v = &mut self.node_utilization[node];
        if v.len() <= last {
            v.resize(last + 1, 0.0);
        }
        let r = running;
        if first == last {
            v[first] += r * (to - from) as f64;
            return;
        }
        for (b, slot) in v.iter_mut().enumerate().take(last + 1).skip(first) {
            let lo = (b as u64 * iv).max(from);
            let hi = ((b as u64 + 1) * iv).min(to);
            *slot += r * (hi - lo) as f64;
        }
    }

    fn count(v: &mut Vec<u32>, b: usize) {
        if v.len() <= b {
            v.resize(b + 1, 0);
        }
        v[b] += 1;
    }

    /// A task shed at `at`.
    pub(crate) fn shed_at(&mut self, at: u64) {
        self.fit(at);
        let b = self.bucket(at);
        Self::count(&mut self.shed, b);
    }

    /// A task failed at `at`.
    pub(crate) fn failed_at(&mut self, at: u64) {
        self.fit(at);
        let b = self.bucket(at);
        Self::count(&mut self.failed, b);
    }

    /// Ends the series at `end` ns: every vector gets one entry per bucket up to `end`, and
    /// busy time becomes utilisation (`capacity[n]` is node `n`'s `max_concurrency`).
    pub(crate) fn finish(&mut self, end: u64, capacity: &[u32]) {
        self.fit(end.saturating_sub(1));
        let buckets = (self.bucket(end.saturating_sub(1)) + 1)
            .max(self.shed.len())
            .max(self.failed.len());
        self.shed.resize(buckets, 0);
        self.failed.resize(buckets, 0);
        let iv = self.interval_ns;
        for (v, &cap) in self.node_utilization.iter_mut().zip(capacity) {
            v.resize(buckets, 0.0);
            for (b, x) in v.iter_mut().enumerate() {
                let start = b as u64 * iv;
                let covered = end.saturating_sub(start).min(iv).max(1);
                *x /= f64::from(cap.max(1)) * covered as f64;
            }
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn intervals_are_nice_and_bounded() {
        assert_eq!(sample_interval_ns(499_000_000), 1_000_000);
        assert_eq!(sample_interval_ns(500_000_000), 2_000_000);
        assert_eq!(sample_interval_ns(57_000_000_000), 200_000_000);
        for span in [0, 1, 999, 10u64.pow(12), u64::MAX] {
            let iv = sample_interval_ns(span);
            assert!(span / iv < 500 || iv == u64::MAX, "{span}");
        }
    }

    #[test]
    fn busy_time_is_split_across_buckets() {
        let mut s = Series::new(10, 2);
        // Node 0: 2 sequences over [5, 25): 5 ns in bucket 0, 10 in 1, 5 in 2.
        s.add_busy(0, 5, 25, 2.0);
        // Node 1: 1 sequence over [0, 10): all of bucket 0.
        s.add_busy(1, 0, 10, 1.0);
        s.add_busy(1, 12, 12, 3.0); // empty interval
        s.shed_at(3);
        s.failed_at(21);
        s.failed_at(29);
        s.finish(25, &[2, 1]);
        assert_eq!(s.buckets(), 3);
        assert_eq!(s.node_utilization[0], vec![0.5, 1.0, 1.0]);
        assert_eq!(s.node_utilization[1], vec![1.0, 0.0, 0.0]);
        assert_eq!(s.shed, vec![1, 0, 0]);
        assert_eq!(s.failed, vec![0, 0, 2]);
        assert_eq!(s.bucket_start_s(2), 20e-9);
    }

    #[test]
    fn a_long_run_widens_its_buckets_instead_of_growing() {
        let mut s = Series::new(1_000_000, 2); // 1 ms buckets
        s.add_busy(0, 0, 500_000, 2.0); // half a bucket, two sequences
        s.shed_at(3_000_000);
        // One task running for 2 000 virtual seconds, far past the arrivals.
        s.add_busy(1, 0, 2_000_000_000_000, 1.0);
        s.failed_at(1_999_000_000_000);
        s.finish(2_000_000_000_000, &[4, 1]);
        assert!(s.buckets() <= MAX_HELD_BUCKETS, "{} buckets", s.buckets());
        assert!(s.interval_ns >= 2_000_000_000_000 / MAX_HELD_BUCKETS as u64);
        assert_eq!(s.shed.iter().sum::<u32>(), 1);
        assert_eq!(s.failed.iter().sum::<u32>(), 1);
        // Node 1 was busy the whole time at its full capacity of one.
        let full = s.node_utilization[1][..s.buckets() - 1]
            .iter()
            .all(|&u| (u - 1.0).abs() < 1e-9);
        assert!(full, "{:?}", &s.node_utilization[1][..4]);
        // Node 0's busy time is kept, now spread over the first wide bucket.
        let total0: f64 = s.node_utilization[0][0] * s.interval_ns as f64 * 4.0;
        assert!((total0 - 1_000_000.0).abs() < 1.0, "{total0}");
    }
}
