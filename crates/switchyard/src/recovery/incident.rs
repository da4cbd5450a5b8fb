//! What the handlers are asked about: a node short of capacity, and load spread unevenly.
use super::tracker::current_deviation;
use super::{DEFAULT_BALANCE_TARGET, DEFAULT_BALANCE_THRESHOLD, DEFAULT_EXHAUSTION_THRESHOLD};
use crate::router::Router;

/// A node running short of capacity (the seed's `ResourceIncident`).
///
/// # Examples
/// ```
/// use switchyard::recovery::ResourceIncident;
/// let i = ResourceIncident::new("h100-a").threshold(0.8);
/// assert_eq!((i.node.as_str(), i.threshold), ("h100-a", 0.8));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceIncident {
    /// The node.
    pub node: String,
    /// Utilisation (0–1) at and above which it counts as exhausted; a value outside
    /// 0.05–1 is clamped, a NaN means the default.
    pub threshold: f64,
}

impl ResourceIncident {
    /// An incident on `node` at the default threshold ([`DEFAULT_EXHAUSTION_THRESHOLD`]).
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            threshold: DEFAULT_EXHAUSTION_THRESHOLD,
        }
    }

    /// Sets the threshold.
    pub fn threshold(mut self, t: f64) -> Self {
        self.threshold = t;
        self
    }
}

/// Load spread unevenly (the seed's `BalanceDisruption`).
///
/// # Examples
/// ```
/// use switchyard::{NodeSpec, Router};
/// use switchyard::recovery::BalanceDisruption;
/// let router = Router::builder().node(NodeSpec::new("a")).build()?;
/// let d = BalanceDisruption::measure(&router);
/// assert_eq!(d.deviation, 0.0); // idle
/// assert_eq!((d.threshold, d.target), (0.5, 0.1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BalanceDisruption {
    /// The observed deviation: busiest utilisation over the mean, minus one (see
    /// [`balance_deviation`]); a NaN or infinite value is measured again.
    ///
    /// [`balance_deviation`]: crate::metrics::balance_deviation
    pub deviation: f64,
    /// Deviation above which to act (default [`DEFAULT_BALANCE_THRESHOLD`]).
    pub threshold: f64,
    /// Deviation to aim for (default [`DEFAULT_BALANCE_TARGET`], at most the threshold).
    pub target: f64,
}

impl BalanceDisruption {
    /// A disruption of `deviation`, with the default threshold and target.
    pub fn new(deviation: f64) -> Self {
        Self {
            deviation,
            threshold: DEFAULT_BALANCE_THRESHOLD,
            target: DEFAULT_BALANCE_TARGET,
        }
    }

    /// The router's deviation now, over its current (not draining) nodes.
    pub fn measure(router: &Router) -> Self {
        Self::new(current_deviation(router))
    }

    /// Sets the threshold.
    pub fn threshold(mut self, t: f64) -> Self {
        self.threshold = t;
        self
    }

    /// Sets the target.
    pub fn target(mut self, t: f64) -> Self {
        self.target = t;
        self
    }
}
