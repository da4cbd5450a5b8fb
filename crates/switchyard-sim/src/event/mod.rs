//! The discrete-event simulator: a trace replayed in virtual time against a modelled fleet,
//! one [`Policy`] at a time. Nothing here sleeps or reads the wall clock except the
//! decision timer, so a run over thousands of requests takes milliseconds and, but for the
//! measured decision latency, is identical for identical inputs.
//!
//! # The model
//! * **Arrivals.** Row `r` arrives at `r.arrival_ms / load` (the trace's arrival times are
//!   compressed by `--load`; nothing is duplicated). Task attributes come from
//!   [`synthesize`](super::synthesize) with the run's seed.
//! * **SLO.** Every task gets `max_latency_ms = 5 × (its unloaded service time on the
//!   fastest capable node, no cache hit) + 1000 ms`, stored in its
//!   [`RouteConstraints`](switchyard::RouteConstraints) unless [`SimConfig::slo_in_task`] is off
//!   (the `switchyard` router reads it; the baselines ignore it). A task meets its SLO when
//!   it completes within that time of its arrival.
//! * **Nodes.** Each node serves up to `max_concurrency` sequences; a task sent to a full
//!   node waits in the node's FIFO queue. A task starting when `running` sequences are
//!   already being served, with `u = running / max_concurrency`, takes
//!   [`service_time_ms`](super::service_time_ms)`(spec, input − cached, output, u)`, i.e.
//!   `(base + (input − cached)/prefill + output/decode) × (1 + batch_slowdown × u)`; its
//!   TTFT is its wait (gateway and node queue) plus the `base + prefill` part of that,
//!   end-to-end latency is TTFT plus the decode part. The slowdown is fixed at the start.
//! * **Prefix cache** (optional, on by default). Each node has an LRU [`PrefixCache`] of
//!   512-token blocks holding `memory_mb / (kv_mb_per_1k_tokens × 0.512)` blocks. When a
//!   task starts, the first `k` of its blocks found in the cache take `min(k × 512, input)`
//!   tokens off its prefill; then all its blocks are made most recent. Traces without
//!   `hash_ids` get unique blocks per request (nothing is shared), so the cache never hits.
//!   The cache is separate from the memory running sequences use.
//! * **KV admission** (on by default; `--no-kv-admission` turns it off). A node also starts a task only while the
//!   tokens (input + output) of its running tasks stay within
//!   `min(memory_mb / kv_mb_per_1k_tokens × 1000, max_tokens_in_flight)` (or when it is
//!   idle), as a vLLM-style scheduler admits only what fits its KV memory.
//! * **Gateway model** ([`SimConfig::gateway`], [`GatewayModel`]). Shared (the default):
//!   the policy is offered only the capable nodes that can start the task at once (a free
//!   slot, and with KV admission room for its tokens); with none the task waits at the
//!   gateway without asking the policy. A [`Decision::Dispatch`] to a node without room
//!   (the router picks from its own ledgers) becomes a wait (the policy is told through
//!   [`Policy::withdraw`]), and a [`Decision::Shed`] becomes a wait too, so every policy
//!   waits, is retried and is shed by the same rules below and no node queues.
//!   Per-policy: decisions are applied as the policy returns them.
//! * **Gateway queue.** A [`Decision::Wait`] leaves the task in a FIFO queue per set of
//!   required capabilities and priority class, retried whenever a task finishes (and after a
//!   control tick), highest class first, each class from its head until a retry waits
//!   again. A new arrival joins behind waiting tasks of its own or a higher class.
//!   Tasks still waiting when nothing else is left to happen are counted as shed.
//! * **Ticks.** A policy asking for ticks every `Δ` gets one at each multiple of `Δ` that
//!   has passed before an event. Consecutive multiples with no event between them are
//!   folded into one tick: nothing a tick reads changes between events.
//! * **Time.** Virtual nanoseconds; events at the same instant run finishes first, then
//!   arrivals in trace order.
//! * **Series.** Each run also records a [`Series`]: every node's utilisation averaged
//!   over buckets of [`sample_interval_ns`]`(last arrival)`, and the tasks shed and failed
//!   per bucket, for plots.
//! * **Measured.** Two figures are wall-clock, not virtual: the time spent inside the
//!   policy's `pick` (each call timed, as the decision-latency histogram) and the time of
//!   the whole event loop, so a report can say how many decisions per second the policy
//!   makes and how many tasks per second the simulator replays.
//!
//! [`PrefixCache`]: crate::PrefixCache
//! [`Decision::Wait`]: crate::Decision::Wait
//! [`Decision::Dispatch`]: crate::Decision::Dispatch
//! [`Decision::Shed`]: crate::Decision::Shed
//! [`GatewayModel`]: crate::GatewayModel
//! [`Policy::withdraw`]: crate::Policy::withdraw
//! [`Series`]: crate::Series
//! [`sample_interval_ns`]: crate::sample_interval_ns
mod engine;
#[cfg(test)]
mod tests;

pub use engine::{run_policy_with_progress, PROGRESS_EVERY};

use crate::error::{SimError, POLICY_NAMES};
use crate::policy::{make_policy_for, Policy};
use crate::record::SimOutcome;
use crate::report::Report;
use crate::workload::{SimConfig, Workload};

/// Runs `policy` over `workload`.
///
/// # Examples
/// ```
/// use switchyard_sim::{default_fleet, parse_trace, run_policy, LeastInFlight, SimConfig, Workload};
/// let rows = parse_trace("t", "arrival_ms,input_tokens,output_tokens\n0,1000,10\n5,2000,20\n")?;
/// let cfg = SimConfig::default();
/// let w = Workload::new("t", &rows, default_fleet(), &cfg)?;
/// let out = run_policy(&w, &mut LeastInFlight, &cfg);
/// assert_eq!(out.report.completed, 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn run_policy(workload: &Workload, policy: &mut dyn Policy, cfg: &SimConfig) -> SimOutcome {
    run_policy_with_progress(workload, policy, cfg, &mut |_| {})
}

/// Runs each named policy over `workload` and collects the reports.
///
/// # Errors
/// [`SimError::UnknownPolicy`] (checked before anything runs), [`SimError::NoPolicies`].
pub fn compare(
    workload: &Workload,
    policies: &[&str],
    cfg: &SimConfig,
) -> Result<Report, SimError> {
    let outcomes = compare_outcomes(workload, policies, cfg, &mut |_, _| {})?;
    Ok(Report::new(workload, cfg, &outcomes))
}

/// [`compare`], keeping every run's [`SimOutcome`] (records and series, for plots), and
/// calling `progress(policy index, tasks arrived)` as each run goes (see
/// [`run_policy_with_progress`]).
///
/// # Errors
/// As [`compare`].
pub fn compare_outcomes(
    workload: &Workload,
    policies: &[&str],
    cfg: &SimConfig,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<SimOutcome>, SimError> {
    if policies.is_empty() {
        return Err(SimError::NoPolicies);
    }
    if let Some(bad) = policies.iter().find(|p| !POLICY_NAMES.contains(p)) {
        return Err(SimError::UnknownPolicy(bad.to_string()));
    }
    let mut outcomes = Vec::with_capacity(policies.len());
    for (k, name) in policies.iter().enumerate() {
        let mut p = make_policy_for(name, &workload.fleet, cfg.seed, cfg.gateway)?;
        outcomes.push(run_policy_with_progress(
            workload,
            p.as_mut(),
            cfg,
            &mut |arrived| progress(k, arrived),
        ));
    }
    Ok(outcomes)
}
