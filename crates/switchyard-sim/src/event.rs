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
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::time::Instant;

use hdrhistogram::Histogram;

use switchyard::fairness::{token_work, FairQueue};
use switchyard::CapSet;
use switchyard::ConfigError;
use switchyard::Task;

use super::cache::{PrefixCache, BLOCK_TOKENS};
use super::fleet::{service_time_ms, synthesize, FleetConfig};
use super::policy::{make_policy, Decision, NodeStatus, Policy, View, POLICY_NAMES};
use super::report::{ClassReport, DecisionNs, PolicyReport, Report};
use super::series::{sample_interval_ns, Series};
use super::trace::{TraceError, TraceRow};

/// Why a simulation could not run.
#[derive(Debug, Clone, PartialEq)]
pub enum SimError {
    /// The trace could not be read.
    Trace(TraceError),
    /// The fleet or a capability name is invalid.
    Config(ConfigError),
    /// A policy name that [`make_policy`] does not know.
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
    /// [`Spike`](crate::Spike)).
    pub spike: Option<super::spike::Spike>,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Event {
    at: u64,
    /// 0 = finish, 1 = arrival: finishes free capacity before same-instant arrivals.
    kind: u8,
    seq: u64,
    task: usize,
    node: usize,
}

struct Engine<'w> {
    w: &'w Workload,
    cfg: &'w SimConfig,
    nodes: Vec<NodeStatus>,
    queues: Vec<VecDeque<usize>>,
    tokens: Vec<u64>,
    kv_limit: Vec<u64>,
    busy: Vec<f64>,
    last_change: Vec<u64>,
    heap: BinaryHeap<Reverse<Event>>,
    seq: u64,
    /// Per capability set, one FIFO per priority class (critical first).
    gateway: Vec<[FairQueue<usize>; 4]>,
    records: Vec<TaskRecord>,
    dispatched_at: Vec<u64>,
    lookups: u64,
    hits: u64,
    cost: f64,
    decisions: Histogram<u64>,
    /// Σ of the timed `pick` calls, real ns.
    decide_ns: u64,
    stopwatch: quanta::Clock,
    series: Series,
    last_tick: Option<u64>,
    end_ns: u64,
}

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

/// Arrivals between two calls of a run's progress callback.
pub const PROGRESS_EVERY: usize = 1024;

/// [`run_policy`], calling `progress(arrived)` every [`PROGRESS_EVERY`] arrivals and once
/// at the end with the number of tasks (for a progress bar).
pub fn run_policy_with_progress(
    workload: &Workload,
    policy: &mut dyn Policy,
    cfg: &SimConfig,
    progress: &mut dyn FnMut(usize),
) -> SimOutcome {
    let w = workload;
    let nodes: Vec<NodeStatus> = w
        .fleet
        .nodes
        .iter()
        .map(|s| {
            NodeStatus::idle(
                s.clone(),
                cfg.prefix_cache.then(|| PrefixCache::for_node(s)),
            )
        })
        .collect();
    let n = nodes.len();
    let mut e = Engine {
        w,
        cfg,
        queues: vec![VecDeque::new(); n],
        tokens: vec![0; n],
        kv_limit: nodes
            .iter()
            .map(|s| {
                let s = &s.spec;
                let by_mem = if s.kv_mb_per_1k_tokens > 0.0 {
                    s.memory_mb as f64 / s.kv_mb_per_1k_tokens * 1000.0
                } else {
                    f64::INFINITY
                };
                by_mem.min(s.max_tokens_in_flight as f64) as u64
            })
            .collect(),
        nodes,
        busy: vec![0.0; n],
        last_change: vec![0; n],
        heap: BinaryHeap::with_capacity(w.tasks.len() * 2),
        seq: 0,
        gateway: (0..w.classes.len())
            .map(|_| std::array::from_fn(|_| FairQueue::new()))
            .collect(),
        records: vec![
            TaskRecord {
                // Every task is settled below; one never settled was never placed.
                status: TaskStatus::Shed,
                node: None,
                ttft_ms: 0.0,
                e2e_ms: 0.0,
                hit_blocks: 0,
                slo_met: false,
            };
            w.tasks.len()
        ],
        dispatched_at: vec![0; w.tasks.len()],
        lookups: 0,
        hits: 0,
        cost: 0.0,
        decisions: crate::rng::new_histogram(),
        decide_ns: 0,
        stopwatch: quanta::Clock::new(),
        series: Series::new(
            sample_interval_ns(w.tasks.last().map_or(0, |t| t.arrival_ns)),
            n,
        ),
        last_tick: None,
        end_ns: 0,
    };
    for t in &w.tasks {
        e.push(t.arrival_ns, 1, t.index, 0);
    }
    let started = Instant::now();
    let mut arrived = 0usize;
    while let Some(Reverse(ev)) = e.heap.pop() {
        e.end_ns = e.end_ns.max(ev.at);
        e.tick(policy, ev.at);
        if ev.kind == 1 {
            e.arrive(policy, ev.task, ev.at);
            arrived += 1;
            if arrived % PROGRESS_EVERY == 0 {
                progress(arrived);
            }
        } else {
            e.finish(policy, ev.node, ev.task, ev.at);
        }
    }
    let loop_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    progress(w.tasks.len());
    e.report(policy.name(), loop_ns)
}

impl Engine<'_> {
    fn push(&mut self, at: u64, kind: u8, task: usize, node: usize) {
        self.seq += 1;
        self.heap.push(Reverse(Event {
            at,
            kind,
            seq: self.seq,
            task,
            node,
        }));
    }

    fn tick(&mut self, policy: &mut dyn Policy, now: u64) {
        let Some(every) = policy.tick_interval_ns().filter(|&d| d > 0) else {
            return;
        };
        let at = now / every * every;
        if self.last_tick.is_some_and(|l| l >= at) {
            return;
        }
        self.last_tick = Some(at);
        policy.on_tick(at);
        self.drain_gateway(policy, at);
    }

    fn decide(&mut self, policy: &mut dyn Policy, i: usize, now: u64) -> Decision {
        let t = &self.w.tasks[i];
        let candidates = &self.w.classes[t.class];
        let view = View {
            now_ns: now,
            candidates,
            nodes: &self.nodes,
        };
        let start = self.stopwatch.raw();
        let d = policy.pick(t, &view);
        let ns = self.stopwatch.delta_as_nanos(start, self.stopwatch.raw());
        self.decide_ns += ns;
        self.decisions.saturating_record(ns.max(1));
        match d {
            // A pick outside the capable set is a policy bug: the task cannot be served.
            Decision::Dispatch(n) if candidates.binary_search(&n).is_err() => Decision::Fail,
            d => d,
        }
    }

    fn arrive(&mut self, policy: &mut dyn Policy, i: usize, now: u64) {
        let class = self.w.tasks[i].class;
        let prio = self.w.tasks[i].task.constraints.priority.index();
        // Behind tasks of its own or a higher class that already wait; ahead of lower ones.
        if self.gateway[class][..=prio].iter().any(|q| !q.is_empty()) {
            self.enqueue(i);
            return;
        }
        match self.decide(policy, i, now) {
            Decision::Wait => self.enqueue(i),
            d => self.settle(i, d, now),
        }
    }

    /// Applies a decision other than `Wait`.
    fn settle(&mut self, i: usize, d: Decision, now: u64) {
        match d {
            Decision::Dispatch(n) => self.send_to_node(n, i, now),
            Decision::Fail => {
                self.records[i].status = TaskStatus::Failed;
                self.series.failed_at(now);
            }
            Decision::Shed | Decision::Wait => {
                self.records[i].status = TaskStatus::Shed;
                self.series.shed_at(now);
            }
        }
    }

    /// Queues task `i` at the gateway: its capability set's queue for its class, shared
    /// between tenants by token work (VTC, see [`FairQueue`]).
    fn enqueue(&mut self, i: usize) {
        let t = &self.w.tasks[i];
        let (class, prio) = (t.class, t.task.constraints.priority.index());
        let work = token_work(t.task.input_tokens, t.task.output_tokens);
        self.gateway[class][prio].push(t.task.tenant, work, i);
    }

    /// Whether waiting task `i` can no longer meet its SLO even if it started now on its
    /// fastest node, unloaded (the SLO is 5 × that time + 1 s): then the gateway sheds it
    /// rather than spend capacity on it. Only when the router is given the SLO.
    fn hopeless(&self, i: usize, now: u64) -> bool {
        let t = &self.w.tasks[i];
        if !self.cfg.slo_in_task || t.slo_ms <= 0.0 {
            return false;
        }
        let fastest_ms = (t.slo_ms - 1000.0) / 5.0;
        let waited_ms = now.saturating_sub(t.arrival_ns) as f64 / 1e6;
        waited_ms + fastest_ms > t.slo_ms
    }

    /// Retries waiting tasks, highest priority class first, within each capability set
    /// strictly (see below); sheds those that can no longer meet their SLO.
    fn drain_gateway(&mut self, policy: &mut dyn Policy, now: u64) {
        // Strict priority within each capability set: while a task of some class still
        // waits for capacity, no task of a lower class of the same set takes capacity that
        // frees up (a large critical task would otherwise starve behind a stream of smaller
        // lower-class tasks that each fit the gap). Other sets go on: their tasks may be
        // unable to use what the waiting task needs at all.
        for class in 0..self.gateway.len() {
            for prio in 0..4 {
                let mut blocked = false;
                while let Some(&i) = self.gateway[class][prio].peek() {
                    if self.hopeless(i, now) {
                        // Shed, not served: its tenant is not charged.
                        if let Some(t) = self.gateway[class][prio].take() {
                            t.into_inner();
                        }
                        self.settle(i, Decision::Shed, now);
                        continue;
                    }
                    match self.decide(policy, i, now) {
                        Decision::Wait => {
                            blocked = true;
                            break;
                        }
                        d => {
                            self.gateway[class][prio].pop();
                            self.settle(i, d, now);
                        }
                    }
                }
                if blocked {
                    break;
                }
            }
        }
    }

    fn can_start(&self, n: usize, i: usize) -> bool {
        let node = &self.nodes[n];
        node.running < node.spec.max_concurrency
            && (!self.cfg.kv_admission
                || node.running == 0
                || self.tokens[n] + self.w.tasks[i].task.total_tokens() <= self.kv_limit[n])
    }

    fn send_to_node(&mut self, n: usize, i: usize, now: u64) {
        self.dispatched_at[i] = now;
        self.records[i].node = Some(n);
        if self.queues[n].is_empty() && self.can_start(n, i) {
            self.start(n, i, now);
        } else {
            self.queues[n].push_back(i);
            self.nodes[n].queued += 1;
        }
    }

    fn integrate(&mut self, n: usize, now: u64) {
        let from = self.last_change[n];
        let running = self.nodes[n].running;
        // Busy sequences, or the KV memory's share of the batch when that binds first (long
        // prompts fill the KV cache before the sequence slots): utilisation is the larger of
        // the two shares, as the router's ledger counts it.
        let mut busy = running as f64;
        if self.cfg.kv_admission && self.kv_limit[n] > 0 {
            let conc = self.nodes[n].spec.max_concurrency.max(1) as f64;
            let kv = self.tokens[n] as f64 / self.kv_limit[n] as f64 * conc;
            busy = busy.max(kv.min(conc));
        }
        let dt = now.saturating_sub(from);
        self.busy[n] += busy * dt as f64;
        self.series.add_busy(n, from, now, busy);
        self.last_change[n] = now;
    }

    fn start(&mut self, n: usize, i: usize, now: u64) {
        self.integrate(n, now);
        let t = &self.w.tasks[i];
        let node = &mut self.nodes[n];
        let u = node.running as f64 / node.spec.max_concurrency.max(1) as f64;
        let mut hit = 0;
        if let Some(c) = node.cache.as_mut() {
            hit = c.matched_prefix(&t.blocks);
            self.lookups += t.blocks.len() as u64;
            self.hits += hit as u64;
            c.touch(&t.blocks);
        }
        let input = t.task.input_tokens;
        let saved = (hit as u64 * BLOCK_TOKENS as u64).min(input as u64) as u32;
        let prefill = service_time_ms(&node.spec, input - saved, 0, u);
        let total = service_time_ms(&node.spec, input - saved, t.task.output_tokens, u);
        let wait_ms = now.saturating_sub(t.arrival_ns) as f64 / 1e6;
        node.running += 1;
        self.tokens[n] += t.task.total_tokens();
        let r = &mut self.records[i];
        r.ttft_ms = wait_ms + prefill;
        r.e2e_ms = wait_ms + total;
        r.hit_blocks = hit;
        let done = now + ((total * 1e6).round() as u64).max(1);
        self.push(done, 0, i, n);
    }

    fn finish(&mut self, policy: &mut dyn Policy, n: usize, i: usize, now: u64) {
        self.integrate(n, now);
        let t = &self.w.tasks[i];
        let node = &mut self.nodes[n];
        node.running -= 1;
        self.tokens[n] -= t.task.total_tokens();
        self.cost += t.task.total_tokens() as f64 / 1000.0 * node.spec.cost_per_1k_tokens;
        let latency_ms = now.saturating_sub(self.dispatched_at[i]) as f64 / 1e6;
        node.ewma_latency_ms = if node.ewma_latency_ms == 0.0 {
            latency_ms
        } else {
            node.ewma_latency_ms + 0.2 * (latency_ms - node.ewma_latency_ms)
        };
        let r = &mut self.records[i];
        r.status = TaskStatus::Completed;
        r.slo_met = r.e2e_ms <= t.slo_ms;
        policy.on_finish(t, n, latency_ms, now);
        while let Some(&j) = self.queues[n].front() {
            if !self.can_start(n, j) {
                break;
            }
            self.queues[n].pop_front();
            self.nodes[n].queued -= 1;
            self.start(n, j, now);
        }
        self.drain_gateway(policy, now);
    }

    fn report(mut self, name: &str, loop_ns: u64) -> SimOutcome {
        let end = self.end_ns;
        for n in 0..self.nodes.len() {
            self.integrate(n, end);
        }
        // Tasks still waiting at the gateway are shed when the run ends.
        let waiting: usize = self.gateway.iter().flatten().map(FairQueue::len).sum();
        for _ in 0..waiting {
            self.series.shed_at(end);
        }
        let capacity: Vec<u32> = self.nodes.iter().map(|n| n.spec.max_concurrency).collect();
        self.series.finish(end, &capacity);
        let mut by_class = [ClassReport::default(); 4];
        let (mut ttft, mut e2e) = (Vec::new(), Vec::new());
        for (t, r) in self.w.tasks.iter().zip(&self.records) {
            let c = &mut by_class[t.task.constraints.priority.index()];
            c.tasks += 1;
            match r.status {
                TaskStatus::Completed => {
                    c.completed += 1;
                    c.slo_met += r.slo_met as u64;
                    ttft.push(r.ttft_ms);
                    e2e.push(r.e2e_ms);
                }
                TaskStatus::Failed => c.failed += 1,
                TaskStatus::Shed => c.shed += 1,
            }
        }
        ttft.sort_by(f64::total_cmp);
        e2e.sort_by(f64::total_cmp);
        let node_utilization: Vec<f64> = self
            .nodes
            .iter()
            .zip(&self.busy)
            .map(|(s, b)| {
                if end == 0 {
                    0.0
                } else {
                    b / (s.spec.max_concurrency.max(1) as f64 * end as f64)
                }
            })
            .collect();
        let sum = |f: fn(&ClassReport) -> u64| by_class.iter().map(f).sum::<u64>();
        let tasks = self.w.tasks.len();
        let completed = sum(|c| c.completed);
        let d = &self.decisions;
        let report = PolicyReport {
            policy: name.to_string(),
            tasks: tasks as u64,
            completed,
            failed: sum(|c| c.failed),
            shed: sum(|c| c.shed),
            by_class,
            makespan_s: end as f64 / 1e9,
            throughput_per_s: if end == 0 {
                0.0
            } else {
                completed as f64 / (end as f64 / 1e9)
            },
            ttft_p50_ms: percentile(&ttft, 0.50),
            ttft_p99_ms: percentile(&ttft, 0.99),
            e2e_p50_ms: percentile(&e2e, 0.50),
            e2e_p99_ms: percentile(&e2e, 0.99),
            slo_attainment: if tasks == 0 {
                0.0
            } else {
                sum(|c| c.slo_met) as f64 / tasks as f64
            },
            balance_deviation: switchyard::metrics::balance_deviation(&node_utilization),
            utilization: if node_utilization.is_empty() {
                0.0
            } else {
                node_utilization.iter().sum::<f64>() / node_utilization.len() as f64
            },
            node_utilization,
            prefix_hit_rate: if self.lookups == 0 {
                0.0
            } else {
                self.hits as f64 / self.lookups as f64
            },
            cost: self.cost,
            decisions: d.len(),
            decision_ns: DecisionNs {
                p50: d.value_at_quantile(0.5),
                p99: d.value_at_quantile(0.99),
                p999: d.value_at_quantile(0.999),
            },
            decision_time_ns: self.decide_ns,
            event_loop_ns: loop_ns,
        };
        SimOutcome {
            report,
            records: self.records,
            series: self.series,
        }
    }
}

/// Nearest-rank percentile of sorted values (0 for none).
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
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
        let mut p = make_policy(name, &workload.fleet, cfg.seed)?;
        outcomes.push(run_policy_with_progress(
            workload,
            p.as_mut(),
            cfg,
            &mut |arrived| progress(k, arrived),
        ));
    }
    Ok(outcomes)
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::policy::RoundRobin;
    use switchyard::NodeSpec;

    fn one_node(conc: u32) -> FleetConfig {
        FleetConfig {
            capabilities: vec!["code".into(), "long-context".into()],
            nodes: vec![NodeSpec::new("n0")
                .capabilities(["code", "long-context"])
                .max_concurrency(conc)
                .speed(10.0, 1_000.0, 100.0)],
        }
    }

    fn rows(spec: &[(u64, u32, u32, &[u64])]) -> Vec<TraceRow> {
        spec.iter()
            .map(|&(a, i, o, h)| TraceRow {
                arrival_ms: a,
                input_tokens: i,
                output_tokens: o,
                hash_ids: h.to_vec(),
            })
            .collect()
    }

    #[test]
    fn node_queue_waits_and_occupancy_slows() {
        let cfg = SimConfig {
            prefix_cache: false,
            ..SimConfig::default()
        };
        // Two slots; three tasks at t = 0: two run (the second at u = 1/2), one queues.
        let w = Workload::new(
            "t",
            &rows(&[(0, 1000, 10, &[]), (0, 1000, 10, &[]), (0, 1000, 10, &[])]),
            one_node(2),
            &cfg,
        )
        .unwrap();
        let out = run_policy(&w, &mut RoundRobin::default(), &cfg);
        let r = &out.records;
        let spec = &w.fleet.nodes[0];
        let st = |u| service_time_ms(spec, 1000, 10, u);
        assert!((r[0].e2e_ms - st(0.0)).abs() < 1e-9);
        assert!((r[1].e2e_ms - st(0.5)).abs() < 1e-9);
        // The third starts when the first finishes, with one other running.
        assert!((r[2].e2e_ms - (st(0.0) + st(0.5))).abs() < 1e-3);
        assert!((r[0].ttft_ms - service_time_ms(spec, 1000, 0, 0.0)).abs() < 1e-9);
        assert_eq!(out.report.completed, 3);
        // Utilisation: busy sequence-time over 2 slots × makespan.
        let busy = st(0.0) + st(0.5) + st(0.5);
        let want = busy / (2.0 * (st(0.0) + st(0.5)));
        assert!((out.report.utilization - want).abs() < 1e-6);
    }

    #[test]
    fn slo_rule_and_unique_blocks() {
        let cfg = SimConfig::default();
        let w = Workload::new("t", &rows(&[(0, 1025, 10, &[])]), one_node(1), &cfg).unwrap();
        let t = &w.tasks[0];
        let unloaded = 10.0 + 1025.0 + 100.0;
        assert!((t.slo_ms - (5.0 * unloaded + 1000.0)).abs() < 1e-9);
        assert_eq!(
            t.task.constraints.max_latency_ms,
            (5.0 * unloaded + 1000.0) as u32
        );
        assert_eq!(t.blocks.len(), 3);
        assert!(!w.has_prefixes);
        let bad = SimConfig {
            load: 0.0,
            ..SimConfig::default()
        };
        assert_eq!(
            Workload::new("t", &rows(&[(0, 1, 1, &[])]), one_node(1), &bad).unwrap_err(),
            SimError::InvalidLoad(0.0)
        );
    }

    #[test]
    fn kv_admission_holds_tasks_that_do_not_fit() {
        let mut fleet = one_node(8);
        fleet.nodes[0].max_tokens_in_flight = 1500;
        let r = rows(&[(0, 1000, 10, &[]), (0, 1000, 10, &[])]);
        let on = SimConfig {
            kv_admission: true,
            prefix_cache: false,
            ..SimConfig::default()
        };
        let w = Workload::new("t", &r, fleet, &on).unwrap();
        let out = run_policy(&w, &mut RoundRobin::default(), &on);
        let st = service_time_ms(&w.fleet.nodes[0], 1000, 10, 0.0);
        assert!((out.records[1].e2e_ms - 2.0 * st).abs() < 1e-3);
        let off = SimConfig {
            kv_admission: false,
            ..on
        };
        let out = run_policy(&w, &mut RoundRobin::default(), &off);
        assert!(out.records[1].e2e_ms < 1.5 * st);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
        assert_eq!(percentile(&[7.0], 0.0), 7.0);
    }
}
