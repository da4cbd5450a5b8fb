//! The load generator against the simulated servers directly, on loopback.
use std::time::Duration;

use switchyard_sim::loadgen::{self, LoadOptions};
use switchyard_sim::serve::{self, Fault, ServeOptions};

fn config() -> switchyard::Config {
    switchyard::Config::parse(
        "test.toml",
        r#"
[[node]]
name = "a"
url = "http://127.0.0.1:1"
models = ["m-1"]
max_concurrency = 64
base_latency_ms = 15.0
prefill_tokens_per_sec = 12000.0
decode_tokens_per_sec = 60.0
memory_mb = 60000
kv_mb_per_1k_tokens = 160.0
"#,
    )
    .unwrap()
}

fn opts(url: String) -> LoadOptions {
    LoadOptions {
        url,
        load: 20.0,
        speed: 20.0,
        model: "m-1".into(),
        max_requests: Some(60),
        timeout: Duration::from_secs(30),
        ..LoadOptions::default()
    }
}

#[test]
fn every_request_is_reported_and_counts_match_the_servers() {
    let set = serve::spawn(
        &config(),
        &ServeOptions {
            speed: 20.0,
            ephemeral: true,
            ..Default::default()
        },
    )
    .unwrap();
    let (_, rows) = switchyard_sim::open_trace(Some("mooncake".as_ref())).unwrap();
    let url = set.urls()[0].1.clone();
    let r = loadgen::run(
        &LoadOptions {
            skip: 3600,
            ..opts(url)
        },
        &rows,
    )
    .unwrap();
    assert_eq!(r.requests, 60);
    assert_eq!(r.records.len(), 60);
    assert!(r.records.iter().all(|x| x.status != 0 || x.error.is_some()));
    assert_eq!(r.completed + r.errors, r.requests);
    assert_eq!(r.errors, 0, "{:?}", r.errors_by_class);
    let s = set.total();
    assert_eq!(s.completed as usize, r.completed);
    assert_eq!(s.requests as usize, r.requests);
    // Streamed token counts are the trace's, and the usage chunk agrees.
    for (rec, row) in r.records.iter().zip(&rows[3600..]) {
        assert_eq!(rec.chunks, row.output_tokens);
        assert_eq!(rec.usage_tokens, Some(row.output_tokens));
        assert!(rec.ttft_ms.unwrap() <= rec.e2e_ms);
    }
    // The trace's shared prefixes reached the server's cache.
    assert!(s.prefix_hits > 0);
    assert!(r.slo_attainment > 0.0 && r.slo_attainment <= 1.0);
    assert_eq!(r.slo_by_priority.len(), 4);
}

#[test]
fn failures_are_classified_and_nothing_hangs() {
    let set = serve::spawn(
        &config(),
        &ServeOptions {
            speed: 20.0,
            ephemeral: true,
            ..Default::default()
        },
    )
    .unwrap();
    let (_, rows) = switchyard_sim::open_trace(None).unwrap();
    let url = set.urls()[0].1.clone();
    set.set_fault("a", Fault::parse("5xx:503").unwrap());
    let r = loadgen::run(
        &LoadOptions {
            max_requests: Some(10),
            ..opts(url.clone())
        },
        &rows,
    )
    .unwrap();
    assert_eq!((r.requests, r.errors), (10, 10));
    assert_eq!(r.errors_by_class["http_503"], 10);
    assert!(r.records.iter().all(|x| x.status == 503));
    set.set_fault("a", Fault::parse("disconnect:1").unwrap());
    let r = loadgen::run(
        &LoadOptions {
            max_requests: Some(5),
            ..opts(url.clone())
        },
        &rows,
    )
    .unwrap();
    assert_eq!(r.errors_by_class["stream_broken"], 5);
    set.set_fault("a", Fault::parse("down").unwrap());
    std::thread::sleep(Duration::from_millis(100));
    let r = loadgen::run(
        &LoadOptions {
            max_requests: Some(5),
            ..opts(url)
        },
        &rows,
    )
    .unwrap();
    assert_eq!(r.errors_by_class["connect"], 5);
    // A server that answers too slowly: the request's own timeout ends it.
    set.set_fault("a", Fault::parse("slow:1000").unwrap());
    std::thread::sleep(Duration::from_millis(200)); // the port opens again
    let url = set.urls()[0].1.clone();
    let r = loadgen::run(
        &LoadOptions {
            max_requests: Some(2),
            timeout: Duration::from_millis(300),
            ..opts(url)
        },
        &rows,
    )
    .unwrap();
    assert_eq!(r.errors_by_class["timeout"], 2);
}

#[test]
fn the_loadgen_command_writes_its_report() {
    let set = serve::spawn(
        &config(),
        &ServeOptions {
            speed: 20.0,
            ephemeral: true,
            ..Default::default()
        },
    )
    .unwrap();
    let url = set.urls()[0].1.clone();
    let json = std::env::temp_dir().join(format!("switchyard-loadgen-{}.json", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "loadgen", "--trace", "azure", "--load", "20", "--speed", "20", "--model", "m-1",
        ])
        .args(["--max-requests", "20", "--url", &url, "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("20 requests"), "{text}");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(v["requests"], 20);
    assert_eq!(v["records"].as_array().unwrap().len(), 20);
    for k in [
        "slo_attainment",
        "ttft_p50_ms",
        "ttft_p99_ms",
        "e2e_p50_ms",
        "e2e_p99_ms",
        "goodput_rps",
        "errors_by_class",
    ] {
        assert!(!v[k].is_null(), "{k}");
    }
    let _ = std::fs::remove_file(json);
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["loadgen", "--url", "ftp://x", "--max-requests", "1"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
}
