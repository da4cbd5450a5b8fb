//! What a simulated comparison reports: per policy counts, latency percentiles, SLO
//! attainment, balance, utilisation, prefix-cache hits, cost, decision latency and the
//! simulator's own throughput; printed as a table or written as JSON.
use std::fmt::Write as _;

use switchyard::Priority;

use crate::record::{PolicyReport, SimOutcome};
use crate::workload::{SimConfig, Workload};

/// A comparison of several policies on one workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The trace's name.
    pub trace: String,
    /// Tasks in the workload.
    pub tasks: usize,
    /// The arrival-rate multiplier.
    pub load: f64,
    /// The seed.
    pub seed: u64,
    /// One report per policy, in the order asked.
    pub policies: Vec<PolicyReport>,
}

/// A JSON number, or `null` for a non-finite value.
fn num(x: f64) -> String {
    if x.is_finite() {
        format!("{x}")
    } else {
        "null".into()
    }
}

/// A JSON string literal.
fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Report {
    /// The report of `outcomes`, one per policy, run over `workload` with `cfg`.
    pub fn new(workload: &Workload, cfg: &SimConfig, outcomes: &[SimOutcome]) -> Self {
        Self {
            trace: workload.name.clone(),
            tasks: workload.tasks.len(),
            load: cfg.load,
            seed: cfg.seed,
            policies: outcomes.iter().map(|o| o.report.clone()).collect(),
        }
    }

    /// The report as JSON:
    /// `{"trace", "tasks", "policies": {NAME: {"completed", "failed", "shed",
    /// "slo_attainment", "ttft_p99_ms", "e2e_p50_ms", "e2e_p99_ms", "balance_deviation",
    /// "utilization", "prefix_hit_rate", "cost", "decision_ns": {"p50", "p99", "p999"}}},
    /// "throughput": {NAME: {"decisions", "router_ns", "router_decisions_per_s",
    /// "event_loop_ns", "event_loop_tasks_per_s"}}}`. The throughput figures are real time:
    /// the time inside the policy's decisions, and the whole event loop's.
    pub fn to_json(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "{{\"trace\":{},\"tasks\":{},\"policies\":{{",
            string(&self.trace),
            self.tasks
        );
        for (k, p) in self.policies.iter().enumerate() {
            if k > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                "{}:{{\"completed\":{},\"failed\":{},\"shed\":{},\"slo_attainment\":{},\
                 \"ttft_p99_ms\":{},\"e2e_p50_ms\":{},\"e2e_p99_ms\":{},\
                 \"balance_deviation\":{},\"utilization\":{},\"prefix_hit_rate\":{},\
                 \"cost\":{},\"decision_ns\":{{\"p50\":{},\"p99\":{},\"p999\":{}}}}}",
                string(&p.policy),
                p.completed,
                p.failed,
                p.shed,
                num(p.slo_attainment),
                num(p.ttft_p99_ms),
                num(p.e2e_p50_ms),
                num(p.e2e_p99_ms),
                num(p.balance_deviation),
                num(p.utilization),
                num(p.prefix_hit_rate),
                num(p.cost),
                p.decision_ns.p50,
                p.decision_ns.p99,
                p.decision_ns.p999
            );
        }
        s.push_str("},\"throughput\":{");
        for (k, p) in self.policies.iter().enumerate() {
            if k > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                "{}:{{\"decisions\":{},\"router_ns\":{},\"router_decisions_per_s\":{},\
                 \"event_loop_ns\":{},\"event_loop_tasks_per_s\":{}}}",
                string(&p.policy),
                p.decisions,
                p.decision_time_ns,
                num(p.decisions_per_s().round()),
                p.event_loop_ns,
                num(p.tasks_per_s().round()),
            );
        }
        s.push_str("}}\n");
        s
    }

    /// The report as a plain-text table, one row per policy, then SLO attainment by class.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<16} {:>6} {:>5} {:>5} {:>6} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6} {:>6} {:>6} {:>9} {:>16}",
            "policy",
            "done",
            "fail",
            "shed",
            "SLO%",
            "ttft50",
            "ttft99",
            "e2e50",
            "e2e99",
            "req/s",
            "util%",
            "bal",
            "hit%",
            "cost",
            "decide ns 50/99/999"
        );
        for p in &self.policies {
            let _ = writeln!(
                s,
                "{:<16} {:>6} {:>5} {:>5} {:>6.1} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>7.2} {:>6.1} {:>6.3} {:>6.1} {:>9.0} {:>16}",
                p.policy,
                p.completed,
                p.failed,
                p.shed,
                100.0 * p.slo_attainment,
                p.ttft_p50_ms,
                p.ttft_p99_ms,
                p.e2e_p50_ms,
                p.e2e_p99_ms,
                p.throughput_per_s,
                100.0 * p.utilization,
                p.balance_deviation,
                100.0 * p.prefix_hit_rate,
                p.cost,
                format!(
                    "{}/{}/{}",
                    p.decision_ns.p50, p.decision_ns.p99, p.decision_ns.p999
                )
            );
        }
        let _ = write!(s, "SLO% by class   ");
        for c in Priority::ALL {
            let _ = write!(s, " {:>9}", c.name());
        }
        s.push('\n');
        for p in &self.policies {
            let _ = write!(s, "{:<16}", p.policy);
            for c in &p.by_class {
                if c.tasks == 0 {
                    let _ = write!(s, " {:>9}", "-");
                } else {
                    let _ = write!(s, " {:>9.1}", 100.0 * c.slo_met as f64 / c.tasks as f64);
                }
            }
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::record::{ClassReport, DecisionNs};

    fn report() -> Report {
        Report {
            trace: "a \"b\"\\\n".into(),
            tasks: 3,
            load: 1.0,
            seed: 1,
            policies: vec![PolicyReport {
                policy: "x".into(),
                tasks: 3,
                completed: 2,
                failed: 1,
                shed: 0,
                by_class: [ClassReport::default(); 4],
                makespan_s: 1.0,
                throughput_per_s: 2.0,
                ttft_p50_ms: 1.5,
                ttft_p99_ms: 2.0,
                e2e_p50_ms: 3.0,
                e2e_p99_ms: f64::NAN,
                slo_attainment: 0.5,
                balance_deviation: 0.0,
                utilization: 0.25,
                node_utilization: vec![0.25],
                prefix_hit_rate: 0.0,
                cost: 10.0,
                decisions: 3,
                decision_ns: DecisionNs {
                    p50: 1,
                    p99: 2,
                    p999: 3,
                },
                decision_time_ns: 6,
                event_loop_ns: 2_000,
            }],
        }
    }

    #[test]
    fn json_has_the_documented_shape() {
        let j = report().to_json();
        assert_eq!(
            j,
            "{\"trace\":\"a \\\"b\\\"\\\\\\n\",\"tasks\":3,\"policies\":{\"x\":{\"completed\":2,\
             \"failed\":1,\"shed\":0,\"slo_attainment\":0.5,\"ttft_p99_ms\":2,\"e2e_p50_ms\":3,\
             \"e2e_p99_ms\":null,\"balance_deviation\":0,\"utilization\":0.25,\
             \"prefix_hit_rate\":0,\"cost\":10,\"decision_ns\":{\"p50\":1,\"p99\":2,\"p999\":3}}},\
             \"throughput\":{\"x\":{\"decisions\":3,\"router_ns\":6,\
             \"router_decisions_per_s\":500000000,\"event_loop_ns\":2000,\
             \"event_loop_tasks_per_s\":1500000}}}\n"
        );
        let mut none = report();
        none.policies[0].decision_time_ns = 0;
        assert_eq!(none.policies[0].decisions_per_s(), 0.0);
        assert_eq!(string("\u{1}"), "\"\\u0001\"");
    }

    #[test]
    fn table_lists_every_policy_and_class() {
        let t = report().table();
        assert!(t
            .lines()
            .any(|l| l.starts_with("x ") && l.contains("1/2/3")));
        assert!(t.contains("critical") || t.contains("Critical"));
    }
}
