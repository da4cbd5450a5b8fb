//! Fleet configuration files (TOML) and hot reload.
//!
//! A [`Config`] describes what a [`RouterBuilder`] takes: capability names, scoring weights,
//! nodes and chains. [`Config::parse`] and [`Config::load`] read one from TOML and check it
//! whole; every problem comes back as a [`ConfigFileError`] naming the file, the line and the
//! field. [`Router::apply_config`] applies a new config to a live router: nodes that stay keep
//! their live counters and their outstanding leases, nodes that go drain, and an invalid config
//! changes nothing.
//!
//! # The format
//! ```toml
//! capabilities = ["chat", "code"]      # every capability name used below
//!
//! [weights]                            # optional; each key defaults as in ScoringWeights
//! load = 2.0
//! alternatives = 2
//!
//! [[node]]                             # one table per node; only `name` is required
//! name = "gpu-1"
//! capabilities = ["chat", "code"]
//! capability_scores = { code = 0.9 }  # 0–1; 1 for a listed capability not scored here
//! max_concurrency = 64
//!
//! [[chain]]                            # optional multi-stage routes over the nodes above
//! name = "guarded"
//! stages = ["gpu-1"]
//! capabilities = ["chat"]              # optional; default: the union of the stages'
//! ```
//! `examples/fleet.toml` documents every key. Unknown keys are errors, so a typo cannot be
//! silently ignored.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;

use crate::capability::MAX_CAPABILITIES;
use crate::clock::{Clock, ManualClock};
use crate::error::ConfigError;
use crate::node::{ChainSpec, NodeSpec};
use crate::router::{Router, RouterBuilder};
use crate::routing::ScoringWeights;

// ===== the configuration =====

/// A fleet configuration: capabilities, scoring weights, nodes and chains.
///
/// Read one with [`Config::parse`] or [`Config::load`] (which also [validate](Config::validate)
/// it), build a router with [`Config::build_router`] or [`Config::to_builder`], and reload a
/// live router with [`Router::apply_config`]. The fields may be changed after parsing; errors
/// about a changed config still name the file, and name lines where the entry can still be
/// found in the text.
///
/// # Examples
/// ```
/// use switchyard::{Config, Task};
///
/// let cfg = Config::parse("fleet.toml", r#"
///     capabilities = ["chat", "code"]
///
///     [[node]]
///     name = "gpu-1"
///     capabilities = ["chat", "code"]
///     capability_scores = { code = 0.9 }
///     max_concurrency = 64
///
///     [[node]]
///     name = "cpu-1"
///     capabilities = ["chat"]
/// "#)?;
/// let router = cfg.build_router(7)?;
/// let code = router.resolve(&["code"])?;
/// let (routes, lease) = router.reader().route(&Task::new(1, 500, 50).require(code))?;
/// assert_eq!(router.snapshot().route_name(routes.primary().route.route), Some("gpu-1"));
/// drop(lease);
///
/// let err = Config::parse("fleet.toml", "[[node]]\nname = \"a\"\nweight = nan\n").unwrap_err();
/// assert_eq!(err.line(), Some(3));
/// assert_eq!(err.field(), Some("weight"));
/// assert!(err.to_string().starts_with("fleet.toml:3: node \"a\": field `weight`"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Capability names, declared in this order (`capabilities = [...]`).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Scoring weights (`[weights]`).
    #[serde(default)]
    pub weights: WeightsConfig,
    /// Nodes (`[[node]]`).
    #[serde(default, rename = "node")]
    pub nodes: Vec<NodeConfig>,
    /// Chains (`[[chain]]`).
    #[serde(default, rename = "chain")]
    pub chains: Vec<ChainConfig>,
    /// Admission settings (`[admission]`).
    #[serde(default)]
    pub admission: AdmissionConfig,
    /// Per-tenant token rates (`[[tenant]]`).
    #[serde(default, rename = "tenant")]
    pub tenants: Vec<TenantConfig>,
    /// The `[gateway]` table, left to the HTTP gateway built on the router
    /// (`switchyard-gateway` reads its listen address, timeouts and limits from it). The
    /// router itself never reads it.
    #[serde(default)]
    pub gateway: Option<toml::Table>,
    /// The `[fleet]` table, left to the gateway's fleet mode (several replicas sharing state);
    /// the router itself never reads it.
    #[serde(default)]
    pub fleet: Option<toml::Table>,
    /// Where the config was read from, for error messages.
    #[serde(skip)]
    origin: Origin,
}

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
    /// The tenant's id (below [`MAX_TENANTS`](crate::MAX_TENANTS)), as the gateway sets it on
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
    /// to the nodes that serve it ([`Config::models`] lists them all).
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
    /// Node names, in order (1..=[`MAX_STAGES`](crate::MAX_STAGES)).
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

/// Where a config came from: its name and text, to put lines in error messages.
#[derive(Debug, Clone, Default)]
struct Origin {
    name: String,
    text: std::sync::Arc<str>,
}

/// The origin does not take part in equality: two configs that say the same thing are equal.
impl PartialEq for Origin {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// What part of a config an error is about.
#[derive(Debug, Clone, Copy)]
enum Owner {
    /// The top-level `capabilities`.
    Capabilities,
    /// The `[weights]` table.
    Weights,
    /// `nodes[i]`.
    Node(usize),
    /// `chains[i]`.
    Chain(usize),
    /// The `[admission]` table.
    Admission,
    /// `tenants[i]`.
    Tenant(usize),
}

impl Config {
    /// Parses and [validates](Config::validate) a TOML config. `source_name` (usually the file
    /// name) heads every error message.
    ///
    /// # Errors
    /// A [`ConfigFileError`] naming `source_name`, the line and the field: TOML syntax, a
    /// wrong type, an unknown or missing key, or a value the router refuses.
    pub fn parse(source_name: &str, text: &str) -> Result<Config, ConfigFileError> {
        let mut cfg: Config =
            toml::from_str(text).map_err(|e| ConfigFileError::from_toml(source_name, text, e))?;
        cfg.origin = Origin {
            name: source_name.to_string(),
            text: text.into(),
        };
        cfg.declare_models();
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every model a node serves becomes a capability of the same name, declared and offered
    /// by that node (see [`NodeConfig::models`]).
    fn declare_models(&mut self) {
        for node in &mut self.nodes {
            for m in &node.models {
                if !node.capabilities.contains(m) {
                    node.capabilities.push(m.clone());
                }
                if !self.capabilities.contains(m) {
                    self.capabilities.push(m.clone());
                }
            }
        }
    }

    /// The models the fleet serves (the union of the nodes' `models`), in the order the file
    /// first names them.
    pub fn models(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for m in self.nodes.iter().flat_map(|n| &n.models) {
            if !out.contains(&m.as_str()) {
                out.push(m);
            }
        }
        out
    }

    /// Each node's `url`, by node name (nodes without one are left out).
    pub fn node_urls(&self) -> Vec<(&str, &str)> {
        self.nodes
            .iter()
            .filter_map(|n| Some((n.name.as_str(), n.url.as_deref()?)))
            .collect()
    }

    /// Reads, parses and validates a TOML config file; errors name the file as `path` shows.
    ///
    /// # Errors
    /// As [`Config::parse`], and a [`ConfigFileError`] without a line when the file cannot be
    /// read (its [`source`](std::error::Error::source) is the I/O error).
    pub fn load(path: &Path) -> Result<Config, ConfigFileError> {
        let name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&name, &text),
            Err(e) => Err(ConfigFileError::from(Detail {
                file: name,
                line: None,
                column: None,
                context: None,
                field: None,
                message: format!("cannot read the file: {e}"),
                cause: Cause::Io(e),
            })),
        }
    }

    /// The name errors are reported under (`source_name` of [`Config::parse`]; `"<config>"`
    /// for a config that was never parsed).
    pub fn source_name(&self) -> &str {
        if self.origin.name.is_empty() {
            "<config>"
        } else {
            &self.origin.name
        }
    }

    /// The scoring weights.
    pub fn scoring_weights(&self) -> ScoringWeights {
        self.weights.into()
    }

    /// The node specs, in order.
    pub fn node_specs(&self) -> Vec<NodeSpec> {
        self.nodes.iter().map(NodeConfig::to_spec).collect()
    }

    /// The chain specs, in order.
    pub fn chain_specs(&self) -> Vec<ChainSpec> {
        self.chains.iter().map(ChainConfig::to_spec).collect()
    }

    /// A builder holding this config's capabilities, weights, nodes and chains; set a clock
    /// or a seed on it, then build. [`Config::build_router`] is the same with errors located
    /// in the file.
    pub fn to_builder(&self) -> RouterBuilder {
        let a = &self.admission;
        let mut b = Router::builder()
            .capabilities(self.capabilities.iter().cloned())
            .weights(self.scoring_weights())
            .headroom(crate::routing::Headroom { shares: a.headroom })
            .lease_timeout_ms(a.lease_timeout_ms)
            .lease_slots(a.lease_slots)
            .nodes(self.node_specs());
        for t in &self.tenants {
            b = b.tenant_rate(
                crate::TenantId(t.id),
                t.max_tokens_per_second,
                t.token_burst_seconds,
            );
        }
        for c in self.chain_specs() {
            b = b.chain(c);
        }
        b
    }

    /// Builds a router over this config (first snapshot published, epoch 1).
    ///
    /// # Errors
    /// The first problem, as [`Config::validate`] reports it.
    pub fn build_router(&self, seed: u64) -> Result<Router, ConfigFileError> {
        self.validate()?;
        self.to_builder()
            .seed(seed)
            .build()
            .map_err(|e| self.unlocated(e))
    }

    /// Checks the whole config exactly as a router would, in order: weights, capabilities,
    /// nodes, chains.
    ///
    /// # Errors
    /// The first problem, with the line of the offending key (or of its table) and the field.
    pub fn validate(&self) -> Result<(), ConfigFileError> {
        self.rehearse().map(drop)
    }

    /// Applies the config, step by step, to a throwaway router, so that the first failure
    /// says which entry failed. Returns that router (its changes are not yet published).
    fn rehearse(&self) -> Result<Router, ConfigFileError> {
        // A manual clock: nothing here reads the time, and it costs no calibration.
        let clock: std::sync::Arc<dyn Clock> = std::sync::Arc::new(ManualClock::new());
        let r = Router::builder()
            .weights(self.scoring_weights())
            .clock(clock)
            .build()
            .map_err(|e| self.error(e, Owner::Weights))?;
        for c in &self.capabilities {
            r.declare_capability(c)
                .map_err(|e| self.error(e, Owner::Capabilities))?;
        }
        for (i, n) in self.nodes.iter().enumerate() {
            r.add_node(n.to_spec())
                .map_err(|e| self.error(e, Owner::Node(i)))?;
        }
        for (i, c) in self.chains.iter().enumerate() {
            r.add_chain(c.to_spec())
                .map_err(|e| self.error(e, Owner::Chain(i)))?;
        }
        let a = &self.admission;
        r.set_headroom(crate::routing::Headroom { shares: a.headroom })
            .map_err(|e| self.error(e, Owner::Admission))?;
        if !(1..=1 << 24).contains(&a.lease_slots) {
            return Err(self.error(
                ConfigError::InvalidSetting {
                    field: "lease_slots",
                    reason: "must be from 1 to 16777216",
                },
                Owner::Admission,
            ));
        }
        let mut ids = HashSet::new();
        for (i, t) in self.tenants.iter().enumerate() {
            if !ids.insert(t.id) {
                return Err(self.error(
                    ConfigError::Duplicate {
                        what: "tenant",
                        name: t.id.to_string(),
                    },
                    Owner::Tenant(i),
                ));
            }
            r.set_tenant_rate(
                crate::TenantId(t.id),
                t.max_tokens_per_second,
                t.token_burst_seconds,
            )
            .map_err(|e| self.error(e, Owner::Tenant(i)))?;
        }
        Ok(r)
    }

    /// An error that cannot be tied to an entry of the config.
    fn unlocated(&self, e: ConfigError) -> ConfigFileError {
        ConfigFileError::from(Detail {
            file: self.source_name().to_string(),
            line: None,
            column: None,
            context: None,
            field: None,
            message: e.to_string(),
            cause: Cause::Config(e),
        })
    }

    /// Locates a validation error in the source text.
    fn error(&self, e: ConfigError, owner: Owner) -> ConfigFileError {
        let layout = Layout::scan(&self.origin.text);
        let (context, field) = match owner {
            Owner::Capabilities => (None, "capabilities".to_string()),
            Owner::Weights => (
                Some("[weights]".to_string()),
                match &e {
                    ConfigError::InvalidNumber { field, .. }
                    | ConfigError::InvalidSetting { field, .. } => field.to_string(),
                    _ => "weights".to_string(),
                },
            ),
            Owner::Node(i) => {
                let node = self.nodes.get(i);
                let name = node.map_or("", |n| n.name.as_str());
                (Some(format!("node {name:?}")), node_field(&e, node))
            }
            Owner::Chain(i) => {
                let name = self.chains.get(i).map_or("", |c| c.name.as_str());
                (Some(format!("chain {name:?}")), chain_field(&e))
            }
            Owner::Admission => (
                Some("[admission]".to_string()),
                match &e {
                    ConfigError::InvalidSetting { field, .. } => field.to_string(),
                    _ => "headroom".to_string(),
                },
            ),
            Owner::Tenant(i) => {
                let id = self.tenants.get(i).map_or(0, |t| t.id);
                let field = match &e {
                    ConfigError::InvalidSetting { field, .. } if *field != "tenant" => {
                        field.to_string()
                    }
                    _ => "id".to_string(),
                };
                (Some(format!("tenant {id}")), field)
            }
        };
        let path: Vec<&str> = field.split('.').collect();
        let line = match owner {
            Owner::Capabilities | Owner::Weights => layout.root_key_line(&path),
            Owner::Node(i) => self.entry_line(&layout, "node", &self.names_of_nodes(), i, &path),
            Owner::Chain(i) => self.entry_line(&layout, "chain", &self.names_of_chains(), i, &path),
            Owner::Admission => {
                let mut p = vec!["admission"];
                p.extend(&path);
                layout.root_key_line(&p)
            }
            Owner::Tenant(i) => match layout.entries("tenant").get(i) {
                Some(e) => e.key_line(&path).or(Some(e.line)),
                None => layout.root_key_line(&["tenant"]),
            },
        };
        ConfigFileError::from(Detail {
            file: self.source_name().to_string(),
            line,
            column: None,
            context,
            field: Some(field),
            message: describe(&e),
            cause: Cause::Config(e),
        })
    }

    fn names_of_nodes(&self) -> Vec<&str> {
        self.nodes.iter().map(|n| n.name.as_str()).collect()
    }

    fn names_of_chains(&self) -> Vec<&str> {
        self.chains.iter().map(|c| c.name.as_str()).collect()
    }

    /// The line of `path` in entry `i` of the `[[kind]]` tables, or of the entry's `name`, or
    /// of its header; `None` when the text does not hold that entry.
    fn entry_line(
        &self,
        layout: &Layout,
        kind: &str,
        names: &[&str],
        i: usize,
        path: &[&str],
    ) -> Option<usize> {
        let text = &*self.origin.text;
        let entries = layout.entries(kind);
        let name_of = |e: &Entry<'_>| e.string_value(text, &["name"]);
        let wanted = names.get(i).copied();
        // The entry with the same index when it still has the same name, else the first entry
        // with that name (the fields may have changed since parsing).
        let entry = entries
            .get(i)
            .filter(|e| entries.len() == names.len() && name_of(e).as_deref() == wanted)
            .or_else(|| {
                wanted.and_then(|w| entries.iter().find(|e| name_of(e).as_deref() == Some(w)))
            });
        match entry {
            Some(e) => e
                .key_line(path)
                .or_else(|| e.key_line(&["name"]))
                .or(Some(e.line)),
            // `node = [{ ... }]`: the inline array's line.
            None => layout.root_key_line(&[kind]),
        }
    }
}

/// The field of a node that a validation error is about.
fn node_field(e: &ConfigError, node: Option<&NodeConfig>) -> String {
    let scores = node.map(|n| &n.capability_scores);
    match e {
        ConfigError::InvalidNumber { field, .. } if *field == "capability_score" => {
            // The first score out of 0–1, in the order validation checks them.
            match scores.and_then(|s| {
                s.iter()
                    .find(|(_, v)| !(v.is_finite() && (0.0..=1.0).contains(*v)))
            }) {
                Some((cap, _)) => format!("capability_scores.{cap}"),
                None => "capability_scores".to_string(),
            }
        }
        ConfigError::InvalidNumber { field, .. }
        | ConfigError::ZeroCapacity { field, .. }
        | ConfigError::CapacityTooLarge { field, .. } => field.to_string(),
        ConfigError::UnknownCapability(cap) => {
            if node.is_some_and(|n| !n.capabilities.contains(cap))
                && scores.is_some_and(|s| s.contains_key(cap))
            {
                format!("capability_scores.{cap}")
            } else {
                "capabilities".to_string()
            }
        }
        _ => "name".to_string(),
    }
}

/// The field of a chain that a validation error is about.
fn chain_field(e: &ConfigError) -> String {
    match e {
        ConfigError::BadChain { .. } | ConfigError::UnknownNode(_) => "stages",
        ConfigError::UnknownCapability(_) => "capabilities",
        _ => "name",
    }
    .to_string()
}

/// A validation error without its owner (the message names the owner and the field already).
fn describe(e: &ConfigError) -> String {
    match e {
        ConfigError::InvalidNumber { value, .. } => {
            format!("must be finite and in range, got {value}")
        }
        ConfigError::ZeroCapacity { .. } => "must be greater than zero".to_string(),
        ConfigError::CapacityTooLarge { max, .. } => format!("must be at most {max}"),
        ConfigError::UnknownCapability(cap) => {
            format!("unknown capability {cap:?} (not in the top-level `capabilities`)")
        }
        ConfigError::UnknownNode(n) => format!("{n:?} is not a node of this config"),
        ConfigError::InvalidSetting { reason, .. } => reason.to_string(),
        other => other.to_string(),
    }
}

// ===== errors =====

/// An invalid or unreadable config: names the file, the line (1-based) and the field.
///
/// Displays as ``file:line: context: field `name`: what is wrong``, for instance
/// ``fleet.toml:14: node "gpu-1": field `weight`: must be finite and in range, got NaN``;
/// TOML syntax and type errors also carry the column (`file:line:column: ...`).
#[derive(Debug)]
pub struct ConfigFileError(Box<Detail>);

#[derive(Debug)]
struct Detail {
    file: String,
    line: Option<usize>,
    column: Option<usize>,
    context: Option<String>,
    field: Option<String>,
    message: String,
    cause: Cause,
}

impl From<Detail> for ConfigFileError {
    fn from(d: Detail) -> Self {
        Self(Box::new(d))
    }
}

#[derive(Debug)]
enum Cause {
    Io(std::io::Error),
    Toml(toml::de::Error),
    Config(ConfigError),
}

impl ConfigFileError {
    /// The file (the source name given to [`Config::parse`]).
    pub fn file(&self) -> &str {
        &self.0.file
    }

    /// The line, from 1; `None` for an unreadable file, or for an entry of a changed config
    /// that is no longer in the text.
    pub fn line(&self) -> Option<usize> {
        self.0.line
    }

    /// The column, from 1 (TOML syntax and type errors only).
    pub fn column(&self) -> Option<usize> {
        self.0.column
    }

    /// The field, e.g. `weight`, `capability_scores.code`, `weights.load` or `stages`.
    pub fn field(&self) -> Option<&str> {
        self.0.field.as_deref()
    }

    /// The entry the error is in, e.g. `node "gpu-1"`, `chain "guarded"` or `[weights]`.
    pub fn context(&self) -> Option<&str> {
        self.0.context.as_deref()
    }

    /// What is wrong, without the location.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The router's own error, for values it refused.
    pub fn config_error(&self) -> Option<&ConfigError> {
        match &self.0.cause {
            Cause::Config(e) => Some(e),
            _ => None,
        }
    }

    fn from_toml(file: &str, text: &str, e: toml::de::Error) -> Self {
        let layout = Layout::scan(text);
        let message = e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        // `unknown field `x``, `missing field `x``, `duplicate key `x``: the message names it.
        let named = message
            .split('`')
            .nth(1)
            .filter(|_| message.contains("field `") || message.contains("key `"))
            .map(str::to_string);
        let (line, column, context, field) = match e.span() {
            Some(span) => {
                let (line, column) = line_col(text, span.start);
                let (context, key) = layout.at(text, span.start);
                let field = match (key, named) {
                    (Some(k), Some(n)) if !k.ends_with(n.as_str()) => Some(format!("{k}.{n}")),
                    (Some(k), _) => Some(k),
                    (None, n) => n,
                };
                (line, Some(column), context, field)
            }
            None => {
                // No position: the key the message names, if the text has it; else line 1.
                let line = named
                    .as_deref()
                    .and_then(|n| layout.any_key_line(n))
                    .unwrap_or(1);
                (line, None, None, named)
            }
        };
        ConfigFileError::from(Detail {
            file: file.to_string(),
            line: Some(line),
            column,
            context,
            field,
            message,
            cause: Cause::Toml(e),
        })
    }
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.file)?;
        if let Some(line) = self.0.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.0.column {
                write!(f, ":{col}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(c) = &self.0.context {
            write!(f, "{c}: ")?;
        }
        if let Some(field) = &self.0.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for ConfigFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0.cause {
            Cause::Io(e) => Some(e),
            Cause::Toml(e) => Some(e),
            Cause::Config(e) => Some(e),
        }
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let b = text.as_bytes();
    let before = &b[..offset.min(b.len())];
    let line = 1 + before.iter().filter(|&&c| c == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|&c| c == b'\n')
        .map_or(0, |p| p + 1);
    // Count characters, not bytes: skip UTF-8 continuation bytes.
    let column = 1 + before[line_start..]
        .iter()
        .filter(|&&c| c & 0xC0 != 0x80)
        .count();
    (line, column)
}

// ===== where things are in the text =====

/// Where tables and keys sit in a TOML text. A light, panic-free scan, not a parser: it
/// skips strings, comments and multi-line arrays correctly, which is all locating needs.
#[derive(Debug)]
struct Layout {
    /// The root table first, then every `[table]` / `[[array]]` header in text order.
    tables: Vec<TableAt>,
}

#[derive(Debug)]
struct TableAt {
    path: Vec<String>,
    array: bool,
    line: usize,
    start: usize,
    keys: Vec<KeyAt>,
}

#[derive(Debug)]
struct KeyAt {
    path: Vec<String>,
    line: usize,
    /// From the key to the end of its value.
    span: Range<usize>,
    value: Range<usize>,
}

/// One element of an array of tables (`[[node]]`), with its sub-tables' keys.
#[derive(Debug)]
struct Entry<'a> {
    line: usize,
    /// Path relative to the element, and the key.
    keys: Vec<(Vec<&'a str>, &'a KeyAt)>,
}

impl Entry<'_> {
    /// The line of a key, or of the nearest enclosing key (`capability_scores` for
    /// `capability_scores.code` written inline).
    fn key_line(&self, path: &[&str]) -> Option<usize> {
        (1..=path.len()).rev().find_map(|n| {
            self.keys
                .iter()
                .find(|(p, _)| p.as_slice() == &path[..n])
                .map(|(_, k)| k.line)
        })
    }

    /// A key's value when it is a plain `"..."` string.
    fn string_value(&self, text: &str, path: &[&str]) -> Option<String> {
        let (_, k) = self.keys.iter().find(|(p, _)| p.as_slice() == path)?;
        let raw = text.get(k.value.clone())?.trim_start();
        if let Some(rest) = raw.strip_prefix('\'') {
            return rest.find('\'').map(|end| rest[..end].to_string());
        }
        let rest = raw.strip_prefix('"')?;
        let end = rest.find('"')?;
        let s = &rest[..end];
        (!s.contains('\\')).then(|| s.to_string())
    }
}

impl Layout {
    fn scan(text: &str) -> Layout {
        let mut s = Scanner {
            b: text.as_bytes(),
            i: 0,
            line: 1,
        };
        let mut tables = vec![TableAt {
            path: Vec::new(),
            array: false,
            line: 1,
            start: 0,
            keys: Vec::new(),
        }];
        loop {
            s.skip_ws();
            let Some(c) = s.peek(0) else { break };
            match c {
                b'\n' => s.bump(),
                b'#' => s.skip_line(),
                b'[' => {
                    let (start, line) = (s.i, s.line);
                    let array = s.peek(1) == Some(b'[');
                    s.i += if array { 2 } else { 1 };
                    let path = s.key_path();
                    tables.push(TableAt {
                        path,
                        array,
                        line,
                        start,
                        keys: Vec::new(),
                    });
                    s.skip_line();
                }
                _ => {
                    let (start, line) = (s.i, s.line);
                    let path = s.key_path();
                    s.skip_ws();
                    if path.is_empty() || s.peek(0) != Some(b'=') {
                        // Not a key/value line (the text is not valid TOML): skip it. A key
                        // path stops at a newline, so skipping always makes progress.
                        if s.i == start {
                            s.i += 1;
                        }
                        s.skip_line();
                        continue;
                    }
                    s.i += 1;
                    s.skip_ws();
                    let value_start = s.i;
                    s.skip_value();
                    if let Some(t) = tables.last_mut() {
                        t.keys.push(KeyAt {
                            path,
                            line,
                            span: start..s.i,
                            value: value_start..s.i,
                        });
                    }
                }
            }
        }
        Layout { tables }
    }

    /// The line of a key of the root table, or of a `[table]` (`weights.load` is found as
    /// `load` under `[weights]` or as a dotted key at the root).
    fn root_key_line(&self, path: &[&str]) -> Option<usize> {
        let same =
            |p: &[String], q: &[&str]| p.len() == q.len() && p.iter().zip(q).all(|(a, b)| a == b);
        // The key itself, else the nearest enclosing key or table.
        (1..=path.len()).rev().find_map(|n| {
            let want = &path[..n];
            self.tables.iter().filter(|t| !t.array).find_map(|t| {
                let depth = t.path.len();
                if depth > want.len() || !same(&t.path, &want[..depth]) {
                    None
                } else if depth == want.len() {
                    Some(t.line)
                } else {
                    t.keys
                        .iter()
                        .find(|k| same(&k.path, &want[depth..]))
                        .map(|k| k.line)
                }
            })
        })
    }

    /// The first line with a key named `name`, anywhere.
    fn any_key_line(&self, name: &str) -> Option<usize> {
        self.tables
            .iter()
            .flat_map(|t| &t.keys)
            .find(|k| k.path.last().is_some_and(|p| p == name))
            .map(|k| k.line)
    }

    /// The elements of the `[[kind]]` array of tables, in order.
    fn entries(&self, kind: &str) -> Vec<Entry<'_>> {
        let mut out: Vec<Entry<'_>> = Vec::new();
        for t in &self.tables {
            if t.path.first().map(String::as_str) != Some(kind) {
                continue;
            }
            if t.array && t.path.len() == 1 {
                out.push(Entry {
                    line: t.line,
                    keys: Vec::new(),
                });
            }
            // Keys of `[[node]]` itself and of its sub-tables (`[node.capability_scores]`).
            if let Some(e) = out.last_mut() {
                for k in &t.keys {
                    let path = t.path[1..]
                        .iter()
                        .chain(&k.path)
                        .map(String::as_str)
                        .collect();
                    e.keys.push((path, k));
                }
            }
        }
        out
    }

    /// The entry (`node "gpu-1"`, `[[node]] #2`, `[weights]`) and the key that hold byte
    /// `offset`, for errors found by the TOML parser.
    fn at(&self, text: &str, offset: usize) -> (Option<String>, Option<String>) {
        let Some(t) = self.tables.iter().rev().find(|t| t.start <= offset) else {
            return (None, None);
        };
        let key = t
            .keys
            .iter()
            .find(|k| k.span.contains(&offset) || k.span.end == offset);
        let head = t.path.first().map(String::as_str);
        match head {
            Some(kind @ ("node" | "chain")) => {
                let entries = self.entries(kind);
                // The element this table belongs to: the number of `[[kind]]` headers so far.
                let n = self
                    .tables
                    .iter()
                    .filter(|u| u.start <= t.start && u.array && u.path.len() == 1)
                    .filter(|u| u.path.first().map(String::as_str) == Some(kind))
                    .count();
                let context = match n.checked_sub(1).and_then(|i| entries.get(i)) {
                    Some(e) => match e.string_value(text, &["name"]) {
                        Some(name) => format!("{kind} {name:?}"),
                        None => format!("[[{kind}]] #{n}"),
                    },
                    None => format!("[{}]", t.path.join(".")),
                };
                let field = key.map(|k| {
                    t.path[1..]
                        .iter()
                        .chain(&k.path)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(".")
                });
                (Some(context), field)
            }
            _ => {
                let context = (!t.path.is_empty()).then(|| format!("[{}]", t.path.join(".")));
                let field = key.map(|k| {
                    t.path
                        .iter()
                        .chain(&k.path)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(".")
                });
                (context, field)
            }
        }
    }
}

/// A byte cursor over the text. Every step checks bounds; nothing here can panic.
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    line: usize,
}

impl Scanner<'_> {
    fn peek(&self, k: usize) -> Option<u8> {
        self.b.get(self.i.saturating_add(k)).copied()
    }

    /// Steps over one byte, counting lines.
    fn bump(&mut self) {
        if let Some(c) = self.peek(0) {
            if c == b'\n' {
                self.line += 1;
            }
            self.i += 1;
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(0), Some(b' ' | b'\t' | b'\r')) {
            self.i += 1;
        }
    }

    /// To the end of the line (the newline itself is left).
    fn skip_line(&mut self) {
        while matches!(self.peek(0), Some(c) if c != b'\n') {
            self.i += 1;
        }
    }

    /// A dotted key (`a`, `"a b".c`, `'x'`).
    fn key_path(&mut self) -> Vec<String> {
        let mut path = Vec::new();
        loop {
            self.skip_ws();
            match self.peek(0) {
                Some(q @ (b'"' | b'\'')) => {
                    self.i += 1;
                    let mut s = Vec::new();
                    while let Some(c) = self.peek(0) {
                        if c == q || c == b'\n' {
                            break;
                        }
                        if c == b'\\' && q == b'"' {
                            self.i += 1;
                            match self.peek(0) {
                                Some(b'\n') | None => break,
                                Some(e) => s.push(e),
                            }
                        } else {
                            s.push(c);
                        }
                        self.i += 1;
                    }
                    if self.peek(0) == Some(q) {
                        self.i += 1;
                    }
                    path.push(String::from_utf8_lossy(&s).into_owned());
                }
                Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' => {
                    let start = self.i;
                    while matches!(self.peek(0), Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
                    {
                        self.i += 1;
                    }
                    let end = self.i.min(self.b.len());
                    path.push(String::from_utf8_lossy(&self.b[start.min(end)..end]).into_owned());
                }
                _ => break,
            }
            self.skip_ws();
            if self.peek(0) == Some(b'.') {
                self.i += 1;
            } else {
                break;
            }
        }
        path
    }

    /// A value: to the end of its line, past strings and bracketed lines.
    fn skip_value(&mut self) {
        let mut depth = 0usize;
        while let Some(c) = self.peek(0) {
            match c {
                b'\n' if depth == 0 => return,
                b'#' => self.skip_line(),
                b'"' | b'\'' => self.skip_string(c),
                b'[' | b'{' => {
                    depth += 1;
                    self.i += 1;
                }
                b']' | b'}' => {
                    depth = depth.saturating_sub(1);
                    self.i += 1;
                }
                _ => self.bump(),
            }
        }
    }

    fn skip_string(&mut self, q: u8) {
        let multi = self.peek(1) == Some(q) && self.peek(2) == Some(q);
        if multi {
            self.i += 3;
            while let Some(c) = self.peek(0) {
                if c == b'\\' && q == b'"' {
                    self.i += 1;
                    self.bump();
                } else if c == q && self.peek(1) == Some(q) && self.peek(2) == Some(q) {
                    self.i += 3;
                    // Up to two quotes may end the content right before the delimiter.
                    for _ in 0..2 {
                        if self.peek(0) == Some(q) {
                            self.i += 1;
                        }
                    }
                    return;
                } else {
                    self.bump();
                }
            }
        } else {
            self.i += 1;
            while let Some(c) = self.peek(0) {
                if c == b'\n' {
                    return;
                }
                self.i += 1;
                if c == q {
                    return;
                }
                if c == b'\\' && q == b'"' && self.peek(0).is_some_and(|e| e != b'\n') {
                    self.i += 1;
                }
            }
        }
    }
}

// ===== hot reload =====

/// What [`Router::apply_config`] changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReloadReport {
    /// Nodes added.
    pub added: usize,
    /// Nodes whose spec changed (their live counters and leases carry over).
    pub updated: usize,
    /// Nodes removed (they drain: their outstanding leases still release into them).
    pub removed: usize,
    /// Chains added, replaced or removed.
    pub chains: usize,
    /// Epoch of the snapshot current after the reload.
    pub epoch: u64,
}

impl Router {
    /// Makes the fleet what `cfg` describes, without dropping a task: nodes that stay keep
    /// their live counters and outstanding leases (updated in place when their spec
    /// changed), new nodes are added, nodes no longer listed drain (their leases still
    /// release into them), chains that changed are replaced, the weights are replaced, and
    /// the result is published at once (one [`tick`](Router::tick)).
    ///
    /// The whole config is checked first, so an invalid one changes nothing. Capability
    /// names are append-only: names the config no longer lists stay declared.
    ///
    /// The steps go through the router's public fleet-change methods one by one. A tick that
    /// another thread runs in between (a dispatcher's control thread) may publish a snapshot
    /// with only some of them applied: new nodes are added and changed chains replaced before
    /// anything is removed, so such a snapshot never lacks a node or chain the old and new
    /// configs share, except for a chain during its own replacement.
    ///
    /// # Examples
    /// ```
    /// use switchyard::{Config, Task};
    /// let v1 = Config::parse("v1.toml", "[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\n")?;
    /// let router = v1.build_router(0)?;
    /// let (_, lease) = router.reader().route(&Task::new(1, 100, 10))?;
    ///
    /// let v2 = Config::parse("v2.toml", "[[node]]\nname = \"a\"\nmax_concurrency = 8\n")?;
    /// let report = router.apply_config(&v2)?;
    /// assert_eq!((report.updated, report.removed), (1, 1));
    /// assert_eq!(router.snapshot().node_count(), 1);
    /// assert_eq!(router.in_flight(), 1); // the lease survived, wherever it was
    /// drop(lease);
    /// assert!(router.ledgers_are_zero());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// A [`ConfigFileError`] naming the first problem of `cfg`; the router is unchanged.
    pub fn apply_config(&self, cfg: &Config) -> Result<ReloadReport, ConfigFileError> {
        cfg.validate()?;
        let snap = self.snapshot();
        let registry = snap.capabilities();
        let mut seen = HashSet::new();
        let new_caps: Vec<&String> = cfg
            .capabilities
            .iter()
            .filter(|c| registry.get(c).is_none() && seen.insert(c.as_str()))
            .collect();
        if registry.len() + new_caps.len() > MAX_CAPABILITIES {
            return Err(cfg.error(
                ConfigError::TooManyCapabilities {
                    max: MAX_CAPABILITIES,
                },
                Owner::Capabilities,
            ));
        }
        drop(snap);
        for c in new_caps {
            self.declare_capability(c)
                .map_err(|e| cfg.error(e, Owner::Capabilities))?;
        }
        // Publish whatever is pending, so the snapshot shows the chains there are now.
        self.tick();
        let snap = self.snapshot();
        let mut report = ReloadReport::default();

        // Nodes: add the new ones, update the changed ones.
        // (Names are unique on both sides: validation and the router see to it.)
        let current = self.node_specs();
        let current_by_name: HashMap<&str, &NodeSpec> =
            current.iter().map(|s| (s.name.as_str(), s)).collect();
        let wanted: HashMap<&str, &NodeConfig> =
            cfg.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        for (i, spec) in cfg.node_specs().into_iter().enumerate() {
            match current_by_name.get(spec.name.as_str()) {
                None => {
                    self.add_node(spec)
                        .map_err(|e| cfg.error(e, Owner::Node(i)))?;
                    report.added += 1;
                }
                Some(&old) if *old != spec => {
                    self.update_node(spec)
                        .map_err(|e| cfg.error(e, Owner::Node(i)))?;
                    report.updated += 1;
                }
                Some(_) => {}
            }
        }

        // Chains: what each offers now, by names, from the snapshot.
        let reg = snap.capabilities();
        let cap_names = |caps: crate::CapSet| -> BTreeSet<String> {
            caps.iter()
                .filter_map(|b| reg.name(b))
                .map(str::to_string)
                .collect()
        };
        let existing: HashMap<String, (Vec<String>, BTreeSet<String>)> = snap
            .routes
            .iter()
            .filter(|r| r.id.is_chain())
            .map(|r| {
                let stages = r
                    .stages()
                    .iter()
                    .map(|&slot| {
                        snap.nodes
                            .get(slot as usize)
                            .map_or_else(String::new, |n| n.name.to_string())
                    })
                    .collect();
                (r.name.to_string(), (stages, cap_names(r.caps)))
            })
            .collect();
        for (i, chain) in cfg.chains.iter().enumerate() {
            // What it will offer. A chain that declares none offers its stages' union, which
            // the router recomputes on its own; the snapshot cannot tell "declared none" from
            // "declared exactly the union", so a changed union replaces the chain too.
            let offers: BTreeSet<String> = if chain.capabilities.is_empty() {
                chain
                    .stages
                    .iter()
                    .filter_map(|s| wanted.get(s.as_str()))
                    .flat_map(|n| n.capabilities.iter().cloned())
                    .collect()
            } else {
                chain.capabilities.iter().cloned().collect()
            };
            let err = |e| cfg.error(e, Owner::Chain(i));
            match existing.get(&chain.name) {
                Some((stages, caps)) if *stages == chain.stages && *caps == offers => {}
                Some(_) => {
                    self.remove_chain(&chain.name).map_err(err)?;
                    self.add_chain(chain.to_spec()).map_err(err)?;
                    report.chains += 1;
                }
                None => {
                    match self.add_chain(chain.to_spec()) {
                        Ok(()) => {}
                        // Known to the router but not in the snapshot (a stage had gone).
                        Err(ConfigError::Duplicate { .. }) => {
                            self.remove_chain(&chain.name).map_err(err)?;
                            self.add_chain(chain.to_spec()).map_err(err)?;
                        }
                        Err(e) => return Err(err(e)),
                    }
                    report.chains += 1;
                }
            }
        }
        let kept: HashSet<&str> = cfg.chains.iter().map(|c| c.name.as_str()).collect();
        for name in existing.keys() {
            if !kept.contains(name.as_str()) {
                // Already gone is fine: someone removed it since the snapshot.
                if self.remove_chain(name).is_ok() {
                    report.chains += 1;
                }
            }
        }

        // Nodes no longer listed drain.
        for old in &current {
            if !wanted.contains_key(old.name.as_str()) && self.remove_node(&old.name).is_ok() {
                report.removed += 1;
            }
        }

        let weights = cfg.scoring_weights();
        if snap.weights != weights {
            self.set_weights(weights)
                .map_err(|e| cfg.error(e, Owner::Weights))?;
        }
        // Admission: headroom and tenant rates change live (the lease timeout and slab size
        // are read when the router is built).
        self.set_headroom(crate::routing::Headroom {
            shares: cfg.admission.headroom,
        })
        .map_err(|e| cfg.error(e, Owner::Admission))?;
        let listed: HashSet<u32> = cfg.tenants.iter().map(|t| t.id).collect();
        // Bound first: the control lock must be released before the loop takes it again.
        let limited = self.control().limited_tenants();
        for id in limited {
            if !listed.contains(&id) {
                self.set_tenant_rate(crate::TenantId(id), 0.0, 1.0)
                    .map_err(|e| cfg.unlocated(e))?;
            }
        }
        for (i, t) in cfg.tenants.iter().enumerate() {
            self.set_tenant_rate(
                crate::TenantId(t.id),
                t.max_tokens_per_second,
                t.token_burst_seconds,
            )
            .map_err(|e| cfg.error(e, Owner::Tenant(i)))?;
        }
        report.epoch = self.tick().epoch;
        Ok(report)
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::{ManualClock, Task};

    const FULL: &str = r#"
# A full example.
capabilities = ["chat", "code", "long-context"]

[weights]
load = 1.5
cost = 0.5
capability = 0.75
alternatives = 3

[[node]]
name = "gpu-1"
capabilities = ["chat", "code", "long-context"]
capability_scores = { code = 0.9, chat = 0.8 }
max_concurrency = 64
max_tokens_in_flight = 1_000_000
memory_mb = 60000
cpu_cores = 8
gpus = 1.0
cpu_per_task = 0.5
gpu_per_task = 0.125
kv_mb_per_1k_tokens = 160.0
base_latency_ms = 15.0
prefill_tokens_per_sec = 12000.0
decode_tokens_per_sec = 60.0
batch_slowdown = 0.5
cost_per_1k_tokens = 2.0
weight = 1.25

[[node]]
name = "guard"
capabilities = ["chat"]

[node.capability_scores]
chat = 0.5

[[chain]]
name = "guarded-code"
stages = ["guard", "gpu-1"]
capabilities = ["code"]

[[chain]]
name = "plain"
stages = ["gpu-1"]
"#;

    fn err(text: &str) -> ConfigFileError {
        match Config::parse("fleet.toml", text) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e,
        }
    }

    /// The error names the file, the line and the field, in the message as well.
    fn check(e: &ConfigFileError, line: usize, field: &str) {
        let shown = e.to_string();
        assert_eq!(e.file(), "fleet.toml", "{shown}");
        assert_eq!(e.line(), Some(line), "{shown}");
        assert_eq!(e.field(), Some(field), "{shown}");
        assert!(shown.starts_with(&format!("fleet.toml:{line}")), "{shown}");
        assert!(shown.contains(&format!("field `{field}`")), "{shown}");
    }

    #[test]
    fn parses_a_full_example() {
        let cfg = Config::parse("fleet.toml", FULL).unwrap();
        assert_eq!(cfg.source_name(), "fleet.toml");
        assert_eq!(cfg.capabilities, ["chat", "code", "long-context"]);
        assert_eq!(
            cfg.scoring_weights(),
            ScoringWeights {
                load: 1.5,
                cost: 0.5,
                capability: 0.75,
                alternatives: 3,
                affinity: 0.5,
            }
        );
        let specs = cfg.node_specs();
        let want = NodeSpec::new("gpu-1")
            .capabilities(["chat", "code", "long-context"])
            .capability_score("chat", 0.8)
            .capability_score("code", 0.9)
            .max_concurrency(64)
            .max_tokens_in_flight(1_000_000)
            .memory(60_000, 160.0)
            .compute(8.0, 0.5, 1.0, 0.125)
            .speed(15.0, 12_000.0, 60.0)
            .batch_slowdown(0.5)
            .cost_per_1k_tokens(2.0)
            .weight(1.25);
        assert_eq!(specs[0], want);
        assert_eq!(
            specs[1],
            NodeSpec::new("guard")
                .capabilities(["chat"])
                .capability_score("chat", 0.5)
        );
        assert_eq!(
            cfg.chain_specs(),
            vec![
                ChainSpec::new("guarded-code", ["guard", "gpu-1"]).capabilities(["code"]),
                ChainSpec::new("plain", ["gpu-1"]),
            ]
        );
        let r = cfg.build_router(1).unwrap();
        let snap = r.snapshot();
        assert_eq!((snap.node_count(), snap.route_count()), (2, 4));
        let long = r.resolve(&["long-context"]).unwrap();
        let (routes, lease) = r
            .reader()
            .route(&Task::new(1, 100, 10).require(long))
            .unwrap();
        assert!(snap.route_name(routes.primary().route.route).is_some());
        drop(lease);
        assert!(r.ledgers_are_zero());
        // The builder gives the same fleet.
        let b = cfg.to_builder().build().unwrap();
        assert_eq!(b.node_specs(), r.node_specs());
    }

    #[test]
    fn defaults_are_node_spec_new_and_scoring_weights_default() {
        let cfg = Config::parse("fleet.toml", "[[node]]\nname = \"a\"\n").unwrap();
        assert_eq!(cfg.node_specs(), vec![NodeSpec::new("a")]);
        assert_eq!(cfg.scoring_weights(), ScoringWeights::default());
        assert!(cfg.chains.is_empty() && cfg.capabilities.is_empty());
        let cfg = Config::parse("fleet.toml", "[weights]\ncost = 1\n").unwrap();
        assert_eq!(
            cfg.scoring_weights(),
            ScoringWeights {
                cost: 1.0,
                ..ScoringWeights::default()
            }
        );
        // An empty file is an empty fleet.
        let cfg = Config::parse("fleet.toml", "").unwrap();
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.build_router(0).unwrap().snapshot().node_count(), 0);
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = err("capabilities = [\"chat\"]\n\n[[node]]\nname = \"a\nweight = 1\n");
        assert_eq!(e.line(), Some(4), "{e}");
        assert!(e.to_string().starts_with("fleet.toml:4:"), "{e}");
        assert!(e.column().is_some());
        assert!(std::error::Error::source(&e).is_some());
        let e = err("[[node]]\nname = \"a\"\nweight = = 1\n");
        assert!(e.to_string().starts_with("fleet.toml:3:"), "{e}");
    }

    #[test]
    fn type_errors_name_the_field() {
        let e = err("[[node]]\nname = \"a\"\n\nweight = \"heavy\"\n");
        check(&e, 4, "weight");
        assert_eq!(e.context(), Some("node \"a\""));
        assert!(e.message().contains("invalid type"), "{e}");
        let e = err("[[node]]\nname = \"a\"\nmax_concurrency = -1\n");
        check(&e, 3, "max_concurrency");
        let e = err("capabilities = [\"chat\", 7]\n");
        check(&e, 1, "capabilities");
        let e = err("[[node]]\nname = \"a\"\ncapabilities = [\n  \"chat\",\n  3,\n]\n");
        check(&e, 5, "capabilities");
        let e = err("[weights]\nload = \"x\"\n");
        check(&e, 2, "weights.load");
        let e = err("[[node]]\nname = \"a\"\ncapability_scores = { code = \"x\" }\n");
        assert_eq!(e.line(), Some(3), "{e}");
        assert!(e.field().unwrap().starts_with("capability_scores"), "{e}");
    }

    #[test]
    fn unknown_and_missing_fields_are_errors() {
        let e = err("[[node]]\nname = \"a\"\nwieght = 2.0\n");
        check(&e, 3, "wieght");
        assert!(e.message().contains("unknown field"), "{e}");
        let e = err("capabilities = []\n[weights]\nlaod = 1\n");
        check(&e, 3, "weights.laod");
        let e = err("capabilitys = [\"chat\"]\n");
        check(&e, 1, "capabilitys");
        let e = err("[[chain]]\nname = \"c\"\nstages = [\"a\"]\nstage = 1\n");
        check(&e, 4, "stage");
        let e = err("[[node]]\nmax_concurrency = 4\n");
        assert_eq!(e.field(), Some("name"), "{e}");
        assert!(e.line().is_some_and(|l| l <= 2), "{e}");
        assert!(e.message().contains("missing field"), "{e}");
    }

    #[test]
    fn invalid_numbers_name_node_line_and_field() {
        let text = "capabilities = [\"chat\"]\n\n[[node]]\nname = \"gpu-0\"\n\n[[node]]\nname = \"gpu-1\"\ncapabilities = [\"chat\"]\nweight = nan\n";
        let e = err(text);
        check(&e, 9, "weight");
        assert_eq!(
            e.to_string(),
            "fleet.toml:9: node \"gpu-1\": field `weight`: must be finite and in range, got NaN"
        );
        assert!(matches!(
            e.config_error(),
            Some(ConfigError::InvalidNumber {
                field: "weight",
                ..
            })
        ));
        assert!(std::error::Error::source(&e).is_some());
        check(&err("[[node]]\nname = \"a\"\nweight = -1.0\n"), 3, "weight");
        check(
            &err("[[node]]\nname = \"a\"\nbase_latency_ms = inf\n"),
            3,
            "base_latency_ms",
        );
        check(
            &err("[[node]]\nname = \"a\"\ncpu_per_task = -0.5\n"),
            3,
            "cpu_per_task",
        );
        check(&err("[weights]\nload = -1\n"), 2, "weights.load");
        check(
            &err("[weights]\nalternatives = 9\n"),
            2,
            "weights.alternatives",
        );
        check(&err("weights.capability = 2.0\n"), 1, "weights.capability");
        let e = err("capabilities = [\"code\"]\n[[node]]\nname = \"a\"\ncapabilities = [\"code\"]\ncapability_scores = { code = 1.5 }\n");
        check(&e, 5, "capability_scores.code");
        let e = err("capabilities = [\"code\"]\n[[node]]\nname = \"a\"\ncapabilities = [\"code\"]\n[node.capability_scores]\ncode = -1\n");
        check(&e, 6, "capability_scores.code");
    }

    #[test]
    fn capacities_name_the_field_or_the_node() {
        check(
            &err("[[node]]\nname = \"a\"\nmax_concurrency = 0\n"),
            3,
            "max_concurrency",
        );
        check(
            &err("[[node]]\nname = \"a\"\nmemory_mb = 0\n"),
            3,
            "memory_mb",
        );
        check(
            &err("[[node]]\nname = \"a\"\nmax_concurrency = 70000\n"),
            3,
            "max_concurrency",
        );
        // `cpu_cores` is not written: the node's name line stands in.
        let e = err("[[node]]\n# a node\nname = \"a\"\ncpu_per_task = 1.0\n");
        check(&e, 3, "cpu_cores");
        assert!(e.message().contains("greater than zero"), "{e}");
    }

    #[test]
    fn names_and_references_are_checked() {
        let e = err("capabilities = [\"chat\"]\n[[node]]\nname = \"a\"\ncapabilities = [\"chat\", \"vision\"]\n");
        check(&e, 4, "capabilities");
        assert!(e.message().contains("vision"), "{e}");
        let e = err("[[node]]\nname = \"a\"\ncapability_scores = { vision = 0.5 }\n");
        check(&e, 3, "capability_scores.vision");
        let e = err("[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\n[[node]]\nname = \"a\"\n");
        check(&e, 6, "name");
        assert!(e.message().contains("duplicate node"), "{e}");
        let e = err("[[node]]\nname = \"  \"\n");
        check(&e, 2, "name");
        let e = err("[[node]]\nname = \"a\"\n[[chain]]\nname = \"c\"\nstages = [\"a\", \"b\"]\n");
        check(&e, 5, "stages");
        assert_eq!(e.context(), Some("chain \"c\""));
        assert!(e.message().contains("\"b\""), "{e}");
        check(
            &err("[[node]]\nname = \"a\"\n[[chain]]\nname = \"c\"\nstages = []\n"),
            5,
            "stages",
        );
        let e = err("[[node]]\nname = \"a\"\n[[chain]]\nname = \"c\"\nstages = [\"a\"]\n[[chain]]\nname = \"c\"\nstages = [\"a\"]\n");
        check(&e, 7, "name");
        let e = err("[[node]]\nname = \"a\"\n[[chain]]\nname = \"c\"\nstages = [\"a\"]\ncapabilities = [\"x\"]\n");
        check(&e, 6, "capabilities");
        check(&err("capabilities = [\"a\", \"\"]\n"), 1, "capabilities");
        let many: Vec<String> = (0..300).map(|i| format!("\"c{i}\"")).collect();
        check(
            &err(&format!("\n\ncapabilities = [{}]\n", many.join(","))),
            3,
            "capabilities",
        );
    }

    #[test]
    fn inline_tables_and_odd_layouts_still_get_a_line() {
        // Nodes written as an inline array: the line of `node`.
        let e = err("node = [\n  { name = \"a\" },\n  { name = \"b\", weight = 0 },\n]\n");
        assert_eq!(e.field(), Some("weight"), "{e}");
        assert_eq!(e.line(), Some(1), "{e}");
        // Strings that look like headers or keys do not confuse the scan.
        let text = "capabilities = [\"chat\"] # [[node]]\n[[node]]\nname = \"\"\"x\n[[node]]\nweight = 1\"\"\"\n'quoted' = 1\n";
        let e = err(text);
        check(&e, 6, "quoted");
        let text = "[[node]]\nname = 'a # not a comment'\nweight = 0\n";
        check(&err(text), 3, "weight");
        // A changed config still names the file; the line follows the entry's name.
        let mut cfg = Config::parse(
            "fleet.toml",
            "[[node]]\nname = \"a\"\n\n[[node]]\nname = \"b\"\n",
        )
        .unwrap();
        cfg.nodes.remove(0);
        cfg.nodes[0].weight = Some(f64::NAN);
        let e = cfg.validate().unwrap_err();
        check(&e, 5, "weight");
        cfg.nodes[0].name = "renamed".into();
        let e = cfg.validate().unwrap_err();
        assert_eq!((e.file(), e.line()), ("fleet.toml", None));
        assert!(
            e.to_string().starts_with("fleet.toml: node \"renamed\""),
            "{e}"
        );
        let mut fresh = Config::default();
        fresh.nodes.push(NodeConfig {
            name: "x".into(),
            max_concurrency: Some(0),
            ..NodeConfig::default()
        });
        assert!(fresh
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("<config>: node \"x\""));
    }

    #[test]
    fn the_scan_never_panics_on_broken_text() {
        for text in [
            "",
            "[",
            "[[",
            "\"",
            "'''",
            "\"\"\"",
            "a = \"\\",
            "a = [ \"\\\n",
            "a.\"b\\",
            "= = =",
            "\u{e9}\u{e9} = [ '\u{e9}",
            "[[node]]\nname = \"\u{e9}\"\nx = [[[[{{{",
        ] {
            let l = Layout::scan(text);
            for o in 0..=text.len() + 1 {
                let _ = l.at(text, o);
                let _ = line_col(text, o);
            }
            let _ = l.entries("node");
            let _ = Config::parse("fuzz", text);
        }
        assert_eq!(line_col("a\u{e9}b\nc", 4), (1, 4));
        assert_eq!(line_col("a\u{e9}b\nc", 5), (2, 1));
    }

    #[test]
    fn io_errors_name_the_file() {
        let e = Config::load(Path::new("no-such-dir/fleet.toml")).unwrap_err();
        assert_eq!(e.file(), "no-such-dir/fleet.toml");
        assert_eq!(e.line(), None);
        assert!(
            e.to_string()
                .starts_with("no-such-dir/fleet.toml: cannot read"),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn reload_adds_updates_removes_and_keeps_counters() {
        let v1 = Config::parse("v1.toml", FULL).unwrap();
        let clock: std::sync::Arc<dyn Clock> = std::sync::Arc::new(ManualClock::new());
        let r = v1.to_builder().clock(clock).build().unwrap();
        // A no-op reload changes nothing.
        let rep = r.apply_config(&v1).unwrap();
        let epoch = r.snapshot().epoch();
        assert_eq!(
            rep,
            ReloadReport {
                epoch,
                ..ReloadReport::default()
            }
        );
        assert_eq!(r.node_specs(), v1.node_specs());

        let code = r.resolve(&["code"]).unwrap();
        let (_, lease) = r
            .reader()
            .route(&Task::new(1, 100, 10).require(code))
            .unwrap();
        let v2 = Config::parse(
            "v2.toml",
            r#"
capabilities = ["chat", "code", "long-context", "vision"]
[[node]]
name = "gpu-1"
capabilities = ["chat", "code", "long-context", "vision"]
max_concurrency = 8
[[node]]
name = "new"
capabilities = ["chat"]
[[chain]]
name = "plain"
stages = ["gpu-1", "new"]
"#,
        )
        .unwrap();
        let rep = r.apply_config(&v2).unwrap();
        assert_eq!(
            (rep.added, rep.updated, rep.removed, rep.chains),
            (1, 1, 1, 2)
        );
        let snap = r.snapshot();
        assert_eq!(rep.epoch, snap.epoch());
        assert_eq!((snap.node_count(), snap.route_count()), (2, 3));
        assert_eq!(r.node_specs(), v2.node_specs());
        assert_eq!(snap.weights, ScoringWeights::default());
        assert!(r.resolve(&["vision"]).is_ok());
        assert_eq!(r.in_flight(), lease.route().stages().len() as u64);
        drop(lease);
        assert!(r.ledgers_are_zero());
        // Back again.
        let rep = r.apply_config(&v1).unwrap();
        assert_eq!(
            (rep.added, rep.updated, rep.removed, rep.chains),
            (1, 1, 1, 2)
        );
        assert_eq!(r.node_specs(), v1.node_specs());
        assert_eq!(r.snapshot().route_count(), 4);
    }

    #[test]
    fn an_invalid_reload_changes_nothing() {
        let v1 = Config::parse("v1.toml", FULL).unwrap();
        let r = v1.build_router(0).unwrap();
        let epoch = r.snapshot().epoch();
        let mut cfg = v1.clone();
        cfg.capabilities.push("new-capability".into());
        cfg.nodes.remove(1);
        cfg.nodes[0].max_concurrency = Some(0);
        let e = r.apply_config(&cfg).unwrap_err();
        assert_eq!(e.field(), Some("max_concurrency"), "{e}");
        assert_eq!(e.line(), Some(15), "{e}");
        assert!(
            e.to_string().starts_with("v1.toml:15: node \"gpu-1\""),
            "{e}"
        );
        assert_eq!(r.snapshot().epoch(), epoch);
        assert_eq!(r.node_specs(), v1.node_specs());
        r.tick();
        assert!(r.resolve(&["new-capability"]).is_err());
    }
}
