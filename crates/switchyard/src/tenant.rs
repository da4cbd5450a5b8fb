//! Token-rate limits per tenant: a GCRA per tenant, in atomics shared by every snapshot.
//!
//! A tenant's rate is a quota on the tokens its tasks may start per second, whatever node
//! serves them. A task reserves its predicted tokens (input + estimated output) when it is
//! leased and settles to the actual count when it completes, as a node's rate does. Unlike a
//! node's rate, which steers routing to other nodes, a tenant over its rate has nowhere else
//! to go: the task is refused with [`RouteError::TenantRateLimited`](crate::RouteError) and
//! handed back, which a gateway answers with HTTP 429.
use crate::error::ConfigError;
use crate::model::TenantId;
use crate::sync::AtomicU64;

/// Tenants that can have a token rate: ids `0..MAX_TENANTS`.
pub const MAX_TENANTS: usize = 4096;

/// GCRA states allocated (a handful under loom, whose models use no tenant rates and
/// would explore every one of 4096 atomics' initialisations).
const TENANT_STATES: usize = if cfg!(switchyard_loom) {
    8
} else {
    MAX_TENANTS
};

/// One tenant's limit, as the snapshot holds it (0 ns per token: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TenantLimit {
    pub(crate) ns_per_token: u64,
    pub(crate) burst_ns: u64,
}

impl TenantLimit {
    /// Validates `per_second` (0 = none) and `burst_seconds`.
    pub(crate) fn new(
        tenant: TenantId,
        per_second: f64,
        burst_seconds: f64,
    ) -> Result<Self, ConfigError> {
        if tenant.0 as usize >= TENANT_STATES {
            return Err(ConfigError::InvalidSetting {
                field: "tenant",
                reason: "tenant ids with a token rate must be below 4096",
            });
        }
        if !(per_second.is_finite() && (per_second == 0.0 || (1.0..=1e12).contains(&per_second))) {
            return Err(ConfigError::InvalidSetting {
                field: "max_tokens_per_second",
                reason: "must be 0 (no limit) or a finite number from 1 to 1e12",
            });
        }
        if !(burst_seconds.is_finite() && burst_seconds > 0.0 && burst_seconds <= 3_600.0) {
            return Err(ConfigError::InvalidSetting {
                field: "token_burst_seconds",
                reason: "must be above 0 and at most 3600",
            });
        }
        Ok(if per_second == 0.0 {
            Self::default()
        } else {
            Self {
                ns_per_token: (1e9 / per_second).round().max(1.0) as u64,
                burst_ns: (burst_seconds * 1e9) as u64,
            }
        })
    }
}

/// Every tenant's GCRA state (theoretical arrival time, clock ns), shared by all snapshots
/// so a snapshot swap never resets a tenant's schedule. 8 bytes per tenant, unpadded:
/// neighbouring tenants may share a cache line, a contention cost accepted for 32 KiB
/// instead of 256 KiB.
#[derive(Debug)]
pub(crate) struct TenantRates {
    pub(crate) tat: Box<[AtomicU64]>,
}

impl TenantRates {
    pub(crate) fn new() -> Self {
        Self {
            tat: (0..TENANT_STATES).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// Time until `task`'s tenant's rate admits it, ns (0: it does now, or has no limit).
pub(crate) fn retry_after_ns(
    table: &crate::routing::RoutingTable,
    task: &crate::model::Task,
) -> u64 {
    let Some((shared, limit)) = limit_of(table, task) else {
        return 0;
    };
    let now = table.now_ns();
    // Relaxed: a report.
    let tat = shared.tenants.tat[task.tenant.map_or(0, |t| t.0 as usize)]
        .load(crate::sync::Ordering::Relaxed)
        .max(now);
    let cost = task.total_tokens().saturating_mul(limit.ns_per_token);
    (tat + cost).saturating_sub(now + limit.burst_ns)
}

/// The task's tenant's limit and the shared GCRA states, when its tenant has a limit.
#[inline]
pub(crate) fn limit_of<'t>(
    table: &'t crate::routing::RoutingTable,
    task: &crate::model::Task,
) -> Option<(
    &'t crate::sync::Arc<crate::routing::slab::LeaseShared>,
    TenantLimit,
)> {
    let t = task.tenant?;
    let limit = *table.tenant_limits.get(t.0 as usize)?;
    if limit.ns_per_token == 0 {
        return None;
    }
    Some((table.shared.as_ref()?, limit))
}
