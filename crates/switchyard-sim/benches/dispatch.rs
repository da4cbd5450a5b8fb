//! Criterion bench of the dispatch runtime: 10 000 tasks submitted from one thread, routed by
//! 2 workers on the 64-node synthetic fleet, completed by a no-op backend; the time until the
//! last one finished. Intended for regression tracking.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchyard::{Backend, Completion, Dispatcher, RouteOptions, Task, Ticket};
use switchyard_sim::{synthetic_fleet, synthetic_tasks};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Noop;
impl Backend for Noop {
    type Payload = ();
    fn dispatch(&self, task: Task, _payload: (), _routes: &RouteOptions, ticket: Ticket) {
        ticket.complete(Completion::success(1.0, task.output_tokens));
    }
}

fn dispatch(c: &mut Criterion) {
    const N: usize = 10_000;
    let router = synthetic_fleet(64).expect("fleet");
    let tasks = synthetic_tasks(&router, N).expect("tasks");
    let d = Dispatcher::builder(router)
        .workers(2)
        .build(Noop)
        .expect("dispatcher");
    let mut g = c.benchmark_group("dispatch");
    g.throughput(Throughput::Elements(N as u64));
    g.bench_function("submit_route_complete/10k", |b| {
        b.iter(|| {
            for t in &tasks {
                let mut task = *t;
                while let Err(e) = d.submit(task, ()) {
                    task = e.into_inner().0;
                    std::thread::yield_now();
                }
            }
            while d.queued() > 0 || d.in_flight() > 0 {
                std::hint::spin_loop();
            }
        })
    });
    g.finish();
    d.shutdown();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
