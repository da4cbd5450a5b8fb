//! Routing: the snapshot and the decision.
pub(crate) mod affinity;
pub(crate) mod engine;
pub(crate) mod slab;
pub(crate) mod table;

pub use engine::Lease;
pub use table::{Headroom, RoutingTable, ScoringWeights};
