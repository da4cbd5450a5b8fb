//! The seed's `LoadBalancer`: place a batch of tasks, judge and restore balance, and choose
//! a strategy for a traffic spike.
//!
//! Balance is judged by *utilisation* (each node's in-flight, memory and token shares of its
//! own capacity), never by raw counts, so a fleet of fast and slow, big and small nodes
//! balances by how full each is. The router's decisions already score live utilisation and
//! the control thread damps persistent hot spots (its balance rule); this layer reports on
//! that and advises the gateway on spikes.
use crate::control::TickReport;
use crate::error::RouteError;
use crate::lease::Lease;
use crate::metrics::{balance_deviation, RoutingMetrics};
use crate::model::{LoadDistribution, Priority, Task, TaskAllocation};
use crate::router::Router;

/// What [`LoadBalancer::distribute_load`] placed, with the leases that hold the places.
#[derive(Debug)]
pub struct Placement {
    /// Tasks per node, balance and health (the seed's `LoadDistribution`).
    pub distribution: LoadDistribution,
    /// One lease per placed task (drop or complete each when its task ends).
    pub leases: Vec<Lease>,
    /// Tasks that found no route, with why.
    pub unplaced: Vec<(Task, RouteError)>,
}

/// What [`LoadBalancer::rebalance`] found and did (the seed's `LoadAdjustment`).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadAdjustment {
    /// Deviation (busiest node's utilisation over the mean, minus one) it acted on.
    pub deviation: f64,
    /// Nodes above the mean utilisation, with their utilisation, busiest first.
    pub hot_nodes: Vec<(String, f64)>,
    /// Whether it published a fresh snapshot (the balance rule reweights hot nodes).
    pub republished: bool,
}

/// What to do with one priority class during a spike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassAction {
    /// Route at once.
    Admit,
    /// Hold at the gateway and route as capacity frees.
    Queue,
    /// Refuse now with a typed error (the task is handed back).
    Shed,
}

/// A spike strategy (the seed's `LoadStrategy`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadStrategy {
    /// Arrivals per second the strategy was chosen for.
    pub incoming_per_sec: f64,
    /// Estimated fleet throughput, tasks per second.
    pub capacity_per_sec: f64,
    /// `incoming / capacity`.
    pub ratio: f64,
    /// Per class, most important first (indexed by [`Priority::index`]).
    pub actions: [ClassAction; 4],
}

impl LoadStrategy {
    /// The action for `p`.
    pub fn action(&self, p: Priority) -> ClassAction {
        self.actions[p.index()]
    }
}

/// Demand over capacity below which every class is admitted.
pub(crate) const SPIKE_ADMIT_BELOW: f64 = 0.8;
/// Demand over capacity from which low-priority work is shed (and normal queued).
pub(crate) const SPIKE_SHED_LOW_FROM: f64 = 1.0;
/// Demand over capacity from which normal work is shed too (and high queued).
pub(crate) const SPIKE_SHED_NORMAL_FROM: f64 = 1.5;
/// Deviation above which [`LoadBalancer::rebalance`] republishes at once.
pub(crate) const REBALANCE_THRESHOLD: f64 = 0.1;

/// The seed's `LoadBalancer`.
pub trait LoadBalancer {
    /// Routes and reserves every task; reports the placement by node.
    fn distribute_load(&self, tasks: &[Task]) -> Placement;
    /// Judges the balance in `metrics` and, above a balance deviation of 0.1, republishes the
    /// snapshot at once so the control loop's balance rule takes effect now.
    fn rebalance(&self, metrics: &RoutingMetrics) -> LoadAdjustment;
    /// Chooses admit / queue / shed per class for an arrival rate, from the fleet's measured
    /// throughput: below 0.8 × capacity admit all; up to 1.0 queue low; up to 1.5 shed low and
    /// queue normal; beyond, shed low and normal and queue high. Critical is always admitted.
    fn handle_spikes(&self, incoming_per_sec: f64) -> LoadStrategy;
    /// Recomputes weights from the live counters and publishes (one control tick).
    fn optimize_distribution(&self) -> TickReport;
}

impl LoadBalancer for Router {
    fn distribute_load(&self, tasks: &[Task]) -> Placement {
        let mut reader = self.reader();
        let now = self.clock().now_ns();
        let snap = self.snapshot();
        let mut per_node: Vec<(String, Vec<TaskAllocation>)> = Vec::new();
        let (mut leases, mut unplaced) = (Vec::new(), Vec::new());
        for t in tasks {
            match reader.route(t) {
                Ok((_, lease)) => {
                    let name = snap
                        .node_name(lease.route().head())
                        .unwrap_or("?")
                        .to_string();
                    let alloc = TaskAllocation {
                        task_id: t.id,
                        resources: lease.allocation().allocated,
                        priority: t.constraints.priority,
                        start_ns: now,
                        expected_duration_ms: lease.predicted_latency_ms(),
                    };
                    match per_node.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, v)) => v.push(alloc),
                        None => per_node.push((name, vec![alloc])),
                    }
                    leases.push(lease);
                }
                Err(e) => unplaced.push((*t, e)),
            }
        }
        Placement {
            distribution: LoadDistribution {
                node_allocations: per_node,
                balance: self.balance_metrics(),
                health: self.node_health(),
            },
            leases,
            unplaced,
        }
    }

    fn rebalance(&self, metrics: &RoutingMetrics) -> LoadAdjustment {
        let current: Vec<_> = metrics.nodes.iter().filter(|n| !n.draining).collect();
        let utils: Vec<f64> = current.iter().map(|n| n.utilization).collect();
        let deviation = balance_deviation(&utils);
        let mean = if utils.is_empty() {
            0.0
        } else {
            utils.iter().sum::<f64>() / utils.len() as f64
        };
        let mut hot: Vec<(String, f64)> = current
            .iter()
            .filter(|n| n.utilization > mean)
            .map(|n| (n.name.clone(), n.utilization))
            .collect();
        hot.sort_by(|a, b| b.1.total_cmp(&a.1));
        let republished = deviation > REBALANCE_THRESHOLD && self.tick().published;
        LoadAdjustment {
            deviation,
            hot_nodes: hot,
            republished,
        }
    }

    fn handle_spikes(&self, incoming_per_sec: f64) -> LoadStrategy {
        let capacity = self.capacity_per_sec();
        let ratio = if capacity > 0.0 && incoming_per_sec.is_finite() {
            incoming_per_sec.max(0.0) / capacity
        } else {
            f64::INFINITY
        };
        use ClassAction::{Admit, Queue, Shed};
        let actions = if ratio < SPIKE_ADMIT_BELOW {
            [Admit; 4]
        } else if ratio < SPIKE_SHED_LOW_FROM {
            [Admit, Admit, Admit, Queue]
        } else if ratio < SPIKE_SHED_NORMAL_FROM {
            [Admit, Admit, Queue, Shed]
        } else {
            [Admit, Queue, Shed, Shed]
        };
        LoadStrategy {
            incoming_per_sec,
            capacity_per_sec: capacity,
            ratio,
            actions,
        }
    }

    fn optimize_distribution(&self) -> TickReport {
        self.tick()
    }
}
