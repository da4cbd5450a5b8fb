//! A tight routing loop for profiling (`valgrind --tool=callgrind`): the benchmarks' 64-node
//! synthetic fleet, plan + lease + release per decision. `route_loop N` runs N decisions;
//! `route_loop N timeouts` runs them with lease timeouts on (every lease recorded in the
//! lease slab, as `bench`'s `route_64_threads_timeouts` does).
use switchyard_sim::{synthetic_builder, synthetic_tasks};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let timeouts = std::env::args().nth(2).is_some_and(|a| a == "timeouts");
    let mut builder = synthetic_builder(64);
    if timeouts {
        builder = builder.lease_timeout_ms(600_000);
    }
    let router = builder.build()?;
    let tasks = synthetic_tasks(&router, 4096)?;
    let mut reader = router.reader();
    let mut routes = switchyard::RouteOptions::default();
    let mut ok = 0u64;
    let t0 = std::time::Instant::now();
    for t in tasks.iter().cycle().take(n) {
        if let Ok(lease) = reader.route_into(std::hint::black_box(t), &mut routes) {
            ok += 1;
            drop(lease);
        }
    }
    let ns = t0.elapsed().as_nanos() as f64 / n.max(1) as f64;
    println!("{ok} of {n} decisions routed, {ns:.1} ns each (mean, wall clock)");
    Ok(())
}
