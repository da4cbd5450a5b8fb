//! The gateway in front of controllable mock model servers, over real loopback sockets.
mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use switchyard::Outcome;

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Sends `n` requests until `mock` has been hit; every client must see 200.
async fn until_hit(h: &Harness, mock: &Mock, body: &str, max: usize) {
    for _ in 0..max {
        let r = h.post("/v1/chat/completions", body, &[]).await;
        let status = r.status();
        let text = read_all(r).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        if mock.hits() > 0 {
            return;
        }
    }
    panic!("{} was never chosen in {max} requests", mock.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streaming_and_streaming_pass_through_intact() {
    pass_through_intact("").await;
}

/// The same through the dispatcher's queues only (no routing on the I/O threads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_streaming_and_streaming_pass_through_intact_through_the_queues() {
    pass_through_intact("route_inline = false").await;
}

async fn pass_through_intact(gateway_extra: &str) {
    let a = Mock::start("a").await;
    let h = Harness::start(&fleet_toml(&[&a], gateway_extra, "")).await;

    let r = h
        .post(
            "/v1/chat/completions",
            CHAT,
            &[("authorization", "Bearer k")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-switchyard-node"], "a");
    assert_eq!(read_all(r).await, answer_json("a"));

    let completions = r#"{"model":"m","prompt":"Once upon a time","max_tokens":4}"#;
    let r = h.post("/v1/completions", completions, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(read_all(r).await, answer_json("a"));

    // Streaming: the client gets the first content chunk while the server still holds the
    // rest back, so nothing is buffered; the whole stream arrives byte for byte.
    a.state.chunks.store(5, Ordering::SeqCst);
    a.hold_after(Some(1));
    let r = h.post("/v1/chat/completions", CHAT_STREAM, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut body = r.into_body();
    let mut got = String::new();
    while !got.contains("tok0") {
        let f = tokio::time::timeout(LONG, body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        got += std::str::from_utf8(f.data_ref().unwrap()).unwrap();
    }
    assert!(
        !got.contains("tok1"),
        "held-back chunk arrived early: {got}"
    );
    a.open_gate();
    while let Some(f) = tokio::time::timeout(LONG, body.frame()).await.unwrap() {
        got += std::str::from_utf8(f.unwrap().data_ref().unwrap()).unwrap();
    }
    assert_eq!(got, whole_stream(5, false));
    assert_eq!(a.hits(), 3);
    // The upstream got the client's body and its credentials.
    assert_eq!(a.state.bodies.lock().unwrap()[0], json(CHAT));
    assert!(wait_until(|| h.gw.router().finished()[Outcome::Success] == 3).await);
    let (status, text) = h.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains(
            "switchyard_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 2"
        ),
        "{text}"
    );
    assert!(
        text.contains("switchyard_http_ttft_seconds_count 1"),
        "{text}"
    );
    assert!(
        text.contains("switchyard_tasks_total{outcome=\"success\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("switchyard_http_routing_overhead_seconds_count 3"),
        "{text}"
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_usage_settles_to_the_servers_count() {
    let a = Mock::start("a").await;
    let h = Harness::start(&fleet_toml(&[&a], "include_usage = true", "")).await;
    let r = h.post("/v1/chat/completions", CHAT_STREAM, &[]).await;
    assert_eq!(read_all(r).await, whole_stream(3, true));
    assert_eq!(
        a.state.bodies.lock().unwrap()[0]["stream_options"]["include_usage"],
        true
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_health_and_unknown_routes() {
    let a = Mock::start("a").await;
    let h = Harness::start(&fleet_toml(&[&a], "", "")).await;
    let (s, text) = h.get("/v1/models").await;
    assert_eq!(s, StatusCode::OK);
    let v = json(&text);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "m");
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    let (s, _) = h.get("/health").await;
    assert_eq!(s, StatusCode::OK);
    let (s, text) = h.get("/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(json(&text)["error"]["code"], "not_found");
    let (s, _) = h.get("/v1/chat/completions").await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.hits(), 0);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_4xx_and_reach_no_server() {
    let a = Mock::start("a").await;
    let h = Harness::start(&fleet_toml(&[&a], "max_body_bytes = 1024", "")).await;
    let cases: [(&str, StatusCode, &str); 6] = [
        ("this is not json", StatusCode::BAD_REQUEST, "invalid_json"),
        (
            r#"{"messages":[]}"#,
            StatusCode::BAD_REQUEST,
            "missing_model",
        ),
        (
            r#"{"model":"m"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_messages",
        ),
        (
            r#"{"model":"m","messages":[],"stream":"yes"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_stream",
        ),
        (
            r#"{"model":"gpt-9","messages":[]}"#,
            StatusCode::NOT_FOUND,
            "model_not_found",
        ),
        (
            &format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
                "x".repeat(2000)
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
        ),
    ];
    for (body, status, code) in cases {
        let r = h.post("/v1/chat/completions", body, &[]).await;
        assert_eq!(r.status(), status, "{body:.60}");
        let v = json(&read_all(r).await);
        assert_eq!(v["error"]["code"], code);
        assert!(v["error"]["message"].is_string() && v["error"]["type"].is_string());
    }
    let r = h
        .post(
            "/v1/chat/completions",
            CHAT,
            &[("x-switchyard-priority", "urgent")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = h
        .post(
            "/v1/chat/completions",
            CHAT,
            &[("x-switchyard-slo-ms", "-3")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // An oversized body without a Content-Length (chunked) is cut at the limit too.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let req = Request::post(h.url("/v1/chat/completions"))
        .body(ChanBody(rx))
        .unwrap();
    let c = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<ChanBody>();
    let send = tokio::spawn(async move {
        for _ in 0..4 {
            if tx.send(Ok(Bytes::from(vec![b' '; 600]))).await.is_err() {
                break;
            }
        }
    });
    let r = tokio::time::timeout(LONG, c.request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let _ = send.await;

    assert_eq!(a.hits(), 0, "a bad request reached a server");
    assert_eq!(
        h.gw.router().finished().total(),
        0,
        "a bad request reached the router"
    );
    assert_eq!(h.gw.requests_answered("/v1/chat/completions", 400), 6);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500ing_server_is_failed_over_before_the_first_byte() {
    let bad = Mock::start("bad").await;
    let good = Mock::start("good").await;
    bad.set(Mode::Fail500);
    let h = Harness::start(&fleet_toml(&[&bad, &good], "", "")).await;
    until_hit(&h, &bad, CHAT, 60).await;
    // Streaming too.
    let before = bad.hits();
    for _ in 0..60 {
        let r = h.post("/v1/chat/completions", CHAT_STREAM, &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(read_all(r).await, whole_stream(3, false));
        if bad.hits() > before {
            break;
        }
    }
    let text = h.gw.metrics_text();
    assert!(
        !text.contains("switchyard_http_failovers_total 0\n"),
        "{text}"
    );
    assert!(text.contains("switchyard_http_upstream_failures_total{outcome=\"server_error\"}"));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_is_failed_over_and_clients_see_200() {
    let dead = Mock::start("dead").await;
    let live = Mock::start("live").await;
    let h = Harness::start(&fleet_toml(&[&dead, &live], "", "")).await;
    let r = h.post("/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let _ = read_all(r).await;
    dead.kill();
    // The kill reaches the mock's tasks asynchronously: wait until its port refuses.
    assert!(
        wait_until(|| std::net::TcpStream::connect(dead.addr).is_err()).await,
        "the killed mock still accepts connections"
    );
    let served = live.hits() + dead.hits();
    // Until the dead node's connect errors eject it, some requests try it first.
    for _ in 0..40 {
        for body in [CHAT, CHAT_STREAM] {
            let r = h.post("/v1/chat/completions", body, &[]).await;
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()["x-switchyard-node"], "live");
            let _ = read_all(r).await;
        }
    }
    assert_eq!(live.hits() + dead.hits(), served + 80);
    let failures = h.gw.metrics_text();
    assert!(failures.contains("switchyard_http_upstream_failures_total{outcome=\"server_error\"}"));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_that_node() {
    let busy = Mock::start("busy").await;
    let calm = Mock::start("calm").await;
    busy.set(Mode::RateLimit(60));
    let h = Harness::start(&fleet_toml(&[&busy, &calm], "", "")).await;
    until_hit(&h, &busy, CHAT, 60).await;
    assert_eq!(busy.hits(), 1);
    // The pause was recorded before the request failed over; it takes effect on the next
    // control tick, run here rather than waited for.
    h.gw.router().tick();
    for _ in 0..30 {
        let r = h.post("/v1/chat/completions", CHAT, &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        let _ = read_all(r).await;
    }
    assert_eq!(busy.hits(), 1, "a paused node got requests");
    assert!(h
        .gw
        .metrics_text()
        .contains("switchyard_http_upstream_pauses_total 1\n"));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_nowhere_else_to_go_reaches_the_client_with_retry_after() {
    let busy = Mock::start("busy").await;
    busy.set(Mode::RateLimit(7));
    let h = Harness::start(&fleet_toml(&[&busy], "", "")).await;
    let r = h.post("/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "7");
    assert_eq!(
        json(&read_all(r).await)["error"]["type"],
        "rate_limit_error"
    );
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_times_out_before_the_first_token_and_fails_over() {
    let slow = Mock::start("slow").await;
    let quick = Mock::start("quick").await;
    slow.set(Mode::HangAfterHead);
    // 3 s: a healthy request on a loaded host never takes that long to its first token, so
    // exactly one timeout is counted.
    let h = Harness::start(&fleet_toml(&[&slow, &quick], "ttft_timeout_ms = 3000", "")).await;
    for _ in 0..60 {
        let r = h.post("/v1/chat/completions", CHAT_STREAM, &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(read_all(r).await, whole_stream(3, false));
        if slow.hits() > 0 {
            break;
        }
    }
    assert!(slow.hits() > 0, "the silent node was never chosen");
    assert!(h
        .gw
        .metrics_text()
        .contains("switchyard_http_upstream_failures_total{outcome=\"timeout\"} 1"));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_no_room_is_shed_with_503_and_retry_after() {
    let a = Mock::start("a").await;
    a.hold_after(Some(1));
    let toml = fleet_toml(
        &[&a],
        "saturation_wait_ms = [0, 0, 0, 0]\nretry_after_s = 2",
        "",
    )
    .replace("max_concurrency = 16", "max_concurrency = 1");
    let h = Harness::start(&toml).await;
    // The first stream holds the node's only slot.
    let first = h.post("/v1/chat/completions", CHAT_STREAM, &[]).await;
    assert_eq!(first.status(), StatusCode::OK);
    let r = h.post("/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "2");
    let v = json(&read_all(r).await);
    assert_eq!(v["error"]["code"], "overloaded");
    assert_eq!(a.hits(), 1);
    a.open_gate();
    assert_eq!(read_all(first).await, whole_stream(3, false));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_rate_gets_429() {
    let a = Mock::start("a").await;
    let mut toml = fleet_toml(&[&a], "tenants = { acme = 7 }", "");
    toml += "\n[[tenant]]\nid = 7\nmax_tokens_per_second = 1.0\ntoken_burst_seconds = 1.0\n";
    let h = Harness::start(&toml).await;
    let r = h
        .post(
            "/v1/chat/completions",
            CHAT,
            &[("x-switchyard-tenant", "acme")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        json(&read_all(r).await)["error"]["code"],
        "rate_limit_exceeded"
    );
    // Another tenant is not limited.
    let r = h
        .post(
            "/v1/chat/completions",
            CHAT,
            &[("x-switchyard-tenant", "other")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let _ = read_all(r).await;
    assert_eq!(a.hits(), 1);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_broken_after_its_first_byte_ends_with_an_error_event() {
    let a = Mock::start("a").await;
    a.set(Mode::DropMidStream);
    a.state.chunks.store(5, Ordering::SeqCst);
    let h = Harness::start(&fleet_toml(&[&a], "", "")).await;
    let r = h.post("/v1/chat/completions", CHAT_STREAM, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = read_all(r).await;
    assert!(
        text.starts_with(&(role_chunk() + &content_chunk(0) + &content_chunk(1))),
        "{text}"
    );
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let v = json(last.strip_prefix("data: ").unwrap());
    assert_eq!(v["error"]["code"], "upstream_error");
    assert!(!text.contains("[DONE]"));
    assert_eq!(a.hits(), 1, "no failover after the first byte");
    assert!(wait_until(|| h.gw.router().finished()[Outcome::ServerError] == 1).await);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hanging_up_mid_stream_releases_the_lease() {
    let a = Mock::start("a").await;
    a.state.chunks.store(1_000, Ordering::SeqCst);
    a.hold_after(Some(2));
    let h = Harness::start(&fleet_toml(&[&a], "", "")).await;
    let r = h.post("/v1/chat/completions", CHAT_STREAM, &[]).await;
    let mut body = r.into_body();
    let f = tokio::time::timeout(LONG, body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(f.data_ref().is_some());
    assert_eq!(h.gw.router().in_flight(), 1);
    drop(body);
    assert!(
        wait_until(|| h.gw.router().in_flight() == 0).await,
        "lease held after hang-up"
    );
    assert!(wait_until(|| h.gw.router().finished()[Outcome::Cancelled] == 1).await);
    // The upstream stream was closed too.
    assert!(wait_until(|| a.state.cut_off.load(Ordering::SeqCst) == 1).await);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_drains_streams_in_flight() {
    let a = Mock::start("a").await;
    a.hold_after(Some(1));
    let mut h = Harness::start(&fleet_toml(&[&a], "", "")).await;
    let r = h.post("/v1/chat/completions", CHAT_STREAM, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    h.signal_stop();
    assert!(wait_until(|| h.gw.is_draining()).await);
    // No new connection is accepted once draining.
    assert!(
        wait_until(|| std::net::TcpStream::connect(h.addr).is_err()).await,
        "still accepting"
    );
    // A request reaching the service while draining is refused, and /health says so.
    let mut svc = h.gw.service();
    let req = Request::post("/v1/chat/completions")
        .body(http_body_util::Full::new(Bytes::from(CHAT)))
        .unwrap();
    let late = tower_service::Service::call(&mut svc, req).await.unwrap();
    assert_eq!(late.status(), StatusCode::SERVICE_UNAVAILABLE);
    let req = Request::get("/health")
        .body(http_body_util::Full::<Bytes>::default())
        .unwrap();
    let health = tower_service::Service::call(&mut svc, req).await.unwrap();
    assert_eq!(health.status(), StatusCode::SERVICE_UNAVAILABLE);
    a.open_gate();
    assert_eq!(read_all(r).await, whole_stream(3, false));
    h.join().await;
    assert!(h.gw.router().ledgers_are_zero());
    assert_eq!(h.gw.router().finished()[Outcome::Success], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_or_empty_config_is_refused_and_the_fleet_keeps_serving() {
    let a = Mock::start("a").await;
    let b = Mock::start("b").await;
    let good = fleet_toml(&[&a], "", "");
    let h = Harness::start(&good).await;
    // Half-written: cut inside the node's url string.
    let cut = good.find("url = ").unwrap() + 12;
    std::fs::write(&h.path, &good[..cut]).unwrap();
    assert!(
        wait_until(|| h.gw.reloads().1 >= 1).await,
        "truncated file not noticed"
    );
    let r = h.post("/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let _ = read_all(r).await;
    std::fs::write(&h.path, "").unwrap();
    assert!(
        wait_until(|| h.gw.reloads().1 >= 2).await,
        "empty file not noticed"
    );
    // A file whose nodes are all gone leaves nothing to serve: refused too.
    std::fs::write(&h.path, "[gateway]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    assert!(wait_until(|| h.gw.reloads().1 >= 3).await);
    let r = h.post("/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let _ = read_all(r).await;
    assert_eq!(a.hits(), 2);
    assert_eq!(h.gw.reloads().0, 0);
    // A valid file moving node `a` to b's url is applied.
    std::fs::write(&h.path, good.replace(&a.url(), &b.url())).unwrap();
    assert!(
        wait_until(|| h.gw.reloads().0 == 1).await,
        "valid reload not applied"
    );
    let r = h.post("/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(read_all(r).await, answer_json("b"));
    assert_eq!((a.hits(), b.hits()), (2, 1));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_past_capacity_is_shed_and_nothing_hangs() {
    let a = Mock::start("a").await;
    a.hold_after(Some(1));
    let toml = fleet_toml(&[&a], "saturation_wait_ms = [0, 0, 0, 0]", "")
        .replace("max_concurrency = 16", "max_concurrency = 2");
    let h = Harness::start(&toml).await;
    // Streams take the node's slots (a class may use only its headroom share of them)
    // until one is refused.
    let mut held = Vec::new();
    loop {
        let r = h.post("/v1/chat/completions", CHAT_STREAM, &[]).await;
        if r.status() == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert_eq!(r.status(), StatusCode::OK);
        held.push(r);
        assert!(held.len() <= 2, "more streams than slots");
    }
    assert!(!held.is_empty());
    let mut flood = Vec::new();
    for _ in 0..40 {
        let c = h.client.clone();
        let url = h.url("/v1/chat/completions");
        flood.push(tokio::spawn(async move {
            let req = Request::post(url)
                .body(http_body_util::Full::new(Bytes::from(CHAT)))
                .unwrap();
            tokio::time::timeout(LONG, c.request(req))
                .await
                .unwrap()
                .unwrap()
        }));
    }
    for j in flood {
        let r = j.await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.headers().contains_key("retry-after"));
    }
    assert_eq!(a.hits(), held.len(), "a shed request reached the server");
    a.open_gate();
    for r in held {
        assert_eq!(read_all(r).await, whole_stream(3, false));
    }
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_is_failed_over_for_streams_and_times_out_alone() {
    let hung = Mock::start("hung").await;
    let ok = Mock::start("ok").await;
    hung.set(Mode::Hang);
    let h = Harness::start(&fleet_toml(&[&hung, &ok], "ttft_timeout_ms = 3000", "")).await;
    for _ in 0..60 {
        let r = h.post("/v1/chat/completions", CHAT_STREAM, &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(read_all(r).await, whole_stream(3, false));
        if hung.hits() > 0 {
            break;
        }
    }
    assert!(hung.hits() > 0, "the hung node was never chosen");
    h.finish().await;

    // Alone, a non-streaming request ends at its total timeout with a 504.
    let hung = Mock::start("hung").await;
    hung.set(Mode::Hang);
    let h = Harness::start(&fleet_toml(&[&hung], "total_timeout_ms = 400", "")).await;
    let r = h.post("/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        json(&read_all(r).await)["error"]["code"],
        "upstream_timeout"
    );
    assert!(wait_until(|| h.gw.router().finished()[Outcome::Timeout] == 1).await);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_gone_quiet_past_the_idle_timeout_ends_with_an_error_event() {
    let a = Mock::start("a").await;
    a.hold_after(Some(2));
    let h = Harness::start(&fleet_toml(&[&a], "idle_timeout_ms = 1000", "")).await;
    let r = h.post("/v1/chat/completions", CHAT_STREAM, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = read_all(r).await;
    assert!(
        text.starts_with(&(role_chunk() + &content_chunk(0) + &content_chunk(1))),
        "{text}"
    );
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let v = json(last.strip_prefix("data: ").unwrap());
    assert_eq!(v["error"]["code"], "upstream_timeout");
    assert!(wait_until(|| h.gw.router().finished()[Outcome::Timeout] == 1).await);
    assert!(h
        .gw
        .metrics_text()
        .contains("switchyard_http_stream_errors_total 1\n"));
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_streaming_answer_broken_halfway_is_failed_over() {
    let broken = Mock::start("broken").await;
    let ok = Mock::start("ok").await;
    broken.set(Mode::DropMidStream);
    let h = Harness::start(&fleet_toml(&[&broken, &ok], "", "")).await;
    for _ in 0..60 {
        let r = h.post("/v1/chat/completions", CHAT, &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(read_all(r).await, answer_json("ok"));
        if broken.hits() > 0 {
            break;
        }
    }
    assert!(broken.hits() > 0, "the broken node was never chosen");
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_before_the_answer_cancels_the_task() {
    let hung = Mock::start("hung").await;
    hung.set(Mode::Hang);
    let h = Harness::start(&fleet_toml(&[&hung], "", "")).await;
    let gone = tokio::time::timeout(
        Duration::from_millis(300),
        h.post("/v1/chat/completions", CHAT, &[]),
    )
    .await;
    assert!(gone.is_err(), "the hung server answered");
    assert!(wait_until(|| h.gw.router().finished()[Outcome::Cancelled] == 1).await);
    assert_eq!(h.gw.router().in_flight(), 0);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_stream_passes_through_and_succeeds() {
    let a = Mock::start("a").await;
    a.state.chunks.store(0, Ordering::SeqCst);
    let h = Harness::start(&fleet_toml(&[&a], "", "")).await;
    let r = h.post("/v1/chat/completions", CHAT_STREAM, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(read_all(r).await, whole_stream(0, false));
    assert!(wait_until(|| h.gw.router().finished()[Outcome::Success] == 1).await);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impossible_slo_is_refused_with_503() {
    let a = Mock::start("a").await;
    let toml = fleet_toml(
        &[&a],
        "",
        "base_latency_ms = 50.0\ndecode_tokens_per_sec = 10.0",
    );
    let h = Harness::start(&toml).await;
    // 8 output tokens at 10/s cannot finish within 5 ms.
    let r = h
        .post(
            "/v1/chat/completions",
            CHAT,
            &[("x-switchyard-slo-ms", "5")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        json(&read_all(r).await)["error"]["code"],
        "slo_unsatisfiable"
    );
    assert_eq!(a.hits(), 0);
    // A limit it can meet is served.
    let r = h
        .post(
            "/v1/chat/completions",
            CHAT,
            &[("x-switchyard-slo-ms", "60000")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let _ = read_all(r).await;
    assert_eq!(a.hits(), 1);
    h.finish().await;
}

/// Streams until `bad` has been tried; every client sees the good node's whole stream.
async fn stream_until_hit(h: &Harness, bad: &Mock) {
    for _ in 0..60 {
        let r = h.post("/v1/chat/completions", CHAT_STREAM, &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(read_all(r).await, whole_stream(3, false));
        if bad.hits() > 0 {
            return;
        }
    }
    panic!("{} was never chosen", bad.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_broken_or_erroring_before_its_first_token_is_failed_over() {
    for mode in [Mode::DropAfterRole, Mode::ErrorEvent] {
        let bad = Mock::start("bad").await;
        let ok = Mock::start("ok").await;
        bad.set(mode);
        let h = Harness::start(&fleet_toml(&[&bad, &ok], "", "")).await;
        stream_until_hit(&h, &bad).await;
        assert!(h
            .gw
            .metrics_text()
            .contains("switchyard_http_upstream_failures_total{outcome=\"server_error\"} 1\n"));
        h.finish().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_servers_400_is_passed_through_and_not_failed_over() {
    let a = Mock::start("a").await;
    let b = Mock::start("b").await;
    a.set(Mode::Fail400);
    b.set(Mode::Fail400);
    let h = Harness::start(&fleet_toml(&[&a, &b], "", "")).await;
    let r = h.post("/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        read_all(r).await,
        "{\"error\":{\"message\":\"bad temperature\"}}"
    );
    assert_eq!(a.hits() + b.hits(), 1);
    // The same for a streaming request: the server's error, not a stream.
    let r = h.post("/v1/chat/completions", CHAT_STREAM, &[]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let _ = read_all(r).await;
    assert_eq!(a.hits() + b.hits(), 2);
    assert!(wait_until(|| h.gw.router().finished()[Outcome::Success] == 2).await);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_without_retry_after_pauses_for_the_default() {
    let busy = Mock::start("busy").await;
    let calm = Mock::start("calm").await;
    busy.set(Mode::RateLimit(0));
    let h = Harness::start(&fleet_toml(&[&busy, &calm], "default_pause_ms = 60000", "")).await;
    until_hit(&h, &busy, CHAT, 60).await;
    h.gw.router().tick(); // the pause recorded with the 429, in force
    for _ in 0..20 {
        let r = h.post("/v1/chat/completions", CHAT, &[]).await;
        assert_eq!(r.status(), StatusCode::OK);
        let _ = read_all(r).await;
    }
    assert_eq!(busy.hits(), 1);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_past_the_total_timeout_ends_with_an_error_event() {
    let a = Mock::start("a").await;
    a.hold_after(Some(1));
    let h = Harness::start(&fleet_toml(&[&a], "total_timeout_ms = 1500", "")).await;
    let r = h.post("/v1/chat/completions", CHAT_STREAM, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = read_all(r).await;
    assert!(text.contains("total timeout"), "{text}");
    assert!(wait_until(|| h.gw.router().finished()[Outcome::Timeout] == 1).await);
    h.finish().await;
}

/// A stream that keeps flowing (an upstream that never goes quiet) is still ended at the total
/// timeout, with the error event after the last chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_never_goes_quiet_ends_at_the_total_timeout() {
    let a = Mock::start("a").await;
    // Far more chunks than any build streams in a second.
    a.state.chunks.store(50_000_000, Ordering::SeqCst);
    let h = Harness::start(&fleet_toml(&[&a], "total_timeout_ms = 1000", "")).await;
    let r = h.post("/v1/chat/completions", CHAT_STREAM, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let text = read_all(r).await;
    assert!(text.ends_with("\n\n"), "the stream ended mid-event");
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    assert!(last.contains("total timeout"), "{last}");
    assert!(wait_until(|| h.gw.router().finished()[Outcome::Timeout] == 1).await);
    assert!(wait_until(|| a.state.cut_off.load(Ordering::SeqCst) == 1).await);
    h.finish().await;
}

/// A client that stops reading a long stream (its connection open) makes hyper stop polling
/// the response body once the socket buffers fill, so nothing in the stream's own path runs:
/// the total timeout still ends the request and frees its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_at_the_total_timeout() {
    let a = Mock::start("a").await;
    // 64 MB in 64 KiB chunks: far more than the loopback socket buffers hold, and few enough
    // chunks that even an instrumented build fills them long before the timeout (with small
    // chunks a slow build could still be streaming at the timeout, which then ends the
    // request by the relay's own timer instead).
    a.state.chunks.store(1024, Ordering::SeqCst);
    a.state.pad.store(64 * 1024, Ordering::SeqCst);
    let h = Harness::start(&fleet_toml(&[&a], "total_timeout_ms = 2500", "")).await;
    let r = h.post("/v1/chat/completions", CHAT_STREAM, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    // Hold the body unread.
    let body = r.into_body();
    assert_eq!(h.gw.router().in_flight(), 1);
    assert!(
        wait_until(|| h.gw.router().finished()[Outcome::Cancelled] == 1).await,
        "the stalled stream was not ended at the total timeout"
    );
    assert_eq!(h.gw.router().in_flight(), 0);
    drop(body);
    // Counted once: dropping the body afterwards ends nothing twice.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let done = h.gw.router().finished();
    assert_eq!(done[Outcome::Cancelled], 1);
    assert_eq!(done.total(), 1);
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_waiting_at_its_deadline() {
    let a = Mock::start("a").await;
    a.hold_after(Some(1));
    let mut h = Harness::start(&fleet_toml(&[&a], "shutdown_grace_ms = 300", "")).await;
    let r = h.post("/v1/chat/completions", CHAT_STREAM, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    h.signal_stop();
    // serve returns at the deadline although the stream is still open.
    h.join().await;
    assert_eq!(h.gw.router().in_flight(), 1);
    a.open_gate();
    let _ = read_all(r).await;
    assert!(wait_until(|| h.gw.router().in_flight() == 0).await);
    assert!(h.gw.router().ledgers_are_zero());
}

/// The drain ends when every lease is back, not only when every connection has closed: a
/// lease held with no connection open keeps `serve` from returning until it is released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_every_lease_not_only_the_connections() {
    let a = Mock::start("a").await;
    let mut h = Harness::start(&fleet_toml(&[&a], "", "")).await;
    let router = h.gw.router().clone();
    let caps = router.resolve(&["m"]).unwrap();
    let (_, lease) = router
        .reader()
        .route(&switchyard::Task::new(1, 10, 10).require(caps))
        .unwrap();
    assert_eq!(router.in_flight(), 1);
    h.signal_stop();
    // Long enough for the accept loop to stop and every connection to close.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!h.serve_returned(), "serve returned with a lease out");
    drop(lease);
    h.join().await;
    assert!(router.ledgers_are_zero());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_raises_a_nodes_limit_and_the_next_request_fits() {
    let a = Mock::start("a").await;
    a.hold_after(Some(1));
    let one = fleet_toml(&[&a], "saturation_wait_ms = [0, 0, 0, 0]", "")
        .replace("max_concurrency = 16", "max_concurrency = 1");
    let h = Harness::start(&one).await;
    let held = h.post("/v1/chat/completions", CHAT_STREAM, &[]).await;
    assert_eq!(held.status(), StatusCode::OK);
    let r = h.post("/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let _ = read_all(r).await;
    std::fs::write(
        &h.path,
        one.replace("max_concurrency = 1", "max_concurrency = 8"),
    )
    .unwrap();
    assert!(
        wait_until(|| h.gw.reloads().0 == 1).await,
        "reload not applied"
    );
    let r = h.post("/v1/chat/completions", CHAT, &[]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(read_all(r).await, answer_json("a"));
    a.open_gate();
    assert_eq!(read_all(held).await, whole_stream(3, false));
    h.finish().await;
}
