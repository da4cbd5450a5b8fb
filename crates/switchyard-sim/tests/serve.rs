//! The simulated model servers on real loopback sockets (ephemeral ports).
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use switchyard_sim::loadgen::{self, HttpClient};
use switchyard_sim::serve::{self, Fault, ServeOptions, ServerSet};

const MODEL: &str = "m-1";

/// Two nodes: `fast` (decode 50 tok/s: 20 ms a token) and `one` (a single sequence slot).
fn config() -> switchyard::Config {
    switchyard::Config::parse(
        "test.toml",
        r#"
[[node]]
name = "fast"
url = "http://127.0.0.1:1"
models = ["m-1"]
max_concurrency = 8
base_latency_ms = 5.0
prefill_tokens_per_sec = 100000.0
decode_tokens_per_sec = 50.0
memory_mb = 10000
kv_mb_per_1k_tokens = 100.0

[[node]]
name = "one"
url = "http://127.0.0.1:2"
models = ["m-1"]
max_concurrency = 1
base_latency_ms = 100.0
prefill_tokens_per_sec = 100000.0
decode_tokens_per_sec = 1000.0
"#,
    )
    .unwrap()
}

fn start(speed: f64) -> ServerSet {
    serve::spawn(
        &config(),
        &ServeOptions {
            speed,
            ephemeral: true,
            ..ServeOptions::default()
        },
    )
    .unwrap()
}

fn url(set: &ServerSet, node: &str) -> String {
    set.urls().into_iter().find(|(n, _)| n == node).unwrap().1
}

struct Answer {
    status: u16,
    headers: hyper::HeaderMap,
    body: Vec<u8>,
    /// Each data frame's arrival, from the send.
    frames: Vec<(Duration, Bytes)>,
    broken: bool,
}

async fn call(
    c: &HttpClient,
    method: &str,
    url: &str,
    body: Option<Value>,
) -> Result<Answer, String> {
    let req = hyper::Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    let t = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(20), c.request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut b = resp.into_body();
    let mut out = Answer {
        status,
        headers,
        body: Vec::new(),
        frames: Vec::new(),
        broken: false,
    };
    loop {
        match tokio::time::timeout(Duration::from_secs(20), b.frame()).await {
            Err(_) => return Err("timeout".into()),
            Ok(None) => break,
            Ok(Some(Err(_))) => {
                out.broken = true;
                break;
            }
            Ok(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    out.body.extend_from_slice(d);
                    out.frames.push((t.elapsed(), d.clone()));
                }
            }
        }
    }
    Ok(out)
}

fn chat(content: &str, max_tokens: u32, stream: bool) -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": content}],
           "max_tokens": max_tokens, "stream": stream,
           "stream_options": {"include_usage": true}})
}

/// The `data:` payloads of an SSE body, in order.
fn events(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: ").map(str::to_string))
        .collect()
}

#[tokio::test]
async fn non_streaming_answers_have_the_openai_shape_and_counts() {
    let set = start(1.0);
    let c = loadgen::client(4);
    let u = url(&set, "fast");
    let prompt = "x".repeat(41); // 11 tokens at 4 bytes a token
    let a = call(
        &c,
        "POST",
        &format!("{u}/v1/chat/completions"),
        Some(chat(&prompt, 5, false)),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200);
    let v: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], MODEL);
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(text.split_whitespace().count(), 5);
    assert_eq!(v["usage"]["prompt_tokens"], 11);
    assert_eq!(v["usage"]["completion_tokens"], 5);
    assert_eq!(v["usage"]["total_tokens"], 16);
    // The completions API.
    let a = call(
        &c,
        "POST",
        &format!("{u}/v1/completions"),
        Some(json!({"model": MODEL, "prompt": "abcdefgh", "max_tokens": 3})),
    )
    .await
    .unwrap();
    let v: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(
        (a.status, v["object"].as_str()),
        (200, Some("text_completion"))
    );
    assert_eq!(
        v["choices"][0]["text"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        3
    );
    assert_eq!(v["usage"]["prompt_tokens"], 2);
    // Models, health, the peers' info and load endpoints.
    let a = call(&c, "GET", &format!("{u}/v1/models"), None)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["data"][0]["id"], MODEL);
    for path in [
        "/health",
        "/health_generate",
        "/get_model_info",
        "/get_server_info",
        "/v1/loads",
    ] {
        assert_eq!(
            call(&c, "GET", &format!("{u}{path}"), None)
                .await
                .unwrap()
                .status,
            200,
            "{path}"
        );
    }
    let a = call(&c, "GET", &format!("{u}/get_load"), None)
        .await
        .unwrap();
    let v: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v[0]["num_tokens"], 0);
    // Bad requests.
    let a = call(
        &c,
        "POST",
        &format!("{u}/v1/chat/completions"),
        Some(json!({"model": "other"})),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 404);
    let a = call(
        &c,
        "POST",
        &format!("{u}/v1/chat/completions"),
        Some(json!({"messages": []})),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 400);
    assert_eq!(
        call(&c, "GET", &format!("{u}/nope"), None)
            .await
            .unwrap()
            .status,
        404
    );
    assert_eq!(set.stats()["fast"].completed, 2);
}

#[tokio::test]
async fn streaming_is_paced_and_ends_with_usage_then_done() {
    let set = start(1.0);
    let c = loadgen::client(4);
    let u = url(&set, "fast");
    let a = call(
        &c,
        "POST",
        &format!("{u}/v1/chat/completions"),
        Some(chat("hello", 10, true)),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-type"], "text/event-stream");
    let ev = events(&a.body);
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = ev[..ev.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: Vec<&Value> = chunks
        .iter()
        .filter(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        })
        .collect();
    assert_eq!(content.len(), 10);
    let fin = &chunks[chunks.len() - 2];
    assert_eq!(fin["choices"][0]["finish_reason"], "length");
    let usage = &chunks[chunks.len() - 1];
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert_eq!(usage["usage"]["completion_tokens"], 10);
    // Paced: the tokens came in several frames spread over time (20 ms a token here), not
    // in one burst.
    let content_frames: Vec<Duration> = a
        .frames
        .iter()
        .filter(|(_, b)| String::from_utf8_lossy(b).contains("\"content\":\""))
        .map(|(t, _)| *t)
        .collect();
    assert!(content_frames.len() >= 5, "{} frames", content_frames.len());
    assert!(content_frames.windows(2).all(|w| w[0] <= w[1]));
    assert!(*content_frames.last().unwrap() - content_frames[0] >= Duration::from_millis(50));
    // Without include_usage: no usage chunk.
    let mut body = chat("hello", 2, true);
    body["stream_options"] = json!({"include_usage": false});
    let a = call(&c, "POST", &format!("{u}/v1/chat/completions"), Some(body))
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&a.body).contains("usage"));
    // Streaming completions.
    let a = call(
        &c,
        "POST",
        &format!("{u}/v1/completions"),
        Some(json!({"model": MODEL, "prompt": "hi", "max_tokens": 3, "stream": true})),
    )
    .await
    .unwrap();
    let ev = events(&a.body);
    assert_eq!(ev.last().unwrap(), "[DONE]");
    let v: Value = serde_json::from_str(&ev[0]).unwrap();
    assert_eq!(v["object"], "text_completion");
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

#[tokio::test]
async fn a_repeated_prefix_hits_the_cache_and_metrics_move() {
    let set = start(10.0);
    let c = loadgen::client(4);
    let u = url(&set, "fast");
    // Three whole 2048-byte blocks and a bit.
    let prompt = switchyard_sim::prompt_for(
        &switchyard_sim::TraceRow {
            arrival_ms: 0,
            input_tokens: 1600,
            output_tokens: 2,
            hash_ids: vec![7, 8, 9, 10],
        },
        0,
    );
    let m0 = call(&c, "GET", &format!("{u}/metrics"), None)
        .await
        .unwrap();
    let m0 = String::from_utf8(m0.body).unwrap();
    assert_eq!(metric(&m0, "vllm:prefix_cache_queries_total"), 0.0);
    for text in [
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
    ] {
        metric(&m0, text);
    }
    let mut cached = Vec::new();
    for _ in 0..2 {
        let a = call(
            &c,
            "POST",
            &format!("{u}/v1/chat/completions"),
            Some(chat(&prompt, 2, false)),
        )
        .await
        .unwrap();
        let v: Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["usage"]["prompt_tokens"], 1600);
        cached.push(
            v["usage"]["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap(),
        );
    }
    assert_eq!(cached, vec![0, 3 * 512]);
    let m = call(&c, "GET", &format!("{u}/metrics"), None)
        .await
        .unwrap();
    let m = String::from_utf8(m.body).unwrap();
    assert_eq!(metric(&m, "vllm:prefix_cache_queries_total"), 3200.0);
    assert_eq!(metric(&m, "vllm:prefix_cache_hits_total"), 1536.0);
    assert_eq!(metric(&m, "vllm:request_success_total"), 2.0);
    assert_eq!(metric(&m, "vllm:generation_tokens_total"), 4.0);
    assert_eq!(metric(&m, "vllm:num_requests_running"), 0.0);
    // The other node's cache is its own; a reset clears counters and caches.
    let a = call(
        &c,
        "POST",
        &format!("{}/v1/chat/completions", url(&set, "one")),
        Some(chat(&prompt, 1, false)),
    )
    .await
    .unwrap();
    let v: Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    set.reset();
    assert_eq!(set.total().prefix_hits, 0);
}

#[tokio::test]
async fn requests_wait_for_a_free_slot() {
    let set = start(1.0);
    let c = loadgen::client(4);
    let u = url(&set, "one");
    let body = chat("wait", 1, false);
    let ep = format!("{u}/v1/chat/completions");
    let (a, b) = tokio::join!(
        call(&c, "POST", &ep, Some(body.clone())),
        call(&c, "POST", &ep, Some(body)),
    );
    assert_eq!((a.unwrap().status, b.unwrap().status), (200, 200));
    let s = set.stats()["one"];
    assert_eq!((s.completed, s.queued, s.running, s.waiting), (2, 1, 0, 0));
}

#[tokio::test]
async fn injected_faults_do_what_they_say() {
    let set = start(10.0);
    let c = loadgen::client(4);
    let u = url(&set, "fast");
    let ep = format!("{u}/v1/chat/completions");
    // 429 with Retry-After, for one request only, set through the node's own control route.
    let a = call(
        &c,
        "POST",
        &format!("{u}/control/fault"),
        Some(json!({"status": 429, "retry_after_s": 2, "count": 1})),
    )
    .await
    .unwrap();
    assert_eq!(a.status, 200);
    let a = call(&c, "POST", &ep, Some(chat("a", 1, false)))
        .await
        .unwrap();
    assert_eq!(a.status, 429);
    assert_eq!(a.headers["retry-after"], "2");
    let v: Value = serde_json::from_slice(&a.body).unwrap();
    assert!(v["error"]["message"].is_string());
    assert_eq!(
        call(&c, "POST", &ep, Some(chat("a", 1, false)))
            .await
            .unwrap()
            .status,
        200
    );
    // 5xx until cleared.
    assert!(set.set_fault("fast", Fault::parse("5xx:503").unwrap()));
    for _ in 0..2 {
        assert_eq!(
            call(&c, "POST", &ep, Some(chat("a", 1, false)))
                .await
                .unwrap()
                .status,
            503
        );
    }
    set.set_fault("fast", Fault::default());
    assert_eq!(
        call(&c, "POST", &ep, Some(chat("a", 1, false)))
            .await
            .unwrap()
            .status,
        200
    );
    // A mid-stream disconnect after three tokens.
    set.set_fault("fast", Fault::parse("disconnect:3").unwrap());
    let a = call(&c, "POST", &ep, Some(chat("a", 8, true)))
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    assert!(a.broken, "the stream must break");
    let text = String::from_utf8_lossy(&a.body);
    assert_eq!(text.matches("\"content\":\"").count() - 1, 3, "{text}"); // minus the role chunk
    assert!(!text.contains("[DONE]"));
    // Not streaming: the connection closes without an answer.
    assert!(call(&c, "POST", &ep, Some(chat("a", 8, false)))
        .await
        .is_err());
    // Slow: still served.
    set.set_fault("fast", Fault::parse("slow:3").unwrap());
    assert_eq!(
        call(&c, "POST", &ep, Some(chat("a", 2, false)))
            .await
            .unwrap()
            .status,
        200
    );
    // Down: the port refuses connections; the control port brings it back.
    let ctl = format!("http://{}/control/fault/fast", set.control_addr);
    assert_eq!(
        call(&c, "POST", &ctl, Some(json!({"down": true})))
            .await
            .unwrap()
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fresh = loadgen::client(1);
    let o = loadgen::send(
        &fresh,
        &ep,
        chat("a", 1, false).to_string(),
        &[],
        Duration::from_secs(5),
        false,
    )
    .await;
    assert_eq!(o.error.as_deref(), Some("connect"), "{o:?}");
    assert_eq!(
        call(&c, "POST", &ctl, Some(json!({})))
            .await
            .unwrap()
            .status,
        200
    );
    let mut up = false;
    for _ in 0..100 {
        let o = loadgen::send(
            &fresh,
            &ep,
            chat("a", 1, false).to_string(),
            &[],
            Duration::from_secs(5),
            false,
        )
        .await;
        if o.status == 200 {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(up, "the node must come back");
    let stats = call(
        &c,
        "GET",
        &format!("http://{}/control/stats", set.control_addr),
        None,
    )
    .await
    .unwrap();
    let v: Value = serde_json::from_slice(&stats.body).unwrap();
    assert!(v["nodes"]["fast"]["faulted"].as_u64().unwrap() >= 5);
    assert_eq!(
        call(
            &c,
            "POST",
            &format!("http://{}/control/fault/nosuch", set.control_addr),
            Some(json!({}))
        )
        .await
        .unwrap()
        .status,
        404
    );
}

#[test]
fn ephemeral_ports_and_the_rewritten_config() {
    let set = start(1.0);
    let text = r#"
[[node]]
name = "fast"
url = "http://127.0.0.1:1"
models = ["m-1"]

[[node]]
name = "one"
url = "http://127.0.0.1:2"
models = ["m-1"]
"#;
    let copy = serve::rewrite_urls(text, &set.urls()).unwrap();
    let cfg = switchyard::Config::parse("copy", &copy).unwrap();
    let urls: Vec<(String, String)> = cfg
        .node_urls()
        .into_iter()
        .map(|(n, u)| (n.to_string(), u.to_string()))
        .collect();
    assert_eq!(urls, set.urls());
    assert!(set
        .addrs
        .iter()
        .all(|(_, a)| a.ip().is_loopback() && a.port() != 0));
    // A bad speed and an unknown fault node are refused.
    assert!(serve::spawn(
        &config(),
        &ServeOptions {
            speed: 0.0,
            ephemeral: true,
            ..Default::default()
        }
    )
    .is_err());
    let opts = ServeOptions {
        ephemeral: true,
        faults: vec![("nope".into(), Fault::default())],
        ..Default::default()
    };
    assert!(serve::spawn(&config(), &opts).is_err());
    // Without --ephemeral, a node needs a url.
    let cfg = switchyard::Config::parse("x", "[[node]]\nname = \"a\"\n").unwrap();
    assert!(serve::spawn(&cfg, &ServeOptions::default()).is_err());
}

#[test]
fn the_serve_backends_command_serves_and_writes_its_config() {
    use std::io::{BufRead, BufReader};
    let dir = std::env::temp_dir().join(format!("switchyard-serve-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("fleet.toml");
    std::fs::write(
        &cfg,
        "[[node]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nmodels = [\"m-1\"]\n",
    )
    .unwrap();
    let out = dir.join("bound.toml");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "serve-backends",
            "--ephemeral",
            "--speed",
            "5",
            "--fault",
            "a:slow:2",
            "--config",
        ])
        .arg(&cfg)
        .arg("--write-config")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = None;
    for l in lines.by_ref() {
        let l = l.unwrap();
        if let Some(rest) = l.strip_prefix("node a ") {
            url = Some(rest.to_string());
        }
        if l.starts_with("ready") {
            break;
        }
    }
    let url = url.expect("the node's url is printed");
    let bound = switchyard::Config::load(&out).unwrap();
    assert_eq!(bound.node_urls()[0].1, url);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        let c = loadgen::client(1);
        call(
            &c,
            "POST",
            &format!("{url}/v1/chat/completions"),
            Some(chat("hi", 2, true)),
        )
        .await
        .unwrap()
        .status
    });
    assert_eq!(status, 200);
    child.kill().unwrap();
    child.wait().unwrap();
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "serve-backends",
            "--ephemeral",
            "--fault",
            "a:bogus",
            "--config",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown fault"));
    let _ = std::fs::remove_dir_all(dir);
}
