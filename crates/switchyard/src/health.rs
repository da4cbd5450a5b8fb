//! Health: outlier ejection with exponential back-off, half-open probing, slow start, a panic
//! threshold, and a policy per failure class.
//!
//! The hot path only reads verdicts. Two of them come from the control thread through the
//! snapshot (ejected / half-open / degraded / panic, and a weight), and one is read live: a
//! node whose *consecutive* failures reach [`HealthPolicy::consecutive_failures`] stops
//! receiving tasks at once, on the very next decision, without waiting for a tick. The tick
//! then makes it a real ejection (subject to the ejection cap) or, if the cap is reached,
//! leaves it serving.
//!
//! # Failure classes
//! | outcome | counts as a failure | effect |
//! | --- | --- | --- |
//! | server error, timeout | yes | towards ejection |
//! | abandoned ticket | yes | towards ejection (the gateway lost it; the node may be hung) |
//! | rate limited (429) | no | the node is busy, not broken: its weight drops to a quarter for `rate_limit_backoff_ms`, so routing prefers others, but it is never ejected for it |
//! | cancelled by the client | no | says nothing about the node |
//!
//! # Defaults, and where they come from
//! | setting | default | source |
//! | --- | --- | --- |
//! | `consecutive_failures` | 3 | Envoy's `consecutive_5xx` is 5 and SMG's breaker 5; an inference request is expensive and a hard-down node fails fast, so we eject sooner |
//! | `failure_rate`, `min_requests` | 0.5 over ≥ 10 outcomes per tick | Envoy's success-rate ejection needs a request volume too; the rate is ours |
//! | `base_ejection_ms` | 5 000, doubling per repeat, capped at 300 000 | Envoy: 30 s × times ejected; LLM backends restart in seconds, so a shorter base with back-off |
//! | `max_ejected_share` | 0.5 (at least one node) | Envoy: 10 %; small inference fleets (4–16 nodes) need room to eject more than one |
//! | `panic_threshold` | 0.5 | Envoy's default: below half healthy, route across all rather than none |
//! | `half_open_probes` | 1 | one probe at a time, as a circuit breaker's half-open state |
//! | `slow_start_ms` | 10 000 | Envoy's slow start: weight ramps from 10 % to 100 % |
//! | `rate_limit_backoff_ms` | 1 000 | Retry-After is usually 1 s |
//! | degraded when | latency factor ≥ 3 or success rate < 0.9 | ours: weight halves |
use crate::error::ConfigError;
use crate::model::HealthStatus;

/// Health thresholds. See the module docs for the defaults and their sources.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthPolicy {
    /// Failures in a row that take a node out of routing at once (0 = never).
    pub consecutive_failures: u32,
    /// Failure share over one tick that ejects a node (with at least `min_requests`).
    pub failure_rate: f64,
    /// Outcomes a tick needs before `failure_rate` applies.
    pub min_requests: u64,
    /// First ejection, ms; doubles with each repeat.
    pub base_ejection_ms: u64,
    /// Longest ejection, ms.
    pub max_ejection_ms: u64,
    /// Largest share of the fleet ejected at once (at least one node may always be).
    pub max_ejected_share: f64,
    /// Below this share of serving nodes, route across all nodes.
    pub panic_threshold: f64,
    /// Concurrent probes a half-open node accepts.
    pub half_open_probes: u32,
    /// How long a new or recovered node's weight ramps up, ms (0 = none).
    pub slow_start_ms: u64,
    /// How long a rate-limited node's weight stays reduced, ms.
    pub rate_limit_backoff_ms: u64,
    /// Latency factor (observed/predicted) from which a node is degraded.
    pub degraded_latency_factor: f64,
    /// Success rate below which a node is degraded.
    pub degraded_success_rate: f64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            consecutive_failures: 3,
            failure_rate: 0.5,
            min_requests: 10,
            base_ejection_ms: 5_000,
            max_ejection_ms: 300_000,
            max_ejected_share: 0.5,
            panic_threshold: 0.5,
            half_open_probes: 1,
            slow_start_ms: 10_000,
            rate_limit_backoff_ms: 1_000,
            degraded_latency_factor: 3.0,
            degraded_success_rate: 0.9,
        }
    }
}

impl HealthPolicy {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        for (field, v) in [
            ("health.failure_rate", self.failure_rate),
            ("health.max_ejected_share", self.max_ejected_share),
            ("health.panic_threshold", self.panic_threshold),
            ("health.degraded_success_rate", self.degraded_success_rate),
        ] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(ConfigError::InvalidNumber {
                    owner: "health".into(),
                    field,
                    value: v,
                });
            }
        }
        if !(self.degraded_latency_factor.is_finite() && self.degraded_latency_factor >= 1.0) {
            return Err(ConfigError::InvalidNumber {
                owner: "health".into(),
                field: "health.degraded_latency_factor",
                value: self.degraded_latency_factor,
            });
        }
        if self.base_ejection_ms == 0 || self.max_ejection_ms < self.base_ejection_ms {
            return Err(ConfigError::InvalidSetting {
                field: "health.base_ejection_ms",
                reason: "must be positive and at most max_ejection_ms",
            });
        }
        if self.half_open_probes == 0 {
            return Err(ConfigError::InvalidSetting {
                field: "health.half_open_probes",
                reason: "must be at least 1",
            });
        }
        Ok(())
    }

    fn ejection_ns(&self, times: u32) -> u64 {
        let ms = self
            .base_ejection_ms
            .saturating_mul(1u64 << times.saturating_sub(1).min(30))
            .min(self.max_ejection_ms);
        ms.saturating_mul(1_000_000)
    }
}

/// Where a node is in the ejection cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Serving,
    Ejected { until_ns: u64 },
    HalfOpen,
}

/// What the control thread saw of a node since its previous tick.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Observation {
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    pub(crate) rate_limited: u64,
    pub(crate) consecutive: u64,
    pub(crate) latency_factor: f64,
    pub(crate) success_rate: f64,
}

/// What the snapshot carries for a node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Verdict {
    pub(crate) status: HealthStatus,
    pub(crate) eligible: bool,
    pub(crate) probe_only: bool,
    /// Multiplies the node's weight (slow start, degradation, rate limiting).
    pub(crate) weight: f64,
}

/// One node's health state machine (control thread only).
#[derive(Debug, Clone)]
pub(crate) struct NodeHealthState {
    pub(crate) phase: Phase,
    pub(crate) times_ejected: u32,
    serving_since_ns: u64,
    rate_limited_until_ns: u64,
    /// Until when the node takes no new task: the backend asked for a pause (a 429 with
    /// `Retry-After`, through [`Router::pause_node`](crate::Router::pause_node)).
    pub(crate) paused_until_ns: u64,
    /// A verdict set by hand ([`Router::set_health`](crate::Router::set_health)) wins.
    pub(crate) manual: Option<HealthStatus>,
}

impl NodeHealthState {
    pub(crate) fn new(now_ns: u64) -> Self {
        Self {
            phase: Phase::Serving,
            times_ejected: 0,
            serving_since_ns: now_ns,
            rate_limited_until_ns: 0,
            paused_until_ns: 0,
            manual: None,
        }
    }

    pub(crate) fn is_out(&self) -> bool {
        self.phase != Phase::Serving || self.manual == Some(HealthStatus::Failed)
    }

    /// Advances the state machine. `may_eject` is false once the ejection cap is reached.
    /// Returns the verdict and whether the node's consecutive-failure count must be reset
    /// (on entering half-open, so the probes start from a clean slate).
    pub(crate) fn step(
        &mut self,
        now: u64,
        o: &Observation,
        p: &HealthPolicy,
        may_eject: bool,
    ) -> (Verdict, bool) {
        let mut reset = false;
        let failing = (p.consecutive_failures > 0
            && o.consecutive >= p.consecutive_failures as u64)
            || (o.ok + o.failed >= p.min_requests.max(1)
                && o.failed as f64 >= p.failure_rate * (o.ok + o.failed) as f64);
        match self.phase {
            Phase::Serving if failing && may_eject => self.eject(now, p),
            Phase::Ejected { until_ns } if now >= until_ns => {
                self.phase = Phase::HalfOpen;
                reset = true;
            }
            Phase::HalfOpen if o.consecutive > 0 || o.failed > 0 => self.eject(now, p),
            Phase::HalfOpen if o.ok > 0 => {
                self.phase = Phase::Serving;
                self.serving_since_ns = now;
            }
            _ => {}
        }
        if self.phase == Phase::Serving
            && self.times_ejected > 0
            && now.saturating_sub(self.serving_since_ns) > p.ejection_ns(self.times_ejected)
        {
            // A clean stretch as long as the last ejection: forgive the history.
            self.times_ejected = 0;
        }
        if o.rate_limited > 0 {
            self.rate_limited_until_ns =
                now.saturating_add(p.rate_limit_backoff_ms.saturating_mul(1_000_000));
        }
        let mut weight = 1.0;
        if p.slow_start_ms > 0 {
            let ramp =
                now.saturating_sub(self.serving_since_ns) as f64 / (p.slow_start_ms as f64 * 1e6);
            weight *= (0.1 + 0.9 * ramp).min(1.0);
        }
        if now < self.rate_limited_until_ns {
            weight *= 0.25;
        }
        let degraded = o.latency_factor >= p.degraded_latency_factor
            || o.success_rate < p.degraded_success_rate;
        let (mut status, eligible, probe_only) = match self.phase {
            Phase::Serving => (
                if degraded {
                    HealthStatus::Degraded
                } else {
                    HealthStatus::Healthy
                },
                true,
                false,
            ),
            Phase::Ejected { .. } => (HealthStatus::Failed, false, false),
            Phase::HalfOpen => (HealthStatus::Failed, true, true),
        };
        if status == HealthStatus::Degraded {
            weight *= 0.5;
        }
        let mut eligible = eligible;
        if let Some(m) = self.manual {
            status = m;
            eligible = m != HealthStatus::Failed;
        }
        if now < self.paused_until_ns {
            // Paused at the backend's request: busy, not broken (never counted as ejected).
            eligible = false;
        }
        (
            Verdict {
                status,
                eligible,
                probe_only: probe_only && eligible,
                weight,
            },
            reset,
        )
    }

    /// An incident says the node is down: eject it now (unless it already is).
    pub(crate) fn force_eject(&mut self, now: u64, p: &HealthPolicy) {
        if self.phase == Phase::Serving || self.phase == Phase::HalfOpen {
            self.eject(now, p);
        }
    }

    /// An incident says the node is back: probe it at the next decision.
    pub(crate) fn force_probe(&mut self) {
        if matches!(self.phase, Phase::Ejected { .. }) {
            self.phase = Phase::Ejected { until_ns: 0 };
        }
    }

    fn eject(&mut self, now: u64, p: &HealthPolicy) {
        self.times_ejected = self.times_ejected.saturating_add(1);
        self.phase = Phase::Ejected {
            until_ns: now.saturating_add(p.ejection_ns(self.times_ejected)),
        };
    }
}

/// What happened to a node (the seed's `HealthIncident`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncidentKind {
    /// It is down: eject it now (recovery through half-open probes as usual).
    Down,
    /// It works poorly: pin it degraded.
    Degraded,
    /// It is back: clear any pinned verdict and probe it now.
    Recovered,
}

#[cfg(test)]
mod test {
    use super::*;

    const MS: u64 = 1_000_000;

    fn obs(ok: u64, failed: u64, consecutive: u64) -> Observation {
        Observation {
            ok,
            failed,
            consecutive,
            latency_factor: 1.0,
            success_rate: 1.0,
            ..Default::default()
        }
    }

    #[test]
    fn ejects_backs_off_probes_and_recovers() {
        let p = HealthPolicy {
            slow_start_ms: 0,
            ..Default::default()
        };
        let mut h = NodeHealthState::new(0);
        let (v, _) = h.step(0, &obs(5, 0, 0), &p, true);
        assert!(v.eligible && v.status == HealthStatus::Healthy);
        let (v, _) = h.step(10 * MS, &obs(0, 3, 3), &p, true);
        assert_eq!((v.eligible, v.status), (false, HealthStatus::Failed));
        assert_eq!(
            h.phase,
            Phase::Ejected {
                until_ns: 10 * MS + 5_000 * MS
            }
        );
        // Still ejected before the deadline.
        assert!(!h.step(4_000 * MS, &obs(0, 0, 3), &p, true).0.eligible);
        // Half-open after it, with the consecutive count reset.
        let (v, reset) = h.step(5_010 * MS, &obs(0, 0, 3), &p, true);
        assert!(reset && v.eligible && v.probe_only);
        // A failed probe: ejected again for twice as long.
        h.step(5_020 * MS, &obs(0, 1, 1), &p, true);
        assert_eq!(
            h.phase,
            Phase::Ejected {
                until_ns: 5_020 * MS + 10_000 * MS
            }
        );
        h.step(15_020 * MS, &obs(0, 0, 0), &p, true);
        assert_eq!(h.phase, Phase::HalfOpen);
        // A good probe: serving again.
        let (v, _) = h.step(15_030 * MS, &obs(1, 0, 0), &p, true);
        assert!(v.eligible && !v.probe_only && h.phase == Phase::Serving);
    }

    #[test]
    fn rate_limits_never_eject_and_cap_holds() {
        let p = HealthPolicy::default();
        let mut h = NodeHealthState::new(0);
        let o = Observation {
            rate_limited: 100,
            latency_factor: 1.0,
            success_rate: 1.0,
            ..Default::default()
        };
        let (v, _) = h.step(20_000 * MS, &o, &p, true);
        assert!(v.eligible);
        assert!(
            (v.weight - 0.25).abs() < 1e-9,
            "rate limited: a quarter of the weight"
        );
        let (v, _) = h.step(22_000 * MS, &obs(1, 0, 0), &p, true);
        assert!((v.weight - 1.0).abs() < 1e-9, "back-off over");
        // Failing but the cap is reached: stays serving.
        let (v, _) = h.step(23_000 * MS, &obs(0, 20, 20), &p, false);
        assert!(v.eligible);
        // Failure rate without a streak.
        let (v, _) = h.step(24_000 * MS, &obs(5, 6, 1), &p, true);
        assert!(!v.eligible);
    }

    #[test]
    fn slow_start_degradation_and_manual_override() {
        let p = HealthPolicy::default();
        let mut h = NodeHealthState::new(0);
        let (v, _) = h.step(0, &obs(0, 0, 0), &p, true);
        assert!((v.weight - 0.1).abs() < 1e-9);
        let (v, _) = h.step(5_000 * MS, &obs(0, 0, 0), &p, true);
        assert!((v.weight - 0.55).abs() < 1e-9);
        let slow = Observation {
            latency_factor: 4.0,
            success_rate: 1.0,
            ..Default::default()
        };
        let (v, _) = h.step(20_000 * MS, &slow, &p, true);
        assert_eq!(v.status, HealthStatus::Degraded);
        assert!((v.weight - 0.5).abs() < 1e-9);
        h.manual = Some(HealthStatus::Failed);
        assert!(h.is_out());
        let (v, _) = h.step(21_000 * MS, &obs(1, 0, 0), &p, true);
        assert!(!v.eligible && v.status == HealthStatus::Failed);
    }

    #[test]
    fn policy_validation() {
        assert!(HealthPolicy::default().validate().is_ok());
        for bad in [
            HealthPolicy {
                failure_rate: f64::NAN,
                ..Default::default()
            },
            HealthPolicy {
                panic_threshold: 1.5,
                ..Default::default()
            },
            HealthPolicy {
                degraded_latency_factor: 0.5,
                ..Default::default()
            },
            HealthPolicy {
                base_ejection_ms: 0,
                ..Default::default()
            },
            HealthPolicy {
                half_open_probes: 0,
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert_eq!(HealthPolicy::default().ejection_ns(40), 300_000 * MS);
    }
}
