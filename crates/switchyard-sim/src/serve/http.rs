//! The HTTP side of a simulated server: routes, OpenAI-shaped answers, SSE streaming at the
//! decode rate, the vLLM-style metrics and the endpoints the peer gateways poll.
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::node::{Fault, Node, Verdict};
use crate::prompt::{block_ids, count_tokens};

/// A response body: a whole buffer or a stream of chunks.
pub(crate) type RespBody = BoxBody<Bytes, io::Error>;

/// Largest request body accepted.
const MAX_BODY: usize = 64 << 20;
/// Output tokens when a request names no `max_tokens`.
const DEFAULT_MAX_TOKENS: u32 = 128;
/// Words the simulated model "generates", one per token (4 bytes each with the space).
const WORDS: [&str; 8] = ["the", "cat", "sat", "and", "ran", "far", "off", "now"];

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A streamed body fed from a channel; an `Err` item breaks the connection.
struct ChannelBody(mpsc::Receiver<Result<Bytes, io::Error>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

fn full(b: impl Into<Bytes>) -> RespBody {
    Full::new(b.into())
        .map_err(|n: Infallible| match n {})
        .boxed()
}

fn respond(status: StatusCode, ctype: &'static str, body: impl Into<Bytes>) -> Response<RespBody> {
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

fn json_response(status: StatusCode, v: &Value) -> Response<RespBody> {
    respond(status, "application/json", v.to_string())
}

/// An OpenAI-style error answer.
pub(crate) fn error(status: StatusCode, kind: &str, msg: &str) -> Response<RespBody> {
    json_response(
        status,
        &json!({"error": {"message": msg, "type": kind, "param": null, "code": status.as_u16()}}),
    )
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The reason a connection is closed without an answer (an injected fault).
#[derive(Debug)]
pub(crate) struct Abort;

impl std::fmt::Display for Abort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection closed by an injected fault")
    }
}

impl std::error::Error for Abort {}

/// Serves one request on `node`.
pub(crate) async fn handle(
    node: Arc<Node>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Abort> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    // The control endpoints answer even while a fault is in force (but a down server has
    // closed its port: use the set's control port to bring it back).
    match (&method, path.as_str()) {
        (&Method::POST, "/control/fault") => return Ok(set_fault(&node, req).await),
        (&Method::GET, "/control/stats") => {
            return Ok(json_response(
                StatusCode::OK,
                &serde_json::to_value(node.stats()).unwrap_or_default(),
            ))
        }
        _ => {}
    }
    if node.is_down() {
        return Err(Abort);
    }
    let model = node
        .models
        .first()
        .cloned()
        .unwrap_or_else(|| node.name.clone());
    Ok(match (&method, path.as_str()) {
        (&Method::POST, "/v1/chat/completions") => generate(node, req, true).await?,
        (&Method::POST, "/v1/completions") => generate(node, req, false).await?,
        (&Method::GET, "/v1/models") => models(&node),
        (&Method::GET, "/health") | (&Method::GET, "/health_generate") => {
            respond(StatusCode::OK, "text/plain", "")
        }
        (&Method::GET, "/metrics") => {
            respond(StatusCode::OK, "text/plain; version=0.0.4", metrics(&node))
        }
        (&Method::GET, "/get_load") => {
            let s = node.stats();
            json_response(
                StatusCode::OK,
                &json!([{"dp_rank": 0, "num_reqs": s.running + s.waiting,
                         "num_waiting_reqs": s.waiting, "num_tokens": s.running_tokens}]),
            )
        }
        (&Method::GET, "/v1/loads") => {
            let s = node.stats();
            json_response(
                StatusCode::OK,
                &json!({"loads": [{"dp_rank": 0, "num_running_reqs": s.running,
                         "num_waiting_reqs": s.waiting, "num_total_tokens": s.running_tokens,
                         "token_usage": node.kv_usage()}]}),
            )
        }
        (&Method::GET, "/get_model_info") | (&Method::GET, "/model_info") => json_response(
            StatusCode::OK,
            // No `model_path`/`tokenizer_path`: a gateway that finds one tries to fetch a
            // tokenizer by that name from a model hub; these servers have none to offer.
            &json!({"is_generation": true, "served_model_name": model}),
        ),
        (&Method::GET, "/get_server_info") | (&Method::GET, "/server_info") => json_response(
            StatusCode::OK,
            &json!({"served_model_name": model, "tp_size": 1,
                    "dp_size": 1, "max_total_num_tokens": node.kv_limit,
                    "max_running_requests": node.spec.max_concurrency,
                    "version": concat!("switchyard-sim ", env!("CARGO_PKG_VERSION")),
                    "internal_states": [{"last_gen_throughput": node.spec.decode_tokens_per_sec}]}),
        ),
        (&Method::POST, "/flush_cache") | (&Method::GET, "/flush_cache") => {
            node.flush_cache();
            respond(StatusCode::OK, "text/plain", "Cache flushed.\n")
        }
        (_, "/v1/chat/completions" | "/v1/completions" | "/flush_cache") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "method not allowed",
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            &format!("no route {method} {path}"),
        ),
    })
}

async fn read_json(req: Request<Incoming>) -> Result<Value, Response<RespBody>> {
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &e.to_string(),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!("the body is not JSON: {e}"),
        )
    })
}

async fn set_fault(node: &Node, req: Request<Incoming>) -> Response<RespBody> {
    match read_json(req).await {
        Ok(v) => match serde_json::from_value::<Fault>(v) {
            Ok(f) => {
                node.set_fault(f.clone());
                json_response(StatusCode::OK, &json!({"node": node.name, "fault": f}))
            }
            Err(e) => error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &e.to_string(),
            ),
        },
        Err(r) => r,
    }
}

fn models(node: &Node) -> Response<RespBody> {
    let data: Vec<Value> = node
        .models
        .iter()
        .map(|m| {
            json!({"id": m, "object": "model", "created": 0, "owned_by": "switchyard-sim",
                   "root": m, "parent": null, "max_model_len": node.kv_limit})
        })
        .collect();
    json_response(StatusCode::OK, &json!({"object": "list", "data": data}))
}

fn metrics(node: &Node) -> String {
    use std::fmt::Write;
    let s = node.stats();
    let model = node
        .models
        .first()
        .map_or(node.name.as_str(), String::as_str);
    let l = format!("{{model_name=\"{model}\",engine=\"0\"}}");
    let mut out = String::new();
    let mut put = |name: &str, kind: &str, help: &str, sample: &str, v: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{sample}{l} {v}"
        );
    };
    put(
        "vllm:num_requests_running",
        "gauge",
        "Number of requests in model execution batches.",
        "vllm:num_requests_running",
        s.running as f64,
    );
    put(
        "vllm:num_requests_waiting",
        "gauge",
        "Number of requests waiting to be processed.",
        "vllm:num_requests_waiting",
        s.waiting as f64,
    );
    put(
        "vllm:kv_cache_usage_perc",
        "gauge",
        "KV-cache usage. 1 means 100 percent usage.",
        "vllm:kv_cache_usage_perc",
        node.kv_usage(),
    );
    put(
        "vllm:prefix_cache_queries",
        "counter",
        "Prefix cache queries, in terms of number of queried tokens.",
        "vllm:prefix_cache_queries_total",
        s.prefix_queries as f64,
    );
    put(
        "vllm:prefix_cache_hits",
        "counter",
        "Prefix cache hits, in terms of number of cached tokens.",
        "vllm:prefix_cache_hits_total",
        s.prefix_hits as f64,
    );
    put(
        "vllm:prompt_tokens",
        "counter",
        "Number of prefill tokens processed.",
        "vllm:prompt_tokens_total",
        s.prompt_tokens as f64,
    );
    put(
        "vllm:generation_tokens",
        "counter",
        "Number of generation tokens processed.",
        "vllm:generation_tokens_total",
        s.generation_tokens as f64,
    );
    put(
        "vllm:request_success",
        "counter",
        "Count of successfully processed requests.",
        "vllm:request_success_total",
        s.completed as f64,
    );
    out
}

/// The text of a chat request's messages (string contents, or the `text` parts of a list).
fn prompt_text(body: &Value, chat: bool) -> String {
    let mut out = String::new();
    if chat {
        for m in body["messages"].as_array().into_iter().flatten() {
            match &m["content"] {
                Value::String(s) => out.push_str(s),
                Value::Array(parts) => {
                    for p in parts {
                        if let Some(t) = p["text"].as_str() {
                            out.push_str(t);
                        }
                    }
                }
                _ => {}
            }
        }
    } else {
        match &body["prompt"] {
            Value::String(s) => out.push_str(s),
            Value::Array(a) => {
                for p in a {
                    if let Some(s) = p.as_str() {
                        out.push_str(s);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

async fn sleep_ms(ms: f64) {
    if ms > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(ms / 1000.0)).await;
    }
}

async fn generate(
    node: Arc<Node>,
    req: Request<Incoming>,
    chat: bool,
) -> Result<Response<RespBody>, Abort> {
    let body = match read_json(req).await {
        Ok(v) => v,
        Err(r) => return Ok(r),
    };
    let Some(model) = body["model"].as_str().map(str::to_string) else {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "the request names no `model`",
        ));
    };
    if !node.models.is_empty() && !node.models.contains(&model) {
        return Ok(error(
            StatusCode::NOT_FOUND,
            "NotFoundError",
            &format!("The model `{model}` does not exist."),
        ));
    }
    let (slow, cut_after) = match node.verdict() {
        Verdict::Drop => return Err(Abort),
        Verdict::Status(st, retry) => {
            let code = StatusCode::from_u16(st).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = error(code, "server_error", "injected fault");
            if st == 429 {
                r.headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry));
            }
            return Ok(r);
        }
        Verdict::Serve { slow, cut_after } => (slow, cut_after),
    };
    let text = prompt_text(&body, chat);
    let input = count_tokens(text.len());
    let output = body["max_completion_tokens"]
        .as_u64()
        .or_else(|| body["max_tokens"].as_u64())
        .unwrap_or(DEFAULT_MAX_TOKENS as u64)
        .min(1 << 20) as u32;
    let stream = body["stream"].as_bool().unwrap_or(false);
    let include_usage = body["stream_options"]["include_usage"]
        .as_bool()
        .unwrap_or(false);
    let blocks = block_ids(text.as_bytes());
    drop(text);
    let slot = node.admit(input as u64 + output as u64).await;
    let plan = node.plan(&blocks, input, slow);
    let id = format!(
        "{}-sim-{}",
        if chat { "chatcmpl" } else { "cmpl" },
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    );
    let created = now_s();
    let usage = json!({
        "prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output,
        "prompt_tokens_details": {"cached_tokens": plan.cached_tokens}
    });
    let object = if chat {
        "chat.completion"
    } else {
        "text_completion"
    };
    if !stream {
        let n = cut_after.map_or(output, |c| c.min(output));
        sleep_ms(plan.prefill_ms + plan.per_token_ms * n.saturating_sub(1) as f64).await;
        if cut_after.is_some() {
            node.count_cut();
            drop(slot);
            return Err(Abort);
        }
        let content: String = (0..output)
            .map(|i| WORDS[i as usize % 8].to_string() + " ")
            .collect();
        let choice = if chat {
            json!({"index": 0, "message": {"role": "assistant", "content": content},
                   "finish_reason": "length", "logprobs": null})
        } else {
            json!({"index": 0, "text": content, "finish_reason": "length", "logprobs": null})
        };
        node.count_done(output);
        drop(slot);
        return Ok(json_response(
            StatusCode::OK,
            &json!({"id": id, "object": object, "created": created, "model": model,
                    "choices": [choice], "usage": usage}),
        ));
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(16);
    let chunk_object = if chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let chunk = move |choice: Value, usage: Option<&Value>| -> Bytes {
        let mut v = json!({"id": id, "object": chunk_object, "created": created, "model": model,
                           "choices": if choice.is_null() { json!([]) } else { json!([choice]) }});
        if let Some(u) = usage {
            v["usage"] = u.clone();
        }
        Bytes::from(format!("data: {v}\n\n"))
    };
    tokio::spawn(async move {
        let _slot = slot;
        let start = Instant::now();
        let token = |i: u32| {
            let w = WORDS[i as usize % 8].to_string() + " ";
            if chat {
                json!({"index": 0, "delta": {"content": w}, "logprobs": null, "finish_reason": null})
            } else {
                json!({"index": 0, "text": w, "logprobs": null, "finish_reason": null})
            }
        };
        for i in 0..output {
            if cut_after.is_some_and(|c| i >= c) {
                node.count_cut();
                // Let the tokens already sent reach the socket before the connection breaks.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = tx
                    .send(Err(io::Error::other("injected mid-stream disconnect")))
                    .await;
                return;
            }
            let due = plan.prefill_ms + plan.per_token_ms * i as f64;
            if due > 0.0 {
                tokio::time::sleep_until(start + Duration::from_secs_f64(due / 1000.0)).await;
            }
            let mut out = Vec::new();
            if i == 0 && chat {
                out.extend_from_slice(&chunk(
                    json!({"index": 0, "delta": {"role": "assistant", "content": ""},
                           "logprobs": null, "finish_reason": null}),
                    None,
                ));
            }
            out.extend_from_slice(&chunk(token(i), None));
            if tx.send(Ok(Bytes::from(out))).await.is_err() {
                return; // the client went away
            }
        }
        if cut_after.is_some_and(|c| c >= output) && output > 0 {
            // Cut after the last token but before the end of the stream.
            node.count_cut();
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = tx
                .send(Err(io::Error::other("injected mid-stream disconnect")))
                .await;
            return;
        }
        let fin = if chat {
            json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": "length"})
        } else {
            json!({"index": 0, "text": "", "logprobs": null, "finish_reason": "length"})
        };
        let mut out = chunk(fin, None).to_vec();
        if include_usage {
            out.extend_from_slice(&chunk(Value::Null, Some(&usage)));
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        node.count_done(output);
        let _ = tx.send(Ok(Bytes::from(out))).await;
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    Ok(r)
}
