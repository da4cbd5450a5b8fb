//! Capability scoring and measured-quality weights: the seed's `CapabilityAwareRouter`.
//!
//! Three feedback paths from what the fleet really does into how it is routed, all on the
//! control path (none of them touches the hot path; each change is validated at once and
//! published by the next [`tick`](Router::tick)):
//!
//! | method | writes | routing effect |
//! | --- | --- | --- |
//! | [`incorporate_scores`](CapabilityAwareRouter::incorporate_scores) | [`NodeSpec::capability_scores`] | the score divides the route's score: `cap_factor = max(0.05, 1 − w_cap·(1 − score))` |
//! | [`update_routing_weights`](CapabilityAwareRouter::update_routing_weights) | a quality factor on the node's weight | the weight shapes the power-of-two-choices draw |
//! | [`adjust_thresholds`](CapabilityAwareRouter::adjust_thresholds) | the [`HealthPolicy`] | when a node counts as degraded, when the streak gate ejects it |
//!
//! # The weight rule
//! `weight = base × clamp(success_rate² × efficiency, 0.05, 4)`, capped at the largest weight
//! a node accepts (10⁶). Squaring the success rate makes a node failing one request in ten
//! lose a fifth of its share (0.81) and one failing half lose three quarters; `efficiency`
//! (predicted over observed latency) lowers a node slower than modelled and raises one faster
//! than modelled. The floor keeps every node drawn now and then, so it can show it recovered;
//! the ceiling keeps one lucky window from taking the fleet.
//!
//! The *base* is the weight the node is configured with ([`NodeSpec::weight`]), which this
//! rule never changes: the control thread keeps the quality factor beside it and multiplies
//! the two into the snapshot, so repeated calls never compound, and a new configured weight
//! (a [`Router::update_node`], a config reload) simply gets the current factor applied.
//! Success rate and latency also reach routing
//! without this rule (the health verdict halves a degraded node's weight, the latency
//! factor scales its expected latency): this rule is the caller's lever on top of them, fed
//! from the router's own [`node_health`](Router::node_health) or from the gateway's own
//! measurements.
//!
//! # The threshold rule
//! See [`CapabilityAwareRouter::adjust_thresholds`].
use crate::capability::CapSet;
use crate::error::{ConfigError, RouteError};
use crate::health::HealthPolicy;
use crate::model::{CapabilityAwareRoute, PerformanceMetrics, RouteOptions, Task};
use crate::node::NodeSpec;
use crate::router::Router;
use crate::routing::select;
use crate::routing::table::RoutingTable;

/// Lowest quality factor of the weight rule (see the module docs).
pub const MIN_QUALITY_FACTOR: f64 = 0.05;
/// Highest quality factor of the weight rule.
pub const MAX_QUALITY_FACTOR: f64 = 4.0;
/// The largest weight a [`NodeSpec`] accepts.
const MAX_WEIGHT: f64 = 1e6;

/// Windows of history [`CapabilityAwareRouter::adjust_thresholds`] needs before it derives
/// anything (windows with no request do not count).
pub const MIN_HISTORY_WINDOWS: usize = 10;

/// Quality scores per (node, capability), each 0–1, from configuration or measured at run
/// time (e.g. an evaluation suite's pass rate per task kind).
///
/// A later score for the same pair replaces an earlier one.
///
/// # Examples
/// ```
/// use switchyard::spec::CapabilityScores;
/// let scores = CapabilityScores::new()
///     .score("h100-a", "code", 0.95)
///     .score("l4-b", "code", 0.4);
/// assert_eq!(scores.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CapabilityScores {
    entries: Vec<(String, String, f64)>,
}

impl CapabilityScores {
    /// No scores.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a score for `node` on `capability`.
    pub fn score(mut self, node: impl Into<String>, capability: impl Into<String>, s: f64) -> Self {
        self.insert(node, capability, s);
        self
    }

    /// Adds a score for `node` on `capability` in place.
    pub fn insert(&mut self, node: impl Into<String>, capability: impl Into<String>, s: f64) {
        self.entries.push((node.into(), capability.into(), s));
    }

    /// Every (node, capability, score), in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, f64)> + '_ {
        self.entries
            .iter()
            .map(|(n, c, s)| (n.as_str(), c.as_str(), *s))
    }

    /// Number of scores.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no score.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// One window of one node's history, as the health layer counts it.
///
/// `errors` are failures (server errors, timeouts, abandoned tickets), not rate limits or
/// client cancels, which say nothing about the node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthWindow {
    /// Outcomes in the window (successes plus errors).
    pub requests: u64,
    /// Failed outcomes in the window.
    pub errors: u64,
    /// Longest run of consecutive failures in the window.
    pub longest_streak: u64,
    /// Observed over predicted latency over the window (1 = as modelled).
    pub latency_factor: f64,
}

impl HealthWindow {
    /// A window of `requests` outcomes, `errors` of them failures, at `latency_factor`.
    /// The longest streak defaults to the case of isolated failures: 1 when any failed.
    pub fn new(requests: u64, errors: u64, latency_factor: f64) -> Self {
        Self {
            requests,
            errors,
            longest_streak: errors.min(1),
            latency_factor,
        }
    }

    /// Sets the longest run of consecutive failures.
    pub fn streak(mut self, longest: u64) -> Self {
        self.longest_streak = longest;
        self
    }

    /// Successes over requests (1 for an empty window).
    pub fn success_rate(&self) -> f64 {
        if self.requests == 0 {
            1.0
        } else {
            self.requests.saturating_sub(self.errors) as f64 / self.requests as f64
        }
    }
}

/// The fleet's own history: per node, a series of [`HealthWindow`]s, and the policy the
/// derived thresholds start from.
///
/// The router cannot be asked for its current [`HealthPolicy`], so the policy to start from
/// travels with the history (default: [`HealthPolicy::default`]); every field the rule does
/// not derive is copied from it.
///
/// # Examples
/// ```
/// use switchyard::HealthPolicy;
/// use switchyard::spec::{HealthWindow, HistoricalData};
/// let mut h = HistoricalData::new().starting_from(HealthPolicy::default());
/// h.record("a", HealthWindow::new(100, 2, 1.1));
/// assert_eq!(h.windows(), 1);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistoricalData {
    nodes: Vec<(String, Vec<HealthWindow>)>,
    policy: HealthPolicy,
}

impl HistoricalData {
    /// No history, starting from the default policy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the policy the derived one starts from.
    pub fn starting_from(mut self, policy: HealthPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Appends a window to `node`'s series.
    pub fn record(&mut self, node: &str, window: HealthWindow) -> &mut Self {
        match self.nodes.iter_mut().find(|(n, _)| n == node) {
            Some((_, series)) => series.push(window),
            None => self.nodes.push((node.to_string(), vec![window])),
        }
        self
    }

    /// Every node's series, in the order the nodes were first recorded.
    pub fn nodes(&self) -> &[(String, Vec<HealthWindow>)] {
        &self.nodes
    }

    /// The policy the derived one starts from.
    pub fn policy(&self) -> &HealthPolicy {
        &self.policy
    }

    /// Windows recorded, over every node.
    pub fn windows(&self) -> usize {
        self.nodes.iter().map(|(_, s)| s.len()).sum()
    }
}

/// The seed's `CapabilityAwareRouter`: capability scores, weights from measured quality, and
/// health thresholds from the fleet's history. Implemented for [`Router`]; see the module
/// docs of `scoring.rs` for the rules.
///
/// # Examples
/// ```
/// use switchyard::{NodeSpec, Router, Task};
/// use switchyard::spec::{CapabilityAwareRouter, CapabilityScores};
/// let router = Router::builder()
///     .capabilities(["code"])
///     .node(NodeSpec::new("a").capabilities(["code"]))
///     .node(NodeSpec::new("b").capabilities(["code"]))
///     .build()?;
/// let changed = router.incorporate_scores(&CapabilityScores::new().score("a", "code", 0.2))?;
/// assert_eq!(changed, 1);
/// router.tick(); // published
/// let task = Task::new(1, 100, 10).require(router.resolve(&["code"])?);
/// let view = router.capability_aware_route(&task)?;
/// assert_eq!(view.required_capabilities, vec![("code".to_string(), 0.0)]);
/// // With a fifth of b's quality, a loses every pair it meets b in.
/// assert_eq!(view.scores, vec![("code".to_string(), 1.0)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait CapabilityAwareRouter {
    /// Merges per (node, capability) scores into the nodes' specs (through
    /// [`Router::update_node`], which keeps live counters); published by the next tick.
    /// Returns how many scores changed (a listed capability with no score counts as 1).
    ///
    /// Every score is checked before anything is applied, so an invalid set changes
    /// nothing. Only a fleet change by another thread between the check and the update
    /// (a node removed meanwhile) can fail a later node after earlier ones were updated.
    ///
    /// # Errors
    /// [`ConfigError::UnknownNode`], [`ConfigError::UnknownCapability`] for a name never
    /// declared, [`ConfigError::InvalidSetting`] (`capability_scores`) for a capability the
    /// node does not offer, [`ConfigError::InvalidNumber`] (`capability_score`) for a NaN or a
    /// score outside 0–1.
    fn incorporate_scores(&self, scores: &CapabilityScores) -> Result<usize, ConfigError>;

    /// Sets each named node's weight from its measured quality:
    /// `configured weight × clamp(success_rate² × efficiency, 0.05, 4)` (the factor is kept
    /// beside the configured weight; see the module docs). Returns the new weight of each node, in the order the nodes first appear (a
    /// node named twice gets its last metrics). Published by the next tick.
    ///
    /// # Errors
    /// [`ConfigError::UnknownNode`], or [`ConfigError::InvalidNumber`] for a success rate
    /// outside 0–1 or an efficiency that is negative or not finite; nothing is applied then.
    fn update_routing_weights(
        &self,
        performance: &[(String, PerformanceMetrics)],
    ) -> Result<Vec<(String, f64)>, ConfigError>;

    /// Derives the health thresholds from the fleet's own history, applies them with
    /// [`Router::set_health_policy`] and returns them. Over every window with at least one
    /// request (nearest-rank percentiles):
    ///
    /// * `degraded_latency_factor = clamp(p95(latency factors) × 1.5, 3, 20)`: never below the
    ///   default 3; a fleet that routinely runs at 2.5× its model would otherwise flag its
    ///   normal; never above 20, the largest latency factor the control loop records.
    /// * `degraded_success_rate = clamp(p5(success rates) − 0.05, 1 − failure_rate, 0.9)`:
    ///   never above the default 0.9; lowered when healthy windows routinely dip, but never
    ///   below where failure-rate ejection takes over anyway.
    /// * `consecutive_failures` (unless 0, disabled) rises when history shows flapping: a
    ///   *false trip* is a window whose longest failure streak reached the gate while its
    ///   success rate stayed at or above the new degraded threshold (the gate would eject a
    ///   node that is fine). When at least 10 % of windows are false trips, the gate becomes
    ///   `p90(their longest streaks) + 1`, at most 10 (twice Envoy's `consecutive_5xx`). It
    ///   is never lowered: a calm history is no reason to eject sooner.
    ///
    /// Every other field is the starting policy's ([`HistoricalData::starting_from`]).
    ///
    /// # Errors
    /// [`ConfigError::InvalidNumber`] for a latency factor that is not finite and positive,
    /// [`ConfigError::InvalidSetting`] for a window with more errors than requests or a
    /// streak longer than its errors, or fewer than [`MIN_HISTORY_WINDOWS`] windows with
    /// requests; the policy is unchanged then.
    fn adjust_thresholds(&self, history: &HistoricalData) -> Result<HealthPolicy, ConfigError>;

    /// Plans `task` on the current snapshot (nothing is reserved) and describes the choice
    /// by capability name: the required capabilities (each with minimum score 0: tasks
    /// require a capability, scores rank the routes that have it), the primary route's score
    /// on every capability it offers (the lowest over a chain's stages that offer it; 1 when
    /// unscored), and the primary route's confidence.
    ///
    /// # Errors
    /// The [`RouteError`] naming the first obstacle, as planning does.
    fn capability_aware_route(&self, task: &Task) -> Result<CapabilityAwareRoute, RouteError>;
}

/// The quality factor of the weight rule.
fn quality_factor(m: &PerformanceMetrics) -> f64 {
    (m.success_rate * m.success_rate * m.efficiency).clamp(MIN_QUALITY_FACTOR, MAX_QUALITY_FACTOR)
}

/// Nearest-rank percentile of sorted, non-empty `v` (`q` in 0–1).
fn percentile(v: &[f64], q: f64) -> f64 {
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// The effective score of `cap` in `spec`: the last explicit one, else 1.
fn effective_score(spec: &NodeSpec, cap: &str) -> f64 {
    spec.capability_scores
        .iter()
        .rev()
        .find(|(c, _)| c == cap)
        .map_or(1.0, |&(_, s)| s)
}

/// A route's scores on every capability it offers, by name.
fn route_scores(table: &RoutingTable, options: &RouteOptions) -> Vec<(String, f64)> {
    let primary = &options.primary().route;
    let caps = table
        .route_slot(primary.route)
        .map_or(CapSet::EMPTY, |s| table.routes[s as usize].caps);
    caps.iter()
        .filter_map(|bit| {
            let name = table.registry.name(bit)?;
            let mut score = f64::INFINITY;
            for id in primary.stages() {
                let Some(n) = table.node(*id) else { continue };
                if !n.caps.contains(bit) {
                    continue;
                }
                let s = table
                    .scores_of(n)
                    .iter()
                    .find(|&&(b, _)| b as usize == bit)
                    .map_or(1.0, |&(_, s)| s as f64);
                score = score.min(s);
            }
            Some((
                name.to_string(),
                if score.is_finite() { score } else { 1.0 },
            ))
        })
        .collect()
}

impl CapabilityAwareRouter for Router {
    fn incorporate_scores(&self, scores: &CapabilityScores) -> Result<usize, ConfigError> {
        let mut specs = self.node_specs();
        let mut touched = vec![false; specs.len()];
        let mut changed = 0;
        for (node, cap, s) in scores.iter() {
            let i = specs
                .iter()
                .position(|n| n.name == node)
                .ok_or_else(|| ConfigError::UnknownNode(node.to_string()))?;
            let spec = &mut specs[i];
            if !spec.capabilities.iter().any(|c| c == cap) {
                self.resolve(&[cap])?;
                return Err(ConfigError::InvalidSetting {
                    field: "capability_scores",
                    reason: "a node can only be scored on a capability it offers",
                });
            }
            if !(s.is_finite() && (0.0..=1.0).contains(&s)) {
                return Err(ConfigError::InvalidNumber {
                    owner: node.to_string(),
                    field: "capability_score",
                    value: s,
                });
            }
            if effective_score(spec, cap) != s {
                changed += 1;
                spec.capability_scores.retain(|(c, _)| c != cap);
                spec.capability_scores.push((cap.to_string(), s));
                touched[i] = true;
            }
        }
        for (spec, _) in specs.into_iter().zip(touched).filter(|(_, t)| *t) {
            self.update_node(spec)?;
        }
        Ok(changed)
    }

    fn update_routing_weights(
        &self,
        performance: &[(String, PerformanceMetrics)],
    ) -> Result<Vec<(String, f64)>, ConfigError> {
        let specs = self.node_specs();
        // Check everything first; keep each node's last metrics, in first-seen order.
        let mut wanted: Vec<(usize, PerformanceMetrics)> = Vec::new();
        for (node, m) in performance {
            let i = specs
                .iter()
                .position(|n| n.name == *node)
                .ok_or_else(|| ConfigError::UnknownNode(node.clone()))?;
            let bad = |field, value| ConfigError::InvalidNumber {
                owner: node.clone(),
                field,
                value,
            };
            if !(m.success_rate.is_finite() && (0.0..=1.0).contains(&m.success_rate)) {
                return Err(bad("success_rate", m.success_rate));
            }
            if !(m.efficiency.is_finite() && m.efficiency >= 0.0) {
                return Err(bad("efficiency", m.efficiency));
            }
            match wanted.iter_mut().find(|(j, _)| *j == i) {
                Some(w) => w.1 = *m,
                None => wanted.push((i, *m)),
            }
        }
        // The factor is kept by the controller beside the configured weight (it multiplies
        // it in the snapshot), so repeated calls never compound and a config reload keeps
        // both apart.
        let mut out = Vec::with_capacity(wanted.len());
        for (i, m) in wanted {
            let spec = &specs[i];
            let q = quality_factor(&m);
            self.set_quality(&spec.name, q)?;
            out.push((spec.name.clone(), (spec.weight * q).min(MAX_WEIGHT)));
        }
        Ok(out)
    }

    fn adjust_thresholds(&self, history: &HistoricalData) -> Result<HealthPolicy, ConfigError> {
        let base = history.policy;
        let mut windows = Vec::new();
        for (node, series) in &history.nodes {
            for w in series {
                if !(w.latency_factor.is_finite() && w.latency_factor > 0.0) {
                    return Err(ConfigError::InvalidNumber {
                        owner: node.clone(),
                        field: "history.latency_factor",
                        value: w.latency_factor,
                    });
                }
                if w.errors > w.requests {
                    return Err(ConfigError::InvalidSetting {
                        field: "history.errors",
                        reason: "a window cannot have more errors than requests",
                    });
                }
                if w.longest_streak > w.errors {
                    return Err(ConfigError::InvalidSetting {
                        field: "history.longest_streak",
                        reason: "a failure streak cannot be longer than the window's errors",
                    });
                }
                if w.requests > 0 {
                    windows.push(*w);
                }
            }
        }
        if windows.len() < MIN_HISTORY_WINDOWS {
            return Err(ConfigError::InvalidSetting {
                field: "history",
                reason: "at least 10 windows with requests are needed",
            });
        }
        let factors = sorted(windows.iter().map(|w| w.latency_factor).collect());
        let rates = sorted(windows.iter().map(HealthWindow::success_rate).collect());
        let mut p = base;
        p.degraded_latency_factor = (percentile(&factors, 0.95) * 1.5).clamp(3.0, 20.0);
        let floor = (1.0 - base.failure_rate).min(0.9);
        p.degraded_success_rate = (percentile(&rates, 0.05) - 0.05).clamp(floor, 0.9);
        let gate = base.consecutive_failures as u64;
        if gate > 0 {
            let trips = sorted(
                windows
                    .iter()
                    .filter(|w| {
                        w.longest_streak >= gate && w.success_rate() >= p.degraded_success_rate
                    })
                    .map(|w| w.longest_streak as f64)
                    .collect(),
            );
            if !trips.is_empty() && trips.len() * 10 >= windows.len() {
                let raised = (percentile(&trips, 0.9) as u64 + 1).min(10);
                p.consecutive_failures = base.consecutive_failures.max(raised as u32);
            }
        }
        self.set_health_policy(p)?;
        Ok(p)
    }

    fn capability_aware_route(&self, task: &Task) -> Result<CapabilityAwareRoute, RouteError> {
        let table = self.snapshot();
        let mut options = RouteOptions::default();
        crate::rng::with_rng(|rng| select::plan(&table, task, rng, &mut options))?;
        let required = task
            .constraints
            .required
            .iter()
            .filter_map(|bit| table.registry.name(bit))
            .map(|name| (name.to_string(), 0.0))
            .collect();
        Ok(CapabilityAwareRoute {
            scores: route_scores(&table, &options),
            required_capabilities: required,
            confidence: options.primary().confidence,
            route: options,
        })
    }
}

#[cfg(all(test, not(switchyard_loom)))]
mod test {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.95), 19.0);
        assert_eq!(percentile(&v, 0.05), 1.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 20.0);
        assert_eq!(percentile(&[7.0], 0.5), 7.0);
    }

    #[test]
    fn quality_factor_is_clamped() {
        let m = |s, e| PerformanceMetrics {
            success_rate: s,
            efficiency: e,
            ..Default::default()
        };
        assert_eq!(quality_factor(&m(1.0, 1.0)), 1.0);
        assert_eq!(quality_factor(&m(0.5, 1.0)), 0.25);
        assert_eq!(quality_factor(&m(0.0, 1.0)), MIN_QUALITY_FACTOR);
        assert_eq!(quality_factor(&m(1.0, 10.0)), MAX_QUALITY_FACTOR);
    }

    #[test]
    fn windows_report_their_success_rate() {
        assert_eq!(HealthWindow::new(0, 0, 1.0).success_rate(), 1.0);
        assert_eq!(HealthWindow::new(10, 3, 1.0).success_rate(), 0.7);
        assert_eq!(HealthWindow::new(10, 3, 1.0).longest_streak, 1);
        assert_eq!(HealthWindow::new(10, 0, 1.0).longest_streak, 0);
    }
}
