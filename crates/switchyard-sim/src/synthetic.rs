//! The synthetic fleet and task mix that the benchmarks share (`switchyard bench`, the
//! criterion benches and the profiling example), so every figure is measured on one fleet.
use switchyard::limits::{MAX_MEMORY_MB, MAX_TOKENS_IN_FLIGHT};
use switchyard::ConfigError;
use switchyard::NodeSpec;
use switchyard::Router;
use switchyard::RouterBuilder;
use switchyard::Task;

/// Capability names of the synthetic fleet.
pub const SYNTHETIC_CAPABILITIES: [&str; 8] = [
    "chat",
    "code",
    "long-context",
    "vision",
    "tools",
    "json",
    "de",
    "ja",
];

/// Capabilities of node `i`: every node chats; 60 % code, 30 % long-context, 10 % vision,
/// and a scatter of the rest.
pub fn node_capabilities(i: usize) -> Vec<&'static str> {
    let mut c = vec!["chat"];
    for (keep, cap) in [
        (i % 5 < 3, "code"),
        (i % 10 < 3, "long-context"),
        (i % 10 == 7, "vision"),
        (i % 4 == 1, "tools"),
        (i % 3 == 2, "json"),
        (i % 7 == 3, "de"),
        (i % 11 == 5, "ja"),
    ] {
        if keep {
            c.push(cap);
        }
    }
    c
}

/// Requirement mix of task `i`: 50 % chat, 25 % code, 15 % chat + long-context, 10 % vision.
pub fn task_capabilities(i: usize) -> &'static [&'static str] {
    match i % 20 {
        0..=9 => &["chat"],
        10..=14 => &["code"],
        15..=17 => &["chat", "long-context"],
        _ => &["vision"],
    }
}

/// An `n`-node heterogeneous fleet (speeds, prices and chat scores vary by node) with
/// capacities large enough that the benchmarks never saturate it.
///
/// # Errors
/// Never for `n` ≤ [`MAX_NODES`](switchyard::limits::MAX_NODES); the `Result` is the builder's.
pub fn synthetic_fleet(n: usize) -> Result<Router, ConfigError> {
    synthetic_builder(n).build()
}

/// The builder of [`synthetic_fleet`], for variants of it (lease timeouts, tenant rates).
pub fn synthetic_builder(n: usize) -> RouterBuilder {
    Router::builder()
        .capabilities(SYNTHETIC_CAPABILITIES)
        .nodes((0..n).map(|i| {
            NodeSpec::new(format!("node-{i}"))
                .capabilities(node_capabilities(i))
                .max_concurrency(60_000)
                .max_tokens_in_flight(MAX_TOKENS_IN_FLIGHT)
                .memory(MAX_MEMORY_MB, 0.1)
                .speed(
                    10.0 + (i % 7) as f64 * 5.0,
                    3_000.0 + (i % 5) as f64 * 2_000.0,
                    20.0 + (i % 4) as f64 * 15.0,
                )
                .cost_per_1k_tokens(0.2 + (i % 6) as f64 * 0.3)
                .capability_score("chat", 0.6 + (i % 5) as f64 * 0.1)
        }))
}

/// `count` tasks with the [`task_capabilities`] mix and varied token counts.
///
/// # Errors
/// [`ConfigError::UnknownCapability`] on a router that is not a [`synthetic_fleet`].
pub fn synthetic_tasks(router: &Router, count: usize) -> Result<Vec<Task>, ConfigError> {
    (0..count)
        .map(|i| {
            let caps = router.resolve(task_capabilities(i))?;
            Ok(Task::new(
                i as u64,
                200 + (i as u32 * 37) % 6_000,
                10 + (i as u32 * 13) % 300,
            )
            .require(caps))
        })
        .collect()
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn synthetic_fleet_routes_every_task() {
        let r = synthetic_fleet(64).unwrap();
        let tasks = synthetic_tasks(&r, 200).unwrap();
        let mut reader = r.reader();
        for t in &tasks {
            assert!(reader.route(t).is_ok());
        }
        assert!(r.ledgers_are_zero());
        assert!(synthetic_tasks(&switchyard::Router::builder().build().unwrap(), 1).is_err());
    }
}
