//! A stream after its first byte: the upstream body passed through frame by frame as the client
//! reads it, with no task or channel between the two, so a streamed chunk costs one poll of each
//! side instead of a channel send, a task wake-up and two timers.
//!
//! The relay holds the request's [`Ticket`] (its lease) and ends it exactly once:
//! * at the upstream's end: a success, settled to the `usage` or the chunks counted;
//! * on an upstream error, an idle gap longer than `idle_timeout_ms` or the total timeout while
//!   the upstream is quiet: an OpenAI-style error event ends the stream, and the failure counts
//!   on the node;
//! * when the client goes away (hyper drops the body): cancelled;
//! * when a client that stopped reading outlives the total timeout by a second (hyper then
//!   polls nothing): cancelled by a watchdog task, one per stream, aborted as soon as the
//!   stream ends.
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use switchyard::{Completion, Outcome, Ticket};

use crate::error::ApiError;
use crate::fleet::Charge;
use crate::proxy::ms_since;
use crate::sse::SseScan;
use crate::Shared;

/// How long after the total timeout the watchdog ends a stream nobody polls. A stream that is
/// polled ends at the timeout itself, by its own timer, with an error event; the grace keeps
/// the watchdog from racing that ending.
const WATCHDOG_GRACE: Duration = Duration::from_secs(1);

/// What ending the request needs, taken exactly once by whoever ends it.
struct End {
    ticket: Ticket,
    shared: Arc<Shared>,
    received: Instant,
    started: Instant,
    /// Fleet mode: the tenant credit, settled to the real output and given back (the unused
    /// part) when this is dropped.
    charge: Option<Charge>,
}

impl End {
    fn finish(self, c: Completion) {
        self.shared.metrics.e2e.observe(self.received.elapsed());
        if let Some(ch) = &self.charge {
            ch.settle(c.output_tokens);
        }
        self.ticket.complete(c);
    }

    fn cancel(self) {
        self.shared.count_cancel();
        let ms = ms_since(self.started);
        self.finish(Completion::failure(Outcome::Cancelled, ms));
    }
}

/// The end, shared with the watchdog.
struct EndCell {
    /// Set once the request has ended (read per frame, so a relay whose request the watchdog
    /// ended stops instead of streaming on without a lease).
    done: AtomicBool,
    end: Mutex<Option<End>>,
}

impl EndCell {
    fn take(&self) -> Option<End> {
        // Relaxed: `done` only tells the relay to stop early; the mutex orders the take.
        self.done.store(true, Ordering::Relaxed);
        self.end.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The streamed body after the first byte (see the module docs).
pub(crate) struct Relay {
    /// Chunks read before the first byte point, sent first.
    prelude: std::vec::IntoIter<Bytes>,
    /// `None` once the upstream ended (or failed).
    upstream: Option<Incoming>,
    scan: SseScan,
    node: String,
    idle: Duration,
    deadline: Instant,
    /// The idle gap's end, or the total deadline if sooner; reset at every frame.
    timer: Pin<Box<Sleep>>,
    /// The error event still to send before the end.
    tail: Option<Bytes>,
    cell: Arc<EndCell>,
    watchdog: tokio::task::AbortHandle,
}

/// What a relay is built from.
pub(crate) struct RelayParts {
    pub(crate) prelude: Vec<Bytes>,
    /// `None`: the upstream already ended while the prelude was read.
    pub(crate) upstream: Option<Incoming>,
    pub(crate) scan: SseScan,
    pub(crate) node: String,
    pub(crate) idle: Duration,
    pub(crate) deadline: Instant,
    pub(crate) ticket: Ticket,
    pub(crate) shared: Arc<Shared>,
    pub(crate) received: Instant,
    pub(crate) started: Instant,
    pub(crate) charge: Option<Charge>,
}

impl Relay {
    /// Must run inside the gateway's runtime (it starts the watchdog there).
    pub(crate) fn new(p: RelayParts) -> Self {
        let cell = Arc::new(EndCell {
            done: AtomicBool::new(false),
            end: Mutex::new(Some(End {
                ticket: p.ticket,
                shared: p.shared.clone(),
                received: p.received,
                started: p.started,
                charge: p.charge,
            })),
        });
        let watchdog = {
            let cell = Arc::downgrade(&cell);
            let deadline = p.deadline;
            p.shared
                .handle
                .spawn(async move {
                    tokio::time::sleep_until(deadline + WATCHDOG_GRACE).await;
                    if let Some(end) = cell.upgrade().and_then(|c| c.take()) {
                        end.cancel();
                    }
                })
                .abort_handle()
        };
        let wake = (Instant::now() + p.idle).min(p.deadline);
        Self {
            prelude: p.prelude.into_iter(),
            upstream: p.upstream,
            scan: p.scan,
            node: p.node,
            idle: p.idle,
            deadline: p.deadline,
            timer: Box::pin(tokio::time::sleep_until(wake)),
            tail: None,
            cell,
            watchdog,
        }
    }

    /// Ends the request with a failure after the first byte: counted on the node, and an
    /// error event queued to close the stream.
    fn fail(&mut self, outcome: Outcome, msg: String) {
        self.upstream = None;
        let Some(end) = self.cell.take() else { return };
        let m = &end.shared.metrics;
        m.stream_errors.fetch_add(1, Ordering::Relaxed);
        m.attempt_failed(outcome);
        let e = ApiError::new(
            StatusCode::BAD_GATEWAY,
            "server_error",
            if outcome == Outcome::Timeout {
                "upstream_timeout"
            } else {
                "upstream_error"
            },
            msg,
        );
        let lead = if self.scan.mid_line() { "\n\n" } else { "" };
        self.tail = Some(Bytes::from(format!("{lead}data: {}\n\n", e.json())));
        let mut c = Completion::failure(outcome, ms_since(end.started));
        c.output_tokens = self.scan.tokens();
        end.finish(c);
    }

    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::body::BoxError>>> {
        if let Some(b) = self.prelude.next() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if let Some(t) = self.tail.take() {
            return Poll::Ready(Some(Ok(Frame::data(t))));
        }
        // Relaxed: see `EndCell::done`.
        if self.cell.done.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        loop {
            let Some(up) = self.upstream.as_mut() else {
                // The upstream ended (in the prelude or just now): a success.
                if let Some(end) = self.cell.take() {
                    let ms = ms_since(end.started);
                    end.finish(Completion::success(ms, self.scan.tokens()));
                }
                return Poll::Ready(None);
            };
            match Pin::new(up).poll_frame(cx) {
                Poll::Ready(Some(Ok(f))) => {
                    let Ok(data) = f.into_data() else { continue };
                    self.scan.feed(&data);
                    let now = Instant::now();
                    if now >= self.deadline {
                        // An upstream that is never quiet never lets the timer run: the total
                        // timeout is checked here too. This frame goes out, the error event
                        // after it.
                        let msg = "the request ran past its total timeout".to_string();
                        self.fail(Outcome::Timeout, msg);
                    } else {
                        self.timer
                            .as_mut()
                            .reset((now + self.idle).min(self.deadline));
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(None) => self.upstream = None,
                Poll::Ready(Some(Err(e))) => {
                    let msg = format!("model server {} broke the stream: {e}", self.node);
                    self.fail(Outcome::ServerError, msg);
                    return Poll::Ready(self.tail.take().map(|t| Ok(Frame::data(t))));
                }
                Poll::Pending => {
                    if self.timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let msg = if Instant::now() >= self.deadline {
                        "the request ran past its total timeout".to_string()
                    } else {
                        format!("model server {} went quiet mid-stream", self.node)
                    };
                    self.fail(Outcome::Timeout, msg);
                    return Poll::Ready(self.tail.take().map(|t| Ok(Frame::data(t))));
                }
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.watchdog.abort();
        // Still open: the client went away (or hyper gave up on the connection).
        if let Some(end) = self.cell.take() {
            end.cancel();
        }
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("node", &self.node).finish()
    }
}
