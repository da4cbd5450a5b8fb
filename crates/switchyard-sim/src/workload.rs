//! What a simulation replays: the run's settings ([`SimConfig`], with an optional load
//! [`Spike`]), and a trace turned into tasks for one fleet ([`Workload`], [`SimTask`]) with
//! each task's SLO ([`slo_ms`]).
use switchyard::{CapSet, Task};

use crate::cache::BLOCK_TOKENS;
use crate::error::SimError;
use crate::fleet::{synthesize, FleetConfig};
use crate::trace::TraceRow;

/// Settings of a simulation run.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Arrival-rate multiplier: arrival times are divided by it.
    pub load: f64,
    /// Seed for task attributes and every policy's randomness.
    pub seed: u64,
    /// Capability every task requires (inputs over 4096 tokens also need `long-context`).
    pub base_capability: String,
    /// Model a KV prefix cache per node.
    pub prefix_cache: bool,
    /// Nodes admit tasks only while their tokens fit the node's KV memory.
    pub kv_admission: bool,
    /// Put each task's SLO in its `max_latency_ms` (which the `switchyard` router treats as
    /// a limit on its predicted latency); off, tasks carry no latency limit.
    pub slo_in_task: bool,
    /// A load spike: the arrival rate multiplied inside one window (see
    /// [`Spike`]).
    pub spike: Option<Spike>,
    /// Which gateway the policies run behind (see [`GatewayModel`]).
    pub gateway: GatewayModel,
}

/// The gateway in front of the policies.
///
/// * [`Shared`](GatewayModel::Shared) (the default): every policy runs behind the same
///   gateway: the same queue per capability set, the same strict priority, the same
///   tenant fairness and the same shedding of requests that can no longer meet their SLO.
///   A policy only chooses the node, among the capable nodes that can start the task at
///   once (a free slot and, with KV admission, room for its tokens); while there is none
///   the task waits at the gateway and is offered again when capacity frees, so no node
///   queues work. (The router reads its own ledgers, not the offered nodes: a pick of a
///   node without room is withdrawn and the task waits.) The switchyard router runs with
///   every class allowed the whole of each node (no per-class headroom) and its own
///   refusals (no route predicted within the SLO) wait like any other, so only the shared
///   gateway sheds: what differs between the policies is the routing.
/// * [`PerPolicy`](GatewayModel::PerPolicy): each policy as its system ships: the peers
///   dispatch at once and a full node queues without bound; switchyard waits and sheds by
///   its own admission (per-class headroom, no route within the SLO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GatewayModel {
    /// The same gateway model for every policy.
    #[default]
    Shared,
    /// Each policy's own admission behaviour.
    PerPolicy,
}

impl GatewayModel {
    /// `"shared"` or `"per-policy"` (the CLI's and the JSON's spelling).
    pub fn name(self) -> &'static str {
        match self {
            GatewayModel::Shared => "shared",
            GatewayModel::PerPolicy => "per-policy",
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            load: 1.0,
            seed: 1,
            base_capability: "code".into(),
            prefix_cache: true,
            kv_admission: true,
            slo_in_task: true,
            spike: None,
            gateway: GatewayModel::Shared,
        }
    }
}

/// One request as the simulator replays it.
#[derive(Debug, Clone, PartialEq)]
pub struct SimTask {
    /// Position in the workload (also the task's id).
    pub index: usize,
    /// The task the router sees (requirements, priority, tenant, latency limit).
    pub task: Task,
    /// Arrival, virtual ns.
    pub arrival_ns: u64,
    /// Prefix-block ids, 512 tokens each.
    pub blocks: Vec<u64>,
    /// Latency SLO, ms (0 when no node can serve the task).
    pub slo_ms: f64,
    /// Index of its capability class in [`Workload::classes`].
    pub class: usize,
}

/// A trace turned into tasks for one fleet.
#[derive(Debug, Clone)]
pub struct Workload {
    /// The trace's name (for reports).
    pub name: String,
    /// The fleet.
    pub fleet: FleetConfig,
    /// The tasks, in arrival order.
    pub tasks: Vec<SimTask>,
    /// For each distinct set of required capabilities, the nodes offering it, ascending.
    pub classes: Vec<Vec<usize>>,
    /// Whether the trace carried `hash_ids`.
    pub has_prefixes: bool,
}

/// The SLO rule: 5 × the unloaded service time on the fastest of `candidates` + 1 s (0 when
/// there is no candidate).
pub fn slo_ms(fleet: &FleetConfig, candidates: &[usize], input: u32, output: u32) -> f64 {
    candidates
        .iter()
        .map(|&i| fleet.nodes[i].service_time_ms(input, output))
        .min_by(f64::total_cmp)
        .map_or(0.0, |fastest| 5.0 * fastest + 1000.0)
}

impl Workload {
    /// Builds the tasks of `rows` for `fleet`, deterministically from `cfg.seed`.
    ///
    /// # Errors
    /// [`SimError::InvalidLoad`], or [`SimError::Config`] for a fleet that does not build or
    /// a base capability it lacks.
    pub fn new(
        name: impl Into<String>,
        rows: &[TraceRow],
        fleet: FleetConfig,
        cfg: &SimConfig,
    ) -> Result<Self, SimError> {
        if !(cfg.load.is_finite() && cfg.load > 0.0) {
            return Err(SimError::InvalidLoad(cfg.load));
        }
        let router = fleet.router(cfg.seed)?;
        let synthesized = synthesize(&router, rows, &cfg.base_capability, cfg.seed)?;
        let node_caps = fleet
            .nodes
            .iter()
            .map(|n| router.resolve(&n.capabilities))
            .collect::<Result<Vec<CapSet>, _>>()?;
        let mut class_caps: Vec<CapSet> = Vec::new();
        let mut classes: Vec<Vec<usize>> = Vec::new();
        let mut tasks = Vec::with_capacity(rows.len());
        for (i, (row, task)) in rows.iter().zip(synthesized).enumerate() {
            let req = task.constraints.required;
            let class = match class_caps.iter().position(|c| *c == req) {
                Some(c) => c,
                None => {
                    class_caps.push(req);
                    classes.push(
                        (0..node_caps.len())
                            .filter(|&n| node_caps[n].contains_all(&req))
                            .collect(),
                    );
                    classes.len() - 1
                }
            };
            let slo = slo_ms(&fleet, &classes[class], row.input_tokens, row.output_tokens);
            let task = if slo > 0.0 && cfg.slo_in_task {
                task.max_latency_ms(slo.ceil().min(u32::MAX as f64 - 1.0) as u32)
            } else {
                task
            };
            let blocks = if row.hash_ids.is_empty() {
                // Unique per request: (1 << 63) | index << 20 | block.
                let n = row.input_tokens.div_ceil(BLOCK_TOKENS).min(1 << 20) as u64;
                (0..n).map(|b| (1 << 63) | ((i as u64) << 20) | b).collect()
            } else {
                row.hash_ids.clone()
            };
            tasks.push(SimTask {
                index: i,
                task,
                arrival_ns: {
                    let t = (row.arrival_ms as f64 * 1e6 / cfg.load).round() as u64;
                    cfg.spike.map_or(t, |s| s.warp_ns(t))
                },
                blocks,
                slo_ms: slo,
                class,
            });
        }
        Ok(Self {
            name: name.into(),
            fleet,
            tasks,
            classes,
            has_prefixes: rows.iter().any(|r| !r.hash_ids.is_empty()),
        })
    }

    /// The nodes that can serve `task`.
    pub fn candidates(&self, task: &SimTask) -> &[usize] {
        &self.classes[task.class]
    }
}

/// Where and how hard a load spike hits: the trace's arrival rate multiplied inside one
/// window of virtual time.
///
/// The spike compresses time rather than inventing requests: the trace's requests that
/// arrive in `[start, start + factor × seconds)` (after `--load`) are replayed within
/// `[start, start + seconds)`, so the window sees `factor` times the trace's rate, and every
/// later request moves earlier by `(factor − 1) × seconds`. The workload stays the trace's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spike {
    /// Start, virtual seconds (after `--load` scaling).
    pub start_s: f64,
    /// Length, virtual seconds.
    pub seconds: f64,
    /// Arrival-rate multiplier inside the window.
    pub factor: f64,
}

impl Spike {
    /// Parses `START:SECONDS:FACTOR` (e.g. `300:60:4`).
    ///
    /// # Errors
    /// A message naming the part that is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let [start, seconds, factor] = parts[..] else {
            return Err(format!(
                "spike {s:?}: expected START:SECONDS:FACTOR, e.g. 300:60:4"
            ));
        };
        let num = |what: &str, v: &str| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("spike {s:?}: {what} {v:?} is not a finite number"))
        };
        let spike = Self {
            start_s: num("START", start)?,
            seconds: num("SECONDS", seconds)?,
            factor: num("FACTOR", factor)?,
        };
        if spike.start_s < 0.0 || spike.seconds <= 0.0 || spike.factor < 1.0 {
            return Err(format!(
                "spike {s:?}: needs START >= 0, SECONDS > 0 and FACTOR >= 1"
            ));
        }
        Ok(spike)
    }

    /// Maps an arrival (virtual ns, after `--load`) to its time with the spike.
    pub fn warp_ns(&self, t: u64) -> u64 {
        let (s, d) = (self.start_s * 1e9, self.seconds * 1e9);
        let t = t as f64;
        let out = if t < s {
            t
        } else if t < s + self.factor * d {
            s + (t - s) / self.factor
        } else {
            t - (self.factor - 1.0) * d
        };
        out.round() as u64
    }

    pub(crate) fn window_ns(&self) -> (u64, u64) {
        let s = (self.start_s * 1e9) as u64;
        (s, s + (self.seconds * 1e9) as u64)
    }
}

#[cfg(all(test, not(switchyard_loom)))]
mod test {
    use super::*;

    #[test]
    fn parse_and_warp() {
        let s = Spike::parse("10:5:3").unwrap();
        assert_eq!(
            s,
            Spike {
                start_s: 10.0,
                seconds: 5.0,
                factor: 3.0
            }
        );
        let ns = |x: f64| (x * 1e9) as u64;
        assert_eq!(s.warp_ns(ns(4.0)), ns(4.0), "before: unchanged");
        assert_eq!(s.warp_ns(ns(10.0)), ns(10.0));
        assert_eq!(
            s.warp_ns(ns(16.0)),
            ns(12.0),
            "inside: compressed three times"
        );
        assert_eq!(s.warp_ns(ns(25.0)), ns(15.0), "the window's end");
        assert_eq!(s.warp_ns(ns(30.0)), ns(20.0), "after: shifted by 10 s");
        for bad in ["1:2", "a:1:2", "1:0:2", "1:1:0.5", "-1:1:2", "1:1:inf"] {
            assert!(Spike::parse(bad).is_err(), "{bad}");
        }
    }
}
