//! The event loop: the simulated fleet's state, the steps of one event, and the run's
//! report.
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Instant;

use hdrhistogram::Histogram;

use switchyard::fairness::{token_work, FairQueue};

use crate::cache::{PrefixCache, BLOCK_TOKENS};
use crate::fleet::service_time_ms;
use crate::policy::{Decision, NodeStatus, Policy, View};
use crate::record::{ClassReport, DecisionNs, PolicyReport, SimOutcome, TaskRecord, TaskStatus};
use crate::series::{sample_interval_ns, Series};
use crate::workload::{GatewayModel, SimConfig, Workload};

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
    /// Scratch: the capable nodes with room for the task being decided.
    room: Vec<usize>,
    /// Per node, busy sequence-time (as `busy`) up to the last arrival.
    busy_arrivals: Vec<f64>,
    /// The last arrival, virtual ns.
    last_arrival: u64,
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

/// Arrivals between two calls of a run's progress callback.
pub const PROGRESS_EVERY: usize = 1024;

/// [`run_policy`], calling `progress(arrived)` every [`PROGRESS_EVERY`] arrivals and once
/// at the end with the number of tasks (for a progress bar).
///
/// [`run_policy`]: super::run_policy
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
        room: Vec::with_capacity(n),
        busy_arrivals: vec![0.0; n],
        last_arrival: w.tasks.last().map_or(0, |t| t.arrival_ns),
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
                routable: false,
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
        let w = self.w;
        let t = &w.tasks[i];
        let candidates = &w.classes[t.class];
        let shared = self.cfg.gateway == GatewayModel::Shared;
        // The shared gateway offers the policy the capable nodes that can start the task now,
        // and holds the task while there is none.
        let mut room = std::mem::take(&mut self.room);
        room.clear();
        if shared {
            room.extend(candidates.iter().copied().filter(|&n| self.has_room(n, i)));
            if room.is_empty() && !candidates.is_empty() {
                self.room = room;
                return Decision::Wait;
            }
        }
        let view = View {
            now_ns: now,
            candidates: if shared { &room } else { candidates },
            nodes: &self.nodes,
        };
        let start = self.stopwatch.raw();
        let d = policy.pick(t, &view);
        let ns = self.stopwatch.delta_as_nanos(start, self.stopwatch.raw());
        self.room = room;
        self.decide_ns += ns;
        self.decisions.saturating_record(ns.max(1));
        match d {
            // A pick outside the capable set is a policy bug: the task cannot be served.
            Decision::Dispatch(n) if candidates.binary_search(&n).is_err() => Decision::Fail,
            // The shared gateway: a node that cannot start the task now does not queue it
            // (the router, which reads its own ledgers rather than the offered nodes, may
            // pick one); the task waits at the gateway and the policy is asked again later.
            Decision::Dispatch(n) if shared && !self.has_room(n, i) => {
                policy.withdraw(t);
                Decision::Wait
            }
            // Only the shared gateway sheds (what can no longer meet its SLO).
            Decision::Shed if shared => Decision::Wait,
            d => d,
        }
    }

    /// Whether node `n` would start task `i` now (nothing queued before it, a free slot,
    /// and with KV admission room for its tokens).
    fn has_room(&self, n: usize, i: usize) -> bool {
        self.queues[n].is_empty() && self.can_start(n, i)
    }

    /// Whether some capable node could start task `i` now and finish it within its SLO,
    /// at the node's occupancy and with its cache as they are.
    fn routable(&self, i: usize) -> bool {
        let t = &self.w.tasks[i];
        if t.slo_ms <= 0.0 {
            return false;
        }
        self.w.classes[t.class].iter().any(|&n| {
            let node = &self.nodes[n];
            if !self.has_room(n, i) {
                return false;
            }
            let u = node.running as f64 / node.spec.max_concurrency.max(1) as f64;
            let hit = node
                .cache
                .as_ref()
                .map_or(0, |c| c.matched_prefix(&t.blocks));
            let input = t.task.input_tokens;
            let saved = (hit as u64 * BLOCK_TOKENS as u64).min(input as u64) as u32;
            service_time_ms(&node.spec, input - saved, t.task.output_tokens, u) <= t.slo_ms
        })
    }

    fn arrive(&mut self, policy: &mut dyn Policy, i: usize, now: u64) {
        self.records[i].routable = self.routable(i);
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
        let within = now.min(self.last_arrival).saturating_sub(from);
        self.busy_arrivals[n] += busy * within as f64;
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
        let (mut routable, mut routed_well) = (0u64, 0u64);
        for (t, r) in self.w.tasks.iter().zip(&self.records) {
            routable += r.routable as u64;
            routed_well += (r.routable && r.status == TaskStatus::Completed && r.slo_met) as u64;
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
        // Each node's busy sequence-time over its slots × `window` ns.
        let per_node = |busy: &[f64], window: u64| -> Vec<f64> {
            self.nodes
                .iter()
                .zip(busy)
                .map(|(s, b)| {
                    if window == 0 {
                        0.0
                    } else {
                        b / (s.spec.max_concurrency.max(1) as f64 * window as f64)
                    }
                })
                .collect()
        };
        let node_utilization = per_node(&self.busy, end);
        let span = self
            .last_arrival
            .saturating_sub(self.w.tasks.first().map_or(0, |t| t.arrival_ns));
        // Busy time before the first arrival is zero, so dividing by the span is exact.
        let arrival_node_utilization = per_node(&self.busy_arrivals, span);
        let arrival_utilization = if arrival_node_utilization.is_empty() {
            0.0
        } else {
            arrival_node_utilization.iter().sum::<f64>() / arrival_node_utilization.len() as f64
        };
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
            arrival_utilization,
            arrival_balance_deviation: switchyard::metrics::balance_deviation(
                &arrival_node_utilization,
            ),
            arrival_node_utilization,
            prefix_hit_rate: if self.lookups == 0 {
                0.0
            } else {
                self.hits as f64 / self.lookups as f64
            },
            routing_accuracy: if routable == 0 {
                1.0
            } else {
                routed_well as f64 / routable as f64
            },
            routable,
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
pub(super) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
