//! The command line, run as a user runs it: the main job on a small trace, its errors, and
//! the bench command's JSON.
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
}

fn small_trace(dir: &std::path::Path, rows: usize, long_every: usize) -> std::path::PathBuf {
    let mut s = String::from("arrival_ms,input_tokens,output_tokens\n");
    for i in 0..rows {
        let input = if long_every > 0 && i % long_every == 0 {
            6_000
        } else {
            300 + i % 900
        };
        // 50 ms apart: about 40 × load tasks in flight, far below the fleet's 384 slots.
        s += &format!("{},{},{}\n", i * 50, input, 5 + i % 40);
    }
    let p = dir.join(format!("trace-{rows}.csv"));
    std::fs::write(&p, s).unwrap();
    p
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("switchyard-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn simulate_replays_a_trace_and_loses_nothing() {
    let dir = tmpdir("sim");
    let trace = small_trace(&dir, 400, 10);
    let out = bin()
        .args(["simulate", "--trace"])
        .arg(&trace)
        .args([
            "--speed",
            "100",
            "--load",
            "2",
            "--workers",
            "2",
            "--seed",
            "3",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout
            .contains("tasks: 400 submitted, 400 completed, 0 failed, 0 found no route, 0 refused"),
        "{stdout}"
    );
    assert!(stdout.contains("router decision latency"));
    assert!(stdout.contains("balance deviation"));
    assert!(stdout.contains("leases all released: true"), "{stdout}");
    // Top-level flags work without the subcommand too.
    let out = bin()
        .arg("--trace")
        .arg(&trace)
        .args(["--speed", "5000"])
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let dir = tmpdir("bad");
    let out = bin()
        .args(["--trace", "no/such/trace.csv"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no/such/trace.csv"), "{err}");
    assert!(!err.contains("panicked"));

    let bad = dir.join("bad.csv");
    std::fs::write(
        &bad,
        "arrival_ms,input_tokens,output_tokens\n0,10,1\n5,ten,1\n",
    )
    .unwrap();
    let out = bin().arg("--trace").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.csv:3:") && err.contains("input_tokens"),
        "{err}"
    );

    for args in [
        ["--load", "0"],
        ["--speed", "NaN"],
        ["--workers", "0"],
        ["--base-capability", "vision"],
    ] {
        let trace = small_trace(&dir, 5, 0);
        let out = bin()
            .arg("--trace")
            .arg(&trace)
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("error"),
            "{args:?}"
        );
    }
}

#[test]
fn bench_json_has_every_key() {
    let out = bin().args(["bench", "--json", "--quick"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.trim();
    assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
    for key in [
        "\"route_8\":{\"p50_ns\":",
        "\"route_64\":{\"p50_ns\":",
        "\"route_1024\":{\"p50_ns\":",
        "\"route_4096\":{\"p50_ns\":",
        "\"baseline_64\":{\"p50_ns\":",
        "\"dispatch\":{\"tasks_per_sec\":",
        "\"raw_queue_msgs_per_sec\":",
        "\"memory_4096_mb\":",
        "\"route_64_under_publish\":{\"p50_ns\":",
        "\"control_tick_4096_us\":",
        "\"allocate\":{\"p50_ns\":",
    ] {
        assert!(line.contains(key), "missing {key} in {line}");
    }
    let out = bin().args(["bench", "--quick"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("route_64"));
}

#[test]
fn faults_fail_over_and_every_task_is_accounted_for() {
    let dir = tmpdir("faults");
    let trace = small_trace(&dir, 400, 10);
    let out = bin()
        .arg("--trace")
        .arg(&trace)
        .args([
            "--speed",
            "50",
            "--fault",
            "down:a100-0:2:12",
            "--fault",
            "ratelimit:l4-0:0:20",
            "--fault",
            "outage:14:15",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("faults (trace seconds), failover and health:"),
        "{stdout}"
    );
    assert!(
        stdout.contains("accounted for: 400 submitted ="),
        "{stdout}"
    );
    assert!(stdout.contains("leases all released: true"), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("down:a100-0:2:12"))
        .unwrap();
    let before: u64 = line
        .split("before ejection: ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // Three failed outcomes take the node out (tests/health.rs proves it without concurrency);
    // tasks already dispatched while those failures were in flight add to the count.
    assert!((1..=12).contains(&before), "{line}");
    for bad in ["down:nope:1:2", "down:a100-0:5:1", "explode"] {
        let out = bin()
            .arg("--trace")
            .arg(&trace)
            .args(["--fault", bad])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--fault"),
            "{bad}"
        );
    }
}

#[test]
fn a_fleet_config_file_drives_both_subcommands_and_bad_ones_are_named() {
    let dir = tmpdir("config");
    let trace = small_trace(&dir, 100, 10);
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/fleet.toml");
    let out = bin()
        .arg("--trace")
        .arg(&trace)
        .arg("--config")
        .arg(&example)
        .args(["--speed", "400"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("tasks: 100 submitted, 100 completed"));
    let out = bin()
        .args(["compare", "--trace"])
        .arg(&trace)
        .arg("--config")
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "capabilities = [\"chat\"]\n[[node]]\nname = \"x\"\nweight = -1.0\n",
    )
    .unwrap();
    let out = bin()
        .arg("--trace")
        .arg(&trace)
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml:4") && err.contains("weight"),
        "{err}"
    );
}
