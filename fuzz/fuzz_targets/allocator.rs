//! Arbitrary sequences of allocate / adjust / settle / release / complete / time passing (with
//! the control thread's tick reclaiming expired leases), checked against a plain reference
//! model of what every lease holds.
//!
//! What must hold, whatever the sequence:
//! * after every operation each node's ledger (tasks, memory, tokens, CPU, GPU) equals the sum
//!   of what the model's live leases hold on it, and never exceeds the node's capacity;
//! * an adjustment that fails changes nothing; one refused for lack of room asked for growth;
//! * a lease is reclaimed exactly when its deadline has passed at a tick, and ending it later
//!   is counted as late and returns nothing;
//! * an allocation that fits must succeed: a task of no tenant that node "a" has room for
//!   (its class's share of every capacity, by the model's own sum of what the leases hold,
//!   a free lease record, "a" healthy) is never refused, whichever node it is routed to;
//! * at the end, with everything released, every ledger is back at zero.
#![no_main]

use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard::spec::{ResourceAllocator, RoutingEngine};
use switchyard::{
    AdjustError, HealthStatus, ManualClock, NodeId, NodeSpec, Outcome, Priority, Router, Task,
    TenantId,
};

#[derive(Arbitrary, Debug)]
enum Op {
    Allocate {
        class: u8,
        input: u16,
        output: u16,
        tenant: bool,
    },
    Adjust {
        which: u8,
        memory: u16,
        cpu: u16,
        tokens: u16,
    },
    Settle {
        which: u8,
        actual: u16,
    },
    Release {
        which: u8,
    },
    Complete {
        which: u8,
        ok: bool,
    },
    Advance {
        ms: u8,
    },
}

const TIMEOUT_MS: u64 = 100;
/// Lease records in the slab: with that many leases out, a reservation has nowhere to go.
const SLOTS: usize = 6;

/// Whether node "a" (4 tasks, 2000 MB at 100 MB per 1000 tokens, 20 000 tokens, 2 cores at
/// 0.25 per task, 1 GPU at 0.2 per task) has room for a task of `tokens` tokens in `class`,
/// given what the model's live leases hold on it. The class may fill its share of tasks,
/// memory and tokens (100/95/85/75 %, rounded down, at least 1); CPU and GPU in full.
fn a_has_room(leases: &[Live], class: usize, tokens: u64) -> bool {
    let share = [1.0, 0.95, 0.85, 0.75][class];
    let ceiling = |cap: u64| ((cap as f64 * share).floor() as u64).clamp(1, cap);
    let mut on_a = Held::default();
    for l in leases.iter().filter(|l| l.node == 0 && !l.reclaimed) {
        on_a.tasks += l.held.tasks;
        on_a.memory += l.held.memory;
        on_a.tokens += l.held.tokens;
        on_a.cpu += l.held.cpu;
        on_a.gpu += l.held.gpu;
    }
    let memory = (tokens as f64 * 0.1).ceil() as u64;
    on_a.tasks + 1 <= ceiling(4)
        && on_a.memory + memory <= ceiling(2_000)
        && on_a.tokens + tokens <= ceiling(20_000)
        && on_a.cpu + 250 <= 2_000
        && on_a.gpu + 200 <= 1_000
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Held {
    tasks: u64,
    memory: u64,
    tokens: u64,
    cpu: u64,
    gpu: u64,
}

struct Live {
    lease: switchyard::Lease,
    node: usize,
    held: Held,
    deadline_ns: u64,
    reclaimed: bool,
}

fn held_by(l: &switchyard::Lease) -> Held {
    let a = l.allocation().allocated;
    Held {
        tasks: 1,
        memory: a.memory_mb as u64,
        tokens: a.tokens as u64,
        cpu: a.cpu_millis as u64,
        gpu: a.gpu_millis as u64,
    }
}

fn check(router: &Router, leases: &[Live]) {
    let metrics = router.node_metrics();
    for (i, n) in metrics.iter().enumerate() {
        let mut want = Held::default();
        for l in leases.iter().filter(|l| l.node == i && !l.reclaimed) {
            want.tasks += l.held.tasks;
            want.memory += l.held.memory;
            want.tokens += l.held.tokens;
            want.cpu += l.held.cpu;
            want.gpu += l.held.gpu;
        }
        let got = Held {
            tasks: n.in_flight,
            memory: n.memory_mb,
            tokens: n.tokens_in_flight,
            cpu: n.cpu_millis,
            gpu: n.gpu_millis,
        };
        assert_eq!(got, want, "node {}", n.name);
        assert!(n.in_flight <= n.max_in_flight);
        assert!(n.memory_mb <= n.capacity.memory_mb as u64);
        assert!(n.tokens_in_flight <= n.capacity.tokens as u64);
        assert!(n.cpu_millis <= n.capacity.cpu_millis as u64);
        assert!(n.gpu_millis <= n.capacity.gpu_millis as u64);
    }
}

fuzz_target!(|ops: Vec<Op>| {
    let clock = ManualClock::new();
    let router = Router::builder()
        .clock(Arc::new(clock.clone()))
        .lease_timeout_ms(TIMEOUT_MS)
        .lease_slots(SLOTS)
        .tenant_rate(TenantId(1), 20_000.0, 1.0)
        .node(
            NodeSpec::new("a")
                .max_concurrency(4)
                .max_tokens_in_flight(20_000)
                .memory(2_000, 100.0)
                .compute(2.0, 0.25, 1.0, 0.2),
        )
        .node(
            NodeSpec::new("b")
                .max_concurrency(3)
                .max_tokens_in_flight(9_000)
                .memory(900, 50.0)
                .compute(1.0, 0.5, 0.0, 0.0)
                .token_rate(50_000.0, 1.0),
        )
        .build()
        .expect("valid fleet");
    let snap = router.snapshot();
    let ids: Vec<NodeId> = ["a", "b"]
        .iter()
        .map(|n| snap.node_id(n).expect("node"))
        .collect();
    drop(snap);
    clock.advance_ms(1_000);
    let mut reader = router.reader();
    let mut leases: Vec<Live> = Vec::new();
    let (mut reclaimed, mut late) = (0u64, 0u64);
    for (k, op) in ops.into_iter().take(200).enumerate() {
        match op {
            Op::Allocate {
                class,
                input,
                output,
                tenant,
            } => {
                let mut task = Task::new(k as u64, input as u32 % 4_000, output as u32 % 2_000)
                    .priority(Priority::ALL[class as usize % 4]);
                if tenant {
                    task = task.tenant(TenantId(1));
                }
                let must_fit = !tenant
                    && leases.len() < SLOTS
                    && router.snapshot().node_status(ids[0]) == Some(HealthStatus::Healthy)
                    && a_has_room(&leases, class as usize % 4, task.total_tokens());
                let routes = match reader.calculate_routes(&task) {
                    Ok(routes) => routes,
                    Err(e) => {
                        assert!(!must_fit, "a task that fits on a was refused: {e}");
                        continue;
                    }
                };
                let allocated = reader.allocate_resources(&routes, &task);
                if let Err(e) = &allocated {
                    assert!(!must_fit, "a task that fits on a was not allocated: {e}");
                }
                if let Ok(lease) = allocated {
                    let node = ids
                        .iter()
                        .position(|&id| id == lease.route().head())
                        .expect("a fleet node");
                    let held = held_by(&lease);
                    leases.push(Live {
                        lease,
                        node,
                        held,
                        deadline_ns: clock_now(&clock) + TIMEOUT_MS * 1_000_000,
                        reclaimed: false,
                    });
                }
            }
            Op::Adjust {
                which,
                memory,
                cpu,
                tokens,
            } => {
                if leases.is_empty() {
                    continue;
                }
                let i = which as usize % leases.len();
                let l = &mut leases[i];
                let mut m = reader.monitor_usage(&l.lease);
                assert_eq!(m.held, !l.reclaimed);
                m.used.memory_mb = memory as u32 % 2_500;
                m.used.cpu_millis = cpu as u32 % 2_500;
                m.used.tokens = tokens as u32 % 25_000;
                let before = l.held;
                match reader.adjust_allocation(&mut l.lease, &m) {
                    Ok(_) => {
                        assert!(!l.reclaimed);
                        l.held = held_by(&l.lease);
                        assert_eq!(l.held.memory, m.used.memory_mb as u64);
                        assert_eq!(l.held.cpu, m.used.cpu_millis as u64);
                        assert_eq!(l.held.tokens, m.used.tokens as u64);
                    }
                    Err(AdjustError::Saturated) => {
                        assert!(!l.reclaimed);
                        assert_eq!(
                            held_by(&l.lease),
                            before,
                            "a failed adjustment changes nothing"
                        );
                        assert!(
                            m.used.memory_mb as u64 > before.memory
                                || m.used.cpu_millis as u64 > before.cpu
                                || m.used.tokens as u64 > before.tokens,
                            "refused without asking for growth"
                        );
                    }
                    Err(AdjustError::Released) => assert!(l.reclaimed),
                    Err(e) => panic!("an adjustment error the model does not know: {e:?}"),
                }
            }
            Op::Settle { which, actual } => {
                if let Some(n) = leases.len().checked_sub(1) {
                    let i = (which as usize).min(n);
                    leases[i].lease.settle_tokens(actual as u32 % 4_000);
                }
            }
            Op::Release { which } => {
                if leases.is_empty() {
                    continue;
                }
                let mut l = leases.swap_remove(which as usize % leases.len());
                reader.release_resources(&mut l.lease);
                reader.release_resources(&mut l.lease);
                if l.reclaimed {
                    late += 1;
                }
                assert!(!l.lease.is_held());
            }
            Op::Complete { which, ok } => {
                if leases.is_empty() {
                    continue;
                }
                let l = leases.swap_remove(which as usize % leases.len());
                if l.reclaimed {
                    late += 1;
                }
                let outcome = if ok {
                    Outcome::Success
                } else {
                    Outcome::ServerError
                };
                l.lease.complete(outcome, 1.0);
            }
            Op::Advance { ms } => {
                clock.advance_ms(ms as u64);
                router.tick();
                let now = clock_now(&clock);
                for l in leases.iter_mut().filter(|l| !l.reclaimed) {
                    if l.deadline_ns <= now {
                        l.reclaimed = true;
                        reclaimed += 1;
                    }
                    assert_eq!(l.lease.is_held(), !l.reclaimed);
                }
            }
        }
        check(&router, &leases);
        assert_eq!(router.lease_counts(), (reclaimed, late));
    }
    for l in leases.drain(..) {
        if l.reclaimed {
            late += 1;
        }
        drop(l.lease);
    }
    assert!(router.ledgers_are_zero(), "{:?}", router.node_metrics());
    assert_eq!(router.lease_counts(), (reclaimed, late));
});

fn clock_now(clock: &ManualClock) -> u64 {
    use switchyard::Clock;
    clock.now_ns()
}
