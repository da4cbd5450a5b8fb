//! `switchyard fleet`, run as a user runs it but with every phase cut short: three
//! `switchyard-gateway` replicas with and without fleet mode, and the JSON it writes.
//!
//! Needs `redis-server` on PATH (Debian: apt-get install redis-server) and the
//! `switchyard-gateway` binary built next to `switchyard` (`cargo build --workspace`, or
//! `cargo test --workspace`, builds both); without either it fails saying so.
use std::path::PathBuf;
use std::process::Command;

fn gateway_bin() -> PathBuf {
    let me = PathBuf::from(env!("CARGO_BIN_EXE_switchyard"));
    let gw = me.with_file_name("switchyard-gateway");
    assert!(
        gw.exists(),
        "{} is missing: build it first (cargo build -p switchyard-gateway), or run the tests \
         with --workspace",
        gw.display()
    );
    gw
}

#[test]
fn fleet_scenario_reports_every_figure() {
    let gw = gateway_bin();
    assert!(
        Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok(),
        "`switchyard fleet` needs redis-server on PATH (Debian: apt-get install redis-server)"
    );
    let json = std::env::temp_dir().join(format!("switchyard-fleet-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["fleet", "--quick", "--phase-scale", "0.4", "--json"])
        .arg(&json)
        .env("SWITCHYARD_GATEWAY_BIN", &gw)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "switchyard fleet failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("tenant_overshoot"), "{stdout}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for mode in ["fleet", "independent"] {
        for k in [
            "tenant_overshoot",
            "balance_deviation",
            "requests_to_down_node",
            "slo_attainment",
            "ttft_p99_ms",
        ] {
            assert!(v[mode][k].is_number(), "{mode}.{k} missing: {v}");
        }
    }
    for k in [
        "staleness_p50_ms",
        "staleness_p99_ms",
        "redis_outage_failed_requests",
    ] {
        assert!(v[k].is_number(), "{k} missing: {v}");
    }
    // The shape of the result, not its fine figures (the run is short and the machine
    // shared): the cluster-wide limit holds where independent replicas each admit theirs,
    // and the outage fails nothing.
    let over = |m: &str| v[m]["tenant_overshoot"].as_f64().unwrap();
    // The documented bound over a window: 2 slices (200 ms of the rate each) per replica,
    // over the 2 s phase: 0.6. Independent replicas: about 2.
    assert!(over("fleet") <= 0.6, "fleet overshoot {}", over("fleet"));
    assert!(
        over("independent") > 1.0,
        "independent overshoot {}",
        over("independent")
    );
    assert_eq!(v["redis_outage_failed_requests"].as_u64(), Some(0), "{v}");
    assert_eq!(v["outage"]["resumed"].as_bool(), Some(true), "{v}");
    let _ = std::fs::remove_file(&json);
}
