//! Why a simulation could not run, and the policy names a run accepts.
//!
//! The names live here rather than with the policies because [`SimError`]'s message lists
//! them, and the workload, the policies and the event loop all return a [`SimError`].
use std::fmt;

use switchyard::ConfigError;

use crate::trace::TraceError;

/// Every policy name [`make_policy`] knows, in the order reports list them.
///
/// [`make_policy`]: crate::make_policy
pub const POLICY_NAMES: [&str; 6] = [
    "round_robin",
    "random",
    "least_in_flight",
    "p2c_peak_ewma",
    "cache_aware",
    "switchyard",
];

/// Why a simulation could not run.
#[derive(Debug, Clone, PartialEq)]
pub enum SimError {
    /// The trace could not be read.
    Trace(TraceError),
    /// The fleet or a capability name is invalid.
    Config(ConfigError),
    /// A policy name that [`make_policy`] does not know.
    ///
    /// [`make_policy`]: crate::make_policy
    UnknownPolicy(String),
    /// `--load` is not a positive finite number.
    InvalidLoad(f64),
    /// No policy was asked for.
    NoPolicies,
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::Trace(e) => write!(f, "{e}"),
            SimError::Config(e) => write!(f, "{e}"),
            SimError::UnknownPolicy(p) => write!(
                f,
                "unknown policy `{p}`; known policies: {}",
                POLICY_NAMES.join(", ")
            ),
            SimError::InvalidLoad(l) => write!(f, "load must be a positive number, got {l}"),
            SimError::NoPolicies => f.write_str("no policy to simulate"),
        }
    }
}

impl std::error::Error for SimError {}

impl From<TraceError> for SimError {
    fn from(e: TraceError) -> Self {
        SimError::Trace(e)
    }
}

impl From<ConfigError> for SimError {
    fn from(e: ConfigError) -> Self {
        SimError::Config(e)
    }
}
