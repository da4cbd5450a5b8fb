//! Helpers shared by the loom models (each `tests/*.rs` file includes this module).
#![allow(dead_code)] // each test file uses a different subset

use switchyard::{Backend, Dispatcher, Headroom, NodeSpec, Router};

/// Runs `f` under loom with `LOOM_MAX_PREEMPTIONS` if set, else with `default_bound`, and
/// reports how many executions were explored (shown with `-- --nocapture`).
pub fn check<F>(default_bound: usize, f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    // Plain std atomics: they count executions outside the model and are not modelled.
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(default_bound);
    }
    let runs = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&runs);
    let start = std::time::Instant::now();
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f();
    });
    eprintln!(
        "{}: {} executions (preemption bound {:?}) in {:.2?}",
        std::thread::current().name().unwrap_or("model"),
        runs.load(Ordering::Relaxed),
        builder.preemption_bound,
        start.elapsed()
    );
}

/// A router over the given nodes, published at epoch 1, with per-class headroom off (every
/// class may fill the whole node): the models count leases against `max_concurrency`, and
/// the default shares would let a normal task fill only 85 % of it (1 slot of 2).
pub fn router(nodes: impl IntoIterator<Item = NodeSpec>) -> Router {
    Router::builder()
        .headroom(Headroom { shares: [1.0; 4] })
        .nodes(nodes)
        .build()
        .expect("valid fleet")
}

/// A dispatcher with one worker that parks as soon as it finds nothing (no spinning) and no
/// control thread, so a model has at most the worker plus two threads of its own.
pub fn dispatcher<B: Backend>(router: &Router, capacity: usize, backend: B) -> Dispatcher<B> {
    dispatcher_with(router, 1, capacity, backend)
}

/// As [`dispatcher`], with `workers` workers.
pub fn dispatcher_with<B: Backend>(
    router: &Router,
    workers: usize,
    capacity: usize,
    backend: B,
) -> Dispatcher<B> {
    Dispatcher::builder(router.clone())
        .workers(workers)
        .capacity(capacity)
        .control_interval(None)
        .spin_rounds(0)
        .build(backend)
        .expect("valid dispatcher")
}
