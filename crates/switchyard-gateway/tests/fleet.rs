//! Fleet mode: three in-process gateway replicas in front of the same model servers, sharing
//! tenant budgets, load and health through a real `redis-server` on an ephemeral loopback
//! port, with requests spread round-robin over the replicas.
//!
//! `redis-server` must be installed (Debian: `apt-get install redis-server`); without it
//! these tests fail with a message saying so.
mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fleet_toml, Harness, Mock, Mode};
use http::StatusCode;
use switchyard::HealthStatus;
use switchyard_gateway::FleetMode;

/// A `redis-server` on a free loopback port, killed on drop.
struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut r = Redis { child: None, port };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "fleet tests need `redis-server` on PATH (Debian: apt-get install \
                     redis-server): cannot start it: {e}"
                )
            });
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < end, "redis-server did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Freezes (`true`) or thaws the server with SIGSTOP / SIGCONT: its port stays open
    /// and nothing answers, as a Redis stalled by a long command or a swapped-out host.
    fn freeze(&self, frozen: bool) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(ok.success(), "kill {signal} {pid}");
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

const INTERVAL_MS: u64 = 100;

fn replica_toml(mocks: &[&Mock], redis: &Redis, name: &str, extra_fleet: &str) -> String {
    // No prefix affinity: identical prompts spread over the nodes.
    let mut t = fleet_toml(mocks, "prefix_block_bytes = 0", "");
    t += "\n[[tenant]]\nid = 1\nmax_tokens_per_second = 500\ntoken_burst_seconds = 0.5\n";
    // The tests' interval unless `extra_fleet` sets one.
    let interval = if extra_fleet.contains("sync_interval_ms") {
        String::new()
    } else {
        format!("sync_interval_ms = {INTERVAL_MS}\n")
    };
    t += &format!(
        "\n[fleet]\nredis = \"{}\"\nreplica = \"{name}\"\n{interval}{extra_fleet}\n",
        redis.url()
    );
    t
}

async fn replicas(mocks: &[&Mock], redis: &Redis, n: usize, extra: &str) -> Vec<Harness> {
    let mut out = Vec::new();
    for i in 0..n {
        let h = Harness::start(&replica_toml(mocks, redis, &format!("r{i}"), extra)).await;
        let _ = h.gw.start_fleet().await;
        out.push(h);
    }
    out
}

/// Tokens a request of `chat(..)` really costs: 1 input token (2 bytes of prompt) and the 4
/// the mock servers say they produced (it is charged 1 + 9 at admission; the unused 5 go
/// back when it ends).
const COST: u64 = 5;

fn chat() -> &'static str {
    r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":9}"#
}

/// Sends `chat()` round-robin over `hs` from `workers` loops for `dur`; returns (statuses).
async fn drive(hs: &[Harness], tenant: Option<&str>, workers: usize, dur: Duration) -> Vec<u16> {
    let urls: Vec<String> = hs.iter().map(|h| h.url("/v1/chat/completions")).collect();
    let next = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + dur;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (urls, next) = (urls.clone(), next.clone());
        let tenant = tenant.map(str::to_string);
        tasks.push(tokio::spawn(async move {
            let client = common::client();
            let mut got = Vec::new();
            while Instant::now() < end {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize % urls.len();
                let mut b =
                    http::Request::post(&urls[i]).header("content-type", "application/json");
                if let Some(t) = &tenant {
                    b = b.header("x-switchyard-tenant", t.as_str());
                }
                let req = b
                    .body(http_body_util::Full::new(bytes::Bytes::from(chat())))
                    .unwrap();
                let r = tokio::time::timeout(common::LONG, client.request(req))
                    .await
                    .expect("no hang")
                    .expect("sent");
                let status = r.status().as_u16();
                let _ = common::read_all(r).await;
                got.push(status);
                if status == 429 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_limit_holds_cluster_wide() {
    let redis = Redis::start();
    let (a, b) = (Mock::start("a").await, Mock::start("b").await);
    let hs = replicas(&[&a, &b], &redis, 3, "").await;
    let secs = 3.0;
    let statuses = drive(&hs, Some("1"), 12, Duration::from_secs_f64(secs)).await;
    let ok = statuses.iter().filter(|&&s| s == 200).count() as u64;
    let other = statuses.iter().filter(|&&s| s != 200 && s != 429).count();
    assert_eq!(other, 0, "only 200s and 429s: {statuses:?}");
    // The cluster-wide budget: rate × time + burst, plus at most two slices per replica
    // held at the start (slice = 200 ms of the rate: 100 tokens).
    let (rate, burst) = (500.0, 0.5);
    let bound = rate * secs + rate * burst + 3.0 * 2.0 * 100.0;
    let admitted = (ok * COST) as f64;
    assert!(
        admitted <= bound,
        "admitted {admitted} tokens; the cluster bound is {bound} (independent replicas \
         would admit about {})",
        3.0 * (rate * secs + rate * burst)
    );
    assert!(
        // Without the unused output given back, at most about 0.58 × rate × time (slack
        // below the 0.8 or so measured, for a loaded machine).
        admitted >= 0.65 * rate * secs,
        "admitted only {admitted} of {} tokens",
        rate * secs
    );
    for h in &hs {
        assert!(
            common::wait_until(|| {
                let st = h.gw.fleet_status().unwrap();
                st.mode == FleetMode::Shared && st.redis_up && st.replicas == 3
            })
            .await,
            "{:?}",
            h.gw.fleet_status()
        );
        assert!(h.gw.fleet_status().unwrap().slice_tokens > 0);
        assert!(h.gw.metrics_text().contains("switchyard_fleet_redis_up 1"));
    }
    for h in hs {
        h.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejection_on_one_replica_reaches_all_and_warm_starts_a_new_one() {
    let redis = Redis::start();
    let (a, b, c) = (
        Mock::start("a").await,
        Mock::start("b").await,
        Mock::start("c").await,
    );
    let mocks = [&a, &b, &c];
    let hs = replicas(&mocks, &redis, 3, "").await;
    // Every node measured by every replica first (an unmeasured node is predicted slower and
    // loses, so a replica that never measured b would never send it a request to fail).
    let measured = |h: &Harness| {
        h.gw.router()
            .node_health()
            .iter()
            .all(|n| n.metrics.response_time_ms > 0.0)
    };
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let warm = drive(&hs, None, 6, Duration::from_millis(200)).await;
        assert!(warm.iter().all(|&s| s == 200), "{warm:?}");
        if hs.iter().all(measured) {
            break;
        }
        assert!(
            Instant::now() < end,
            "a replica never measured every node: {:?}",
            hs.iter()
                .map(|h| h.gw.router().node_health())
                .collect::<Vec<_>>()
        );
    }
    let status_of = |h: &Harness| {
        h.gw.router()
            .node_health()
            .into_iter()
            .find(|n| n.node == "b")
            .map(|n| n.status)
    };
    // b goes hard down; only replica 0 sees traffic until it ejects b.
    b.set(Mode::Fail500);
    let end = Instant::now() + Duration::from_secs(10);
    while status_of(&hs[0]) != Some(HealthStatus::Failed) {
        assert!(
            Instant::now() < end,
            "replica 0 never ejected b: {:?}, b hits {}",
            hs[0].gw.router().node_health(),
            b.hits()
        );
        // Most fail over to a or c; a burst of failures on b can exhaust the retry budget,
        // so a 500 may come back: what counts here is the ejection.
        let _ = drive(&hs[..1], None, 12, Duration::from_millis(50)).await;
    }
    let seen_at = Instant::now();
    // The others learn it from Redis, without a request of their own to b.
    for h in &hs[1..] {
        assert!(
            common::wait_until(|| status_of(h) == Some(HealthStatus::Failed)).await,
            "a replica never learnt the ejection"
        );
    }
    let took = seen_at.elapsed();
    assert!(
        // One or two intervals and a tick; slack for a loaded machine, whose timers fire
        // late (each sync may take up to an interval).
        took <= Duration::from_millis(10 * INTERVAL_MS + 1000),
        "the ejection took {took:?} to reach every replica"
    );
    let hits = b.hits();
    let statuses = drive(&hs[1..], None, 4, Duration::from_millis(500)).await;
    assert!(statuses.iter().all(|&s| s == 200));
    assert!(
        b.hits() <= hits + 1,
        "the other replicas sent {} requests to the ejected node",
        b.hits() - hits
    );
    // Warm start: a fourth replica knows b is out before it serves anything.
    let late = Harness::start(&replica_toml(&mocks, &redis, "r3", "")).await;
    let _ = late.gw.start_fleet().await;
    // Ready after the first sync attempt; on a loaded machine that one may have timed out,
    // so wait for a good one (no request has been sent to `late`: what it knows of b came
    // from Redis).
    assert!(common::wait_until(|| late.gw.fleet_status().unwrap().syncs_ok >= 1).await);
    assert_eq!(status_of(&late), Some(HealthStatus::Failed));
    assert!(late.gw.fleet_status().unwrap().ready);
    late.finish().await;
    for h in hs {
        h.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_load_view_is_fresh_and_expires_with_its_replica() {
    let redis = Redis::start();
    let (a, b) = (Mock::start("a").await, Mock::start("b").await);
    let hs = replicas(&[&a, &b], &redis, 3, "").await;
    // Streams held open on replica 0 are load the others see.
    a.hold_after(Some(1));
    b.hold_after(Some(1));
    let mut held = Vec::new();
    for _ in 0..6 {
        let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
        let h = &hs[0];
        let url = h.url("/v1/chat/completions");
        held.push(tokio::spawn(async move {
            let req = http::Request::post(url)
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap();
            let r = common::client().request(req).await.unwrap();
            common::read_all(r).await
        }));
    }
    assert!(common::wait_until(|| hs[0].gw.router().in_flight() == 6).await);
    for h in &hs[1..] {
        assert!(
            common::wait_until(|| h.gw.fleet_status().unwrap().remote_in_flight == 6).await,
            "replica {} does not see replica 0's streams",
            h.gw.fleet_status().unwrap().replica
        );
    }
    assert_eq!(hs[0].gw.fleet_status().unwrap().remote_in_flight, 0);
    // Every view is applied within a sync interval plus a round trip of being published.
    tokio::time::sleep(Duration::from_millis(5 * INTERVAL_MS)).await;
    for h in &hs {
        let st = h.gw.fleet_status().unwrap();
        let max = st.staleness_ms.iter().copied().max().unwrap_or(0);
        assert!(!st.staleness_ms.is_empty());
        // The bound is an interval plus a round trip when read (docs/fleet.md); slack for a
        // loaded machine, whose timers fire late.
        assert!(
            u64::from(max) <= 10 * INTERVAL_MS,
            "staleness up to {max} ms at an interval of {INTERVAL_MS}"
        );
        assert!(
            st.view_age_ms <= 10 * INTERVAL_MS,
            "view age {}",
            st.view_age_ms
        );
    }
    a.open_gate();
    b.open_gate();
    for t in held {
        let _ = t.await;
    }
    // A replica that stops publishing drops out of the view within three intervals.
    let mut hs = hs;
    let last = hs.pop().unwrap();
    last.gw.close().await;
    assert!(
        common::wait_until(|| hs[0].gw.fleet_status().unwrap().replicas == 2).await,
        "a closed replica stayed in the view"
    );
    last.finish().await;
    for h in hs {
        h.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_fails_no_request_and_the_shared_view_resumes() {
    let mut redis = Redis::start();
    let (a, b) = (Mock::start("a").await, Mock::start("b").await);
    let hs = replicas(&[&a, &b], &redis, 3, "").await;
    let before = drive(&hs, None, 4, Duration::from_millis(300)).await;
    assert!(before.iter().all(|&s| s == 200));
    redis.stop();
    // Requests keep flowing while the replicas notice and fall back.
    let (during, tenant) = tokio::join!(
        drive(&hs, None, 4, Duration::from_millis(1500)),
        drive(&hs, Some("1"), 6, Duration::from_millis(1500)),
    );
    assert!(
        during.iter().all(|&s| s == 200),
        "a request failed during the outage: {:?}",
        during.iter().filter(|&&s| s != 200).collect::<Vec<_>>()
    );
    assert!(tenant.iter().all(|&s| s == 200 || s == 429));
    for h in &hs {
        let st = h.gw.fleet_status().unwrap();
        assert_eq!(st.mode, FleetMode::LocalShare, "{}", st.replica);
        assert!(!st.redis_up);
        assert!(st.syncs_failed > 0);
        let m = h.gw.metrics_text();
        assert!(m.contains("switchyard_fleet_local_fallback 1"));
        assert!(m.contains("switchyard_fleet_redis_up 0"));
    }
    // Each replica admitted about its share (a third) of the rate, not the whole rate.
    let ok = tenant.iter().filter(|&&s| s == 200).count() as f64 * COST as f64;
    let bound = 500.0 * 1.5 + 3.0 * 500.0 / 3.0 * 0.5 + 3.0 * 2.0 * 100.0;
    assert!(
        ok <= bound,
        "admitted {ok} tokens in the outage; bound {bound}"
    );
    redis.spawn();
    for h in &hs {
        assert!(
            common::wait_until(|| {
                let st = h.gw.fleet_status().unwrap();
                st.mode == FleetMode::Shared && st.redis_up && st.replicas == 3
            })
            .await,
            "the shared view did not resume"
        );
    }
    let after = drive(&hs, None, 4, Duration::from_millis(300)).await;
    assert!(after.iter().all(|&s| s == 200));
    for h in hs {
        h.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_limited_tenants_while_redis_is_down() {
    let mut redis = Redis::start();
    let a = Mock::start("a").await;
    let hs = replicas(&[&a], &redis, 1, "fail_closed = true").await;
    redis.stop();
    assert!(
        common::wait_until(|| hs[0].gw.fleet_status().unwrap().mode == FleetMode::FailClosed).await
    );
    let r = hs[0]
        .post(
            "/v1/chat/completions",
            chat(),
            &[("x-switchyard-tenant", "1")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let _ = common::read_all(r).await;
    // Tenants without a rate are not affected.
    let r = hs[0].post("/v1/chat/completions", chat(), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let _ = common::read_all(r).await;
    for h in hs {
        h.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pause_seen_by_one_replica_holds_on_all() {
    let redis = Redis::start();
    let (a, b) = (Mock::start("a").await, Mock::start("b").await);
    let hs = replicas(&[&a, &b], &redis, 3, "").await;
    let warm = drive(&hs, None, 4, Duration::from_millis(300)).await;
    assert!(warm.iter().all(|&s| s == 200));
    // b asks replica 0 for a 5 s pause.
    b.set(Mode::RateLimit(5));
    let hits = b.hits();
    let end = Instant::now() + Duration::from_secs(10);
    while b.hits() == hits {
        assert!(Instant::now() < end, "replica 0 never sent to b");
        // Enough at once that a's load sends some to b.
        let _ = drive(&hs[..1], None, 12, Duration::from_millis(50)).await;
    }
    // b is fine again, but every replica keeps off it for the pause it asked.
    b.set(Mode::Ok);
    assert!(
        common::wait_until(|| hs[1..]
            .iter()
            .all(|h| h.gw.fleet_status().unwrap().health_applied >= 1))
        .await,
        "the pause did not reach the other replicas"
    );
    // The pause is recorded before `health_applied` counts it; a control tick puts it in
    // force.
    for h in &hs[1..] {
        h.gw.router().tick();
    }
    let hits = b.hits();
    let statuses = drive(&hs[1..], None, 12, Duration::from_millis(500)).await;
    assert!(statuses.iter().all(|&s| s == 200));
    assert_eq!(b.hits(), hits, "the other replicas sent to the paused node");
    for h in hs {
        h.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sync_within_three_intervals_of_a_good_one_is_not_an_outage() {
    let redis = Redis::start();
    let a = Mock::start("a").await;
    // 1 s interval: a sync times out after 1 s, and the grace is 3 s from the last good one.
    let hs = replicas(&[&a], &redis, 1, "sync_interval_ms = 1000").await;
    let status = || hs[0].gw.fleet_status().unwrap();
    assert!(common::wait_until(|| status().syncs_ok >= 1).await);
    let failed = status().syncs_failed;
    // Frozen for 2.1 s: the sync that starts in the first second gets no answer within its
    // second and fails, within 2 s of the last good one. The replica stays shared.
    redis.freeze(true);
    let end = Instant::now() + Duration::from_millis(2100);
    while Instant::now() < end {
        let st = status();
        assert_eq!(st.mode, FleetMode::Shared, "a failed sync flipped the mode");
        assert!(st.redis_up);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.freeze(false);
    assert!(
        status().syncs_failed > failed,
        "no sync failed while Redis was frozen"
    );
    let r = hs[0].post("/v1/chat/completions", chat(), &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let _ = common::read_all(r).await;
    assert!(common::wait_until(|| status().syncs_ok >= 2).await);
    assert_eq!(status().mode, FleetMode::Shared);
    for h in hs {
        h.finish().await;
    }
}
