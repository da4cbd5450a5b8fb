//! Node and chain descriptions (the control path): capacity, speed model, price,
//! capabilities, and their validation into what the routing table holds.
use crate::capability::{CapSet, CapabilityRegistry};
use crate::error::ConfigError;

use super::live::Amounts;
use super::MAX_LEDGER_24;
use crate::limits::MAX_CONCURRENCY;

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
    /// Token-rate limit, tokens per second (input + output; 0 = none, else 1 to 1e12, as
    /// for tenants), enforced per node by a
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

    /// Sets the token-rate limit (tokens per second; 0 = none, else 1 to 1e12) and its burst
    /// (seconds, above 0 and at most 3600).
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
        // 0 (no limit), or 1 to 1e12 tokens/s as for tenants: below one token per second the
        // interval per token and a task's cost leave the GCRA's range.
        let rate = num(
            "max_tokens_per_second",
            self.max_tokens_per_second,
            0.0,
            1e12,
            false,
        )?;
        if rate > 0.0 && rate < 1.0 {
            return Err(ConfigError::InvalidNumber {
                owner: self.name.clone(),
                field: "max_tokens_per_second",
                value: rate,
            });
        }
        let burst = num(
            "token_burst_seconds",
            self.token_burst_seconds,
            0.0,
            3_600.0,
            true,
        )?;
        // At least 1 ns per token (a rate above 1e9 tokens/s is no limit), at most 1e9.
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
