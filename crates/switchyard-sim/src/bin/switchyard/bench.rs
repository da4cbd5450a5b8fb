//! `switchyard bench`: one run on this machine, every figure measured side by side.
//!
//! * `route_N` — one decision (`RouteReader::route` = plan + lease, then the lease's drop)
//!   on an N-node fleet with a realistic capability mix, single thread, timed per call with
//!   two TSC reads into an hdrhistogram (`timer_overhead_ns` is an empty timed region).
//! * `baseline_64` — the same decision written the usual way: `RwLock<HashMap<String, Node>>`,
//!   `HashSet<String>` capability checks, a linear scan for the least-loaded node, a `Mutex`
//!   around each node's counters.
//! * `dispatch` — tasks/s through a 2-worker `Dispatcher` (submit → route → no-op backend →
//!   complete), beside a crossbeam channel's raw throughput between two threads.
//! * `memory_4096_mb` — resident memory a 4096-node router plus a 2-worker dispatcher adds
//!   after a warm-up of routed tasks (measured first, on a fresh process heap).
//! * `route_64_threads` — decisions per second on one shared 64-node router from one thread
//!   and from N threads at once (N = the cores available, each thread its own `RouteReader`,
//!   pinned), and their ratio: whether one router scales across cores; beside them the same
//!   N threads each on a router of its own (`separate_ratio`), which share nothing written:
//!   the most N threads reach on this machine, so `shared_over_separate` is what sharing one
//!   router costs. `route_64_threads_timeouts` and `route_64_threads_tenants`: the shared
//!   pair with lease timeouts on, and with tenant token rates on (tasks spread over 64
//!   tenants).
//! * `tower_p2c_64`, `tower_p2c_4096` — tower 0.5's `p2c::Balance` over `PendingRequests`,
//!   timed exactly as `route_N` (see `tower_p2c.rs`).
use std::collections::{HashMap, HashSet};
use std::hint::black_box;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use switchyard::{Backend, Completion, Dispatcher, RouteOptions, Router, Task, Ticket};

use crate::BenchArgs;

pub(crate) type Error = Box<dyn std::error::Error>;

use switchyard_sim::{
    node_capabilities as node_caps, synthetic_builder, synthetic_fleet, synthetic_tasks,
    task_capabilities as task_caps,
};

/// Decisions per second over `n` nodes from `threads` threads at once, each with its own
/// reader, `per_thread` decisions each (best of three rounds: the host's other work only ever
/// slows a round down). `shared`: every thread routes on one router; otherwise each thread
/// has a router of its own (same fleet, same tasks), which shares nothing written, so its
/// rate is what the machine allows `threads` threads and the ceiling of the shared one.
fn time_route_threads(
    n: usize,
    threads: usize,
    per_thread: usize,
    shared: bool,
    variant: Variant,
) -> Result<f64, Error> {
    let routers = (0..if shared { 1 } else { threads })
        .map(|_| {
            let b = synthetic_builder(n);
            match variant {
                Variant::Plain => b,
                // A timeout no decision reaches: every lease is recorded in the slab and
                // ended by its drop, as a gateway's leases are.
                Variant::Timeouts => b.lease_timeout_ms(600_000),
                // Rates no decision reaches (an hour of burst at 1e9 tokens/s): every decision
                // takes from its tenant's rate.
                Variant::Tenants => (0..BENCH_TENANTS).fold(b, |b, t| {
                    b.tenant_rate(switchyard::TenantId(t), 1e9, 3600.0)
                }),
            }
            .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut tasks = tasks(&routers[0])?;
    if variant == Variant::Tenants {
        for (i, t) in tasks.iter_mut().enumerate() {
            *t = t.tenant(switchyard::TenantId(i as u32 % BENCH_TENANTS));
        }
    }
    let tasks = std::sync::Arc::new(tasks);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let mut best = 0.0f64;
    for _ in 0..3 {
        let start = std::sync::Arc::new(std::sync::Barrier::new(threads + 1));
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let router = routers[i % routers.len()].clone();
                let (tasks, start) = (tasks.clone(), start.clone());
                let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
                std::thread::spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    let mut reader = router.reader();
                    let mut routes = RouteOptions::default();
                    let mut ok = 0u64;
                    start.wait();
                    for t in tasks.iter().cycle().skip(i * 97).take(per_thread) {
                        if let Ok(lease) = reader.route_into(black_box(t), &mut routes) {
                            ok += 1;
                            drop(black_box(lease));
                        }
                    }
                    ok
                })
            })
            .collect();
        start.wait();
        let t0 = Instant::now();
        let mut routed = 0u64;
        for h in handles {
            routed += h.join().map_err(|_| "a bench thread panicked")?;
        }
        let secs = t0.elapsed().as_secs_f64();
        if routed != (threads * per_thread) as u64 {
            return Err(format!("{routed} of {} decisions routed", threads * per_thread).into());
        }
        best = best.max(routed as f64 / secs.max(1e-9));
    }
    if !routers.iter().all(Router::ledgers_are_zero) {
        return Err("ledgers not zero after the threads bench".into());
    }
    Ok(best)
}

/// What the threads bench turns on beside the plain decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Plain,
    /// Lease timeouts: every lease recorded in the lease slab.
    Timeouts,
    /// Tenant token rates: tasks spread over [`BENCH_TENANTS`] tenants, each with a rate.
    Tenants,
}

/// Tenants the `Tenants` variant spreads its tasks over.
const BENCH_TENANTS: u32 = 64;

fn fleet(n: usize) -> Result<Router, Error> {
    Ok(synthetic_fleet(n)?)
}

fn tasks(router: &Router) -> Result<Vec<Task>, Error> {
    Ok(synthetic_tasks(router, 4096)?)
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Pct {
    p50: u64,
    p99: u64,
}

pub(crate) fn pct(h: &Histogram<u64>) -> Pct {
    Pct {
        p50: h.value_at_quantile(0.5),
        p99: h.value_at_quantile(0.99),
    }
}

pub(crate) fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 1 << 36, 3).expect("valid bounds")
}

fn time_route(n: usize, iters: usize, clock: &quanta::Clock) -> Result<Pct, Error> {
    let router = fleet(n)?;
    let tasks = tasks(&router)?;
    let mut reader = router.reader();
    let mut h = hist();
    let mut routes = switchyard::RouteOptions::default();
    for (i, t) in tasks.iter().cycle().take(iters / 10 + 1000).enumerate() {
        drop(black_box(
            reader
                .route_into(t, &mut routes)
                .map_err(|e| format!("warm-up decision {i}: {e}"))?,
        ));
    }
    for t in tasks.iter().cycle().take(iters) {
        let t0 = clock.raw();
        let r = reader.route_into(black_box(t), &mut routes);
        drop(black_box(r));
        let t1 = clock.raw();
        h.saturating_record(clock.delta_as_nanos(t0, t1));
    }
    if !router.ledgers_are_zero() {
        return Err("ledgers not zero after the route bench".into());
    }
    Ok(pct(&h))
}

/// One control tick on a 4096-node fleet with leases out, forced to publish (a weights change
/// marks the fleet dirty): read every node's counters, run the health state machines and the
/// balance rule, build and store a snapshot. Median of 50.
fn time_control_tick(clock: &quanta::Clock) -> Result<f64, Error> {
    let router = fleet(4096)?;
    let tasks = tasks(&router)?;
    let mut reader = router.reader();
    let mut leases = Vec::new();
    let mut samples = Vec::new();
    for round in 0..50 {
        // Move the load a little so every tick has something to publish.
        for t in tasks.iter().skip(round * 64).take(64) {
            leases.push(reader.route(t)?.1);
        }
        router.set_weights(switchyard::ScoringWeights {
            load: 2.0 + (round % 2) as f64 * 1e-3,
            ..Default::default()
        })?;
        let t0 = clock.raw();
        let report = router.tick();
        samples.push(clock.delta_as_nanos(t0, clock.raw()) as f64 / 1000.0);
        if !report.published {
            return Err("the timed tick did not publish".into());
        }
    }
    drop(leases);
    Ok(median(samples))
}

/// `route_64` while a background thread ticks the control loop every millisecond, each tick
/// publishing a new snapshot (forced by a weights change).
fn time_route_under_publish(iters: usize, clock: &quanta::Clock) -> Result<Pct, Error> {
    let router = fleet(64)?;
    let tasks = tasks(&router)?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (router, stop) = (router.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut published = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let load = 2.0 + (published % 2) as f64 * 1e-3;
                let _ = router.set_weights(switchyard::ScoringWeights {
                    load,
                    ..Default::default()
                });
                published += router.tick().published as u64;
                std::thread::sleep(Duration::from_millis(1));
            }
            published
        })
    };
    let mut reader = router.reader();
    let mut routes = switchyard::RouteOptions::default();
    let mut held = std::collections::VecDeque::new();
    let mut h = hist();
    // At least `iters` decisions and at least 50 ms, so the publisher gets to publish.
    let started = Instant::now();
    for (i, t) in tasks.iter().cycle().enumerate() {
        if i >= iters && started.elapsed() >= Duration::from_millis(50) {
            break;
        }
        let t0 = clock.raw();
        let r = reader.route_into(black_box(t), &mut routes);
        let t1 = clock.raw();
        h.saturating_record(clock.delta_as_nanos(t0, t1));
        // Keep ~500 leases out, so utilisation (and so the snapshot) keeps changing.
        if let Ok(lease) = r {
            held.push_back(lease);
        }
        if held.len() > 500 || i % 7 == 0 {
            held.pop_front();
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let published = publisher.join().map_err(|_| "publisher panicked")?;
    if published < 10 {
        return Err(format!("the publisher published only {published} snapshots").into());
    }
    Ok(pct(&h))
}

/// Allocation alone: reserve on an already planned route (`optimize_allocation`) and release
/// (the lease's drop), 64-node fleet, timed per call.
fn time_allocate(iters: usize, clock: &quanta::Clock) -> Result<Pct, Error> {
    use switchyard::spec::RoutingEngine;
    let router = fleet(64)?;
    let tasks = tasks(&router)?;
    let mut reader = router.reader();
    let planned: Vec<_> = tasks
        .iter()
        .take(256)
        .map(|t| reader.calculate_routes(t).map(|r| (r, *t)))
        .collect::<Result<_, _>>()?;
    let mut h = hist();
    for (routes, task) in planned.iter().cycle().take(iters) {
        let t0 = clock.raw();
        let lease = reader.optimize_allocation(black_box(routes), task);
        drop(black_box(lease));
        let t1 = clock.raw();
        h.saturating_record(clock.delta_as_nanos(t0, t1));
    }
    Ok(pct(&h))
}

fn timer_overhead(iters: usize, clock: &quanta::Clock) -> u64 {
    let mut h = hist();
    for _ in 0..iters {
        let t0 = clock.raw();
        black_box(());
        let t1 = clock.raw();
        h.saturating_record(clock.delta_as_nanos(t0, t1));
    }
    h.value_at_quantile(0.5)
}

// ===== the baseline: how a typical team writes it =====

struct BNode {
    caps: HashSet<String>,
    capacity: u64,
    counters: Mutex<(u64, u64)>, // (in flight, tokens)
}

struct Baseline {
    nodes: RwLock<HashMap<String, BNode>>,
}

impl Baseline {
    fn new(n: usize) -> Self {
        let nodes = (0..n)
            .map(|i| {
                (
                    format!("node-{i}"),
                    BNode {
                        caps: node_caps(i).into_iter().map(String::from).collect(),
                        capacity: 60_000,
                        counters: Mutex::new((0, 0)),
                    },
                )
            })
            .collect();
        Self {
            nodes: RwLock::new(nodes),
        }
    }

    fn route(&self, required: &[String], tokens: u64) -> Option<String> {
        let nodes = self.nodes.read().ok()?;
        let mut best: Option<(&String, u64)> = None;
        for (name, n) in nodes.iter() {
            if !required.iter().all(|c| n.caps.contains(c)) {
                continue;
            }
            let load = n.counters.lock().ok()?.0;
            if load < n.capacity && best.is_none_or(|(_, l)| load < l) {
                best = Some((name, load));
            }
        }
        let (name, _) = best?;
        let mut c = nodes[name].counters.lock().ok()?;
        c.0 += 1;
        c.1 += tokens;
        Some(name.clone())
    }

    fn release(&self, name: &str, tokens: u64) {
        if let Ok(nodes) = self.nodes.read() {
            if let Some(n) = nodes.get(name) {
                if let Ok(mut c) = n.counters.lock() {
                    c.0 -= 1;
                    c.1 -= tokens;
                }
            }
        }
    }
}

fn time_baseline(n: usize, iters: usize, clock: &quanta::Clock) -> Result<Pct, Error> {
    let b = Baseline::new(n);
    let reqs: Vec<(Vec<String>, u64)> = (0..4096)
        .map(|i| {
            (
                task_caps(i).iter().map(|s| s.to_string()).collect(),
                210 + (i as u64 * 50) % 6_300,
            )
        })
        .collect();
    let mut h = hist();
    for (req, tok) in reqs.iter().cycle().take(iters / 10 + 1000) {
        let name = b.route(req, *tok).ok_or("baseline found no node")?;
        b.release(&name, *tok);
    }
    for (req, tok) in reqs.iter().cycle().take(iters) {
        let t0 = clock.raw();
        let name = b
            .route(black_box(req), *tok)
            .ok_or("baseline found no node")?;
        b.release(&name, *tok);
        let t1 = clock.raw();
        h.saturating_record(clock.delta_as_nanos(t0, t1));
    }
    Ok(pct(&h))
}

// ===== dispatch throughput =====

struct Noop;
impl Backend for Noop {
    type Payload = ();
    fn dispatch(&self, task: Task, _payload: (), _routes: &RouteOptions, ticket: Ticket) {
        ticket.complete(Completion::success(1.0, task.output_tokens));
    }
}

fn time_dispatch(total: usize) -> Result<f64, Error> {
    let router = fleet(64)?;
    let tasks = tasks(&router)?;
    let d = Dispatcher::builder(router.clone())
        .workers(2)
        .capacity(65_536)
        .build(Noop)?;
    let start = Instant::now();
    for t in tasks.iter().cycle().take(total) {
        let mut task = *t;
        loop {
            match d.submit(task, ()) {
                Ok(()) => break,
                Err(e) => {
                    task = e.into_inner().0;
                    std::thread::yield_now();
                }
            }
        }
    }
    while d.queued() > 0 || d.in_flight() > 0 {
        std::thread::yield_now();
    }
    let elapsed = start.elapsed();
    d.shutdown();
    let m = d.metrics();
    if m.dispatched as usize != total {
        return Err(format!(
            "dispatch bench: {} of {total} tasks dispatched",
            m.dispatched
        )
        .into());
    }
    Ok(total as f64 / elapsed.as_secs_f64())
}

/// Producer pinned to core 0, consumer to core 1 (a cross-core hand-off), both on
/// threads of their own so the bench thread stays unpinned.
fn time_raw_channel(total: usize) -> f64 {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (tx, rx) = crossbeam_channel::bounded::<u64>(1024);
    let (c0, c1) = (cores.first().copied(), cores.get(1).copied());
    let start = Instant::now();
    let consumer = std::thread::spawn(move || {
        if let Some(c) = c1 {
            core_affinity::set_for_current(c);
        }
        let mut sum = 0u64;
        while let Ok(v) = rx.recv() {
            sum = sum.wrapping_add(v);
        }
        black_box(sum);
    });
    let producer = std::thread::spawn(move || {
        if let Some(c) = c0 {
            core_affinity::set_for_current(c);
        }
        for i in 0..total as u64 {
            if tx.send(i).is_err() {
                break;
            }
        }
    });
    let _ = producer.join();
    let _ = consumer.join();
    total as f64 / start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

// ===== memory =====

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn memory_4096(warm: usize) -> Result<f64, Error> {
    let before = rss_bytes().ok_or("cannot read /proc/self/statm")?;
    let router = fleet(4096)?;
    let tasks = tasks(&router)?;
    let d = Dispatcher::builder(router.clone()).workers(2).build(Noop)?;
    // Paced: at most 4096 tasks queued, so the figure is the dispatcher's steady state, not
    // the depth of one submit burst (the injector holds whatever a burst leaves in it).
    for t in tasks.iter().cycle().take(warm) {
        while d.queued() >= 4096 {
            std::thread::yield_now();
        }
        let mut task = *t;
        while let Err(e) = d.submit(task, ()) {
            task = e.into_inner().0;
            std::thread::yield_now();
        }
    }
    while d.queued() > 0 || d.in_flight() > 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let after = rss_bytes().ok_or("cannot read /proc/self/statm")?;
    black_box(d.metrics());
    drop(tasks);
    Ok(after.saturating_sub(before) as f64 / (1024.0 * 1024.0))
}

pub fn run(args: &BenchArgs) -> Result<(), Error> {
    let (iters, dispatch_n) = if args.quick {
        (30_000, 200_000)
    } else {
        (300_000, 2_000_000)
    };
    let clock = quanta::Clock::new();
    let memory = memory_4096(if args.quick { 20_000 } else { 200_000 })?;
    let overhead = timer_overhead(iters, &clock);
    let mut routes = Vec::new();
    for n in [8, 64, 1024, 4096] {
        routes.push((n, time_route(n, iters, &clock)?));
    }
    let baseline = time_baseline(64, iters / 3, &clock)?;
    let under_publish = time_route_under_publish(iters, &clock)?;
    let tick_us = time_control_tick(&clock)?;
    let allocate = time_allocate(iters, &clock)?;
    // Alternate the two, five rounds each, and keep the medians: this machine is shared and
    // the host moves its vCPUs around, so single runs swing by several times.
    let (mut raws, mut tpss) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        raws.push(time_raw_channel(dispatch_n));
        tpss.push(time_dispatch(dispatch_n / 2)?);
    }
    let (raw, tps) = (median(raws), median(tpss));
    let r64 = routes[1].1;
    let r4096 = routes[3].1;
    let tower64 = crate::tower_p2c::time_p2c(64, iters, &clock)?;
    let tower4096 = crate::tower_p2c::time_p2c(4096, iters, &clock)?;
    let nthreads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = if args.quick { 200_000 } else { 2_000_000 };
    let one_thread = time_route_threads(64, 1, per_thread, true, Variant::Plain)?;
    let n_threads = time_route_threads(64, nthreads, per_thread, true, Variant::Plain)?;
    let n_separate = time_route_threads(64, nthreads, per_thread, false, Variant::Plain)?;
    let one_timeouts = time_route_threads(64, 1, per_thread, true, Variant::Timeouts)?;
    let n_timeouts = time_route_threads(64, nthreads, per_thread, true, Variant::Timeouts)?;
    let one_tenants = time_route_threads(64, 1, per_thread, true, Variant::Tenants)?;
    let n_tenants = time_route_threads(64, nthreads, per_thread, true, Variant::Tenants)?;
    if args.json {
        let mut s = String::from("{");
        for (n, p) in &routes {
            s += &format!(
                "\"route_{n}\":{{\"p50_ns\":{},\"p99_ns\":{}}},",
                p.p50, p.p99
            );
        }
        s += &format!(
            "\"baseline_64\":{{\"p50_ns\":{},\"p99_ns\":{}}},",
            baseline.p50, baseline.p99
        );
        s += &format!(
            "\"dispatch\":{{\"tasks_per_sec\":{:.0},\"raw_queue_msgs_per_sec\":{:.0}}},",
            tps, raw
        );
        s += &format!("\"memory_4096_mb\":{:.1},", memory);
        s += &format!(
            "\"route_64_under_publish\":{{\"p50_ns\":{},\"p99_ns\":{}}},",
            under_publish.p50, under_publish.p99
        );
        s += &format!("\"control_tick_4096_us\":{:.0},", tick_us);
        s += &format!(
            "\"allocate\":{{\"p50_ns\":{},\"p99_ns\":{}}},",
            allocate.p50, allocate.p99
        );
        s += &format!("\"timer_overhead_ns\":{},", overhead);
        s += &format!(
            "\"route_64_threads\":{{\"threads\":{nthreads},\"one_thread_per_sec\":{one_thread:.0},\"n_threads_per_sec\":{n_threads:.0},\"ratio\":{:.2},\"n_separate_routers_per_sec\":{n_separate:.0},\"separate_ratio\":{:.2},\"shared_over_separate\":{:.2}}},",
            n_threads / one_thread.max(1.0),
            n_separate / one_thread.max(1.0),
            n_threads / n_separate.max(1.0)
        );
        s += &format!(
            "\"route_64_threads_timeouts\":{{\"threads\":{nthreads},\"one_thread_per_sec\":{one_timeouts:.0},\"n_threads_per_sec\":{n_timeouts:.0},\"ratio\":{:.2}}},",
            n_timeouts / one_timeouts.max(1.0)
        );
        s += &format!(
            "\"route_64_threads_tenants\":{{\"threads\":{nthreads},\"tenants\":{BENCH_TENANTS},\"one_thread_per_sec\":{one_tenants:.0},\"n_threads_per_sec\":{n_tenants:.0},\"ratio\":{:.2}}},",
            n_tenants / one_tenants.max(1.0)
        );
        for (name, p) in [("tower_p2c_64", tower64), ("tower_p2c_4096", tower4096)] {
            s += &format!("\"{name}\":{{\"p50_ns\":{},\"p99_ns\":{}}},", p.p50, p.p99);
        }
        s += &format!(
            "\"ratios\":{{\"route_64_under_publish_over_idle_p99\":{:.2},\"route_4096_over_route_64_p50\":{:.2},\"baseline_over_route_64_p50\":{:.1},\"dispatch_over_raw_queue\":{:.3},\"route_64_over_tower_p2c_64_p50\":{:.2},\"route_4096_over_tower_p2c_4096_p50\":{:.2}}}",
            under_publish.p99 as f64 / r64.p99.max(1) as f64,
            r4096.p50 as f64 / r64.p50.max(1) as f64,
            baseline.p50 as f64 / r64.p50.max(1) as f64,
            tps / raw,
            r64.p50 as f64 / tower64.p50.max(1) as f64,
            r4096.p50 as f64 / tower4096.p50.max(1) as f64
        );
        s += "}";
        println!("{s}");
    } else {
        println!("one decision (plan + lease + release), single thread, {iters} calls each:");
        for (n, p) in &routes {
            println!("  route_{n:<5} p50 {:>6} ns   p99 {:>6} ns", p.p50, p.p99);
        }
        println!(
            "  baseline_64 p50 {:>6} ns   p99 {:>6} ns (RwLock<HashMap>, HashSet, scan, Mutex)",
            baseline.p50, baseline.p99
        );
        println!("  timer overhead (empty timed region) p50 {overhead} ns");
        println!(
            "  route_64 while a snapshot is published every 1 ms: p50 {} ns   p99 {} ns",
            under_publish.p50, under_publish.p99
        );
        println!(
            "control tick on 4096 nodes (recompute + build + publish): {tick_us:.0} µs (median)"
        );
        println!(
            "allocation alone (reserve on a planned route + release): p50 {} ns   p99 {} ns",
            allocate.p50, allocate.p99
        );
        println!("dispatch, 2 workers: {tps:.0} tasks/s; raw crossbeam channel: {raw:.0} msgs/s ({:.1} %)", 100.0 * tps / raw);
        println!("memory added by a 4096-node router + 2-worker dispatcher: {memory:.1} MB");
        println!(
            "tower 0.5 p2c Balance over PendingRequests, timed the same way: 64 endpoints p50 {} ns   p99 {} ns; 4096 endpoints p50 {} ns   p99 {} ns",
            tower64.p50, tower64.p99, tower4096.p50, tower4096.p99
        );
        println!(
            "one shared 64-node router: {one_thread:.0} decisions/s from 1 thread, {n_threads:.0} from {nthreads} ({:.2}x); {nthreads} separate routers: {n_separate:.0} ({:.2}x; shared / separate {:.2})",
            n_threads / one_thread.max(1.0),
            n_separate / one_thread.max(1.0),
            n_threads / n_separate.max(1.0)
        );
        println!(
            "  with lease timeouts on: {one_timeouts:.0} decisions/s from 1 thread, {n_timeouts:.0} from {nthreads} ({:.2}x)",
            n_timeouts / one_timeouts.max(1.0)
        );
        println!(
            "  with tenant rates on ({BENCH_TENANTS} tenants): {one_tenants:.0} decisions/s from 1 thread, {n_tenants:.0} from {nthreads} ({:.2}x)",
            n_tenants / one_tenants.max(1.0)
        );
    }
    Ok(())
}
