//! A tight routing loop for profiling (`valgrind --tool=callgrind`): 64 nodes, a capability
//! mix, plan + lease + release per decision.
use switchyard::{NodeSpec, Router, Task};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let caps = ["chat", "code", "long-context", "vision"];
    let router = Router::builder()
        .capabilities(caps)
        .nodes((0..64).map(|i| {
            let mut c = vec!["chat"];
            if i % 5 < 3 {
                c.push("code");
            }
            if i % 10 < 3 {
                c.push("long-context");
            }
            if i % 10 == 7 {
                c.push("vision");
            }
            NodeSpec::new(format!("n{i}"))
                .capabilities(c)
                .max_concurrency(60_000)
        }))
        .build()?;
    let sets = [
        router.resolve(&["chat"])?,
        router.resolve(&["code"])?,
        router.resolve(&["chat", "long-context"])?,
        router.resolve(&["vision"])?,
    ];
    let tasks: Vec<Task> = (0..4096u64)
        .map(|i| {
            Task::new(i, 200 + (i as u32 * 37) % 6000, 10 + (i as u32 * 13) % 300)
                .require(sets[i as usize % 4])
        })
        .collect();
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let mut reader = router.reader();
    let mut ok = 0u64;
    let mut routes = switchyard::RouteOptions::default();
    for t in tasks.iter().cycle().take(n) {
        if let Ok(lease) = reader.route_into(std::hint::black_box(t), &mut routes) {
            ok += 1;
            drop(lease);
        }
    }
    println!("{ok} decisions");
    Ok(())
}
