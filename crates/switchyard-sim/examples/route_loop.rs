//! A tight routing loop for profiling (`valgrind --tool=callgrind`): the benchmarks' 64-node
//! synthetic fleet, plan + lease + release per decision. `route_loop N` runs N decisions;
//! `timeouts` after N turns lease timeouts on (every lease recorded in the lease slab, as
//! `bench`'s `route_64_threads_timeouts` does), `nodes=K` routes over K nodes instead of 64
//! (4096: `bench`'s `route_4096`).
use switchyard_sim::{synthetic_builder, synthetic_tasks};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let timeouts = std::env::args().skip(2).any(|a| a == "timeouts");
    let nodes = std::env::args()
        .skip(2)
        .find_map(|a| a.strip_prefix("nodes=").and_then(|k| k.parse().ok()))
        .unwrap_or(64);
    let mut builder = synthetic_builder(nodes);
    if timeouts {
        builder = builder.lease_timeout_ms(600_000);
    }
    let router = builder.build()?;
    let tasks = synthetic_tasks(&router, 4096)?;
    let mut reader = router.reader();
    let t0 = std::time::Instant::now();
    let ok = decisions(&mut reader, &tasks, n);
    let ns = t0.elapsed().as_nanos() as f64 / n.max(1) as f64;
    println!("{ok} of {n} decisions routed, {ns:.1} ns each (mean, wall clock)");
    Ok(())
}

/// The loop itself, out of line so a profiler can count it alone
/// (`valgrind --tool=callgrind --toggle-collect='route_loop::decisions*'`).
#[inline(never)]
fn decisions(reader: &mut switchyard::RouteReader, tasks: &[switchyard::Task], n: usize) -> u64 {
    let mut routes = switchyard::RouteOptions::default();
    let mut ok = 0u64;
    for t in tasks.iter().cycle().take(n) {
        if let Ok(lease) = reader.route_into(std::hint::black_box(t), &mut routes) {
            ok += 1;
            drop(lease);
        }
    }
    ok
}
