//! Fleet mode: gateway replicas share tenant budgets, load and health through Redis.
//!
//! The request path touches only [`FleetShared::admit`] (one atomic per rate-limited
//! tenant's local credit) and [`FleetShared::note_pause`] (a `try_send`); everything that
//! speaks to Redis runs on the control task in `sync.rs`. See `docs/fleet.md`.
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard::{Config, TenantId};
use tokio::sync::mpsc;

mod settings;
mod sync;

pub use settings::FleetSettings;
pub(crate) use sync::run;

/// How a replica enforces tenant limits right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FleetMode {
    /// Redis answers: tenants spend slices of the cluster-wide budget; the shared load and
    /// health views are applied.
    Shared,
    /// Redis is unreachable: each tenant gets this replica's local share of its rate.
    LocalShare,
    /// Redis is unreachable and `fail_closed` is set: rate-limited tenants are refused.
    FailClosed,
}

impl FleetMode {
    /// The mode's name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            FleetMode::Shared => "shared",
            FleetMode::LocalShare => "local_share",
            FleetMode::FailClosed => "fail_closed",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => FleetMode::Shared,
            1 => FleetMode::LocalShare,
            _ => FleetMode::FailClosed,
        }
    }
}

/// A snapshot of a replica's fleet figures ([`Gateway::fleet_status`](crate::Gateway::fleet_status)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FleetStatus {
    /// This replica's name.
    pub replica: String,
    /// How limits are enforced now.
    pub mode: FleetMode,
    /// Whether Redis is taken as reachable: false once syncs have failed for three intervals
    /// since the last good one (or the first one failed), true from the next good sync.
    pub redis_up: bool,
    /// Whether the first sync (warm start) has been attempted.
    pub ready: bool,
    /// Replicas alive at the last sync, this one included.
    pub replicas: u64,
    /// Age of the remote load view in force (ms; `u64::MAX` before any).
    pub view_age_ms: u64,
    /// In-flight requests the other replicas hold, summed over nodes, as last applied.
    pub remote_in_flight: u64,
    /// Syncs that reached Redis.
    pub syncs_ok: u64,
    /// Syncs that failed (Redis unreachable, slow or refusing).
    pub syncs_failed: u64,
    /// Age of each remote replica's load when it was read (ms), one sample per replica
    /// per sync, the last 100 000.
    pub staleness_ms: Vec<u32>,
    /// Tenant tokens drawn from the global budget so far (refunds subtracted).
    pub slice_tokens: i64,
    /// Requests refused because the tenant's local slice was spent (429).
    pub tenant_refused: u64,
    /// Health verdict changes published.
    pub health_published: u64,
    /// Remote verdict changes applied to this replica's router.
    pub health_applied: u64,
}

/// One rate-limited tenant's local credit: tokens of the global budget drawn and not spent.
#[derive(Debug)]
pub(crate) struct Bucket {
    pub(crate) tenant: u32,
    /// Cluster-wide tokens per second and burst (seconds), from `[[tenant]]`.
    pub(crate) rate: f64,
    pub(crate) burst_s: f64,
    pub(crate) credit: AtomicI64,
}

/// What the request path and the control task share.
#[derive(Debug)]
pub(crate) struct FleetShared {
    pub(crate) settings: FleetSettings,
    pub(crate) client: redis::Client,
    pub(crate) buckets: Vec<Bucket>,
    mode: AtomicU8,
    pauses: mpsc::Sender<(String, Duration)>,
    pub(crate) pauses_rx: Mutex<Option<mpsc::Receiver<(String, Duration)>>>,
    pub(crate) redis_up: AtomicBool,
    pub(crate) ready: AtomicBool,
    /// Set by `Gateway::close`: the control task ends.
    pub(crate) stop: AtomicBool,
    pub(crate) replicas: AtomicU64,
    /// Unix ms of the oldest remote view in force (0: none).
    pub(crate) view_ts_ms: AtomicU64,
    pub(crate) remote_in_flight: AtomicU64,
    pub(crate) syncs_ok: AtomicU64,
    pub(crate) syncs_failed: AtomicU64,
    pub(crate) slice_tokens: AtomicI64,
    pub(crate) tenant_refused: AtomicU64,
    pub(crate) health_published: AtomicU64,
    pub(crate) health_applied: AtomicU64,
    pub(crate) staleness: Mutex<Vec<u32>>,
}

const STALENESS_SAMPLES: usize = 100_000;

impl FleetShared {
    /// Reads `cfg.fleet`; `None` without a `[fleet]` table.
    pub(crate) fn from_config(cfg: &Config) -> Result<Option<Self>, String> {
        let Some(t) = &cfg.fleet else {
            return Ok(None);
        };
        let settings = FleetSettings::from_table(cfg.source_name(), t)?;
        Self::new(cfg, settings).map(Some)
    }

    pub(crate) fn new(cfg: &Config, settings: FleetSettings) -> Result<Self, String> {
        let client = redis::Client::open(settings.redis.as_str())
            .map_err(|e| format!("[fleet] redis: {e}"))?;
        let mut buckets: Vec<Bucket> = cfg
            .tenants
            .iter()
            .filter(|t| t.max_tokens_per_second > 0.0)
            .map(|t| Bucket {
                tenant: t.id,
                rate: t.max_tokens_per_second,
                burst_s: t.token_burst_seconds,
                credit: AtomicI64::new(0),
            })
            .collect();
        buckets.sort_by_key(|b| b.tenant);
        buckets.dedup_by_key(|b| b.tenant);
        let (tx, rx) = mpsc::channel(256);
        Ok(Self {
            settings,
            client,
            buckets,
            mode: AtomicU8::new(0),
            pauses: tx,
            pauses_rx: Mutex::new(Some(rx)),
            redis_up: AtomicBool::new(false),
            ready: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            replicas: AtomicU64::new(1),
            view_ts_ms: AtomicU64::new(0),
            remote_in_flight: AtomicU64::new(0),
            syncs_ok: AtomicU64::new(0),
            syncs_failed: AtomicU64::new(0),
            slice_tokens: AtomicI64::new(0),
            tenant_refused: AtomicU64::new(0),
            health_published: AtomicU64::new(0),
            health_applied: AtomicU64::new(0),
            staleness: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn mode(&self) -> FleetMode {
        FleetMode::from_u8(self.mode.load(Relaxed))
    }

    pub(crate) fn set_mode(&self, m: FleetMode) {
        let v = match m {
            FleetMode::Shared => 0,
            FleetMode::LocalShare => 1,
            FleetMode::FailClosed => 2,
        };
        self.mode.store(v, Relaxed);
    }

    /// The request path: may a request of `tenant` costing `tokens` go on? Spends the
    /// tenant's local credit: drawn from the global budget in shared mode, earned at this
    /// replica's share of the rate in local-share mode; fail-closed refuses limited
    /// tenants. Never waits.
    ///
    /// `Ok(Some(charge))` when credit was spent: the [`Charge`] gives back the output
    /// tokens the request did not use when it is dropped (settled with [`Charge::settle`]).
    pub(crate) fn admit(
        self: &Arc<Self>,
        tenant: Option<TenantId>,
        input: u32,
        output: u32,
    ) -> Result<Option<Charge>, ()> {
        let Some(t) = tenant else { return Ok(None) };
        let Ok(i) = self.buckets.binary_search_by_key(&t.0, |b| b.tenant) else {
            return Ok(None);
        };
        let ok = match self.mode() {
            FleetMode::FailClosed => false,
            FleetMode::Shared | FleetMode::LocalShare => {
                let b = &self.buckets[i];
                let cost = i64::from(input) + i64::from(output);
                let before = b.credit.fetch_sub(cost, Relaxed);
                if before >= cost {
                    true
                } else {
                    b.credit.fetch_add(cost, Relaxed);
                    false
                }
            }
        };
        if !ok {
            self.tenant_refused.fetch_add(1, Relaxed);
            return Err(());
        }
        Ok(Some(Charge {
            fleet: Arc::clone(self),
            bucket: i,
            output: u64::from(output),
            used: AtomicU64::new(0),
        }))
    }

    /// The request path: a model server asked this replica for a pause (429); the control
    /// task publishes it. Dropped when the channel is full (the pause still holds locally).
    pub(crate) fn note_pause(&self, node: &str, pause: Duration) {
        let _ = self.pauses.try_send((node.to_string(), pause));
    }

    pub(crate) fn push_staleness(&self, ms: u32) {
        let mut s = self.staleness.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() >= STALENESS_SAMPLES {
            let half = s.len() / 2;
            s.drain(..half);
        }
        s.push(ms);
    }

    pub(crate) fn view_age_ms(&self) -> u64 {
        match self.view_ts_ms.load(Relaxed) {
            0 => u64::MAX,
            ts => unix_ms().saturating_sub(ts),
        }
    }

    pub(crate) fn status(&self) -> FleetStatus {
        FleetStatus {
            replica: self.settings.replica.clone(),
            mode: self.mode(),
            redis_up: self.redis_up.load(Relaxed),
            ready: self.ready.load(Relaxed),
            replicas: self.replicas.load(Relaxed),
            view_age_ms: self.view_age_ms(),
            remote_in_flight: self.remote_in_flight.load(Relaxed),
            syncs_ok: self.syncs_ok.load(Relaxed),
            syncs_failed: self.syncs_failed.load(Relaxed),
            staleness_ms: self
                .staleness
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            slice_tokens: self.slice_tokens.load(Relaxed),
            tenant_refused: self.tenant_refused.load(Relaxed),
            health_published: self.health_published.load(Relaxed),
            health_applied: self.health_applied.load(Relaxed),
        }
    }

    pub(crate) fn render(&self, out: &mut String) {
        let mut gauge = |name: &str, help: &str, kind: &str, v: f64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {v}");
        };
        gauge(
            "switchyard_fleet_redis_up",
            "Whether Redis is reachable (0 once syncs have failed for three intervals).",
            "gauge",
            f64::from(u8::from(self.redis_up.load(Relaxed))),
        );
        gauge(
            "switchyard_fleet_local_fallback",
            "1 while tenant limits are local-only (Redis unreachable).",
            "gauge",
            f64::from(u8::from(self.mode() != FleetMode::Shared)),
        );
        gauge(
            "switchyard_fleet_replicas",
            "Replicas alive at the last sync, this one included.",
            "gauge",
            self.replicas.load(Relaxed) as f64,
        );
        let age = self.view_age_ms();
        gauge(
            "switchyard_fleet_view_age_seconds",
            "Age of the remote load view in force (NaN before any).",
            "gauge",
            if age == u64::MAX {
                f64::NAN
            } else {
                age as f64 / 1e3
            },
        );
        gauge(
            "switchyard_fleet_view_age_bound_seconds",
            "What the view age stays under while Redis answers: two sync intervals plus a round trip's timeout.",
            "gauge",
            3.0 * self.settings.sync_interval_ms as f64 / 1e3,
        );
        gauge(
            "switchyard_fleet_remote_in_flight",
            "In-flight requests the other replicas hold on this fleet's nodes, as applied.",
            "gauge",
            self.remote_in_flight.load(Relaxed) as f64,
        );
        let (p50, p99) = {
            let mut v = self
                .staleness
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            v.sort_unstable();
            let q = |q: f64| {
                if v.is_empty() {
                    f64::NAN
                } else {
                    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
                    f64::from(v[i]) / 1e3
                }
            };
            (q(0.5), q(0.99))
        };
        gauge(
            "switchyard_fleet_staleness_p50_seconds",
            "Median age of a remote replica's load when it was read (the last 100 000 reads).",
            "gauge",
            p50,
        );
        gauge(
            "switchyard_fleet_staleness_p99_seconds",
            "99th percentile of the age of a remote replica's load when it was read.",
            "gauge",
            p99,
        );
        gauge(
            "switchyard_fleet_syncs_ok_total",
            "Fleet syncs that reached Redis.",
            "counter",
            self.syncs_ok.load(Relaxed) as f64,
        );
        gauge(
            "switchyard_fleet_syncs_failed_total",
            "Fleet syncs that failed.",
            "counter",
            self.syncs_failed.load(Relaxed) as f64,
        );
        gauge(
            "switchyard_fleet_slice_tokens_total",
            "Tenant tokens drawn from the cluster-wide budget (refunds subtracted).",
            "counter",
            self.slice_tokens.load(Relaxed) as f64,
        );
        gauge(
            "switchyard_fleet_tenant_refused_total",
            "Requests refused because the tenant's slice was spent, or fail-closed.",
            "counter",
            self.tenant_refused.load(Relaxed) as f64,
        );
        gauge(
            "switchyard_fleet_health_published_total",
            "Health verdict changes this replica published.",
            "counter",
            self.health_published.load(Relaxed) as f64,
        );
        gauge(
            "switchyard_fleet_health_applied_total",
            "Remote health verdict changes applied here.",
            "counter",
            self.health_applied.load(Relaxed) as f64,
        );
    }
}

/// Credit a request took from its tenant's slice; on drop, the output tokens it was charged
/// and did not produce go back to the local credit (they were drawn from the global budget
/// already, so nothing goes to Redis).
#[derive(Debug)]
pub(crate) struct Charge {
    fleet: Arc<FleetShared>,
    bucket: usize,
    /// Output tokens charged (the estimate).
    output: u64,
    /// Output tokens produced, as the completion said.
    used: AtomicU64,
}

impl Charge {
    /// Records the output tokens the request really produced.
    pub(crate) fn settle(&self, output_tokens: u32) {
        self.used.store(u64::from(output_tokens), Relaxed);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let back = self.output.saturating_sub(self.used.load(Relaxed));
        if back > 0 {
            let back = back.min(i64::MAX as u64) as i64;
            self.fleet.buckets[self.bucket]
                .credit
                .fetch_add(back, Relaxed);
        }
    }
}

pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
