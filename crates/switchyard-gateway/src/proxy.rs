//! The dispatcher's backend: each routed task is proxied to its node's model server on the
//! I/O runtime, failed over before the first byte reaches the client, streamed after it.
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::{sleep_until, timeout_at, Instant};

use switchyard::{Backend, Completion, Outcome, RouteError, RouteOptions, Task, Ticket};

use crate::body::GatewayBody;
use crate::error::ApiError;
use crate::relay::{Relay, RelayParts};
use crate::request::{Endpoint, NODE_HEADER};
use crate::settings::GatewaySettings;
use crate::sse::SseScan;
use crate::Shared;

/// Bytes held back before the first content chunk (role chunks, comments) at most.
const MAX_PRELUDE: usize = 64 << 10;

/// What travels with each task through the dispatcher: the request and the way back.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) endpoint: Endpoint,
    pub(crate) stream: bool,
    pub(crate) body: Bytes,
    pub(crate) auth: Option<HeaderValue>,
    pub(crate) received: Instant,
    pub(crate) submitted: Instant,
    /// Taken when the response head is sent (the "first byte" point).
    pub(crate) reply: Option<oneshot::Sender<Response<GatewayBody>>>,
    pub(crate) settings: Arc<GatewaySettings>,
    /// Fleet mode: the tenant credit this request took (its unused output goes back when
    /// the context is dropped).
    pub(crate) charge: Option<crate::fleet::Charge>,
}

/// The gateway's [`Backend`].
#[derive(Debug)]
pub(crate) struct ProxyBackend {
    pub(crate) shared: Arc<Shared>,
}

impl Backend for ProxyBackend {
    type Payload = Ctx;

    fn dispatch(&self, task: Task, ctx: Ctx, routes: &RouteOptions, ticket: Ticket) {
        self.shared
            .metrics
            .queue_wait
            .observe(ctx.submitted.elapsed());
        let shared = self.shared.clone();
        let routes = *routes;
        self.shared
            .handle
            .spawn(run(shared, task, ctx, routes, ticket));
    }

    fn reject(&self, _task: Task, mut ctx: Ctx, error: RouteError) {
        self.shared.queue_wait_and_shed(&ctx, error);
        if let Some(reply) = ctx.reply.take() {
            let _ =
                reply.send(ApiError::from_route(error, ctx.settings.retry_after_s).into_response());
        }
    }
}

/// An attempt that ended before the first byte reached the client.
struct Failure {
    ticket: Ticket,
    outcome: Outcome,
    error: ApiError,
    pause: Option<Duration>,
}

/// Milliseconds since `t`.
pub(crate) fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn cancel(ticket: Ticket, since: Instant) {
    ticket.complete(Completion::failure(Outcome::Cancelled, ms_since(since)));
}

async fn run(shared: Arc<Shared>, _task: Task, mut ctx: Ctx, routes: RouteOptions, ticket: Ticket) {
    let settings = ctx.settings.clone();
    let deadline = ctx.received + Duration::from_millis(settings.total_timeout_ms);
    let mut ticket = ticket;
    let mut routes = routes;
    let mut first = true;
    loop {
        let node = routes.primary().route.head();
        let name = shared.router.snapshot().node_name(node).map(str::to_owned);
        let base = name
            .as_deref()
            .and_then(|n| shared.state.load().upstreams.get(n).cloned());
        let started = Instant::now();
        let result = match (&name, base) {
            (Some(n), Some(base)) => {
                let a = Attempt {
                    shared: &shared,
                    settings: &settings,
                    node: n,
                    base: &base,
                    deadline,
                    started,
                };
                a.run(&mut ctx, ticket, &mut first).await
            }
            _ => Err(Failure {
                ticket,
                outcome: Outcome::ServerError,
                error: ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "server_error",
                    "no_upstream",
                    "the chosen model server has no url",
                ),
                pause: None,
            }),
        };
        let f = match result {
            Ok(()) => return,
            Err(f) => f,
        };
        if f.outcome == Outcome::Cancelled {
            shared
                .metrics
                .client_cancels
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            cancel(f.ticket, started);
            return;
        }
        shared.metrics.attempt_failed(f.outcome);
        if let (Some(pause), Some(n)) = (f.pause, name.as_deref()) {
            if shared.router.pause_node(n, pause).is_ok() {
                shared
                    .metrics
                    .pauses
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                shared.log_pause(n, pause);
                if let Some(f) = &shared.fleet {
                    f.note_pause(n, pause);
                }
            }
        }
        match shared
            .router
            .fail_over(f.ticket, Completion::failure(f.outcome, ms_since(started)))
        {
            Ok(retry) => {
                shared
                    .metrics
                    .failovers
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let wake = (Instant::now() + retry.backoff).min(deadline);
                let Some(reply) = ctx.reply.as_mut() else {
                    cancel(retry.ticket, started);
                    return;
                };
                tokio::select! {
                    _ = sleep_until(wake) => {}
                    _ = reply.closed() => {
                        cancel(retry.ticket, started);
                        return;
                    }
                }
                if Instant::now() >= deadline {
                    // Nothing was sent to the new route: the timeout says nothing about it.
                    cancel(retry.ticket, started);
                    let e = ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "timeout",
                        "timeout",
                        "the request ran out of time while failing over",
                    );
                    respond(&mut ctx, e.into_response());
                    return;
                }
                ticket = retry.ticket;
                routes = retry.routes;
            }
            Err(_) => {
                // The task has ended (counted once); the client gets the last failure.
                let mut e = f.error;
                if e.status == StatusCode::TOO_MANY_REQUESTS && e.retry_after_s.is_none() {
                    e.retry_after_s = Some(settings.retry_after_s.max(1));
                }
                respond(&mut ctx, e.into_response());
                return;
            }
        }
    }
}

fn respond(ctx: &mut Ctx, r: Response<GatewayBody>) {
    if let Some(reply) = ctx.reply.take() {
        let _ = reply.send(r);
    }
}

/// A `Retry-After` in seconds or as an HTTP date.
fn retry_after(h: &http::HeaderMap, s: &GatewaySettings) -> Duration {
    let max = Duration::from_millis(s.max_pause_ms);
    let dflt = Duration::from_millis(s.default_pause_ms);
    let Some(v) = h.get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()) else {
        return dflt.min(max);
    };
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Duration::from_secs(secs).min(max);
    }
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Duration::from_secs_f64(secs.min(max.as_secs_f64()));
        }
    }
    dflt.min(max)
}

struct Attempt<'a> {
    shared: &'a Arc<Shared>,
    settings: &'a GatewaySettings,
    node: &'a str,
    base: &'a str,
    deadline: Instant,
    started: Instant,
}

impl Attempt<'_> {
    fn fail(&self, ticket: Ticket, outcome: Outcome, status: StatusCode, msg: String) -> Failure {
        let (kind, code) = match outcome {
            Outcome::Timeout => ("timeout", "upstream_timeout"),
            Outcome::RateLimited => ("rate_limit_error", "upstream_rate_limited"),
            _ => ("server_error", "upstream_error"),
        };
        Failure {
            ticket,
            outcome,
            error: ApiError::new(status, kind, code, msg),
            pause: None,
        }
    }

    fn cancelled(&self, ticket: Ticket) -> Failure {
        self.fail(
            ticket,
            Outcome::Cancelled,
            StatusCode::BAD_REQUEST,
            String::new(),
        )
    }

    async fn run(&self, ctx: &mut Ctx, ticket: Ticket, first: &mut bool) -> Result<(), Failure> {
        let uri = format!("{}{}", self.base, ctx.endpoint.path());
        let mut req = match Request::post(uri.as_str())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(ctx.body.clone()))
        {
            Ok(r) => r,
            Err(e) => {
                return Err(self.fail(
                    ticket,
                    Outcome::ServerError,
                    StatusCode::BAD_GATEWAY,
                    format!("bad upstream url {uri}: {e}"),
                ))
            }
        };
        if let Some(a) = &ctx.auth {
            req.headers_mut().insert(header::AUTHORIZATION, a.clone());
        }
        if *first {
            *first = false;
            self.shared.metrics.overhead.observe(ctx.received.elapsed());
        }
        let head_deadline = if ctx.stream {
            (self.started + Duration::from_millis(self.settings.ttft_timeout_ms)).min(self.deadline)
        } else {
            self.deadline
        };
        let Some(reply) = ctx.reply.as_mut() else {
            return Err(self.cancelled(ticket));
        };
        let resp = tokio::select! {
            r = timeout_at(head_deadline, self.shared.client.request(req)) => r,
            _ = reply.closed() => return Err(self.cancelled(ticket)),
        };
        let resp = match resp {
            Err(_) => {
                return Err(self.fail(
                    ticket,
                    Outcome::Timeout,
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("model server {} did not answer in time", self.node),
                ))
            }
            Ok(Err(e)) => {
                return Err(self.fail(
                    ticket,
                    Outcome::ServerError,
                    StatusCode::BAD_GATEWAY,
                    format!("model server {} unreachable: {e}", self.node),
                ))
            }
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let pause = retry_after(resp.headers(), self.settings);
            let mut f = self.fail(
                ticket,
                Outcome::RateLimited,
                StatusCode::TOO_MANY_REQUESTS,
                format!("model server {} is rate limiting", self.node),
            );
            f.error.retry_after_s = Some(pause.as_secs().max(1));
            f.pause = Some(pause);
            return Err(f);
        }
        if status.is_server_error() {
            return Err(self.fail(
                ticket,
                Outcome::ServerError,
                status,
                format!("model server {} answered {status}", self.node),
            ));
        }
        if ctx.stream && status.is_success() {
            self.stream(ctx, ticket, resp).await
        } else {
            self.whole(ctx, ticket, resp).await
        }
    }

    fn head(
        &self,
        status: StatusCode,
        upstream: &http::HeaderMap,
        body: GatewayBody,
    ) -> Response<GatewayBody> {
        let mut r = Response::new(body);
        *r.status_mut() = status;
        let h = r.headers_mut();
        let ct = upstream
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static("application/json"));
        h.insert(header::CONTENT_TYPE, ct);
        if let Ok(v) = HeaderValue::from_str(self.node) {
            h.insert(NODE_HEADER, v);
        }
        r
    }

    /// A non-streaming answer: read whole (bounded), then sent; until then it can fail over.
    async fn whole(
        &self,
        ctx: &mut Ctx,
        ticket: Ticket,
        resp: Response<Incoming>,
    ) -> Result<(), Failure> {
        let (parts, body) = resp.into_parts();
        let Some(reply) = ctx.reply.as_mut() else {
            return Err(self.cancelled(ticket));
        };
        let read = tokio::select! {
            r = timeout_at(self.deadline, Limited::new(body, self.settings.max_response_bytes).collect()) => r,
            _ = reply.closed() => return Err(self.cancelled(ticket)),
        };
        let bytes = match read {
            Err(_) => {
                return Err(self.fail(
                    ticket,
                    Outcome::Timeout,
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("model server {} did not finish in time", self.node),
                ))
            }
            Ok(Err(e)) => {
                return Err(self.fail(
                    ticket,
                    Outcome::ServerError,
                    StatusCode::BAD_GATEWAY,
                    format!("model server {} broke its answer: {e}", self.node),
                ))
            }
            Ok(Ok(c)) => c.to_bytes(),
        };
        let tokens = if parts.status.is_success() {
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("usage")?.get("completion_tokens")?.as_u64())
                .map_or(ticket.task().output_tokens, |n| {
                    u32::try_from(n).unwrap_or(u32::MAX)
                })
        } else {
            0
        };
        let r = self.head(parts.status, &parts.headers, GatewayBody::full(bytes));
        let latency = ms_since(self.started);
        let sent = ctx.reply.take().map(|reply| reply.send(r).is_ok());
        if sent == Some(true) {
            self.shared.metrics.e2e.observe(ctx.received.elapsed());
            if let Some(c) = &ctx.charge {
                c.settle(tokens);
            }
            ticket.complete(Completion::success(latency, tokens));
        } else {
            self.shared.count_cancel();
            cancel(ticket, self.started);
        }
        Ok(())
    }

    /// A stream: held back until its first content chunk (it can still fail over), then
    /// passed through chunk by chunk.
    async fn stream(
        &self,
        ctx: &mut Ctx,
        ticket: Ticket,
        resp: Response<Incoming>,
    ) -> Result<(), Failure> {
        let (parts, mut body) = resp.into_parts();
        let ttft_deadline = (self.started + Duration::from_millis(self.settings.ttft_timeout_ms))
            .min(self.deadline);
        let mut scan = SseScan::default();
        let mut prelude: Vec<Bytes> = Vec::new();
        let mut prelude_len = 0;
        let mut ended = false;
        {
            let Some(reply) = ctx.reply.as_mut() else {
                return Err(self.cancelled(ticket));
            };
            loop {
                let frame = tokio::select! {
                    f = timeout_at(ttft_deadline, body.frame()) => f,
                    _ = reply.closed() => return Err(self.cancelled(ticket)),
                };
                match frame {
                    Err(_) => {
                        return Err(self.fail(
                            ticket,
                            Outcome::Timeout,
                            StatusCode::GATEWAY_TIMEOUT,
                            format!("model server {} sent no token in time", self.node),
                        ))
                    }
                    Ok(Some(Err(e))) => {
                        return Err(self.fail(
                            ticket,
                            Outcome::ServerError,
                            StatusCode::BAD_GATEWAY,
                            format!("model server {} broke the stream: {e}", self.node),
                        ))
                    }
                    Ok(None) => {
                        ended = true;
                        break;
                    }
                    Ok(Some(Ok(f))) => {
                        let Ok(data) = f.into_data() else { continue };
                        scan.feed(&data);
                        if scan.error_seen {
                            return Err(self.fail(
                                ticket,
                                Outcome::ServerError,
                                StatusCode::BAD_GATEWAY,
                                format!("model server {} sent an error event", self.node),
                            ));
                        }
                        prelude_len += data.len();
                        prelude.push(data);
                        if scan.content_seen || scan.done || prelude_len > MAX_PRELUDE {
                            break;
                        }
                    }
                }
            }
        }
        // The first byte point: from here on the answer is this node's, passed through as
        // the client reads it (see `relay.rs`).
        let relay = Relay::new(RelayParts {
            prelude,
            upstream: (!ended).then_some(body),
            scan,
            node: self.node.to_owned(),
            idle: Duration::from_millis(self.settings.idle_timeout_ms),
            deadline: self.deadline,
            ticket,
            shared: self.shared.clone(),
            received: ctx.received,
            started: self.started,
            charge: ctx.charge.take(),
        });
        let mut r = self.head(StatusCode::OK, &parts.headers, GatewayBody::relay(relay));
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        let Some(reply) = ctx.reply.take() else {
            return Ok(()); // dropping `r` drops the relay, which ends the request as cancelled
        };
        // Observed before the send: once sent, the whole stream may be over before this task
        // runs again.
        if !reply.is_closed() {
            self.shared.metrics.ttft.observe(ctx.received.elapsed());
        }
        // A client already gone drops the response, and with it the relay, which ends the
        // request as cancelled.
        let _ = reply.send(r);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_fractions_or_dates() {
        let s = GatewaySettings {
            default_pause_ms: 700,
            max_pause_ms: 10_000,
            ..GatewaySettings::default()
        };
        let mut h = http::HeaderMap::new();
        assert_eq!(retry_after(&h, &s), Duration::from_millis(700));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h, &s), Duration::from_secs(3));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("0.5"));
        assert_eq!(retry_after(&h, &s), Duration::from_millis(500));
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("3600"));
        assert_eq!(retry_after(&h, &s), Duration::from_secs(10));
        // An HTTP date is not parsed: the default pause.
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h, &s), Duration::from_millis(700));
    }
}
