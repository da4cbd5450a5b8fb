//! Criterion benches of one routing decision (plan + lease + release), for regression
//! tracking; `switchyard bench --json` reports the same cases as percentiles.
//!
//! * `route/uncontended/N` — N-node synthetic fleet, one thread.
//! * `route/under_publish/64` — the same while a background thread publishes a new snapshot
//!   every millisecond (the control loop's worst realistic rate).
//! * `route/guard_load/64` — through `&Router` (an `ArcSwap` guard per call) instead of a
//!   cached reader, to show what the per-thread cache saves.
//! * `versus_tower/{switchyard,tower_p2c}/{64,4096}` — the router's decision beside tower
//!   0.5's p2c `Balance` over `PendingRequests` (decision and release), side by side.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use switchyard::spec::RoutingEngine;
use switchyard::RouteOptions;
use switchyard_sim::tower_p2c::TowerP2c;
use switchyard_sim::{synthetic_fleet, synthetic_tasks};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("route/uncontended");
    for n in [8usize, 64, 1024, 4096] {
        let router = synthetic_fleet(n).expect("fleet");
        let tasks = synthetic_tasks(&router, 4096).expect("tasks");
        let mut reader = router.reader();
        let mut routes = RouteOptions::default();
        let mut i = 0;
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                i = (i + 1) % tasks.len();
                reader.route_into(&tasks[i], &mut routes).map(drop)
            })
        });
    }
    g.finish();
}

fn under_publish(c: &mut Criterion) {
    let router = synthetic_fleet(64).expect("fleet");
    let tasks = synthetic_tasks(&router, 4096).expect("tasks");
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (router, stop) = (router.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                router.tick();
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mut reader = router.reader();
    let mut routes = RouteOptions::default();
    let mut i = 0;
    c.bench_function("route/under_publish/64", |b| {
        b.iter(|| {
            i = (i + 1) % tasks.len();
            reader.route_into(&tasks[i], &mut routes).map(drop)
        })
    });
    stop.store(true, Ordering::Relaxed);
    let _ = writer.join();
}

fn guard_load(c: &mut Criterion) {
    let router = synthetic_fleet(64).expect("fleet");
    let tasks = synthetic_tasks(&router, 4096).expect("tasks");
    let mut engine = &router;
    let mut i = 0;
    c.bench_function("route/guard_load/64", |b| {
        b.iter(|| {
            i = (i + 1) % tasks.len();
            let t = &tasks[i];
            engine
                .calculate_routes(t)
                .and_then(|r| engine.optimize_allocation(&r, t))
                .map(drop)
        })
    });
}

fn versus_tower(c: &mut Criterion) {
    let mut g = c.benchmark_group("versus_tower");
    for n in [64usize, 4096] {
        let router = synthetic_fleet(n).expect("fleet");
        let tasks = synthetic_tasks(&router, 4096).expect("tasks");
        let mut reader = router.reader();
        let mut routes = RouteOptions::default();
        let mut i = 0;
        g.bench_function(BenchmarkId::new("switchyard", n), |b| {
            b.iter(|| {
                i = (i + 1) % tasks.len();
                reader.route_into(&tasks[i], &mut routes).map(drop)
            })
        });
        let mut tower = TowerP2c::new(n);
        let mut k = 0u64;
        g.bench_function(BenchmarkId::new("tower_p2c", n), |b| {
            b.iter(|| {
                k += 1;
                tower.decide(k)
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    uncontended,
    under_publish,
    guard_load,
    versus_tower
);
criterion_main!(benches);
