//! Fleet changes: validated when asked for, applied to the desired fleet at once, published
//! by the next tick.

use crate::capability::CapabilityRegistry;
use crate::error::ConfigError;
use crate::health::{HealthPolicy, NodeHealthState, Verdict};
use crate::model::{HealthStatus, NodeId, TenantId};
use crate::node::{ChainSpec, NodeLive, NodeSpec};
use crate::routing::table::{Headroom, ScoringWeights};
use crate::sync::{arc_from_std, Arc};
use crate::tenant::TenantLimit;

use super::*;

impl Controller {
    pub(crate) fn declare_capability(&mut self, name: &str) -> Result<usize, ConfigError> {
        let bit = self.registry.intern(name)?;
        self.dirty = true;
        Ok(bit)
    }

    pub(crate) fn add_node(&mut self, spec: NodeSpec) -> Result<NodeId, ConfigError> {
        if self.nodes.iter().any(|n| *n.name == *spec.name) {
            return Err(ConfigError::Duplicate {
                what: "node",
                name: spec.name,
            });
        }
        let res = spec.validate(&self.registry)?;
        let id = match self.ids.get(&spec.name) {
            Some(&id) => id,
            None => {
                if self.ids.len() >= MAX_NODES {
                    return Err(ConfigError::TooManyRoutes { max: MAX_NODES });
                }
                let id = NodeId(self.ids.len() as u32);
                self.ids.insert(spec.name.clone(), id);
                id
            }
        };
        // A node re-added while its old leases drain gets its old live state back.
        let live = match self.retired.iter().position(|(_, l)| l.id == id) {
            Some(i) => self.retired.swap_remove(i).1,
            None => Arc::new(NodeLive::new(id, Arc::clone(&self.shared))),
        };
        let prev_slo = live.slo_counts();
        self.nodes.push(NodeState {
            id,
            name: arc_from_std(spec.name.as_str().into()),
            spec,
            res,
            live,
            status: HealthStatus::Healthy,
            latency_factor: 1.0,
            balance: 1.0,
            success_rate: 1.0,
            prev_outcomes: [0; 6],
            prev_slo,
            health: NodeHealthState::new(self.last_tick_ns),
            verdict: Verdict {
                status: HealthStatus::Healthy,
                eligible: true,
                probe_only: false,
                weight: 1.0,
            },
            quality: 1.0,
            external: (0, 0),
        });
        self.dirty = true;
        Ok(id)
    }

    pub(crate) fn update_node(&mut self, spec: NodeSpec) -> Result<(), ConfigError> {
        let res = spec.validate(&self.registry)?;
        let n = self
            .nodes
            .iter_mut()
            .find(|n| *n.name == *spec.name)
            .ok_or_else(|| ConfigError::UnknownNode(spec.name.clone()))?;
        n.res = res;
        n.spec = spec;
        self.dirty = true;
        Ok(())
    }

    pub(crate) fn remove_node(&mut self, name: &str) -> Result<(), ConfigError> {
        let i = self
            .nodes
            .iter()
            .position(|n| &*n.name == name)
            .ok_or_else(|| ConfigError::UnknownNode(name.to_string()))?;
        let n = self.nodes.remove(i);
        self.retired.push((n.name, n.live));
        self.dirty = true;
        Ok(())
    }

    pub(crate) fn add_chain(&mut self, spec: ChainSpec) -> Result<(), ConfigError> {
        if spec.name.trim().is_empty() {
            return Err(ConfigError::InvalidName {
                what: "chain",
                name: spec.name,
            });
        }
        if self.chains.iter().any(|c| c.spec.name == spec.name) {
            return Err(ConfigError::Duplicate {
                what: "chain",
                name: spec.name,
            });
        }
        if spec.stages.is_empty() || spec.stages.len() > crate::model::MAX_STAGES {
            return Err(ConfigError::BadChain {
                chain: spec.name.clone(),
                stages: spec.stages.len(),
            });
        }
        let mut stages = Vec::with_capacity(spec.stages.len());
        for s in &spec.stages {
            let n = self
                .nodes
                .iter()
                .find(|n| &*n.name == s.as_str())
                .ok_or_else(|| ConfigError::UnknownNode(s.clone()))?;
            stages.push(n.id);
        }
        let caps = self.registry.resolve(&spec.capabilities)?;
        let next = self.chain_numbers.len() as u32;
        let number = *self.chain_numbers.entry(spec.name.clone()).or_insert(next);
        self.chains.push(ChainState {
            number,
            spec,
            stages,
            caps,
        });
        self.dirty = true;
        Ok(())
    }

    pub(crate) fn remove_chain(&mut self, name: &str) -> Result<(), ConfigError> {
        let i = self
            .chains
            .iter()
            .position(|c| c.spec.name == name)
            .ok_or_else(|| ConfigError::UnknownNode(name.to_string()))?;
        self.chains.remove(i);
        self.dirty = true;
        Ok(())
    }

    pub(crate) fn set_weights(&mut self, w: ScoringWeights) -> Result<(), ConfigError> {
        w.validate()?;
        // A new maximum starts the margin afresh; otherwise it keeps what it has learned.
        if w.slack != self.weights.slack {
            self.margin = w.slack;
        }
        self.weights = w;
        self.dirty = true;
        Ok(())
    }

    pub(crate) fn set_status(
        &mut self,
        name: &str,
        status: HealthStatus,
    ) -> Result<(), ConfigError> {
        let n = self
            .nodes
            .iter_mut()
            .find(|n| &*n.name == name)
            .ok_or_else(|| ConfigError::UnknownNode(name.to_string()))?;
        // Failed or Degraded pin the verdict; Healthy hands the node back to the automatic
        // verdicts. Applied at once (and published by the next tick).
        n.health.manual = (status != HealthStatus::Healthy).then_some(status);
        n.status = status;
        n.verdict.status = status;
        n.verdict.eligible = status != HealthStatus::Failed;
        self.dirty = true;
        Ok(())
    }

    /// Sets the in-flight tasks and tokens other routers hold on a node (fleet mode),
    /// published by the next tick when it changed.
    pub(crate) fn set_external(
        &mut self,
        name: &str,
        in_flight: u64,
        tokens: u64,
    ) -> Result<(), ConfigError> {
        let n = self
            .nodes
            .iter_mut()
            .find(|n| &*n.name == name)
            .ok_or_else(|| ConfigError::UnknownNode(name.to_string()))?;
        if n.external != (in_flight, tokens) {
            n.external = (in_flight, tokens);
            self.dirty = true;
        }
        Ok(())
    }

    /// Takes a node out of routing until `until_ns` (a backend's `Retry-After`); applied at
    /// once, published by the next tick, and undone by the first tick after the deadline.
    pub(crate) fn pause(&mut self, name: &str, until_ns: u64) -> Result<(), ConfigError> {
        let n = self
            .nodes
            .iter_mut()
            .find(|n| &*n.name == name)
            .ok_or_else(|| ConfigError::UnknownNode(name.to_string()))?;
        n.health.paused_until_ns = n.health.paused_until_ns.max(until_ns);
        n.verdict.eligible = false;
        self.dirty = true;
        Ok(())
    }

    /// Acts on an incident (applied to the next publish; `Router::trigger_failover` ticks).
    pub(crate) fn incident(
        &mut self,
        name: &str,
        kind: crate::health::IncidentKind,
        now: u64,
    ) -> Result<(), ConfigError> {
        use crate::health::IncidentKind;
        let policy = self.policy;
        let n = self
            .nodes
            .iter_mut()
            .find(|n| &*n.name == name)
            .ok_or_else(|| ConfigError::UnknownNode(name.to_string()))?;
        match kind {
            IncidentKind::Down => n.health.force_eject(now, &policy),
            IncidentKind::Degraded => n.health.manual = Some(HealthStatus::Degraded),
            IncidentKind::Recovered => {
                n.health.manual = None;
                n.health.force_probe();
            }
        }
        self.dirty = true;
        Ok(())
    }

    pub(crate) fn set_quality(&mut self, name: &str, quality: f64) -> Result<(), ConfigError> {
        if !(quality.is_finite() && quality > 0.0) {
            return Err(ConfigError::InvalidNumber {
                owner: name.to_string(),
                field: "quality",
                value: quality,
            });
        }
        let n = self
            .nodes
            .iter_mut()
            .find(|n| &*n.name == name)
            .ok_or_else(|| ConfigError::UnknownNode(name.to_string()))?;
        n.quality = quality;
        self.dirty = true;
        Ok(())
    }

    pub(crate) fn set_headroom(&mut self, headroom: Headroom) -> Result<(), ConfigError> {
        headroom.validate()?;
        if self.headroom != headroom {
            self.headroom = headroom;
            self.dirty = true;
        }
        Ok(())
    }

    #[cfg(feature = "config")]
    /// Ids of the tenants with a token-rate limit.
    pub(crate) fn limited_tenants(&self) -> Vec<u32> {
        (0..self.tenant_limits.len() as u32)
            .filter(|&i| self.tenant_limits[i as usize] != TenantLimit::default())
            .collect()
    }

    /// Sets (or with a zero rate, removes) a tenant's token-rate limit.
    pub(crate) fn set_tenant_rate(&mut self, tenant: TenantId, limit: TenantLimit) {
        let i = tenant.0 as usize;
        if self.tenant_limits.len() <= i {
            if limit == TenantLimit::default() {
                return;
            }
            self.tenant_limits.resize(i + 1, TenantLimit::default());
        }
        if self.tenant_limits[i] == limit {
            return;
        }
        self.tenant_limits[i] = limit;
        while self.tenant_limits.last() == Some(&TenantLimit::default()) {
            self.tenant_limits.pop();
        }
        self.dirty = true;
    }

    pub(crate) fn set_policy(&mut self, policy: HealthPolicy) -> Result<(), ConfigError> {
        policy.validate()?;
        self.policy = policy;
        self.dirty = true;
        Ok(())
    }

    pub(crate) fn registry(&self) -> &CapabilityRegistry {
        &self.registry
    }
}
