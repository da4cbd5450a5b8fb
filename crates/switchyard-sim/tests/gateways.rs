//! `switchyard gateways --quick` on a short slice: every gateway either reports every figure
//! or is skipped with a note (a peer pip cannot install here, a gateway binary not built),
//! and nothing it started is left listening.
use std::collections::BTreeSet;

const KEYS: [&str; 13] = [
    "slo_attainment",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "e2e_p50_ms",
    "e2e_p99_ms",
    "goodput_rps",
    "errors",
    "prefix_hit_rate",
    "cpu_s_per_1k",
    "rss_mb",
    "overhead_p50_us",
    "overhead_p99_us",
    "max_rps",
];

#[test]
fn gateways_quick_reports_every_gateway_or_a_reason() {
    let json =
        std::env::temp_dir().join(format!("switchyard-gateways-{}.json", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "gateways",
            "--quick",
            "--max-requests",
            "50",
            "--timeout-s",
            "60",
            "--json",
        ])
        .arg(&json)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    let names = [
        "switchyard",
        "vllm-router/power_of_two",
        "vllm-router/cache_aware",
        "sglang-router/cache_aware",
        "sglang-router/power_of_two",
    ];
    let mut ran = BTreeSet::new();
    for name in names {
        if let Some(g) = v["gateways"].get(name) {
            for k in KEYS {
                assert!(
                    g[k].as_f64().is_some_and(f64::is_finite),
                    "{name}: {k} = {}",
                    g[k]
                );
            }
            assert_eq!(g["requests"], 100, "{name}: both traces' 50 requests");
            for t in ["azure", "mooncake"] {
                assert_eq!(g["traces"][t]["requests"], 50, "{name} on {t}");
            }
            // Its port is closed again: the process is gone.
            let cmd = g["command"].as_str().unwrap();
            let port = cmd
                .split_whitespace()
                .skip_while(|a| *a != "--port" && *a != "--listen")
                .nth(1)
                .unwrap();
            let addr = if port.contains(':') {
                port.to_string()
            } else {
                format!("127.0.0.1:{port}")
            };
            assert!(
                std::net::TcpStream::connect(&addr).is_err(),
                "{name} still listens on {addr}"
            );
            ran.insert(name);
        } else {
            let why = v["skipped"][name]
                .as_str()
                .unwrap_or_else(|| panic!("{name} neither ran nor was skipped"));
            println!("note: {name} skipped: {why}");
        }
    }
    println!("gateways measured: {ran:?}");
    assert!(v["direct"]["rps"].as_f64().unwrap() > 0.0);
}
