//! The discrete-event simulator and `switchyard simulate`: the node model against its
//! formula, the prefix cache, determinism, the real router's accounting, the time series,
//! and bad input.
use std::process::Command;

use switchyard::NodeSpec;
use switchyard_sim::{
    compare, compare_outcomes, default_fleet, make_policy, parse_trace, run_policy,
    service_time_ms, FleetConfig, GatewayModel, LeastInFlight, Report, RoundRobin, SimConfig,
    SimError, SwitchyardPolicy, TaskStatus, TraceRow, Workload, POLICY_NAMES,
};

fn one_node() -> FleetConfig {
    FleetConfig {
        weights: switchyard::ScoringWeights::default(),
        capabilities: vec!["code".into(), "long-context".into()],
        nodes: vec![NodeSpec::new("solo")
            .capabilities(["code", "long-context"])
            .max_concurrency(4)
            .memory(40_960, 128.0)
            .speed(20.0, 4_000.0, 50.0)
            .cost_per_1k_tokens(2.0)],
    }
}

fn row(arrival_ms: u64, input: u32, output: u32, hash_ids: &[u64]) -> TraceRow {
    TraceRow {
        arrival_ms,
        input_tokens: input,
        output_tokens: output,
        hash_ids: hash_ids.to_vec(),
    }
}

/// `n` rows, 25 ms apart, with Mooncake-style prefixes: each request shares the first blocks
/// of one of seven documents and ends in blocks of its own.
fn synthetic_rows(n: usize) -> Vec<TraceRow> {
    (0..n)
        .map(|i| {
            let doc = (i % 7) as u64;
            let shared = 2 + (i % 5);
            let own = 1 + (i % 3);
            let mut ids: Vec<u64> = (0..shared as u64).map(|b| doc * 1000 + b).collect();
            ids.extend((0..own as u64).map(|b| 1_000_000 + i as u64 * 10 + b));
            let input = ids.len() as u32 * 512 - (i as u32 % 300);
            row(i as u64 * 25, input, 10 + (i as u32 * 7) % 200, &ids)
        })
        .collect()
}

#[test]
fn a_single_node_serves_by_its_formula() {
    let cfg = SimConfig {
        prefix_cache: false,
        ..SimConfig::default()
    };
    // Far apart: every task starts on an idle node.
    let rows = vec![row(0, 1200, 40, &[]), row(60_000, 300, 7, &[])];
    let w = Workload::new("t", &rows, one_node(), &cfg).unwrap();
    let out = run_policy(&w, &mut RoundRobin::default(), &cfg);
    let spec = &w.fleet.nodes[0];
    for (r, t) in out.records.iter().zip(&rows) {
        assert_eq!(r.status, TaskStatus::Completed);
        let want = spec.base_latency_ms
            + t.input_tokens as f64 * 1000.0 / spec.prefill_tokens_per_sec
            + t.output_tokens as f64 * 1000.0 / spec.decode_tokens_per_sec;
        assert!((r.e2e_ms - want).abs() < 1e-9, "{} vs {want}", r.e2e_ms);
        assert!(
            (r.e2e_ms - service_time_ms(spec, t.input_tokens, t.output_tokens, 0.0)).abs() < 1e-9
        );
        let prefill =
            spec.base_latency_ms + t.input_tokens as f64 * 1000.0 / spec.prefill_tokens_per_sec;
        assert!((r.ttft_ms - prefill).abs() < 1e-9);
        assert!(r.slo_met);
    }
    let rep = &out.report;
    assert_eq!((rep.completed, rep.failed, rep.shed), (2, 0, 0));
    assert!((rep.cost - (1240.0 + 307.0) / 1000.0 * 2.0).abs() < 1e-9);
    assert_eq!(rep.slo_attainment, 1.0);
    assert_eq!(rep.balance_deviation, 0.0);
}

#[test]
fn a_cache_hit_shortens_prefill() {
    let cfg = SimConfig::default();
    // Same three-block prefix; the second request arrives after the first finished.
    let rows = vec![
        row(0, 1536, 5, &[1, 2, 3]),
        row(60_000, 1700, 5, &[1, 2, 3, 4]),
        row(120_000, 1700, 5, &[9, 2, 3, 4]), // same blocks, other head: no prefix
    ];
    let w = Workload::new("t", &rows, one_node(), &cfg).unwrap();
    assert!(w.has_prefixes);
    let out = run_policy(&w, &mut LeastInFlight, &cfg);
    let spec = &w.fleet.nodes[0];
    let r = &out.records;
    assert_eq!(
        (r[0].hit_blocks, r[1].hit_blocks, r[2].hit_blocks),
        (0, 3, 0)
    );
    let hit = service_time_ms(spec, 1700 - 3 * 512, 0, 0.0);
    assert!((r[1].ttft_ms - hit).abs() < 1e-9);
    assert!((r[2].ttft_ms - service_time_ms(spec, 1700, 0, 0.0)).abs() < 1e-9);
    assert!(r[1].ttft_ms < r[2].ttft_ms);
    assert!((out.report.prefix_hit_rate - 3.0 / 11.0).abs() < 1e-12);
    // Without the cache nothing is saved.
    let off = SimConfig {
        prefix_cache: false,
        ..cfg
    };
    let out = run_policy(&w, &mut LeastInFlight, &off);
    assert_eq!(out.records[1].hit_blocks, 0);
    assert_eq!(out.report.prefix_hit_rate, 0.0);
}

fn without_timings(mut r: Report) -> Report {
    for p in &mut r.policies {
        p.decision_ns = Default::default();
        p.decision_time_ns = 0;
        p.event_loop_ns = 0;
    }
    r
}

#[test]
fn the_same_seed_gives_the_same_report() {
    let rows = synthetic_rows(300);
    let cfg = SimConfig {
        load: 8.0,
        seed: 11,
        ..SimConfig::default()
    };
    let run = || {
        let w = Workload::new("synthetic", &rows, default_fleet(), &cfg).unwrap();
        without_timings(compare(&w, &POLICY_NAMES, &cfg).unwrap())
    };
    let a = run();
    assert_eq!(a, run());
    assert_eq!(a.policies.len(), POLICY_NAMES.len());
    for p in &a.policies {
        assert_eq!(p.completed + p.failed + p.shed, 300, "{}", p.policy);
        assert!(p.ttft_p50_ms <= p.ttft_p99_ms && p.e2e_p50_ms <= p.e2e_p99_ms);
        assert!(p.decisions >= 300);
    }
    // The same runs, with their outcomes kept, report the same and progress to the end.
    let w = Workload::new("synthetic", &rows, default_fleet(), &cfg).unwrap();
    let mut last = vec![0; POLICY_NAMES.len()];
    let outcomes = compare_outcomes(&w, &POLICY_NAMES, &cfg, &mut |k, arrived| {
        assert!(arrived >= last[k]);
        last[k] = arrived;
    })
    .unwrap();
    assert_eq!(last, vec![300; POLICY_NAMES.len()]);
    assert_eq!(without_timings(Report::new(&w, &cfg, &outcomes)), a);
    for o in &outcomes {
        assert!(o.report.event_loop_ns >= o.report.decision_time_ns);
        assert!(o.report.decision_time_ns > 0 && o.report.tasks_per_s() > 0.0);
    }
    // Prefix sharing pays off for the cache-aware policy.
    let ca = a
        .policies
        .iter()
        .find(|p| p.policy == "cache_aware")
        .unwrap();
    assert!(ca.prefix_hit_rate > 0.3, "{}", ca.prefix_hit_rate);
    let other = SimConfig {
        seed: 12,
        ..cfg.clone()
    };
    let w = Workload::new("synthetic", &rows, default_fleet(), &other).unwrap();
    let b = without_timings(compare(&w, &["random"], &other).unwrap());
    assert_ne!(a.policies[1], b.policies[0]);
}

#[test]
fn unknown_policies_are_errors() {
    let fleet = default_fleet();
    assert_eq!(
        make_policy("fastest", &fleet, 1).unwrap_err(),
        SimError::UnknownPolicy("fastest".into())
    );
    let cfg = SimConfig::default();
    let w = Workload::new("t", &synthetic_rows(5), fleet, &cfg).unwrap();
    let e = compare(&w, &["round_robin", "nope"], &cfg).unwrap_err();
    assert!(e.to_string().contains("unknown policy `nope`"));
    assert!(e.to_string().contains("switchyard"));
    assert_eq!(compare(&w, &[], &cfg).unwrap_err(), SimError::NoPolicies);
}

/// 400 long-context requests in 0.4 s: far more than the fleet's ledgers hold at once, so
/// most wait at the gateway for a lease.
fn burst() -> (FleetConfig, Workload, SimConfig) {
    let rows: Vec<_> = (0..400u32)
        .map(|i| row(i as u64, 6_000, 50 + i % 100, &[]))
        .collect();
    let cfg = SimConfig::default();
    let fleet = default_fleet();
    let w = Workload::new("burst", &rows, fleet.clone(), &cfg).unwrap();
    (fleet, w, cfg)
}

#[test]
fn the_real_router_loses_no_task_and_releases_every_lease() {
    let (fleet, w, cfg) = burst();
    for seed in [1, 2, 3] {
        let mut p = SwitchyardPolicy::new(&fleet, seed).unwrap();
        let out = run_policy(&w, &mut p, &cfg);
        let r = &out.report;
        assert_eq!(r.completed + r.failed + r.shed, 400);
        assert!(r.completed >= 390, "{r:?}");
        assert!(
            r.decisions > 400,
            "some tasks must have waited and been retried"
        );
        assert_eq!(p.leases_held(), 0);
        assert!(p.router().ledgers_are_zero());
        // Every task served went to a node offering long-context.
        assert!(out
            .records
            .iter()
            .filter(|t| t.status == TaskStatus::Completed)
            .all(|t| t.node.is_some_and(|n| w.fleet.nodes[n]
                .capabilities
                .contains(&"long-context".to_string()))));
    }
}

/// The time series agree with the report: shed and failed tasks add up to its counts, and
/// each node's utilisation, averaged over the buckets, is its time-averaged utilisation.
#[test]
fn the_series_add_up_to_the_report() {
    // Node `short` lacks long-context, so with it alone the long tasks fail.
    let fleet = FleetConfig {
        weights: switchyard::ScoringWeights::default(),
        capabilities: vec!["code".into(), "long-context".into()],
        nodes: vec![
            NodeSpec::new("short")
                .capabilities(["code"])
                .max_concurrency(2)
                .speed(10.0, 2_000.0, 100.0),
            NodeSpec::new("long")
                .capabilities(["code", "long-context"])
                .max_concurrency(3)
                .speed(10.0, 2_000.0, 100.0),
        ],
    };
    let rows: Vec<_> = (0..300u32)
        .map(|i| {
            row(
                u64::from(i) * 40,
                if i % 4 == 0 { 6_000 } else { 500 },
                40,
                &[],
            )
        })
        .collect();
    let cfg = SimConfig::default();
    let short_only = FleetConfig {
        weights: switchyard::ScoringWeights::default(),
        nodes: fleet.nodes[..1].to_vec(),
        ..fleet.clone()
    };
    for (fleet, failing) in [(fleet, false), (short_only, true)] {
        let w = Workload::new("series", &rows, fleet, &cfg).unwrap();
        for name in POLICY_NAMES {
            let mut p = make_policy(name, &w.fleet, 1).unwrap();
            let out = run_policy(&w, p.as_mut(), &cfg);
            let (r, s) = (&out.report, &out.series);
            assert_eq!(r.failed > 0, failing, "{name}");
            assert_eq!(
                s.failed.iter().map(|&c| u64::from(c)).sum::<u64>(),
                r.failed
            );
            assert_eq!(s.shed.iter().map(|&c| u64::from(c)).sum::<u64>(), r.shed);
            assert_eq!(
                s.interval_ns,
                switchyard_sim::sample_interval_ns(299 * 40_000_000)
            );
            let end = (r.makespan_s * 1e9).round() as u64;
            assert_eq!(s.buckets() as u64, end.div_ceil(s.interval_ns), "{name}");
            for (n, util) in s.node_utilization.iter().enumerate() {
                assert_eq!(util.len(), s.buckets());
                assert!(util.iter().all(|&u| (0.0..=1.0 + 1e-9).contains(&u)));
                let covered = |b: usize| (end - b as u64 * s.interval_ns).min(s.interval_ns) as f64;
                let mean: f64 = util
                    .iter()
                    .enumerate()
                    .map(|(b, u)| u * covered(b))
                    .sum::<f64>()
                    / end as f64;
                assert!(
                    (mean - r.node_utilization[n]).abs() < 1e-9,
                    "{name} node {n}: {mean} vs {}",
                    r.node_utilization[n]
                );
            }
        }
    }
}

/// A regression test: `plan` once recorded a sampled route that its weighted rejection
/// skipped in `drawn`, and the fallback scan skipped everything in `drawn`, so a capable
/// route was sometimes never evaluated and a capable task got `NoCapableRoute` (or
/// `Saturated` while a feasible route had room).
#[test]
fn capable_tasks_never_fail_under_load() {
    let (fleet, w, cfg) = burst();
    for seed in 1..=8 {
        let mut p = SwitchyardPolicy::new(&fleet, seed).unwrap();
        let r = run_policy(&w, &mut p, &cfg).report;
        assert_eq!((r.completed, r.failed), (400, 0), "seed {seed}");
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("switchyard-sim-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn simulate_prints_a_table_and_writes_json() {
    let dir = tmpdir("json");
    let trace = dir.join("t.csv");
    let mut s = String::from("arrival_ms,input_tokens,output_tokens,hash_ids\n");
    for r in synthetic_rows(200) {
        let ids: Vec<String> = r.hash_ids.iter().map(u64::to_string).collect();
        s += &format!(
            "{},{},{},{}\n",
            r.arrival_ms,
            r.input_tokens,
            r.output_tokens,
            ids.join(" ")
        );
    }
    std::fs::write(&trace, s).unwrap();
    let json = dir.join("out.json");
    let out = bin()
        .args(["simulate", "--trace"])
        .arg(&trace)
        .args([
            "--load",
            "4",
            "--policy",
            "round_robin,cache_aware,switchyard",
            "--seed",
            "3",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for p in ["round_robin", "cache_aware", "switchyard"] {
        assert!(stdout.lines().any(|l| l.starts_with(p)), "{stdout}");
    }
    let j = std::fs::read_to_string(&json).unwrap();
    assert!(
        j.starts_with("{\"trace\":")
            && j.contains("\"tasks\":200,")
            && j.contains("\"policies\":{\"round_robin\":{")
    );
    for key in [
        "completed",
        "failed",
        "shed",
        "slo_attainment",
        "ttft_p99_ms",
        "e2e_p50_ms",
        "e2e_p99_ms",
        "balance_deviation",
        "utilization",
        "node_utilization",
        "arrival_utilization",
        "arrival_balance_deviation",
        "arrival_node_utilization",
        "prefix_hit_rate",
        "routing_accuracy",
        "routable",
        "cost",
        "decision_ns",
        "p50",
        "p99",
        "p999",
    ] {
        assert_eq!(j.matches(&format!("\"{key}\":")).count(), 3, "{key} in {j}");
    }
    // Top level: which gateway model ran, the load, the offered work, and the balance bound
    // (also beside each policy's deviation).
    assert!(j.contains("\"gateway_model\":\"shared\""), "{j}");
    assert!(j.contains("\"load\":4,"), "{j}");
    assert_eq!(j.matches("\"offered_utilization\":").count(), 1);
    assert_eq!(j.matches("\"balance_bound\":").count(), 4);
    assert!(stdout.contains("gateway model: shared"), "{stdout}");
    assert!(stdout.contains("bal run/arr/bnd"), "{stdout}");
    // Each policy's balance is its per-node utilisation's busiest over mean, minus one, in
    // both windows, and the arrival window's mean is the busy share.
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    for (name, p) in v["policies"].as_object().unwrap() {
        for (dev, nodes, mean) in [
            ("balance_deviation", "node_utilization", "utilization"),
            (
                "arrival_balance_deviation",
                "arrival_node_utilization",
                "arrival_utilization",
            ),
        ] {
            let us: Vec<f64> = p[nodes]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u.as_f64().unwrap())
                .collect();
            assert_eq!(us.len(), 10, "{name} {nodes}");
            let m = us.iter().sum::<f64>() / us.len() as f64;
            let max = us.iter().cloned().fold(0.0, f64::max);
            assert!(m > 0.0, "{name} {nodes}: {us:?}");
            assert!(
                (p[mean].as_f64().unwrap() - m).abs() < 1e-9,
                "{name} {mean}"
            );
            assert!(
                (p[dev].as_f64().unwrap() - (max / m - 1.0)).abs() < 1e-9,
                "{name} {dev}"
            );
        }
    }
    assert!(
        stdout.lines().any(|l| l.starts_with("won: SLO ")),
        "{stdout}"
    );
    // --gateway per-policy says so in the header and the JSON.
    let out = bin()
        .args(["simulate", "--trace"])
        .arg(&trace)
        .args([
            "--load",
            "4",
            "--policy",
            "round_robin,switchyard",
            "--gateway",
            "per-policy",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("gateway model: per-policy"));
    let j = std::fs::read_to_string(&json).unwrap();
    assert!(j.contains("\"gateway_model\":\"per-policy\""), "{j}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn simulate_rejects_bad_input_cleanly() {
    let dir = tmpdir("bad");
    let good = dir.join("good.csv");
    std::fs::write(&good, "arrival_ms,input_tokens,output_tokens\n0,10,2\n").unwrap();
    let bad_row = dir.join("bad.csv");
    std::fs::write(
        &bad_row,
        "arrival_ms,input_tokens,output_tokens\n0,10,2\n5,ten,2\n",
    )
    .unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--trace".into(),
                good.display().to_string(),
                "--policy".into(),
                "round_robin,fastest".into(),
            ],
            "unknown policy `fastest`",
        ),
        (
            vec![
                "--trace".into(),
                dir.join("missing.csv").display().to_string(),
            ],
            "missing.csv",
        ),
        (
            vec!["--trace".into(), bad_row.display().to_string()],
            "bad.csv:3:",
        ),
        (
            vec![
                "--trace".into(),
                good.display().to_string(),
                "--load".into(),
                "0".into(),
            ],
            "load must be a positive number",
        ),
    ];
    for (args, want) in cases {
        let out = bin().arg("simulate").args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Without `--load` the comparison starts from the load at which the modelled fleet is 65 %
/// busy, from the fleet and the trace (the rule scales with the trace's rate), and says so.
#[test]
fn the_default_load_keeps_the_modelled_fleet_busy() {
    use switchyard_sim::{fluid_capacity, load_for_utilization, DEFAULT_TARGET_UTILIZATION};
    let rows = synthetic_rows(400);
    let cfg = SimConfig::default();
    let w = Workload::new("t", &rows, default_fleet(), &cfg).unwrap();
    let l = load_for_utilization(&w, &cfg, DEFAULT_TARGET_UTILIZATION).unwrap();
    let at = SimConfig {
        load: l,
        ..cfg.clone()
    };
    let wl = Workload::new("t", &rows, default_fleet(), &at).unwrap();
    let offered = fluid_capacity(&wl, &at).offered_utilization;
    // busy = offered × (1 + slowdown × busy), slowdown 1 on the built-in fleet.
    let busy = offered / (1.0 - offered);
    assert!((busy - DEFAULT_TARGET_UTILIZATION).abs() < 0.01, "{busy}");
    // Twice the trace's rate: half the load.
    let fast: Vec<TraceRow> = rows
        .iter()
        .map(|r| TraceRow {
            arrival_ms: r.arrival_ms / 2,
            ..r.clone()
        })
        .collect();
    let wf = Workload::new("t", &fast, default_fleet(), &cfg).unwrap();
    let lf = load_for_utilization(&wf, &cfg, DEFAULT_TARGET_UTILIZATION).unwrap();
    assert!((lf / l - 0.5).abs() < 0.02, "{lf} vs {l}");
    // Without prefix sharing (hits take work off), the simulated fleet is then about that
    // busy while the requests arrive, for a policy that spreads work.
    let plain: Vec<TraceRow> = rows
        .iter()
        .map(|r| TraceRow {
            hash_ids: vec![],
            ..r.clone()
        })
        .collect();
    let w0 = Workload::new("t", &plain, default_fleet(), &cfg).unwrap();
    let l0 = load_for_utilization(&w0, &cfg, DEFAULT_TARGET_UTILIZATION).unwrap();
    let at = SimConfig {
        load: l0,
        ..cfg.clone()
    };
    let wl = Workload::new("t", &plain, default_fleet(), &at).unwrap();
    let r = compare(&wl, &["least_in_flight"], &at).unwrap();
    // (Over this short 10 s trace the first seconds ramp up, so a little below the 65 % the
    // model aims at.)
    let u = r.policies[0].arrival_utilization;
    assert!((0.45..=0.8).contains(&u), "utilisation {u}");
    // The command says which load it chose and why.
    let dir = tmpdir("default-load");
    let trace = dir.join("t.csv");
    let mut s = String::from("arrival_ms,input_tokens,output_tokens\n");
    for r in &rows {
        s += &format!("{},{},{}\n", r.arrival_ms, r.input_tokens, r.output_tokens);
    }
    std::fs::write(&trace, s).unwrap();
    let out = bin()
        .args(["simulate", "--policy", "round_robin", "--trace"])
        .arg(&trace)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(", the default: the arrival rate scaled"),
        "{text}"
    );
    assert!(text.contains("median busy share is 65 %"), "{text}");
    assert!(text.contains("from the fluid model's x"), "{text}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The default load is then corrected by measurement: replays of the compared policies
/// move it until their median busy share is near the target, and the probe closest to it
/// is the one chosen.
#[test]
fn the_default_load_is_calibrated_by_replaying_the_policies() {
    use switchyard_sim::{
        calibrate_load, load_for_utilization, CALIBRATION_PROBES, CALIBRATION_TOLERANCE,
    };
    let rows = synthetic_rows(400);
    let cfg = SimConfig::default();
    let mut build =
        |c: &SimConfig| Workload::new("t", &rows, default_fleet(), c).map_err(|e| e.to_string());
    let w = build(&cfg).unwrap();
    let policies = ["round_robin", "least_in_flight", "switchyard"];
    let median_at = |load: f64| {
        let at = SimConfig {
            load,
            ..cfg.clone()
        };
        let w = Workload::new("t", &rows, default_fleet(), &at).unwrap();
        let mut busy: Vec<f64> = compare(&w, &policies, &at)
            .unwrap()
            .policies
            .iter()
            .map(|p| p.arrival_utilization)
            .collect();
        busy.sort_by(f64::total_cmp);
        busy[1]
    };
    for target in [0.4, 0.65] {
        let first = load_for_utilization(&w, &cfg, target).unwrap();
        let chosen = calibrate_load(first, &policies, &cfg, target, &mut build).unwrap();
        assert!(
            (1..=CALIBRATION_PROBES).contains(&chosen.probes),
            "{chosen:?}"
        );
        // What it reports is what a replay at that load measures.
        assert!((median_at(chosen.load) - chosen.median_busy).abs() < 1e-9);
        // At least as close as the fluid model's estimate, and within tolerance unless it
        // ran out of probes.
        let fluid = median_at(((first * 100.0).round() / 100.0).max(0.01));
        assert!(
            (chosen.median_busy - target).abs() <= (fluid - target).abs() + 1e-9,
            "{chosen:?} against {fluid} at x{first}"
        );
        assert!(
            (chosen.median_busy - target).abs() <= CALIBRATION_TOLERANCE
                || chosen.probes == CALIBRATION_PROBES,
            "{chosen:?}"
        );
    }
}

/// Routing accuracy is taken over the tasks some capable node could have served within
/// their SLO when they arrived; the balance bound is what the capabilities allow.
#[test]
fn routing_accuracy_and_the_balance_bound_are_reported() {
    let cfg = SimConfig {
        prefix_cache: false,
        ..SimConfig::default()
    };
    // Far apart on one node: every task routable, every one served in time.
    let rows = vec![row(0, 1200, 40, &[]), row(60_000, 300, 7, &[])];
    let w = Workload::new("t", &rows, one_node(), &cfg).unwrap();
    let r = run_policy(&w, &mut RoundRobin::default(), &cfg).report;
    assert_eq!((r.routable, r.routing_accuracy), (2, 1.0));
    // Twelve at once on one sequence: only the first finds a node with room, so only it is
    // routable; it is served in time.
    let fleet = FleetConfig {
        weights: switchyard::ScoringWeights::default(),
        capabilities: vec!["code".into(), "long-context".into()],
        nodes: vec![NodeSpec::new("solo")
            .capabilities(["code", "long-context"])
            .max_concurrency(1)
            .speed(0.0, 1_000.0, 1_000_000.0)],
    };
    let rows: Vec<TraceRow> = (0..12).map(|_| row(0, 10_000, 1, &[])).collect();
    let w = Workload::new("t", &rows, fleet, &cfg).unwrap();
    let out = run_policy(&w, &mut LeastInFlight, &cfg);
    assert_eq!(out.records.iter().filter(|r| r.routable).count(), 1);
    assert!(out.records[0].routable);
    assert_eq!(out.report.routing_accuracy, 1.0);
    // Only long-context requests on the built-in fleet: the four L4 nodes cannot take any,
    // so the best deviation is 10 / 6 - 1 (six equal nodes and four idle ones).
    let rows: Vec<_> = (0..200u32)
        .map(|i| row(i as u64 * 100, 6_000, 50, &[]))
        .collect();
    let w = Workload::new("t", &rows, default_fleet(), &cfg).unwrap();
    let rep = compare(&w, &["least_in_flight"], &cfg).unwrap();
    assert!(
        (rep.balance_bound - (10.0 / 6.0 - 1.0)).abs() < 1e-9,
        "{}",
        rep.balance_bound
    );
    assert!(rep.policies[0].balance_deviation >= rep.balance_bound - 0.05);
    assert!(rep.offered_utilization > 0.0);
}

#[test]
fn parse_errors_reach_the_library_caller() {
    let e = parse_trace("x.csv", "arrival_ms,input_tokens,output_tokens\n1,2\n").unwrap_err();
    let e: SimError = e.into();
    assert!(e.to_string().starts_with("x.csv:2:"));
}

/// A node of 4 sequences and 40 GB of KV at 128 MB per 1000 tokens (320 000 tokens): one
/// 200 000-token request needs most of it.
fn kv_node() -> FleetConfig {
    FleetConfig {
        weights: switchyard::ScoringWeights::default(),
        capabilities: vec!["code".into(), "long-context".into()],
        nodes: vec![NodeSpec::new("solo")
            .capabilities(["code", "long-context"])
            .max_concurrency(4)
            .max_tokens_in_flight(1_000_000)
            .memory(40_960, 128.0)
            .speed(20.0, 40_000.0, 50.0)],
    }
}

#[test]
fn a_large_critical_request_is_not_starved_by_smaller_lower_class_ones() {
    use switchyard::Priority;
    let cfg = SimConfig {
        prefix_cache: false,
        ..SimConfig::default()
    };
    // Low-class requests arrive every 100 ms; a large critical one arrives at 1 s and needs
    // most of the node's KV memory.
    // Each low one holds 66 000 tokens and low work may fill 3 of the 4 sequences, so
    // three of them leave too little KV for the critical one (200 000 of 320 000), and
    // whenever one finishes another low one fits the gap again.
    let mut rows: Vec<TraceRow> = (0..60).map(|i| row(i * 100, 65_600, 400, &[])).collect();
    rows.push(row(1_000, 200_000, 10, &[]));
    rows.sort_by_key(|r| r.arrival_ms);
    let mut w = Workload::new("t", &rows, kv_node(), &cfg).unwrap();
    for t in &mut w.tasks {
        let big = t.task.input_tokens == 200_000;
        t.task.constraints.priority = if big {
            Priority::Critical
        } else {
            Priority::Low
        };
    }
    let big = w
        .tasks
        .iter()
        .position(|t| t.task.input_tokens == 200_000)
        .unwrap();
    let out = run_policy(&w, &mut SwitchyardPolicy::new(&w.fleet, 1).unwrap(), &cfg);
    let r = &out.records[big];
    assert_eq!(r.status, TaskStatus::Completed);
    assert!(r.slo_met, "the critical request waited {} ms", r.e2e_ms);
    // Every request ended one way or another, and those that completed met their SLO or
    // were shed before they could not.
    let (done, shed) = out.records.iter().fold((0, 0), |(d, s), r| match r.status {
        TaskStatus::Completed => (d + 1, s),
        TaskStatus::Shed => (d, s + 1),
        TaskStatus::Failed => (d, s),
    });
    assert_eq!(done + shed, w.tasks.len());
}

#[test]
fn the_gateway_sheds_what_can_no_longer_meet_its_slo() {
    let cfg = SimConfig {
        prefix_cache: false,
        ..SimConfig::default()
    };
    // Twelve identical 10 s requests at once on a node of one sequence: the k-th waits k × 10 s
    // and its SLO is 5 × 10 s + 1 s, so from the sixth on they cannot make it.
    let fleet = FleetConfig {
        weights: switchyard::ScoringWeights::default(),
        capabilities: vec!["code".into(), "long-context".into()],
        nodes: vec![NodeSpec::new("solo")
            .capabilities(["code", "long-context"])
            .max_concurrency(1)
            .speed(0.0, 1_000.0, 1_000_000.0)],
    };
    let rows: Vec<TraceRow> = (0..12).map(|_| row(0, 10_000, 1, &[])).collect();
    let w = Workload::new("t", &rows, fleet, &cfg).unwrap();
    let out = run_policy(&w, &mut SwitchyardPolicy::new(&w.fleet, 1).unwrap(), &cfg);
    let completed: Vec<_> = out
        .records
        .iter()
        .filter(|r| r.status == TaskStatus::Completed)
        .collect();
    assert!(
        completed.iter().all(|r| r.slo_met),
        "only servable requests were served"
    );
    assert_eq!(completed.len(), 5, "{:?}", out.report);
    assert_eq!(out.report.shed, 7);
    // Behind the shared gateway model a peer policy's requests wait at the gateway too and
    // are shed by the same rule.
    let lif = run_policy(&w, &mut LeastInFlight, &cfg);
    assert_eq!((lif.report.completed, lif.report.shed), (5, 7));
    assert!(lif
        .records
        .iter()
        .all(|r| r.status != TaskStatus::Completed || r.slo_met));
    // Behind the per-policy model it dispatches everything, the node queues without bound,
    // and the SLO is missed instead.
    let per = SimConfig {
        gateway: GatewayModel::PerPolicy,
        ..cfg
    };
    let lif = run_policy(&w, &mut LeastInFlight, &per);
    assert_eq!(lif.report.shed, 0);
    assert!(lif.report.slo_attainment < 0.5);
}

/// Behind the shared gateway a peer policy never queues at a node: a task whose chosen node
/// is full waits at the gateway (and is retried, so the policy's pick is asked again), in
/// strict priority, and every peer is shed by the same SLO rule as the router.
#[test]
fn the_shared_gateway_holds_peer_policies_to_the_same_queue() {
    let (_, w, cfg) = burst();
    assert_eq!(cfg.gateway, GatewayModel::Shared, "the default");
    for name in POLICY_NAMES {
        let r = compare(&w, &[name], &cfg).unwrap();
        let p = &r.policies[0];
        assert_eq!(p.completed + p.failed + p.shed, 400, "{name}");
        assert_eq!(p.failed, 0, "{name}");
        // More than the fleet holds at once: some waited at the gateway (a first token
        // after more than the unloaded prefill of 0.5-1 s) and were placed later.
        assert!(
            p.ttft_p99_ms > 2_000.0,
            "{name}: ttft p99 {}",
            p.ttft_p99_ms
        );
        assert_eq!(r.gateway, GatewayModel::Shared);
    }
    // Per-policy, round robin sends each task once and the nodes queue the rest.
    let per = SimConfig {
        gateway: GatewayModel::PerPolicy,
        ..cfg.clone()
    };
    let rr = compare(&w, &["round_robin"], &per).unwrap();
    assert_eq!(rr.policies[0].decisions, 400);
    assert_eq!(rr.policies[0].shed, 0);
    // Waiting at the gateway for a node with room rather than in a node's queue behind the
    // round-robin pick serves the burst no later.
    let shared_rr = compare(&w, &["round_robin"], &cfg).unwrap();
    let per_p99 = rr.policies[0].e2e_p99_ms;
    assert!(
        shared_rr.policies[0].e2e_p99_ms <= per_p99,
        "shared {} vs per-policy {per_p99}",
        shared_rr.policies[0].e2e_p99_ms
    );
}

#[test]
fn a_spike_compresses_arrivals_and_is_reported() {
    use switchyard_sim::{Spike, SpikeReport};
    let spike = Spike::parse("2:1:4").unwrap();
    let cfg = SimConfig {
        spike: Some(spike),
        ..SimConfig::default()
    };
    // One request every 100 ms for 10 s: 40 of them land in the spike's 1 s window.
    let rows: Vec<TraceRow> = (0..100).map(|i| row(i * 100, 500, 20, &[])).collect();
    let w = Workload::new("t", &rows, default_fleet(), &cfg).unwrap();
    let inside = w
        .tasks
        .iter()
        .filter(|t| (2_000_000_000..3_000_000_000).contains(&t.arrival_ns))
        .count();
    assert_eq!(inside, 40);
    assert_eq!(
        w.tasks.last().unwrap().arrival_ns,
        6_900_000_000,
        "9.9 s - 3 s"
    );
    let out = run_policy(&w, &mut SwitchyardPolicy::new(&w.fleet, 1).unwrap(), &cfg);
    let r = SpikeReport::of(&w, &out, &spike);
    assert_eq!(r.arrived.iter().sum::<u64>(), 40);
    assert!((r.arrivals_per_s - 40.0).abs() < 1e-9);
    assert_eq!(r.admitted, r.arrived, "a light spike admits everything");
    assert!(r.utilization > 0.0 && r.utilization < 1.0);
    assert!(r.to_json().contains("\"demand_ratio\""));
}

#[test]
fn simulate_prints_a_spike_report_and_refuses_a_bad_spike() {
    let dir = tmpdir("spike");
    let trace = dir.join("t.csv");
    let mut s = String::from("arrival_ms,input_tokens,output_tokens\n");
    for i in 0..300 {
        s += &format!("{},{},{}\n", i * 50, 800 + i % 300, 20 + i % 50);
    }
    std::fs::write(&trace, s).unwrap();
    let json = dir.join("out.json");
    let out = bin()
        .args(["simulate", "--trace"])
        .arg(&trace)
        .args([
            "--load",
            "1",
            "--spike",
            "5:2:3",
            "--policy",
            "switchyard,round_robin",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("spike: arrivals x3 from 5 s for 2 s"),
        "{text}"
    );
    assert!(text
        .lines()
        .any(|l| l.starts_with("switchyard ") && l.contains('x')));
    let j = std::fs::read_to_string(&json).unwrap();
    assert!(j.contains("\"spike\":{\"switchyard\":{"), "{j}");
    for bad in ["5:2", "5:0:3", "x:1:2"] {
        let out = bin()
            .args(["simulate", "--trace"])
            .arg(&trace)
            .args(["--spike", bad])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("spike"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_simulated_gateway_shares_a_class_between_tenants_by_token_work() {
    use switchyard::{Priority, TenantId};
    let cfg = SimConfig {
        prefix_cache: false,
        slo_in_task: false,
        ..SimConfig::default()
    };
    let fleet = FleetConfig {
        weights: switchyard::ScoringWeights::default(),
        capabilities: vec!["code".into(), "long-context".into()],
        nodes: vec![NodeSpec::new("solo")
            .capabilities(["code", "long-context"])
            .max_concurrency(1)
            .speed(0.0, 1_000.0, 1_000_000.0)],
    };
    // Tenant 1 floods 30 requests at 0 ms; tenant 2 sends 3 at 1 ms, same class and size.
    let mut rows: Vec<TraceRow> = (0..30).map(|_| row(0, 1_000, 1, &[])).collect();
    rows.extend((0..3).map(|_| row(1, 1_000, 1, &[])));
    let mut w = Workload::new("t", &rows, fleet, &cfg).unwrap();
    for (k, t) in w.tasks.iter_mut().enumerate() {
        t.task.constraints.priority = Priority::Normal;
        t.task.tenant = Some(TenantId(if k < 30 { 1 } else { 2 }));
    }
    let out = run_policy(&w, &mut SwitchyardPolicy::new(&w.fleet, 1).unwrap(), &cfg);
    assert_eq!(out.report.completed, 33);
    // Served alternately while both wait: tenant 2's requests finish among the first seven,
    // not after the flood (about 31 s).
    for r in &out.records[30..] {
        assert!(
            r.e2e_ms < 8_000.0,
            "tenant 2 waited behind the flood: {} ms",
            r.e2e_ms
        );
    }
}
