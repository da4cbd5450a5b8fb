//! The `switchyard-gateway` binary: readiness line, bad config, SIGTERM drains and exits 0.
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use http::StatusCode;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard-gateway");

#[test]
fn a_bad_config_exits_2_naming_the_problem() {
    let path = temp_file("[gateway]\nlisten = \"127.0.0.1:0\"\ntimeout = 3\n\n[[node]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nmodels = [\"m\"]\n");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("timeout") && err.contains(":3:"), "{err}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_missing_config_exits_2() {
    let out = Command::new(BIN)
        .args(["--config", "no-such-fleet-file.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-fleet-file.toml"));
    let path = temp_file("[[node]]\nname = \"a\"\nmodels = [\"m\"]\n");
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no `url`"));
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_listen_address_in_use_exits_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let path = temp_file(&format!(
        "[gateway]\nlisten = \"{addr}\"\nio_threads = 1\n\n[[node]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nmodels = [\"m\"]\n"
    ));
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen"));
    let _ = std::fs::remove_file(path);
}

/// The signal handlers are in place once the readiness line is out: a SIGTERM at once drains
/// (exit 0) instead of killing the process.
#[cfg(unix)]
#[test]
fn sigterm_right_after_the_readiness_line_exits_0() {
    let path = temp_file(
        "[gateway]\nlisten = \"127.0.0.1:0\"\n\n[[node]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nmodels = [\"m\"]\n",
    );
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("switchyard-gateway listening on "),
        "{line:?}"
    );
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    let _ = std::fs::remove_file(path);
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_stream_in_flight_and_exits_0() {
    let a = Mock::start("a").await;
    a.hold_after(Some(1));
    let path = temp_file(&fleet_toml(&[&a], "listen = \"127.0.0.1:9\"", ""));
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    let addr = line
        .trim()
        .strip_prefix("switchyard-gateway listening on ")
        .unwrap_or_else(|| panic!("no readiness line: {line:?}"))
        .to_string();
    let c = client();
    let get = |p: &str| {
        http::Request::get(format!("http://{addr}{p}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    let r = tokio::time::timeout(LONG, c.request(get("/health")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .body(http_body_util::Full::new(bytes::Bytes::from(CHAT_STREAM)))
        .unwrap();
    let r = tokio::time::timeout(LONG, c.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert!(
        wait_until(|| std::net::TcpStream::connect(&addr).is_err()).await,
        "still accepting after SIGTERM"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited with a stream in flight"
    );
    a.open_gate();
    assert_eq!(read_all(r).await, whole_stream(3, false));
    let mut status = None;
    for _ in 0..2_000 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("did not exit after draining")
    });
    assert_eq!(status.code(), Some(0));
    let _ = std::fs::remove_file(path);
}
