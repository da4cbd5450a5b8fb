//! How a policy rode out a load [`Spike`]: the figures of one run over the spike's window.
use std::fmt;

use switchyard::Priority;

use crate::record::{SimOutcome, TaskStatus};
use crate::workload::{Spike, Workload};

/// How one policy rode out a spike.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SpikeReport {
    /// The policy.
    pub policy: String,
    /// Requests arriving in the window, per second.
    pub arrivals_per_s: f64,
    /// Requests completed in the window, per second: with a backlog throughout, the fleet's
    /// capacity.
    pub completions_per_s: f64,
    /// Requests that arrived in the window, by class (critical first).
    pub arrived: [u64; 4],
    /// Of those, admitted (served, not shed or failed), by class.
    pub admitted: [u64; 4],
    /// Of those, shed, by class.
    pub shed: [u64; 4],
    /// Of those, completed within their latency constraint (the SLO), by class.
    pub within_slo: [u64; 4],
    /// Mean utilisation over the fleet during the window (each node's larger of its
    /// sequence and KV shares, averaged over the window's sample buckets).
    pub utilization: f64,
    /// Balance deviation at steady state: busiest node's mean utilisation over the fleet
    /// mean, minus one, over the buckets before the spike (none: 0).
    pub steady_balance_deviation: f64,
}

impl SpikeReport {
    /// The figures of `outcome` (a run of `workload`, whose arrivals carry `spike`).
    pub fn of(workload: &Workload, outcome: &SimOutcome, spike: &Spike) -> Self {
        let (from, to) = spike.window_ns();
        let secs = (to - from) as f64 / 1e9;
        let mut r = SpikeReport {
            policy: outcome.report.policy.clone(),
            ..Default::default()
        };
        let (mut arrivals, mut completions) = (0u64, 0u64);
        for (t, rec) in workload.tasks.iter().zip(&outcome.records) {
            if rec.status == TaskStatus::Completed {
                let done = t.arrival_ns + (rec.e2e_ms * 1e6) as u64;
                if (from..to).contains(&done) {
                    completions += 1;
                }
            }
            if !(from..to).contains(&t.arrival_ns) {
                continue;
            }
            arrivals += 1;
            let c = t.task.constraints.priority.index();
            r.arrived[c] += 1;
            match rec.status {
                TaskStatus::Completed => {
                    r.admitted[c] += 1;
                    r.within_slo[c] += rec.slo_met as u64;
                }
                TaskStatus::Shed => r.shed[c] += 1,
                TaskStatus::Failed => {}
            }
        }
        r.arrivals_per_s = arrivals as f64 / secs;
        r.completions_per_s = completions as f64 / secs;
        let s = &outcome.series;
        let iv = s.interval_ns.max(1);
        let mean_over = |lo: u64, hi: u64| -> Vec<f64> {
            s.node_utilization
                .iter()
                .map(|v| {
                    let picked: Vec<f64> = v
                        .iter()
                        .enumerate()
                        .filter(|&(b, _)| {
                            let b = b as u64;
                            b * iv >= lo && (b + 1) * iv <= hi
                        })
                        .map(|(_, &x)| x)
                        .collect();
                    if picked.is_empty() {
                        0.0
                    } else {
                        picked.iter().sum::<f64>() / picked.len() as f64
                    }
                })
                .collect()
        };
        let during = mean_over(from, to);
        r.utilization = if during.is_empty() {
            0.0
        } else {
            during.iter().sum::<f64>() / during.len() as f64
        };
        r.steady_balance_deviation = switchyard::metrics::balance_deviation(&mean_over(0, from));
        r
    }

    /// Demand over capacity in the window: arrivals over completions per second.
    pub fn demand_ratio(&self) -> f64 {
        if self.completions_per_s > 0.0 {
            self.arrivals_per_s / self.completions_per_s
        } else {
            0.0
        }
    }

    fn share(n: u64, of: u64) -> f64 {
        if of == 0 {
            100.0
        } else {
            100.0 * n as f64 / of as f64
        }
    }

    /// Share of the window's critical requests that were admitted, percent.
    pub fn critical_admitted_pct(&self) -> f64 {
        let c = Priority::Critical.index();
        Self::share(self.admitted[c], self.arrived[c])
    }

    /// Share of the window's critical requests completed within their SLO, percent.
    pub fn critical_within_slo_pct(&self) -> f64 {
        let c = Priority::Critical.index();
        Self::share(self.within_slo[c], self.arrived[c])
    }

    /// As JSON.
    pub fn to_json(&self) -> String {
        let arr = |a: &[u64; 4]| format!("[{}, {}, {}, {}]", a[0], a[1], a[2], a[3]);
        format!(
            "{{\"arrivals_per_s\": {:.3}, \"completions_per_s\": {:.3}, \"demand_ratio\": {:.3}, \
             \"arrived\": {}, \"admitted\": {}, \"shed\": {}, \"within_slo\": {}, \
             \"critical_admitted_pct\": {:.2}, \"critical_within_slo_pct\": {:.2}, \
             \"utilization\": {:.4}, \"steady_balance_deviation\": {:.4}}}",
            self.arrivals_per_s,
            self.completions_per_s,
            self.demand_ratio(),
            arr(&self.arrived),
            arr(&self.admitted),
            arr(&self.shed),
            arr(&self.within_slo),
            self.critical_admitted_pct(),
            self.critical_within_slo_pct(),
            self.utilization,
            self.steady_balance_deviation
        )
    }
}

impl fmt::Display for SpikeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<16} {:>6.1} {:>6.1} {:>5.2}x  {:>6.1} {:>6.1}   {:>4} {:>4} {:>4} {:>4}  {:>5.1}  {:>6.3}",
            self.policy,
            self.arrivals_per_s,
            self.completions_per_s,
            self.demand_ratio(),
            self.critical_admitted_pct(),
            self.critical_within_slo_pct(),
            self.shed[0],
            self.shed[1],
            self.shed[2],
            self.shed[3],
            100.0 * self.utilization,
            self.steady_balance_deviation,
        )
    }
}

/// The header line matching [`SpikeReport`]'s `Display`.
pub const SPIKE_HEADER: &str = "policy            arr/s  done/s  demand  crit%  critSLO%  shed c    h    n    l  util%  steady-bal";
