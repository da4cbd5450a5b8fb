//! The gateway's HTTP figures, in atomics (no lock on the request path), rendered as
//! Prometheus text after the router's own families.
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use switchyard::Outcome;

/// The routes counted in `switchyard_http_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteLabel {
    ChatCompletions = 0,
    Completions = 1,
    Models = 2,
    Health = 3,
    Metrics = 4,
    Other = 5,
}

const ROUTE_NAMES: [&str; 6] = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/health",
    "/metrics",
    "other",
];

/// Status codes counted one by one; any other is counted under its class (`2xx`, ...).
const STATUSES: [u16; 12] = [200, 400, 404, 405, 413, 429, 499, 500, 502, 503, 504, 0];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const STATUS_SLOTS: usize = STATUSES.len() + CLASSES.len();

fn status_slot(status: u16) -> usize {
    match STATUSES.iter().position(|&s| s == status && s != 0) {
        Some(i) => i,
        None => STATUSES.len() + (usize::from(status / 100).clamp(1, 5) - 1),
    }
}

fn status_label(slot: usize) -> String {
    if slot < STATUSES.len() {
        STATUSES[slot].to_string()
    } else {
        CLASSES[slot - STATUSES.len()].to_string()
    }
}

/// Bucket upper bounds, µs, of the latency histograms (TTFT, end to end).
const LATENCY_BUCKETS_US: [u64; 17] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    120_000_000,
    300_000_000,
];
/// Bucket upper bounds, µs, of the overhead histograms (queue wait, routing overhead).
const OVERHEAD_BUCKETS_US: [u64; 16] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    1_000_000,
];

/// A Prometheus histogram in atomics.
#[derive(Debug)]
pub(crate) struct Histogram {
    bounds: &'static [u64],
    buckets: Vec<AtomicU64>,
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [u64]) -> Self {
        Self {
            bounds,
            buckets: (0..bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub(crate) fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = self.bounds.iter().position(|&b| us <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.sum_us.fetch_add(us, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cum = 0;
        for (b, c) in self.bounds.iter().zip(&self.buckets) {
            cum += c.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cum}", *b as f64 / 1e6);
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_us.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// Every HTTP figure of one gateway.
#[derive(Debug)]
pub(crate) struct HttpMetrics {
    requests: Vec<AtomicU64>,
    pub(crate) ttft: Histogram,
    pub(crate) e2e: Histogram,
    pub(crate) queue_wait: Histogram,
    pub(crate) overhead: Histogram,
    /// Upstream attempts that failed, by outcome (index of `Outcome`).
    attempt_failures: [AtomicU64; 6],
    /// Attempts moved to another node.
    pub(crate) failovers: AtomicU64,
    /// Streams ended by a broken upstream after their first byte.
    pub(crate) stream_errors: AtomicU64,
    /// Streams whose client went away.
    pub(crate) client_cancels: AtomicU64,
    /// Requests refused before routing (full queue or shut down).
    pub(crate) queue_full: AtomicU64,
    /// Pauses asked by model servers (429).
    pub(crate) pauses: AtomicU64,
    /// Reloads applied and refused.
    pub(crate) reloads_ok: AtomicU64,
    pub(crate) reloads_refused: AtomicU64,
}

impl HttpMetrics {
    pub(crate) fn new() -> Self {
        Self {
            requests: (0..ROUTE_NAMES.len() * STATUS_SLOTS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            ttft: Histogram::new(&LATENCY_BUCKETS_US),
            e2e: Histogram::new(&LATENCY_BUCKETS_US),
            queue_wait: Histogram::new(&OVERHEAD_BUCKETS_US),
            overhead: Histogram::new(&OVERHEAD_BUCKETS_US),
            attempt_failures: Default::default(),
            failovers: AtomicU64::new(0),
            stream_errors: AtomicU64::new(0),
            client_cancels: AtomicU64::new(0),
            queue_full: AtomicU64::new(0),
            pauses: AtomicU64::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_refused: AtomicU64::new(0),
        }
    }

    pub(crate) fn request(&self, route: RouteLabel, status: u16) {
        self.requests[route as usize * STATUS_SLOTS + status_slot(status)].fetch_add(1, Relaxed);
    }

    pub(crate) fn attempt_failed(&self, outcome: Outcome) {
        self.attempt_failures[outcome.index()].fetch_add(1, Relaxed);
    }

    /// Requests answered on `route` with `status` so far.
    pub(crate) fn requests(&self, route: RouteLabel, status: u16) -> u64 {
        self.requests[route as usize * STATUS_SLOTS + status_slot(status)].load(Relaxed)
    }

    pub(crate) fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP switchyard_http_requests_total HTTP requests answered, by route and status."
        );
        let _ = writeln!(out, "# TYPE switchyard_http_requests_total counter");
        for (r, route) in ROUTE_NAMES.iter().enumerate() {
            for slot in 0..STATUS_SLOTS {
                let v = self.requests[r * STATUS_SLOTS + slot].load(Relaxed);
                if v > 0 {
                    let _ = writeln!(
                        out,
                        "switchyard_http_requests_total{{route=\"{route}\",status=\"{}\"}} {v}",
                        status_label(slot)
                    );
                }
            }
        }
        self.ttft.render(
            out,
            "switchyard_http_ttft_seconds",
            "Time from a streaming request's arrival to its first content chunk sent.",
        );
        self.e2e.render(
            out,
            "switchyard_http_e2e_seconds",
            "Time from a completion request's arrival to its last byte sent.",
        );
        self.queue_wait.render(
            out,
            "switchyard_http_queue_wait_seconds",
            "Time from submission to the dispatcher to the routing decision's hand-over.",
        );
        self.overhead.render(
            out,
            "switchyard_http_routing_overhead_seconds",
            "Time from a request's arrival to its upstream request handed to the connection pool (first attempt).",
        );
        let _ = writeln!(
            out,
            "# HELP switchyard_http_upstream_failures_total Upstream attempts that failed, by class."
        );
        let _ = writeln!(
            out,
            "# TYPE switchyard_http_upstream_failures_total counter"
        );
        for o in Outcome::ALL {
            let _ = writeln!(
                out,
                "switchyard_http_upstream_failures_total{{outcome=\"{}\"}} {}",
                o.name(),
                self.attempt_failures[o.index()].load(Relaxed)
            );
        }
        let counters: [(&str, &str, &AtomicU64); 7] = [
            (
                "switchyard_http_failovers_total",
                "Attempts moved to another model server before the first byte.",
                &self.failovers,
            ),
            (
                "switchyard_http_stream_errors_total",
                "Streams ended with an error event by a broken upstream.",
                &self.stream_errors,
            ),
            (
                "switchyard_http_client_cancels_total",
                "Requests whose client went away before the end.",
                &self.client_cancels,
            ),
            (
                "switchyard_http_queue_full_total",
                "Requests refused because the dispatcher queue was full or shut down.",
                &self.queue_full,
            ),
            (
                "switchyard_http_upstream_pauses_total",
                "Model server pauses asked by a 429.",
                &self.pauses,
            ),
            (
                "switchyard_config_reloads_total",
                "Fleet file reloads applied.",
                &self.reloads_ok,
            ),
            (
                "switchyard_config_reloads_refused_total",
                "Fleet file reloads refused (the running fleet stayed).",
                &self.reloads_refused,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Relaxed));
        }
    }
}
