//! What one run produces: every task's fate ([`TaskRecord`]), the run's summary
//! ([`PolicyReport`]) and its time series, together a [`SimOutcome`].
use crate::series::Series;

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskStatus {
    /// Served.
    Completed,
    /// No capable node.
    Failed,
    /// Refused by the policy, or still waiting at the gateway when the run ended.
    Shed,
}

/// One task's fate in a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskRecord {
    /// How it ended.
    pub status: TaskStatus,
    /// The node it was sent to.
    pub node: Option<usize>,
    /// Time to first token from arrival, ms (completed tasks).
    pub ttft_ms: f64,
    /// End-to-end latency from arrival, ms (completed tasks).
    pub e2e_ms: f64,
    /// Prefix blocks found in the node's cache.
    pub hit_blocks: usize,
    /// Completed within its SLO.
    pub slo_met: bool,
    /// When it arrived, some capable node could have started it at once and finished it
    /// within its SLO (judged in hindsight by the simulator: the node's occupancy and cache
    /// then): the tasks [`PolicyReport::routing_accuracy`] is taken over.
    pub routable: bool,
}

/// A run's report, every task's record and the run's time series.
#[derive(Debug, Clone)]
pub struct SimOutcome {
    /// The summary.
    pub report: PolicyReport,
    /// Per task, in workload order.
    pub records: Vec<TaskRecord>,
    /// Utilisation per node, shed and failed tasks, over virtual time.
    pub series: Series,
}

/// Decision latency percentiles, real nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecisionNs {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
}

/// Counts of one priority class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClassReport {
    /// Tasks of the class.
    pub tasks: u64,
    /// Served.
    pub completed: u64,
    /// No capable node.
    pub failed: u64,
    /// Refused or never placed.
    pub shed: u64,
    /// Served within their SLO.
    pub slo_met: u64,
}

/// One policy's results. Latencies are virtual milliseconds over completed tasks
/// (nearest-rank percentiles); `decision_ns`, `decision_time_ns` and `event_loop_ns` are
/// the only measured, non-deterministic figures.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyReport {
    /// The policy's name.
    pub policy: String,
    /// Tasks in the workload.
    pub tasks: u64,
    /// Served.
    pub completed: u64,
    /// No capable node.
    pub failed: u64,
    /// Refused by the policy, or still waiting at the gateway when the run ended.
    pub shed: u64,
    /// The same counts per priority class, indexed by [`Priority::index`].
    ///
    /// [`Priority::index`]: switchyard::Priority::index
    pub by_class: [ClassReport; 4],
    /// From the first arrival to the last event, virtual seconds.
    pub makespan_s: f64,
    /// Completed tasks per virtual second of makespan.
    pub throughput_per_s: f64,
    /// Time to first token, median.
    pub ttft_p50_ms: f64,
    /// Time to first token, 99th percentile.
    pub ttft_p99_ms: f64,
    /// End-to-end latency, median.
    pub e2e_p50_ms: f64,
    /// End-to-end latency, 99th percentile.
    pub e2e_p99_ms: f64,
    /// Share of all tasks completed within their SLO.
    pub slo_attainment: f64,
    /// The busiest node's time-averaged utilisation over the fleet mean, minus 1.
    pub balance_deviation: f64,
    /// Mean over nodes of time-averaged utilisation (busy sequences / `max_concurrency`,
    /// integrated over the makespan).
    pub utilization: f64,
    /// Each node's time-averaged utilisation, in fleet order.
    pub node_utilization: Vec<f64>,
    /// Mean over nodes of utilisation while the trace's requests arrive (from the first
    /// arrival to the last; `utilization` also counts the drain after the last arrival).
    pub arrival_utilization: f64,
    /// Each node's utilisation while the trace's requests arrive, in fleet order.
    pub arrival_node_utilization: Vec<f64>,
    /// `balance_deviation` over the arrival window: the balance of the load while there is
    /// load to route. The whole-run figure also counts the drain after the last arrival,
    /// when no decision is made and a node finishing one long request alone looks busiest.
    pub arrival_balance_deviation: f64,
    /// Prefix blocks found in a node's cache over blocks looked up.
    pub prefix_hit_rate: f64,
    /// Routing accuracy: of the routable tasks (those some capable node could have started
    /// at once on arrival and finished within their SLO, see [`TaskRecord::routable`]), the
    /// share whose route met all their constraints (the required capabilities, which every
    /// route meets, and the latency limit) and their SLO (1 when none was routable).
    pub routing_accuracy: f64,
    /// Tasks that were routable.
    pub routable: u64,
    /// Σ over completed tasks of (input + output tokens) / 1000 × the node's price.
    pub cost: f64,
    /// Decisions timed (retries from the gateway queue included).
    pub decisions: u64,
    /// Decision latency of the policy's `pick`, real ns.
    pub decision_ns: DecisionNs,
    /// Real time spent inside the policy's `pick` calls, summed, ns.
    pub decision_time_ns: u64,
    /// Real time of the whole event loop (decisions included), ns.
    pub event_loop_ns: u64,
}

impl PolicyReport {
    /// Decisions per second of real time spent inside the policy (0 when none was timed).
    pub fn decisions_per_s(&self) -> f64 {
        per_second(self.decisions, self.decision_time_ns)
    }

    /// Tasks replayed per second of real time in the whole event loop.
    pub fn tasks_per_s(&self) -> f64 {
        per_second(self.tasks, self.event_loop_ns)
    }
}

fn per_second(count: u64, ns: u64) -> f64 {
    if ns == 0 {
        0.0
    } else {
        count as f64 * 1e9 / ns as f64
    }
}
