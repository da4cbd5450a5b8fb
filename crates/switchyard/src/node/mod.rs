//! Nodes: what a node is (its spec, on the control path) and what it holds right now (its
//! live ledger, on the hot path), and the GCRA that node and tenant token rates share.
//!
//! [`spec`] describes and validates nodes and chains; [`live`] is the per-node ledger every
//! snapshot and lease shares; [`rate`] is the lock-free GCRA.
pub(crate) mod live;
pub(crate) mod rate;
pub(crate) mod spec;
#[cfg(all(test, not(switchyard_loom)))]
mod tests;

pub(crate) use live::{fits0, fits1, Amounts, NodeLive};
pub(crate) use rate::{gcra_allows, gcra_settle, gcra_take};
pub(crate) use spec::Resolved;
pub use spec::{ChainSpec, NodeSpec};

/// Largest memory (MB) and tokens-in-flight capacity of one node (the 24-bit ledger fields).
pub(crate) const MAX_LEDGER_24: u32 = crate::limits::MAX_TOKENS_IN_FLIGHT;
