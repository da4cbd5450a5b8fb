//! The seed's `HealthAwareRouting`: the fleet's health at a glance, what to do about it, and
//! acting on an incident.
use crate::error::ConfigError;
use crate::health::IncidentKind;
use crate::model::{
    DegradationAction, DegradationCondition, DegradationKind, HealthStatus, NodeHealth,
};
use crate::router::Router;

/// The fleet's health at a glance (the seed's `SystemHealth`).
#[derive(Debug, Clone, PartialEq)]
pub struct SystemHealth {
    /// Every node.
    pub nodes: Vec<NodeHealth>,
    /// Nodes taking traffic normally (healthy or degraded).
    pub serving: usize,
    /// Nodes degraded (serving at reduced weight).
    pub degraded: usize,
    /// Nodes ejected or probing.
    pub failed: usize,
    /// Whether routing ignores ejections because too few nodes serve.
    pub panic: bool,
}

/// What [`HealthAwareRouting::adjust_for_degradation`] recommends (the seed's
/// `RouteAdjustment`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteAdjustment {
    /// Actions, most urgent first (empty when all is well).
    pub actions: Vec<DegradationAction>,
}

/// An incident reported by the gateway or an external health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthIncident {
    /// The node's name.
    pub node: String,
    /// What happened.
    pub kind: IncidentKind,
}

/// What [`HealthAwareRouting::trigger_failover`] did (the seed's `FailoverResult`).
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverResult {
    /// The node.
    pub node: String,
    /// Its verdict now.
    pub status: HealthStatus,
    /// Tasks still in flight on it (they finish or fail over on their own).
    pub in_flight: u64,
    /// Nodes that take traffic now.
    pub serving: usize,
    /// Epoch of the snapshot that carries the change.
    pub epoch: u64,
}

/// The seed's `HealthAwareRouting`.
pub trait HealthAwareRouting {
    /// Every node's health and the fleet's state.
    fn check_system_health(&self) -> SystemHealth;
    /// What to do about the state `health` describes.
    fn adjust_for_degradation(&self, health: &SystemHealth) -> RouteAdjustment;
    /// Acts on an incident at once (published before this returns).
    ///
    /// # Errors
    /// [`ConfigError::UnknownNode`] for a node that is not in the fleet.
    fn trigger_failover(&self, incident: &HealthIncident) -> Result<FailoverResult, ConfigError>;
}

impl HealthAwareRouting for Router {
    fn check_system_health(&self) -> SystemHealth {
        let nodes = self.node_health();
        let count = |s: HealthStatus| nodes.iter().filter(|n| n.status == s).count();
        SystemHealth {
            serving: count(HealthStatus::Healthy) + count(HealthStatus::Degraded),
            degraded: count(HealthStatus::Degraded),
            failed: count(HealthStatus::Failed),
            panic: self.snapshot().panic_mode(),
            nodes,
        }
    }

    fn adjust_for_degradation(&self, h: &SystemHealth) -> RouteAdjustment {
        let total = h.nodes.len().max(1) as f64;
        let mut actions = Vec::new();
        let serving_share = h.serving as f64 / total;
        if h.panic || serving_share < 0.5 {
            actions.push(DegradationAction {
                kind: DegradationKind::Scale,
                conditions: vec![DegradationCondition {
                    metric: "serving_share",
                    threshold: 0.5,
                    value: serving_share,
                }],
                params: vec![(
                    "nodes_needed",
                    (total * 0.5 - h.serving as f64).ceil().max(1.0),
                )],
            });
        }
        if h.failed > 0 {
            actions.push(DegradationAction {
                kind: DegradationKind::Failover,
                conditions: vec![DegradationCondition {
                    metric: "failed_nodes",
                    threshold: 0.0,
                    value: h.failed as f64,
                }],
                params: vec![("nodes_out", h.failed as f64)],
            });
        }
        let utils: Vec<f64> = self
            .node_metrics()
            .iter()
            .filter(|n| !n.draining)
            .map(|n| n.utilization)
            .collect();
        let deviation = crate::metrics::balance_deviation(&utils);
        if deviation > 0.5 && utils.iter().sum::<f64>() / total > 0.1 {
            actions.push(DegradationAction {
                kind: DegradationKind::Rebalance,
                conditions: vec![DegradationCondition {
                    metric: "balance_deviation",
                    threshold: 0.5,
                    value: deviation,
                }],
                params: vec![("target_deviation", 0.1)],
            });
        }
        RouteAdjustment { actions }
    }

    fn trigger_failover(&self, incident: &HealthIncident) -> Result<FailoverResult, ConfigError> {
        self.incident(&incident.node, incident.kind)?;
        let report = self.tick();
        let health = self.check_system_health();
        let node = health
            .nodes
            .iter()
            .find(|n| n.node == incident.node)
            .ok_or_else(|| ConfigError::UnknownNode(incident.node.clone()))?;
        let in_flight = self
            .node_metrics()
            .iter()
            .find(|n| n.name == incident.node)
            .map_or(0, |n| n.in_flight);
        Ok(FailoverResult {
            node: incident.node.clone(),
            status: node.status,
            in_flight,
            serving: health.serving,
            epoch: report.epoch,
        })
    }
}
