//! A gateway's use of switchyard end to end: a router over three backends, a dispatcher whose
//! tasks carry their request (the payload), a backend that answers from an I/O thread (here:
//! a sleep), fails one backend on purpose and retries those tasks on another route, then
//! prints the metrics. (`switchyard-gateway` is the real, HTTP version of this.)
//!
//! `cargo run --release --example gateway`
// Not library code: std's primitives are fine here (the shim rule is for src/).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
use std::sync::mpsc;
use std::time::Duration;

use switchyard::{
    Backend, Completion, Dispatcher, NodeSpec, Outcome, RouteOptions, Router, Task, Ticket,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What a gateway submits with each task: the request to forward.
struct Request {
    prompt: String,
}

/// Hands every request and its ticket to an "I/O" thread, as a real gateway hands requests
/// to its HTTP client.
struct Http(mpsc::Sender<(Request, Ticket)>);

impl Backend for Http {
    type Payload = Request;
    fn dispatch(&self, _task: Task, request: Request, _routes: &RouteOptions, ticket: Ticket) {
        let _ = self.0.send((request, ticket));
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = Router::builder()
        .capabilities(["chat", "long-context"])
        .node(
            NodeSpec::new("big")
                .capabilities(["chat", "long-context"])
                .max_concurrency(64),
        )
        .node(
            NodeSpec::new("small-1")
                .capabilities(["chat"])
                .max_concurrency(16),
        )
        .node(
            NodeSpec::new("small-2")
                .capabilities(["chat"])
                .max_concurrency(16),
        )
        .build()?;
    let (tx, rx) = mpsc::channel::<(Request, Ticket)>();
    let io = {
        let router = router.clone();
        let snapshot = router.snapshot();
        std::thread::spawn(move || {
            for (request, ticket) in rx {
                // The model is working on `request.prompt`.
                debug_assert!(!request.prompt.is_empty());
                std::thread::sleep(Duration::from_micros(200));
                let node = ticket.route().map(|r| r.head());
                if node == snapshot.node_id("small-1") {
                    // small-1 is broken: fail over (the router ejects it after 3 failures).
                    match router.fail_over(ticket, Completion::failure(Outcome::ServerError, 5.0)) {
                        Ok(retry) => retry.ticket.complete(Completion::success(120.0, 40)),
                        Err(e) => eprintln!("gave up: {e}"),
                    }
                } else {
                    ticket.complete(Completion::success(120.0, 40));
                }
            }
        })
    };
    let dispatcher = Dispatcher::builder(router.clone())
        .workers(2)
        .build(Http(tx))?;
    let chat = router.resolve(&["chat"])?;
    // About 4 000 requests/s: what the one "I/O" thread below keeps up with. A burst beyond
    // what the backends drain within a class's saturation wait is shed, lowest class first.
    for id in 0..2_000 {
        let task = Task::new(id, 800, 40).require(chat);
        let mut request = Request {
            prompt: format!("request {id}"),
        };
        while let Err(refused) = dispatcher.submit(task, request) {
            eprintln!("back-pressure: {refused}");
            request = refused.into_inner().1; // handed back, never lost
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_micros(250));
    }
    dispatcher.shutdown();
    println!(
        "shed for lack of capacity, by class: {:?}",
        dispatcher.metrics().shed_by_class
    );
    drop(dispatcher); // closes the channel once the workers are gone
    io.join().map_err(|_| "io thread panicked")?;
    let m = router.finished();
    println!(
        "completed {} / failed {}",
        m[Outcome::Success],
        m.total() - m[Outcome::Success]
    );
    for h in router.node_health() {
        println!("{:<8} {:?} errors {}", h.node, h.status, h.metrics.errors);
    }
    assert!(router.ledgers_are_zero());
    Ok(())
}
