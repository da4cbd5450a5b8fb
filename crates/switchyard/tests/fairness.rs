//! Fairness between tenants inside one priority class, through the real dispatcher: while
//! two tenants wait for capacity, each gets its share of the token work routed, whatever the
//! other floods; expired tasks are shed on time from every tenant; nothing is lost.
//!
//! The tests drive capacity by hand (the backend holds tickets until the test completes
//! them), so what they check is the order of service, not how fast anything runs.
// Not library code: std's primitives are fine here (the shim rule is for src/).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard::fairness::token_work;
use switchyard::{
    Backend, BuildError, Completion, Dispatcher, Headroom, NodeSpec, RouteError, RouteOptions,
    Router, Task, TenantId, Ticket,
};

const A: TenantId = TenantId(1);
const B: TenantId = TenantId(2);

/// Holds tickets for the test to complete (or completes them at once when `auto`), and logs
/// every task dispatched and rejected, in order.
#[derive(Default)]
struct Held {
    tickets: Mutex<Vec<Ticket>>,
    dispatched: Mutex<Vec<Task>>,
    rejected: Mutex<Vec<(Task, RouteError)>>,
    auto: AtomicBool,
}

/// The dispatcher's handle on the test's `Held`.
struct Shared(Arc<Held>);

impl Backend for Shared {
    type Payload = ();
    fn dispatch(&self, task: Task, _payload: (), _routes: &RouteOptions, ticket: Ticket) {
        self.0.dispatched.lock().unwrap().push(task);
        if self.0.auto.load(Ordering::SeqCst) {
            ticket.complete(Completion::success(1.0, task.output_tokens));
        } else {
            self.0.tickets.lock().unwrap().push(ticket);
        }
    }

    fn reject(&self, task: Task, _payload: (), error: RouteError) {
        self.0.rejected.lock().unwrap().push((task, error));
    }
}

impl Held {
    fn new() -> (Arc<Held>, Shared) {
        let held = Arc::new(Held::default());
        (Arc::clone(&held), Shared(held))
    }

    fn held(&self) -> usize {
        self.tickets.lock().unwrap().len()
    }

    fn complete_all(&self) {
        let tickets = std::mem::take(&mut *self.tickets.lock().unwrap());
        for t in tickets {
            let out = t.task().output_tokens;
            t.complete(Completion::success(1.0, out));
        }
    }
}

/// One node of `slots` concurrent tasks, every class allowed all of it.
fn router(slots: u32) -> Router {
    let r = Router::builder()
        .node(NodeSpec::new("n").max_concurrency(slots))
        .build()
        .unwrap();
    r.set_headroom(Headroom { shares: [1.0; 4] }).unwrap();
    r.tick(); // publishes the headroom
    r
}

/// Waits (polling) until `done`; fails the test after 20 s rather than hanging.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Every submitted id ended exactly once (dispatched or rejected).
fn each_ended_once(backend: &Held, submitted: u64) {
    let mut ends: HashMap<u64, u32> = HashMap::new();
    for t in backend.dispatched.lock().unwrap().iter() {
        *ends.entry(t.id).or_default() += 1;
    }
    for (t, _) in backend.rejected.lock().unwrap().iter() {
        *ends.entry(t.id).or_default() += 1;
    }
    assert_eq!(ends.len() as u64, submitted, "every task ended");
    assert!(ends.values().all(|&n| n == 1), "a task ended twice");
}

/// Tenant A floods 400 tasks of 200 token work; tenant B (of weight `weight_b`) keeps a
/// backlog of tasks of 100 (12 at first, then 3 more each time capacity frees: more than its
/// share serves). Checks the served work over every prefix of the dispatch order.
fn flood_against_backlog(weight_b: u32) {
    const SLOTS: u32 = 3;
    const ROUNDS: usize = 40;
    let (backend, shared) = Held::new();
    let r = router(SLOTS);
    let d = Dispatcher::builder(r.clone())
        .workers(1)
        .control_interval(None)
        .saturation_wait([Duration::from_secs(10); 4])
        .tenant_weight(B, weight_b)
        .build(shared)
        .unwrap();
    let mut id = 0u64;
    let mut submit = |d: &Dispatcher<Shared>, tenant, input, output| {
        d.submit(Task::new(id, input, output).tenant(tenant), ())
            .unwrap();
        id += 1;
    };
    for _ in 0..400 {
        submit(&d, A, 100, 50); // work 200
    }
    for _ in 0..12 {
        submit(&d, B, 50, 25); // work 100
    }
    let settled = |d: &Dispatcher<Shared>| {
        wait_until("the slots to fill", || {
            backend.held() == SLOTS as usize && d.queued() == 0
        })
    };
    settled(&d);
    for _ in 0..ROUNDS {
        backend.complete_all();
        for _ in 0..3 {
            submit(&d, B, 50, 25);
        }
        settled(&d);
    }

    // The first SLOTS tasks were routed before anything waited; from then on every task
    // came out of the fair queue while both tenants were backlogged (A has hundreds left,
    // B gains a task per round). Served work over weight never differs by more than the
    // work of one task (A's 200, or B's 100 over its weight).
    let log = backend.dispatched.lock().unwrap().clone();
    assert!(log.len() >= SLOTS as usize * (ROUNDS + 1));
    assert!(log[..SLOTS as usize].iter().all(|t| t.tenant == Some(A)));
    let (mut a, mut b) = (0u64, 0u64);
    let bound = 200;
    for (i, t) in log[SLOTS as usize..].iter().enumerate() {
        let work = token_work(t.input_tokens, t.output_tokens);
        if t.tenant == Some(A) {
            a += work;
        } else {
            b += work;
        }
        let b_share = b / weight_b as u64;
        assert!(
            a.abs_diff(b_share) <= bound,
            "after {} dispatches from the queue: A served {a}, B {b} (weight {weight_b})",
            i + 1
        );
    }
    // FIFO would have served none of B's while A's flood lasts.
    assert!(b >= (ROUNDS as u64 * 100), "B served {b}");

    // Let everything through: tickets complete as they are dispatched from now on.
    backend.auto.store(true, Ordering::SeqCst);
    backend.complete_all();
    d.shutdown();
    backend.complete_all();
    assert!(backend.rejected.lock().unwrap().is_empty());
    each_ended_once(&backend, id);
    assert_eq!(d.in_flight(), 0);
    assert_eq!(
        r.finished()[switchyard::Outcome::Success],
        id,
        "every task completed"
    );
    assert!(r.ledgers_are_zero());
}

#[test]
fn a_flooding_tenant_gets_no_more_than_its_share_while_another_is_backlogged() {
    flood_against_backlog(1);
}

#[test]
fn a_weighted_tenant_gets_its_weight_in_token_work() {
    flood_against_backlog(2);
}

#[test]
fn expired_tasks_are_shed_from_every_tenant_on_time() {
    const WAIT: Duration = Duration::from_millis(50);
    let (backend, shared) = Held::new();
    let r = router(1);
    let d = Dispatcher::builder(r.clone())
        .workers(1)
        .control_interval(None)
        .saturation_wait([WAIT; 4])
        .build(shared)
        .unwrap();
    let mut id = 0u64;
    // A patient task may wait 30 s (half its latency limit) instead of the class's 50 ms.
    let mut submit_as = |tenant, patient: bool| {
        let task = Task::new(id, 100, 50).tenant(tenant);
        let task = if patient {
            task.max_latency_ms(60_000)
        } else {
            task
        };
        d.submit(task, ()).unwrap();
        id += 1;
    };
    // B is served once from the queue, so it has the older lane (first on ties) ... (its
    // second task is patient, so that a stalled test thread cannot see it shed)
    submit_as(B, false);
    wait_until("B's first task", || backend.held() == 1);
    submit_as(B, true);
    wait_until("B's second task to wait", || d.waiting() == 1);
    backend.complete_all();
    wait_until("B's second task", || backend.held() == 1);
    // ... then A floods, and B keeps a fresh task at its head: B is next in fair order, its
    // head is still within its wait and does not fit, so retries stop at B every time. A's
    // tasks expire behind A's head all the same and must be shed on time.
    for _ in 0..50 {
        submit_as(A, false);
    }
    let trickle = Instant::now();
    while trickle.elapsed() < 20 * WAIT {
        submit_as(B, false);
        std::thread::sleep(WAIT / 10);
    }
    let shed_a = backend
        .rejected
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, e)| t.tenant == Some(A) && *e == RouteError::Saturated)
        .count();
    assert_eq!(shed_a, 50, "A's expired tasks were still waiting");
    // Counted once the worker is done: B's last tasks are still being shed until then.
    d.shutdown();
    let rejected = backend.rejected.lock().unwrap().len() as u64;
    assert_eq!(d.metrics().shed_by_class.total(), rejected);
    backend.complete_all();
    each_ended_once(&backend, id);
    assert!(r.ledgers_are_zero());
}

#[test]
fn a_zero_tenant_weight_is_refused() {
    let err = Dispatcher::builder(router(1))
        .workers(1)
        .tenant_weight(A, 0)
        .build(Held::new().1)
        .unwrap_err();
    assert!(matches!(
        err,
        BuildError::InvalidSetting {
            field: "tenant_weight",
            ..
        }
    ));
}
