//! Trace replay support: the trace reader, the built-in fleet, the workload synthesiser and
//! the simulated backends' service-time model. The `switchyard` binary drives these through
//! a real [`Dispatcher`](switchyard::Dispatcher).
//!
//! It also holds a deterministic discrete-event simulator that replays a trace in virtual
//! time against a modelled fleet under several routing [`Policy`]s, the real router among
//! them, and [`compare`]s them (`switchyard simulate`); see [`run_policy`] for the model.
//!
//! This crate uses the `switchyard` crate's public API only, as any gateway would.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cache;
mod capacity;
mod error;
mod event;
mod fleet;
mod policy;
mod record;
mod report;
mod rng;
mod series;
mod spike;
mod synthetic;
pub mod tower_p2c;
mod trace;
mod workload;

pub use cache::{PrefixCache, BLOCK_TOKENS};
pub use capacity::{
    calibrate_load, fluid_capacity, load_for_utilization, CalibratedLoad, FluidCapacity,
    CALIBRATION_PROBES, CALIBRATION_TOLERANCE, DEFAULT_TARGET_UTILIZATION,
};
pub use error::{SimError, POLICY_NAMES};
pub use event::{compare, compare_outcomes, run_policy, run_policy_with_progress, PROGRESS_EVERY};
pub use fleet::{default_fleet, service_time_ms, synthesize, FleetConfig, CAPABILITIES};
pub use policy::{
    make_policy, make_policy_for, policy_seed, CacheAware, Decision, LeastInFlight, NodeStatus,
    P2cPeakEwma, PeakEwma, Policy, RandomPolicy, RoundRobin, SwitchyardPolicy, View,
    CACHE_AWARE_ABS, CACHE_AWARE_EVICTION_NS, CACHE_AWARE_REL, CACHE_AWARE_THRESHOLD,
    PEAK_EWMA_DECAY_NS, PEAK_EWMA_DEFAULT_RTT_MS, SWITCHYARD_TICK_NS,
};
pub use record::{ClassReport, DecisionNs, PolicyReport, SimOutcome, TaskRecord, TaskStatus};
pub use report::Report;
pub use series::{sample_interval_ns, Series};
pub use spike::{SpikeReport, SPIKE_HEADER};
pub use synthetic::{
    node_capabilities, synthetic_builder, synthetic_fleet, synthetic_tasks, task_capabilities,
    SYNTHETIC_CAPABILITIES,
};
pub use trace::{
    bundled_trace, load_trace, open_trace, parse_trace, TraceError, TraceRow, BUNDLED_TRACES,
    MAX_REQUEST_TOKENS,
};
pub use workload::{slo_ms, GatewayModel, SimConfig, SimTask, Spike, Workload};

pub mod gateways;
pub mod loadgen;
mod prompt;
pub mod serve;
pub use prompt::{block_ids, count_tokens, prompt_for, push_words, BLOCK_BYTES, BYTES_PER_TOKEN};
