//! Unit tests of the config module: parsing, locating errors, the text scan and reload.
use std::path::Path;

use super::locate::{line_col, Layout};
use super::*;
use crate::{ManualClock, Task};

const FULL: &str = r#"
# A full example.
capabilities = ["chat", "code", "long-context"]

[weights]
load = 1.5
cost = 0.5
capability = 0.75
alternatives = 3
slack = 0.25
slo_target = 0.95

[[node]]
name = "gpu-1"
capabilities = ["chat", "code", "long-context"]
capability_scores = { code = 0.9, chat = 0.8 }
max_concurrency = 64
max_tokens_in_flight = 1_000_000
memory_mb = 60000
cpu_cores = 8
gpus = 1.0
cpu_per_task = 0.5
gpu_per_task = 0.125
kv_mb_per_1k_tokens = 160.0
base_latency_ms = 15.0
prefill_tokens_per_sec = 12000.0
decode_tokens_per_sec = 60.0
batch_slowdown = 0.5
cost_per_1k_tokens = 2.0
weight = 1.25

[[node]]
name = "guard"
capabilities = ["chat"]

[node.capability_scores]
chat = 0.5

[[chain]]
name = "guarded-code"
stages = ["guard", "gpu-1"]
capabilities = ["code"]

[[chain]]
name = "plain"
stages = ["gpu-1"]
"#;

fn err(text: &str) -> ConfigFileError {
    match Config::parse("fleet.toml", text) {
        Ok(c) => panic!("accepted: {c:?}"),
        Err(e) => e,
    }
}

/// The error names the file, the line and the field, in the message as well.
fn check(e: &ConfigFileError, line: usize, field: &str) {
    let shown = e.to_string();
    assert_eq!(e.file(), "fleet.toml", "{shown}");
    assert_eq!(e.line(), Some(line), "{shown}");
    assert_eq!(e.field(), Some(field), "{shown}");
    assert!(shown.starts_with(&format!("fleet.toml:{line}")), "{shown}");
    assert!(shown.contains(&format!("field `{field}`")), "{shown}");
}

#[test]
fn parses_a_full_example() {
    let cfg = Config::parse("fleet.toml", FULL).unwrap();
    assert_eq!(cfg.source_name(), "fleet.toml");
    assert_eq!(cfg.capabilities, ["chat", "code", "long-context"]);
    assert_eq!(
        cfg.scoring_weights(),
        ScoringWeights {
            load: 1.5,
            cost: 0.5,
            capability: 0.75,
            alternatives: 3,
            affinity: 0.75,
            slack: 0.25,
            slo_target: 0.95,
        }
    );
    let specs = cfg.node_specs();
    let want = NodeSpec::new("gpu-1")
        .capabilities(["chat", "code", "long-context"])
        .capability_score("chat", 0.8)
        .capability_score("code", 0.9)
        .max_concurrency(64)
        .max_tokens_in_flight(1_000_000)
        .memory(60_000, 160.0)
        .compute(8.0, 0.5, 1.0, 0.125)
        .speed(15.0, 12_000.0, 60.0)
        .batch_slowdown(0.5)
        .cost_per_1k_tokens(2.0)
        .weight(1.25);
    assert_eq!(specs[0], want);
    assert_eq!(
        specs[1],
        NodeSpec::new("guard")
            .capabilities(["chat"])
            .capability_score("chat", 0.5)
    );
    assert_eq!(
        cfg.chain_specs(),
        vec![
            ChainSpec::new("guarded-code", ["guard", "gpu-1"]).capabilities(["code"]),
            ChainSpec::new("plain", ["gpu-1"]),
        ]
    );
    let r = cfg.build_router(1).unwrap();
    let snap = r.snapshot();
    assert_eq!((snap.node_count(), snap.route_count()), (2, 4));
    let long = r.resolve(&["long-context"]).unwrap();
    let (routes, lease) = r
        .reader()
        .route(&Task::new(1, 100, 10).require(long))
        .unwrap();
    assert!(snap.route_name(routes.primary().route.route).is_some());
    drop(lease);
    assert!(r.ledgers_are_zero());
    // The builder gives the same fleet.
    let b = cfg.to_builder().build().unwrap();
    assert_eq!(b.node_specs(), r.node_specs());
}

#[test]
fn defaults_are_node_spec_new_and_scoring_weights_default() {
    let cfg = Config::parse("fleet.toml", "[[node]]\nname = \"a\"\n").unwrap();
    assert_eq!(cfg.node_specs(), vec![NodeSpec::new("a")]);
    assert_eq!(cfg.scoring_weights(), ScoringWeights::default());
    assert!(cfg.chains.is_empty() && cfg.capabilities.is_empty());
    let cfg = Config::parse("fleet.toml", "[weights]\ncost = 1\n").unwrap();
    assert_eq!(
        cfg.scoring_weights(),
        ScoringWeights {
            cost: 1.0,
            ..ScoringWeights::default()
        }
    );
    // An empty file is an empty fleet.
    let cfg = Config::parse("fleet.toml", "").unwrap();
    assert_eq!(cfg, Config::default());
    assert_eq!(cfg.build_router(0).unwrap().snapshot().node_count(), 0);
}

#[test]
fn syntax_errors_name_the_line() {
    let e = err("capabilities = [\"chat\"]\n\n[[node]]\nname = \"a\nweight = 1\n");
    assert_eq!(e.line(), Some(4), "{e}");
    assert!(e.to_string().starts_with("fleet.toml:4:"), "{e}");
    assert!(e.column().is_some());
    assert!(std::error::Error::source(&e).is_some());
    let e = err("[[node]]\nname = \"a\"\nweight = = 1\n");
    assert!(e.to_string().starts_with("fleet.toml:3:"), "{e}");
}

#[test]
fn type_errors_name_the_field() {
    let e = err("[[node]]\nname = \"a\"\n\nweight = \"heavy\"\n");
    check(&e, 4, "weight");
    assert_eq!(e.context(), Some("node \"a\""));
    assert!(e.message().contains("invalid type"), "{e}");
    let e = err("[[node]]\nname = \"a\"\nmax_concurrency = -1\n");
    check(&e, 3, "max_concurrency");
    let e = err("capabilities = [\"chat\", 7]\n");
    check(&e, 1, "capabilities");
    let e = err("[[node]]\nname = \"a\"\ncapabilities = [\n  \"chat\",\n  3,\n]\n");
    check(&e, 5, "capabilities");
    let e = err("[weights]\nload = \"x\"\n");
    check(&e, 2, "weights.load");
    let e = err("[[node]]\nname = \"a\"\ncapability_scores = { code = \"x\" }\n");
    assert_eq!(e.line(), Some(3), "{e}");
    assert!(e.field().unwrap().starts_with("capability_scores"), "{e}");
}

#[test]
fn unknown_and_missing_fields_are_errors() {
    let e = err("[[node]]\nname = \"a\"\nwieght = 2.0\n");
    check(&e, 3, "wieght");
    assert!(e.message().contains("unknown field"), "{e}");
    let e = err("capabilities = []\n[weights]\nlaod = 1\n");
    check(&e, 3, "weights.laod");
    let e = err("capabilitys = [\"chat\"]\n");
    check(&e, 1, "capabilitys");
    let e = err("[[chain]]\nname = \"c\"\nstages = [\"a\"]\nstage = 1\n");
    check(&e, 4, "stage");
    let e = err("[[node]]\nmax_concurrency = 4\n");
    assert_eq!(e.field(), Some("name"), "{e}");
    assert!(e.line().is_some_and(|l| l <= 2), "{e}");
    assert!(e.message().contains("missing field"), "{e}");
}

#[test]
fn invalid_numbers_name_node_line_and_field() {
    let text = "capabilities = [\"chat\"]\n\n[[node]]\nname = \"gpu-0\"\n\n[[node]]\nname = \"gpu-1\"\ncapabilities = [\"chat\"]\nweight = nan\n";
    let e = err(text);
    check(&e, 9, "weight");
    assert_eq!(
        e.to_string(),
        "fleet.toml:9: node \"gpu-1\": field `weight`: must be finite and in range, got NaN"
    );
    assert!(matches!(
        e.config_error(),
        Some(ConfigError::InvalidNumber {
            field: "weight",
            ..
        })
    ));
    assert!(std::error::Error::source(&e).is_some());
    check(&err("[[node]]\nname = \"a\"\nweight = -1.0\n"), 3, "weight");
    check(
        &err("[[node]]\nname = \"a\"\nbase_latency_ms = inf\n"),
        3,
        "base_latency_ms",
    );
    check(
        &err("[[node]]\nname = \"a\"\ncpu_per_task = -0.5\n"),
        3,
        "cpu_per_task",
    );
    check(&err("[weights]\nload = -1\n"), 2, "weights.load");
    check(
        &err("[weights]\nalternatives = 9\n"),
        2,
        "weights.alternatives",
    );
    check(&err("weights.capability = 2.0\n"), 1, "weights.capability");
    let e = err("capabilities = [\"code\"]\n[[node]]\nname = \"a\"\ncapabilities = [\"code\"]\ncapability_scores = { code = 1.5 }\n");
    check(&e, 5, "capability_scores.code");
    let e = err("capabilities = [\"code\"]\n[[node]]\nname = \"a\"\ncapabilities = [\"code\"]\n[node.capability_scores]\ncode = -1\n");
    check(&e, 6, "capability_scores.code");
}

#[test]
fn capacities_name_the_field_or_the_node() {
    check(
        &err("[[node]]\nname = \"a\"\nmax_concurrency = 0\n"),
        3,
        "max_concurrency",
    );
    check(
        &err("[[node]]\nname = \"a\"\nmemory_mb = 0\n"),
        3,
        "memory_mb",
    );
    check(
        &err("[[node]]\nname = \"a\"\nmax_concurrency = 70000\n"),
        3,
        "max_concurrency",
    );
    // `cpu_cores` is not written: the node's name line stands in.
    let e = err("[[node]]\n# a node\nname = \"a\"\ncpu_per_task = 1.0\n");
    check(&e, 3, "cpu_cores");
    assert!(e.message().contains("greater than zero"), "{e}");
}

#[test]
fn names_and_references_are_checked() {
    let e = err("capabilities = [\"chat\"]\n[[node]]\nname = \"a\"\ncapabilities = [\"chat\", \"vision\"]\n");
    check(&e, 4, "capabilities");
    assert!(e.message().contains("vision"), "{e}");
    let e = err("[[node]]\nname = \"a\"\ncapability_scores = { vision = 0.5 }\n");
    check(&e, 3, "capability_scores.vision");
    let e = err("[[node]]\nname = \"a\"\n[[node]]\nname = \"b\"\n[[node]]\nname = \"a\"\n");
    check(&e, 6, "name");
    assert!(e.message().contains("duplicate node"), "{e}");
    let e = err("[[node]]\nname = \"  \"\n");
    check(&e, 2, "name");
    let e = err("[[node]]\nname = \"a\"\n[[chain]]\nname = \"c\"\nstages = [\"a\", \"b\"]\n");
    check(&e, 5, "stages");
    assert_eq!(e.context(), Some("chain \"c\""));
    assert!(e.message().contains("\"b\""), "{e}");
    check(
        &err("[[node]]\nname = \"a\"\n[[chain]]\nname = \"c\"\nstages = []\n"),
        5,
        "stages",
    );
    let e = err("[[node]]\nname = \"a\"\n[[chain]]\nname = \"c\"\nstages = [\"a\"]\n[[chain]]\nname = \"c\"\nstages = [\"a\"]\n");
    check(&e, 7, "name");
    let e = err("[[node]]\nname = \"a\"\n[[chain]]\nname = \"c\"\nstages = [\"a\"]\ncapabilities = [\"x\"]\n");
    check(&e, 6, "capabilities");
    check(&err("capabilities = [\"a\", \"\"]\n"), 1, "capabilities");
    let many: Vec<String> = (0..300).map(|i| format!("\"c{i}\"")).collect();
    check(
        &err(&format!("\n\ncapabilities = [{}]\n", many.join(","))),
        3,
        "capabilities",
    );
}

#[test]
fn inline_tables_and_odd_layouts_still_get_a_line() {
    // Nodes written as an inline array: the line of `node`.
    let e = err("node = [\n  { name = \"a\" },\n  { name = \"b\", weight = 0 },\n]\n");
    assert_eq!(e.field(), Some("weight"), "{e}");
    assert_eq!(e.line(), Some(1), "{e}");
    // Strings that look like headers or keys do not confuse the scan.
    let text = "capabilities = [\"chat\"] # [[node]]\n[[node]]\nname = \"\"\"x\n[[node]]\nweight = 1\"\"\"\n'quoted' = 1\n";
    let e = err(text);
    check(&e, 6, "quoted");
    let text = "[[node]]\nname = 'a # not a comment'\nweight = 0\n";
    check(&err(text), 3, "weight");
    // A changed config still names the file; the line follows the entry's name.
    let mut cfg = Config::parse(
        "fleet.toml",
        "[[node]]\nname = \"a\"\n\n[[node]]\nname = \"b\"\n",
    )
    .unwrap();
    cfg.nodes.remove(0);
    cfg.nodes[0].weight = Some(f64::NAN);
    let e = cfg.validate().unwrap_err();
    check(&e, 5, "weight");
    cfg.nodes[0].name = "renamed".into();
    let e = cfg.validate().unwrap_err();
    assert_eq!((e.file(), e.line()), ("fleet.toml", None));
    assert!(
        e.to_string().starts_with("fleet.toml: node \"renamed\""),
        "{e}"
    );
    let mut fresh = Config::default();
    fresh.nodes.push(NodeConfig {
        name: "x".into(),
        max_concurrency: Some(0),
        ..NodeConfig::default()
    });
    assert!(fresh
        .validate()
        .unwrap_err()
        .to_string()
        .starts_with("<config>: node \"x\""));
}

#[test]
fn the_scan_never_panics_on_broken_text() {
    for text in [
        "",
        "[",
        "[[",
        "\"",
        "'''",
        "\"\"\"",
        "a = \"\\",
        "a = [ \"\\\n",
        "a.\"b\\",
        "= = =",
        "\u{e9}\u{e9} = [ '\u{e9}",
        "[[node]]\nname = \"\u{e9}\"\nx = [[[[{{{",
    ] {
        let l = Layout::scan(text);
        let lines = text.lines().count().max(1);
        for o in 0..=text.len() + 1 {
            if let (Some(context), _) = l.at(text, o) {
                assert!(!context.is_empty(), "{text:?} at {o}");
            }
            let (line, column) = line_col(text, o);
            assert!(
                (1..=lines + 1).contains(&line) && column >= 1,
                "{text:?} at {o}: {line}:{column}"
            );
        }
        assert!(l.entries("node").len() <= 1, "{text:?}");
        // Only the empty text is a config; every broken one is an error naming the file and,
        // when it has one, a line of the text.
        match Config::parse("fuzz", text) {
            Ok(cfg) => assert!(text.is_empty() && cfg.nodes.is_empty(), "{text:?} parsed"),
            Err(e) => {
                assert_eq!(e.file(), "fuzz");
                assert!(e.line().is_none_or(|n| (1..=lines + 1).contains(&n)), "{e}");
            }
        }
    }
    assert_eq!(line_col("a\u{e9}b\nc", 4), (1, 4));
    assert_eq!(line_col("a\u{e9}b\nc", 5), (2, 1));
}

#[test]
fn io_errors_name_the_file() {
    let e = Config::load(Path::new("no-such-dir/fleet.toml")).unwrap_err();
    assert_eq!(e.file(), "no-such-dir/fleet.toml");
    assert_eq!(e.line(), None);
    assert!(
        e.to_string()
            .starts_with("no-such-dir/fleet.toml: cannot read"),
        "{e}"
    );
    assert!(std::error::Error::source(&e).is_some());
}

#[test]
fn reload_adds_updates_removes_and_keeps_counters() {
    let v1 = Config::parse("v1.toml", FULL).unwrap();
    let clock: std::sync::Arc<dyn Clock> = std::sync::Arc::new(ManualClock::new());
    let r = v1.to_builder().clock(clock).build().unwrap();
    // A no-op reload changes nothing.
    let rep = r.apply_config(&v1).unwrap();
    let epoch = r.snapshot().epoch();
    assert_eq!(
        rep,
        ReloadReport {
            epoch,
            ..ReloadReport::default()
        }
    );
    assert_eq!(r.node_specs(), v1.node_specs());

    let code = r.resolve(&["code"]).unwrap();
    let (_, lease) = r
        .reader()
        .route(&Task::new(1, 100, 10).require(code))
        .unwrap();
    let v2 = Config::parse(
        "v2.toml",
        r#"
capabilities = ["chat", "code", "long-context", "vision"]
[[node]]
name = "gpu-1"
capabilities = ["chat", "code", "long-context", "vision"]
max_concurrency = 8
[[node]]
name = "new"
capabilities = ["chat"]
[[chain]]
name = "plain"
stages = ["gpu-1", "new"]
"#,
    )
    .unwrap();
    let rep = r.apply_config(&v2).unwrap();
    assert_eq!(
        (rep.added, rep.updated, rep.removed, rep.chains),
        (1, 1, 1, 2)
    );
    let snap = r.snapshot();
    assert_eq!(rep.epoch, snap.epoch());
    assert_eq!((snap.node_count(), snap.route_count()), (2, 3));
    assert_eq!(r.node_specs(), v2.node_specs());
    assert_eq!(snap.weights, ScoringWeights::default());
    assert!(r.resolve(&["vision"]).is_ok());
    assert_eq!(r.in_flight(), lease.route().stages().len() as u64);
    drop(lease);
    assert!(r.ledgers_are_zero());
    // Back again.
    let rep = r.apply_config(&v1).unwrap();
    assert_eq!(
        (rep.added, rep.updated, rep.removed, rep.chains),
        (1, 1, 1, 2)
    );
    assert_eq!(r.node_specs(), v1.node_specs());
    assert_eq!(r.snapshot().route_count(), 4);
}

#[test]
fn an_invalid_reload_changes_nothing() {
    let v1 = Config::parse("v1.toml", FULL).unwrap();
    let r = v1.build_router(0).unwrap();
    let epoch = r.snapshot().epoch();
    let mut cfg = v1.clone();
    cfg.capabilities.push("new-capability".into());
    cfg.nodes.remove(1);
    cfg.nodes[0].max_concurrency = Some(0);
    let e = r.apply_config(&cfg).unwrap_err();
    assert_eq!(e.field(), Some("max_concurrency"), "{e}");
    assert_eq!(e.line(), Some(17), "{e}");
    assert!(
        e.to_string().starts_with("v1.toml:17: node \"gpu-1\""),
        "{e}"
    );
    assert_eq!(r.snapshot().epoch(), epoch);
    assert_eq!(r.node_specs(), v1.node_specs());
    r.tick();
    assert!(r.resolve(&["new-capability"]).is_err());
}
