//! The limits the router's fixed-size structures impose, and what each bounds.
//!
//! The lowest floor of the crate: every other module may use these, and they use nothing.

/// Stages of one chain ([`ModelChain`](crate::ModelChain)).
pub const MAX_STAGES: usize = 4;
/// Alternatives a plan returns beside its primary route.
pub const MAX_ALTERNATIVES: usize = 4;
/// Capability names one router can intern (a 256-bit set).
pub const MAX_CAPABILITIES: usize = 256;
/// Nodes one router holds (node ids stay below this).
pub const MAX_NODES: usize = 1 << 20;
/// A node's largest `max_concurrency` (the 16-bit ledger field).
pub const MAX_CONCURRENCY: u32 = u16::MAX as u32;
/// Attempts one task can make, its first route included.
pub const MAX_ATTEMPTS: usize = 4;
/// Tenants that can have a token rate: ids `0..MAX_TENANTS`.
pub const MAX_TENANTS: usize = 4096;
/// A node's largest `max_tokens_in_flight` (the ledger's 24-bit field).
pub const MAX_TOKENS_IN_FLIGHT: u32 = (1 << 24) - 1;
/// A node's largest `memory_mb` (the ledger's 24-bit field).
pub const MAX_MEMORY_MB: u32 = (1 << 24) - 1;
