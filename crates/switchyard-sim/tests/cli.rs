//! The command line, run as a user runs it: `simulate` on a small trace in both its modes
//! (the virtual-time comparison with its table, JSON and plots; the real-time replay), its
//! errors, and the bench command's JSON.
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

    let cases: [(&[&str], &str); 9] = [
        (&["--load", "0"], "load must be a positive number"),
        (
            &["--load", "0", "--speed", "100"],
            "--load must be a positive",
        ),
        (&["--speed", "NaN"], "--speed must be a positive number"),
        (
            &["--speed", "100", "--workers", "0"],
            "--workers must be from 1 to 256",
        ),
        (
            &["--base-capability", "vision"],
            "unknown capability `vision`",
        ),
        (
            &["--policy", "nosuch"],
            "unknown policy `nosuch`; known policies:",
        ),
        (
            &["--workers", "2"],
            "--workers applies to the real-time replay",
        ),
        (
            &["--speed", "100", "--json", "x.json"],
            "--json cannot be combined",
        ),
        (
            &["--fault", "outage:1:2", "--policy", "random", "--out", "d"],
            "--policy, --out cannot be combined with --speed or --fault",
        ),
    ];
    let trace = small_trace(&dir, 5, 0);
    for (args, want) in cases {
        let out = bin()
            .arg("--trace")
            .arg(&trace)
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("switchyard: error: "), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }

    // Fleets that cannot run the trace at all.
    for (toml, want) in [
        (
            "capabilities = [\"code\", \"long-context\"]\n",
            "has no node",
        ),
        (
            "capabilities = [\"code\", \"long-context\", \"chat\"]\n\
             [[node]]\nname = \"c\"\ncapabilities = [\"chat\"]\n",
            "no node of the fleet",
        ),
    ] {
        let fleet = dir.join("fleet.toml");
        std::fs::write(&fleet, toml).unwrap();
        let out = bin()
            .arg("--trace")
            .arg(&trace)
            .arg("--config")
            .arg(&fleet)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{toml}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want) && err.contains("fleet.toml"), "{err}");
    }
}

/// What a PNG file starts with.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

#[test]
fn simulate_compares_policies_in_virtual_time_and_writes_json_and_plots() {
    let dir = tmpdir("plots");
    let trace = small_trace(&dir, 300, 10);
    let plots = dir.join("plots");
    let json = dir.join("out.json");
    // No --speed and no --fault: the virtual-time comparison, every policy.
    let out = bin()
        .args(["simulate", "--trace"])
        .arg(&trace)
        .args(["--load", "20", "--out"])
        .arg(&plots)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let policies = [
        "round_robin",
        "random",
        "least_in_flight",
        "p2c_peak_ewma",
        "cache_aware",
        "switchyard",
    ];
    for p in policies {
        assert!(
            stdout
                .lines()
                .any(|l| l.starts_with(p) && l.contains(" 300 ")),
            "{p}: {stdout}"
        );
    }
    let line = stdout
        .lines()
        .find(|l| l.starts_with("router throughput: "))
        .unwrap_or_else(|| panic!("no throughput line in {stdout}"));
    assert!(
        line.contains(" M decisions/s (router: ")
            && line.contains(" M tasks/s (whole event loop: 300 tasks in "),
        "{line}"
    );

    // The JSON keeps its schema, and adds the throughput.
    let j = std::fs::read_to_string(&json).unwrap();
    assert!(
        j.starts_with("{\"trace\":")
            && j.contains("\"tasks\":300,")
            && j.contains("\"policies\":{")
    );
    for p in policies {
        assert!(
            j.contains(&format!("\"{p}\":{{\"completed\":")),
            "{p} in {j}"
        );
        assert!(
            j.contains(&format!("\"{p}\":{{\"decisions\":")),
            "{p} in {j}"
        );
    }
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
        "prefix_hit_rate",
        "cost",
        "decision_ns",
        "p50",
        "p99",
        "p999",
        "router_decisions_per_s",
        "event_loop_tasks_per_s",
    ] {
        assert_eq!(j.matches(&format!("\"{key}\":")).count(), 6, "{key} in {j}");
    }
    assert!(j.contains("},\"throughput\":{\"round_robin\":{\"decisions\":"));

    // Every plot, as SVG and as a 1000 × 600 PNG.
    for stem in ["latency_cdf", "utilization_switchyard", "shed_failed"] {
        let svg = std::fs::read_to_string(plots.join(format!("{stem}.svg"))).unwrap();
        assert!(svg.contains("<svg") && svg.contains("</svg>"), "{stem}");
        let png = std::fs::read(plots.join(format!("{stem}.png"))).unwrap();
        assert!(png.starts_with(PNG_SIGNATURE), "{stem}");
        assert_eq!(&png[12..16], b"IHDR");
        assert_eq!(
            &png[16..24],
            &[0, 0, 0x03, 0xe8, 0, 0, 0x02, 0x58],
            "{stem}"
        );
        assert!(stdout.contains(&format!("{stem}.png")), "{stdout}");
    }
    // The legend names every policy, and the text is drawn (not left out for lack of a font).
    let cdf = std::fs::read_to_string(plots.join("latency_cdf.svg")).unwrap();
    for p in policies {
        assert!(cdf.contains(&format!("{p} (300 completed)")), "{p}");
    }
    assert!(!stdout.contains('\x1b') && !stderr.contains('\x1b'));

    // Without switchyard, the utilisation plot is the first policy's.
    let out = bin()
        .args(["simulate", "--trace"])
        .arg(&trace)
        .args(["--policy", "random,least_in_flight", "--out"])
        .arg(&plots)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(plots.join("utilization_random.png").exists());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("router throughput"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_long_run_draws_no_progress_bar_when_stderr_is_not_a_terminal() {
    let dir = tmpdir("bar");
    // 20 s of trace at speed 10: a 2 s real-time replay, long enough for the bar to be due.
    let trace = small_trace(&dir, 400, 10);
    let started = std::time::Instant::now();
    let out = bin()
        .arg("--trace")
        .arg(&trace)
        .args(["--speed", "10"])
        .output()
        .unwrap();
    assert!(started.elapsed().as_secs_f64() > 1.5);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("tasks: 400 submitted, 400 completed"),
        "{stdout}"
    );
    assert!(stderr.is_empty(), "{stderr:?}");
    assert!(
        !stdout.contains('\x1b') && !stdout.contains('\r'),
        "{stdout:?}"
    );
    let _ = std::fs::remove_dir_all(dir);
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
        "\"route_64_threads\":{\"threads\":",
        "\"n_threads_per_sec\":",
        "\"separate_ratio\":",
        "\"shared_over_separate\":",
        "\"route_64_threads_timeouts\":{\"threads\":",
        "\"route_64_threads_tenants\":{\"threads\":",
        "\"tower_p2c_64\":{\"p50_ns\":",
        "\"tower_p2c_4096\":{\"p50_ns\":",
        "\"route_64_over_tower_p2c_64_p50\":",
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
fn a_fleet_config_file_drives_both_modes_and_bad_ones_are_named() {
    let dir = tmpdir("config");
    let trace = small_trace(&dir, 100, 10);
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../switchyard/examples/fleet.toml");
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
    // The virtual-time comparison, under its old name `compare` (a hidden alias).
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
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("switchyard simulate: "), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("switchyard ")));
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

#[test]
fn hostile_input_gets_a_clear_error_or_a_bound() {
    let dir = tmpdir("hostile");
    let run = |args: &[&str]| {
        let out = bin().args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // A request larger than any node can hold is refused at parse time, not simulated for
    // hours of virtual time.
    let huge = dir.join("huge.csv");
    std::fs::write(
        &huge,
        "arrival_ms,input_tokens,output_tokens\n0,4294967295,1\n",
    )
    .unwrap();
    let (ok, _, err) = run(&["--trace", huge.to_str().unwrap()]);
    assert!(
        !ok && err.contains("more than one request can hold"),
        "{err}"
    );
    // The largest request a node may hold, alone in a trace, runs in bounded memory: the
    // series widens its buckets as the request runs on past the last arrival (it took
    // 0.9 GB before). Its figures are still reported.
    let big = dir.join("big.csv");
    std::fs::write(
        &big,
        "arrival_ms,input_tokens,output_tokens\n0,16777000,215\n",
    )
    .unwrap();
    let (ok, out, err) = run(&["--trace", big.to_str().unwrap(), "--policy", "switchyard"]);
    assert!(ok && out.contains("switchyard"), "{out}\n{err}");
    // A huge bad field is not echoed whole.
    let bad = dir.join("bad.csv");
    let field = "x".repeat(5_000_000);
    std::fs::write(
        &bad,
        format!("arrival_ms,input_tokens,output_tokens\n0,{field},1\n"),
    )
    .unwrap();
    let (ok, _, err) = run(&["--trace", bad.to_str().unwrap()]);
    assert!(!ok && err.len() < 1_000, "{} bytes of stderr", err.len());
    // A slowdown that would overflow every delay is refused before the run.
    let trace = small_trace(&dir, 50, 0);
    let t = trace.to_str().unwrap();
    let (ok, _, err) = run(&["--trace", t, "--fault", "slow:a100-0:1e300:0:1"]);
    assert!(
        !ok && err.contains("factor must be from 1 to 1000"),
        "{err}"
    );
    // Workers are bounded.
    let (ok, _, err) = run(&["--trace", t, "--speed", "400", "--workers", "100000"]);
    assert!(!ok && err.contains("--workers must be from 1 to"), "{err}");
    // Arrivals counted in epoch milliseconds replay from the first one, in bounded time.
    let epoch = dir.join("epoch.csv");
    let mut s = String::from("arrival_ms,input_tokens,output_tokens\n");
    for i in 0..40u64 {
        s += &format!("{},{},{}\n", 1_764_600_000_000 + i * 50, 300, 5);
    }
    std::fs::write(&epoch, s).unwrap();
    let (ok, out, err) = run(&["--trace", epoch.to_str().unwrap(), "--speed", "400"]);
    assert!(ok, "{out}\n{err}");
    // A trace whose arrivals span ages cannot replay at this speed: refused, not hung.
    let ages = dir.join("ages.csv");
    std::fs::write(
        &ages,
        "arrival_ms,input_tokens,output_tokens\n0,300,5\n18446744073709551000,300,5\n",
    )
    .unwrap();
    let (ok, _, err) = run(&["--trace", ages.to_str().unwrap(), "--speed", "400"]);
    assert!(!ok && err.contains("of real time"), "{err}");
    // A negative load is our error, not clap's "unexpected argument".
    let (ok, _, err) = run(&["--trace", t, "--load", "-1"]);
    assert!(
        !ok && err.contains("load must be a positive number"),
        "{err}"
    );
    // A policy named twice would run twice and write a JSON with a duplicate key.
    let (ok, _, err) = run(&["--trace", t, "--policy", "random,random"]);
    assert!(!ok && err.contains("names `random` twice"), "{err}");
    // A spike past the end of the trace would report 100 % of nothing as met.
    let (ok, _, err) = run(&["--trace", t, "--spike", "100000:10:4"]);
    assert!(
        !ok && err.contains("after the trace's last arrival"),
        "{err}"
    );
    // Outputs that cannot be written fail before the run (no table was printed).
    let (ok, out, err) = run(&["--json", "/proc/no-such-dir/x.json"]);
    assert!(
        !ok && err.contains("cannot write") && out.is_empty(),
        "{out}\n{err}"
    );
    let (ok, out, err) = run(&["--out", "/proc/no-such-dir/plots"]);
    assert!(
        !ok && err.contains("cannot write into") && out.is_empty(),
        "{out}\n{err}"
    );
}
