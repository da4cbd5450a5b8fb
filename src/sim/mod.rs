//! Trace replay support: the trace reader, the built-in fleet, the workload synthesiser and
//! the simulated backends' service-time model. The `switchyard` binary drives these through
//! a real [`Dispatcher`](crate::Dispatcher).
mod fleet;
mod synthetic;
mod trace;

pub use fleet::{default_fleet, service_time_ms, synthesize, FleetConfig, CAPABILITIES};
pub use synthetic::{
    node_capabilities, synthetic_fleet, synthetic_tasks, task_capabilities, SYNTHETIC_CAPABILITIES,
};
pub use trace::{load_trace, parse_trace, TraceError, TraceRow};
