//! Typed errors. None of the library's public paths panics on bad input: each failure is one of
//! these, and an error that refuses a task hands the task back.
use std::fmt;

/// Why no route could be returned for a task.
///
/// The variants are checked in this order, so the error names the *first* obstacle: a fleet
/// with no node at all, then no route with the required capabilities, then none healthy, then
/// none meeting the latency/memory constraints, then none with free capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteError {
    /// The fleet has no routes at all.
    EmptyFleet,
    /// No route offers every required capability.
    NoCapableRoute,
    /// Routes with the capabilities exist, but every one is ejected or draining.
    NoHealthyRoute,
    /// Capable, healthy routes exist, but each would break the task's `max_latency_ms` or
    /// `max_memory_mb`.
    ConstraintsUnsatisfiable,
    /// Feasible routes exist, but all are at capacity right now (retry later or shed).
    Saturated,
    /// The route was planned on a snapshot that no longer has it (node removed).
    StaleRoute,
    /// The task's tenant is over its token rate (a gateway answers 429); nothing was
    /// reserved.
    TenantRateLimited,
}

impl RouteError {
    /// Every variant, in counter order.
    pub const ALL: [RouteError; 7] = [
        RouteError::EmptyFleet,
        RouteError::NoCapableRoute,
        RouteError::NoHealthyRoute,
        RouteError::ConstraintsUnsatisfiable,
        RouteError::Saturated,
        RouteError::StaleRoute,
        RouteError::TenantRateLimited,
    ];

    /// Index into per-error counters.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Snake-case name, for metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            RouteError::EmptyFleet => "empty_fleet",
            RouteError::NoCapableRoute => "no_capable_route",
            RouteError::NoHealthyRoute => "no_healthy_route",
            RouteError::ConstraintsUnsatisfiable => "constraints_unsatisfiable",
            RouteError::Saturated => "saturated",
            RouteError::StaleRoute => "stale_route",
            RouteError::TenantRateLimited => "tenant_rate_limited",
        }
    }
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RouteError::EmptyFleet => "the fleet has no routes",
            RouteError::NoCapableRoute => "no route offers every required capability",
            RouteError::NoHealthyRoute => "every capable route is ejected or draining",
            RouteError::ConstraintsUnsatisfiable => {
                "no capable route meets the latency and memory constraints"
            }
            RouteError::Saturated => "every feasible route is at capacity",
            RouteError::StaleRoute => "the route is no longer in the routing table",
            RouteError::TenantRateLimited => "the task's tenant is over its token rate",
        })
    }
}

impl std::error::Error for RouteError {}

/// Why an allocation could not be adjusted
/// ([`ResourceAllocator::adjust_allocation`](crate::spec::ResourceAllocator::adjust_allocation)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AdjustError {
    /// The allocation no longer holds anything: it was released, or the control thread
    /// reclaimed it past its timeout.
    Released,
    /// The growth does not fit the node's capacity for the allocation's class; the
    /// allocation is unchanged.
    Saturated,
}

impl fmt::Display for AdjustError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdjustError::Released => "the allocation was released or reclaimed",
            AdjustError::Saturated => "the node has no room for the growth (allocation unchanged)",
        })
    }
}

impl std::error::Error for AdjustError {}

/// A task refused at submission; the task is handed back untouched.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubmitError<T> {
    /// The dispatcher's bounded capacity is full (back-pressure: retry or shed).
    Full(T),
    /// The dispatcher is shutting down or has shut down.
    ShutDown(T),
}

impl<T> SubmitError<T> {
    /// The task that was refused.
    pub fn into_inner(self) -> T {
        match self {
            SubmitError::Full(t) | SubmitError::ShutDown(t) => t,
        }
    }
}

impl<T> fmt::Debug for SubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full(_) => f.write_str("Full(..)"),
            SubmitError::ShutDown(_) => f.write_str("ShutDown(..)"),
        }
    }
}

impl<T> fmt::Display for SubmitError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubmitError::Full(_) => f.write_str("dispatcher queue is full"),
            SubmitError::ShutDown(_) => f.write_str("dispatcher is shut down"),
        }
    }
}

impl<T> std::error::Error for SubmitError<T> {}

/// An invalid fleet description or fleet change. Each variant names what is wrong and where.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// A capability name that was never declared.
    UnknownCapability(String),
    /// More than [`MAX_CAPABILITIES`](crate::limits::MAX_CAPABILITIES) capability names.
    TooManyCapabilities {
        /// The limit.
        max: usize,
    },
    /// An empty or blank name.
    InvalidName {
        /// What kind of thing was named ("node", "chain", "capability").
        what: &'static str,
        /// The name as given.
        name: String,
    },
    /// Two nodes or chains with one name.
    Duplicate {
        /// "node" or "chain".
        what: &'static str,
        /// The repeated name.
        name: String,
    },
    /// A reference to a node that does not exist.
    UnknownNode(String),
    /// A number that is NaN, infinite, negative or out of its range.
    InvalidNumber {
        /// The node or chain it belongs to.
        owner: String,
        /// The field name.
        field: &'static str,
        /// The value as given.
        value: f64,
    },
    /// A capacity of zero (a node that could never serve anything).
    ZeroCapacity {
        /// The node.
        node: String,
        /// Which capacity.
        field: &'static str,
    },
    /// A capacity larger than the ledger can represent.
    CapacityTooLarge {
        /// The node.
        node: String,
        /// Which capacity.
        field: &'static str,
        /// The largest accepted value.
        max: u64,
    },
    /// A chain with no stages, or more than [`MAX_STAGES`](crate::limits::MAX_STAGES).
    BadChain {
        /// The chain.
        chain: String,
        /// Its stage count.
        stages: usize,
    },
    /// More nodes or chains than a router holds.
    TooManyRoutes {
        /// The limit.
        max: usize,
    },
    /// A setting outside its valid range.
    InvalidSetting {
        /// The setting.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// A reload whose config lists no node (an empty or truncated file, such as an editor
    /// saving in place mid-write): applying it would remove every node, so it is refused and
    /// the running fleet stays.
    EmptyFleet,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnknownCapability(n) => write!(f, "unknown capability `{n}`"),
            ConfigError::TooManyCapabilities { max } => {
                write!(f, "more than {max} capability names")
            }
            ConfigError::InvalidName { what, name } => write!(f, "invalid {what} name `{name}`"),
            ConfigError::Duplicate { what, name } => write!(f, "duplicate {what} `{name}`"),
            ConfigError::UnknownNode(n) => write!(f, "unknown node `{n}`"),
            ConfigError::InvalidNumber {
                owner,
                field,
                value,
            } => write!(
                f,
                "`{owner}`: field `{field}` must be finite and in range, got {value}"
            ),
            ConfigError::ZeroCapacity { node, field } => {
                write!(f, "node `{node}`: `{field}` must be greater than zero")
            }
            ConfigError::CapacityTooLarge { node, field, max } => {
                write!(f, "node `{node}`: `{field}` must be at most {max}")
            }
            ConfigError::BadChain { chain, stages } => write!(
                f,
                "chain `{chain}` has {stages} stages (1..={} allowed)",
                crate::limits::MAX_STAGES
            ),
            ConfigError::TooManyRoutes { max } => write!(f, "more than {max} routes"),
            ConfigError::InvalidSetting { field, reason } => write!(f, "`{field}`: {reason}"),
            ConfigError::EmptyFleet => f.write_str(
                "the config lists no node (an empty or partial file?): \
                 a reload would remove every node, so the running fleet is kept",
            ),
        }
    }
}

impl std::error::Error for ConfigError {}

/// A dispatcher that could not be built.
#[derive(Debug)]
#[non_exhaustive]
pub enum BuildError {
    /// `workers(0)` or a zero `capacity`.
    InvalidSetting {
        /// The setting.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
    /// The OS refused to start a thread.
    Spawn(std::io::Error),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::InvalidSetting { field, reason } => write!(f, "`{field}`: {reason}"),
            BuildError::Spawn(e) => write!(f, "could not start a thread: {e}"),
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Spawn(e) => Some(e),
            BuildError::InvalidSetting { .. } => None,
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn submit_error_hands_back_the_task() {
        assert_eq!(SubmitError::Full(7).into_inner(), 7);
        assert_eq!(SubmitError::ShutDown(8).into_inner(), 8);
        assert_eq!(SubmitError::Full(1).to_string(), "dispatcher queue is full");
        assert_eq!(format!("{:?}", SubmitError::ShutDown(1)), "ShutDown(..)");
    }

    #[test]
    fn messages_name_the_culprit() {
        let e = ConfigError::InvalidNumber {
            owner: "gpu-1".into(),
            field: "weight",
            value: f64::NAN,
        };
        assert!(e.to_string().contains("gpu-1") && e.to_string().contains("weight"));
        assert!(ConfigError::BadChain {
            chain: "c".into(),
            stages: 0
        }
        .to_string()
        .contains("0 stages"));
        assert!(RouteError::Saturated.to_string().contains("capacity"));
        let b = BuildError::Spawn(std::io::Error::other("x"));
        assert!(std::error::Error::source(&b).is_some());
    }
}
