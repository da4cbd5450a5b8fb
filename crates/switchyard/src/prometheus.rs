//! [`RoutingMetrics`] in the Prometheus text exposition format (version 0.0.4).
//!
//! [`render`] is independent of the [`Dispatcher`](crate::Dispatcher): it takes a
//! [`RoutingMetrics`] and, optionally, the merged decision-latency histogram
//! ([`Dispatcher::decision_histogram`](crate::Dispatcher::decision_histogram)), and returns the
//! text a `/metrics` endpoint serves with the [`CONTENT_TYPE`] header. It runs off the hot
//! path (it allocates one `String`).
//!
//! # Families
//! | name | type | labels |
//! | --- | --- | --- |
//! | `switchyard_decision_latency_seconds` | histogram (summary without a histogram) | `le` (`quantile`) |
//! | `switchyard_dispatched_total` | counter | |
//! | `switchyard_tasks_total` | counter | `outcome` |
//! | `switchyard_no_route_total` | counter | `reason` |
//! | `switchyard_shed_total` | counter | `class` |
//! | `switchyard_submit_refused_total` | counter | |
//! | `switchyard_in_flight`, `switchyard_queued`, `switchyard_waiting` | gauge | |
//! | `switchyard_balance_deviation`, `switchyard_snapshot_epoch` | gauge | |
//! | `switchyard_node_in_flight`, `switchyard_node_tokens_in_flight` | gauge | `node` |
//! | `switchyard_node_utilization`, `switchyard_node_latency_ewma_seconds` | gauge | `node` |
//! | `switchyard_node_draining` | gauge (0 or 1) | `node` |
//! | `switchyard_node_leases_total` | counter | `node` |
//! | `switchyard_node_tasks_total` | counter | `node`, `outcome` |
//!
//! Label values are escaped as the format requires (`\\`, `\"`, `\n`). Node series are keyed
//! by node name; should a [`RoutingMetrics`] list one name twice, only its first entry (a
//! current node comes before a draining one) is written, so no series is ever duplicated.
use std::collections::HashSet;
use std::fmt::Write as _;

use hdrhistogram::Histogram;

use crate::metrics::{NodeMetrics, RoutingMetrics};
use crate::model::{Outcome, Priority};

/// The `Content-Type` of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the decision-latency histogram's buckets, in nanoseconds (`+Inf` follows).
pub const DECISION_BUCKETS_NS: [u64; 13] = [
    50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 1_000_000, 10_000_000,
];

const DECISION: &str = "switchyard_decision_latency_seconds";

/// Renders `m` as Prometheus text exposition format 0.0.4.
///
/// With `decision_ns` (decision latencies in nanoseconds, as
/// [`Dispatcher::decision_histogram`](crate::Dispatcher::decision_histogram) returns them),
/// `switchyard_decision_latency_seconds` is a histogram with the buckets of
/// [`DECISION_BUCKETS_NS`]; without it, a summary of the quantiles `m.decision_latency`
/// carries. Call it one way consistently: a family should not change type between scrapes.
///
/// # Examples
/// ```
/// use switchyard::{Backend, Completion, Dispatcher, NodeSpec, RouteOptions, Router, Task, Ticket};
///
/// struct Echo;
/// impl Backend for Echo {
///     type Payload = ();
///     fn dispatch(&self, _task: Task, _payload: (), _routes: &RouteOptions, ticket: Ticket) {
///         ticket.complete(Completion::success(1.0, 10));
///     }
/// }
///
/// let router = Router::builder().node(NodeSpec::new("a")).build()?;
/// let d = Dispatcher::builder(router).workers(1).build(Echo)?;
/// for id in 0..10 {
///     d.submit(Task::new(id, 100, 10), ()).expect("room in the queue");
/// }
/// d.shutdown();
/// let text = switchyard::prometheus::render(&d.metrics(), Some(&d.decision_histogram()));
/// assert!(text.contains("# TYPE switchyard_decision_latency_seconds histogram\n"));
/// assert!(text.contains("switchyard_decision_latency_seconds_count 10\n"));
/// assert!(text.contains("switchyard_tasks_total{outcome=\"success\"} 10\n"));
/// assert!(text.contains("switchyard_node_in_flight{node=\"a\"} 0\n"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn render(m: &RoutingMetrics, decision_ns: Option<&Histogram<u64>>) -> String {
    let mut out = String::with_capacity(4096 + m.nodes.len() * 1024);
    let o = &mut out;

    match decision_ns {
        Some(h) => decision_histogram(o, h),
        None => decision_summary(o, m),
    }

    family(
        o,
        "switchyard_dispatched_total",
        "counter",
        "Tasks routed and handed to the backend.",
    );
    sample(
        o,
        "switchyard_dispatched_total",
        &[],
        Value::Int(m.dispatched),
    );

    family(
        o,
        "switchyard_tasks_total",
        "counter",
        "Dispatched tasks finished, by outcome.",
    );
    for out_kind in Outcome::ALL {
        let v = m.outcomes[out_kind];
        sample(
            o,
            "switchyard_tasks_total",
            &[("outcome", out_kind.name())],
            Value::Int(v),
        );
    }

    family(
        o,
        "switchyard_no_route_total",
        "counter",
        "Tasks that found no route, by reason.",
    );
    let mut seen = HashSet::new();
    for &(reason, v) in &m.no_route {
        if seen.insert(reason) {
            sample(
                o,
                "switchyard_no_route_total",
                &[("reason", reason)],
                Value::Int(v),
            );
        }
    }

    family(
        o,
        "switchyard_shed_total",
        "counter",
        "Tasks refused for lack of capacity (saturated), by priority class.",
    );
    for p in Priority::ALL {
        sample(
            o,
            "switchyard_shed_total",
            &[("class", p.name())],
            Value::Int(m.shed_by_class[p]),
        );
    }

    family(
        o,
        "switchyard_admitted_total",
        "counter",
        "Tasks routed and handed to the backend, by priority class.",
    );
    for p in Priority::ALL {
        sample(
            o,
            "switchyard_admitted_total",
            &[("class", p.name())],
            Value::Int(m.admitted_by_class[p]),
        );
    }

    let counters: [(&str, &str, u64); 4] = [
        (
            "switchyard_spillovers_total",
            "Tasks placed on an alternative route because their primary was full.",
            m.spillovers,
        ),
        (
            "switchyard_settle_corrections_total",
            "Completions whose output tokens differed from the estimate (settled).",
            m.settle_corrections,
        ),
        (
            "switchyard_leases_reclaimed_total",
            "Leases reclaimed by the control thread past their timeout.",
            m.reclaimed_leases,
        ),
        (
            "switchyard_late_completions_total",
            "Completions of leases already reclaimed (nothing released twice).",
            m.late_completions,
        ),
    ];
    for (name, help, v) in counters {
        family(o, name, "counter", help);
        sample(o, name, &[], Value::Int(v));
    }

    family(
        o,
        "switchyard_fleet_utilization",
        "gauge",
        "Reserved over capacity across current nodes, by resource (0-1).",
    );
    for (res, v) in [
        ("memory", m.utilization.memory),
        ("cpu", m.utilization.cpu),
        ("tokens", m.utilization.token_usage),
    ] {
        sample(
            o,
            "switchyard_fleet_utilization",
            &[("resource", res)],
            Value::Float(v),
        );
    }

    family(
        o,
        "switchyard_submit_refused_total",
        "counter",
        "Tasks refused at submit (queue full or shut down).",
    );
    sample(
        o,
        "switchyard_submit_refused_total",
        &[],
        Value::Int(m.refused),
    );

    let gauges: [(&str, &str, Value); 5] = [
        (
            "switchyard_in_flight",
            "Tickets out with the backend.",
            Value::Int(m.in_flight),
        ),
        (
            "switchyard_queued",
            "Tasks waiting in the dispatcher's queues.",
            Value::Int(m.queued),
        ),
        (
            "switchyard_waiting",
            "Tasks held by workers waiting for room (every feasible route was full).",
            Value::Int(m.waiting),
        ),
        (
            "switchyard_balance_deviation",
            "Busiest current node's utilization over the mean, minus one (0 = even).",
            Value::Float(m.balance_deviation),
        ),
        (
            "switchyard_snapshot_epoch",
            "Epoch of the routing snapshot.",
            Value::Int(m.epoch),
        ),
    ];
    for (name, help, v) in gauges {
        family(o, name, "gauge", help);
        sample(o, name, &[], v);
    }

    // Node series, first entry per name (see the module docs).
    let mut names = HashSet::new();
    let nodes: Vec<&NodeMetrics> = m
        .nodes
        .iter()
        .filter(|n| names.insert(n.name.as_str()))
        .collect();
    type NodeValue = fn(&NodeMetrics) -> Value;
    let per_node: [(&str, &str, &str, NodeValue); 6] = [
        (
            "switchyard_node_in_flight",
            "gauge",
            "Tasks in flight on the node.",
            |n| Value::Int(n.in_flight),
        ),
        (
            "switchyard_node_tokens_in_flight",
            "gauge",
            "Tokens reserved on the node.",
            |n| Value::Int(n.tokens_in_flight),
        ),
        (
            "switchyard_node_utilization",
            "gauge",
            "Largest of the node's in-flight, memory and token shares (0-1).",
            |n| Value::Float(n.utilization),
        ),
        (
            "switchyard_node_latency_ewma_seconds",
            "gauge",
            "The node's latency EWMA (0 before its first success).",
            |n| Value::Float(n.latency_ewma_ms / 1e3),
        ),
        (
            "switchyard_node_draining",
            "gauge",
            "1 if the node was removed from the fleet and still has leases out, else 0.",
            |n| Value::Int(u64::from(n.draining)),
        ),
        (
            "switchyard_node_leases_total",
            "counter",
            "Leases taken on the node.",
            |n| Value::Int(n.leases),
        ),
    ];
    for (name, kind, help, get) in per_node {
        family(o, name, kind, help);
        for n in &nodes {
            sample(o, name, &[("node", &n.name)], get(n));
        }
    }

    family(
        o,
        "switchyard_node_tasks_total",
        "counter",
        "Tasks finished on the node, by outcome.",
    );
    for n in &nodes {
        for out_kind in Outcome::ALL {
            sample(
                o,
                "switchyard_node_tasks_total",
                &[("node", &n.name), ("outcome", out_kind.name())],
                Value::Int(n.outcomes[out_kind]),
            );
        }
    }
    out
}

/// A sample value.
#[derive(Debug, Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

/// The `# HELP` and `# TYPE` lines of a family.
fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    o.push_str("# HELP ");
    o.push_str(name);
    o.push(' ');
    for c in help.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o.push_str("\n# TYPE ");
    o.push_str(name);
    o.push(' ');
    o.push_str(kind);
    o.push('\n');
}

/// One sample line: `name{k="v",...} value`.
fn sample(o: &mut String, name: &str, labels: &[(&str, &str)], v: Value) {
    o.push_str(name);
    if !labels.is_empty() {
        o.push('{');
        for (i, (k, val)) in labels.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            o.push_str(k);
            o.push_str("=\"");
            escape_label(o, val);
            o.push('"');
        }
        o.push('}');
    }
    o.push(' ');
    match v {
        Value::Int(x) => {
            let _ = write!(o, "{x}");
        }
        Value::Float(x) => push_float(o, x),
    }
    o.push('\n');
}

/// Appends a label value with `\`, `"` and newline escaped.
fn escape_label(o: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
}

/// A float as the format spells it (`NaN`, `+Inf`, `-Inf`, else Rust's shortest round-trip
/// decimal, which Go's `ParseFloat` reads).
fn push_float(o: &mut String, x: f64) {
    if x.is_nan() {
        o.push_str("NaN");
    } else if x == f64::INFINITY {
        o.push_str("+Inf");
    } else if x == f64::NEG_INFINITY {
        o.push_str("-Inf");
    } else {
        let _ = write!(o, "{x}");
    }
}

fn float_string(x: f64) -> String {
    let mut s = String::new();
    push_float(&mut s, x);
    s
}

/// Nanoseconds to seconds.
fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn decision_histogram(o: &mut String, h: &Histogram<u64>) {
    family(
        o,
        DECISION,
        "histogram",
        "Routing decision latency (plan + reserve), per decision.",
    );
    // Each recorded value stands for its bucket's median (what `Histogram::mean` uses too).
    let mut le_counts = [0u64; DECISION_BUCKETS_NS.len()];
    let mut total = 0u64;
    let mut sum_ns = 0u128;
    for v in h.iter_recorded() {
        let value = h.median_equivalent(v.value_iterated_to());
        let count = v.count_at_value();
        total += count;
        sum_ns += u128::from(value) * u128::from(count);
        for (c, &edge) in le_counts.iter_mut().zip(&DECISION_BUCKETS_NS) {
            if value <= edge {
                *c += count;
            }
        }
    }
    let bucket = format!("{DECISION}_bucket");
    for (&edge, &c) in DECISION_BUCKETS_NS.iter().zip(&le_counts) {
        let le = float_string(seconds(edge));
        sample(o, &bucket, &[("le", &le)], Value::Int(c));
    }
    sample(o, &bucket, &[("le", "+Inf")], Value::Int(total));
    sample(
        o,
        &format!("{DECISION}_sum"),
        &[],
        Value::Float(sum_ns as f64 / 1e9),
    );
    sample(o, &format!("{DECISION}_count"), &[], Value::Int(total));
}

fn decision_summary(o: &mut String, m: &RoutingMetrics) {
    let s = &m.decision_latency;
    family(
        o,
        DECISION,
        "summary",
        "Routing decision latency (plan + reserve), per decision.",
    );
    for (q, ns) in [
        ("0.5", s.p50_ns),
        ("0.9", s.p90_ns),
        ("0.99", s.p99_ns),
        ("0.999", s.p999_ns),
        ("1", s.max_ns),
    ] {
        sample(o, DECISION, &[("quantile", q)], Value::Float(seconds(ns)));
    }
    let sum = if s.count == 0 {
        0.0
    } else {
        s.mean_ns * s.count as f64 / 1e9
    };
    sample(o, &format!("{DECISION}_sum"), &[], Value::Float(sum));
    sample(o, &format!("{DECISION}_count"), &[], Value::Int(s.count));
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn escapes_and_special_floats() {
        let mut s = String::new();
        escape_label(&mut s, "a\\b\"c\nd");
        assert_eq!(s, "a\\\\b\\\"c\\nd");
        assert_eq!(float_string(f64::NAN), "NaN");
        assert_eq!(float_string(f64::INFINITY), "+Inf");
        assert_eq!(float_string(f64::NEG_INFINITY), "-Inf");
        assert_eq!(float_string(seconds(50)), "0.00000005");
        let mut s = String::new();
        family(&mut s, "x", "gauge", "a\\b\nc");
        assert_eq!(s, "# HELP x a\\\\b\\nc\n# TYPE x gauge\n");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = crate::metrics::new_histogram();
        h.record_n(40, 3).unwrap();
        h.record_n(150, 2).unwrap();
        h.record_n(3_000_000_000, 1).unwrap();
        let mut s = String::new();
        decision_histogram(&mut s, &h);
        assert!(s.contains("switchyard_decision_latency_seconds_bucket{le=\"0.00000005\"} 3\n"));
        assert!(s.contains("switchyard_decision_latency_seconds_bucket{le=\"0.0000002\"} 5\n"));
        assert!(s.contains("switchyard_decision_latency_seconds_bucket{le=\"0.01\"} 5\n"));
        assert!(s.contains("switchyard_decision_latency_seconds_bucket{le=\"+Inf\"} 6\n"));
        assert!(s.contains("switchyard_decision_latency_seconds_count 6\n"));
    }

    #[test]
    fn duplicate_node_names_are_written_once() {
        let node = NodeMetrics {
            name: "n".into(),
            in_flight: 1,
            utilization: 0.5,
            memory_mb: 0,
            tokens_in_flight: 0,
            cpu_millis: 0,
            gpu_millis: 0,
            leases: 0,
            outcomes: Default::default(),
            latency_ewma_ms: 0.0,
            draining: false,
            capacity: Default::default(),
            max_in_flight: 4,
            spillovers: 0,
            settle_corrections: 0,
            settled_tokens: 0,
        };
        let m = RoutingMetrics {
            nodes: vec![
                node.clone(),
                NodeMetrics {
                    draining: true,
                    ..node
                },
            ],
            no_route: vec![("saturated", 1), ("saturated", 2)],
            ..RoutingMetrics::default()
        };
        let text = render(&m, None);
        assert_eq!(text.matches("switchyard_node_draining{").count(), 1);
        assert!(text.contains("switchyard_node_draining{node=\"n\"} 0\n"));
        assert_eq!(text.matches("switchyard_no_route_total{").count(), 1);
        assert!(text.contains("switchyard_decision_latency_seconds_count 0\n"));
    }
}
