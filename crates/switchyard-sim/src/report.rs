//! What a simulated comparison reports: per policy counts, latency percentiles, SLO
//! attainment, balance, utilisation, prefix-cache hits, cost, decision latency and the
//! simulator's own throughput; printed as a table or written as JSON.
use std::fmt::Write as _;

use switchyard::Priority;

use crate::capacity::fluid_capacity;
use crate::record::{PolicyReport, SimOutcome};
use crate::workload::{GatewayModel, SimConfig, Workload};

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
    /// The gateway model the policies ran behind.
    pub gateway: GatewayModel,
    /// The work offered over the fleet's modelled capacity (the fluid model's mean node
    /// utilisation, see [`fluid_capacity`]).
    pub offered_utilization: f64,
    /// The best balance deviation the capability constraints allow (the fluid model's).
    pub balance_bound: f64,
    /// Per node, the fluid model's utilisation under its most balanced allocation.
    pub fluid_node_utilization: Vec<f64>,
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

/// A JSON array of numbers.
fn list(xs: &[f64]) -> String {
    xs.iter().map(|&x| num(x)).collect::<Vec<_>>().join(",")
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
        let fluid = fluid_capacity(workload, cfg);
        Self {
            trace: workload.name.clone(),
            tasks: workload.tasks.len(),
            load: cfg.load,
            seed: cfg.seed,
            gateway: cfg.gateway,
            offered_utilization: fluid.offered_utilization,
            balance_bound: fluid.balance_bound,
            fluid_node_utilization: fluid.node_utilization,
            policies: outcomes.iter().map(|o| o.report.clone()).collect(),
        }
    }

    /// The report as JSON:
    /// `{"trace", "tasks", "load", "gateway_model": "shared" | "per-policy",
    /// "offered_utilization", "balance_bound", "policies": {NAME: {"completed", "failed",
    /// "shed", "slo_attainment", "ttft_p99_ms", "e2e_p50_ms", "e2e_p99_ms",
    /// "balance_deviation", "balance_bound", "utilization", "node_utilization": [per node, in
    /// fleet order], "arrival_utilization", "arrival_balance_deviation",
    /// "arrival_node_utilization": [per node], "prefix_hit_rate",
    /// "routing_accuracy", "routable", "cost", "decision_ns": {"p50", "p99", "p999"}}},
    /// "throughput": {NAME: {"decisions", "router_ns", "router_decisions_per_s",
    /// "event_loop_ns", "event_loop_tasks_per_s"}}}`. The throughput figures are real time:
    /// the time inside the policy's decisions, and the whole event loop's.
    pub fn to_json(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "{{\"trace\":{},\"tasks\":{},\"load\":{},\"gateway_model\":{},\
             \"offered_utilization\":{},\"balance_bound\":{},\"policies\":{{",
            string(&self.trace),
            self.tasks,
            num(self.load),
            string(self.gateway.name()),
            num(self.offered_utilization),
            num(self.balance_bound),
        );
        for (k, p) in self.policies.iter().enumerate() {
            if k > 0 {
                s.push(',');
            }
            let _ = write!(
                s,
                "{}:{{\"completed\":{},\"failed\":{},\"shed\":{},\"slo_attainment\":{},\
                 \"ttft_p99_ms\":{},\"e2e_p50_ms\":{},\"e2e_p99_ms\":{},\
                 \"balance_deviation\":{},\"balance_bound\":{},\"utilization\":{},\
                 \"node_utilization\":[{}],\"arrival_utilization\":{},\
                 \"arrival_balance_deviation\":{},\"arrival_node_utilization\":[{}],\"prefix_hit_rate\":{},\"routing_accuracy\":{},\"routable\":{},\
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
                num(self.balance_bound),
                num(p.utilization),
                list(&p.node_utilization),
                num(p.arrival_utilization),
                num(p.arrival_balance_deviation),
                list(&p.arrival_node_utilization),
                num(p.prefix_hit_rate),
                num(p.routing_accuracy),
                p.routable,
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
            "{:<16} {:>6} {:>5} {:>5} {:>6} {:>6} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6} {:>6} {:>17} {:>6} {:>9} {:>16}",
            "policy",
            "done",
            "fail",
            "shed",
            "SLO%",
            "acc%",
            "ttft50",
            "ttft99",
            "e2e50",
            "e2e99",
            "req/s",
            "util%",
            "busy%",
            "bal run/arr/bnd",
            "hit%",
            "cost",
            "decide ns 50/99/999"
        );
        for p in &self.policies {
            let _ = writeln!(
                s,
                "{:<16} {:>6} {:>5} {:>5} {:>6.1} {:>6.1} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>7.2} {:>6.1} {:>6.1} {:>17} {:>6.1} {:>9.0} {:>16}",
                p.policy,
                p.completed,
                p.failed,
                p.shed,
                100.0 * p.slo_attainment,
                100.0 * p.routing_accuracy,
                p.ttft_p50_ms,
                p.ttft_p99_ms,
                p.e2e_p50_ms,
                p.e2e_p99_ms,
                p.throughput_per_s,
                100.0 * p.utilization,
                100.0 * p.arrival_utilization,
                format!(
                    "{:.3}/{:.3}/{:.3}",
                    p.balance_deviation, p.arrival_balance_deviation, self.balance_bound
                ),
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
        if let Some(w) = self.winners() {
            let _ = writeln!(s, "{w}");
        }
        s
    }

    /// One line on who won on what: SLO attainment, e2e p99, cost (the cheapest policy
    /// within 0.5 points of the best SLO attainment, since shedding work also saves cost),
    /// prefix hits, routing accuracy and balance (over the arrival window). `None` with fewer
    /// than two policies.
    pub fn winners(&self) -> Option<String> {
        let ps = &self.policies;
        if ps.len() < 2 {
            return None;
        }
        // The names reaching the best value of `key` (higher is better when `high`).
        let best = |key: &dyn Fn(&PolicyReport) -> f64, high: bool, among: &[&PolicyReport]| {
            let sign = if high { 1.0 } else { -1.0 };
            let top = among
                .iter()
                .map(|p| sign * key(p))
                .fold(f64::NEG_INFINITY, f64::max);
            let names: Vec<&str> = among
                .iter()
                .filter(|p| (sign * key(p) - top).abs() <= 1e-9 * top.abs().max(1.0))
                .map(|p| p.policy.as_str())
                .collect();
            if names.len() == ps.len() {
                (sign * top, "all tie".to_string())
            } else {
                (sign * top, names.join(" = "))
            }
        };
        let all: Vec<&PolicyReport> = ps.iter().collect();
        let (slo, slo_w) = best(&|p| p.slo_attainment, true, &all);
        let near: Vec<&PolicyReport> = ps
            .iter()
            .filter(|p| p.slo_attainment >= slo - 0.005)
            .collect();
        let (cost, cost_w) = best(&|p| p.cost, false, &near);
        let (p99, p99_w) = best(&|p| p.e2e_p99_ms, false, &all);
        let (hit, hit_w) = best(&|p| p.prefix_hit_rate, true, &all);
        let (acc, acc_w) = best(&|p| p.routing_accuracy, true, &all);
        let (bal, bal_w) = best(&|p| p.arrival_balance_deviation, false, &all);
        Some(format!(
            "won: SLO {slo_w} ({:.1} %) · e2e p99 {p99_w} ({p99:.0} ms) · cost {cost_w} \
             ({cost:.0}, cheapest within 0.5 points of the best SLO) · prefix hits {hit_w} \
             ({:.1} %) · routing accuracy {acc_w} ({:.1} %) · balance while requests arrive \
             {bal_w} ({bal:.3}, bound {:.3})",
            100.0 * slo,
            100.0 * hit,
            100.0 * acc,
            self.balance_bound,
        ))
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
            gateway: GatewayModel::Shared,
            offered_utilization: 0.5,
            balance_bound: 0.25,
            fluid_node_utilization: vec![0.5],
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
                arrival_utilization: 0.3,
                arrival_node_utilization: vec![0.3],
                arrival_balance_deviation: 0.0,
                prefix_hit_rate: 0.0,
                routing_accuracy: 0.75,
                routable: 2,
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
            "{\"trace\":\"a \\\"b\\\"\\\\\\n\",\"tasks\":3,\"load\":1,\"gateway_model\":\"shared\",\
             \"offered_utilization\":0.5,\"balance_bound\":0.25,\"policies\":{\"x\":{\"completed\":2,\
             \"failed\":1,\"shed\":0,\"slo_attainment\":0.5,\"ttft_p99_ms\":2,\"e2e_p50_ms\":3,\
             \"e2e_p99_ms\":null,\"balance_deviation\":0,\"balance_bound\":0.25,\
             \"utilization\":0.25,\"node_utilization\":[0.25],\"arrival_utilization\":0.3,\
             \"arrival_balance_deviation\":0,\"arrival_node_utilization\":[0.3],\"prefix_hit_rate\":0,\"routing_accuracy\":0.75,\
             \"routable\":2,\"cost\":10,\"decision_ns\":{\"p50\":1,\"p99\":2,\"p999\":3}}},\
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
        assert!(t.contains("0.000/0.250"), "deviation beside the bound: {t}");
        // One policy: no line on who won.
        assert!(!t.contains("won:"));
        let mut two = report();
        let mut y = two.policies[0].clone();
        y.policy = "y".into();
        y.slo_attainment = 0.498;
        y.cost = 5.0;
        y.e2e_p99_ms = 100.0;
        two.policies.push(y);
        let w = two.winners().unwrap();
        assert!(w.starts_with("won: SLO x (50.0 %)"), "{w}");
        // y is within 0.5 points of the best SLO and cheaper; a tie is listed as such.
        assert!(w.contains("cost y (5,"), "{w}");
        assert!(w.contains("routing accuracy all tie (75.0 %)"), "{w}");
        let mut three = two.clone();
        let mut z = three.policies[0].clone();
        z.policy = "z".into();
        z.routing_accuracy = 0.5;
        three.policies.push(z);
        assert!(three
            .winners()
            .unwrap()
            .contains("routing accuracy x = y (75.0 %)"));
    }
}
