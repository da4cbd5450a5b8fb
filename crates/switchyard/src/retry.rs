//! Retry policy and budget: how often and how soon a failed task may try another route.
//!
//! Retries draw from a budget that the control tick refills with a share of the tasks that
//! finished ([`RetryPolicy::budget_ratio`], Envoy's retry budget idea), so an outage cannot
//! multiply the load by the retry count. Back-off is exponential with jitter.
use std::time::Duration;

use crate::error::ConfigError;
use crate::sync::{AtomicU64, Ordering};

pub use crate::limits::MAX_ATTEMPTS;

/// How failed tasks are retried. Defaults after SMG's retry settings (50 ms initial back-off,
/// jitter 0.2) and Envoy's retry budget (20 % of requests, at least 3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per task, the first included (1..=4; 1 = no retry).
    pub max_attempts: u32,
    /// Retries allowed as a share of finished tasks, refilled each control tick.
    pub budget_ratio: f64,
    /// Retries always allowed per tick, however little finished.
    pub min_retries_per_tick: u64,
    /// Back-off before the second attempt, ms; doubles per attempt.
    pub backoff_base_ms: u64,
    /// Longest back-off, ms.
    pub backoff_max_ms: u64,
    /// Relative jitter on each back-off (0–1).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            budget_ratio: 0.2,
            min_retries_per_tick: 3,
            backoff_base_ms: 50,
            backoff_max_ms: 2_000,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 || self.max_attempts as usize > MAX_ATTEMPTS {
            return Err(ConfigError::InvalidSetting {
                field: "retry.max_attempts",
                reason: "must be 1..=4",
            });
        }
        for (field, v) in [
            ("retry.budget_ratio", self.budget_ratio),
            ("retry.jitter", self.jitter),
        ] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(ConfigError::InvalidNumber {
                    owner: "retry".into(),
                    field,
                    value: v,
                });
            }
        }
        if self.backoff_max_ms < self.backoff_base_ms {
            return Err(ConfigError::InvalidSetting {
                field: "retry.backoff_max_ms",
                reason: "must be at least backoff_base_ms",
            });
        }
        Ok(())
    }

    pub(crate) fn backoff(&self, attempt: u32, unit: f64) -> Duration {
        let base = self
            .backoff_base_ms
            .saturating_mul(1 << attempt.saturating_sub(1).min(20))
            .min(self.backoff_max_ms) as f64;
        let jittered = base * (1.0 + self.jitter * (2.0 * unit - 1.0));
        Duration::from_micros((jittered.max(0.0) * 1000.0) as u64)
    }
}

/// The retry budget: tokens a retry takes, refilled by the control tick.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    pub(crate) policy: RetryPolicy,
    tokens: AtomicU64,
    last_finished: AtomicU64,
}

impl RetryBudget {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            tokens: AtomicU64::new(policy.min_retries_per_tick),
            last_finished: AtomicU64::new(0),
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&self) -> bool {
        // Relaxed: a counter; nothing is published through it.
        let mut cur = self.tokens.load(Ordering::Relaxed);
        loop {
            if cur == 0 {
                return false;
            }
            match self.tokens.compare_exchange_weak(
                cur,
                cur - 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
    }

    pub(crate) fn give_back(&self) {
        // Relaxed: a counter (an RMW, so no concurrent update is lost).
        self.tokens.fetch_add(1, Ordering::Relaxed);
    }

    /// Control tick: add `ratio ×` the tasks finished since the last refill, at least the
    /// minimum, and keep at most ten ticks' worth.
    pub(crate) fn refill(&self, finished_total: u64) {
        let p = &self.policy;
        // Relaxed: only the control thread refills.
        let last = self.last_finished.swap(finished_total, Ordering::Relaxed);
        let earned = (p.budget_ratio * finished_total.saturating_sub(last) as f64) as u64;
        let cap = (earned * 10).max(p.min_retries_per_tick);
        // A CAS loop, not load + store: a retry taking a token (or giving one back) between
        // the two would otherwise be erased. Relaxed: a counter; nothing is published.
        let mut cur = self.tokens.load(Ordering::Relaxed);
        loop {
            let next = cur
                .saturating_add(earned)
                .max(p.min_retries_per_tick)
                .min(cap.max(cur.min(cap)));
            match self
                .tokens
                .compare_exchange_weak(cur, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(seen) => cur = seen,
            }
        }
    }
}
