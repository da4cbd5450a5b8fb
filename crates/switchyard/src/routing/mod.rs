//! Routing: the snapshot, the decision and the reservation.
//!
//! [`table`] is the immutable snapshot the control thread publishes; [`select`] plans a task's
//! routes on it (filter, score, power of two choices, alternatives); [`reserve`] takes the
//! plan and reserves the first route that still has room, returning a
//! [`Lease`](crate::Lease); [`affinity`] remembers which node last took a prefix.
pub(crate) mod affinity;
pub(crate) mod reserve;
pub(crate) mod select;
pub(crate) mod table;

pub use table::{Headroom, RoutingTable, ScoringWeights};
