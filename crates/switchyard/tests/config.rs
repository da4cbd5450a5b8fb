//! Configuration files and hot reload through the public API: the documented example file is
//! the built-in fleet, a reload adds, updates and removes nodes without losing a lease or a
//! counter, and an invalid config changes nothing.
// Not library code: std's primitives are fine here (the shim rule is for src/).
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use switchyard::config::{NodeConfig, ReloadReport};
use switchyard::{Config, ConfigError, Lease, ManualClock, NodeMetrics, RouteError, Router, Task};

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet.toml")
}

fn example() -> Config {
    Config::load(&example_path()).expect("examples/fleet.toml loads")
}

fn router(cfg: &Config) -> Router {
    cfg.to_builder()
        .clock(Arc::new(ManualClock::new()))
        .seed(3)
        .build()
        .expect("the config builds")
}

fn metrics(r: &Router) -> HashMap<String, NodeMetrics> {
    r.node_metrics()
        .into_iter()
        .map(|m| (m.name.clone(), m))
        .collect()
}

fn node_of(r: &Router, lease: &Lease) -> String {
    r.snapshot()
        .node_name(lease.route().head())
        .expect("the lease's node is in the snapshot")
        .to_string()
}

#[test]
fn the_example_files_sample_error_is_what_a_nan_weight_gives() {
    let text = std::fs::read_to_string(example_path()).unwrap();
    // The header of the file quotes this message; keep the two in step.
    let sample = text
        .lines()
        .find_map(|l| l.strip_prefix("#   fleet.toml:"))
        .map(|rest| format!("fleet.toml:{rest}"))
        .expect("the file quotes a sample error");
    let line: usize = sample.split(':').nth(1).unwrap().parse().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[line - 1], "weight = 1.0");
    let mut broken = lines.clone();
    broken[line - 1] = "weight = nan";
    let e = Config::parse("fleet.toml", &broken.join("\n")).unwrap_err();
    assert_eq!(e.to_string(), sample);
    assert_eq!((e.line(), e.field()), (Some(line), Some("weight")));
    assert!(matches!(
        e.config_error(),
        Some(ConfigError::InvalidNumber {
            field: "weight",
            ..
        })
    ));
}

#[test]
fn errors_in_a_file_name_the_file_line_and_field() {
    let dir = std::env::temp_dir().join(format!("switchyard-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "capabilities = [\"chat\"]\n\n[[node]]\nname = \"a\"\nmax_concurrency = 0\n",
    )
    .unwrap();
    let e = Config::load(&path).unwrap_err();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(e.file(), path.display().to_string());
    assert_eq!((e.line(), e.field()), (Some(5), Some("max_concurrency")));
    assert!(
        e.to_string()
            .ends_with(":5: node \"a\": field `max_concurrency`: must be greater than zero"),
        "{e}"
    );
    let e = Config::load(&dir.join("missing.toml")).unwrap_err();
    assert_eq!(e.line(), None);
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn reload_keeps_leases_and_counters_and_drains_removed_nodes() {
    let v1 = example();
    let r = router(&v1);
    // Hold leases until the node to be updated and the node to be removed both have some.
    let mut reader = r.reader();
    let mut leases: Vec<(String, Lease)> = Vec::new();
    for i in 0..384 {
        let (_, lease) = reader.route(&Task::new(i, 200, 20)).unwrap();
        leases.push((node_of(&r, &lease), lease));
        let has = |n: &str| leases.iter().any(|(name, _)| name == n);
        if has("a100-0") && has("l4-3") && has("h100-0") {
            break;
        }
    }
    let held = |n: &str| leases.iter().filter(|(name, _)| name == n).count() as u64;
    assert!(held("a100-0") > 0 && held("l4-3") > 0 && held("h100-0") > 0);
    let before = metrics(&r);
    let epoch = r.snapshot().epoch();

    // v2: `l4-3` removed, `a100-0` given twice the concurrency, `b200-0` added, a chain.
    let mut v2 = v1.clone();
    v2.nodes.retain(|n| n.name != "l4-3");
    let a100 = v2.nodes.iter_mut().find(|n| n.name == "a100-0").unwrap();
    a100.max_concurrency = Some(96);
    v2.nodes.push(NodeConfig {
        name: "b200-0".into(),
        capabilities: vec!["chat".into(), "code".into(), "long-context".into()],
        max_concurrency: Some(128),
        ..NodeConfig::default()
    });
    v2.chains.push(switchyard::config::ChainConfig {
        name: "guarded".into(),
        stages: vec!["l4-0".into(), "b200-0".into()],
        capabilities: vec![],
    });
    let report = r.apply_config(&v2).unwrap();
    assert_eq!(
        report,
        ReloadReport {
            added: 1,
            updated: 1,
            removed: 1,
            chains: 1,
            epoch: r.snapshot().epoch(),
            added_nodes: vec!["b200-0".into()],
            updated_nodes: vec!["a100-0".into()],
            removed_nodes: vec!["l4-3".into()],
        }
    );
    assert!(report.epoch > epoch);
    let snap = r.snapshot();
    assert_eq!(snap.node_count(), 10);
    assert_eq!(snap.route_count(), 11);
    assert!(snap.node_id("l4-3").is_none() && snap.node_id("b200-0").is_some());
    assert_eq!(r.node_specs(), v2.node_specs());

    // Nodes that stay keep their live counters; the removed one drains with its leases.
    let after = metrics(&r);
    for name in ["a100-0", "h100-0"] {
        let (b, a) = (&before[name], &after[name]);
        assert_eq!(a.in_flight, held(name), "{name}");
        assert_eq!((a.in_flight, a.leases), (b.in_flight, b.leases), "{name}");
        assert!(!a.draining);
    }
    assert!(after["l4-3"].draining);
    assert_eq!(after["l4-3"].in_flight, held("l4-3"));
    assert_eq!(after["b200-0"].in_flight, 0);
    // The updated node now takes up to 96 at once: its utilisation is measured against that.
    let a = &after["a100-0"];
    assert!((a.utilization - held("a100-0") as f64 / 96.0).abs() < 1e-9);

    // New tasks route on the new fleet, never to the removed node.
    for i in 0..50 {
        let (_, lease) = reader.route(&Task::new(1_000 + i, 200, 20)).unwrap();
        assert_ne!(node_of(&r, &lease), "l4-3");
        leases.push((node_of(&r, &lease), lease));
    }

    // An invalid config is refused whole: no epoch, no node, no capability changes.
    let epoch = r.snapshot().epoch();
    let mut bad = v1.clone();
    bad.capabilities.push("vision".into());
    bad.nodes.retain(|n| n.name != "h100-0");
    bad.nodes[3].weight = Some(f64::NAN);
    let e = r.apply_config(&bad).unwrap_err();
    assert_eq!(e.field(), Some("weight"), "{e}");
    assert!(e.file().ends_with("fleet.toml"), "{e}");
    assert!(e.line().is_some(), "{e}");
    assert_eq!(r.snapshot().epoch(), epoch);
    assert_eq!(r.node_specs(), v2.node_specs());
    r.tick();
    assert!(r.resolve(&["vision"]).is_err());

    // Text that does not parse never reaches the router.
    let text = std::fs::read_to_string(example_path()).unwrap();
    let e = Config::parse(
        "fleet.toml",
        &text.replace("max_concurrency = 64", "max_concurrency = \"64\""),
    )
    .unwrap_err();
    assert!(e.to_string().starts_with("fleet.toml:"), "{e}");
    assert_eq!(e.field(), Some("max_concurrency"));

    // Dropping every lease empties every ledger, the drained node's included; it then leaves.
    leases.clear();
    assert!(r.ledgers_are_zero());
    assert_eq!(r.in_flight(), 0);
    r.tick();
    assert!(!metrics(&r).contains_key("l4-3"));

    // And back to v1: `l4-3` returns, `b200-0` and the chain go.
    let report = r.apply_config(&v1).unwrap();
    assert_eq!(
        (report.added, report.updated, report.removed, report.chains),
        (1, 1, 1, 1)
    );
    assert_eq!(r.snapshot().node_count(), 10);
    assert_eq!(r.snapshot().route_count(), 10);
    assert!(r.ledgers_are_zero());
}

#[test]
fn reloads_never_fail_a_task_the_fleet_can_serve() {
    let v1 = example();
    let mut v2 = v1.clone();
    v2.nodes.retain(|n| !n.name.starts_with("l4-"));
    for n in &mut v2.nodes {
        n.max_concurrency = n.max_concurrency.map(|c| c / 2);
    }
    let r = router(&v1);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|t| {
            let (r, stop) = (r.clone(), stop.clone());
            thread::spawn(move || {
                let mut reader = r.reader();
                let chat = r.resolve(&["chat"]).unwrap();
                let mut held = Vec::new();
                let (mut ok, mut i) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) || i < 1_000 {
                    i += 1;
                    match reader.route(&Task::new(t * 1_000_000 + i, 100, 10).require(chat)) {
                        Ok((_, lease)) => {
                            ok += 1;
                            held.push(lease);
                            if held.len() > 16 {
                                drop(held.remove(0));
                            }
                        }
                        // Capacity shrank under it, or its snapshot lost the node meanwhile.
                        Err(RouteError::Saturated | RouteError::StaleRoute) => {}
                        Err(e) => panic!("task {i}: {e}"),
                    }
                }
                ok
            })
        })
        .collect();
    for k in 0..40 {
        let cfg = if k % 2 == 0 { &v2 } else { &v1 };
        r.apply_config(cfg).unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        assert!(w.join().unwrap() > 0);
    }
    assert!(r.ledgers_are_zero());
    assert_eq!(r.node_specs(), v1.node_specs());
}

const ADMISSION: &str = r#"
capabilities = ["chat"]

[admission]
headroom = [1.0, 1.0, 0.5, 0.5]
lease_timeout_ms = 100
lease_slots = 64

[[node]]
name = "a"
capabilities = ["chat"]
max_concurrency = 4

[[tenant]]
id = 7
max_tokens_per_second = 1000
token_burst_seconds = 1

[[tenant]]
id = 8
max_tokens_per_second = 0
"#;

#[test]
fn admission_settings_and_tenant_rates_come_from_the_file() {
    let cfg = Config::parse("adm.toml", ADMISSION).unwrap();
    assert_eq!(cfg.admission.lease_timeout_ms, 100);
    assert_eq!(cfg.tenants.len(), 2);
    assert_eq!(cfg.tenants[1].token_burst_seconds, 1.0, "the default burst");
    let clock = ManualClock::new();
    let r = cfg
        .to_builder()
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    clock.advance_ms(10_000);
    let mut reader = r.reader();
    // Headroom: normal work may fill half of 4 slots.
    let normal: Vec<_> = (0..3).map(|i| reader.route(&Task::new(i, 1, 1))).collect();
    assert!(normal[0].is_ok() && normal[1].is_ok());
    assert_eq!(normal[2].as_ref().unwrap_err(), &RouteError::Saturated);
    drop(normal);
    // Tenant 7's rate: 1000 tokens of burst.
    let t7 = |id| {
        Task::new(id, 400, 100)
            .tenant(switchyard::TenantId(7))
            .priority(switchyard::Priority::Critical)
    };
    let first = reader.route(&t7(10)).unwrap();
    let second = reader.route(&t7(11)).unwrap();
    assert_eq!(
        reader.route(&t7(12)).unwrap_err(),
        RouteError::TenantRateLimited
    );
    // The lease timeout: reclaimed by a tick 100 ms on.
    clock.advance_ms(100);
    r.tick();
    assert_eq!(r.lease_counts().0, 2);
    drop((first, second));

    // A reload lifts tenant 7's limit (no longer listed) and restores the default headroom.
    let relaxed = ADMISSION
        .replace("headroom = [1.0, 1.0, 0.5, 0.5]\n", "")
        .replace(
            "[[tenant]]\nid = 7\nmax_tokens_per_second = 1000\ntoken_burst_seconds = 1\n",
            "",
        );
    r.apply_config(&Config::parse("adm.toml", &relaxed).unwrap())
        .unwrap();
    assert!(reader.route(&t7(13)).is_ok());
    assert!(reader.route(&t7(14)).is_ok());
    assert!(
        reader.route(&Task::new(15, 1, 1)).is_ok(),
        "85 % of 4 = 3 normal slots"
    );
}

#[test]
fn bad_admission_and_tenant_entries_name_their_line_and_field() {
    let cases = [
        (
            "headroom = [1.0, 1.0, 0.5, 0.5]",
            "headroom = [1.0, 1.0, 0.5, 0.9]",
            5,
            "headroom",
        ),
        ("lease_slots = 64", "lease_slots = 0", 7, "lease_slots"),
        (
            "max_tokens_per_second = 1000",
            "max_tokens_per_second = -1",
            16,
            "max_tokens_per_second",
        ),
        (
            "token_burst_seconds = 1",
            "token_burst_seconds = 0",
            17,
            "token_burst_seconds",
        ),
        ("id = 8", "id = 7", 20, "id"),
        ("id = 8", "id = 5000", 20, "id"),
    ];
    for (from, to, line, field) in cases {
        let text = ADMISSION.replace(from, to);
        let e = Config::parse("adm.toml", &text).unwrap_err();
        assert_eq!(e.line(), Some(line), "{to}: {e}");
        assert_eq!(e.field(), Some(field), "{to}: {e}");
        assert!(
            e.to_string().starts_with(&format!("adm.toml:{line}:")),
            "{e}"
        );
    }
}

#[test]
fn models_become_capabilities_and_gateway_tables_are_left_to_the_gateway() {
    let cfg = Config::parse(
        "gw.toml",
        r#"
[gateway]
listen = "127.0.0.1:8080"

[fleet]
redis = "redis://127.0.0.1:6379"

[[node]]
name = "a"
url = "http://127.0.0.1:9001"
models = ["llama-8b", "qwen-7b"]

[[node]]
name = "b"
url = "http://127.0.0.1:9002"
models = ["qwen-7b"]

[[node]]
name = "c"
"#,
    )
    .unwrap();
    assert_eq!(cfg.models(), ["llama-8b", "qwen-7b"]);
    assert_eq!(
        cfg.node_urls(),
        [
            ("a", "http://127.0.0.1:9001"),
            ("b", "http://127.0.0.1:9002")
        ]
    );
    let gw = cfg.gateway.as_ref().unwrap();
    assert_eq!(gw["listen"].as_str(), Some("127.0.0.1:8080"));
    assert!(cfg.fleet.is_some());
    let r = router(&cfg);
    let llama = r.resolve(&["llama-8b"]).unwrap();
    let qwen = r.resolve(&["qwen-7b"]).unwrap();
    let mut reader = r.reader();
    for _ in 0..20 {
        let (_, lease) = reader.route(&Task::new(1, 10, 1).require(llama)).unwrap();
        assert_eq!(r.snapshot().node_name(lease.route().head()), Some("a"));
    }
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..50 {
        let (_, lease) = reader.route(&Task::new(i, 10, 1).require(qwen)).unwrap();
        seen.insert(
            r.snapshot()
                .node_name(lease.route().head())
                .unwrap()
                .to_string(),
        );
    }
    assert!(!seen.contains("c"), "c serves no model: {seen:?}");
    assert!(r.resolve(&["no-such-model"]).is_err());
}

/// A config with no node (an empty or truncated file, as an editor saving in place leaves for
/// a moment) is refused with a typed error, and the running fleet stays. This once failed:
/// the reload was accepted and removed every node, so every task then found no route.
#[test]
fn a_reload_with_no_node_is_refused_and_the_fleet_stays() {
    let v1 = Config::parse(
        "v1.toml",
        "[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\n",
    )
    .unwrap();
    let r = router(&v1);
    let epoch = r.snapshot().epoch();
    for (name, text) in [
        ("empty.toml", ""),
        ("blank.toml", "\n\n   \n"),
        ("partial.toml", "[weights]\nload = 2.0\n"),
    ] {
        let cfg = Config::parse(name, text).unwrap();
        let e = r.apply_config(&cfg).unwrap_err();
        assert_eq!(
            e.config_error(),
            Some(&ConfigError::EmptyFleet),
            "{name}: {e}"
        );
        assert_eq!(e.file(), name);
        assert!(e.to_string().contains("no node"), "{e}");
        let snap = r.snapshot();
        assert_eq!(snap.node_count(), 2, "{name} changed the fleet");
        assert_eq!(snap.epoch(), epoch, "{name} published a snapshot");
        assert_eq!(r.node_specs(), v1.node_specs());
    }
    assert!(r.reader().route(&Task::new(1, 10, 10)).is_ok());
}

/// A reload report prints as one readable line naming what changed.
#[test]
fn a_reload_report_displays_on_one_line() {
    let v1 = Config::parse(
        "v1.toml",
        "[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\n",
    )
    .unwrap();
    let r = router(&v1);
    let v2 = Config::parse(
        "v2.toml",
        "[[node]]\nname = \"a\"\nmax_concurrency = 8\n[[node]]\nname = \"c\"\n[[node]]\nname = \"d\"\n",
    )
    .unwrap();
    let report = r.apply_config(&v2).unwrap();
    assert_eq!(
        (
            &report.added_nodes,
            &report.updated_nodes,
            &report.removed_nodes
        ),
        (
            &vec!["c".to_string(), "d".to_string()],
            &vec!["a".to_string()],
            &vec!["b".to_string()]
        )
    );
    assert_eq!(
        report.to_string(),
        format!(
            "reload: epoch {}: added 2 (c, d), updated 1 (a), removed 1 (b), chains changed 0",
            report.epoch
        )
    );
    let same = r.apply_config(&v2).unwrap();
    assert_eq!(
        same.to_string(),
        format!(
            "reload: epoch {}: added 0, updated 0, removed 0, chains changed 0",
            same.epoch
        )
    );
}

/// A reload is published as one snapshot: a thread ticking as fast as it can meanwhile (a
/// dispatcher's control thread) only ever publishes the old fleet or the whole new one. This
/// once failed: the reload added, updated and removed nodes one change at a time, each under
/// its own hold of the control lock, so a tick in between published "a", "b" and "c" at once
/// (the new node added, the old one not yet removed).
#[test]
fn a_tick_during_a_reload_never_publishes_a_half_applied_fleet() {
    let v1 = Config::parse(
        "v1.toml",
        "[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\n",
    )
    .unwrap();
    let v2 = Config::parse(
        "v2.toml",
        "[[node]]\nname = \"a\"\nmax_concurrency = 8\n[[node]]\nname = \"c\"\n",
    )
    .unwrap();
    let r = router(&v1);
    let stop = Arc::new(AtomicBool::new(false));
    let ticked = Arc::new(AtomicU64::new(0));
    let ticker = {
        let (r, stop, ticked) = (r.clone(), Arc::clone(&stop), Arc::clone(&ticked));
        thread::spawn(move || {
            let mut bad = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                r.tick();
                ticked.fetch_add(1, Ordering::Relaxed);
                let snap = r.snapshot();
                let has = |n: &str| snap.node_id(n).is_some();
                let fleet = (has("a"), has("b"), has("c"));
                if !matches!(fleet, (true, true, false) | (true, false, true)) {
                    bad.push((snap.epoch(), fleet));
                }
            }
            bad
        })
    };
    // On a loaded machine the ticker may start late: reload until it has ticked often enough
    // to have raced the reloads (bounded, so a ticker that never runs fails instead of hanging).
    let mut k = 0u64;
    while k < 400 || (ticked.load(Ordering::Relaxed) < 50 && k < 1_000_000) {
        let cfg = if k % 2 == 0 { &v2 } else { &v1 };
        r.apply_config(cfg).unwrap();
        k += 1;
    }
    if k % 2 == 1 {
        r.apply_config(&v1).unwrap(); // end on v1
    }
    stop.store(true, Ordering::Relaxed);
    let bad = ticker.join().unwrap();
    let ticks = ticked.load(Ordering::Relaxed);
    assert!(
        ticks >= 50,
        "the ticker ticked {ticks} times in {k} reloads"
    );
    assert!(
        bad.is_empty(),
        "{} of {ticks} ticks published a half-applied fleet (epoch, (a, b, c)): {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    assert_eq!(r.node_specs(), v1.node_specs());
    assert!(r.ledgers_are_zero());
}

/// A reload that updates a node keeps everything the node has learned: its outcome counts,
/// latency EWMA, health verdict and token-rate schedule (they live in the node's live state,
/// which an update keeps).
#[test]
fn a_hot_reload_keeps_outcomes_latency_health_and_token_rate() {
    let v1 = Config::parse(
        "v1.toml",
        "capabilities = [\"x\"]\n\
         [[node]]\nname = \"a\"\ncapabilities = [\"x\"]\nmax_tokens_per_second = 1000.0\n\
         [[node]]\nname = \"b\"\n",
    )
    .unwrap();
    let clock = ManualClock::new();
    let r = v1
        .to_builder()
        .clock(Arc::new(clock.clone()))
        .seed(3)
        .build()
        .unwrap();
    clock.advance_ms(10_000);
    let needs_a = Task::new(1, 80, 20).require(r.resolve(&["x"]).unwrap());
    let mut reader = r.reader();
    // Five tasks of 100 tokens on "a": half of its 1000-token burst.
    for i in 0..5 {
        let (_, lease) = reader.route(&needs_a).unwrap();
        let outcome = if i < 4 {
            switchyard::Outcome::Success
        } else {
            switchyard::Outcome::ServerError
        };
        lease.complete(outcome, 40.0 + i as f64);
    }
    r.set_health("b", switchyard::HealthStatus::Failed).unwrap();
    r.tick();
    let b = r.snapshot().node_id("b").unwrap();
    assert_eq!(
        r.snapshot().node_status(b),
        Some(switchyard::HealthStatus::Failed)
    );
    let before = metrics(&r);
    let health_before: HashMap<String, _> = r
        .node_health()
        .into_iter()
        .map(|h| (h.node.clone(), h.status))
        .collect();
    assert!(before["a"].latency_ewma_ms > 0.0);

    // v2 changes both nodes' concurrency (an update, not a re-add) and adds "c".
    let v2 = Config::parse(
        "v2.toml",
        "capabilities = [\"x\"]\n\
         [[node]]\nname = \"a\"\ncapabilities = [\"x\"]\nmax_tokens_per_second = 1000.0\nmax_concurrency = 16\n\
         [[node]]\nname = \"b\"\nmax_concurrency = 16\n\
         [[node]]\nname = \"c\"\n",
    )
    .unwrap();
    let report = r.apply_config(&v2).unwrap();
    assert_eq!((report.updated, report.added), (2, 1), "{report}");
    let after = metrics(&r);
    for n in ["a", "b"] {
        assert_eq!(after[n].outcomes, before[n].outcomes, "{n}'s outcomes");
        assert_eq!(
            after[n].latency_ewma_ms, before[n].latency_ewma_ms,
            "{n}'s EWMA"
        );
    }
    let health_after: HashMap<String, _> = r
        .node_health()
        .into_iter()
        .map(|h| (h.node.clone(), h.status))
        .collect();
    assert_eq!(health_after["a"], health_before["a"]);
    assert_eq!(health_after["b"], switchyard::HealthStatus::Failed);
    assert_eq!(
        r.snapshot().node_status(b),
        Some(switchyard::HealthStatus::Failed)
    );
    // The rate kept its schedule: five more tasks fill the burst, a sixth does not fit (a
    // reset schedule would take ten).
    for i in 0..5 {
        let (_, lease) = reader
            .route(&needs_a)
            .unwrap_or_else(|e| panic!("task {i}: {e}"));
        drop(lease);
    }
    assert_eq!(reader.route(&needs_a).unwrap_err(), RouteError::Saturated);
}
