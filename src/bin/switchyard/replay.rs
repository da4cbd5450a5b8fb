//! The main job: replay a trace through a real `Dispatcher` whose backends are simulated.
//!
//! Time is compressed by `--speed`: a request arriving at trace time `t` is submitted at
//! real time `t / (speed × load)`, and a simulated backend holds its ticket for
//! `service_time / speed` real milliseconds, then completes it with the (uncompressed)
//! service time as its latency. The router, its snapshot, leases, histograms and control
//! thread are the real ones.
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use switchyard::sim::{default_fleet, load_trace, service_time_ms, synthesize, FleetConfig};
use switchyard::{
    balance_deviation, Backend, Completion, Dispatcher, NodeSpec, Outcome, Priority, RouteError,
    RouteOptions, SubmitError, Task, Ticket,
};

use crate::SimArgs;

type Error = Box<dyn std::error::Error>;

struct Pending {
    due: Instant,
    seq: u64,
    node: usize,
    latency_ms: f64,
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

/// What the simulated backends and their timer share.
struct SimState {
    specs: Vec<NodeSpec>,
    in_flight: Vec<AtomicU64>,
    speed: f64,
}

/// Simulated backends: a service-time model per node; a timer thread completes the tickets.
struct SimBackend {
    state: Arc<SimState>,
    seq: AtomicU64,
    tx: Sender<Pending>,
    rejected: Arc<[AtomicU64; 4]>,
}

impl Backend for SimBackend {
    fn dispatch(&self, task: Task, _routes: &RouteOptions, ticket: Ticket) {
        let Some(route) = ticket.route() else { return };
        let node = route.head().0 as usize;
        let st = &*self.state;
        let spec = &st.specs[node];
        let busy = st.in_flight[node].fetch_add(1, Ordering::Relaxed) as f64;
        let u = busy / spec.max_concurrency as f64;
        // ±10 % deterministic jitter, so latencies are not all on the model's line.
        let jitter = 0.9
            + (task.id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f64 / (1u64 << 24) as f64
                * 0.2;
        let latency_ms = service_time_ms(spec, task.input_tokens, task.output_tokens, u) * jitter;
        let due = Instant::now() + Duration::from_secs_f64(latency_ms / 1000.0 / st.speed);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(Pending {
            due,
            seq,
            node,
            latency_ms,
            output_tokens: task.output_tokens,
            ticket,
        });
    }

    fn reject(&self, task: Task, _error: RouteError) {
        self.rejected[task.constraints.priority.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// Completes tickets when due; returns once `closed` is set and nothing is pending.
fn timer(rx: Receiver<Pending>, state: Arc<SimState>, closed: Arc<AtomicBool>) -> Vec<f64> {
    let mut latencies = Vec::new();
    let mut heap: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    loop {
        let now = Instant::now();
        while heap.peek().is_some_and(|p| p.0.due <= now) {
            let Some(Reverse(p)) = heap.pop() else { break };
            state.in_flight[p.node].fetch_sub(1, Ordering::Relaxed);
            latencies.push(p.latency_ms);
            p.ticket
                .complete(Completion::success(p.latency_ms, p.output_tokens));
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

fn default_trace() -> PathBuf {
    let local = PathBuf::from("data/azure_llm_2023_code.csv");
    if local.exists() {
        local
    } else {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/data/azure_llm_2023_code.csv"
        ))
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

pub fn run(args: &SimArgs) -> Result<(), Error> {
    if !(args.load.is_finite() && args.load > 0.0) {
        return Err(format!("--load must be a positive number, got {}", args.load).into());
    }
    if !(args.speed.is_finite() && args.speed > 0.0) {
        return Err(format!("--speed must be a positive number, got {}", args.speed).into());
    }
    if args.workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    let path = args.trace.clone().unwrap_or_else(default_trace);
    let rows = load_trace(&path)?;
    let fleet: FleetConfig = default_fleet();
    let router = fleet.router(args.seed)?;
    let tasks = synthesize(&router, &rows, &args.base_capability, args.seed)?;
    // Node ids are assigned in fleet order, so node id i is fleet.nodes[i].
    let state = Arc::new(SimState {
        in_flight: fleet.nodes.iter().map(|_| AtomicU64::new(0)).collect(),
        specs: fleet.nodes.clone(),
        speed: args.speed,
    });
    let (tx, rx) = crossbeam_channel::unbounded();
    let rejected: Arc<[AtomicU64; 4]> = Arc::new(Default::default());
    let dispatcher = Dispatcher::builder(router.clone())
        .workers(args.workers)
        .control_interval(Some(Duration::from_millis(10)))
        .build(SimBackend {
            state: state.clone(),
            seq: AtomicU64::new(0),
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
    let scale = args.speed * args.load;
    println!(
        "switchyard: replaying {} ({} requests, {:.0} s of trace) at load x{} and {}x speed (about {:.1} s)",
        path.display(),
        rows.len(),
        span_s,
        args.load,
        args.speed,
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
        args.workers
    );

    let start = Instant::now();
    let mut refused = [0u64; 4];
    let mut util_sum = vec![0.0f64; fleet.nodes.len()];
    let mut busy_samples = 0u64;
    let mut next_sample = start;
    for (row, task) in rows.iter().zip(&tasks) {
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
            if now >= due {
                break;
            }
            std::thread::sleep((due - now).min(Duration::from_millis(10)));
        }
        if let Err(SubmitError::Full(t) | SubmitError::ShutDown(t)) = dispatcher.submit(*task) {
            refused[t.constraints.priority.index()] += 1;
        }
    }
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
        m.outcomes.iter().sum::<u64>() - m.outcome(Outcome::Success),
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
    println!(
        "wall time {:.1} s; leases all released: {}",
        wall.as_secs_f64(),
        router.ledgers_are_zero()
    );
    Ok(())
}
