//! Per-node live state (the hot path): the packed ledger, outcome counters, latency EWMA and
//! recent affinity keys, shared by every snapshot that holds the node and every lease on it.
//!
//! # The ledger
//! A node's reserved resources live in two `AtomicU64` words, each packing several counters
//! so that one compare-and-swap checks and claims all of them together:
//!
//! | word | bits 0–15 | bits 16–39 | bits 40–63 |
//! | --- | --- | --- | --- |
//! | `w0` | tasks in flight | memory, MB | tokens in flight |
//!
//! | word | bits 0–31 | bits 32–63 |
//! | --- | --- | --- |
//! | `w1` | CPU, 1/1000 core | GPU, 1/1000 device |
//!
//! A reservation claims `w0` with one CAS; only a node whose tasks hold CPU or GPU also claims
//! `w1`, giving `w0` back if `w1` is full. Each CAS checks every field against the node's
//! capacity before adding, and a field's sum never exceeds its capacity, which fits the
//! field's width, so no carry crosses fields.
//!
//! # Orderings
//! Ledger RMWs are `Relaxed`: the capacity invariant concerns one location at a time, and every
//! RMW on a location sees that location's single modification order whatever its ordering, so
//! no two reservations can both take the last unit. Nothing else is published through the
//! ledger (a lease carries its own amounts). Readers that only report load use `Relaxed` loads.
use crate::lease::slab::LeaseShared;
use crate::model::{NodeId, Outcome};
use crate::sync::{Arc, AtomicU32, AtomicU64, CachePadded, Ordering};

use super::rate::{gcra_allows, gcra_refund, gcra_settle, gcra_take};

// ===== ledger packing =====

/// Ledger amounts, unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Amounts {
    pub(crate) inflight: u64,
    pub(crate) memory_mb: u64,
    pub(crate) tokens: u64,
    pub(crate) cpu_millis: u64,
    pub(crate) gpu_millis: u64,
}

pub(super) const M16: u64 = 0xFFFF;
pub(super) const M24: u64 = 0xFF_FFFF;
pub(super) const M32: u64 = 0xFFFF_FFFF;

impl Amounts {
    /// The two ledger words. Fields must fit their widths (validated capacities guarantee it
    /// for capacities and for every sum that fits under them).
    #[inline]
    pub(crate) const fn pack(&self) -> (u64, u64) {
        (
            (self.inflight & M16) | ((self.memory_mb & M24) << 16) | ((self.tokens & M24) << 40),
            (self.cpu_millis & M32) | ((self.gpu_millis & M32) << 32),
        )
    }

    #[inline]
    pub(crate) const fn unpack(w0: u64, w1: u64) -> Self {
        Self {
            inflight: w0 & M16,
            memory_mb: (w0 >> 16) & M24,
            tokens: w0 >> 40,
            cpu_millis: w1 & M32,
            gpu_millis: w1 >> 32,
        }
    }

    /// The largest of the in-flight, memory and token shares of `cap` (0–1).
    pub(crate) fn utilization(&self, cap: &Amounts) -> f64 {
        let share = |x: u64, c: u64| if c == 0 { 0.0 } else { x as f64 / c as f64 };
        share(self.inflight, cap.inflight)
            .max(share(self.memory_mb, cap.memory_mb))
            .max(share(self.tokens, cap.tokens))
            .min(1.0)
    }
}

/// Whether `cur + add` fits under `cap` in every field of word 0.
#[inline]
pub(crate) fn fits0(cur: u64, add: u64, cap: u64) -> bool {
    (cur & M16) + (add & M16) <= (cap & M16)
        && ((cur >> 16) & M24) + ((add >> 16) & M24) <= ((cap >> 16) & M24)
        && (cur >> 40) + (add >> 40) <= (cap >> 40)
}

/// Whether `cur + add` fits under `cap` in every field of word 1.
#[inline]
pub(crate) fn fits1(cur: u64, add: u64, cap: u64) -> bool {
    (cur & M32) + (add & M32) <= (cap & M32) && (cur >> 32) + (add >> 32) <= (cap >> 32)
}

/// Per-node state that changes on every call, shared by every snapshot that holds the node
/// and by every lease out on it. Keyed by the node's stable id, never by snapshot slot.
#[derive(Debug)]
pub(crate) struct NodeLive {
    pub(crate) id: NodeId,
    /// The router's lease slab and tenant states. A lease reaches them through its head
    /// stage's node, whose reference it holds anyway, so taking a lease writes no count
    /// that every lease of the router shares. Read-only after construction.
    pub(crate) shared: Arc<LeaseShared>,
    /// Written by every reservation and release (pickers and completers).
    ledger: CachePadded<Ledger>,
    /// Written by completions only.
    stats: CachePadded<NodeStats>,
    /// Tags of the affinity keys and sampled prefix keys of recently routed tasks,
    /// direct-mapped (see `remember`).
    recent: [AtomicU32; RECENT_SLOTS],
}

/// Slots of a node's recent-affinity table: 128 keys of 32-bit tags, 512 bytes (a prefix
/// brings up to [`crate::PREFIX_DEPTHS`] keys, most of them shared with the prompts before
/// it).
const RECENT_SLOTS: usize = if cfg!(switchyard_loom) { 2 } else { 128 };

/// A key's slot (the top 7 bits of its Fibonacci hash) and its tag (the 32 bits below
/// them, with the lowest forced to 1 so that no tag is the empty slot's 0). Slot and tag
/// come from disjoint bits, so two keys sharing a slot still differ in their tags unless
/// they agree on 31 more bits: a false recall is a 2^-31 event per probe, and it only costs
/// a misjudged affinity credit.
#[inline]
fn recent_slot(key: u64) -> (usize, u32) {
    let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((h >> 57) as usize % RECENT_SLOTS, (h >> 25) as u32 | 1)
}

#[derive(Debug, Default)]
struct Ledger {
    w0: AtomicU64,
    w1: AtomicU64,
    /// Failures in a row (server error, timeout, abandoned); a success resets it. On the
    /// ledger's cache line, which every decision already reads, so the hot path's
    /// fast-ejection check costs no extra miss.
    consecutive: AtomicU64,
    /// GCRA theoretical arrival time (clock ns) of the node's token rate.
    tat: AtomicU64,
}

#[derive(Debug, Default)]
struct NodeStats {
    /// Tasks finished with this node as their route's first (or only) stage, by outcome.
    outcomes: [AtomicU64; 6],
    /// Stages finished that fleet totals do not count: a later stage of a chain, or a failed
    /// attempt that failed over to another route.
    downstream: [AtomicU64; 6],
    /// Two EWMAs in one word, so one CAS updates both: observed latency in ms (low 32 bits)
    /// and observed/predicted latency (high 32 bits), each an `f32` (0 = no sample yet).
    ewma: AtomicU64,
    /// Tasks that landed here (as head) after their primary route was full.
    spillovers: AtomicU64,
    /// Settlements that corrected the output-token estimate, and their net tokens
    /// (actual − estimated, two's complement).
    settles: AtomicU64,
    settled_tokens: AtomicU64,
    /// Tasks with a latency limit finished with this node as head: within the limit, and
    /// over it or failed (the adaptive cost-at-slack margin's input).
    slo: [AtomicU64; 2],
}

/// EWMA smoothing for completions: each sample moves the average a fifth of the way.
/// Plucked from the usual 0.1–0.3 range; the control thread's decisions look at many samples.
const EWMA_ALPHA: f64 = 0.2;

impl NodeLive {
    /// The live state of node `id` of the router whose leases share `shared`.
    pub(crate) fn new(id: NodeId, shared: Arc<LeaseShared>) -> Self {
        Self {
            id,
            shared,
            ledger: CachePadded::new(Ledger::default()),
            stats: CachePadded::new(NodeStats::default()),
            recent: std::array::from_fn(|_| AtomicU32::new(0)),
        }
    }

    /// Notes that a task with affinity `key` was routed here. A direct-mapped slot: a newer
    /// key evicts an older one that hashes alike, which is the approximation (an LRU of one
    /// per slot, like a tiny cache tag array).
    #[inline]
    pub(crate) fn remember(&self, key: u64) {
        let (at, tag) = recent_slot(key);
        let slot = &self.recent[at];
        // Relaxed: a hint read by pickers; a lost or late update only costs an affinity miss.
        if slot.load(Ordering::Relaxed) != tag {
            slot.store(tag, Ordering::Relaxed);
        }
    }

    /// Whether a task with affinity `key` was routed here recently (relaxed: a hint).
    #[inline]
    pub(crate) fn recalls(&self, key: u64) -> bool {
        let (at, tag) = recent_slot(key);
        self.recent[at].load(Ordering::Relaxed) == tag
    }

    /// Notes every sampled key of a prefix routed here.
    #[inline]
    pub(crate) fn remember_prefix(&self, p: &crate::model::Prefix) {
        for k in p.keys() {
            self.remember(k);
        }
    }

    /// The longest sampled depth of `p` recently routed here (0: none), in O(log) probes.
    #[inline]
    pub(crate) fn prefix_depth(&self, p: &crate::model::Prefix) -> u32 {
        p.deepest(|k| self.recalls(k))
    }

    /// Current ledger words (relaxed: a load report, see the module's orderings).
    #[inline]
    pub(crate) fn load(&self) -> (u64, u64) {
        (
            self.ledger.w0.load(Ordering::Relaxed),
            self.ledger.w1.load(Ordering::Relaxed),
        )
    }

    /// As [`load`](Self::load), reading `w1` only when `both` (it is zero for nodes whose
    /// tasks hold no CPU or GPU).
    #[inline]
    pub(crate) fn load_for(&self, both: bool) -> (u64, u64) {
        let w0 = self.ledger.w0.load(Ordering::Relaxed);
        let w1 = if both {
            self.ledger.w1.load(Ordering::Relaxed)
        } else {
            0
        };
        (w0, w1)
    }

    /// Claims `add0`/`add1` if they fit under `cap0`/`cap1`; all or nothing. `w1` is touched
    /// only when `add1` is non-zero.
    #[inline]
    pub(crate) fn try_reserve(&self, add0: u64, add1: u64, cap0: u64, cap1: u64) -> bool {
        if !cas_add(&self.ledger.w0, add0, |cur| fits0(cur, add0, cap0)) {
            return false;
        }
        if add1 != 0 && !cas_add(&self.ledger.w1, add1, |cur| fits1(cur, add1, cap1)) {
            // Give w0 back: we added exactly add0 and nobody else can remove our share.
            self.ledger.w0.fetch_sub(add0, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Returns a reservation. Callers guarantee each reservation is released once (a lease
    /// owns its amounts and releases them in `Drop`).
    #[inline]
    pub(crate) fn release(&self, add0: u64, add1: u64) {
        // Relaxed: see the module's orderings; the subtraction cannot underflow because these
        // exact amounts were added by the matching reservation.
        self.ledger.w0.fetch_sub(add0, Ordering::Relaxed);
        if add1 != 0 {
            self.ledger.w1.fetch_sub(add1, Ordering::Relaxed);
        }
    }

    /// Records one finished task on this node; `head` when the node was the route's first
    /// stage (the task is counted once in fleet totals, by its head).
    pub(crate) fn record_outcome(
        &self,
        head: bool,
        outcome: Outcome,
        latency_ms: f64,
        predicted_ms: f64,
    ) {
        match outcome {
            // Relaxed: a heuristic gate; a stale read delays ejection by a decision or two.
            // A failure is an RMW, so two at once both count (loom: ejection.rs,
            // `two_concurrent_failures_both_count`).
            Outcome::ServerError | Outcome::Timeout | Outcome::Abandoned => {
                self.ledger.consecutive.fetch_add(1, Ordering::Relaxed);
            }
            // In effect an unconditional `store(0)`, ordered at the store: the load only
            // skips rewriting a zero (no dirty line on the common all-success path). A failure
            // between the load and the store is one that came before this success.
            Outcome::Success => {
                if self.ledger.consecutive.load(Ordering::Relaxed) != 0 {
                    self.ledger.consecutive.store(0, Ordering::Relaxed);
                }
            }
            // Busy or abandoned by the client: says nothing about whether the node works.
            Outcome::RateLimited | Outcome::Cancelled => {}
        }
        let counters = if head {
            &self.stats.outcomes
        } else {
            &self.stats.downstream
        };
        // Release: pairs with the Acquire loads in `outcomes`, so a reader that counts this
        // task as finished also sees everything before it: the lease's ledger release and the
        // dispatcher's count of the task as dispatched (`Dispatcher::in_flight`).
        counters[outcome.index()].fetch_add(1, Ordering::Release);
        if outcome == Outcome::Success && latency_ms.is_finite() && latency_ms >= 0.0 {
            // Clamped into what an `f32` holds: a finite `f64` beyond it would become an
            // infinite sample, and the EWMA would stay infinite (then NaN) for good.
            let latency_ms = latency_ms.min(MAX_SAMPLE);
            let slow = if predicted_ms > 0.0 && predicted_ms.is_finite() {
                (latency_ms / predicted_ms).min(MAX_SAMPLE)
            } else {
                0.0
            };
            ewma_update(&self.stats.ewma, latency_ms as f32, slow as f32);
        }
    }

    /// Counts a task with a latency limit that finished here as head: `met` when it
    /// succeeded within the limit. Relaxed: the control thread reads totals once a tick, and a
    /// count that shows up a tick late only delays the margin's adjustment by one tick.
    #[inline]
    pub(crate) fn count_slo(&self, met: bool) {
        self.stats.slo[usize::from(!met)].fetch_add(1, Ordering::Relaxed);
    }

    /// Tasks with a latency limit finished here as head: (within it, over it or failed).
    pub(crate) fn slo_counts(&self) -> (u64, u64) {
        // Relaxed: see `count_slo`.
        (
            self.stats.slo[0].load(Ordering::Relaxed),
            self.stats.slo[1].load(Ordering::Relaxed),
        )
    }

    /// Counts a task that spilled over to this node (relaxed: a report counter).
    #[inline]
    pub(crate) fn count_spillover(&self) {
        self.stats.spillovers.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a settlement of `delta` output tokens (relaxed: report counters).
    #[inline]
    pub(crate) fn count_settle(&self, delta: i64) {
        self.stats.settles.fetch_add(1, Ordering::Relaxed);
        self.stats
            .settled_tokens
            .fetch_add(delta as u64, Ordering::Relaxed);
    }

    /// Spillovers, settlements and their net tokens (relaxed: a report).
    pub(crate) fn admission_counts(&self) -> (u64, u64, i64) {
        (
            self.stats.spillovers.load(Ordering::Relaxed),
            self.stats.settles.load(Ordering::Relaxed),
            self.stats.settled_tokens.load(Ordering::Relaxed) as i64,
        )
    }

    /// Failures in a row (relaxed: see `record_outcome`).
    #[inline]
    pub(crate) fn consecutive_failures(&self) -> u64 {
        self.ledger.consecutive.load(Ordering::Relaxed)
    }

    /// Whether the node's token rate admits `cost_ns` more now (see [`gcra_allows`]).
    #[inline]
    pub(crate) fn rate_allows(&self, now: u64, cost_ns: u64, burst_ns: u64) -> bool {
        gcra_allows(&self.ledger.tat, now, cost_ns, burst_ns)
    }

    /// Takes `cost_ns` of the node's token rate if it fits (see [`gcra_take`]).
    pub(crate) fn rate_take(&self, now: u64, cost_ns: u64, burst_ns: u64) -> bool {
        gcra_take(&self.ledger.tat, now, cost_ns, burst_ns)
    }

    /// Gives back a whole token-rate reservation that was never used (see [`gcra_refund`]).
    pub(crate) fn rate_refund(&self, cost_ns: u64) {
        gcra_refund(&self.ledger.tat, cost_ns)
    }

    /// Settles a reservation of the node's token rate (see [`gcra_settle`]).
    pub(crate) fn rate_settle(&self, delta_ns: i64) {
        gcra_settle(&self.ledger.tat, delta_ns)
    }

    /// Clears the failure streak (the control thread, when a node goes half-open).
    pub(crate) fn reset_consecutive_failures(&self) {
        self.ledger.consecutive.store(0, Ordering::Relaxed);
    }

    /// Tasks finished with this node at their head, by outcome.
    pub(crate) fn outcomes(&self) -> [u64; 6] {
        // Acquire: see `record_outcome`.
        std::array::from_fn(|i| self.stats.outcomes[i].load(Ordering::Acquire))
    }

    /// Every task this node finished a stage of (head or downstream), by outcome.
    pub(crate) fn all_outcomes(&self) -> [u64; 6] {
        // Relaxed: a report.
        std::array::from_fn(|i| {
            self.stats.outcomes[i].load(Ordering::Relaxed)
                + self.stats.downstream[i].load(Ordering::Relaxed)
        })
    }

    /// Leases taken so far: stages finished plus stages in flight.
    pub(crate) fn leases(&self) -> u64 {
        self.all_outcomes().iter().sum::<u64>() + Amounts::unpack(self.load().0, 0).inflight
    }

    fn ewmas(&self) -> (f64, f64) {
        // Relaxed: a report; both halves are read from one atomic word.
        let w = self.stats.ewma.load(Ordering::Relaxed);
        (
            f32::from_bits(w as u32) as f64,
            f32::from_bits((w >> 32) as u32) as f64,
        )
    }

    /// Latency EWMA in ms (0 before the first success).
    pub(crate) fn latency_ewma_ms(&self) -> f64 {
        self.ewmas().0
    }

    /// Observed over predicted latency (0 before the first success).
    pub(crate) fn slowness(&self) -> f64 {
        self.ewmas().1
    }
}

/// The largest latency (ms) or slowness sample the EWMAs take: about 11.6 days, far inside
/// `f32`'s range.
const MAX_SAMPLE: f64 = 1e9;

/// Adds `add` to `word` if `ok(current)` holds, retrying on contention.
#[inline]
fn cas_add(word: &AtomicU64, add: u64, ok: impl Fn(u64) -> bool) -> bool {
    // Relaxed throughout: see the module's orderings.
    let mut cur = word.load(Ordering::Relaxed);
    loop {
        if !ok(cur) {
            return false;
        }
        match word.compare_exchange_weak(cur, cur + add, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(seen) => cur = seen,
        }
    }
}

fn ewma_update(word: &AtomicU64, latency: f32, slowness: f32) {
    let step = |old: f32, sample: f32| {
        if old == 0.0 {
            sample
        } else if sample == 0.0 {
            old
        } else {
            old + EWMA_ALPHA as f32 * (sample - old)
        }
    };
    // Relaxed: the EWMA is a statistic; the CAS loop only keeps concurrent updates from being
    // lost, it publishes nothing else.
    let mut cur = word.load(Ordering::Relaxed);
    loop {
        let lat = step(f32::from_bits(cur as u32), latency);
        let slow = step(f32::from_bits((cur >> 32) as u32), slowness);
        let new = lat.to_bits() as u64 | ((slow.to_bits() as u64) << 32);
        match word.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => cur = seen,
        }
    }
}
