//! Arbitrary fleets, fleet changes and tasks against the router.
//!
//! What must hold, whatever the bytes:
//! * building a router never panics: it fails with a typed [`ConfigError`] (with a message) or
//!   yields a snapshot whose internal invariants hold, and so does every later snapshot;
//! * every fleet change either applies or fails with a typed error, and a reference model of
//!   the fleet (declared capabilities, node names, and `node_is_valid`, the spec rules
//!   written out apart from the validator) predicts which: a build without chains or custom
//!   weights, and every capability declaration, node addition, update and removal, succeeds
//!   exactly when the model says it must;
//! * every route offered for a task is distinct from the others, offers every required
//!   capability, meets the task's latency and memory limits, and carries a confidence in 0–1;
//! * a lease holds exactly what it reserved: `in_flight` moves by its stages when it is taken
//!   and back when it is dropped, and once every lease is gone every ledger is zero.
#![no_main]

use std::collections::BTreeSet;
use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use switchyard::limits::{
    MAX_ALTERNATIVES, MAX_CAPABILITIES, MAX_CONCURRENCY, MAX_MEMORY_MB, MAX_STAGES,
    MAX_TOKENS_IN_FLIGHT,
};
use switchyard::spec::RoutingEngine;
use switchyard::{
    CapSet, ChainSpec, ConfigError, HealthStatus, Lease, ManualClock, NodeSpec, Priority,
    RouteError, RouteOptions, Router, RoutingTable, ScoringWeights, Task,
};

/// Fleet changes and tasks per input (keeps one execution short).
const MAX_OPS: usize = 64;
/// Plans kept for allocating later, against a newer snapshot.
const MAX_PLANNED: usize = 8;

/// A float, biased towards the values that break arithmetic.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Num {
    Nan,
    Inf,
    NegInf,
    Zero,
    NegZero,
    /// The smallest subnormal: its reciprocal is infinite.
    Tiny,
    Huge,
    Negative(u8),
    /// 0–1 in 1/255 steps.
    Unit(u8),
    /// 0–655.35 in hundredths.
    Small(u16),
    Raw(f64),
}

impl Num {
    fn get(self) -> f64 {
        match self {
            Num::Nan => f64::NAN,
            Num::Inf => f64::INFINITY,
            Num::NegInf => f64::NEG_INFINITY,
            Num::Zero => 0.0,
            Num::NegZero => -0.0,
            Num::Tiny => f64::from_bits(1),
            Num::Huge => f64::MAX,
            Num::Negative(x) => -(f64::from(x) + 1.0),
            Num::Unit(x) => f64::from(x) / 255.0,
            Num::Small(x) => f64::from(x) / 100.0,
            Num::Raw(x) => x,
        }
    }
}

/// A capability score: mostly in range (so scores reach the scoring), sometimes anything.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Score {
    Unit(u8),
    Any(Num),
}

impl Score {
    fn get(self) -> f64 {
        match self {
            Score::Unit(x) => f64::from(x) / 255.0,
            Score::Any(n) => n.get(),
        }
    }
}

/// A capacity or token count, biased towards the edges of the ledger's fields.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum Count {
    Zero,
    One,
    Small(u8),
    Medium(u16),
    Max16,
    Over16,
    Max,
    Raw(u32),
}

impl Count {
    fn get(self) -> u32 {
        match self {
            Count::Zero => 0,
            Count::One => 1,
            Count::Small(x) => u32::from(x),
            Count::Medium(x) => u32::from(x),
            Count::Max16 => u32::from(u16::MAX),
            Count::Over16 => u32::from(u16::MAX) + 1,
            Count::Max => u32::MAX,
            Count::Raw(x) => x,
        }
    }
}

/// A name: mostly from a small pool (so references hit), sometimes empty, blank or arbitrary.
#[derive(Debug, Clone, Arbitrary)]
enum Name {
    Pool(u8),
    Empty,
    Blank,
    Raw(String),
}

impl Name {
    fn get(&self, prefix: &str, pool: u8) -> String {
        match self {
            Name::Pool(i) => format!("{prefix}{}", i % pool),
            Name::Empty => String::new(),
            Name::Blank => " \t".to_string(),
            Name::Raw(s) => s.clone(),
        }
    }
    fn node(&self) -> String {
        self.get("n", 12)
    }
    /// Capabilities "c0".."c7"; only some of them are declared by a given input.
    fn cap(&self) -> String {
        self.get("c", 8)
    }
    fn chain(&self) -> String {
        self.get("k", 4)
    }
}

#[derive(Debug, Clone, Arbitrary)]
struct NodeIn {
    name: Name,
    caps: Vec<Name>,
    scores: Vec<(Name, Score)>,
    max_concurrency: Option<Count>,
    max_tokens_in_flight: Option<Count>,
    memory_mb: Option<Count>,
    /// cpu_cores, cpu_per_task, gpus, gpu_per_task
    compute: Option<[Num; 4]>,
    kv_mb_per_1k_tokens: Option<Num>,
    /// base latency, prefill and decode tokens/s
    speed: Option<[Num; 3]>,
    batch_slowdown: Option<Num>,
    cost_per_1k_tokens: Option<Num>,
    weight: Option<Num>,
}

impl NodeIn {
    fn spec(&self) -> NodeSpec {
        let mut s = NodeSpec::new(self.name.node()).capabilities(self.caps.iter().map(Name::cap));
        for (cap, score) in &self.scores {
            s = s.capability_score(cap.cap(), score.get());
        }
        if let Some(c) = self.max_concurrency {
            s.max_concurrency = c.get();
        }
        if let Some(c) = self.max_tokens_in_flight {
            s.max_tokens_in_flight = c.get();
        }
        if let Some(c) = self.memory_mb {
            s.memory_mb = c.get();
        }
        if let Some([cpu, cpu_t, gpu, gpu_t]) = self.compute {
            s = s.compute(cpu.get(), cpu_t.get(), gpu.get(), gpu_t.get());
        }
        if let Some(kv) = self.kv_mb_per_1k_tokens {
            s.kv_mb_per_1k_tokens = kv.get();
        }
        if let Some([base, prefill, decode]) = self.speed {
            s = s.speed(base.get(), prefill.get(), decode.get());
        }
        if let Some(v) = self.batch_slowdown {
            s = s.batch_slowdown(v.get());
        }
        if let Some(v) = self.cost_per_1k_tokens {
            s = s.cost_per_1k_tokens(v.get());
        }
        if let Some(v) = self.weight {
            s = s.weight(v.get());
        }
        s
    }
}

#[derive(Debug, Clone, Arbitrary)]
struct ChainIn {
    name: Name,
    /// Any length, including none and more than `MAX_STAGES`.
    stages: Vec<Name>,
    caps: Vec<Name>,
}

impl ChainIn {
    fn spec(&self) -> ChainSpec {
        ChainSpec::new(self.chain_name(), self.stages.iter().map(Name::node))
            .capabilities(self.caps.iter().map(Name::cap))
    }
    fn chain_name(&self) -> String {
        self.name.chain()
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Alternatives {
    Small(u8),
    Max,
}

#[derive(Debug, Clone, Copy, Arbitrary)]
struct WeightsIn {
    load: Num,
    cost: Num,
    capability: Num,
    alternatives: Alternatives,
    affinity: Num,
    slack: Num,
    slo_target: Num,
}

impl WeightsIn {
    fn get(self) -> ScoringWeights {
        ScoringWeights {
            load: self.load.get(),
            cost: self.cost.get(),
            capability: self.capability.get(),
            alternatives: match self.alternatives {
                Alternatives::Small(x) => usize::from(x),
                Alternatives::Max => usize::MAX,
            },
            affinity: self.affinity.get(),
            slack: self.slack.get(),
            slo_target: self.slo_target.get(),
        }
    }
}

/// A required capability: by name (resolved through the router) or as a raw bit, which may
/// never have been declared or be past `MAX_CAPABILITIES`.
#[derive(Debug, Clone, Arbitrary)]
enum Req {
    Name(Name),
    Bit(u16),
}

#[derive(Debug, Clone, Arbitrary)]
struct TaskIn {
    id: u64,
    input: Count,
    output: Count,
    required: Vec<Req>,
    max_latency_ms: Option<u32>,
    max_memory_mb: Option<u32>,
    priority: u8,
}

impl TaskIn {
    fn task(&self, router: &Router) -> Task {
        let mut caps = CapSet::EMPTY;
        for r in &self.required {
            match r {
                Req::Name(n) => match router.resolve(&[n.cap()]) {
                    Ok(set) => caps = caps.union(&set),
                    Err(e) => check_config_error(&e),
                },
                Req::Bit(b) => caps.insert(usize::from(*b) % (MAX_CAPABILITIES + 8)),
            }
        }
        let mut t = Task::new(self.id, self.input.get(), self.output.get())
            .require(caps)
            .priority(Priority::ALL[usize::from(self.priority) % Priority::ALL.len()]);
        if let Some(ms) = self.max_latency_ms {
            t = t.max_latency_ms(ms);
        }
        if let Some(mb) = self.max_memory_mb {
            t = t.max_memory_mb(mb);
        }
        t
    }
}

#[derive(Debug, Clone, Arbitrary)]
enum Op {
    /// Plan and reserve in one step (the dispatcher's hot path).
    Route(TaskIn),
    /// Plan, validate every option, then reserve; the plan is kept for `AllocateLater`.
    PlanThenAllocate(TaskIn),
    /// Plan and reserve through `&Router` (a fresh snapshot load per call).
    Shared(TaskIn),
    /// Reserve a kept plan against whatever the snapshot is now.
    AllocateLater(u8),
    /// Plan on this router, reserve on another one: must not panic.
    CrossRouter(TaskIn),
    Release(u8),
    AddNode(NodeIn),
    UpdateNode(NodeIn),
    RemoveNode(Name),
    AddChain(ChainIn),
    RemoveChain(Name),
    SetHealth(Name, u8),
    SetWeights(WeightsIn),
    Declare(Name),
    Tick,
}

#[derive(Debug, Arbitrary)]
struct Input {
    caps: Vec<Name>,
    /// Declares `n % 300` extra names, enough to run past `MAX_CAPABILITIES`.
    bulk_caps: Option<u16>,
    nodes: Vec<NodeIn>,
    chains: Vec<ChainIn>,
    weights: Option<WeightsIn>,
    seed: u64,
    lease_timeout_ms: u64,
    ops: Vec<Op>,
}

fn check_config_error(e: &ConfigError) {
    assert!(!e.to_string().is_empty(), "empty message for {e:?}");
}

fn check_route_error(e: &RouteError) {
    assert!(!e.to_string().is_empty(), "empty message for {e:?}");
}

fn check_snapshot(t: &RoutingTable) {
    if let Err(e) = t.check_invariants() {
        panic!("snapshot invariant broken: {e}");
    }
}

/// Invariants of a plan computed on `snap` for `task`.
fn check_options(snap: &RoutingTable, task: &Task, o: &RouteOptions) {
    let c = &task.constraints;
    assert_eq!(o.constraints, *c);
    let choices = o.choices();
    assert!(!choices.is_empty() && choices.len() <= 1 + MAX_ALTERNATIVES);
    assert_eq!(o.primary(), &choices[0]);
    assert_eq!(o.alternatives(), &choices[1..]);
    for (i, ch) in choices.iter().enumerate() {
        let id = ch.route.route;
        assert!(
            choices[..i].iter().all(|p| p.route.route != id),
            "route {id:?} offered twice"
        );
        assert_eq!(ch.route.epoch, snap.epoch());
        let caps = snap
            .route_capabilities(id)
            .unwrap_or_else(|| panic!("route {id:?} not in the snapshot it was planned on"));
        assert!(
            caps.contains_all(&c.required),
            "route {id:?} offers {caps:?}, task needs {:?}",
            c.required
        );
        let stages = ch.route.stages();
        assert!(!stages.is_empty() && stages.len() <= MAX_STAGES);
        assert_eq!(ch.route.head(), stages[0]);
        for s in stages {
            assert!(
                snap.node_name(*s).is_some(),
                "stage {s:?} not in the snapshot"
            );
            // A failed stage is routed only as a half-open probe, or in panic mode.
            if snap.node_status(*s) == Some(HealthStatus::Failed) {
                assert!(
                    snap.panic_mode() || snap.node_probing(*s) == Some(true),
                    "stage {s:?} is failed"
                );
            }
        }
        assert!(
            (0.0..=1.0).contains(&ch.confidence),
            "confidence {}",
            ch.confidence
        );
        let cost = &ch.cost;
        for v in [cost.expected_latency_ms, cost.memory_mb, cost.price] {
            assert!(v.is_finite() && v >= 0.0, "cost {cost:?}");
        }
        assert!((0.0..=1.0).contains(&cost.cpu_utilization), "cost {cost:?}");
        assert!(cost.expected_latency_ms <= f64::from(c.max_latency_ms));
        assert!(cost.memory_mb <= f64::from(c.max_memory_mb));
        assert_eq!(cost.estimated_tokens, task.total_tokens());
        assert!(!ch.score.is_nan() && ch.score >= 0.0, "score {}", ch.score);
    }
}

/// Leases out, each with the `in_flight` it added when it was taken.
#[derive(Default)]
struct Leases(Vec<(Lease, u64)>);

impl Leases {
    /// Records a lease just taken; `before` is `router.in_flight()` before taking it.
    fn push(&mut self, router: &Router, before: u64, lease: Lease, task: &Task) {
        let after = router.in_flight();
        let added = after
            .checked_sub(before)
            .expect("in_flight went down when a lease was taken");
        assert!(
            (1..=MAX_STAGES as u64).contains(&added),
            "a lease added {added} tasks in flight"
        );
        assert_eq!(lease.priority(), task.constraints.priority);
        let held = lease.allocation();
        assert_eq!(held.priority, task.constraints.priority);
        assert!(u64::from(held.allocated.tokens) <= task.total_tokens());
        let p = lease.predicted_latency_ms();
        assert!(p.is_finite() && p >= 0.0);
        self.0.push((lease, added));
    }

    fn check(&self, router: &Router) {
        let held: u64 = self.0.iter().map(|(_, n)| n).sum();
        assert_eq!(
            router.in_flight(),
            held,
            "in_flight does not match the leases out"
        );
    }
}

/// Checks a lease taken right after planning `o` on the same snapshot.
fn check_fresh_lease(lease: &Lease, o: &RouteOptions) {
    assert!(
        o.choices().iter().any(|c| c.route == *lease.route()),
        "lease on a route that was not offered"
    );
}

/// The reference model of a fleet: what has been declared and which nodes exist.
#[derive(Default)]
struct Model {
    caps: BTreeSet<String>,
    nodes: BTreeSet<String>,
}

impl Model {
    /// Declaring `name` succeeds when it is known, or new, not blank and there is room.
    fn declare(&mut self, name: &str) -> bool {
        if self.caps.contains(name) {
            return true;
        }
        if name.trim().is_empty() || self.caps.len() >= MAX_CAPABILITIES {
            return false;
        }
        self.caps.insert(name.to_string());
        true
    }

    /// The spec rules (`NodeSpec` docs), checked field by field.
    fn node_is_valid(&self, s: &NodeSpec) -> bool {
        let within = |v: f64, lo: f64, hi: f64| v.is_finite() && lo <= v && v <= hi;
        let big = f64::from(u32::MAX) / 1000.0;
        let rate = s.max_tokens_per_second;
        !s.name.trim().is_empty()
            && (1..=MAX_CONCURRENCY).contains(&s.max_concurrency)
            && (1..=MAX_TOKENS_IN_FLIGHT).contains(&s.max_tokens_in_flight)
            && (1..=MAX_MEMORY_MB).contains(&s.memory_mb)
            && within(s.cpu_cores, 0.0, big)
            && within(s.gpus, 0.0, big)
            && within(s.cpu_per_task, 0.0, s.cpu_cores)
            && within(s.gpu_per_task, 0.0, s.gpus)
            && within(s.kv_mb_per_1k_tokens, 0.0, 1e9)
            && within(s.base_latency_ms, 0.0, 1e9)
            && within(s.prefill_tokens_per_sec, 1e-3, 1e12)
            && within(s.decode_tokens_per_sec, 1e-3, 1e12)
            && within(s.batch_slowdown, 0.0, 1e6)
            && within(s.cost_per_1k_tokens, 0.0, 1e12)
            && within(s.weight, 0.0, 1e6)
            && s.weight > 0.0
            && (rate == 0.0 || within(rate, 1.0, 1e12))
            && within(s.token_burst_seconds, 0.0, 3_600.0)
            && s.token_burst_seconds > 0.0
            && s.capabilities.iter().all(|c| self.caps.contains(c))
            && s.capability_scores
                .iter()
                .all(|(c, v)| self.caps.contains(c) && within(*v, 0.0, 1.0))
    }

    fn add_node(&mut self, s: &NodeSpec) -> bool {
        if self.nodes.contains(&s.name) || !self.node_is_valid(s) {
            return false;
        }
        self.nodes.insert(s.name.clone());
        true
    }

    fn update_node(&self, s: &NodeSpec) -> bool {
        self.nodes.contains(&s.name) && self.node_is_valid(s)
    }

    fn remove_node(&mut self, name: &str) -> bool {
        self.nodes.remove(name)
    }
}

/// Asserts that the router's verdict on a change is the model's.
fn agree<T, E: std::fmt::Debug>(what: &str, got: &Result<T, E>, want: bool) {
    assert_eq!(
        got.is_ok(),
        want,
        "{what}: the router says {:?}, the model {}",
        got.as_ref().err(),
        if want { "accepts it" } else { "refuses it" }
    );
}

fn run(input: &Input) {
    // ---- build ----
    let mut b = Router::builder()
        .capabilities(input.caps.iter().map(Name::cap))
        .seed(input.seed)
        .lease_timeout_ms(input.lease_timeout_ms)
        .clock(Arc::new(ManualClock::new()));
    if let Some(n) = input.bulk_caps {
        b = b.capabilities((0..n % 300).map(|i| format!("b{i}")));
    }
    for n in &input.nodes {
        b = b.node(n.spec());
    }
    for c in &input.chains {
        b = b.chain(c.spec());
    }
    if let Some(w) = input.weights {
        b = b.weights(w.get());
    }
    // The model's reading of the build, in the builder's order: capabilities, then nodes.
    let mut model = Model::default();
    let mut predicted = true;
    for c in input.caps.iter().map(Name::cap) {
        predicted &= model.declare(&c);
    }
    if let Some(n) = input.bulk_caps {
        for i in 0..n % 300 {
            predicted &= model.declare(&format!("b{i}"));
        }
    }
    for n in &input.nodes {
        predicted &= model.add_node(&n.spec());
    }
    let modelled = input.chains.is_empty() && input.weights.is_none();
    let built = b.build();
    if modelled {
        agree("build", &built, predicted);
    }
    let router = match built {
        Ok(r) => r,
        Err(e) => return check_config_error(&e),
    };
    // A build the model does not follow (chains, weights) leaves it unsure of the fleet.
    let modelled = modelled && predicted;
    check_snapshot(&router.snapshot());
    assert!(router.ledgers_are_zero());

    // A second, unrelated router whose epochs collide with the first's.
    let other = Router::builder()
        .capabilities(["c0"])
        .node(NodeSpec::new("n0").capabilities(["c0"]))
        .build()
        .expect("a valid one-node fleet builds");

    let mut reader = router.reader();
    reader.reseed(input.seed);
    let mut leases = Leases::default();
    let mut other_leases: Vec<Lease> = Vec::new();
    let mut planned: Vec<(Task, RouteOptions)> = Vec::new();

    // ---- fleet changes and tasks ----
    for op in input.ops.iter().take(MAX_OPS) {
        match op {
            Op::Route(t) => {
                let task = t.task(&router);
                let before = router.in_flight();
                match reader.route(&task) {
                    Ok((o, lease)) => {
                        check_options(reader.snapshot(), &task, &o);
                        check_fresh_lease(&lease, &o);
                        leases.push(&router, before, lease, &task);
                    }
                    Err(e) => {
                        check_route_error(&e);
                        if reader.snapshot().route_count() == 0 {
                            assert_eq!(e, RouteError::EmptyFleet);
                        }
                        assert_eq!(router.in_flight(), before, "a failed route kept a lease");
                    }
                }
            }
            Op::PlanThenAllocate(t) => {
                let task = t.task(&router);
                match reader.calculate_routes(&task) {
                    Ok(o) => {
                        check_options(reader.snapshot(), &task, &o);
                        // Nothing changed since planning: every option is still feasible.
                        for ch in o.choices() {
                            assert!(reader.validate_route(&ch.route, &task));
                        }
                        let before = router.in_flight();
                        match reader.optimize_allocation(&o, &task) {
                            Ok(lease) => {
                                check_fresh_lease(&lease, &o);
                                leases.push(&router, before, lease, &task);
                            }
                            Err(e) => {
                                check_route_error(&e);
                                assert_eq!(router.in_flight(), before);
                            }
                        }
                        if planned.len() < MAX_PLANNED {
                            planned.push((task, o));
                        }
                    }
                    Err(e) => check_route_error(&e),
                }
            }
            Op::Shared(t) => {
                let task = t.task(&router);
                let mut engine = &router;
                if let Ok(o) = engine.calculate_routes(&task) {
                    check_options(&router.snapshot(), &task, &o);
                    let before = router.in_flight();
                    match engine.optimize_allocation(&o, &task) {
                        Ok(lease) => {
                            check_fresh_lease(&lease, &o);
                            leases.push(&router, before, lease, &task);
                        }
                        Err(e) => check_route_error(&e),
                    }
                }
            }
            Op::AllocateLater(i) => {
                if planned.is_empty() {
                    continue;
                }
                let (task, o) = planned[usize::from(*i) % planned.len()];
                for ch in o.choices() {
                    let _ = reader.validate_route(&ch.route, &task);
                }
                let before = router.in_flight();
                match reader.optimize_allocation(&o, &task) {
                    Ok(lease) => {
                        assert!(
                            o.choices()
                                .iter()
                                .any(|c| c.route.route == lease.route().route),
                            "lease on a route that was not offered"
                        );
                        leases.push(&router, before, lease, &task);
                    }
                    Err(e) => {
                        check_route_error(&e);
                        assert!(matches!(e, RouteError::Saturated | RouteError::StaleRoute));
                        assert_eq!(router.in_flight(), before);
                    }
                }
            }
            Op::CrossRouter(t) => {
                let task = t.task(&router);
                if let Ok(o) = reader.calculate_routes(&task) {
                    let mut engine = &other;
                    let _ = engine.validate_route(&o.primary().route, &task);
                    match engine.optimize_allocation(&o, &task) {
                        Ok(lease) => other_leases.push(lease),
                        Err(e) => check_route_error(&e),
                    }
                }
            }
            Op::Release(i) => {
                if !leases.0.is_empty() {
                    let i = usize::from(*i) % leases.0.len();
                    let (lease, added) = leases.0.swap_remove(i);
                    let before = router.in_flight();
                    lease.release();
                    assert_eq!(router.in_flight(), before - added);
                }
            }
            Op::AddNode(n) => {
                let spec = n.spec();
                let want = model.add_node(&spec);
                let got = router.add_node(spec);
                if modelled {
                    agree("add_node", &got, want);
                }
                if let Err(e) = got {
                    check_config_error(&e);
                }
            }
            Op::UpdateNode(n) => {
                let spec = n.spec();
                let want = model.update_node(&spec);
                let got = router.update_node(spec);
                if modelled {
                    agree("update_node", &got, want);
                }
                if let Err(e) = got {
                    check_config_error(&e);
                }
            }
            Op::RemoveNode(n) => {
                let name = n.node();
                let want = model.remove_node(&name);
                let got = router.remove_node(&name);
                if modelled {
                    agree("remove_node", &got, want);
                }
                if let Err(e) = got {
                    check_config_error(&e);
                }
            }
            Op::AddChain(c) => {
                if let Err(e) = router.add_chain(c.spec()) {
                    check_config_error(&e);
                }
            }
            Op::RemoveChain(n) => {
                if let Err(e) = router.remove_chain(&n.chain()) {
                    check_config_error(&e);
                }
            }
            Op::SetHealth(n, h) => {
                let status = [
                    HealthStatus::Healthy,
                    HealthStatus::Degraded,
                    HealthStatus::Failed,
                ][usize::from(*h) % 3];
                if let Err(e) = router.set_health(&n.node(), status) {
                    check_config_error(&e);
                }
            }
            Op::SetWeights(w) => {
                if let Err(e) = router.set_weights(w.get()) {
                    check_config_error(&e);
                }
            }
            Op::Declare(n) => {
                let name = n.cap();
                let want = model.declare(&name);
                let got = router.declare_capability(&name);
                if modelled {
                    agree("declare_capability", &got, want);
                }
                if let Err(e) = got {
                    check_config_error(&e);
                }
            }
            Op::Tick => {
                let report = router.tick();
                let snap = router.snapshot();
                assert_eq!(report.epoch, snap.epoch());
                assert_eq!(report.nodes, snap.node_count());
                check_snapshot(&snap);
            }
        }
        leases.check(&router);
    }

    // ---- drain ----
    drop(leases);
    drop(other_leases);
    assert!(
        router.ledgers_are_zero(),
        "ledgers not zero after every lease was dropped"
    );
    assert_eq!(router.in_flight(), 0);
    assert!(
        other.ledgers_are_zero(),
        "the other router's ledgers are not zero"
    );
    router.tick();
    check_snapshot(&router.snapshot());
    assert!(router.ledgers_are_zero());
}

fuzz_target!(|input: Input| run(&input));
