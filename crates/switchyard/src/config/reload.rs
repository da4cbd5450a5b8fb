//! Hot reload: [`Router::apply_config`] and its [`ReloadReport`].
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use super::error::Owner;
use super::{Config, ConfigFileError, NodeConfig};
use crate::capability::MAX_CAPABILITIES;
use crate::error::ConfigError;
use crate::node::NodeSpec;
use crate::router::Router;
use crate::tenant::TenantLimit;

/// What [`Router::apply_config`] changed. Its `Display` is one line, for a log:
/// `reload: epoch 7: added 1 (c), updated 1 (a), removed 1 (b), chains changed 0`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// The names of the nodes added, updated and removed, in the config's order (removed:
    /// the old fleet's order).
    pub added_nodes: Vec<String>,
    /// See `added_nodes`.
    pub updated_nodes: Vec<String>,
    /// See `added_nodes`.
    pub removed_nodes: Vec<String>,
}

impl fmt::Display for ReloadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |f: &mut fmt::Formatter<'_>, what: &str, n: usize, list: &[String]| {
            write!(f, "{what} {n}")?;
            if !list.is_empty() {
                write!(f, " ({})", list.join(", "))?;
            }
            Ok(())
        };
        write!(f, "reload: epoch {}: ", self.epoch)?;
        names(f, "added", self.added, &self.added_nodes)?;
        names(f, ", updated", self.updated, &self.updated_nodes)?;
        names(f, ", removed", self.removed, &self.removed_nodes)?;
        write!(f, ", chains changed {}", self.chains)
    }
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
    /// The reload is applied as one change: every step runs under one hold of the control
    /// lock and the result is published once, so a tick another thread runs meanwhile (a
    /// dispatcher's control thread) publishes either the fleet before the reload or the
    /// whole new one, never a half-applied fleet.
    ///
    /// A config that lists no node is refused ([`ConfigError::EmptyFleet`]): it would remove
    /// every node, and is far more likely an empty or partly written file (an editor saving
    /// in place) than a wish to stop serving.
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
    /// A [`ConfigFileError`] naming the first problem of `cfg` (or [`ConfigError::EmptyFleet`]
    /// for a config with no node); the router is unchanged.
    pub fn apply_config(&self, cfg: &Config) -> Result<ReloadReport, ConfigFileError> {
        cfg.validate()?;
        if cfg.nodes.is_empty() {
            return Err(cfg.unlocated(ConfigError::EmptyFleet));
        }
        // One hold of the control lock for the whole reload: no tick can publish between
        // two of its steps (the snapshot is published once, at the end).
        let mut ctl = self.control();
        // Publish whatever is pending, so the snapshot shows the chains there are now.
        self.tick_locked(&mut ctl);
        let registry = ctl.registry();
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
        // Checked before anything changes, so a bad tenant rate changes nothing.
        let mut tenant_limits = Vec::with_capacity(cfg.tenants.len());
        for (i, t) in cfg.tenants.iter().enumerate() {
            let limit = TenantLimit::new(
                crate::TenantId(t.id),
                t.max_tokens_per_second,
                t.token_burst_seconds,
            )
            .map_err(|e| cfg.error(e, Owner::Tenant(i)))?;
            tenant_limits.push((crate::TenantId(t.id), limit));
        }
        for c in new_caps {
            ctl.declare_capability(c)
                .map_err(|e| cfg.error(e, Owner::Capabilities))?;
        }
        let snap = self.snapshot();
        let mut report = ReloadReport::default();

        // Nodes: add the new ones, update the changed ones.
        // (Names are unique on both sides: validation and the router see to it.)
        let current = ctl.node_specs();
        let current_by_name: HashMap<&str, &NodeSpec> =
            current.iter().map(|s| (s.name.as_str(), s)).collect();
        let wanted: HashMap<&str, &NodeConfig> =
            cfg.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
        for (i, spec) in cfg.node_specs().into_iter().enumerate() {
            match current_by_name.get(spec.name.as_str()) {
                None => {
                    let name = spec.name.clone();
                    ctl.add_node(spec)
                        .map_err(|e| cfg.error(e, Owner::Node(i)))?;
                    report.added += 1;
                    report.added_nodes.push(name);
                }
                Some(&old) if *old != spec => {
                    let name = spec.name.clone();
                    ctl.update_node(spec)
                        .map_err(|e| cfg.error(e, Owner::Node(i)))?;
                    report.updated += 1;
                    report.updated_nodes.push(name);
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
                    ctl.remove_chain(&chain.name).map_err(err)?;
                    ctl.add_chain(chain.to_spec()).map_err(err)?;
                    report.chains += 1;
                }
                None => {
                    match ctl.add_chain(chain.to_spec()) {
                        Ok(()) => {}
                        // Known to the router but not in the snapshot (a stage had gone).
                        Err(ConfigError::Duplicate { .. }) => {
                            ctl.remove_chain(&chain.name).map_err(err)?;
                            ctl.add_chain(chain.to_spec()).map_err(err)?;
                        }
                        Err(e) => return Err(err(e)),
                    }
                    report.chains += 1;
                }
            }
        }
        let kept: HashSet<&str> = cfg.chains.iter().map(|c| c.name.as_str()).collect();
        for name in existing.keys() {
            if !kept.contains(name.as_str()) && ctl.remove_chain(name).is_ok() {
                report.chains += 1;
            }
        }

        // Nodes no longer listed drain.
        for old in &current {
            if !wanted.contains_key(old.name.as_str()) && ctl.remove_node(&old.name).is_ok() {
                report.removed += 1;
                report.removed_nodes.push(old.name.clone());
            }
        }

        let weights = cfg.scoring_weights();
        if snap.weights != weights {
            ctl.set_weights(weights)
                .map_err(|e| cfg.error(e, Owner::Weights))?;
        }
        // Admission: headroom and tenant rates change live (the lease timeout and slab size
        // are read when the router is built).
        ctl.set_headroom(crate::routing::Headroom {
            shares: cfg.admission.headroom,
        })
        .map_err(|e| cfg.error(e, Owner::Admission))?;
        let listed: HashSet<u32> = cfg.tenants.iter().map(|t| t.id).collect();
        for id in ctl.limited_tenants() {
            if !listed.contains(&id) {
                ctl.set_tenant_rate(crate::TenantId(id), TenantLimit::default());
            }
        }
        for (tenant, limit) in tenant_limits {
            ctl.set_tenant_rate(tenant, limit);
        }
        report.epoch = self.tick_locked(&mut ctl).epoch;
        Ok(report)
    }
}
