//! Node descriptions (control path) and per-node live state (hot path).
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
use crate::capability::{CapSet, CapabilityRegistry};
use crate::error::ConfigError;
use crate::model::{NodeId, Outcome};
use crate::sync::{AtomicU64, CachePadded, Ordering};

pub use crate::limits::MAX_CONCURRENCY;
/// Largest memory (MB) and tokens-in-flight capacity of one node (the 24-bit ledger fields).
pub(crate) const MAX_LEDGER_24: u32 = crate::limits::MAX_TOKENS_IN_FLIGHT;
const MAX_MILLIS: u64 = u32::MAX as u64;

/// A model backend: capacity, speed model, price and capabilities.
///
/// # Examples
/// ```
/// use switchyard::NodeSpec;
/// let n = NodeSpec::new("h100-0")
///     .capabilities(["chat", "code"])
///     .max_concurrency(64)
///     .speed(15.0, 8_000.0, 60.0)
///     .cost_per_1k_tokens(0.4);
/// assert_eq!(n.max_concurrency, 64);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    /// Unique name.
    pub name: String,
    /// Capabilities it offers.
    pub capabilities: Vec<String>,
    /// Quality score per capability, 0–1 (1 for any listed capability not scored here).
    pub capability_scores: Vec<(String, f64)>,
    /// Most tasks in flight (1..=65535).
    pub max_concurrency: u32,
    /// Most tokens (input + estimated output) in flight.
    pub max_tokens_in_flight: u32,
    /// Memory for KV cache, MB.
    pub memory_mb: u32,
    /// CPU cores a node offers to tasks (0 when tasks take none).
    pub cpu_cores: f64,
    /// GPU devices a node offers to tasks (0 when tasks take none).
    pub gpus: f64,
    /// CPU cores one task holds.
    pub cpu_per_task: f64,
    /// GPU devices one task holds.
    pub gpu_per_task: f64,
    /// KV-cache MB per 1000 tokens.
    pub kv_mb_per_1k_tokens: f64,
    /// Fixed per-request latency, ms.
    pub base_latency_ms: f64,
    /// Prefill throughput for one sequence, tokens/s.
    pub prefill_tokens_per_sec: f64,
    /// Decode throughput for one sequence, tokens/s.
    pub decode_tokens_per_sec: f64,
    /// How much a full batch slows each sequence (latency × (1 + slowdown × utilisation)).
    pub batch_slowdown: f64,
    /// Price per 1000 tokens.
    pub cost_per_1k_tokens: f64,
    /// Static preference weight (> 0; 1 = neutral).
    pub weight: f64,
    /// Token-rate limit, tokens per second (input + output; 0 = none), enforced per node by a
    /// lock-free GCRA: a task's tokens are reserved when it is routed and settled to the actual
    /// count when it completes. A node at its rate counts as full for routing.
    pub max_tokens_per_second: f64,
    /// Burst the rate allows, seconds of tokens (default 1).
    pub token_burst_seconds: f64,
}

impl NodeSpec {
    /// A node with the documented defaults: 32 concurrent tasks, 262 144 tokens in flight,
    /// 40 960 MB of KV memory at 128 MB per 1000 tokens, 20 ms base latency, 5000 tokens/s
    /// prefill, 50 tokens/s decode per sequence, batch slowdown 1, price 1, weight 1.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            capabilities: Vec::new(),
            capability_scores: Vec::new(),
            max_concurrency: 32,
            max_tokens_in_flight: 262_144,
            memory_mb: 40_960,
            cpu_cores: 0.0,
            gpus: 0.0,
            cpu_per_task: 0.0,
            gpu_per_task: 0.0,
            kv_mb_per_1k_tokens: 128.0,
            base_latency_ms: 20.0,
            prefill_tokens_per_sec: 5_000.0,
            decode_tokens_per_sec: 50.0,
            batch_slowdown: 1.0,
            cost_per_1k_tokens: 1.0,
            weight: 1.0,
            max_tokens_per_second: 0.0,
            token_burst_seconds: 1.0,
        }
    }

    /// Sets the token-rate limit (tokens per second; 0 = none) and its burst (seconds).
    pub fn token_rate(mut self, per_second: f64, burst_seconds: f64) -> Self {
        self.max_tokens_per_second = per_second;
        self.token_burst_seconds = burst_seconds;
        self
    }

    /// Sets the capabilities.
    pub fn capabilities<I, S>(mut self, caps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.capabilities = caps.into_iter().map(Into::into).collect();
        self
    }

    /// Sets one capability's quality score.
    pub fn capability_score(mut self, cap: impl Into<String>, score: f64) -> Self {
        self.capability_scores.push((cap.into(), score));
        self
    }

    /// Sets the concurrency limit.
    pub fn max_concurrency(mut self, n: u32) -> Self {
        self.max_concurrency = n;
        self
    }

    /// Sets the tokens-in-flight limit.
    pub fn max_tokens_in_flight(mut self, n: u32) -> Self {
        self.max_tokens_in_flight = n;
        self
    }

    /// Sets KV memory (MB) and its cost per 1000 tokens.
    pub fn memory(mut self, memory_mb: u32, kv_mb_per_1k_tokens: f64) -> Self {
        self.memory_mb = memory_mb;
        self.kv_mb_per_1k_tokens = kv_mb_per_1k_tokens;
        self
    }

    /// Sets CPU and GPU capacity and per-task demand.
    pub fn compute(
        mut self,
        cpu_cores: f64,
        cpu_per_task: f64,
        gpus: f64,
        gpu_per_task: f64,
    ) -> Self {
        self.cpu_cores = cpu_cores;
        self.cpu_per_task = cpu_per_task;
        self.gpus = gpus;
        self.gpu_per_task = gpu_per_task;
        self
    }

    /// Sets the speed model: base latency (ms), prefill and decode tokens/s per sequence.
    pub fn speed(mut self, base_latency_ms: f64, prefill: f64, decode: f64) -> Self {
        self.base_latency_ms = base_latency_ms;
        self.prefill_tokens_per_sec = prefill;
        self.decode_tokens_per_sec = decode;
        self
    }

    /// Sets the batch slowdown factor.
    pub fn batch_slowdown(mut self, s: f64) -> Self {
        self.batch_slowdown = s;
        self
    }

    /// Sets the price per 1000 tokens.
    pub fn cost_per_1k_tokens(mut self, c: f64) -> Self {
        self.cost_per_1k_tokens = c;
        self
    }

    /// Sets the static weight.
    pub fn weight(mut self, w: f64) -> Self {
        self.weight = w;
        self
    }

    /// Unloaded latency of one task on this node, ms: base + prefill + decode.
    pub fn service_time_ms(&self, input_tokens: u32, output_tokens: u32) -> f64 {
        self.base_latency_ms
            + input_tokens as f64 * 1000.0 / self.prefill_tokens_per_sec
            + output_tokens as f64 * 1000.0 / self.decode_tokens_per_sec
    }

    /// Checks every field and resolves capabilities; never panics.
    pub(crate) fn validate(&self, reg: &CapabilityRegistry) -> Result<Resolved, ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::InvalidName {
                what: "node",
                name: self.name.clone(),
            });
        }
        let num = |field: &'static str, v: f64, min: f64, max: f64, strict_min: bool| {
            let ok = v.is_finite() && v <= max && if strict_min { v > min } else { v >= min };
            if ok {
                Ok(v)
            } else {
                Err(ConfigError::InvalidNumber {
                    owner: self.name.clone(),
                    field,
                    value: v,
                })
            }
        };
        let zero = |field: &'static str| ConfigError::ZeroCapacity {
            node: self.name.clone(),
            field,
        };
        if self.max_concurrency == 0 {
            return Err(zero("max_concurrency"));
        }
        if self.max_concurrency > MAX_CONCURRENCY {
            return Err(ConfigError::CapacityTooLarge {
                node: self.name.clone(),
                field: "max_concurrency",
                max: MAX_CONCURRENCY as u64,
            });
        }
        if self.max_tokens_in_flight == 0 {
            return Err(zero("max_tokens_in_flight"));
        }
        if self.memory_mb == 0 {
            return Err(zero("memory_mb"));
        }
        for (field, v) in [
            ("max_tokens_in_flight", self.max_tokens_in_flight),
            ("memory_mb", self.memory_mb),
        ] {
            if v > MAX_LEDGER_24 {
                return Err(ConfigError::CapacityTooLarge {
                    node: self.name.clone(),
                    field,
                    max: MAX_LEDGER_24 as u64,
                });
            }
        }
        let big = MAX_MILLIS as f64 / 1000.0;
        let cpu = num("cpu_cores", self.cpu_cores, 0.0, big, false)?;
        let gpu = num("gpus", self.gpus, 0.0, big, false)?;
        let cpu_t = num("cpu_per_task", self.cpu_per_task, 0.0, big, false)?;
        let gpu_t = num("gpu_per_task", self.gpu_per_task, 0.0, big, false)?;
        if cpu_t > cpu {
            return Err(if cpu == 0.0 {
                zero("cpu_cores")
            } else {
                ConfigError::InvalidNumber {
                    owner: self.name.clone(),
                    field: "cpu_per_task",
                    value: cpu_t,
                }
            });
        }
        if gpu_t > gpu {
            return Err(if gpu == 0.0 {
                zero("gpus")
            } else {
                ConfigError::InvalidNumber {
                    owner: self.name.clone(),
                    field: "gpu_per_task",
                    value: gpu_t,
                }
            });
        }
        let kv = num(
            "kv_mb_per_1k_tokens",
            self.kv_mb_per_1k_tokens,
            0.0,
            1e9,
            false,
        )?;
        let base = num("base_latency_ms", self.base_latency_ms, 0.0, 1e9, false)?;
        // At least one token per 1000 s: below that, 1000/rate overflows the latency model.
        let prefill = num(
            "prefill_tokens_per_sec",
            self.prefill_tokens_per_sec,
            1e-3,
            1e12,
            false,
        )?;
        let decode = num(
            "decode_tokens_per_sec",
            self.decode_tokens_per_sec,
            1e-3,
            1e12,
            false,
        )?;
        let slow = num("batch_slowdown", self.batch_slowdown, 0.0, 1e6, false)?;
        let price = num(
            "cost_per_1k_tokens",
            self.cost_per_1k_tokens,
            0.0,
            1e12,
            false,
        )?;
        let weight = num("weight", self.weight, 0.0, 1e6, true)?;
        let rate = num(
            "max_tokens_per_second",
            self.max_tokens_per_second,
            0.0,
            1e12,
            false,
        )?;
        let burst = num(
            "token_burst_seconds",
            self.token_burst_seconds,
            0.0,
            3_600.0,
            true,
        )?;
        // At least 1 ns per token (a rate above 1e9 tokens/s is no limit).
        let ns_per_token = if rate > 0.0 {
            (1e9 / rate).round().max(1.0) as u64
        } else {
            0
        };
        let caps = reg.resolve(&self.capabilities)?;
        let mut scores = Vec::new();
        for (cap, s) in &self.capability_scores {
            let bit = reg
                .get(cap)
                .ok_or_else(|| ConfigError::UnknownCapability(cap.clone()))?;
            let s = num("capability_score", *s, 0.0, 1.0, false)?;
            scores.retain(|&(b, _)| b != bit as u16);
            scores.push((bit as u16, s as f32));
        }
        scores.sort_by_key(|&(b, _)| b);
        let cpu_millis = (cpu * 1000.0).round() as u64;
        let gpu_millis = (gpu * 1000.0).round() as u64;
        Ok(Resolved {
            caps,
            scores: scores.into_boxed_slice(),
            cap: Amounts {
                inflight: self.max_concurrency as u64,
                memory_mb: self.memory_mb as u64,
                tokens: self.max_tokens_in_flight as u64,
                cpu_millis,
                gpu_millis,
            },
            cpu_millis_per_task: (cpu_t * 1000.0).round() as u32,
            gpu_millis_per_task: (gpu_t * 1000.0).round() as u32,
            kv_mb_per_token: kv / 1000.0,
            base_ms: base,
            prefill_ms_per_token: 1000.0 / prefill,
            decode_ms_per_token: 1000.0 / decode,
            batch_slowdown: slow,
            price_per_token: price / 1000.0,
            weight,
            ns_per_token,
            burst_ns: (burst * 1e9) as u64,
        })
    }
}

/// A validated node, ready for the routing table.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resolved {
    pub(crate) caps: CapSet,
    pub(crate) scores: Box<[(u16, f32)]>,
    pub(crate) cap: Amounts,
    pub(crate) cpu_millis_per_task: u32,
    pub(crate) gpu_millis_per_task: u32,
    pub(crate) kv_mb_per_token: f64,
    pub(crate) base_ms: f64,
    pub(crate) prefill_ms_per_token: f64,
    pub(crate) decode_ms_per_token: f64,
    pub(crate) batch_slowdown: f64,
    pub(crate) price_per_token: f64,
    pub(crate) weight: f64,
    /// GCRA emission interval per token (0 = no rate limit) and burst tolerance.
    pub(crate) ns_per_token: u64,
    pub(crate) burst_ns: u64,
}

/// A configured chain of stages, e.g. a guard model then a large model.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainSpec {
    /// Unique name.
    pub name: String,
    /// Node names, in order.
    pub stages: Vec<String>,
    /// Capabilities the chain as a whole offers (empty: the union of its stages').
    pub capabilities: Vec<String>,
}

impl ChainSpec {
    /// A chain over the named nodes.
    pub fn new<I, S>(name: impl Into<String>, stages: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            name: name.into(),
            stages: stages.into_iter().map(Into::into).collect(),
            capabilities: Vec::new(),
        }
    }

    /// Declares the capabilities the chain offers.
    pub fn capabilities<I, S>(mut self, caps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.capabilities = caps.into_iter().map(Into::into).collect();
        self
    }
}

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

const M16: u64 = 0xFFFF;
const M24: u64 = 0xFF_FFFF;
const M32: u64 = 0xFFFF_FFFF;

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
    /// Written by every reservation and release (pickers and completers).
    ledger: CachePadded<Ledger>,
    /// Written by completions only.
    stats: CachePadded<NodeStats>,
    /// Affinity keys of recently routed tasks, direct-mapped (see `remember`).
    recent: Box<[AtomicU64]>,
}

/// Slots of a node's recent-affinity table: 64 keys, 512 bytes.
const RECENT_SLOTS: usize = if cfg!(switchyard_loom) { 2 } else { 64 };

#[inline]
fn recent_slot(key: u64) -> usize {
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % RECENT_SLOTS
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
}

/// EWMA smoothing for completions: each sample moves the average a fifth of the way.
/// Plucked from the usual 0.1–0.3 range; the control thread's decisions look at many samples.
const EWMA_ALPHA: f64 = 0.2;

impl NodeLive {
    pub(crate) fn new(id: NodeId) -> Self {
        Self {
            id,
            ledger: CachePadded::new(Ledger::default()),
            stats: CachePadded::new(NodeStats::default()),
            recent: (0..RECENT_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Notes that a task with affinity `key` was routed here. A direct-mapped slot: a newer
    /// key evicts an older one that hashes alike, which is the approximation (an LRU of one
    /// per slot, like a tiny cache tag array).
    #[inline]
    pub(crate) fn remember(&self, key: u64) {
        let slot = &self.recent[recent_slot(key)];
        // Relaxed: a hint read by pickers; a lost or late update only costs an affinity miss.
        if slot.load(Ordering::Relaxed) != key {
            slot.store(key, Ordering::Relaxed);
        }
    }

    /// Whether a task with affinity `key` was routed here recently (relaxed: a hint).
    #[inline]
    pub(crate) fn recalls(&self, key: u64) -> bool {
        self.recent[recent_slot(key)].load(Ordering::Relaxed) == key
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
            Outcome::ServerError | Outcome::Timeout | Outcome::Abandoned => {
                self.ledger.consecutive.fetch_add(1, Ordering::Relaxed);
            }
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
            let slow = if predicted_ms > 0.0 && predicted_ms.is_finite() {
                latency_ms / predicted_ms
            } else {
                0.0
            };
            ewma_update(&self.stats.ewma, latency_ms as f32, slow as f32);
        }
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

/// Whether a GCRA whose theoretical arrival time is `tat` admits `cost_ns` more now: the
/// TAT may run at most `burst_ns` ahead of now. Relaxed: a hint for routing; `gcra_take`
/// decides.
#[inline]
pub(crate) fn gcra_allows(tat: &AtomicU64, now: u64, cost_ns: u64, burst_ns: u64) -> bool {
    let t = tat.load(Ordering::Relaxed).max(now);
    t + cost_ns - now <= burst_ns
}

/// Takes `cost_ns` of a GCRA if it fits (a CAS loop). Relaxed: the state is one location;
/// every update is an RMW in its modification order, so no two takers both get the last of
/// the burst, and it publishes nothing else.
pub(crate) fn gcra_take(tat: &AtomicU64, now: u64, cost_ns: u64, burst_ns: u64) -> bool {
    let mut cur = tat.load(Ordering::Relaxed);
    loop {
        let next = cur.max(now) + cost_ns;
        if next - now > burst_ns {
            return false;
        }
        match tat.compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(seen) => cur = seen,
        }
    }
}

/// Settles a GCRA reservation: charges (`delta_ns` > 0) or refunds (< 0). A refund never
/// moves the state below zero. Relaxed: as `gcra_take`.
pub(crate) fn gcra_settle(tat: &AtomicU64, delta_ns: i64) {
    if delta_ns >= 0 {
        tat.fetch_add(delta_ns as u64, Ordering::Relaxed);
        return;
    }
    let refund = delta_ns.unsigned_abs();
    let mut cur = tat.load(Ordering::Relaxed);
    loop {
        match tat.compare_exchange_weak(
            cur,
            cur.saturating_sub(refund),
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return,
            Err(seen) => cur = seen,
        }
    }
}

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

#[cfg(all(test, not(switchyard_loom)))]
mod test {
    use super::*;

    fn reg() -> CapabilityRegistry {
        let mut r = CapabilityRegistry::new();
        r.intern("chat").unwrap();
        r
    }

    fn amt(inflight: u64, memory_mb: u64, tokens: u64, cpu_millis: u64) -> (u64, u64) {
        Amounts {
            inflight,
            memory_mb,
            tokens,
            cpu_millis,
            gpu_millis: 0,
        }
        .pack()
    }

    #[test]
    fn packing_round_trips() {
        let a = Amounts {
            inflight: 65_535,
            memory_mb: M24,
            tokens: M24,
            cpu_millis: M32,
            gpu_millis: 7,
        };
        let (w0, w1) = a.pack();
        assert_eq!(Amounts::unpack(w0, w1), a);
        let cap = amt(2, 10, 10, 5);
        assert!(fits0(amt(1, 2, 3, 0).0, amt(1, 8, 7, 0).0, cap.0));
        assert!(!fits0(amt(1, 2, 3, 0).0, amt(0, 9, 0, 0).0, cap.0));
        assert!(!fits0(amt(1, 2, 3, 0).0, amt(0, 0, 8, 0).0, cap.0));
        assert!(!fits0(amt(2, 0, 0, 0).0, amt(1, 0, 0, 0).0, cap.0));
        assert!(!fits1(amt(0, 0, 0, 5).1, amt(0, 0, 0, 1).1, cap.1));
        let full = Amounts {
            inflight: 1,
            memory_mb: 5,
            tokens: 10,
            ..Default::default()
        };
        assert!((full.utilization(&Amounts::unpack(cap.0, cap.1)) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn reserve_is_all_or_nothing() {
        let live = NodeLive::new(NodeId(1));
        let (cap0, cap1) = amt(2, 100, 1000, 1500);
        let (a0, a1) = amt(1, 60, 10, 1000);
        assert!(live.try_reserve(a0, a1, cap0, cap1));
        // memory would exceed: nothing is taken
        assert!(!live.try_reserve(a0, 0, cap0, cap1));
        assert_eq!(live.load(), (a0, a1));
        // cpu would exceed: w0 must be rolled back
        let (b0, b1) = amt(1, 40, 10, 1000);
        assert!(!live.try_reserve(b0, b1, cap0, cap1));
        assert_eq!(live.load(), (a0, a1));
        assert!(live.try_reserve(b0, 0, cap0, cap1));
        // concurrency full
        assert!(!live.try_reserve(amt(1, 0, 0, 0).0, 0, cap0, cap1));
        live.release(a0, a1);
        live.release(b0, 0);
        assert_eq!(live.load(), (0, 0));
    }

    #[test]
    fn outcomes_and_ewma() {
        let live = NodeLive::new(NodeId(1));
        live.record_outcome(true, Outcome::Success, 100.0, 50.0);
        live.record_outcome(true, Outcome::Success, 200.0, 100.0);
        live.record_outcome(true, Outcome::Timeout, f64::NAN, 1.0);
        live.record_outcome(false, Outcome::Success, 50.0, 0.0);
        assert_eq!(live.outcomes()[0], 2);
        assert_eq!(live.all_outcomes()[0], 3);
        assert_eq!(live.outcomes()[Outcome::Timeout.index()], 1);
        assert_eq!(live.leases(), 4);
        // 100 → 120 → 114 (the downstream sample moves latency, not slowness)
        assert!(
            (live.latency_ewma_ms() - 106.0).abs() < 1e-3,
            "{}",
            live.latency_ewma_ms()
        );
        assert!((live.slowness() - 2.0).abs() < 1e-6);
    }

    #[test]
    fn validation_names_the_field() {
        let r = reg();
        assert!(NodeSpec::new("a")
            .capabilities(["chat"])
            .validate(&r)
            .is_ok());
        let e = NodeSpec::new("a")
            .weight(f64::NAN)
            .validate(&r)
            .unwrap_err();
        assert!(matches!(
            e,
            ConfigError::InvalidNumber {
                field: "weight",
                ..
            }
        ));
        let e = NodeSpec::new("a").weight(-1.0).validate(&r).unwrap_err();
        assert!(matches!(
            e,
            ConfigError::InvalidNumber {
                field: "weight",
                ..
            }
        ));
        let e = NodeSpec::new("a")
            .max_concurrency(0)
            .validate(&r)
            .unwrap_err();
        assert_eq!(
            e,
            ConfigError::ZeroCapacity {
                node: "a".into(),
                field: "max_concurrency"
            }
        );
        let e = NodeSpec::new("a")
            .max_concurrency(70_000)
            .validate(&r)
            .unwrap_err();
        assert!(matches!(e, ConfigError::CapacityTooLarge { .. }));
        let e = NodeSpec::new("a")
            .capabilities(["vision"])
            .validate(&r)
            .unwrap_err();
        assert_eq!(e, ConfigError::UnknownCapability("vision".into()));
        let e = NodeSpec::new("a")
            .compute(0.0, 1.0, 0.0, 0.0)
            .validate(&r)
            .unwrap_err();
        assert!(matches!(
            e,
            ConfigError::ZeroCapacity {
                field: "cpu_cores",
                ..
            }
        ));
        let e = NodeSpec::new("").validate(&r).unwrap_err();
        assert!(matches!(e, ConfigError::InvalidName { .. }));
        let e = NodeSpec::new("a")
            .speed(1.0, 5e-324, 1.0)
            .validate(&r)
            .unwrap_err();
        assert!(matches!(
            e,
            ConfigError::InvalidNumber {
                field: "prefill_tokens_per_sec",
                ..
            }
        ));
        let e = NodeSpec::new("a")
            .capability_score("chat", 1.5)
            .validate(&r)
            .unwrap_err();
        assert!(matches!(
            e,
            ConfigError::InvalidNumber {
                field: "capability_score",
                ..
            }
        ));
        let ok = NodeSpec::new("a")
            .capabilities(["chat"])
            .capability_score("chat", 0.5)
            .capability_score("chat", 0.7)
            .validate(&r)
            .unwrap();
        assert_eq!(&*ok.scores, &[(0u16, 0.7f32)]);
    }

    #[test]
    fn service_time_formula() {
        let n = NodeSpec::new("a").speed(10.0, 1000.0, 100.0);
        assert!((n.service_time_ms(500, 20) - (10.0 + 500.0 + 200.0)).abs() < 1e-9);
    }
}
