//! Unit tests of the event loop.
use switchyard::NodeSpec;

use super::engine::percentile;
use super::*;
use crate::error::SimError;
use crate::fleet::{service_time_ms, FleetConfig};
use crate::policy::RoundRobin;
use crate::trace::TraceRow;

fn one_node(conc: u32) -> FleetConfig {
    FleetConfig {
        weights: switchyard::ScoringWeights::default(),
        capabilities: vec!["code".into(), "long-context".into()],
        nodes: vec![NodeSpec::new("n0")
            .capabilities(["code", "long-context"])
            .max_concurrency(conc)
            .speed(10.0, 1_000.0, 100.0)],
    }
}

fn rows(spec: &[(u64, u32, u32, &[u64])]) -> Vec<TraceRow> {
    spec.iter()
        .map(|&(a, i, o, h)| TraceRow {
            arrival_ms: a,
            input_tokens: i,
            output_tokens: o,
            hash_ids: h.to_vec(),
        })
        .collect()
}

#[test]
fn node_queue_waits_and_occupancy_slows() {
    let cfg = SimConfig {
        prefix_cache: false,
        ..SimConfig::default()
    };
    // Two slots; three tasks at t = 0: two run (the second at u = 1/2), one queues.
    let w = Workload::new(
        "t",
        &rows(&[(0, 1000, 10, &[]), (0, 1000, 10, &[]), (0, 1000, 10, &[])]),
        one_node(2),
        &cfg,
    )
    .unwrap();
    let out = run_policy(&w, &mut RoundRobin::default(), &cfg);
    let r = &out.records;
    let spec = &w.fleet.nodes[0];
    let st = |u| service_time_ms(spec, 1000, 10, u);
    assert!((r[0].e2e_ms - st(0.0)).abs() < 1e-9);
    assert!((r[1].e2e_ms - st(0.5)).abs() < 1e-9);
    // The third starts when the first finishes, with one other running.
    assert!((r[2].e2e_ms - (st(0.0) + st(0.5))).abs() < 1e-3);
    assert!((r[0].ttft_ms - service_time_ms(spec, 1000, 0, 0.0)).abs() < 1e-9);
    assert_eq!(out.report.completed, 3);
    // Utilisation: busy sequence-time over 2 slots × makespan.
    let busy = st(0.0) + st(0.5) + st(0.5);
    let want = busy / (2.0 * (st(0.0) + st(0.5)));
    assert!((out.report.utilization - want).abs() < 1e-6);
}

#[test]
fn slo_rule_and_unique_blocks() {
    let cfg = SimConfig::default();
    let w = Workload::new("t", &rows(&[(0, 1025, 10, &[])]), one_node(1), &cfg).unwrap();
    let t = &w.tasks[0];
    let unloaded = 10.0 + 1025.0 + 100.0;
    assert!((t.slo_ms - (5.0 * unloaded + 1000.0)).abs() < 1e-9);
    assert_eq!(
        t.task.constraints.max_latency_ms,
        (5.0 * unloaded + 1000.0) as u32
    );
    assert_eq!(t.blocks.len(), 3);
    assert!(!w.has_prefixes);
    let bad = SimConfig {
        load: 0.0,
        ..SimConfig::default()
    };
    assert_eq!(
        Workload::new("t", &rows(&[(0, 1, 1, &[])]), one_node(1), &bad).unwrap_err(),
        SimError::InvalidLoad(0.0)
    );
}

#[test]
fn kv_admission_holds_tasks_that_do_not_fit() {
    let mut fleet = one_node(8);
    fleet.nodes[0].max_tokens_in_flight = 1500;
    let r = rows(&[(0, 1000, 10, &[]), (0, 1000, 10, &[])]);
    let on = SimConfig {
        kv_admission: true,
        prefix_cache: false,
        ..SimConfig::default()
    };
    let w = Workload::new("t", &r, fleet, &on).unwrap();
    let out = run_policy(&w, &mut RoundRobin::default(), &on);
    let st = service_time_ms(&w.fleet.nodes[0], 1000, 10, 0.0);
    assert!((out.records[1].e2e_ms - 2.0 * st).abs() < 1e-3);
    let off = SimConfig {
        kv_admission: false,
        ..on
    };
    let out = run_policy(&w, &mut RoundRobin::default(), &off);
    assert!(out.records[1].e2e_ms < 1.5 * st);
}

#[test]
fn percentile_is_nearest_rank() {
    let v: Vec<f64> = (1..=100).map(f64::from).collect();
    assert_eq!(percentile(&v, 0.5), 50.0);
    assert_eq!(percentile(&v, 0.99), 99.0);
    assert_eq!(percentile(&v, 1.0), 100.0);
    assert_eq!(percentile(&[], 0.5), 0.0);
    assert_eq!(percentile(&[7.0], 0.0), 7.0);
}
