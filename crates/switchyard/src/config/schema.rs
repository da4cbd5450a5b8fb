//! The tables of a config file: `[weights]`, `[admission]`, `[[tenant]]`, `[[node]]` and
//! `[[chain]]`, and their conversions to the router's specs.
use std::collections::BTreeMap;

use serde::Deserialize;

use crate::node::{ChainSpec, NodeSpec};
use crate::routing::ScoringWeights;

/// The `[weights]` table: how routes are ranked (see [`ScoringWeights`]). A key left out
/// keeps [`ScoringWeights::default`]'s value.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WeightsConfig {
    /// How strongly live utilisation inflates a route's score (0–10⁶).
    pub load: f64,
    /// How strongly price, relative to the fleet mean, inflates a route's score (0–10⁶).
    pub cost: f64,
    /// How strongly a capability score below 1 inflates a route's score (0–1).
    pub capability: f64,
    /// Alternatives returned beside the primary route (0..=4).
    pub alternatives: usize,
    /// Share of prefill a recent same-prefix task is assumed to save on a node (0–1).
    pub affinity: f64,
    /// Largest cost-at-slack margin, as a share of a task's latency limit (0–1; 0: off).
    pub slack: f64,
    /// SLO attainment the adaptive cost-at-slack margin defends (0–1).
    pub slo_target: f64,
}

impl Default for WeightsConfig {
    fn default() -> Self {
        Self::from(ScoringWeights::default())
    }
}

impl From<ScoringWeights> for WeightsConfig {
    fn from(w: ScoringWeights) -> Self {
        Self {
            load: w.load,
            cost: w.cost,
            capability: w.capability,
            alternatives: w.alternatives,
            affinity: w.affinity,
            slack: w.slack,
            slo_target: w.slo_target,
        }
    }
}

impl From<WeightsConfig> for ScoringWeights {
    fn from(w: WeightsConfig) -> Self {
        Self {
            load: w.load,
            cost: w.cost,
            capability: w.capability,
            alternatives: w.alternatives,
            affinity: w.affinity,
            slack: w.slack,
            slo_target: w.slo_target,
        }
    }
}

/// The `[admission]` table (see `docs/admission.md`). A key left out keeps its default.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionConfig {
    /// Share of each node's capacity each class may fill: critical, high, normal, low
    /// (each in (0, 1], not increasing; default `[1.0, 0.95, 0.85, 0.75]`).
    pub headroom: [f64; 4],
    /// Leases held longer are reclaimed by the control thread (0 = never, the default).
    /// Read when the router is built; a reload leaves it as it is.
    pub lease_timeout_ms: u64,
    /// Records for outstanding leases when timeouts are on (1–16 777 216; default 16 384).
    /// Read when the router is built.
    pub lease_slots: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            headroom: crate::routing::Headroom::default().shares,
            lease_timeout_ms: 0,
            lease_slots: 16_384,
        }
    }
}

/// One `[[tenant]]` table: a tenant's token-rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The tenant's id (below [`MAX_TENANTS`](crate::limits::MAX_TENANTS)), as the gateway sets it on
    /// [`Task::tenant`](crate::Task::tenant).
    pub id: u32,
    /// Tokens (input + output) per second; 0 = no limit.
    pub max_tokens_per_second: f64,
    /// Burst, seconds of the rate (default 1).
    #[serde(default = "one_second")]
    pub token_burst_seconds: f64,
}

fn one_second() -> f64 {
    1.0
}

/// One `[[node]]` table: a [`NodeSpec`]. Only `name` is required; a key left out keeps
/// [`NodeSpec::new`]'s default.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique name.
    pub name: String,
    /// Capabilities it offers (each must be in the top-level `capabilities`).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Quality score per capability, 0–1 (`capability_scores = { code = 0.9 }`).
    #[serde(default)]
    pub capability_scores: BTreeMap<String, f64>,
    /// Most tasks in flight (1..=65535).
    pub max_concurrency: Option<u32>,
    /// Most tokens (input + estimated output) in flight.
    pub max_tokens_in_flight: Option<u32>,
    /// Memory for KV cache, MB.
    pub memory_mb: Option<u32>,
    /// CPU cores the node offers to tasks.
    pub cpu_cores: Option<f64>,
    /// GPU devices the node offers to tasks.
    pub gpus: Option<f64>,
    /// CPU cores one task holds.
    pub cpu_per_task: Option<f64>,
    /// GPU devices one task holds.
    pub gpu_per_task: Option<f64>,
    /// KV-cache MB per 1000 tokens.
    pub kv_mb_per_1k_tokens: Option<f64>,
    /// Fixed per-request latency, ms.
    pub base_latency_ms: Option<f64>,
    /// Prefill throughput for one sequence, tokens/s.
    pub prefill_tokens_per_sec: Option<f64>,
    /// Decode throughput for one sequence, tokens/s.
    pub decode_tokens_per_sec: Option<f64>,
    /// How much a full batch slows each sequence.
    pub batch_slowdown: Option<f64>,
    /// Price per 1000 tokens.
    pub cost_per_1k_tokens: Option<f64>,
    /// Static preference weight (> 0; 1 = neutral).
    pub weight: Option<f64>,
    /// Token-rate limit, tokens per second (0 = none).
    pub max_tokens_per_second: Option<f64>,
    /// Burst of the token rate, seconds.
    pub token_burst_seconds: Option<f64>,
    /// Where a gateway reaches the node: an HTTP base URL such as `http://127.0.0.1:8001`.
    /// The router stores it with the config and never reads it.
    pub url: Option<String>,
    /// Model names the node serves (an OpenAI request's `model` field). Each is declared as a
    /// capability of the same name and offered by this node, so a request for a model resolves
    /// to the nodes that serve it ([`Config::models`](super::Config::models) lists them all).
    #[serde(default)]
    pub models: Vec<String>,
}

impl NodeConfig {
    /// The node spec, with [`NodeSpec::new`]'s defaults for every key left out.
    pub fn to_spec(&self) -> NodeSpec {
        let d = NodeSpec::new(self.name.clone());
        NodeSpec {
            capabilities: self.capabilities.clone(),
            capability_scores: self
                .capability_scores
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            max_concurrency: self.max_concurrency.unwrap_or(d.max_concurrency),
            max_tokens_in_flight: self.max_tokens_in_flight.unwrap_or(d.max_tokens_in_flight),
            memory_mb: self.memory_mb.unwrap_or(d.memory_mb),
            cpu_cores: self.cpu_cores.unwrap_or(d.cpu_cores),
            gpus: self.gpus.unwrap_or(d.gpus),
            cpu_per_task: self.cpu_per_task.unwrap_or(d.cpu_per_task),
            gpu_per_task: self.gpu_per_task.unwrap_or(d.gpu_per_task),
            kv_mb_per_1k_tokens: self.kv_mb_per_1k_tokens.unwrap_or(d.kv_mb_per_1k_tokens),
            base_latency_ms: self.base_latency_ms.unwrap_or(d.base_latency_ms),
            prefill_tokens_per_sec: self
                .prefill_tokens_per_sec
                .unwrap_or(d.prefill_tokens_per_sec),
            decode_tokens_per_sec: self
                .decode_tokens_per_sec
                .unwrap_or(d.decode_tokens_per_sec),
            batch_slowdown: self.batch_slowdown.unwrap_or(d.batch_slowdown),
            cost_per_1k_tokens: self.cost_per_1k_tokens.unwrap_or(d.cost_per_1k_tokens),
            weight: self.weight.unwrap_or(d.weight),
            max_tokens_per_second: self
                .max_tokens_per_second
                .unwrap_or(d.max_tokens_per_second),
            token_burst_seconds: self.token_burst_seconds.unwrap_or(d.token_burst_seconds),
            ..d
        }
    }
}

/// One `[[chain]]` table: a [`ChainSpec`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// Unique name.
    pub name: String,
    /// Node names, in order (1..=[`MAX_STAGES`](crate::limits::MAX_STAGES)).
    pub stages: Vec<String>,
    /// Capabilities the chain offers (left out or empty: the union of its stages').
    #[serde(default)]
    pub capabilities: Vec<String>,
}

impl ChainConfig {
    /// The chain spec.
    pub fn to_spec(&self) -> ChainSpec {
        ChainSpec::new(self.name.clone(), self.stages.iter().cloned())
            .capabilities(self.capabilities.iter().cloned())
    }
}
