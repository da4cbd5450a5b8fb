//! `simulate --speed X` (or `--fault`): replay a trace in real time through a real `Dispatcher`
//! whose backends are simulated.
//!
//! Time is compressed by `--speed`: a request arriving at trace time `t` is submitted at
//! real time `t / (speed × load)`, and a simulated backend holds its ticket for
//! `service_time / speed` real milliseconds, then completes it with the (uncompressed)
//! service time as its latency. The router, its snapshot, leases, histograms and control
//! thread are the real ones.
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use switchyard::metrics::balance_deviation;
use switchyard::{
    Backend, Clock, Completion, Dispatcher, HealthStatus, NodeSpec, Outcome, Priority, RouteError,
    RouteOptions, Router, SubmitError, Task, Ticket,
};
use switchyard_sim::{open_trace, service_time_ms, synthesize, FleetConfig};

use crate::faults::{Effect, Fault};

/// Most dispatcher workers a replay may ask for.
const MAX_WORKERS: usize = 256;
/// Longest real-time replay, seconds (a day).
const MAX_REPLAY_SECONDS: f64 = 86_400.0;

use crate::progress::Progress;
use crate::{Error, SimArgs};

struct Pending {
    due: Instant,
    seq: u64,
    node: usize,
    latency_ms: f64,
    outcome: Outcome,
    output_tokens: u32,
    ticket: Ticket,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(o.due, o.seq))
    }
}

/// Trace time: real time since the replay started × `speed × load`.
#[derive(Debug)]
struct TraceClock {
    start: Instant,
    rate: f64,
}

impl Clock for TraceClock {
    fn now_ns(&self) -> u64 {
        (self.start.elapsed().as_nanos() as f64 * self.rate) as u64
    }
}

/// Per-fault figures (the health issue's targets).
#[derive(Default)]
struct FaultStats {
    /// Tasks sent to the faulty node while the fault was on, before the router's snapshot
    /// had it ejected, and after (half-open probes).
    before_detection: AtomicU64,
    after_detection: AtomicU64,
}

/// What the simulated backends, their timer and the report share.
struct SimState {
    specs: Vec<NodeSpec>,
    in_flight: Vec<AtomicU64>,
    speed: f64,
    /// Trace seconds per real second (speed × load).
    trace_rate: f64,
    start: Instant,
    faults: Vec<Fault>,
    fault_stats: Vec<FaultStats>,
    router: Router,
    seq: AtomicU64,
    /// Tasks that failed over to another route, and how failed tasks ended.
    failovers: AtomicU64,
    ended: Mutex<HashMap<String, u64>>,
    /// Arrival of each task (by id = trace row), trace seconds.
    arrival_s: Vec<f64>,
    /// [arrived outside a total outage, inside one] × [completed, failed].
    by_window: [[AtomicU64; 2]; 2],
}

impl SimState {
    fn trace_now(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * self.trace_rate
    }

    /// Starts serving `ticket` on its route's head node: the service-time model, plus any
    /// fault on the node right now.
    fn serve(&self, ticket: Ticket, at: Instant) -> Option<Pending> {
        let node = ticket.route()?.head().0 as usize;
        let task = *ticket.task();
        let spec = &self.specs[node];
        let t = self.trace_now();
        let mut effect = None;
        for (f, stats) in self.faults.iter().zip(&self.fault_stats) {
            if f.hits(&spec.name, t) {
                effect = Some(f.effect);
                if f.effect == Effect::Down {
                    let snap = self.router.snapshot();
                    let ejected = snap.node_id(&spec.name).and_then(|id| snap.node_status(id))
                        == Some(HealthStatus::Failed);
                    let c = if ejected {
                        &stats.after_detection
                    } else {
                        &stats.before_detection
                    };
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        let busy = self.in_flight[node].fetch_add(1, Ordering::Relaxed) as f64;
        let u = busy / spec.max_concurrency as f64;
        // ±10 % deterministic jitter, so latencies are not all on the model's line.
        let jitter = 0.9
            + (task.id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f64 / (1u64 << 24) as f64
                * 0.2;
        let service = service_time_ms(spec, task.input_tokens, task.output_tokens, u) * jitter;
        let (latency_ms, outcome) = match effect {
            None => (service, Outcome::Success),
            Some(Effect::Slow(f)) => (service * f, Outcome::Success),
            Some(Effect::Down) => (5.0, Outcome::ServerError),
            Some(Effect::RateLimited) => (2.0, Outcome::RateLimited),
        };
        Some(Pending {
            due: at + Duration::from_secs_f64(latency_ms / 1000.0 / self.speed),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            node,
            latency_ms,
            outcome,
            output_tokens: task.output_tokens,
            ticket,
        })
    }

    /// Whether a down fault hits `node` now (a crash also fails the requests in flight).
    fn down_now(&self, node: usize) -> bool {
        let t = self.trace_now();
        let name = &self.specs[node].name;
        self.faults
            .iter()
            .any(|f| f.effect == Effect::Down && f.hits(name, t))
    }

    fn in_outage(&self, task: &Task) -> bool {
        let t = self.arrival_s.get(task.id as usize).copied().unwrap_or(0.0);
        self.faults
            .iter()
            .any(|f| f.node.is_none() && t >= f.start_s && t < f.end_s)
    }

    fn count_end(&self, task: &Task, completed: bool) {
        self.by_window[self.in_outage(task) as usize][!completed as usize]
            .fetch_add(1, Ordering::Relaxed);
    }

    fn ended(&self, task: &Task, how: String) {
        self.count_end(task, false);
        *self
            .ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(how)
            .or_insert(0) += 1;
    }
}

/// Simulated backends: hands each task to `SimState::serve`; a timer thread completes it.
struct SimBackend {
    state: Arc<SimState>,
    tx: Sender<Pending>,
    rejected: Arc<[AtomicU64; 4]>,
}

impl Backend for SimBackend {
    type Payload = ();
    fn dispatch(&self, _task: Task, _payload: (), _routes: &RouteOptions, ticket: Ticket) {
        if let Some(p) = self.state.serve(ticket, Instant::now()) {
            let _ = self.tx.send(p);
        }
    }

    fn reject(&self, task: Task, _payload: (), error: RouteError) {
        self.rejected[task.constraints.priority.index()].fetch_add(1, Ordering::Relaxed);
        self.state
            .ended(&task, format!("no route: {}", error.name()));
    }
}

/// Completes tickets when due (failing over the failed ones); returns once `closed` is set
/// and nothing is pending.
fn timer(rx: Receiver<Pending>, state: Arc<SimState>, closed: Arc<AtomicBool>) -> Vec<f64> {
    let mut latencies = Vec::new();
    let mut heap: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    loop {
        let now = Instant::now();
        while heap.peek().is_some_and(|p| p.0.due <= now) {
            let Some(Reverse(p)) = heap.pop() else { break };
            state.in_flight[p.node].fetch_sub(1, Ordering::Relaxed);
            let outcome = if p.outcome == Outcome::Success && state.down_now(p.node) {
                Outcome::ServerError // the node went down while serving it
            } else {
                p.outcome
            };
            if outcome == Outcome::Success {
                latencies.push(p.latency_ms);
                state.count_end(p.ticket.task(), true);
                p.ticket
                    .complete(Completion::success(p.latency_ms, p.output_tokens));
                continue;
            }
            match state
                .router
                .fail_over(p.ticket, Completion::failure(p.outcome, p.latency_ms))
            {
                Ok(retry) => {
                    state.failovers.fetch_add(1, Ordering::Relaxed);
                    // The back-off is in trace time, like the router's clock.
                    let at = now
                        + Duration::from_secs_f64(retry.backoff.as_secs_f64() / state.trace_rate);
                    if let Some(next) = state.serve(retry.ticket, at) {
                        heap.push(Reverse(next));
                    }
                }
                Err(e) => state.ended(
                    &e.task,
                    format!("failed ({}): {:?}", e.outcome.name(), e.reason),
                ),
            }
        }
        let wait = heap
            .peek()
            .map_or(Duration::from_millis(5), |p| {
                p.0.due.saturating_duration_since(now)
            })
            .min(Duration::from_millis(5));
        match rx.recv_timeout(wait) {
            Ok(p) => heap.push(Reverse(p)),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                // Acquire: pairs with the Release store after the dispatcher's shutdown, so
                // every dispatch (and its send) happened before we see `closed`.
                if heap.is_empty() && rx.is_empty() && closed.load(Ordering::Acquire) {
                    return latencies;
                }
            }
        }
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub fn run(args: &SimArgs) -> Result<(), Error> {
    let speed = args.speed.unwrap_or(crate::DEFAULT_SPEED);
    let workers = args.workers.unwrap_or(2);
    let load = args.load.unwrap_or(1.0);
    if !(load.is_finite() && load > 0.0) {
        return Err(format!("--load must be a positive number, got {load}").into());
    }
    if !(speed.is_finite() && speed > 0.0) {
        return Err(format!("--speed must be a positive number, got {speed}").into());
    }
    if workers == 0 || workers > MAX_WORKERS {
        return Err(format!("--workers must be from 1 to {MAX_WORKERS}, got {workers}").into());
    }
    let (trace_name, mut rows) = open_trace(args.trace.as_deref())?;
    // Replay from the first arrival (a trace may count epoch milliseconds), and refuse a
    // replay that could not end in a day: the wait between arrivals is real time.
    let first = rows.first().map_or(0, |r| r.arrival_ms);
    for r in &mut rows {
        r.arrival_ms -= first;
    }
    let span_ms = rows.last().map_or(0, |r| r.arrival_ms) as f64;
    let real_s = span_ms / 1000.0 / (speed * load);
    if real_s.is_nan() || real_s > MAX_REPLAY_SECONDS {
        return Err(format!(
            "replaying {trace_name} would take {real_s:.0} s of real time at --speed {speed} \
             and --load {} (its arrivals span {:.0} s); raise --speed (at most {MAX_REPLAY_SECONDS} s is replayed)",
            load,
            span_ms / 1000.0
        )
        .into());
    }
    let fleet: FleetConfig = crate::fleet(args.config.as_deref())?;
    // Health timers (ejection back-off, half-open, slow start) and the retry back-off run in
    // trace time, like the simulated backends.
    let clock = Arc::new(TraceClock {
        start: Instant::now(),
        rate: speed * load,
    });
    let router = fleet.builder(args.seed).clock(clock.clone()).build()?;
    let tasks = synthesize(&router, &rows, &args.base_capability, args.seed)?;
    let faults = args
        .fault
        .iter()
        .map(|f| Fault::parse(f))
        .collect::<Result<Vec<_>, _>>()?;
    for f in &faults {
        if let Some(n) = &f.node {
            if !fleet.nodes.iter().any(|s| &s.name == n) {
                return Err(format!("--fault `{}`: no node `{n}` in the fleet", f.spec).into());
            }
        }
    }
    // Node ids are assigned in fleet order, so node id i is fleet.nodes[i].
    let state = Arc::new(SimState {
        in_flight: fleet.nodes.iter().map(|_| AtomicU64::new(0)).collect(),
        specs: fleet.nodes.clone(),
        speed,
        trace_rate: speed * load,
        start: clock.start,
        fault_stats: faults.iter().map(|_| FaultStats::default()).collect(),
        faults,
        router: router.clone(),
        seq: AtomicU64::new(0),
        failovers: AtomicU64::new(0),
        ended: Mutex::new(HashMap::new()),
        arrival_s: rows.iter().map(|r| r.arrival_ms as f64 / 1000.0).collect(),
        by_window: Default::default(),
    });
    let (tx, rx) = crossbeam_channel::unbounded();
    let rejected: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let dispatcher = Dispatcher::builder(router.clone())
        .workers(workers)
        .control_interval(Some(Duration::from_millis(10)))
        .build(SimBackend {
            state: state.clone(),
            tx,
            rejected: rejected.clone(),
        })?;
    let closed = Arc::new(AtomicBool::new(false));
    let timer_thread = {
        let (state, closed) = (state.clone(), closed.clone());
        std::thread::Builder::new()
            .name("sim-timer".into())
            .spawn(move || timer(rx, state, closed))?
    };
    let span_s = rows.last().map_or(0, |r| r.arrival_ms) as f64 / 1000.0;
    let scale = speed * load;
    println!(
        "switchyard: replaying {} ({} requests, {:.0} s of trace) at load x{} and {}x speed (about {:.1} s)",
        trace_name,
        rows.len(),
        span_s,
        load,
        speed,
        span_s / scale
    );
    println!(
        "fleet: {} nodes ({}); {} dispatcher workers",
        fleet.nodes.len(),
        fleet
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        workers
    );

    let start = state.start;
    let mut refused = [0u64; 4];
    let mut util_sum = vec![0.0f64; fleet.nodes.len()];
    let mut busy_samples = 0u64;
    let mut next_sample = start;
    // `--config`: poll the file; a change is validated and applied live (an invalid file is
    // reported and ignored: the fleet keeps running on the last good config).
    let mtime = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = args.config.as_deref().and_then(mtime);
    let mut next_poll = start;
    let mut bar = Progress::new(rows.len() as u64, "tasks submitted");
    for (k, (row, task)) in rows.iter().zip(&tasks).enumerate() {
        bar.set(k as u64, "replay");
        let due = start + Duration::from_secs_f64(row.arrival_ms as f64 / 1000.0 / scale);
        loop {
            let now = Instant::now();
            if now >= next_sample {
                let utils: Vec<f64> = router
                    .node_metrics()
                    .iter()
                    .filter(|n| !n.draining)
                    .map(|n| n.utilization)
                    .collect();
                if utils.iter().any(|&u| u > 0.0) {
                    for (acc, u) in util_sum.iter_mut().zip(&utils) {
                        *acc += u;
                    }
                    busy_samples += 1;
                }
                next_sample = now + Duration::from_millis(10);
            }
            if now >= next_poll {
                next_poll = now + Duration::from_millis(100);
                if let Some(path) = args.config.as_deref() {
                    let m = mtime(path);
                    if m != seen {
                        seen = m;
                        match switchyard::Config::load(path).and_then(|c| router.apply_config(&c)) {
                            Ok(r) => println!("reloaded {}: {r}", path.display()),
                            Err(e) => eprintln!("switchyard: reload refused: {e}"),
                        }
                    }
                }
            }
            if now >= due {
                break;
            }
            std::thread::sleep((due - now).min(Duration::from_millis(10)));
        }
        if let Err(SubmitError::Full(t) | SubmitError::ShutDown(t)) = dispatcher.submit(*task, ()) {
            refused[t.0.constraints.priority.index()] += 1;
        }
    }
    bar.finish();
    dispatcher.shutdown();
    // Release: pairs with the timer's Acquire load; every dispatch happened before it.
    closed.store(true, Ordering::Release);
    let mut latencies = timer_thread
        .join()
        .map_err(|_| "the simulation timer panicked")?;
    let wall = start.elapsed();
    let m = dispatcher.metrics();
    latencies.sort_by(f64::total_cmp);

    let no_route: u64 = rejected.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    println!();
    println!(
        "tasks: {} submitted, {} completed, {} failed, {} found no route, {} refused at submit",
        m.submitted,
        m.outcome(Outcome::Success),
        m.outcomes.total() - m.outcome(Outcome::Success),
        no_route,
        refused.iter().sum::<u64>()
    );
    for p in Priority::ALL {
        let i = p.index();
        println!(
            "  {:<8} no route {:>5}   refused {:>5}",
            p.name(),
            rejected[i].load(Ordering::Relaxed),
            refused[i]
        );
    }
    let d = m.decision_latency;
    println!(
        "router decision latency (real ns, {} decisions): p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        d.count, d.p50_ns, d.p90_ns, d.p99_ns, d.p999_ns, d.max_ns
    );
    println!(
        "simulated end-to-end latency (ms): p50 {:.0}  p90 {:.0}  p99 {:.0}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        percentile(&latencies, 0.99)
    );
    println!("per node (share of tasks; utilisation averaged over busy samples):");
    let total: u64 = m.nodes.iter().map(|n| n.leases).sum::<u64>().max(1);
    for (n, u) in m.nodes.iter().zip(&util_sum) {
        println!(
            "  {:<8} tasks {:>5} ({:>5.1} %)  mean utilisation {:>5.1} %  latency EWMA {:>7.0} ms",
            n.name,
            n.leases,
            100.0 * n.leases as f64 / total as f64,
            100.0 * u / busy_samples.max(1) as f64,
            n.latency_ewma_ms
        );
    }
    let means: Vec<f64> = util_sum
        .iter()
        .map(|u| u / busy_samples.max(1) as f64)
        .collect();
    println!(
        "balance deviation (busiest node's mean utilisation over the fleet mean, minus 1): {:.3}",
        balance_deviation(&means)
    );
    if !state.faults.is_empty() {
        println!("faults (trace seconds), failover and health:");
        for (f, st) in state.faults.iter().zip(&state.fault_stats) {
            let before = st.before_detection.load(Ordering::Relaxed);
            let after = st.after_detection.load(Ordering::Relaxed);
            if f.effect == Effect::Down {
                println!(
                    "  {:<30} tasks sent to the down node(s) before ejection: {before} (3 failed outcomes eject; tasks sent while those were in flight add to it); while ejected (probes): {after}",
                    f.spec
                );
            } else {
                println!("  {:<30} (no ejection expected)", f.spec);
            }
        }
        let completed = m.outcome(Outcome::Success);
        let w = |a: usize, b: usize| state.by_window[a][b].load(Ordering::Relaxed);
        println!(
            "  failovers {}; tasks with a healthy alternative (arrived outside a total outage): {} of {} completed ({:.2} %, target >= 99 %)",
            state.failovers.load(Ordering::Relaxed),
            w(0, 0),
            w(0, 0) + w(0, 1),
            100.0 * w(0, 0) as f64 / (w(0, 0) + w(0, 1)).max(1) as f64
        );
        if state.faults.iter().any(|f| f.node.is_none()) {
            println!(
                "  tasks that arrived during a total outage: {} ended with a typed error, {} completed after it (retries)",
                w(1, 1),
                w(1, 0)
            );
        }
        let ended = state.ended.lock().unwrap_or_else(|e| e.into_inner());
        let mut ended: Vec<_> = ended.iter().collect();
        ended.sort();
        for (how, n) in ended {
            println!("  ended with a typed error: {n:>6}  {how}");
        }
        println!(
            "  accounted for: {} submitted = {} completed + {} failed + {} no route (+ {} refused at submit)",
            m.submitted,
            completed,
            m.outcomes.total() - completed,
            no_route,
            refused.iter().sum::<u64>()
        );
    }
    println!(
        "wall time {:.1} s; leases all released: {}",
        wall.as_secs_f64(),
        router.ledgers_are_zero()
    );
    Ok(())
}
