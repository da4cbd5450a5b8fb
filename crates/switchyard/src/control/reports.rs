//! What the controller reports: live state, outcome totals, health, the desired fleet.

use crate::model::{NodeHealth, Outcome, PerformanceMetrics, ResourceMap};
use crate::node::{Amounts, NodeLive, NodeSpec};
use crate::sync::Arc;

use super::*;

impl Controller {
    /// Live state of every node, current and draining, for reports.
    pub(crate) fn live_nodes(&self) -> Vec<(Arc<str>, Arc<NodeLive>, Amounts, bool)> {
        let current = self
            .nodes
            .iter()
            .map(|n| (n.name.clone(), n.live.clone(), n.res.cap, false));
        let draining = self
            .retired
            .iter()
            .map(|(name, l)| (name.clone(), l.clone(), Amounts::default(), true));
        current.chain(draining).collect()
    }

    /// Tasks finished, by outcome, counted once each (by their route's head), over every
    /// node the router has had.
    pub(crate) fn finished_totals(&self) -> [u64; 6] {
        let mut t = self.retired_totals;
        let lives = self
            .nodes
            .iter()
            .map(|n| &n.live)
            .chain(self.retired.iter().map(|(_, l)| l));
        for live in lives {
            for (t, o) in t.iter_mut().zip(live.outcomes()) {
                *t += o;
            }
        }
        t
    }

    /// The seed's `NodeHealth` for every current node.
    pub(crate) fn health(&self) -> Vec<NodeHealth> {
        self.nodes
            .iter()
            .map(|n| {
                let (w0, w1) = n.live.load();
                let used = Amounts::unpack(w0, w1);
                let cap = n.res.cap;
                let o = n.live.all_outcomes();
                let finished: u64 = o.iter().sum();
                let errors = finished - o[Outcome::Success.index()];
                NodeHealth {
                    node: n.name.to_string(),
                    status: n.status,
                    available: ResourceMap {
                        memory_mb: cap.memory_mb.saturating_sub(used.memory_mb) as u32,
                        cpu_millis: cap.cpu_millis.saturating_sub(used.cpu_millis) as u32,
                        gpu_millis: cap.gpu_millis.saturating_sub(used.gpu_millis) as u32,
                        tokens: cap.tokens.saturating_sub(used.tokens) as u32,
                    },
                    metrics: PerformanceMetrics {
                        response_time_ms: n.live.latency_ewma_ms(),
                        success_rate: n.success_rate,
                        efficiency: 1.0 / n.latency_factor,
                        errors,
                    },
                    error_rate: if finished == 0 {
                        0.0
                    } else {
                        errors as f64 / finished as f64
                    },
                }
            })
            .collect()
    }

    pub(crate) fn node_specs(&self) -> Vec<NodeSpec> {
        self.nodes.iter().map(|n| n.spec.clone()).collect()
    }
}
