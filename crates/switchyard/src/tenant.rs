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

pub use crate::limits::MAX_TENANTS;

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
