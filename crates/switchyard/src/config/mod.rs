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
use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use crate::clock::{Clock, ManualClock};
use crate::error::ConfigError;
use crate::node::{ChainSpec, NodeSpec};
use crate::router::{Router, RouterBuilder};
use crate::routing::ScoringWeights;

mod error;
mod locate;
mod reload;
mod schema;
#[cfg(test)]
mod tests;

pub use error::ConfigFileError;
use error::{Cause, Detail, Owner};
pub use reload::ReloadReport;
pub use schema::{AdmissionConfig, ChainConfig, NodeConfig, TenantConfig, WeightsConfig};

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
}
